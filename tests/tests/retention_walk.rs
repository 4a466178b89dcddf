//! The retention walk (a push's items rewritten to a later `expiresAt`) within the invocation's deadline: paced in
//! write units per partition, stopped before the deadline with where it got left beside the record, resumed from there
//! by the next attempt; and killed at each of its state-changing steps (the record's `keepingTo` mark, where it got
//! saved, its last item, its hand-off), finished by the next attempt to the same target. Against DynamoDB Local
//! through the push store, and through shadow-push on the local stack.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use devstack::crash::{CrashPoint, CrashProxy, Step};
use devstack::lambda::LocalLambda;
use devstack::push::{PushFixture, push};
use devstack::service::{LambdaService, Timing};
use devstack::{Stack, unique};
use serde_json::{Value, json};
use shadow_aws::push_store::DynamoPushStore;
use shadow_aws::tables;
use shadow_core::push::lifecycle;
use shadow_core::push::retention::{Kept, Through};
use shadow_core::push::{
    Journal, JournalEntry, PushRecord, PushRecords, PushState, Retention, Source, validate_request,
};

const DAY: u64 = 86_400;
const DYNAMODB: &str = "AWS_ENDPOINT_URL_DYNAMODB";
const SQS: &str = "AWS_ENDPOINT_URL_SQS";
/// The time `devstack::push::push` gives an invocation.
const PUSH_TIME: Duration = Duration::from_secs(60);

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// A value of about `bytes` bytes: a journal entry of a large `desired`.
fn blob(bytes: usize) -> Value {
    json!({"firmware": "x".repeat(bytes)})
}

/// A push of `things` started `started_s_ago` seconds ago, recorded as shadow-push leaves it between segments
/// (released, running, its journal in one shard), with `entries` previous values of about `entry_bytes` each written
/// as shadow-push writes them (expiring with the record's marks, kept `retention_s`).
async fn push_at(
    stack: &Stack,
    table: &str,
    retention_s: u64,
    started_s_ago: u64,
    things: &[String],
    entries: usize,
    entry_bytes: usize,
) -> (String, PushRecord) {
    let store = DynamoPushStore::new(stack.dynamodb(), table.to_owned(), Some(1)).with_retention_seconds(retention_s);
    let push_id = unique("walk");
    let request = json!({"pushId": push_id, "desired": {"mode": 1}, "targets": {"things": things},
                         "maxRequestsPerSecond": 2});
    let plan = validate_request(&request, 4000, None).unwrap_or_else(|e| panic!("{e}"));
    let started_ms = now_ms() - started_s_ago * 1000;
    let request = serde_json::to_value(&plan).expect("the plan as JSON");
    let definition = lifecycle::definition(&plan, request, lifecycle::plan_digest(&plan), vec![Source::Things]);
    let mut record = lifecycle::new_record(&plan, "owner-1".into(), started_ms, started_ms + 30_000);
    record.journal_shards = 1;
    record.status.state = PushState::Running;
    record.holder.handed_off = record.holder.segment;
    assert!(store.create(&definition, &record).await.unwrap_or_else(|e| panic!("{e}")), "not created");
    let expires_at = record.kept.expires_at(started_ms, retention_s);
    for i in 0..entries {
        let entry = JournalEntry { thing_name: format!("old-{i:04}"), phase: 1, values: blob(entry_bytes) };
        store.record_previous(record.journal(), expires_at, &entry).await.unwrap_or_else(|e| panic!("{e}"));
    }
    (push_id, record)
}

/// Every item of `push_id` in `table`: (partition key, sort key) → `expiresAt`.
async fn expiries(stack: &Stack, table: &str, push_id: &str) -> HashMap<(String, String), u64> {
    let mut out = HashMap::new();
    let mut start = None;
    loop {
        let page = stack
            .dynamodb()
            .scan()
            .table_name(table)
            .consistent_read(true)
            .set_exclusive_start_key(start)
            .send()
            .await
            .unwrap_or_else(|e| panic!("scan: {e:?}"));
        let text = |item: &HashMap<String, AttributeValue>, k: &str| {
            item.get(k).and_then(|v| v.as_s().ok().or_else(|| v.as_n().ok())).cloned().unwrap_or_default()
        };
        for item in page.items.unwrap_or_default() {
            let pk = text(&item, tables::PARTITION_KEY);
            if pk.starts_with(push_id) {
                let expiry = text(&item, tables::TTL_ATTRIBUTE).parse().unwrap_or(0);
                out.insert((pk, text(&item, tables::SORT_KEY)), expiry);
            }
        }
        start = page.last_evaluated_key;
        if start.is_none() {
            return out;
        }
    }
}

/// Where the push's retention walk got, as saved beside its record (its `kept` item).
async fn kept_through(stack: &Stack, table: &str, push_id: &str) -> Option<Through> {
    let got = stack
        .dynamodb()
        .get_item()
        .table_name(table)
        .set_key(Some(shadow_aws::push_store::kept_key(push_id)))
        .consistent_read(true)
        .send()
        .await
        .unwrap_or_else(|e| panic!("get_item: {e:?}"));
    Some(serde_dynamo::from_item(got.item?).unwrap_or_else(|e| panic!("the kept item: {e}")))
}

/// Through the store: a walk of entries of about 3 KB (4 write units each) at 40 units a second per partition
/// takes 4 units a write, not one: stopped after 1.5 s it has rewritten at most 15 of 40, leaves where it got on
/// the record (every entry up to there rewritten, none after), and the next call resumes there and finishes.
#[tokio::test]
async fn a_walk_is_paced_in_write_units_stops_in_time_and_resumes_where_it_got() {
    const R: u64 = 100;
    const ENTRIES: usize = 40;
    const WPS: u32 = 40;
    let stack = Stack::get();
    let table = unique("walk-units");
    tables::ensure_table(&stack.dynamodb(), &table, &tables::PUSH).await.unwrap_or_else(|e| panic!("{e}"));
    let store = DynamoPushStore::new(stack.dynamodb(), table.clone(), Some(1)).with_retention_seconds(R);
    let (push_id, _) = push_at(&stack, &table, R, 0, &["t-1".into()], ENTRIES, 3000).await;
    assert_eq!(kept_through(&stack, &table, &push_id).await, None);
    let record = store.load_record(&push_id).await.unwrap_or_else(|e| panic!("{e}")).expect("no record");
    let start = record.status.started_at / 1000;
    // Ended well past its start: its items are kept R past that end.
    let ended_at = start + 3 * R;
    let target = ended_at + R;

    let began = Instant::now();
    let kept = store
        .extend_within(&record, ended_at, false, WPS, Some(Duration::from_millis(1500)))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let first = began.elapsed();
    assert_eq!(kept.keeping_to, Some(target), "stopped under way: {kept:?}");
    assert!(kept.walking(record.status.started_at, R).is_some(), "{kept:?}");
    assert!(first < Duration::from_millis(2500), "stopped {first:?} after it began, its time was 1.5 s");
    let through =
        kept_through(&stack, &table, &push_id).await.unwrap_or_else(|| panic!("where the walk got was not saved"));
    assert_eq!(through.to, target);
    let shard = format!("{push_id}#0");
    let after = through.after(&shard).unwrap_or_else(|| panic!("no position in {shard}: {through:?}")).to_owned();
    let items = expiries(&stack, &table, &push_id).await;
    let journal: Vec<(&String, &u64)> =
        items.iter().filter(|((pk, _), _)| *pk == shard).map(|((_, sk), e)| (sk, e)).collect();
    assert_eq!(journal.len(), ENTRIES);
    let done = journal.iter().filter(|(_, e)| **e == target).count();
    // 4 units a write at 40 a second: 10 writes a second, so about 15 in 1.5 s (40 if paced by items).
    assert!((1..=17).contains(&done), "{done} of {ENTRIES} entries rewritten in {first:?}");
    for (sk, e) in &journal {
        assert_eq!(**e == target, **sk <= after, "{sk} expires at {e}; the walk got to {after}");
    }

    let record = store.load_record(&push_id).await.unwrap_or_else(|e| panic!("{e}")).expect("no record");
    assert_eq!(record.kept, Kept { kept_until: record.kept.kept_until, keeping_to: Some(target) });
    let resumed = Instant::now();
    let kept = store.extend_within(&record, ended_at, false, WPS, None).await.unwrap_or_else(|e| panic!("{e}"));
    let second = resumed.elapsed();
    assert_eq!(kept, Kept { kept_until: Some(target), keeping_to: None });
    let items = expiries(&stack, &table, &push_id).await;
    assert!(items.values().all(|e| *e >= target), "an item left expiring early: {items:?}");
    // The rest, 4 units each at 40 a second: 0.1 s between one write and the next.
    let rest = (ENTRIES - done) as u32;
    assert!(
        second >= Duration::from_millis(90) * (rest - 1),
        "{rest} entries rewritten in {second:?}: not paced in units"
    );
}

/// shadow-push killed right after it marks a paused push's record `keepingTo` (before the walk's first item): the
/// pause's retry finds the mark and finishes the walk; no item is left expiring before `keptUntil`.
#[tokio::test]
async fn killed_between_the_mark_and_the_first_item_the_next_attempt_finishes_the_walk() {
    let point = CrashPoint { step: Step::KeepMark, nth: 1, delivered: true, repeat: false };
    let env = [("PUSH_RETENTION_DAYS", "1")];
    let pause = ("pausePush", "paused");
    let Killed { fx, function, _proxy, push_id, marked, before } =
        killed_at(point, DYNAMODB, &env, (30, 500), pause, PUSH_TIME, "at the mark").await;
    let target = marked["keepingTo"].as_u64().unwrap_or_else(|| panic!("not marked: {marked}"));
    let early = expiries(&fx.stack, &fx.table, &push_id).await.into_values().filter(|e| *e < target).count();
    assert_eq!(early, 31, "the plan and 30 entries not yet rewritten when killed");

    let paused = push(&function, &json!({"pausePush": push_id})).await.unwrap_or_else(|e| panic!("retry: {e}"));
    assert_eq!(paused["state"], "paused", "{paused}");
    let record = fx.record(&push_id).await.unwrap_or(Value::Null);
    let kept_until = record["keptUntil"].as_u64().unwrap_or(0);
    assert!(kept_until >= before + DAY && record.get("keepingTo").is_none(), "walk not finished: {record}");
    let items = expiries(&fx.stack, &fx.table, &push_id).await;
    let early: Vec<_> = items.iter().filter(|(_, e)| **e < kept_until).collect();
    assert!(early.is_empty(), "{} items expire before keptUntil {kept_until}: {early:?}", early.len());
}

/// A walk longer than an invocation (300 entries of about 1.5 KB, 2 write units each, at 100 units a second: 6 s;
/// invocations of 3 s), started at a segment's end: every invocation answers before its deadline, the push is
/// handed on and completes, and later invocations finish the walk; every item ends at or past `keptUntil`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_walk_longer_than_an_invocation_stops_before_the_deadline_and_is_finished_later() {
    let fx = PushFixture::new().await;
    fx.create_things(0..6, "walk").await;
    let things: Vec<String> = (0..6).map(|i| fx.thing(i)).collect();
    let function = fx
        .function(&[
            ("PUSH_RETENTION_DAYS", "1"),
            ("PUSH_PARTITION_WPS", "100"),
            ("PUSH_LEASE_MS", "2000"),
            ("PUSH_HANDOFF_GRACE_MS", "1500"),
        ])
        .await;
    let (push_id, record) = push_at(&fx.stack, &fx.table, DAY, 20 * 3600, &things, 300, 1500).await;
    let wake = json!({"continuePush": push_id, "segment": record.holder.segment + 1});
    let before = now_ms() / 1000;
    let service = LambdaService::new(&function, fx.stack.sqs(), &fx.queue_url, Timing::SCALED);
    let done = || async {
        fx.record(&push_id).await.is_some_and(|r| {
            r["complete"] == json!(true) && r["keptUntil"].as_u64().is_some() && r.get("keepingTo").is_none()
        })
    };
    let began = Instant::now();
    let finished = service.run_until(&wake, &json!({"sweepPushes": true}), Duration::from_secs(60), done).await;
    let took = began.elapsed();
    println!("the push and its walk: {took:?}");
    let record = fx.record(&push_id).await.unwrap_or(Value::Null);
    let invocations = service.invocations();
    let trail: Vec<String> = invocations
        .iter()
        .map(|i| format!("{}: {}", i.source, i.answer.as_ref().map_or_else(|e| e.to_string(), |_| "ok".into())))
        .collect();
    assert!(finished, "not complete with its walk finished after 60 s: {record}; invocations: {trail:?}");
    let failed: Vec<&String> = trail.iter().filter(|t| !t.ends_with(": ok")).collect();
    assert!(failed.is_empty(), "invocations that did not answer in time: {failed:?} of {trail:?}");
    assert_eq!(record["updated"], json!(6), "{record}");
    let kept_until = record["keptUntil"].as_u64().unwrap_or(0);
    assert!(kept_until >= before + DAY, "kept until {kept_until}, not a day past {before}: {record}");
    let items = expiries(&fx.stack, &fx.table, &push_id).await;
    assert_eq!(items.len(), 303, "plan, record, where the walk got and 300 entries: {items:?}");
    let early: Vec<_> = items.iter().filter(|(_, e)| **e < kept_until).collect();
    assert!(early.is_empty(), "{} items expire before keptUntil {kept_until}: {early:?}", early.len());
    assert!(invocations.len() >= 3, "the walk and the push in {} invocations: {trail:?}", invocations.len());
}

/// The record as stored, but for its retention marks and its own expiry: what a retention walk must leave as it was.
fn beside_retention(record: &Value) -> Value {
    let mut rest = record.clone();
    if let Some(fields) = rest.as_object_mut() {
        for mark in ["keptUntil", "keepingTo", tables::TTL_ATTRIBUTE] {
            fields.remove(mark);
        }
    }
    rest
}

/// After a walk finished on the next attempt: `keptUntil` is the target the killed walk marked (finished, not
/// restarted to another), nothing is under way, every item expires at it or later and none earlier than when the
/// process was killed, and the record's other fields are as the kill left them.
fn assert_finished(
    target: u64,
    killed: (&Value, &HashMap<(String, String), u64>),
    now: (&Value, &HashMap<(String, String), u64>),
) {
    let ((killed_record, killed_items), (record, items)) = (killed, now);
    assert_eq!(record["keptUntil"].as_u64(), Some(target), "walk not finished to {target}: {record}");
    assert!(record.get("keepingTo").is_none(), "a walk still under way: {record}");
    assert_eq!(beside_retention(record), beside_retention(killed_record), "the record's other fields changed");
    let early: Vec<_> = items.iter().filter(|(_, e)| **e < target).collect();
    assert!(early.is_empty(), "{} items expire before keptUntil {target}: {early:?}", early.len());
    for (key, was) in killed_items {
        let is = items.get(key).unwrap_or_else(|| panic!("{key:?} is gone"));
        assert!(is >= was, "{key:?} expired at {was} when killed, now at {is}: backwards");
    }
}

/// Delivers what is handed on to the queue, one message after another to `function` (each invocation given
/// `invocation`), until nothing more is handed on: how many were delivered. Each must answer in time, with no failure.
async fn deliver_hand_offs(fx: &PushFixture, function: &LocalLambda, invocation: Duration) -> usize {
    let began = Instant::now();
    let mut deliveries = 0;
    loop {
        let handed = fx.take_continuations().await;
        if handed.is_empty() {
            return deliveries;
        }
        assert!(began.elapsed() < Duration::from_secs(60), "still handing on after 60 s ({deliveries} deliveries)");
        for record in handed {
            deliveries += 1;
            let answer = function.invoke(&json!({"Records": [record]}), invocation).await;
            let answer = answer.unwrap_or_else(|e| panic!("delivery {deliveries} did not answer in time: {e}"));
            assert_eq!(answer["batchItemFailures"], json!([]), "{answer}");
        }
    }
}

/// A control killed at one of the retention walk's steps, and what the kill left.
struct Killed {
    fx: PushFixture,
    /// The function that was killed (the stand-in starts it again for the next invocation).
    function: LocalLambda,
    /// Bound for the whole test: the function's requests go through it.
    _proxy: CrashProxy,
    push_id: String,
    /// The record as the kill left it.
    marked: Value,
    /// Epoch seconds just before the control was asked.
    before: u64,
}

/// A push started 20 hours ago (its items expire in 4 hours, short of a day past now) with `entries` journal entries
/// of `bytes`, and `control` (`pausePush` or `abortPush`) asked of shadow-push with `env`, its requests to `endpoint`
/// (an `AWS_ENDPOINT_URL_*` variable) going through a crash proxy that kills it at `point`, within `invocation`. The
/// control is killed, not answered, and leaves the record in `state`; `at` names the step in a failure.
async fn killed_at(
    point: CrashPoint,
    endpoint: &str,
    env: &[(&str, &str)],
    (entries, bytes): (usize, usize),
    (control, state): (&str, &str),
    invocation: Duration,
    at: &str,
) -> Killed {
    let fx = PushFixture::new().await;
    let proxy = CrashProxy::start(&fx.stack.var(endpoint), point).await;
    let function = fx.function(&[env, &[(endpoint, proxy.url.as_str())]].concat()).await;
    proxy.watch(function.pid_handle());
    let (push_id, _) = push_at(&fx.stack, &fx.table, DAY, 20 * 3600, &["t-1".into()], entries, bytes).await;
    let before = now_ms() / 1000;
    let killed = function.invoke(&json!({control: push_id}), invocation).await;
    assert!(proxy.fired(), "never killed {at}: {killed:?}");
    assert!(killed.is_err(), "answered although killed: {killed:?}");
    let marked = fx.record(&push_id).await.unwrap_or(Value::Null);
    assert_eq!(marked["state"], state, "{marked}");
    Killed { fx, function, _proxy: proxy, push_id, marked, before }
}

/// shadow-push killed right after a walk stopped by its 3-second invocation saves where it got, before it hands the
/// rest on. Nothing is on the queue and the sweeper does not look at a paused push: the next attempt is the pause's
/// retry, which finds `keepingTo` past `keptUntil` and the saved position, resumes there, and hands on what it cannot
/// finish; those messages finish the walk to the same target.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_right_after_a_stopped_walk_saves_where_it_got_the_retry_finishes_it() {
    const ENTRIES: usize = 300;
    let invocation = Duration::from_secs(3);
    let point = CrashPoint { step: Step::KeepThrough, nth: 1, delivered: true, repeat: false };
    let env = [("PUSH_RETENTION_DAYS", "1"), ("PUSH_PARTITION_WPS", "100")];
    let at = "as the stopped walk saved where it got";
    let pause = ("pausePush", "paused");
    let Killed { fx, function, _proxy, push_id, marked, .. } =
        killed_at(point, DYNAMODB, &env, (ENTRIES, 1500), pause, invocation, at).await;
    let target = marked["keepingTo"].as_u64().unwrap_or_else(|| panic!("not marked: {marked}"));
    let through = kept_through(&fx.stack, &fx.table, &push_id).await.unwrap_or_else(|| panic!("nothing saved"));
    assert_eq!(through.to, target, "{through:?}");
    let shard = format!("{push_id}#0");
    let after = through.after(&shard).unwrap_or_else(|| panic!("no position in {shard}: {through:?}")).to_owned();
    let at_kill = expiries(&fx.stack, &fx.table, &push_id).await;
    for ((pk, sk), e) in at_kill.iter().filter(|((pk, _), _)| *pk == shard) {
        assert_eq!(*e == target, *sk <= after, "{pk}/{sk} expires at {e} when killed; the walk saved {after}");
    }
    assert_eq!(fx.take_continuations().await, Vec::<Value>::new(), "handed on although killed before it");
    let swept = push(&function, &json!({"sweepPushes": true})).await.unwrap_or_else(|e| panic!("the sweeper: {e}"));
    assert!(!swept.to_string().contains(&push_id), "the sweeper woke a paused push: {swept}");
    assert_eq!(fx.take_continuations().await, Vec::<Value>::new(), "the sweeper handed on a paused push");

    let paused = function.invoke(&json!({"pausePush": push_id}), invocation).await;
    let paused = paused.unwrap_or_else(|e| panic!("the pause's retry did not answer in time: {e}"));
    assert_eq!(paused["state"], "paused", "{paused}");
    let deliveries = deliver_hand_offs(&fx, &function, invocation).await;
    println!("killed after saving {after}; the retry and {deliveries} deliveries finished the walk");
    let record = fx.record(&push_id).await.unwrap_or(Value::Null);
    let items = expiries(&fx.stack, &fx.table, &push_id).await;
    assert_eq!(items.len(), ENTRIES + 3, "plan, record, where the walk got and the entries: {items:?}");
    assert_finished(target, (&marked, &at_kill), (&record, &items));
}

/// shadow-push killed right after a long walk saves where it got on the push's `kept` item (10 s in, before the next
/// item). The next attempt finds `keepingTo` past `keptUntil` and the saved position, every journal entry up to it
/// rewritten and none after it; it finishes the rest to the same target.
#[tokio::test]
async fn killed_right_after_the_walk_saves_where_it_got_the_next_attempt_resumes_there() {
    const ENTRIES: usize = 60;
    let point = CrashPoint { step: Step::KeepThrough, nth: 1, delivered: true, repeat: false };
    // 60 entries of 1 write unit at 5 a second: 12 s, so the walk saves where it got once (at 10 s) before its end.
    let env = [("PUSH_RETENTION_DAYS", "1"), ("PUSH_PARTITION_WPS", "5")];
    let pause = ("pausePush", "paused");
    let Killed { fx, function, _proxy, push_id, marked, .. } =
        killed_at(point, DYNAMODB, &env, (ENTRIES, 500), pause, PUSH_TIME, "as it saved where it got").await;
    let target = marked["keepingTo"].as_u64().unwrap_or_else(|| panic!("not marked: {marked}"));
    assert!(marked["keptUntil"].as_u64().is_none_or(|k| k < target), "{marked}");
    let through = kept_through(&fx.stack, &fx.table, &push_id).await.unwrap_or_else(|| panic!("nothing saved"));
    assert_eq!(through.to, target, "{through:?}");
    let shard = format!("{push_id}#0");
    let after = through.after(&shard).unwrap_or_else(|| panic!("no position in {shard}: {through:?}")).to_owned();
    let at_kill = expiries(&fx.stack, &fx.table, &push_id).await;
    let journal: Vec<(&String, &u64)> =
        at_kill.iter().filter(|((pk, _), _)| *pk == shard).map(|((_, sk), e)| (sk, e)).collect();
    assert_eq!(journal.len(), ENTRIES);
    for (sk, e) in &journal {
        assert_eq!(**e == target, **sk <= after, "{sk} expires at {e} when killed; the walk saved {after}");
    }
    let done = journal.iter().filter(|(_, e)| **e == target).count();
    assert!((1..ENTRIES).contains(&done), "{done} of {ENTRIES} rewritten when killed 10 s in");
    println!("killed after saving {after}: {done} of {ENTRIES} entries rewritten");

    let paused = push(&function, &json!({"pausePush": push_id})).await.unwrap_or_else(|e| panic!("retry: {e}"));
    assert_eq!(paused["state"], "paused", "{paused}");
    let record = fx.record(&push_id).await.unwrap_or(Value::Null);
    let items = expiries(&fx.stack, &fx.table, &push_id).await;
    assert_finished(target, (&marked, &at_kill), (&record, &items));
}

/// shadow-push killed right after the walk's last item, before the record's mark that the walk is done (before that
/// write is sent, and after it lands with its answer lost). The next attempt finds every item at the target and, in
/// the first case, `keepingTo` still past `keptUntil`: it finishes with the mark alone; in the second, nothing to do.
#[tokio::test]
async fn killed_between_the_last_item_and_the_done_mark_the_next_attempt_marks_it() {
    const ENTRIES: usize = 30;
    for delivered in [false, true] {
        let point = CrashPoint { step: Step::KeptMark, nth: 1, delivered, repeat: false };
        let env = [("PUSH_RETENTION_DAYS", "1")];
        let at = format!("at the done mark (delivered {delivered})");
        let pause = ("pausePush", "paused");
        let Killed { fx, function, _proxy, push_id, marked, before } =
            killed_at(point, DYNAMODB, &env, (ENTRIES, 500), pause, PUSH_TIME, &at).await;
        let target = if delivered {
            assert!(marked.get("keepingTo").is_none(), "the done mark landed: {marked}");
            marked["keptUntil"].as_u64().unwrap_or_else(|| panic!("the done mark landed: {marked}"))
        } else {
            assert!(marked["keptUntil"].as_u64().is_none_or(|k| k < before + DAY), "not yet marked: {marked}");
            marked["keepingTo"].as_u64().unwrap_or_else(|| panic!("not marked: {marked}"))
        };
        assert!(target >= before + DAY, "target {target} not a day past {before}");
        let at_kill = expiries(&fx.stack, &fx.table, &push_id).await;
        assert_eq!(at_kill.len(), ENTRIES + 2, "record, plan and entries: {at_kill:?}");
        let early: Vec<_> = at_kill.iter().filter(|((_, sk), e)| sk != "record" && **e != target).collect();
        assert!(
            early.is_empty(),
            "the walk's items not all at {target} when killed (delivered {delivered}): {early:?}"
        );

        let paused = push(&function, &json!({"pausePush": push_id})).await.unwrap_or_else(|e| panic!("retry: {e}"));
        assert_eq!(paused["state"], "paused", "{paused}");
        let record = fx.record(&push_id).await.unwrap_or(Value::Null);
        let items = expiries(&fx.stack, &fx.table, &push_id).await;
        assert_finished(target, (&marked, &at_kill), (&record, &items));
    }
}

/// A paused push's walk longer than its invocation (300 entries of 2 write units at 100 a second: 6 s; 3-second
/// invocations) stops, saves where it got and hands the rest on to a message of its own; shadow-push is killed right
/// after that message is sent, before it answers. The next attempt is that message, delivered twice at once (two
/// execution environments), and what they hand on in turn finishes the walk to the same target; then the hand-offs
/// end, and the message delivered once more, late, changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_right_after_the_walk_is_handed_on_the_message_delivered_twice_finishes_it() {
    const ENTRIES: usize = 300;
    let invocation = Duration::from_secs(3);
    let point = CrashPoint { step: Step::HandOff, nth: 1, delivered: true, repeat: false };
    let env = [("PUSH_RETENTION_DAYS", "1"), ("PUSH_PARTITION_WPS", "100")];
    let pause = ("pausePush", "paused");
    let Killed { fx, function: _dying, _proxy, push_id, marked, .. } =
        killed_at(point, SQS, &env, (ENTRIES, 1500), pause, invocation, "at the hand-off").await;
    let target = marked["keepingTo"].as_u64().unwrap_or_else(|| panic!("not marked: {marked}"));
    let through = kept_through(&fx.stack, &fx.table, &push_id).await.unwrap_or_else(|| panic!("nothing saved"));
    assert_eq!(through.to, target, "{through:?}");
    let at_kill = expiries(&fx.stack, &fx.table, &push_id).await;
    let done = at_kill.values().filter(|e| **e == target).count();
    assert!(done < ENTRIES, "the walk was not stopped short: {done} items at {target}");
    let handed = fx.take_continuations().await;
    assert_eq!(handed.len(), 1, "the walk's hand-off alone: {handed:?}");
    let message = json!({"Records": handed});
    assert!(message.to_string().contains(&push_id), "{message}");

    // Delivered twice at once, to two execution environments.
    let (one, two) = (fx.function(&env).await, fx.function(&env).await);
    let (first, second) = tokio::join!(one.invoke(&message, invocation), two.invoke(&message, invocation));
    for answer in [&first, &second] {
        let answer = answer.as_ref().unwrap_or_else(|e| panic!("a delivery did not answer in time: {e}"));
        assert_eq!(answer["batchItemFailures"], json!([]), "{answer}");
    }
    let deliveries = 2 + deliver_hand_offs(&fx, &one, invocation).await;
    println!("killed with {done} items rewritten; finished in {deliveries} deliveries");
    let record = fx.record(&push_id).await.unwrap_or(Value::Null);
    let items = expiries(&fx.stack, &fx.table, &push_id).await;
    assert_eq!(items.len(), ENTRIES + 3, "plan, record, where the walk got and the entries: {items:?}");
    assert_finished(target, (&marked, &at_kill), (&record, &items));

    // The message once more, late: the walk is done, so it changes nothing and hands nothing on.
    let late = one.invoke(&message, invocation).await.unwrap_or_else(|e| panic!("the late delivery: {e}"));
    assert_eq!(late["batchItemFailures"], json!([]), "{late}");
    assert_eq!(fx.record(&push_id).await.unwrap_or(Value::Null), record, "the late delivery changed the record");
    assert_eq!(expiries(&fx.stack, &fx.table, &push_id).await, items, "the late delivery rewrote items");
    assert_eq!(fx.take_continuations().await, Vec::<Value>::new(), "the late delivery handed on");
}

/// The same for a push that ended (aborted): its walk (to `R` past its end) stops in a 3-second invocation and is
/// handed on, and shadow-push is killed right after the hand-off. The message arrives seconds after the end, and
/// every later one later still: each must finish the walk to the target marked at the end (`R` past the end, which
/// does not move), not start a new one to `R` past its own arrival from the first item, which would never end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_right_after_an_ended_push_walk_is_handed_on_the_messages_finish_it() {
    const ENTRIES: usize = 300;
    let invocation = Duration::from_secs(3);
    let point = CrashPoint { step: Step::HandOff, nth: 1, delivered: true, repeat: false };
    let env = [("PUSH_RETENTION_DAYS", "1"), ("PUSH_PARTITION_WPS", "100")];
    // Started 20 hours ago: kept until 4 hours from now, short of a day past its end.
    let abort = ("abortPush", "aborted");
    let Killed { fx, function: _dying, _proxy, push_id, marked, .. } =
        killed_at(point, SQS, &env, (ENTRIES, 1500), abort, invocation, "at the hand-off").await;
    let ended = marked["finishedAt"].as_u64().unwrap_or_else(|| panic!("no end: {marked}")) / 1000;
    let target = marked["keepingTo"].as_u64().unwrap_or_else(|| panic!("not marked: {marked}"));
    assert!(target >= ended + DAY, "target {target} short of a day past the end {ended}");
    let at_kill = expiries(&fx.stack, &fx.table, &push_id).await;
    assert!(at_kill.values().filter(|e| **e == target).count() < ENTRIES, "the walk was not stopped short");

    let function = fx.function(&env).await;
    let deliveries = deliver_hand_offs(&fx, &function, invocation).await;
    println!("the ended push's walk finished in {deliveries} deliveries");
    let record = fx.record(&push_id).await.unwrap_or(Value::Null);
    let items = expiries(&fx.stack, &fx.table, &push_id).await;
    assert_eq!(items.len(), ENTRIES + 3, "plan, record, where the walk got and the entries: {items:?}");
    assert_finished(target, (&marked, &at_kill), (&record, &items));
}

/// shadow-push killed right after an abort marks the push's record `keepingTo` (the push aborted, its walk not begun):
/// the abort's retry finds the push aborted with a walk under way, finishes the walk to the marked target (`R` past
/// the end) and answers with the aborted push, rather than refusing it as an abort of an aborted push and leaving its
/// items to expire at the old `keptUntil`.
#[tokio::test]
async fn killed_between_an_aborts_mark_and_its_first_item_the_aborts_retry_finishes_the_walk() {
    let point = CrashPoint { step: Step::KeepMark, nth: 1, delivered: true, repeat: false };
    let env = [("PUSH_RETENTION_DAYS", "1")];
    let abort = ("abortPush", "aborted");
    let Killed { fx, function, _proxy, push_id, marked, .. } =
        killed_at(point, DYNAMODB, &env, (30, 500), abort, PUSH_TIME, "at the mark").await;
    let target = marked["keepingTo"].as_u64().unwrap_or_else(|| panic!("not marked: {marked}"));
    let at_kill = expiries(&fx.stack, &fx.table, &push_id).await;
    let early = at_kill.values().filter(|e| **e < target).count();
    assert_eq!(early, 31, "the plan and 30 entries not yet rewritten when killed");

    let aborted = push(&function, &json!({"abortPush": push_id})).await.unwrap_or_else(|e| panic!("retry: {e}"));
    assert_eq!(aborted["state"], "aborted", "{aborted}");
    let record = fx.record(&push_id).await.unwrap_or(Value::Null);
    let items = expiries(&fx.stack, &fx.table, &push_id).await;
    assert_finished(target, (&marked, &at_kill), (&record, &items));
    // An abort of a push aborted with nothing under way is refused as before.
    let again = push(&function, &json!({"abortPush": push_id})).await;
    assert!(again.as_ref().is_err_and(|e| e.to_string().contains("nothing to abort")), "{again:?}");
}
