//! A rollout rehearsed on devices that speak MQTT: 200 simulated devices of mixed kinds (`fleet-local devices`'
//! fleet), each connected with its own certificate and answering the deltas the push's updates publish, gate a
//! 3-phase rollout shaped as events/push/rollout-with-rollback.json. The first two phases' devices all apply the
//! setting; a third of the last phase's do not (silent, refusing, partial): the gate lets the first two phases
//! through, stops the third on `convergedPercent`, and the rollback puts every shadow back.

use std::time::Duration;

use devstack::mqtt_device::Endpoint;
use devstack::mqtt_fleet::{Fleet, Kind};
use devstack::push::PushFixture;
use devstack::service::{LambdaService, Timing};
use devstack::unique;
use serde_json::{Value, json};
use shadow_core::push::rollout::Rollout;

const THINGS: usize = 200;
const SHADOW: &str = "test1";

const TIMING: Timing = Timing {
    timeout: Duration::from_secs(5),
    retries: [Duration::from_secs(2), Duration::from_secs(4)],
    visibility: Duration::from_secs(15),
    schedule_every: Duration::from_secs(1),
    poll_every: Duration::from_millis(100),
};

fn kind_in(phase: usize, i: usize) -> Kind {
    match (phase, i % 10) {
        (0 | 1, n) => [Kind::Healthy, Kind::Clearing, Kind::Late][n % 3],
        (_, 0) => Kind::Silent,
        (_, 1) => Kind::Refusing,
        (_, 2) => Kind::Partial,
        (_, 3) => Kind::Late,
        (_, 4) => Kind::Clearing,
        _ => Kind::Healthy,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_mqtt_devices_gate_a_three_phase_rollout_and_its_rollback() {
    let fx = PushFixture::new().await;
    fx.create_things(0..THINGS, "tokyo").await;
    fx.create_group("prod", None, 0..THINGS).await;
    let function = fx.function(&[("PUSH_LEASE_MS", "3000"), ("PUSH_HANDOFF_GRACE_MS", "1500")]).await;

    let mut request: Value = serde_json::from_str(
        &std::fs::read_to_string(devstack::stack::repo_root().join("events/push/rollout-with-rollback.json"))
            .expect("the sample request"),
    )
    .expect("JSON");
    request["targets"] = json!({"thingGroup": fx.group("prod"), "recursive": true});
    request["rollout"]["bakeSeconds"] = json!(6);
    // A push id whose 1 % canary holds at least one thing of the 200.
    let mut errors = Vec::new();
    let rollout = Rollout::validate(&request["rollout"], &mut errors).unwrap_or_else(|| panic!("{errors:?}"));
    let (push_id, cohort) = loop {
        let push_id = unique("rehearsal");
        let cohort: Vec<usize> = (0..THINGS).map(|i| rollout.phase_of(&push_id, &fx.thing(i))).collect();
        if cohort.contains(&0) {
            break (push_id, cohort);
        }
    };
    request["pushId"] = json!(push_id);

    let (endpoint, ca) = Endpoint::of(&fx.stack).unwrap_or_else(|e| panic!("{e}"));
    let devices: Vec<(String, Kind)> = (0..THINGS).map(|i| (fx.thing(i), kind_in(cohort[i], i))).collect();
    let fleet = Fleet::start(&ca, &endpoint, &devices, Some(SHADOW), Duration::ZERO, Duration::from_secs(1))
        .expect("the devices' certificates");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(fleet.running(), THINGS, "every device connected");

    let service = LambdaService::new(&function, fx.stack.sqs(), &fx.queue_url, TIMING);
    let state = || async {
        fx.record(&push_id).await.map(|r| r["state"].as_str().unwrap_or_default().to_owned()).unwrap_or_default()
    };
    let done = || async { ["complete", "aborted", "rolledBack"].contains(&state().await.as_str()) };
    let reached = service.run_until(&request, &json!({"sweepPushes": true}), Duration::from_secs(150), done).await;
    let record = fx.record(&push_id).await.unwrap_or(Value::Null);
    assert!(reached, "the rollout did not end: {record}");
    assert_eq!(record["state"], "rolledBack", "{record}");

    let count = |phase: usize, kinds: &[Kind]| {
        (0..THINGS).filter(|i| cohort[*i] == phase && kinds.contains(&kind_in(phase, *i))).count() as u64
    };
    let converging = [Kind::Healthy, Kind::Clearing, Kind::Late];
    for phase in 0..3 {
        let counts = &record["phases"][phase];
        let members = cohort.iter().filter(|p| **p == phase).count() as u64;
        assert_eq!(counts["updated"], members, "phase {}: {record}", phase + 1);
        assert_eq!(counts["converged"], count(phase, &converging), "phase {}: {record}", phase + 1);
    }
    let last = &record["phases"][2];
    let not_converged = ["pending", "refused", "failed"].iter().map(|k| last[*k].as_u64().unwrap_or(0)).sum::<u64>();
    assert_eq!(not_converged, count(2, &[Kind::Silent, Kind::Refusing, Kind::Partial]), "{record}");
    assert!(last["refused"].as_u64().unwrap_or(0) >= count(2, &[Kind::Refusing]), "{record}");

    // Rolled back: no shadow keeps the rollout's firmware in `desired`.
    drop(fleet);
    for (i, phase) in cohort.iter().enumerate() {
        let document = fx.shadow(&fx.thing(i), Some(SHADOW)).await.unwrap_or(Value::Null);
        let firmware = &document["state"]["desired"]["firmware_url"];
        assert_ne!(firmware, "https://s3.com/firmware-2.bin", "{} ({:?}): {document}", fx.thing(i), kind_in(*phase, i));
    }
}

/// `fleet-local devices --group NAME --shadow S --kind K`, as a person runs it: its devices answer a push made over
/// HTTP, each as its kind does, until it is interrupted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_local_devices_answers_as_its_kind_does() {
    let fx = PushFixture::new().await;
    fx.create_things(0..4, "osaka").await;
    fx.create_group("line", None, 0..3).await;
    let binary = devstack::lambda::binary_path("fleet-local");
    assert!(binary.exists(), "{} is not built: cargo build -p devstack --bins", binary.display());
    let group = fx.group("line");
    let args = ["devices", "--group", group.as_str(), "--shadow", SHADOW, "--kind", "clearing"];
    let mut devices = tokio::process::Command::new(&binary)
        .args(args)
        .envs(&fx.stack.env)
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("starting fleet-local devices");
    let refused = std::process::Command::new(&binary)
        .args(["devices", "--group", group.as_str(), "--kind", "eager"])
        .envs(&fx.stack.env)
        .output()
        .expect("running fleet-local devices");
    assert!(!refused.status.success() && String::from_utf8_lossy(&refused.stderr).contains("is not a kind"));

    tokio::time::sleep(Duration::from_secs(2)).await;
    for i in 0..4 {
        fx.set_desired(&fx.thing(i), Some(SHADOW), json!({"interval": 30})).await;
    }
    let until = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let mut done = 0;
        for i in 0..3 {
            let document = fx.shadow(&fx.thing(i), Some(SHADOW)).await.unwrap_or(Value::Null);
            let reported = document["state"]["reported"]["interval"] == 30;
            if reported && document["state"]["desired"].get("interval").is_none() {
                done += 1;
            }
        }
        if done == 3 {
            break;
        }
        assert!(std::time::Instant::now() < until, "the group's clearing devices did not answer");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The thing outside the group has no device.
    let outside = fx.shadow(&fx.thing(3), Some(SHADOW)).await.unwrap_or(Value::Null);
    assert_eq!(outside["state"].get("reported"), None, "{outside}");
    let _ = devices.kill().await;
}
