//! Deploying while pushes run: a rollout recorded in the layout of the release before this one, paused there, and
//! finished by the current shadow-push binary. That layout is one record item holding the push's definition (no
//! `plan` item), no `journalShards` (the journal in the push's own partition) and no `keptUntil`; the current code
//! resumes it, walks both phases, writes and judges its journal where that layout keeps it, and completes it, every
//! thing updated once. CHANGELOG.md and docs/deploying.md ("Upgrading") say what the layouts guarantee.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use devstack::push::{Device, PushFixture};
use devstack::service::{LambdaService, Timing};
use devstack::unique;
use serde_json::{Value, json};
use shadow_aws::push_store::{plan_key, record_key};
use shadow_aws::tables;
use shadow_core::names::ThingGroupName;
use shadow_core::push::lifecycle;
use shadow_core::push::{PushState, Source, validate_request};

const TIMING: Timing = Timing {
    timeout: Duration::from_secs(5),
    retries: [Duration::from_secs(2), Duration::from_secs(4)],
    visibility: Duration::from_secs(15),
    schedule_every: Duration::from_secs(1),
    poll_every: Duration::from_millis(100),
};

const THINGS: usize = 20;

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Every item of the push table, by partition key.
async fn partitions(fx: &PushFixture) -> HashMap<String, Vec<String>> {
    let mut found: HashMap<String, Vec<String>> = HashMap::new();
    let mut pages = fx.stack.dynamodb().scan().table_name(&fx.table).into_paginator().items().send();
    while let Some(item) = pages.next().await {
        let item = item.expect("scan");
        let key = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned().unwrap_or_default();
        found.entry(key(tables::PARTITION_KEY)).or_default().push(key(tables::SORT_KEY));
    }
    found
}

/// Writes a rollout of the fleet's group in the previous release's layout, paused before its first segment walked
/// anything: one record item holding its definition, no `journalShards`, no `keptUntil`.
async fn recorded_by_the_previous_release(fx: &PushFixture, push_id: &str) {
    let request = json!({"pushId": push_id, "desired": {"settings": {"mode": 9}},
        "targets": {"thingGroup": fx.group("prod")},
        "rollout": {"phases": [{"percent": 50}, {"percent": 100}], "bakeSeconds": 3, "convergedPercent": 90,
                    "failedPercent": 10, "minThings": 1, "onAbort": "rollback"}});
    let plan = validate_request(&request, 2000, None).unwrap_or_else(|e| panic!("{e}"));
    let group = ThingGroupName::parse(fx.group("prod")).unwrap_or_else(|e| panic!("{e}"));
    let plan_json = serde_json::to_value(&plan).expect("the plan as JSON");
    let definition = lifecycle::definition(&plan, plan_json, lifecycle::plan_digest(&plan), vec![Source::Group(group)]);
    let started = now_ms() - 60_000;
    let mut record = lifecycle::new_record(&plan, String::new(), started, started);
    record.status.state = PushState::Paused;
    assert_eq!(record.journal_shards, 0, "the previous layout has no journalShards");
    let mut one_item = serde_json::to_value(&record).expect("the record as JSON");
    if let (Some(fields), Value::Object(plan_fields)) =
        (one_item.as_object_mut(), serde_json::to_value(&definition).expect("JSON"))
    {
        fields.extend(plan_fields);
        fields.insert(tables::RECENT_PUSHES_KEY.into(), json!(tables::RECENT_PUSHES_PARTITION));
    }
    for absent in ["journalShards", "keptUntil", "keepingTo", "expiresAt", "openPush"] {
        assert!(one_item.get(absent).is_none(), "{absent} in the previous layout: {one_item}");
    }
    let mut item: HashMap<String, AttributeValue> = serde_dynamo::to_item(&one_item).expect("an item");
    item.extend(record_key(push_id));
    fx.stack.dynamodb().put_item().table_name(&fx.table).set_item(Some(item)).send().await.expect("put_item");
}

/// Resumes the push with the current binary, under Lambda's service, with `device` for every thing, until it ends.
async fn resumed_to_its_end(fx: &PushFixture, push_id: &str, device: Device) -> Value {
    let env = [("PUSH_LEASE_MS", "3000"), ("PUSH_HANDOFF_GRACE_MS", "1500"), ("PUSH_CONCURRENCY", "8")];
    let function = fx.function(&env).await;
    let service = LambdaService::new(&function, fx.stack.sqs(), &fx.queue_url, TIMING);
    let state = || async {
        fx.record(push_id).await.map(|r| r["state"].as_str().unwrap_or_default().to_owned()).unwrap_or_default()
    };
    let done = || async { matches!(state().await.as_str(), "complete" | "aborted" | "rolledBack") };
    let devices = (0..THINGS).map(|i| (fx.thing(i), device)).collect();
    let (resume, sweep) = (json!({"resumePush": push_id}), json!({"sweepPushes": true}));
    let finished = tokio::select! {
        finished = service.run_until(&resume, &sweep, Duration::from_secs(120), done) => finished,
        () = fx.fleet_of(devices) => false,
    };
    let after = fx.record(push_id).await.unwrap_or(Value::Null);
    assert!(finished, "not finished within 120 s: {after}");
    after
}

/// The layout stayed the previous one: one item, the journal in the push's own partition, no shard partitions.
async fn still_in_the_previous_layout(fx: &PushFixture, push_id: &str, record: &Value, journal: usize) {
    assert!(record.get("journalShards").is_none(), "{record}");
    let plan_item = fx.stack.dynamodb().get_item().table_name(&fx.table).set_key(Some(plan_key(push_id))).send();
    assert!(plan_item.await.expect("get_item").item.is_none(), "a plan item was written");
    let found = partitions(fx).await;
    let own = found.get(push_id).cloned().unwrap_or_default();
    let entries = own.iter().filter(|sk| sk.starts_with("previous#")).count();
    assert_eq!(entries, journal, "previous-values entries under {push_id}: {own:?}");
    assert!(found.keys().all(|pk| !pk.starts_with(&format!("{push_id}#"))), "a shard partition: {found:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_recorded_by_the_previous_release_is_finished_by_this_one() {
    let fx = PushFixture::new().await;
    fx.create_things(0..THINGS, "tokyo").await;
    fx.create_group("prod", None, 0..THINGS).await;

    // Devices that apply the setting: both phases pass their gate, and the push completes.
    let push_id = unique("upgrade");
    recorded_by_the_previous_release(&fx, &push_id).await;
    let after = resumed_to_its_end(&fx, &push_id, Device::Healthy).await;
    assert_eq!(after["state"], "complete", "{after}");
    assert_eq!((after["targets"].clone(), after["updated"].clone()), (json!(THINGS), json!(THINGS)), "{after}");
    let phases = after["phases"].as_array().cloned().unwrap_or_default();
    assert_eq!(phases.len(), 2, "{after}");
    for phase in &phases {
        assert_eq!((phase["judged"].clone(), phase["converged"].clone()), (json!(true), phase["updated"].clone()));
    }
    for i in 0..THINGS {
        let doc = fx.shadow(&fx.thing(i), None).await.unwrap_or(Value::Null);
        assert_eq!(doc["state"]["desired"]["settings"]["mode"], 9, "{}: {doc}", fx.thing(i));
        assert_eq!(doc["version"].as_u64().map(|v| v >= 1), Some(true));
    }
    still_in_the_previous_layout(&fx, &push_id, &after, THINGS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_recorded_by_the_previous_release_is_rolled_back_by_this_one() {
    let fx = PushFixture::new().await;
    fx.create_things(0..THINGS, "tokyo").await;
    fx.create_group("prod", None, 0..THINGS).await;

    // Devices that never report: the first phase fails its gate, and its things are put back from the journal the
    // previous layout keeps in the push's own partition.
    let push_id = unique("upgrade-back");
    recorded_by_the_previous_release(&fx, &push_id).await;
    let after = resumed_to_its_end(&fx, &push_id, Device::Silent).await;
    assert_eq!(after["state"], "rolledBack", "{after}");
    let updated = after["updated"].as_u64().unwrap_or_default();
    assert!(updated > 0 && updated < THINGS as u64, "only the first phase was pushed: {after}");
    assert_eq!(after["rollback"]["restored"], json!(updated), "{after}");
    for i in 0..THINGS {
        let doc = fx.shadow(&fx.thing(i), None).await.unwrap_or(Value::Null);
        assert!(doc["state"]["desired"]["settings"].get("mode").is_none(), "{} not put back: {doc}", fx.thing(i));
    }
    still_in_the_previous_layout(&fx, &push_id, &after, updated as usize).await;
}
