def mqtt_connect() -> mqtt.Connection:
    event_loop_group = io.EventLoopGroup(1)
    host_resolver = io.DefaultHostResolver(event_loop_group)
    client_bootstrap = io.ClientBootstrap(event_loop_group, host_resolver)

    mqtt_connection = mqtt_connection_builder.mtls_from_path(
        endpoint="IoT Coreのエンドポイント(それぞれのアカウントで異なる。https://ap-northeast-1.console.aws.amazon.com/iot/home?region=ap-northeast-1#/settings)",
        cert_filepath="./certificate.pem.crt",
        pri_key_filepath="./private.pem.key",
        ca_filepath="./AmazonRootCA1.pem",
        client_bootstrap=client_bootstrap,
        client_id="client_id",
        clean_session=False,
        keep_alive_secs=6,
    )
    connected_future = mqtt_connection.connect()
    connected_future.result()

    return mqtt_connection
