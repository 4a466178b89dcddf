//! What shadow-push promises across invocations, tested the way AWS would break it: a push id reused with another
//! request, a scheduled run retried, failures that must expire, a slow rate with Lambda's deadline enforced, and a
//! thing in two sources with hand-offs between them.

use std::time::{Duration, Instant};

use devstack::http::{Seen, watching};
use devstack::lambda::InvokeError;
use devstack::push::{PushFixture, push};
use devstack::service::{LambdaService, Timing};
use devstack::unique;
use serde_json::{Value, json};

fn version(doc: &Option<Value>) -> Option<u64> {
    doc.as_ref().and_then(|d| d["version"].as_u64())
}

async fn versions(fx: &PushFixture, range: std::ops::Range<usize>) -> Vec<Option<u64>> {
    futures::future::join_all(range.map(|i| async move { version(&fx.shadow(&fx.thing(i), None).await) })).await
}

/// An id drawn by the function would differ at each delivery of the same request (Lambda delivers an asynchronous
/// event more than once at times, and retries it after a crash): a start request must name its push.
#[tokio::test]
async fn a_request_without_a_push_id_is_refused_and_changes_nothing() {
    let fx = PushFixture::new().await;
    fx.create_things(0..2, "x").await;
    let function = fx.function(&[]).await;
    let things: Vec<String> = (0..2).map(|i| fx.thing(i)).collect();
    let request = json!({"desired": {"mode": 1}, "targets": {"things": things}});
    for _ in 0..2 {
        let err = push(&function, &request).await.expect_err("a request without pushId ran");
        assert_eq!(err.error_type(), Some("Final.InvalidRequest"), "{err}");
        assert!(err.to_string().contains("`pushId` is required"), "{err} should name pushId");
    }
    for thing in &things {
        assert_eq!(fx.shadow(thing, None).await, None, "{thing} was pushed");
    }
}

#[tokio::test]
async fn a_push_id_reused_with_another_request_is_refused() {
    let fx = PushFixture::new().await;
    fx.create_things(0..3, "x").await;
    let function = fx.function(&[]).await;
    let push_id = unique("reused");
    let things: Vec<String> = (0..3).map(|i| fx.thing(i)).collect();
    let first = json!({"pushId": push_id, "desired": {"mode": 1}, "targets": {"things": things}});
    let answer = push(&function, &first).await.expect("invoking shadow-push");
    assert_eq!((answer["updated"].clone(), answer["complete"].clone()), (json!(3), json!(true)), "{answer}");

    let mut other = first.clone();
    other["desired"] = json!({"mode": 2});
    let err = push(&function, &other).await.expect_err("the other request was accepted");
    assert_eq!(err.error_type(), Some("Final.InvalidRequest"), "{err}");
    assert!(err.to_string().contains("`pushId`"), "{err} should name pushId");
    // The same request again reports the push as it stands.
    let again = push(&function, &first).await.expect("invoking shadow-push again with the same request");
    assert_eq!(again["updated"], 3, "{again}");
    for i in 0..3 {
        let doc = fx.shadow(&fx.thing(i), None).await;
        assert_eq!(version(&doc), Some(1), "{} pushed again", fx.thing(i));
        assert_eq!(doc.map(|d| d["state"]["desired"]["mode"].clone()), Some(json!(1)));
    }
}

#[tokio::test]
async fn every_retry_of_a_scheduled_run_is_the_same_push() {
    let fx = PushFixture::new().await;
    fx.create_things(0..3, "x").await;
    let function = fx.function(&[]).await;
    let things: Vec<String> = (0..3).map(|i| fx.thing(i)).collect();
    // As EventBridge Scheduler sends it (template: the schedule's Input), with the run's scheduled time.
    let run = |time: &str| json!({"scheduledRun": time, "request": {"desired": {"mode": 5}, "targets": {"things": things}, "skipUnchanged": false}});
    let first =
        push(&function, &run("2026-11-27T03:00:00Z")).await.expect("invoking shadow-push with the scheduled run");
    let retried =
        push(&function, &run("2026-11-27T03:00:00Z")).await.expect("invoking shadow-push with the scheduled run again");
    assert_eq!(first["pushId"], json!("scheduled-2026-11-27T03:00:00Z"), "{first}");
    assert_eq!(retried["pushId"], first["pushId"]);
    assert_eq!(versions(&fx, 0..3).await, [Some(1), Some(1), Some(1)], "a retried run pushed again");
    let next =
        push(&function, &run("2026-11-28T03:00:00Z")).await.expect("invoking shadow-push with the next scheduled run");
    assert_eq!(next["pushId"], json!("scheduled-2026-11-28T03:00:00Z"));
    assert_eq!(versions(&fx, 0..3).await, [Some(2), Some(2), Some(2)], "the next run is a push of its own");
}

#[tokio::test]
async fn failure_items_expire_with_their_push() {
    let fx = PushFixture::new().await;
    fx.create_things(0..1, "x").await;
    let function = fx.function(&[("PUSH_RETENTION_DAYS", "7")]).await;
    let req = json!({"pushId": unique("expiring"), "desired": {"mode": 1},
                     "targets": {"things": [fx.thing(0), fx.thing(98), fx.thing(99)]}});
    let answer = push(&function, &req).await.expect("invoking shadow-push");
    assert_eq!(answer["failed"], 2, "{answer}");
    let items = fx.stack.dynamodb().scan().table_name(&fx.table).send().await.expect("scan");
    let items: Vec<Value> = items
        .items
        .unwrap_or_default()
        .into_iter()
        .map(|i| serde_dynamo::from_item(i).unwrap_or(Value::Null))
        .collect();
    let record = items.iter().find(|i| i["sk"] == "push").unwrap_or_else(|| panic!("no record in {items:?}"));
    let expires = record["expiresAt"].as_u64().unwrap_or_else(|| panic!("the record does not expire: {record}"));
    // A new push is kept twice the retention from its start (docs/records.md, "How long a push is kept").
    assert_eq!(expires, record["startedAt"].as_u64().unwrap_or(0) / 1000 + 2 * 7 * 86_400);
    assert_eq!(record["keptUntil"].as_u64(), Some(expires), "{record}");
    let failures: Vec<&Value> =
        items.iter().filter(|i| i["sk"].as_str().is_some_and(|s| s.starts_with("failure#"))).collect();
    assert_eq!(failures.len(), 2, "{items:?}");
    for failure in failures {
        assert_eq!(failure["expiresAt"].as_u64(), Some(expires), "{failure}");
    }
}

/// Lambda's timings for the tests below, scaled down (see tests/crash.rs).
fn timing(timeout: Duration) -> Timing {
    Timing {
        timeout,
        retries: [Duration::from_secs(2), Duration::from_secs(4)],
        visibility: timeout * 3,
        schedule_every: Duration::from_secs(1),
        poll_every: Duration::from_millis(100),
    }
}

/// 8 requests/s with 64 things in flight allowed and 3-second invocations: no invocation may run to its deadline
/// (Lambda stops it there, here the process is killed), and the push completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_push_ends_every_invocation_before_its_deadline() {
    let fx = PushFixture::new().await;
    fx.create_things(0..16, "slow").await;
    fx.create_group("prod", None, 0..16).await;
    let function = fx.function(&[("PUSH_CONCURRENCY", "64"), ("PUSH_LEASE_MS", "2000")]).await;
    let service = LambdaService::new(&function, fx.stack.sqs(), &fx.queue_url, timing(Duration::from_secs(3)));
    let push_id = unique("slow");
    let req = json!({"pushId": push_id, "desired": {"mode": 8}, "targets": {"thingGroup": fx.group("prod")},
                     "maxRequestsPerSecond": 8});
    let complete = || async { fx.record(&push_id).await.is_some_and(|r| r["complete"] == json!(true)) };
    let done = service.run_until(&req, &json!({"sweepPushes": true}), Duration::from_secs(60), complete).await;
    let invocations = service.invocations();
    let timed_out = invocations.iter().filter(|i| matches!(i.answer, Err(InvokeError::TimedOut(_)))).count();
    assert_eq!(timed_out, 0, "{timed_out} of {} invocations ran to their deadline", invocations.len());
    assert!(done, "not complete: {:?}", fx.record(&push_id).await);
    assert!(invocations.iter().filter(|i| i.source == "queue").count() >= 1, "no hand-off: {invocations:?}");
    assert_eq!(versions(&fx, 0..16).await, vec![Some(1); 16]);
}

/// The slow push on a slow stack: every DynamoDB and shadow request answered 200 ms late (as the stack answers on a
/// loaded machine), with 6-second leases, so that the deadline ends each segment. What a segment does after its
/// last attempt (leaving the board, its record write, the hand-off, the record read back) takes about 800 ms then,
/// more than the 400 ms a 4-second invocation would keep back for it by its length alone: every invocation must
/// still record its segment and answer in time, none out of time or killed at its deadline, and the push completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_push_on_a_slow_stack_ends_every_invocation_before_its_deadline() {
    use devstack::fault_proxy::{FaultProxy, Faults, Service};
    let fx = PushFixture::new().await;
    fx.create_things(0..16, "slowstack").await;
    fx.create_group("prod", None, 0..16).await;
    let slow = Faults { delay: Duration::from_millis(200), ..Faults::none() };
    let store = FaultProxy::start(&fx.stack.var("AWS_ENDPOINT_URL_DYNAMODB"), Service::DynamoDb, slow).await;
    let shadows =
        FaultProxy::start(&fx.stack.var("AWS_ENDPOINT_URL_IOT_DATA_PLANE"), Service::IotDataPlane, slow).await;
    let function = fx
        .function(&[
            ("PUSH_CONCURRENCY", "64"),
            ("PUSH_LEASE_MS", "6000"),
            ("AWS_ENDPOINT_URL_DYNAMODB", store.url.as_str()),
            ("AWS_ENDPOINT_URL_IOT_DATA_PLANE", shadows.url.as_str()),
        ])
        .await;
    // Its cold start apart from the first invocation's time, as Lambda counts it.
    function.wait_ready(Duration::from_secs(30)).await.unwrap_or_else(|e| panic!("the function's cold start: {e}"));
    let service = LambdaService::new(&function, fx.stack.sqs(), &fx.queue_url, timing(Duration::from_secs(4)));
    let push_id = unique("slowstack");
    let req = json!({"pushId": push_id, "desired": {"mode": 8}, "targets": {"thingGroup": fx.group("prod")},
                     "maxRequestsPerSecond": 8});
    let complete = || async { fx.record(&push_id).await.is_some_and(|r| r["complete"] == json!(true)) };
    let done = service.run_until(&req, &json!({"sweepPushes": true}), Duration::from_secs(60), complete).await;
    let invocations = service.invocations();
    // Out of time, a segment's record write is not tried (the invocation fails, or its message comes back as a
    // batch item failure) or the invocation is killed at its deadline: the push then waits for its lease to run out.
    let late: Vec<String> = invocations
        .iter()
        .filter_map(|i| match &i.answer {
            Ok(answer) if answer["batchItemFailures"].as_array().is_none_or(Vec::is_empty) => None,
            Ok(answer) => Some(format!("{}: {answer}", i.source)),
            Err(e) => Some(format!("{}: {e}", i.source)),
        })
        .collect();
    assert!(late.is_empty(), "{} of {} invocations out of time: {late:?}", late.len(), invocations.len());
    assert!(done, "not complete: {:?}", fx.record(&push_id).await);
    assert_eq!(versions(&fx, 0..16).await, vec![Some(1); 16]);
}

/// A thing in a group and in its child group, with hand-offs inside the group: pushed and counted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thing_in_two_sources_is_pushed_once_across_hand_offs() {
    let fx = PushFixture::new().await;
    fx.create_things(0..12, "two").await;
    fx.create_group("prod", None, 0..10).await;
    fx.create_group("line", Some("prod"), 0..12).await;
    let function = fx.function(&[("PUSH_CONCURRENCY", "2"), ("PUSH_LEASE_MS", "2000")]).await;
    let service = LambdaService::new(&function, fx.stack.sqs(), &fx.queue_url, timing(Duration::from_secs(2)));
    let push_id = unique("two");
    let req = json!({"pushId": push_id, "desired": {"mode": 9}, "targets": {"thingGroup": fx.group("prod"), "recursive": true},
                     "skipUnchanged": false, "maxRequestsPerSecond": 4});
    let complete = || async { fx.record(&push_id).await.is_some_and(|r| r["complete"] == json!(true)) };
    let done = service.run_until(&req, &json!({"sweepPushes": true}), Duration::from_secs(60), complete).await;
    let record = fx.record(&push_id).await.unwrap_or(Value::Null);
    assert!(done, "not complete: {record}");
    assert!(record["handedOff"].as_u64().unwrap_or(0) >= 2, "the push needed no hand-off: {record}");
    assert_eq!((record["targets"].clone(), record["updated"].clone()), (json!(12), json!(12)), "{record}");
    assert_eq!(versions(&fx, 0..12).await, vec![Some(1); 12], "a thing was pushed twice");
}

/// A group paged 5 things at a time by a registry stand-in whose page tokens last 2 s, pushed in segments of about
/// 2 s, each taken up 2.5 s after the last one ended (a slow hand-off, a pause): every saved token is refused when
/// the next segment uses it. Each segment lists the group again from its start and goes on after what the push did:
/// every thing pushed once, none skipped, nothing failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_page_token_lists_the_group_again_and_pushes_every_thing_once() {
    use devstack::registry_front::RegistryFront;
    const THINGS: usize = 24;
    let fx = PushFixture::new().await;
    fx.create_things(0..THINGS, "tokens").await;
    fx.create_group("prod", None, 0..THINGS).await;
    let registry = RegistryFront::start(&fx.stack.var("AWS_ENDPOINT_URL_IOT"), 5, Duration::from_secs(2)).await;
    let function = fx
        .function(&[
            ("AWS_ENDPOINT_URL_IOT", registry.url.as_str()),
            ("PUSH_CONCURRENCY", "2"),
            ("PUSH_LEASE_MS", "2000"),
        ])
        .await;
    let push_id = unique("tokens");
    let req = json!({"pushId": push_id, "desired": {"mode": 5}, "targets": {"thingGroup": fx.group("prod")},
                     "skipUnchanged": false, "maxRequestsPerSecond": 6});
    // Its cold start first: the stand-in counts an invocation's time from the event's hand-over, and on a loaded
    // machine the process's start would take a good part of the first segment's 2 s (Lambda counts init apart).
    function.wait_ready(Duration::from_secs(30)).await.unwrap_or_else(|e| panic!("the function's cold start: {e}"));
    let segment = Duration::from_secs(2);
    let first = function.invoke(&req, segment).await.unwrap_or_else(|e| panic!("the first segment: {e}"));
    assert_eq!(first["complete"], false, "the push needed no hand-off: {first}");
    let mut record = fx.record(&push_id).await.unwrap_or(Value::Null);
    let mut saved = 0;
    for _ in 0..30 {
        if record["complete"] == true {
            break;
        }
        saved += u32::from(record["cursor"]["token"].is_string());
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let next = record["segment"].as_u64().unwrap_or(0) + 1;
        let wake = json!({"continuePush": push_id, "segment": next});
        function.invoke(&wake, segment).await.unwrap_or_else(|e| panic!("segment {next}: {e}"));
        record = fx.record(&push_id).await.unwrap_or(Value::Null);
    }
    assert_eq!(record["complete"], true, "not complete: {record}");
    assert_eq!(
        (record["targets"].clone(), record["updated"].clone(), record["failed"].clone()),
        (json!(THINGS), json!(THINGS), json!(0)),
        "{record}"
    );
    assert_eq!(versions(&fx, 0..THINGS).await, vec![Some(1); THINGS], "a thing pushed twice, or not at all");
    assert!(
        saved >= 2 && registry.counts.refused() >= 2,
        "{saved} tokens saved, {} refused",
        registry.counts.refused()
    );
}

/// Without a configured data endpoint, shadow-push asks the registry for the account's (`DescribeEndpoint`
/// `iot:Data-ATS`) once, at cold start; with one configured, it asks nothing.
#[tokio::test]
async fn the_data_endpoint_is_looked_up_when_not_configured() {
    let fx = PushFixture::new().await;
    let lookups = |seen: &Seen| {
        let requests = seen.requests();
        requests.iter().filter(|(_, r, _)| r.starts_with("GET /endpoint?") && r.contains("Data-ATS")).count()
    };
    for (configured, expected) in [("", 1), ("data.example.com", 0)] {
        let seen = Seen::default();
        let registry = watching(&fx.stack.var("AWS_ENDPOINT_URL_IOT"), seen.clone()).await;
        let mut env: Vec<(String, String)> =
            fx.stack.env.clone().into_iter().filter(|(k, _)| k != "AWS_ENDPOINT_URL_IOT_DATA_PLANE").collect();
        env.push(("AWS_ENDPOINT_URL_IOT".into(), registry.url()));
        env.push(("PUSH_TABLE".into(), fx.table.clone()));
        env.push(("PUSH_QUEUE_URL".into(), fx.queue_url.clone()));
        env.push(("IOT_DATA_ENDPOINT".into(), configured.into()));
        let function = devstack::lambda::LocalLambda::start("shadow-push", &env).await;
        function.wait_ready(Duration::from_secs(30)).await.expect("the function's cold start");
        // Two invocations (bad requests, refused before any shadow request): the lookup is the cold start's.
        for _ in 0..2 {
            let err = push(&function, &json!({"desired": {}, "targets": {}})).await.err();
            assert_eq!(err.as_ref().and_then(|e| e.error_type()), Some("Final.InvalidRequest"), "{err:?}");
        }
        let asked: Vec<String> = seen.requests().into_iter().map(|(_, r, _)| r).collect();
        assert_eq!(lookups(&seen), expected, "IOT_DATA_ENDPOINT={configured:?}: the registry was asked {asked:?}");
    }
}

/// A segment renews its claim three times a lease (every third of it), so that one slow or failed renewal does not
/// lose the claim: seen as the renewals (`SET leaseUntil`) the real binary sends to DynamoDB over a 6-second push
/// with 3-second leases.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewals_come_three_times_a_lease() {
    let fx = PushFixture::new().await;
    fx.create_things(0..24, "renew").await;
    let seen = Seen::default();
    let db = watching(&fx.stack.var("AWS_ENDPOINT_URL_DYNAMODB"), seen.clone()).await;
    let lease = Duration::from_millis(3000);
    let function = fx.function(&[("AWS_ENDPOINT_URL_DYNAMODB", db.url().as_str()), ("PUSH_LEASE_MS", "3000")]).await;
    let things: Vec<String> = (0..24).map(|i| fx.thing(i)).collect();
    let req = json!({"pushId": unique("renew"), "desired": {"mode": 1}, "targets": {"things": things},
                     "maxRequestsPerSecond": 4, "skipUnchanged": false});
    let answer = push(&function, &req).await.expect("the push");
    assert_eq!((answer["updated"].clone(), answer["complete"].clone()), (json!(24), json!(true)), "{answer}");
    let renewals: Vec<Instant> = seen
        .requests()
        .into_iter()
        .filter(|(_, _, body)| {
            let body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
            body["UpdateExpression"] == "SET leaseUntil = :lease" && body["TableName"] == fx.table.as_str()
        })
        .map(|(at, _, _)| at)
        .collect();
    assert!(renewals.len() >= 4, "{} renewals over a 6-second push with 3-second leases", renewals.len());
    let gaps: Vec<Duration> = renewals.windows(2).map(|w| w[1] - w[0]).collect();
    // Each a third of a lease after the last (within what a loaded machine adds): never half a lease apart, never
    // much more often.
    for gap in &gaps {
        assert!(*gap < lease / 2 && *gap > lease / 3 - Duration::from_millis(150), "renewals {gaps:?} apart");
    }
}

/// A payload serde_json cannot read (nested past its 128 levels) fails in no runtime code: the handler refuses it as
/// `Final.InvalidEvent`, which Lambda does not retry, and the function goes on answering.
#[tokio::test]
async fn an_event_too_deep_to_read_is_a_final_invalid_event() {
    let fx = PushFixture::new().await;
    let function = fx.function(&[]).await;
    let mut deep = json!(1);
    for _ in 0..200 {
        deep = json!([deep]);
    }
    let req = json!({"pushId": unique("deep"), "desired": {"deep": deep}, "targets": {"things": [fx.thing(0)]}});
    let err = push(&function, &req).await.expect_err("a 200-deep event was accepted");
    assert_eq!(err.error_type(), Some("Final.InvalidEvent"), "{err}");
    assert!(err.to_string().contains("the payload is not readable JSON: recursion limit exceeded"), "{err}");
    let err = push(&function, &json!({"desired": {}, "targets": {}})).await.err();
    assert_eq!(err.as_ref().and_then(|e| e.error_type()), Some("Final.InvalidRequest"), "{err:?}");
}
