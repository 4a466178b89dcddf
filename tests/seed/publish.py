from awscrt import io, mqtt
from awsiot import mqtt_connection_builder, iotshadow


def main():
    mqtt_connection = mqtt_connect()
    shadow = iotshadow.IotShadowClient(mqtt_connection)

    # Updateを送信する
    update_shadow_future = shadow.publish_update_named_shadow(
        request=iotshadow.UpdateNamedShadowRequest(
            thing_name="Test-Device",
            shadow_name="test1",
            state=iotshadow.ShadowState(
                # デバイスの現在の状態
                reported=None,
                reported_is_nullable=True,
                # デバイスが達成すべき目標の状態
                desired={
                    "settings": {
                        "mode": 1,
                        "temp": 20,
                    },
                    "firmware_url": "https://s3.com/firmware.bin",
                },
                desired_is_nullable=True,
                # reportedとdesiredの差分
                # delta=None,
                # delta_is_nullable=True,
            ),
        ),
        qos=mqtt.QoS.AT_LEAST_ONCE,
    )
    update_shadow_future.result()

    # Getを送信する
    get_shadow_future = shadow.publish_get_named_shadow(
        request=iotshadow.GetNamedShadowRequest(
            thing_name="Test-Device",
            shadow_name="test1",
        ),
        qos=mqtt.QoS.AT_LEAST_ONCE,
    )
    get_shadow_future.result()

    print("Publish Complete!")

    disconnect_future = mqtt_connection.disconnect()
    disconnect_future.result()

if __name__ == "__main__":
    main()
