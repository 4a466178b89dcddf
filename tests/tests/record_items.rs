//! A push's two items in the push table: its plan (written once, with its record, in one TransactWriteItems) and
//! its record (small: every claim, renewal and segment writes it). Against DynamoDB Local, through the push store
//! and the real shadow-push binary.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use devstack::crash::{CrashPoint, CrashProxy, Step};
use devstack::push::{PushFixture, push};
use devstack::service::{LambdaService, Timing};
use devstack::{Stack, unique};
use serde_json::{Value, json};
use shadow_aws::push_store::{DynamoPushStore, plan_key, record_key};
use shadow_aws::{DynamoPushReader, tables};
use shadow_core::names::ThingGroupName;
use shadow_core::push::lifecycle::{self, LeaseTiming};
use shadow_core::push::{
    Counts, Cursor, MAX_LISTED_THINGS_BYTES, PhaseCounts, PushDefinition, PushPlan, PushRecord, PushRecords, PushState,
    RollbackCounts, SegmentOutcome, Source, StoredPush, validate_request,
};

/// The most a record item may take: one write unit.
const ONE_KB: usize = 1024;
const TIMING: LeaseTiming = LeaseTiming { lease_ms: 30_000, hand_off_grace_ms: 60_000 };

async fn store(stack: &Stack) -> (DynamoPushStore, String) {
    let table = unique("record-items");
    tables::ensure_table(&stack.dynamodb(), &table, &tables::PUSH).await.unwrap_or_else(|e| panic!("{e}"));
    (DynamoPushStore::new(stack.dynamodb(), table.clone(), Some(7)), table)
}

/// An item as stored, `None` when absent.
async fn item(
    stack: &Stack,
    table: &str,
    key: HashMap<String, AttributeValue>,
) -> Option<HashMap<String, AttributeValue>> {
    let got = stack.dynamodb().get_item().table_name(table).set_key(Some(key)).consistent_read(true).send().await;
    got.unwrap_or_else(|e| panic!("get_item: {e:?}")).item
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn plan(request: Value) -> PushPlan {
    validate_request(&request, 4000, None).unwrap_or_else(|e| panic!("{e}"))
}

/// A new push's definition and record (segment 1 claimed by `owner-1`), as shadow-push makes them.
fn new_push(plan: &PushPlan, sources: Vec<Source>, now: u64) -> (PushDefinition, PushRecord) {
    let request = serde_json::to_value(plan).expect("the plan as JSON");
    let definition = lifecycle::definition(plan, request, lifecycle::plan_digest(plan), sources);
    (definition, lifecycle::new_record(plan, "owner-1".into(), now, now + TIMING.lease_ms))
}

fn things(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("sensor-{i:08}")).collect()
}

/// A push to as many listed things as its plan item holds: the plan item takes them (near 300 KB), the record item
/// stays under 1 KB through its claim, renewals and a segment, and none of those writes changes the plan item.
#[tokio::test]
async fn the_record_stays_under_1_kb_beside_a_large_target_list() {
    let stack = Stack::get();
    let (store, table) = store(&stack).await;
    let push_id = unique("large-list");
    let listed = things(MAX_LISTED_THINGS_BYTES / 16);
    let plan = plan(json!({"pushId": push_id, "desired": {"mode": 1}, "targets": {"things": listed}}));
    let now = now_ms();
    let (definition, record) = new_push(&plan, vec![Source::Things], now);
    assert!(store.create(&definition, &record).await.unwrap_or_else(|e| panic!("{e}")), "not created");
    let plan_item = item(&stack, &table, plan_key(&push_id)).await.expect("no plan item");
    let plan_bytes = tables::item_size(&plan_item);
    assert!(plan_bytes > 250_000 && plan_bytes <= tables::MAX_ITEM_BYTES, "plan item {plan_bytes} bytes");
    let record_bytes =
        || async { tables::item_size(&item(&stack, &table, record_key(&push_id)).await.expect("no record")) };
    let created = record_bytes().await;
    assert!(created < ONE_KB, "the record item is {created} bytes at creation");

    for _ in 0..3 {
        let renewed = store.renew(&push_id, 1, "owner-1", now_ms() + TIMING.lease_ms).await;
        assert_eq!(renewed.unwrap_or_else(|e| panic!("{e}")), Some(None), "the holder lost its claim");
    }
    let walked = listed.len() as u64 / 2;
    let cursor = Cursor { source: 0, offset: walked as usize, walked, ..Cursor::default() };
    let outcome = SegmentOutcome {
        targets: walked,
        updated: walked - 7,
        failed: 7,
        requests: walked,
        throttled: 12,
        cursor: Some(cursor),
        ..SegmentOutcome::default()
    };
    let next = lifecycle::after_push(&record, &plan, 1, &outcome, false, now_ms(), TIMING);
    let written = store.finish_segment(&next, "owner-1").await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(written.as_ref().map(|r| r.status.counts.updated), Some(walked - 7), "{written:?}");
    let after = record_bytes().await;
    assert!(after < ONE_KB, "the record item is {after} bytes after a segment");
    assert_eq!(item(&stack, &table, plan_key(&push_id)).await, Some(plan_item), "the plan item changed");

    let loaded = store.load(&push_id).await.unwrap_or_else(|e| panic!("{e}")).expect("no push");
    assert_eq!(loaded.definition, definition);
    assert_eq!(Some(loaded.record.clone()), written);
    assert_eq!(store.load_record(&push_id).await.unwrap_or_else(|e| panic!("{e}")), Some(loaded.record));
    eprintln!("plan item {plan_bytes} bytes; record item {created} bytes created, {after} after a segment");
}

/// A rollout of three phases at a million things, rolling back after its judgment failed, with its counts, its
/// abort reason and a journal cursor: the record item still takes under 1 KB.
#[tokio::test]
async fn the_record_of_a_rollout_rolling_back_stays_under_1_kb() {
    let stack = Stack::get();
    let (store, table) = store(&stack).await;
    let push_id = unique("rollout-size");
    let plan = plan(json!({"pushId": push_id, "desired": {"mode": 1}, "targets": {"thingGroup": "fleet-eu-west-1"},
                           "rollout": {"phases": [{"percent": 1}, {"percent": 10}, {"percent": 100}],
                                       "bakeSeconds": 3600, "onAbort": "rollback"}}));
    let now = now_ms();
    let (definition, mut record) =
        new_push(&plan, vec![Source::Group(ThingGroupName::parse("fleet-eu-west-1").expect("a name"))], now);
    record.journal_shards = 8;
    assert!(store.create(&definition, &record).await.unwrap_or_else(|e| panic!("{e}")));
    let phase = |percent: f64, targets: u64, judged: bool| PhaseCounts {
        percent,
        targets,
        updated: targets - targets / 50,
        unchanged: targets / 100,
        failed: targets / 100,
        converged: if judged { targets - targets / 10 } else { 0 },
        pending: if judged { targets / 20 } else { 0 },
        refused: if judged { targets / 40 } else { 0 },
        judged,
    };
    let mut next = record.clone();
    next.status.counts = Counts {
        targets: 1_000_000,
        updated: 981_234,
        unchanged: 10_012,
        failed: 8_754,
        requests: 2_145_678,
        throttled: 23_456,
        store_throttled: 1_234,
    };
    next.status.phases = vec![phase(1.0, 10_000, true), phase(10.0, 90_000, true), phase(100.0, 900_000, true)];
    next.status.phase = 3;
    next.status.state = PushState::RollingBack;
    next.status.abort_reason = Some(
        "phase 3: 61234 of 1000000 things judged so far failed, refused or did not converge (6.1 %), more than \
         failedPercent 5"
            .into(),
    );
    next.status.rollback = Some(RollbackCounts { restored: 512_345, untouched: 1_234, conflicts: 56, failed: 78 });
    // A rollback walks the journal: its cursor is the last entry's key (phase and thing name).
    next.status.cursor = Some(Cursor {
        source: 0,
        token: Some("002#sensor-eu-west-1-0000512345".into()),
        offset: 0,
        walked: 512_413,
        redo: Vec::new(),
        ..Cursor::default()
    });
    next.holder.handed_off = 1;
    next.holder.lease_until = now_ms() + TIMING.hand_off_grace_ms;
    let written = store.finish_segment(&next, "owner-1").await.unwrap_or_else(|e| panic!("{e}"));
    assert!(written.is_some(), "the segment was not recorded");
    let bytes = tables::item_size(&item(&stack, &table, record_key(&push_id)).await.expect("no record"));
    assert!(bytes < ONE_KB, "the record item of a rollout rolling back is {bytes} bytes");
    eprintln!("record item of a 3-phase rollout rolling back: {bytes} bytes");
}

/// The plan and the record are written together or not at all: the same push id again (the same request or
/// another) writes nothing and keeps the first plan; a plan over DynamoDB's item limit is refused with its size,
/// and leaves no item behind.
#[tokio::test]
async fn a_push_is_created_once_and_whole() {
    let stack = Stack::get();
    let (store, table) = store(&stack).await;
    let push_id = unique("created-once");
    let now = now_ms();
    let first = plan(json!({"pushId": push_id, "desired": {"mode": 1}, "targets": {"things": ["a", "b"]}}));
    let (definition, record) = new_push(&first, vec![Source::Things], now);
    let create = |d: &PushDefinition, r: &PushRecord| {
        let (d, r, store) = (d.clone(), r.clone(), store.clone());
        async move { store.create(&d, &r).await.unwrap_or_else(|e| panic!("{e}")) }
    };
    assert!(create(&definition, &record).await);
    assert!(!create(&definition, &record).await, "the same push created twice");
    let other = plan(json!({"pushId": push_id, "desired": {"mode": 2}, "targets": {"things": ["c"]}}));
    let (other_definition, other_record) = new_push(&other, vec![Source::Things], now + 5);
    assert!(!create(&other_definition, &other_record).await, "another request took the push id");
    let loaded = store.load(&push_id).await.unwrap_or_else(|e| panic!("{e}")).expect("no push");
    assert_eq!(loaded, StoredPush { definition: definition.clone(), record });

    // Sources that no item can hold (thousands of child groups of long names).
    let huge = unique("huge-plan");
    let big =
        plan(json!({"pushId": huge, "desired": {"mode": 1}, "targets": {"thingGroup": "root", "recursive": true}}));
    let groups: Vec<Source> = (0..3_300)
        .map(|i| Source::Group(ThingGroupName::parse(format!("{i:05}-{}", "g".repeat(120))).expect("a group name")))
        .collect();
    let (definition, record) = new_push(&big, groups, now);
    let refused = store.create(&definition, &record).await.err().map(|e| (e.code.clone(), e.to_string()));
    let (code, message) = refused.expect("a plan over 400 KB was accepted");
    assert_eq!(code.as_deref(), Some("ItemTooLarge"));
    assert!(message.contains("over DynamoDB's item limit of 409600 bytes") && message.contains("3300"), "{message}");
    assert_eq!(item(&stack, &table, plan_key(&huge)).await, None);
    assert_eq!(item(&stack, &table, record_key(&huge)).await, None);
}

/// A record written before the plan had an item of its own (one item holding both) still loads, for the function
/// and for the CLI's reader.
#[tokio::test]
async fn a_record_of_one_item_still_loads() {
    let stack = Stack::get();
    let (store, table) = store(&stack).await;
    let push_id = unique("one-item");
    let first =
        plan(json!({"pushId": push_id, "shadowName": "cfg", "desired": {"mode": 1}, "targets": {"things": ["a"]}}));
    let (definition, record) = new_push(&first, vec![Source::Things], now_ms());
    let mut both = serde_json::to_value(&record).expect("the record as JSON");
    if let (Some(fields), Value::Object(plan)) =
        (both.as_object_mut(), serde_json::to_value(&definition).expect("JSON"))
    {
        fields.extend(plan);
    }
    let mut old: HashMap<String, AttributeValue> = serde_dynamo::to_item(&both).expect("an item");
    old.extend(record_key(&push_id));
    stack.dynamodb().put_item().table_name(&table).set_item(Some(old)).send().await.expect("put_item");

    let loaded = store.load(&push_id).await.unwrap_or_else(|e| panic!("{e}")).expect("no push");
    assert_eq!(loaded, StoredPush { definition, record: record.clone() });
    assert_eq!(store.load_record(&push_id).await.unwrap_or_else(|e| panic!("{e}")), Some(record));
    let shown = DynamoPushReader::new(stack.dynamodb(), table).record(&push_id).await.unwrap_or_else(|e| panic!("{e}"));
    let shown = shown.expect("the reader found no push");
    assert_eq!((shown["shadowName"].clone(), shown["request"]["desired"].clone()), (json!("cfg"), json!({"mode": 1})));
}

/// The CLI's reader shows a push of two items as one: the record's status with the plan's request beside it.
#[tokio::test]
async fn the_reader_shows_the_record_with_its_plan() {
    let stack = Stack::get();
    let (store, table) = store(&stack).await;
    let push_id = unique("read-both");
    let first =
        plan(json!({"pushId": push_id, "shadowName": "cfg", "desired": {"mode": 1}, "targets": {"things": ["a"]}}));
    let (definition, record) = new_push(&first, vec![Source::Things], now_ms());
    assert!(store.create(&definition, &record).await.unwrap_or_else(|e| panic!("{e}")));
    let reader = DynamoPushReader::new(stack.dynamodb(), table);
    let shown = reader.record(&push_id).await.unwrap_or_else(|e| panic!("{e}")).expect("no push");
    assert_eq!((shown["state"].clone(), shown["segment"].clone()), (json!("running"), json!(1)));
    assert_eq!(
        (shown["shadowName"].clone(), shown["request"]["targets"]["things"].clone()),
        (json!("cfg"), json!(["a"]))
    );
    let listed = reader.recent(0, 10).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!((listed[0]["pushId"].clone(), listed[0]["shadowName"].clone()), (json!(push_id), json!("cfg")));
}

/// 50 000 listed things are more than a push's plan item holds: shadow-push refuses the request, naming the field
/// and the limit, and records nothing (never a bare store error at creation).
#[tokio::test]
async fn fifty_thousand_listed_things_are_refused_naming_the_limit() {
    let fx = PushFixture::new().await;
    let function = fx.function(&[]).await;
    let push_id = unique("too-many");
    let request = json!({"pushId": push_id, "desired": {"mode": 1}, "targets": {"things": things(50_000)}});
    let refused = push(&function, &request).await.err().map(|e| (e.error_type().map(str::to_owned), e.to_string()));
    let (error_type, message) = refused.expect("50 000 listed things were accepted");
    assert!(error_type.is_some_and(|t| t.ends_with("InvalidRequest")), "{message}");
    assert!(message.contains("targets.things") && message.contains("50000 things in 800000 bytes"), "{message}");
    assert!(message.contains(&format!("at most {MAX_LISTED_THINGS_BYTES} bytes")), "{message}");
    assert_eq!(fx.record(&push_id).await, None, "a refused push left a record");
}

/// The function killed at the write that creates a push (before it reached DynamoDB, or after): Lambda's retry of
/// the event creates or finds the push whole and completes it; the same push id with another request is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_while_creating_a_push_the_retry_completes_it() {
    let outcomes = futures::future::join_all([false, true].map(|delivered| async move {
        let fx = PushFixture::new().await;
        fx.create_things(0..2, "create").await;
        let point = CrashPoint { step: Step::CreatePush, nth: 1, delivered, repeat: false };
        let proxy = CrashProxy::start(&fx.stack.var(point.step.endpoint_var()), point).await;
        let function = fx
            .function(&[
                (point.step.endpoint_var(), proxy.url.as_str()),
                ("PUSH_LEASE_MS", "2000"),
                ("PUSH_HANDOFF_GRACE_MS", "1500"),
            ])
            .await;
        proxy.watch(function.pid_handle());
        let service = LambdaService::new(&function, fx.stack.sqs(), &fx.queue_url, Timing::SCALED);
        let push_id = unique("create-crash");
        let request =
            json!({"pushId": push_id, "desired": {"mode": 3}, "targets": {"things": [fx.thing(0), fx.thing(1)]}});
        let complete = || async { fx.record(&push_id).await.is_some_and(|r| r["complete"] == json!(true)) };
        let done = service.run_until(&request, &json!({"sweepPushes": true}), Duration::from_secs(60), complete).await;
        let record = fx.record(&push_id).await.unwrap_or(Value::Null);
        let mut problems = Vec::new();
        if !proxy.fired() {
            problems.push("the crash point was never reached".to_owned());
        }
        if !done || record["updated"] != json!(2) {
            problems.push(format!("not complete with 2 updated: {record}"));
        }
        for i in 0..2 {
            let doc = fx.shadow(&fx.thing(i), None).await.unwrap_or(Value::Null);
            if doc["version"] != json!(1) {
                problems.push(format!("{} not updated once: {doc}", fx.thing(i)));
            }
        }
        let plan_item = item(&fx.stack, &fx.table, plan_key(&push_id)).await;
        if plan_item.is_none() {
            problems.push("no plan item".into());
        }
        let mut another = request.clone();
        another["desired"] = json!({"mode": 4});
        match push(&healthy(&fx).await, &another).await {
            Err(e) if e.to_string().contains("another request") => {}
            other => problems.push(format!("another request under the same push id: {other:?}")),
        }
        (delivered, problems)
    }))
    .await;
    let failed: Vec<String> = outcomes
        .iter()
        .filter(|(_, p)| !p.is_empty())
        .map(|(d, p)| format!("delivered {d}: {}", p.join("; ")))
        .collect();
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

async fn healthy(fx: &PushFixture) -> devstack::lambda::LocalLambda {
    fx.function(&[]).await
}
