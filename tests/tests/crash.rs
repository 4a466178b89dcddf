//! Crash anywhere: the real shadow-push binary is killed (SIGKILL) at every step of a small push that changes
//! state, with Lambda's behaviour around it (async retries of the first event, the queue's redelivery after its
//! visibility timeout, the sweeper's schedule, the deadline enforced by killing the process). After every crash
//! the push must complete with no operator action, every target must hold the document, and no thing may be
//! updated twice (with skipUnchanged false: at most the things in flight at the crash).

use std::time::Duration;

use devstack::crash::{CrashPoint, CrashProxy, Step};
use devstack::push::{PushFixture, push};
use devstack::service::{LambdaService, Timing};
use devstack::unique;
use futures::StreamExt;
use serde_json::{Value, json};

const THINGS: usize = 8;

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
const CONCURRENCY: usize = 2;

#[derive(Debug, Clone, Copy)]
struct Scenario {
    skip_unchanged: bool,
    point: CrashPoint,
}

/// Runs one push with one crash; `Err` says what went wrong.
async fn crash_and_recover(scenario: Scenario) -> Result<(), String> {
    let fx = PushFixture::new().await;
    fx.create_things(0..THINGS, "crash").await;
    fx.create_group("prod", None, 0..THINGS).await;
    let variable = scenario.point.step.endpoint_var();
    let endpoint = fx.stack.var(variable);
    let proxy = CrashProxy::start(&endpoint, scenario.point).await;
    let concurrency = CONCURRENCY.to_string();
    let function = fx
        .function(&[
            (variable, proxy.url.as_str()),
            // Leases of 2 s (the default: 30 s), on the tests' clock (Timing::SCALED).
            ("PUSH_LEASE_MS", "2000"),
            ("PUSH_HANDOFF_GRACE_MS", "1500"),
            ("PUSH_CONCURRENCY", concurrency.as_str()),
        ])
        .await;
    proxy.watch(function.pid_handle());
    let service = LambdaService::new(&function, fx.stack.sqs(), &fx.queue_url, Timing::SCALED);
    let push_id = unique("crash");
    // 4 requests/s: 8 things take 2 to 4 s of requests, so the push needs several 3-second segments.
    let request = json!({"pushId": push_id, "desired": {"settings": {"mode": 7}}, "targets": {"thingGroup": fx.group("prod")},
                         "skipUnchanged": scenario.skip_unchanged, "maxRequestsPerSecond": 3});
    let complete = || async { fx.record(&push_id).await.is_some_and(|r| r["complete"] == json!(true)) };
    let done = service.run_until(&request, &json!({"sweepPushes": true}), Duration::from_secs(60), complete).await;
    let record = fx.record(&push_id).await.unwrap_or(Value::Null);
    let invocations = service.invocations();
    let trail = || {
        invocations
            .iter()
            .map(|i| format!("{}: {}", i.source, i.answer.as_ref().map_or_else(|e| e.to_string(), |_| "ok".into())))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if !proxy.fired() {
        return Err(format!("the crash point was never reached; record {record}"));
    }
    if !done {
        return Err(format!("not complete after 60 s: {record}; invocations: {}", trail()));
    }
    let mut twice = 0;
    for i in 0..THINGS {
        let doc = fx.shadow(&fx.thing(i), None).await.unwrap_or(Value::Null);
        if doc["state"]["desired"]["settings"]["mode"] != json!(7) {
            let again = fx.shadow(&fx.thing(i), None).await;
            return Err(format!(
                "{} does not hold the document: {doc} (read again: {again:?}); record {record}; invocations: {}",
                fx.thing(i),
                trail()
            ));
        }
        match doc["version"].as_u64() {
            Some(1) => {}
            Some(2) if !scenario.skip_unchanged => twice += 1,
            other => return Err(format!("{} has version {other:?}: updated more than allowed", fx.thing(i))),
        }
    }
    if twice > CONCURRENCY {
        return Err(format!(
            "{twice} things updated twice; at most {CONCURRENCY} were in flight (push {push_id}, things {})",
            fx.thing(0)
        ));
    }
    // Every target counted once. A thing the dead segment updated is normally recognised and counted as updated;
    // under heavy load one was seen counted as unchanged instead, so the split is not asserted.
    let counted = record["updated"].as_u64().unwrap_or(0) + record["unchanged"].as_u64().unwrap_or(0);
    if record["targets"] != json!(THINGS) || counted != THINGS as u64 || record["failed"] != json!(0) {
        return Err(format!("the record's counts are off: {record}; invocations: {}", trail()));
    }
    Ok(())
}

async fn all(scenarios: Vec<Scenario>) {
    // All at once: each scenario mostly waits (pacing, leases, retries).
    let results: Vec<Result<(), String>> =
        futures::stream::iter(scenarios.iter().map(|s| crash_and_recover(*s))).buffered(usize::MAX).collect().await;
    let failures: Vec<String> =
        scenarios.iter().zip(results).filter_map(|(s, r)| r.err().map(|e| format!("{s:?}: {e}"))).collect();
    assert!(
        failures.is_empty(),
        "{} of {} crash points failed:\n{}",
        failures.len(),
        scenarios.len(),
        failures.join("\n")
    );
}

fn after_every_shadow_request(skip_unchanged: bool) -> Vec<Scenario> {
    // skipUnchanged: a read and an update per thing; without: an update per thing.
    let requests = if skip_unchanged { 2 * THINGS } else { THINGS };
    (1..=requests)
        .map(|nth| Scenario {
            skip_unchanged,
            point: CrashPoint { step: Step::ShadowRequest, nth, delivered: true, repeat: false },
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_after_every_shadow_request_with_skip_unchanged() {
    all(after_every_shadow_request(true)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_after_every_shadow_request_without_skip_unchanged() {
    all(after_every_shadow_request(false)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_while_recording_a_segment_and_while_handing_off() {
    let mut scenarios = Vec::new();
    for skip_unchanged in [true, false] {
        for (step, delivered) in
            [(Step::RecordSegment, false), (Step::RecordSegment, true), (Step::HandOff, false), (Step::HandOff, true)]
        {
            scenarios.push(Scenario { skip_unchanged, point: CrashPoint { step, nth: 1, delivered, repeat: false } });
        }
    }
    all(scenarios).await;
}

/// Killed right after its provisional entry on the board of senders lands (all it may take, before its first look):
/// the entry counts for no longer than a renewal's interval (2 s of a 6-second lease), not for a lease as a running
/// holder's entry does, and the push completes on a takeover, every thing written once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_right_after_its_provisional_announcement() {
    use shadow_core::push::quota::Senders;
    let fx = PushFixture::new().await;
    fx.create_things(0..4, "announce").await;
    let point = CrashPoint { step: Step::Announce, nth: 1, delivered: true, repeat: false };
    let proxy = CrashProxy::start(&fx.stack.var("AWS_ENDPOINT_URL_DYNAMODB"), point).await;
    let env =
        [("PUSH_LEASE_MS", "6000"), ("PUSH_HANDOFF_GRACE_MS", "1500"), ("PUSH_MAX_TPS", "40"), ("PUSH_READ_TPS", "40")];
    let dying = fx.function(&[&env[..], &[("AWS_ENDPOINT_URL_DYNAMODB", proxy.url.as_str())]].concat()).await;
    proxy.watch(dying.pid_handle());
    let push_id = unique("announce");
    let things: Vec<String> = (0..4).map(|i| fx.thing(i)).collect();
    let request = json!({"pushId": push_id, "desired": {"mode": 3}, "targets": {"things": things}});
    let sent = now_ms();
    let died = push(&dying, &request).await;
    assert!(proxy.fired() && died.is_err(), "the process was not killed at its announcement: {died:?}");
    let store = shadow_aws::DynamoPushStore::new(fx.stack.dynamodb(), &fx.table, None);
    let board = store.senders().await.expect("reading the board");
    let entry = board.iter().find(|s| s.push_id == push_id).unwrap_or_else(|| panic!("no entry: {board:?}"));
    assert_eq!((entry.pace.updates, entry.pace.reads), (40.0, 40.0), "provisional: all it may take: {entry:?}");
    let held = entry.until_ms.saturating_sub(sent);
    assert!(held <= 2_000 + 1_000, "the provisional entry holds {held} ms from the start, past a renewal's 2 s");

    // Lambda's retry of the event finds the lease running; the sweeper wakes it once it has run out.
    let healthy = fx.function(&env).await;
    let service = LambdaService::new(&healthy, fx.stack.sqs(), &fx.queue_url, Timing::SCALED);
    let complete = || async { fx.record(&push_id).await.is_some_and(|r| r["complete"] == true) };
    let done = service.run_until(&request, &json!({"sweepPushes": true}), Duration::from_secs(60), complete).await;
    let record = fx.record(&push_id).await.unwrap_or(Value::Null);
    assert!(done, "not complete: {record}");
    for thing in &things {
        let doc = fx.shadow(thing, None).await.unwrap_or(Value::Null);
        assert_eq!((doc["state"]["desired"]["mode"].clone(), doc["version"].clone()), (json!(3), json!(1)), "{thing}");
    }
    let left = store.senders().await.expect("reading the board");
    assert!(left.iter().all(|s| s.push_id != push_id), "the completed push is still on the board: {left:?}");
}

/// A push whose every invocation dies (out of memory on it, say) is taken over a few times, then marked stalled with
/// the reason; the sweeper stops waking it. Resumed, it goes on with its takeovers counted afresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_that_keeps_dying_is_marked_stalled_and_can_be_resumed() {
    let fx = PushFixture::new().await;
    fx.create_things(0..2, "doomed").await;
    let point = CrashPoint { step: Step::ShadowRequest, nth: 1, delivered: false, repeat: true };
    let proxy = CrashProxy::start(&fx.stack.var("AWS_ENDPOINT_URL_IOT_DATA_PLANE"), point).await;
    let function = fx
        .function(&[
            ("AWS_ENDPOINT_URL_IOT_DATA_PLANE", proxy.url.as_str()),
            ("PUSH_LEASE_MS", "1000"),
            ("PUSH_HANDOFF_GRACE_MS", "1500"),
        ])
        .await;
    proxy.watch(function.pid_handle());
    let service = LambdaService::new(&function, fx.stack.sqs(), &fx.queue_url, Timing::SCALED);
    let push_id = unique("doomed");
    let request = json!({"pushId": push_id, "desired": {"mode": 1}, "targets": {"things": [fx.thing(0), fx.thing(1)]}});
    let stalled = || async { fx.record(&push_id).await.is_some_and(|r| r["stalled"].is_string()) };
    let done = service.run_until(&request, &json!({"sweepPushes": true}), Duration::from_secs(60), stalled).await;
    let record = fx.record(&push_id).await.unwrap_or(Value::Null);
    assert!(done, "not marked stalled: {record}");
    assert_eq!(record["complete"], false);
    assert!(record["stalled"].as_str().is_some_and(|r| r.contains("died")), "{record}");
    assert!(record.get("openPush").is_none(), "still in the sweeper's index: {record}");
    assert_eq!(fx.shadow(&fx.thing(0), None).await, None, "a request got through");

    // Once whatever killed it is fixed, the operator resumes it: its takeovers start afresh, and it completes.
    let healthy = fx.function(&[("PUSH_LEASE_MS", "1000"), ("PUSH_HANDOFF_GRACE_MS", "1500")]).await;
    let resumed = push(&healthy, &json!({"resumePush": push_id})).await.expect("invoking shadow-push with resumePush");
    let service = LambdaService::new(&healthy, fx.stack.sqs(), &fx.queue_url, Timing::SCALED);
    let complete = || async { fx.record(&push_id).await.is_some_and(|r| r["complete"] == true) };
    let wake = json!({"continuePush": push_id});
    let done = service.run_until(&wake, &json!({"sweepPushes": true}), Duration::from_secs(60), complete).await;
    let record = fx.record(&push_id).await.unwrap_or(Value::Null);
    assert!(done, "not complete after the resume ({resumed}): {record}");
    assert!(record.get("stalled").is_none() && record["takeovers"] == 0, "{record}");
    for i in 0..2 {
        let doc = fx.shadow(&fx.thing(i), None).await.unwrap_or(Value::Null);
        assert_eq!((doc["state"]["desired"]["mode"].clone(), doc["version"].clone()), (json!(1), json!(1)), "{doc}");
    }
}
