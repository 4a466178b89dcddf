from awscrt import io, mqtt
from awsiot import mqtt_connection_builder, iotshadow
import threading


def on_update_shadow_accepted(response: iotshadow.UpdateShadowResponse):
    print("Shadow Update Accepted:")
    print(response.state)


def on_shadow_update_rejected(error):
    print("Shadow Update Rejected:")
    print(error)


def on_get_shadow_accepted(response: iotshadow.GetShadowResponse):
    print("Shadow Get Accepted:")
    print(response.state)


def on_shadow_get_rejected(error):
    print("Shadow Get Rejected:")
    print(error)


def main():
    mqtt_connection = mqtt_connect()
    shadow = iotshadow.IotShadowClient(mqtt_connection)

    # Updateの成功をサブスクライブする
    update_accepted_future, _ = shadow.subscribe_to_update_named_shadow_accepted(
        request=iotshadow.UpdateNamedShadowSubscriptionRequest(
            thing_name="Test-Device",
            shadow_name="test1",
        ),
        qos=mqtt.QoS.AT_LEAST_ONCE,
        callback=on_update_shadow_accepted,
    )
    update_accepted_future.result()

    # Updateの失敗をサブスクライブする
    update_rejected_future, _ = shadow.subscribe_to_update_named_shadow_rejected(
        request=iotshadow.UpdateNamedShadowSubscriptionRequest(
            thing_name="Test-Device",
            shadow_name="test1",
        ),
        qos=mqtt.QoS.AT_LEAST_ONCE,
        callback=on_shadow_update_rejected,
    )
    update_rejected_future.result()

    # Getの成功をサブスクライブする
    get_accepted_future, _ = shadow.subscribe_to_get_named_shadow_accepted(
        request=iotshadow.GetNamedShadowSubscriptionRequest(
            thing_name="Test-Device",
            shadow_name="test1",
        ),
        qos=mqtt.QoS.AT_LEAST_ONCE,
        callback=on_get_shadow_accepted,
    )
    get_accepted_future.result()

    # Getの失敗をサブスクライブする
    get_rejected_future, _ = shadow.subscribe_to_get_named_shadow_rejected(
        request=iotshadow.GetNamedShadowSubscriptionRequest(
            thing_name="Test-Device",
            shadow_name="test1",
        ),
        qos=mqtt.QoS.AT_LEAST_ONCE,
        callback=on_shadow_get_rejected,
    )
    get_rejected_future.result()

    print("Waiting for shadow publish...")
    try:
        threading.Event().wait()
    finally:
        disconnect_future = mqtt_connection.disconnect()
        disconnect_future.result()

if __name__ == "__main__":
    main()
