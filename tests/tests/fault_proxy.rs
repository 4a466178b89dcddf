//! The fault proxy answers with the service's own errors, which the SDK classifies as AWS's would be.

use aws_sdk_dynamodb::types::AttributeValue;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use devstack::fault_proxy::{FaultProxy, Faults, Service};
use devstack::{Stack, unique};
use shadow_aws::{sdk::service_error, tables};
use shadow_core::service::FaultKind;

#[tokio::test]
async fn dynamodb_throttling_is_seen_as_throttling() {
    let stack = Stack::get();
    let table = unique("proxied");
    tables::ensure_table(&stack.dynamodb(), &table, &tables::HISTORY).await.expect("creating the history table");
    let proxy =
        FaultProxy::start(&stack.var("AWS_ENDPOINT_URL_DYNAMODB"), Service::DynamoDb, Faults::throttling(0.3)).await;
    let db = stack.dynamodb_at(&proxy.url);
    let (mut ok, mut throttled) = (0, 0);
    for i in 0..200 {
        let put = db
            .put_item()
            .table_name(&table)
            .item("pk", AttributeValue::S(format!("p{i}")))
            .item("sk", AttributeValue::S("s".into()))
            .send()
            .await;
        match put {
            Ok(_) => ok += 1,
            Err(e) => {
                assert_eq!(e.code(), Some("ThrottlingException"), "{e:?}");
                assert_eq!(service_error("PutItem", e).kind, FaultKind::Throttled);
                throttled += 1;
            }
        }
    }
    assert_eq!(throttled, proxy.counts.throttled());
    assert_eq!(ok, proxy.counts.forwarded());
    // 30% of 200: the bounds are five standard deviations wide.
    assert!((28..=92).contains(&throttled), "{throttled} of 200 throttled");
}

#[tokio::test]
async fn the_sdk_retries_what_the_proxy_throttles() {
    let stack = Stack::get();
    let proxy =
        FaultProxy::start(&stack.var("AWS_ENDPOINT_URL_DYNAMODB"), Service::DynamoDb, Faults::throttling(1.0)).await;
    // The SDK's standard retry strategy retries throttling errors only: three attempts reach the proxy.
    let config = aws_sdk_dynamodb::config::Builder::from(&stack.sdk_config())
        .endpoint_url(&proxy.url)
        .retry_config(
            aws_config::retry::RetryConfig::standard()
                .with_max_attempts(3)
                .with_initial_backoff(std::time::Duration::from_millis(1)),
        )
        .build();
    let err = aws_sdk_dynamodb::Client::from_conf(config).list_tables().send().await.err();
    assert_eq!(err.as_ref().and_then(|e| e.code()), Some("ThrottlingException"));
    assert_eq!(proxy.counts.throttled(), 3);
}

#[tokio::test]
async fn data_plane_faults_have_the_data_plane_shape() {
    let stack = Stack::get();
    let thing = unique("proxied");
    stack.iot().create_thing().thing_name(&thing).send().await.expect("create_thing");
    for (faults, code, kind) in [
        (Faults::throttling(1.0), "ThrottlingException", FaultKind::Throttled),
        (Faults { unavailable: 1.0, ..Faults::none() }, "ServiceUnavailableException", FaultKind::Transient),
        (Faults { internal: 1.0, ..Faults::none() }, "InternalFailureException", FaultKind::Transient),
    ] {
        let proxy =
            FaultProxy::start(&stack.var("AWS_ENDPOINT_URL_IOT_DATA_PLANE"), Service::IotDataPlane, faults).await;
        let err = stack
            .iot_data_at(&proxy.url)
            .get_thing_shadow()
            .thing_name(&thing)
            .send()
            .await
            .err()
            .unwrap_or_else(|| panic!("{code}: the proxy let the request through"));
        assert_eq!(err.code(), Some(code));
        assert_eq!(service_error("GetThingShadow", err).kind, kind);
    }
    // With no faults, the proxy forwards: an unknown shadow is moto's own 404.
    let proxy =
        FaultProxy::start(&stack.var("AWS_ENDPOINT_URL_IOT_DATA_PLANE"), Service::IotDataPlane, Faults::none()).await;
    let err = stack.iot_data_at(&proxy.url).get_thing_shadow().thing_name(&thing).send().await.err();
    assert_eq!(err.as_ref().and_then(|e| e.code()), Some("ResourceNotFoundException"));
    assert_eq!(proxy.counts.forwarded(), 1);
}
