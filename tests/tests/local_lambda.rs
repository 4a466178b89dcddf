//! The local Lambda service through the AWS SDK's own Lambda client: Invoke (RequestResponse, Event, DryRun) runs
//! the real function binaries; an asynchronous push completes across hand-offs drained from its queue; a failed
//! asynchronous invocation is retried twice; and on the stack that `make stack-up` started, an accepted shadow
//! update reaches shadow-history through the rules stand-in and the stack's Invoke API.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::InvocationType;
use devstack::lambda::binary;
use devstack::local_lambda::{Deployment, FunctionSpec, LocalLambdaService, QueueMapping, Schedule};
use devstack::push::PushFixture;
use devstack::service::Timing;
use devstack::stack::repo_root;
use devstack::{Stack, unique};
use serde_json::{Value, json};
use shadow_aws::tables;

const ANY_PORT: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

/// A local Lambda service of this test's own: shadow-push on the fixture's table and queue, shadow-history on
/// `history_table`, the queue drained into shadow-push, the sweeper every second.
async fn local_service(fx: &PushFixture, history_table: &str) -> LocalLambdaService {
    let mut env: Vec<(String, String)> = fx.stack.env.clone().into_iter().collect();
    env.extend(
        [
            ("PUSH_TABLE", fx.table.as_str()),
            ("PUSH_QUEUE_URL", fx.queue_url.as_str()),
            ("PUSH_LEASE_MS", "2000"),
            ("PUSH_HANDOFF_GRACE_MS", "1500"),
            ("PUSH_CONCURRENCY", "2"),
            ("HISTORY_TABLE", history_table),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    let function = |name: &str| FunctionSpec {
        name: name.to_owned(),
        binary: binary(name),
        env: env.clone(),
        timing: Timing::SCALED,
        concurrency: 2,
        on_failure: None,
    };
    let deployment = Deployment {
        functions: vec![function("shadow-push"), function("shadow-history")],
        queues: vec![QueueMapping { function: "shadow-push".into(), queue_url: fx.queue_url.clone() }],
        schedules: vec![Schedule { function: "shadow-push".into(), event: json!({"sweepPushes": true}) }],
        sqs: fx.stack.sqs(),
        region: fx.stack.var("AWS_REGION"),
    };
    LocalLambdaService::start(ANY_PORT, deployment).await.expect("starting the local Lambda service")
}

fn payload_json(payload: Option<&Blob>) -> Value {
    payload.and_then(|p| serde_json::from_slice(p.as_ref()).ok()).unwrap_or(Value::Null)
}

/// An asynchronous push through the Invoke API, 12 things at 3 requests/s (4 s of requests; 8 things took 2.3 s
/// and at times fit one invocation) with 3-second invocations: it needs several segments, so it completes only if
/// the hand-offs are drained from the queue into shadow-push.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_invoked_with_the_sdk_completes_across_hand_offs() {
    let fx = PushFixture::new().await;
    fx.create_things(0..12, "invoke").await;
    fx.create_group("prod", None, 0..12).await;
    let service = local_service(&fx, &unique("unused-history")).await;
    let lambda = fx.stack.lambda_at(&service.url);
    let push_id = unique("invoke");
    let request = json!({"pushId": push_id, "desired": {"settings": {"mode": 4}}, "targets": {"thingGroup": fx.group("prod")},
                         "skipUnchanged": false, "maxRequestsPerSecond": 3});

    let queued = lambda
        .invoke()
        .function_name("shadow-push")
        .invocation_type(InvocationType::Event)
        .payload(Blob::new(request.to_string()))
        .send()
        .await
        .expect("Invoke Event");
    assert_eq!(queued.status_code, 202);

    let until = Instant::now() + Duration::from_secs(60);
    let record = loop {
        let record = fx.record(&push_id).await.unwrap_or(Value::Null);
        if record["complete"] == json!(true) || Instant::now() > until {
            break record;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let invocations = service.function("shadow-push").map(|f| f.invocations()).unwrap_or_default();
    let trail: Vec<String> = invocations
        .iter()
        .map(|i| format!("{}: {}", i.source, i.answer.as_ref().map_or_else(|e| e.to_string(), |_| "ok".into())))
        .collect();
    assert_eq!(record["complete"], json!(true), "not complete after 60 s: {record}; invocations: {trail:?}");
    assert!(record["handedOff"].as_u64().unwrap_or(0) >= 1, "the push needed no hand-off: {record}");
    assert!(
        invocations.iter().any(|i| i.source == "queue" && i.answer.is_ok()),
        "no hand-off was drained from the queue: {trail:?}"
    );
    assert_eq!((record["targets"].clone(), record["updated"].clone()), (json!(12), json!(12)), "{record}");
    for i in 0..12 {
        let doc = fx.shadow(&fx.thing(i), None).await.unwrap_or(Value::Null);
        assert_eq!(doc["state"]["desired"]["settings"]["mode"], json!(4), "{}: {doc}", fx.thing(i));
    }

    // The same request again, synchronously, by ARN: the push's summary as it stands, nothing pushed again.
    let arn = format!("arn:aws:lambda:{}:123456789012:function:shadow-push", fx.stack.var("AWS_REGION"));
    let answer = lambda
        .invoke()
        .function_name(arn)
        .payload(Blob::new(request.to_string()))
        .send()
        .await
        .expect("Invoke RequestResponse");
    let summary = payload_json(answer.payload());
    assert_eq!((answer.status_code, answer.function_error.as_deref()), (200, None), "{summary}");
    assert_eq!(
        (summary["pushId"].as_str(), summary["complete"].clone()),
        (Some(push_id.as_str()), json!(true)),
        "{summary}"
    );
    assert_eq!(summary["updated"], json!(12), "{summary}");
    assert_eq!(answer.executed_version.as_deref(), Some("$LATEST"));
}

/// Errors as the real API gives them: a function error in `X-Amz-Function-Error` with the function's error type,
/// an unknown function as ResourceNotFoundException, a payload that is not JSON refused, and DryRun runs nothing.
#[tokio::test]
async fn errors_come_back_as_lambda_gives_them() {
    let fx = PushFixture::new().await;
    let service = local_service(&fx, &unique("unused-history")).await;
    let lambda = fx.stack.lambda_at(&service.url);

    let refused = lambda
        .invoke()
        .function_name("shadow-push")
        .payload(Blob::new(json!({"desired": {}, "targets": {}}).to_string()))
        .send()
        .await
        .expect("Invoke");
    let error = payload_json(refused.payload());
    assert_eq!((refused.status_code, refused.function_error.as_deref()), (200, Some("Unhandled")), "{error}");
    assert_eq!(error["errorType"], "Final.InvalidRequest", "{error}");

    let missing = lambda.invoke().function_name("no-such-function").send().await.err();
    let not_found = missing
        .as_ref()
        .and_then(|e| e.as_service_error())
        .is_some_and(aws_sdk_lambda::operation::invoke::InvokeError::is_resource_not_found_exception);
    assert!(not_found, "{missing:?}");
    let version = lambda.invoke().function_name("shadow-push").qualifier("7").send().await.err();
    assert!(version.as_ref().and_then(|e| e.as_service_error()).is_some_and(|e| e.is_resource_not_found_exception()));

    let not_json = lambda.invoke().function_name("shadow-push").payload(Blob::new("{not json")).send().await.err();
    let refused = not_json
        .as_ref()
        .and_then(|e| e.as_service_error())
        .is_some_and(aws_sdk_lambda::operation::invoke::InvokeError::is_invalid_request_content_exception);
    assert!(refused, "{not_json:?}");

    let dry = lambda
        .invoke()
        .function_name("shadow-push")
        .invocation_type(InvocationType::DryRun)
        .send()
        .await
        .expect("DryRun");
    assert_eq!(dry.status_code, 204);
    // The sweeper's schedule runs beside; of the callers' invocations only the refused request ran.
    let invocations = service.function("shadow-push").map(|f| f.invocations()).unwrap_or_default();
    let called = invocations.iter().filter(|i| i.source == "sync").count();
    assert_eq!(called, 1, "DryRun or a request the API refused ran the function: {invocations:?}");
}

/// An asynchronous invocation that fails (a malformed event) is run three times in all, as Lambda's two retries
/// would; one that succeeds, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_event_is_retried_twice() {
    let fx = PushFixture::new().await;
    let history_table = unique("history");
    tables::ensure_table(&fx.stack.dynamodb(), &history_table, &tables::HISTORY)
        .await
        .expect("creating the history table");
    let service = local_service(&fx, &history_table).await;
    let lambda = fx.stack.lambda_at(&service.url);
    let event = |name: &str| {
        let path = repo_root().join("events/history").join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    };
    for name in ["invalid-no-topic.json", "update-accepted-named.json"] {
        let queued = lambda
            .invoke()
            .function_name("shadow-history")
            .invocation_type(InvocationType::Event)
            .payload(Blob::new(event(name)))
            .send()
            .await
            .expect("Invoke Event");
        assert_eq!(queued.status_code, 202);
    }
    // Retries 2 and 4 s after each failure; then nothing more (4 s beyond the last is twice the first delay).
    let invocations = || service.function("shadow-history").map(|f| f.invocations()).unwrap_or_default();
    let until = Instant::now() + Duration::from_secs(30);
    while invocations().len() < 4 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    let invocations = invocations();
    let failed: Vec<&str> = invocations.iter().filter(|i| i.answer.is_err()).map(|i| i.source).collect();
    assert_eq!(failed, ["async", "async retry", "async retry"], "{invocations:?}");
    // The answer, not the table: the sample event's timestamp is a year old, so with the stack's
    // HISTORY_RETENTION_DAYS its item is already expired, and DynamoDB Local's TTL may remove it at any moment.
    let succeeded: Vec<&Value> = invocations.iter().filter_map(|i| i.answer.as_ref().ok()).collect();
    assert_eq!(succeeded.len(), 1, "{invocations:?}");
    assert_eq!(succeeded[0]["outcome"], "written", "{invocations:?}");
    service.stop().await;
    let _ = fx.stack.dynamodb().delete_table().table_name(history_table).send().await;
}

/// The stack `make stack-up` started: a shadow update through its data-plane endpoint (the rules stand-in) is
/// recorded by the stack's shadow-history, which the stand-in invoked through the stack's Invoke API.
#[tokio::test]
async fn a_shadow_update_reaches_shadow_history_through_the_stack() {
    let stack = Stack::get();
    let thing = unique("rules");
    stack.iot().create_thing().thing_name(&thing).send().await.expect("create_thing");
    let token = unique("token");
    let update = json!({"state": {"reported": {"temp": 21}}, "clientToken": token});
    stack
        .iot_data()
        .update_thing_shadow()
        .thing_name(&thing)
        .shadow_name("test1")
        .payload(aws_smithy_types::Blob::new(update.to_string()))
        .send()
        .await
        .expect("update_thing_shadow");

    let store = shadow_aws::DynamoHistoryStore::new(stack.dynamodb(), stack.var("HISTORY_TABLE"));
    let shadow = shadow_core::ShadowRef {
        thing: shadow_core::ThingName::parse(thing.as_str()).expect("the thing's name"),
        shadow: Some(shadow_core::ShadowName::parse("test1").expect("the shadow's name")),
    };
    let until = Instant::now() + Duration::from_secs(20);
    let events = loop {
        let events = store.events(&shadow).await.expect("history");
        if !events.is_empty() || Instant::now() > until {
            break events;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(events.len(), 1, "history of {thing}: {events:?}");
    assert_eq!(events[0]["version"], json!(1), "{}", events[0]);
    assert_eq!(events[0]["clientToken"], json!(token), "{}", events[0]);
    assert_eq!(events[0]["state"]["reported"], json!({"temp": 21}), "{}", events[0]);

    // And the stack's Invoke API answers a direct, synchronous invocation of shadow-history.
    let mut direct = events[0].clone();
    direct = json!({"topic": format!("$aws/things/{thing}/shadow/name/test1/update/accepted"),
                    "state": {"reported": {"temp": 22}}, "version": 2, "timestamp": direct["timestamp"]});
    let answer = stack
        .lambda()
        .invoke()
        .function_name(stack.var("HISTORY_FUNCTION_NAME"))
        .payload(Blob::new(direct.to_string()))
        .send()
        .await
        .expect("Invoke");
    let outcome = payload_json(answer.payload());
    assert_eq!((answer.function_error.as_deref(), outcome["outcome"].as_str()), (None, Some("written")), "{outcome}");
    let _ = stack.iot().delete_thing().thing_name(&thing).send().await;
}
