//! Staged rollouts on the local stack, with simulated devices (the demo's device loop) and short bakes: phases
//! gated by what devices report, the stop and the rollback on a failed judgment, an operator's abort, pause and
//! resume, and crashes during a bake and during a rollback.

use std::time::{Duration, Instant};

use devstack::crash::{CrashPoint, CrashProxy, Step};
use devstack::lambda::LocalLambda;
use devstack::push::{Device, PushFixture, push};
use devstack::service::{LambdaService, Timing};
use devstack::unique;
use serde_json::{Value, json};
use shadow_core::push::rollout::Rollout;

const TIMING: Timing = Timing {
    timeout: Duration::from_secs(5),
    retries: [Duration::from_secs(2), Duration::from_secs(4)],
    visibility: Duration::from_secs(15),
    schedule_every: Duration::from_secs(1),
    poll_every: Duration::from_millis(100),
};

const SETTINGS: &str = "settings";

fn request(fx: &PushFixture, push_id: &str, rollout: Value, extra: Value) -> Value {
    let mut request = json!({"pushId": push_id, "desired": {SETTINGS: {"mode": 7}},
                             "targets": {"thingGroup": fx.group("prod")}, "rollout": rollout});
    if let (Some(r), Some(extra)) = (request.as_object_mut(), extra.as_object()) {
        r.extend(extra.clone());
    }
    request
}

/// The phase (0-based) each thing of the fleet falls into, as the push computes it.
fn phases(fx: &PushFixture, push_id: &str, rollout: &Value, things: usize) -> Vec<usize> {
    let mut errors = Vec::new();
    let rollout = Rollout::validate(rollout, &mut errors).unwrap_or_else(|| panic!("{errors:?}"));
    (0..things).map(|i| rollout.phase_of(push_id, &fx.thing(i))).collect()
}

async fn fleet(things: usize) -> (PushFixture, LocalLambda, LocalLambda) {
    let fx = PushFixture::new().await;
    fx.create_things(0..things, "tokyo").await;
    fx.create_group("prod", None, 0..things).await;
    let env = [("PUSH_LEASE_MS", "3000"), ("PUSH_HANDOFF_GRACE_MS", "1500"), ("PUSH_CONCURRENCY", "8")];
    let function = fx.function(&env).await;
    // A second execution environment, for an operator's control while a segment runs in the first.
    let operator = fx.function(&env).await;
    (fx, function, operator)
}

async fn state(fx: &PushFixture, push_id: &str) -> String {
    fx.record(push_id).await.map(|r| r["state"].as_str().unwrap_or_default().to_owned()).unwrap_or_default()
}

/// Runs the push under Lambda's service until its state is one of `until`, with `devices` reporting.
async fn run(
    fx: &PushFixture,
    function: &LocalLambda,
    request: &Value,
    devices: Vec<String>,
    until: &[&str],
    limit: Duration,
) -> Value {
    let devices = devices.into_iter().map(|t| (t, Device::Healthy)).collect();
    run_fleet(fx, function, request, devices, until, limit).await
}

/// [`run`] with devices of every kind.
async fn run_fleet(
    fx: &PushFixture,
    function: &LocalLambda,
    request: &Value,
    devices: Vec<(String, Device)>,
    until: &[&str],
    limit: Duration,
) -> Value {
    let service = LambdaService::new(function, fx.stack.sqs(), &fx.queue_url, TIMING);
    let push_id = request["pushId"].as_str().unwrap_or_default().to_owned();
    let done = || async { until.contains(&state(fx, &push_id).await.as_str()) };
    let sweep = json!({"sweepPushes": true});
    let reached = tokio::select! {
        reached = service.run_until(request, &sweep, limit, done) => reached,
        () = fx.fleet_of(devices) => false,
    };
    let record = fx.record(&push_id).await.unwrap_or(Value::Null);
    assert!(reached, "not {until:?} within {limit:?}: {record}");
    record
}

fn mode(doc: &Option<Value>) -> Value {
    doc.as_ref().map_or(Value::Null, |d| d["state"]["desired"][SETTINGS]["mode"].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_that_apply_the_setting_let_every_phase_through() {
    let (fx, function, _) = fleet(30).await;
    let push_id = unique("rollout");
    // Devices report within a second or two of their update; the bake gives them 3.
    let rollout = json!({"phases": [{"percent": 30}, {"percent": 100}], "bakeSeconds": 3, "minThings": 3});
    let things: Vec<String> = (0..30).map(|i| fx.thing(i)).collect();
    let record = run(
        &fx,
        &function,
        &request(&fx, &push_id, rollout, json!({})),
        things,
        &["complete", "aborted"],
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(record["state"], "complete", "{record}");
    assert_eq!(record["updated"], 30, "{record}");
    let counts = record["phases"].as_array().cloned().unwrap_or_default();
    assert_eq!(counts.len(), 2, "{record}");
    for phase in &counts {
        assert_eq!(phase["judged"], true, "{record}");
        assert_eq!(phase["converged"], phase["updated"], "every updated thing reported the setting: {record}");
        assert_eq!(phase["pending"], 0, "{record}");
    }
    let first: u64 = counts[0]["targets"].as_u64().unwrap_or(0);
    assert!((3..=18).contains(&first), "about 30 % of 30 in phase 1: {record}");
    for i in 0..30 {
        assert_eq!(mode(&fx.shadow(&fx.thing(i), None).await), json!(7));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phase_whose_devices_do_not_report_stops_the_push() {
    let (fx, function, _) = fleet(40).await;
    let push_id = unique("rollout");
    let rollout = json!({"phases": [{"percent": 50}, {"percent": 100}], "bakeSeconds": 1, "minThings": 5,
                         "failedPercent": 5});
    let cohort = phases(&fx, &push_id, &rollout, 40);
    // 30 % of the devices never report.
    let reporting: Vec<String> = (0..40).filter(|i| i % 10 >= 3).map(|i| fx.thing(i)).collect();
    let record = run(
        &fx,
        &function,
        &request(&fx, &push_id, rollout, json!({})),
        reporting,
        &["complete", "aborted"],
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(record["state"], "aborted", "{record}");
    let reason = record["abortReason"].as_str().unwrap_or_default();
    // Silent devices are pending, not failed: the phase stops on convergedPercent, which applies to every phase.
    assert!(reason.starts_with("phase 1") && reason.contains("convergedPercent"), "{record}");
    assert_eq!(record["phases"][1]["updated"], 0, "{record}");
    for (i, phase) in cohort.iter().enumerate() {
        let doc = fx.shadow(&fx.thing(i), None).await;
        if *phase == 0 {
            assert_eq!(mode(&doc), json!(7), "{} is in phase 1", fx.thing(i));
        } else {
            assert_eq!(mode(&doc), Value::Null, "{} is outside phase 1 and was updated: {doc:?}", fx.thing(i));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_puts_every_thing_back_except_one_changed_since() {
    let (fx, function, _) = fleet(30).await;
    // Half the fleet had a setting before, half had none.
    for i in 0..15 {
        fx.set_desired(&fx.thing(i), None, json!({SETTINGS: {"mode": 1}})).await;
    }
    let push_id = unique("rollout");
    let rollout = json!({"phases": [{"percent": 100}], "bakeSeconds": 3, "minThings": 5, "onAbort": "rollback"});
    let reporting: Vec<String> = (0..30).filter(|i| i % 10 >= 3).map(|i| fx.thing(i)).collect();
    let request = request(&fx, &push_id, rollout, json!({}));
    // A later push changes thing 5 while the phase bakes.
    let later = async {
        loop {
            if state(&fx, &push_id).await == "baking" {
                fx.set_desired(&fx.thing(5), None, json!({SETTINGS: {"mode": 9}})).await;
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let (record, ()) = tokio::join!(
        run(&fx, &function, &request, reporting, &["rolledBack", "complete", "aborted"], Duration::from_secs(90)),
        later
    );
    assert_eq!(record["state"], "rolledBack", "{record}");
    assert_eq!(record["rollback"]["conflicts"], 1, "{record}");
    assert_eq!(record["rollback"]["restored"], 29, "{record}");
    for i in 0..30 {
        let doc = fx.shadow(&fx.thing(i), None).await;
        let expected = match i {
            5 => json!(9),
            i if i < 15 => json!(1),
            _ => Value::Null,
        };
        assert_eq!(mode(&doc), expected, "{}: {doc:?}", fx.thing(i));
    }
    let answer = push(&function, &request).await.expect("invoking shadow-push with the rollout");
    let conflicts: Vec<&str> =
        answer["conflicts"].as_array().into_iter().flatten().filter_map(|c| c["thingName"].as_str()).collect();
    assert_eq!(conflicts, [fx.thing(5).as_str()], "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_in_the_middle_of_a_phase_stops_within_5_seconds() {
    let (fx, function, operator) = fleet(40).await;
    let push_id = unique("rollout");
    let rollout = json!({"phases": [{"percent": 100}], "bakeSeconds": 0});
    let request = request(&fx, &push_id, rollout, json!({"maxRequestsPerSecond": 4}));
    let service = LambdaService::new(
        &function,
        fx.stack.sqs(),
        &fx.queue_url,
        Timing { timeout: Duration::from_secs(30), ..TIMING },
    );
    let operate = async {
        loop {
            let updated = fx.record(&push_id).await.map_or(0, |r| r["updated"].as_u64().unwrap_or(0));
            if updated >= 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let asked = Instant::now();
        let answer =
            push(&operator, &json!({"abortPush": push_id})).await.expect("invoking shadow-push with abortPush");
        while state(&fx, &push_id).await != "aborted" && asked.elapsed() < Duration::from_secs(20) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        (asked.elapsed(), answer)
    };
    let done = || async { state(&fx, &push_id).await == "aborted" };
    let sweep = json!({"sweepPushes": true});
    let (_, (took, answer)) = tokio::join!(service.run_until(&request, &sweep, Duration::from_secs(60), done), operate);
    let record = fx.record(&push_id).await.unwrap_or(Value::Null);
    assert_eq!(record["state"], "aborted", "{record}; answer {answer}");
    assert!(took <= Duration::from_secs(5), "stopped {took:?} after the abort: {record}");
    let updated = record["updated"].as_u64().unwrap_or(0);
    assert!(updated < 40, "{record}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut held = 0;
    for i in 0..40 {
        if mode(&fx.shadow(&fx.thing(i), None).await) == json!(7) {
            held += 1;
        }
    }
    assert_eq!(held, updated, "nothing is updated after the abort, and every update is counted: {record}");
    let refused = push(&operator, &json!({"pausePush": unique("nobody")})).await;
    let refused = refused.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(refused.contains("pausePush") && refused.contains("names no push"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_push_resumes_after_a_hand_off_and_updates_nothing_twice() {
    let (fx, function, operator) = fleet(30).await;
    let push_id = unique("rollout");
    // No devices report here: the judgment lets everything through.
    let rollout = json!({"phases": [{"percent": 100}], "bakeSeconds": 0, "convergedPercent": 0, "failedPercent": 100});
    let request = request(&fx, &push_id, rollout, json!({"maxRequestsPerSecond": 6}));
    let service = LambdaService::new(
        &function,
        fx.stack.sqs(),
        &fx.queue_url,
        Timing { timeout: Duration::from_secs(3), ..TIMING },
    );
    let operate = async {
        // Paused after the first hand-off.
        while fx.record(&push_id).await.is_none_or(|r| r["handedOff"].as_u64().unwrap_or(0) < 1) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let paused =
            push(&operator, &json!({"pausePush": push_id})).await.expect("invoking shadow-push with pausePush");
        let asked = Instant::now();
        while state(&fx, &push_id).await != "paused" && asked.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let at_pause = fx.record(&push_id).await.unwrap_or(Value::Null);
        tokio::time::sleep(Duration::from_secs(3)).await;
        let later = fx.record(&push_id).await.unwrap_or(Value::Null);
        let resumed =
            push(&operator, &json!({"resumePush": push_id})).await.expect("invoking shadow-push with resumePush");
        (paused, at_pause, later, resumed)
    };
    let done = || async { state(&fx, &push_id).await == "complete" };
    let sweep = json!({"sweepPushes": true});
    let (finished, (paused, at_pause, later, resumed)) =
        tokio::join!(service.run_until(&request, &sweep, Duration::from_secs(90), done), operate);
    assert_eq!(at_pause["state"], "paused", "{paused}");
    assert_eq!(at_pause["updated"], later["updated"], "nothing moves while paused: {at_pause} / {later}");
    assert!(at_pause["updated"].as_u64().unwrap_or(0) < 30, "paused before the end: {at_pause}");
    assert_eq!(resumed["state"], "running", "{resumed}");
    let record = fx.record(&push_id).await.unwrap_or(Value::Null);
    assert!(finished, "{record}");
    assert_eq!((record["updated"].clone(), record["targets"].clone()), (json!(30), json!(30)), "{record}");
    for i in 0..30 {
        let doc = fx.shadow(&fx.thing(i), None).await;
        assert_eq!(mode(&doc), json!(7));
        assert_eq!(doc.as_ref().map(|d| d["version"].clone()), Some(json!(1)), "{} updated twice", fx.thing(i));
    }
}

/// A crash while the push bakes (its delayed hand-off lost), and one in the middle of a rollback: both complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashes_during_a_bake_and_during_a_rollback_still_complete() {
    for (step, nth, on_abort, end) in
        [(Step::HandOff, 1, "stop", "complete"), (Step::RollbackUpdate, 3, "rollback", "rolledBack")]
    {
        let fx = PushFixture::new().await;
        fx.create_things(0..12, "tokyo").await;
        fx.create_group("prod", None, 0..12).await;
        let endpoint = match step {
            Step::HandOff => ("AWS_ENDPOINT_URL_SQS", fx.stack.var("AWS_ENDPOINT_URL_SQS")),
            _ => ("AWS_ENDPOINT_URL_IOT_DATA_PLANE", fx.stack.var("AWS_ENDPOINT_URL_IOT_DATA_PLANE")),
        };
        let proxy = CrashProxy::start(&endpoint.1, CrashPoint { step, nth, delivered: false, repeat: false }).await;
        let function = fx
            .function(&[(endpoint.0, proxy.url.as_str()), ("PUSH_LEASE_MS", "2000"), ("PUSH_HANDOFF_GRACE_MS", "1500")])
            .await;
        proxy.watch(function.pid_handle());
        let push_id = unique("rollout");
        let rollout = json!({"phases": [{"percent": 100}], "bakeSeconds": 2, "minThings": 3, "onAbort": on_abort});
        // With a rollback, no device reports, so the phase fails its judgment.
        let reporting: Vec<String> =
            if on_abort == "stop" { (0..12).map(|i| fx.thing(i)).collect() } else { Vec::new() };
        let record = run(
            &fx,
            &function,
            &request(&fx, &push_id, rollout, json!({})),
            reporting,
            &[end],
            Duration::from_secs(90),
        )
        .await;
        assert!(proxy.fired(), "the crash point {step:?} was never reached: {record}");
        assert_eq!(record["state"], end, "{record}");
        for i in 0..12 {
            let doc = fx.shadow(&fx.thing(i), None).await;
            let expected = if end == "complete" { json!(7) } else { Value::Null };
            assert_eq!(mode(&doc), expected, "{}: {doc:?}", fx.thing(i));
        }
        if end == "rolledBack" {
            assert_eq!(record["rollback"]["restored"], 12, "{record}");
        }
    }
}

/// A push id whose first band holds between `low` and `high` of `things` (the draw is the push id's hash).
fn push_id_with_first_band(
    fx: &PushFixture,
    rollout: &Value,
    things: std::ops::Range<usize>,
    low: usize,
    high: usize,
) -> String {
    loop {
        let push_id = unique("rollout");
        let first = phases(fx, &push_id, rollout, things.end).iter().skip(things.start).filter(|p| **p == 0).count();
        if (low..=high).contains(&first) {
            return push_id;
        }
    }
}

async fn wait_for(fx: &PushFixture, push_id: &str, wanted: &str, limit: Duration) -> Value {
    let asked = Instant::now();
    while state(fx, push_id).await != wanted && asked.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    fx.record(push_id).await.unwrap_or(Value::Null)
}

/// Devices that put their own value back in `desired` are refused, which counts as failed: a 10 % canary of 4 things
/// stops the rollout though it is below `minThings` (which only delays the cumulative failedPercent rule).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_that_refuse_the_setting_stop_a_small_canary() {
    let (fx, function, _) = fleet(40).await;
    for i in 0..40 {
        fx.report(&fx.thing(i), None, &json!({SETTINGS: {"mode": 1}})).await;
    }
    let rollout = json!({"phases": [{"percent": 10}, {"percent": 50}, {"percent": 100}], "bakeSeconds": 2,
                         "minThings": 10});
    let push_id = push_id_with_first_band(&fx, &rollout, 0..40, 2, 6);
    let cohort = phases(&fx, &push_id, &rollout, 40);
    let devices = (0..40).map(|i| (fx.thing(i), Device::Refusing)).collect();
    let request = request(&fx, &push_id, rollout, json!({}));
    let record = run_fleet(&fx, &function, &request, devices, &["complete", "aborted"], Duration::from_secs(60)).await;
    assert_eq!(record["state"], "aborted", "{record}");
    let first = &record["phases"][0];
    let canary = cohort.iter().filter(|p| **p == 0).count();
    assert_eq!(first["updated"], canary, "{record}");
    assert_eq!(first["refused"], canary, "every canary device refused: {record}");
    assert_eq!(first["converged"], 0, "{record}");
    assert_eq!(record["phases"][1]["updated"], 0, "{record}");
    for (i, phase) in cohort.iter().enumerate() {
        let doc = fx.shadow(&fx.thing(i), None).await;
        let expected = if *phase == 0 { json!(1) } else { Value::Null };
        assert_eq!(mode(&doc), expected, "{}: the canary put its own value back: {doc:?}", fx.thing(i));
        if *phase > 0 {
            assert_eq!(
                doc.as_ref().map(|d| d["version"].clone()),
                Some(json!(1)),
                "{} outside the canary was written",
                fx.thing(i)
            );
        }
    }
}

/// The four kinds of device in one fleet, judged each as what it is: healthy and clearing ones converged (a device
/// that applies, reports and clears `desired` has converged), silent ones pending, refusing ones refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_silent_refusing_and_clearing_devices_are_each_judged_for_what_they_did() {
    let (fx, function, _) = fleet(40).await;
    let kind = |i: usize| match i % 10 {
        0 => Device::Silent,
        1 => Device::Refusing,
        2..=4 => Device::Clearing,
        _ => Device::Healthy,
    };
    let rollout = json!({"phases": [{"percent": 50}, {"percent": 100}], "bakeSeconds": 2, "minThings": 3,
                         "convergedPercent": 50, "failedPercent": 50});
    let push_id = push_id_with_first_band(&fx, &rollout, 0..40, 12, 28);
    let cohort = phases(&fx, &push_id, &rollout, 40);
    let devices = (0..40).map(|i| (fx.thing(i), kind(i))).collect();
    let request = request(&fx, &push_id, rollout, json!({}));
    let record = run_fleet(&fx, &function, &request, devices, &["complete", "aborted"], Duration::from_secs(60)).await;
    assert_eq!(record["state"], "complete", "{record}");
    for phase in 0..2 {
        let count = |wanted: &[Device]| (0..40).filter(|i| cohort[*i] == phase && wanted.contains(&kind(*i))).count();
        let counts = &record["phases"][phase];
        assert_eq!(
            counts["updated"],
            count(&[Device::Silent, Device::Refusing, Device::Clearing, Device::Healthy]),
            "{record}"
        );
        assert_eq!(counts["converged"], count(&[Device::Clearing, Device::Healthy]), "phase {}: {record}", phase + 1);
        assert_eq!(counts["pending"], count(&[Device::Silent]), "phase {}: {record}", phase + 1);
        assert_eq!(counts["refused"], count(&[Device::Refusing]), "phase {}: {record}", phase + 1);
    }
    for i in (0..40).filter(|i| kind(*i) == Device::Clearing) {
        let doc = fx.shadow(&fx.thing(i), None).await.unwrap_or(Value::Null);
        assert_eq!(doc["state"]["reported"][SETTINGS]["mode"], 7, "{doc}");
        assert_eq!(doc["state"]["desired"][SETTINGS]["mode"], Value::Null, "{doc}");
    }
}

/// The push set `settings.mode` on things that had no `settings`; another writer then set `settings.temp`. The
/// rollback removes `settings.mode` alone: `settings.temp` stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_removes_the_leaves_it_wrote_and_keeps_another_writers_sibling() {
    let (fx, function, _) = fleet(20).await;
    let push_id = unique("rollout");
    // No device reports: the phase fails its judgment, and the rollback follows.
    let rollout = json!({"phases": [{"percent": 100}], "bakeSeconds": 3, "minThings": 3, "onAbort": "rollback"});
    let request = request(&fx, &push_id, rollout, json!({}));
    let other = async {
        while state(&fx, &push_id).await != "baking" {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for i in 0..20 {
            fx.set_desired(&fx.thing(i), None, json!({SETTINGS: {"temp": 5}})).await;
        }
    };
    let (record, ()) = tokio::join!(
        run(&fx, &function, &request, Vec::new(), &["rolledBack", "complete", "aborted"], Duration::from_secs(90)),
        other
    );
    assert_eq!(record["state"], "rolledBack", "{record}");
    assert_eq!(record["rollback"]["restored"], 20, "{record}");
    assert_eq!(record["rollback"]["conflicts"], 0, "{record}");
    for i in 0..20 {
        let doc = fx.shadow(&fx.thing(i), None).await.unwrap_or(Value::Null);
        assert_eq!(doc["state"]["desired"], json!({SETTINGS: {"temp": 5}}), "{}: {doc}", fx.thing(i));
    }
}

/// 60 things join the group while the first phase bakes. Those that hash into the first band are pushed in the
/// second phase and judged with it; every target is pushed once, and the totals count each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn things_that_join_during_the_first_bake_are_all_pushed() {
    let (fx, function, _) = fleet(40).await;
    fx.create_things(40..100, "tokyo").await;
    let rollout = json!({"phases": [{"percent": 10}, {"percent": 50}, {"percent": 100}], "bakeSeconds": 5,
                         "minThings": 1});
    let push_id = push_id_with_first_band(&fx, &rollout, 40..100, 3, 12);
    let cohort = phases(&fx, &push_id, &rollout, 100);
    let request = request(&fx, &push_id, rollout, json!({}));
    let join = async {
        while state(&fx, &push_id).await != "baking" {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        futures::future::join_all((40..100).step_by(10).map(|i| fx.join_group("prod", i..i + 10))).await;
        // All of them joined before the bake ended: phase 2 walks them.
        let still = fx.record(&push_id).await.unwrap_or(Value::Null);
        assert_eq!((still["state"].clone(), still["phase"].clone()), (json!("baking"), json!(1)), "{still}");
    };
    let devices = (0..100).map(|i| fx.thing(i)).collect();
    let (record, ()) =
        tokio::join!(run(&fx, &function, &request, devices, &["complete", "aborted"], Duration::from_secs(90)), join);
    assert_eq!(record["state"], "complete", "{record}");
    assert_eq!((record["targets"].clone(), record["updated"].clone()), (json!(100), json!(100)), "{record}");
    let late = (40..100).filter(|i| cohort[*i] == 0).count();
    let second = (0..100).filter(|i| cohort[*i] == 1).count();
    assert_eq!(record["phases"][1]["targets"], second + late, "the late joiners of band 1 in phase 2: {record}");
    assert_eq!(record["phases"][1]["converged"], second + late, "{record}");
    for (i, band) in cohort.iter().enumerate() {
        let doc = fx.shadow(&fx.thing(i), None).await.unwrap_or(Value::Null);
        assert_eq!(doc["state"]["desired"][SETTINGS]["mode"], 7, "{} (band {}): {doc}", fx.thing(i), band + 1);
    }
}

/// An operator stops a rollout without a rollback, then wants to go back: the journal is still there, and the
/// rollback puts every updated thing back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_without_rollback_can_be_rolled_back_later() {
    let (fx, function, operator) = fleet(30).await;
    for i in 0..10 {
        fx.set_desired(&fx.thing(i), None, json!({SETTINGS: {"mode": 1}})).await;
    }
    let push_id = unique("rollout");
    let rollout = json!({"phases": [{"percent": 50}, {"percent": 100}], "bakeSeconds": 30, "minThings": 3,
                         "onAbort": "rollback"});
    let request = request(&fx, &push_id, rollout, json!({}));
    let service = LambdaService::new(&function, fx.stack.sqs(), &fx.queue_url, TIMING);
    let operate = async {
        while state(&fx, &push_id).await != "baking" {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // The rollout says onAbort: rollback; the operator says no rollback.
        let stop = json!({"abortPush": push_id, "rollback": false});
        let stopped = push(&operator, &stop).await.expect("invoking shadow-push to stop the rollout");
        let aborted = wait_for(&fx, &push_id, "aborted", Duration::from_secs(20)).await;
        let back = json!({"abortPush": push_id, "rollback": true});
        let asked = push(&operator, &back).await.expect("rollback after the abort");
        (stopped, aborted, asked)
    };
    let done = || async { state(&fx, &push_id).await == "rolledBack" };
    let sweep = json!({"sweepPushes": true});
    let (finished, (stopped, aborted, asked)) =
        tokio::join!(service.run_until(&request, &sweep, Duration::from_secs(90), done), operate);
    assert_eq!(aborted["state"], "aborted", "{stopped} {aborted}");
    let updated = aborted["updated"].as_u64().unwrap_or(0);
    assert!(updated > 0, "phase 1 updated things before the abort: {aborted}");
    let record = fx.record(&push_id).await.unwrap_or(Value::Null);
    assert!(finished, "not rolled back: {asked} {record}");
    assert_eq!(record["rollback"]["restored"], updated, "{record}");
    for i in 0..30 {
        let doc = fx.shadow(&fx.thing(i), None).await;
        let expected = if i < 10 { json!(1) } else { Value::Null };
        assert_eq!(mode(&doc), expected, "{}: {doc:?}", fx.thing(i));
    }
}

/// A rollback paused halfway stays paused, and resumed it goes on with the rollback (not with the push): every
/// updated thing is put back once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_rollback_resumes_as_a_rollback() {
    let (fx, function, operator) = fleet(16).await;
    let push_id = unique("rollout");
    // No device reports: the phase fails its judgment and the rollback follows, at 4 requests a second.
    let rollout = json!({"phases": [{"percent": 100}], "bakeSeconds": 1, "minThings": 3, "onAbort": "rollback"});
    let request = request(&fx, &push_id, rollout, json!({"maxRequestsPerSecond": 4}));
    let service = LambdaService::new(&function, fx.stack.sqs(), &fx.queue_url, TIMING);
    let operate = async {
        while fx
            .record(&push_id)
            .await
            .is_none_or(|r| r["state"] != "rollingBack" || r["rollback"]["restored"].as_u64().unwrap_or(0) < 1)
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let paused =
            push(&operator, &json!({"pausePush": push_id})).await.expect("invoking shadow-push with pausePush");
        let at_pause = wait_for(&fx, &push_id, "paused", Duration::from_secs(10)).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let later = fx.record(&push_id).await.unwrap_or(Value::Null);
        let refused = push(&operator, &json!({"abortPush": push_id, "rollback": false})).await;
        let resumed =
            push(&operator, &json!({"resumePush": push_id})).await.expect("invoking shadow-push with resumePush");
        (paused, at_pause, later, refused.err().map(|e| e.to_string()), resumed)
    };
    let done = || async { state(&fx, &push_id).await == "rolledBack" };
    let sweep = json!({"sweepPushes": true});
    let (finished, (paused, at_pause, later, refused, resumed)) =
        tokio::join!(service.run_until(&request, &sweep, Duration::from_secs(120), done), operate);
    assert_eq!(at_pause["state"], "paused", "{paused}");
    let restored = |r: &Value| r["rollback"]["restored"].as_u64().unwrap_or(0);
    assert!(restored(&at_pause) < 16, "paused before the rollback's end: {at_pause}");
    assert_eq!(restored(&at_pause), restored(&later), "nothing is put back while paused: {at_pause} / {later}");
    assert!(refused.as_deref().is_some_and(|e| e.contains("rolling back already")), "{refused:?}");
    assert_eq!(resumed["state"], "rollingBack", "{resumed}");
    let record = fx.record(&push_id).await.unwrap_or(Value::Null);
    assert!(finished, "{record}");
    assert_eq!(record["rollback"]["restored"], 16, "{record}");
    assert_eq!(record["updated"], 16, "the push did not go on after the resume: {record}");
    for i in 0..16 {
        let doc = fx.shadow(&fx.thing(i), None).await;
        assert_eq!(mode(&doc), Value::Null, "{}: {doc:?}", fx.thing(i));
        // One update by the push, one by the rollback.
        assert_eq!(doc.as_ref().map(|d| d["version"].clone()), Some(json!(2)), "{}: {doc:?}", fx.thing(i));
    }
}

/// A rollout whose every segment dies as it records is marked stalled; the operator then rolls it back (from a
/// healthy function), and every thing it updated is put back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_rollout_is_rolled_back() {
    let fx = PushFixture::new().await;
    fx.create_things(0..10, "tokyo").await;
    fx.create_group("prod", None, 0..10).await;
    let point = CrashPoint { step: Step::RecordSegment, nth: 1, delivered: false, repeat: true };
    let proxy = CrashProxy::start(&fx.stack.var("AWS_ENDPOINT_URL_DYNAMODB"), point).await;
    let env = [("PUSH_LEASE_MS", "1000"), ("PUSH_HANDOFF_GRACE_MS", "1500")];
    let dying = fx.function(&[env[0], env[1], ("AWS_ENDPOINT_URL_DYNAMODB", proxy.url.as_str())]).await;
    proxy.watch(dying.pid_handle());
    let push_id = unique("rollout");
    let rollout = json!({"phases": [{"percent": 100}], "bakeSeconds": 1, "minThings": 3, "onAbort": "stop"});
    let request = request(&fx, &push_id, rollout, json!({}));
    let stalled = || async { fx.record(&push_id).await.is_some_and(|r| r["stalled"].is_string()) };
    let sweep = json!({"sweepPushes": true});
    let service = LambdaService::new(&dying, fx.stack.sqs(), &fx.queue_url, TIMING);
    let marked = service.run_until(&request, &sweep, Duration::from_secs(60), stalled).await;
    let record = fx.record(&push_id).await.unwrap_or(Value::Null);
    assert!(marked, "not marked stalled: {record}");
    let updated: Vec<usize> = {
        let mut updated = Vec::new();
        for i in 0..10 {
            if mode(&fx.shadow(&fx.thing(i), None).await) == json!(7) {
                updated.push(i);
            }
        }
        updated
    };
    assert!(!updated.is_empty(), "the dying segments updated nothing: {record}");

    let healthy = fx.function(&env).await;
    let answer = push(&healthy, &json!({"abortPush": push_id, "rollback": true})).await;
    let answer = answer.expect("rollback of a stalled push");
    let service = LambdaService::new(&healthy, fx.stack.sqs(), &fx.queue_url, TIMING);
    let done = || async { state(&fx, &push_id).await == "rolledBack" };
    let wake = json!({"continuePush": push_id});
    let finished = service.run_until(&wake, &sweep, Duration::from_secs(60), done).await;
    let record = fx.record(&push_id).await.unwrap_or(Value::Null);
    assert!(finished, "not rolled back: {answer} {record}");
    assert!(record.get("stalled").is_none(), "{record}");
    for i in 0..10 {
        assert_eq!(mode(&fx.shadow(&fx.thing(i), None).await), Value::Null, "{} not put back: {record}", fx.thing(i));
    }
}

/// Where a rollout's crash test kills, and what an operator does meanwhile.
#[derive(Clone, Copy)]
struct Kill {
    point: CrashPoint,
    /// The operator's control, sent when the push first bakes, through the killed function (it dies carrying the
    /// control out), and a resume after a pause.
    operator: Option<&'static str>,
    end: &'static str,
}

/// A 2-phase rollout of 12 things, killed at `kill.point`: it still reaches the state it would have reached, and
/// no thing is updated twice (devices stay silent and the gates are open, so every version counts the push's own
/// writes: 1 after the push, 2 after a rollback).
async fn killed_rollout(kill: Kill) {
    let fx = PushFixture::new().await;
    fx.create_things(0..12, "tokyo").await;
    fx.create_group("prod", None, 0..12).await;
    let var = kill.point.step.endpoint_var();
    let proxy = CrashProxy::start(&fx.stack.var(var), kill.point).await;
    let env = [("PUSH_LEASE_MS", "2000"), ("PUSH_HANDOFF_GRACE_MS", "1500")];
    let proxied = [env[0], env[1], (var, proxy.url.as_str())];
    // The operator's invocations go through the proxy; the segments too, unless the operator is the one to die.
    let function = if kill.operator.is_some() { fx.function(&env).await } else { fx.function(&proxied).await };
    let operator = fx.function(&proxied).await;
    proxy.watch(if kill.operator.is_some() { operator.pid_handle() } else { function.pid_handle() });
    let push_id = unique("rollout");
    let rollout = json!({"phases": [{"percent": 50}, {"percent": 100}], "bakeSeconds": 2, "minThings": 1,
                         "convergedPercent": 0, "failedPercent": 100, "onAbort": "stop"});
    let request = request(&fx, &push_id, rollout, json!({}));
    let operate = async {
        let Some(action) = kill.operator else { return };
        while state(&fx, &push_id).await != "baking" {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The invocation may die mid-control: its answer is lost, and the next arrival carries the control out.
        match action {
            "rollback" => {
                let _ = push(&operator, &json!({"abortPush": push_id, "rollback": true})).await;
            }
            _ => {
                let _ = push(&operator, &json!({"pausePush": push_id})).await;
                wait_for(&fx, &push_id, "paused", Duration::from_secs(10)).await;
                let _ = push(&operator, &json!({"resumePush": push_id})).await;
            }
        }
    };
    let done = || async { state(&fx, &push_id).await == kill.end };
    let sweep = json!({"sweepPushes": true});
    let service = LambdaService::new(&function, fx.stack.sqs(), &fx.queue_url, TIMING);
    let (finished, ()) = tokio::join!(service.run_until(&request, &sweep, Duration::from_secs(90), done), operate);
    let record = fx.record(&push_id).await.unwrap_or(Value::Null);
    assert!(proxy.fired(), "the crash point {:?} was never reached: {record}", kill.point);
    assert!(finished, "not {} after a kill at {:?}: {record}", kill.end, kill.point);
    let cohort = phases(&fx, &push_id, &request["rollout"], 12);
    for (i, band) in cohort.iter().enumerate() {
        let doc = fx.shadow(&fx.thing(i), None).await.unwrap_or(Value::Null);
        // A rollback during phase 1's bake: phase 1's things pushed and put back, the others never written.
        let (expected, version) = match (kill.end, band) {
            ("rolledBack", 0) => (Value::Null, json!(2)),
            ("rolledBack", _) => (Value::Null, Value::Null),
            _ => (json!(7), json!(1)),
        };
        assert_eq!(doc["state"]["desired"][SETTINGS]["mode"], expected, "{}: {doc} {record}", fx.thing(i));
        assert_eq!(doc["version"], version, "{} written twice: {doc} {record}", fx.thing(i));
    }
    if kill.end == "complete" {
        assert_eq!((record["targets"].clone(), record["updated"].clone()), (json!(12), json!(12)), "{record}");
    }
}

fn at(step: Step, nth: usize, delivered: bool) -> CrashPoint {
    CrashPoint { step, nth, delivered, repeat: false }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_at_a_journal_write_before_and_after_it_lands() {
    for delivered in [false, true] {
        killed_rollout(Kill { point: at(Step::JournalWrite, 3, delivered), operator: None, end: "complete" }).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_as_the_judgment_is_recorded_and_at_the_phase_hand_off() {
    // Records: 1 phase 1's push, 2 its judgment; hand-offs: 1 the bake's delayed one, 2 on to phase 2.
    for point in [at(Step::RecordSegment, 2, false), at(Step::RecordSegment, 2, true), at(Step::HandOff, 2, true)] {
        killed_rollout(Kill { point, operator: None, end: "complete" }).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_as_an_abort_with_rollback_is_carried_out_and_handed_on() {
    for point in [at(Step::ApplyControl, 1, false), at(Step::ApplyControl, 1, true), at(Step::HandOff, 1, true)] {
        killed_rollout(Kill { point, operator: Some("rollback"), end: "rolledBack" }).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_as_a_resume_is_written_and_handed_on() {
    for point in [at(Step::Resume, 1, true), at(Step::HandOff, 1, true)] {
        killed_rollout(Kill { point, operator: Some("pause"), end: "complete" }).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_when_a_rollback_update_lands_but_its_answer_is_lost() {
    let fx = PushFixture::new().await;
    fx.create_things(0..12, "tokyo").await;
    fx.create_group("prod", None, 0..12).await;
    let point = at(Step::RollbackUpdate, 2, true);
    let proxy = CrashProxy::start(&fx.stack.var("AWS_ENDPOINT_URL_IOT_DATA_PLANE"), point).await;
    let function = fx
        .function(&[
            ("AWS_ENDPOINT_URL_IOT_DATA_PLANE", proxy.url.as_str()),
            ("PUSH_LEASE_MS", "2000"),
            ("PUSH_HANDOFF_GRACE_MS", "1500"),
        ])
        .await;
    proxy.watch(function.pid_handle());
    let push_id = unique("rollout");
    let rollout = json!({"phases": [{"percent": 100}], "bakeSeconds": 1, "minThings": 3, "onAbort": "rollback"});
    let request = request(&fx, &push_id, rollout, json!({}));
    let record = run(&fx, &function, &request, Vec::new(), &["rolledBack"], Duration::from_secs(90)).await;
    assert!(proxy.fired(), "{record}");
    assert_eq!(record["rollback"]["restored"], 12, "{record}");
    for i in 0..12 {
        let doc = fx.shadow(&fx.thing(i), None).await.unwrap_or(Value::Null);
        assert_eq!(doc["state"]["desired"][SETTINGS]["mode"], Value::Null, "{doc}");
        assert_eq!(doc["version"], 2, "{} put back twice: {doc}", fx.thing(i));
    }
}

/// The segment judging a phase, or rolling back, is killed; the operator's control then finds a dead holder and is
/// carried out over it, once its lease has run out.
async fn killed_then_controlled(
    point: CrashPoint,
    rollout: Value,
    controls: &[Value],
    end: &str,
) -> (PushFixture, String, Vec<usize>) {
    let fx = PushFixture::new().await;
    fx.create_things(0..12, "tokyo").await;
    fx.create_group("prod", None, 0..12).await;
    let var = point.step.endpoint_var();
    let proxy = CrashProxy::start(&fx.stack.var(var), point).await;
    let env = [("PUSH_LEASE_MS", "2000"), ("PUSH_HANDOFF_GRACE_MS", "1500")];
    let function = fx.function(&[env[0], env[1], (var, proxy.url.as_str())]).await;
    proxy.watch(function.pid_handle());
    let operator = fx.function(&env).await;
    // Exactly 6 things in the first band, so that the crash point's count lands where it should.
    let push_id = push_id_with_first_band(&fx, &rollout, 0..12, 6, 6);
    let cohort = phases(&fx, &push_id, &rollout, 12);
    let request = request(&fx, &push_id, rollout, json!({}));
    let operate = async {
        while !proxy.fired() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut answers = Vec::new();
        for control in controls {
            let mut control = control.clone();
            if let Some(fields) = control.as_object_mut() {
                for v in fields.values_mut().filter(|v| v.as_str() == Some("ID")) {
                    *v = json!(push_id);
                }
            }
            let answer = push(&operator, &control).await.map_err(|e| e.to_string());
            answers.push(answer);
            if control.get("pausePush").is_some() {
                wait_for(&fx, &push_id, "paused", Duration::from_secs(10)).await;
            }
        }
        answers
    };
    let done = || async { state(&fx, &push_id).await == end };
    let sweep = json!({"sweepPushes": true});
    let service = LambdaService::new(&function, fx.stack.sqs(), &fx.queue_url, TIMING);
    let (finished, answers) = tokio::join!(service.run_until(&request, &sweep, Duration::from_secs(90), done), operate);
    let record = fx.record(&push_id).await.unwrap_or(Value::Null);
    assert!(finished, "not {end}: {answers:?} {record}");
    (fx, push_id, cohort)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_with_rollback_over_a_judging_segment_that_died() {
    let rollout = json!({"phases": [{"percent": 50}, {"percent": 100}], "bakeSeconds": 1, "minThings": 1,
                         "convergedPercent": 0, "failedPercent": 100, "onAbort": "stop"});
    // Phase 1: 6 reads and 6 updates; the 14th shadow request is the judgment's second read.
    let point = CrashPoint { step: Step::ShadowRequest, nth: 14, delivered: true, repeat: false };
    let controls = [json!({"abortPush": "ID", "rollback": true})];
    let (fx, push_id, cohort) = killed_then_controlled(point, rollout, &controls, "rolledBack").await;
    let record = fx.record(&push_id).await.unwrap_or(Value::Null);
    assert_eq!(record["rollback"]["restored"], 6, "{record}");
    for (i, band) in cohort.iter().enumerate() {
        let doc = fx.shadow(&fx.thing(i), None).await.unwrap_or(Value::Null);
        let version = if *band == 0 { json!(2) } else { Value::Null };
        assert_eq!(doc["version"], version, "{} (band {}): {doc} {record}", fx.thing(i), band + 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_over_a_rollback_segment_that_died_then_a_resume() {
    let rollout = json!({"phases": [{"percent": 50}, {"percent": 100}], "bakeSeconds": 1, "minThings": 1,
                         "onAbort": "rollback"});
    // No device reports: phase 1 fails its judgment; the rollback's 3rd update lands and its holder dies.
    let point = CrashPoint { step: Step::RollbackUpdate, nth: 3, delivered: true, repeat: false };
    let controls = [json!({"pausePush": "ID"}), json!({"resumePush": "ID"})];
    let (fx, push_id, cohort) = killed_then_controlled(point, rollout, &controls, "rolledBack").await;
    let record = fx.record(&push_id).await.unwrap_or(Value::Null);
    let rollback = &record["rollback"];
    assert_eq!(rollback["restored"].as_u64().unwrap_or(0) + rollback["untouched"].as_u64().unwrap_or(0), 6, "{record}");
    for (i, band) in cohort.iter().enumerate() {
        let doc = fx.shadow(&fx.thing(i), None).await.unwrap_or(Value::Null);
        let version = if *band == 0 { json!(2) } else { Value::Null };
        assert_eq!(doc["version"], version, "{} put back twice (band {}): {doc} {record}", fx.thing(i), band + 1);
        assert_eq!(doc["state"]["desired"][SETTINGS]["mode"], Value::Null, "{doc}");
    }
}
