//! A push's items expire together, and follow the push: while it is open (running, baking, paused) its record, plan,
//! journal and failures are kept at least the retention past its last transition; once it ends, the retention past
//! its end. Against DynamoDB Local, through the push store, with a retention of seconds and the test's own "now";
//! and through shadow-push, with pushes recorded as if started hours ago.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use devstack::push::{PushFixture, push};
use devstack::{Stack, unique};
use serde_json::json;
use shadow_aws::push_store::DynamoPushStore;
use shadow_aws::tables;
use shadow_core::push::lifecycle;
use shadow_core::push::retention::Kept;
use shadow_core::push::{
    Failure, Journal, JournalEntry, PushLists, PushRecord, PushRecords, PushState, Retention, Source, validate_request,
};

/// The retention, in seconds of the test's clock.
const R: u64 = 100;
/// Journal writes a second per partition while extending: high, so that the test takes no time.
const WPS: u32 = 1000;
const THINGS: usize = 12;
const SHARDS: u32 = 3;

struct Push {
    stack: Stack,
    store: DynamoPushStore,
    table: String,
    push_id: String,
    /// When the push started, epoch s.
    start: u64,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// A rollout's push over 3 journal shards, with a previous value and a failure per thing recorded as shadow-push
/// writes them.
async fn push_with_journal(name: &str) -> Push {
    let stack = Stack::get();
    let table = unique(name);
    tables::ensure_table(&stack.dynamodb(), &table, &tables::PUSH).await.unwrap_or_else(|e| panic!("{e}"));
    let store = DynamoPushStore::new(stack.dynamodb(), table.clone(), Some(1)).with_retention_seconds(R);
    let push_id = unique("kept");
    let things: Vec<String> = (0..THINGS).map(|i| format!("sensor-{i:03}")).collect();
    let plan = validate_request(
        &json!({"pushId": push_id, "desired": {"mode": 1}, "targets": {"things": things}}),
        4000,
        None,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let started_ms = now_ms();
    let request = serde_json::to_value(&plan).expect("the plan as JSON");
    let definition = lifecycle::definition(&plan, request, lifecycle::plan_digest(&plan), vec![Source::Things]);
    let mut record = lifecycle::new_record(&plan, "owner-1".into(), started_ms, started_ms + 30_000);
    record.journal_shards = SHARDS;
    assert!(store.create(&definition, &record).await.unwrap_or_else(|e| panic!("{e}")), "not created");
    let push = Push { stack, store, table, push_id, start: started_ms / 1000 };
    push.write_journal(&record, &things).await;
    push
}

impl Push {
    async fn record(&self) -> PushRecord {
        self.store.load_record(&self.push_id).await.unwrap_or_else(|e| panic!("{e}")).expect("no record")
    }

    /// Each thing's previous value and failure, expiring as the handler writes them (the record's marks).
    async fn write_journal(&self, record: &PushRecord, things: &[String]) {
        let expires_at = record.kept.expires_at(record.status.started_at, R);
        for thing in things {
            let entry = JournalEntry { thing_name: thing.clone(), phase: 1, values: json!({"mode": 0}) };
            self.store.record_previous(record.journal(), expires_at, &entry).await.unwrap_or_else(|e| panic!("{e}"));
        }
        let failures: Vec<Failure> = things
            .iter()
            .map(|t| Failure { thing_name: t.clone(), code: "Throttled".into(), message: "m".into() })
            .collect();
        self.store.add_failures(record.journal(), expires_at, &failures).await.unwrap_or_else(|e| panic!("{e}"));
    }

    /// Every item of the push (its table holds no other push): sort key → `expiresAt`.
    async fn expiries(&self) -> HashMap<String, u64> {
        let scan = self.stack.dynamodb().scan().table_name(&self.table).consistent_read(true).send().await;
        let items = scan.unwrap_or_else(|e| panic!("scan: {e:?}")).items.unwrap_or_default();
        let text = |item: &HashMap<String, AttributeValue>, k: &str| {
            item.get(k).and_then(|v| v.as_s().ok().or_else(|| v.as_n().ok())).cloned().unwrap_or_default()
        };
        items
            .iter()
            .map(|item| {
                let key = format!("{}/{}", text(item, tables::PARTITION_KEY), text(item, tables::SORT_KEY));
                (key, text(item, tables::TTL_ATTRIBUTE).parse().unwrap_or(0))
            })
            .collect()
    }

    /// The push's items: a plan, a record, and a previous value and a failure per thing, in every shard.
    async fn expiries_checked(&self) -> HashMap<String, u64> {
        let all = self.expiries().await;
        assert_eq!(all.len(), 2 + 2 * THINGS, "{all:?}");
        let shards: std::collections::HashSet<&str> =
            all.keys().filter_map(|k| k.split_once('/')).map(|(p, _)| p).collect();
        assert_eq!(shards.len(), 1 + SHARDS as usize, "partitions: {shards:?}");
        all
    }

    async fn keep(&self, now_s: u64, open: bool) -> Kept {
        let record = self.record().await;
        self.store.extend(&record, now_s, open, WPS).await.unwrap_or_else(|e| panic!("{e}"))
    }
}

/// Paused a while after its start, then resumed later than the pause's retention would have kept it: at each, every
/// item (record, plan, each shard's previous values and failures) is kept at least R past that moment.
#[tokio::test]
async fn a_paused_push_is_kept_past_its_pause_and_its_resume() {
    let push = push_with_journal("push-ttl-pause").await;
    let created = push.expiries_checked().await;
    assert!(created.values().all(|e| *e == push.start + R), "at creation: start + R everywhere: {created:?}");

    let paused_at = push.start + 60;
    let kept = push.keep(paused_at, true).await;
    assert_eq!(kept, Kept { kept_until: Some(paused_at + 2 * R), keeping_to: None });
    assert_eq!(push.record().await.kept, kept, "the record's marks");
    let at_pause = push.expiries_checked().await;
    assert!(at_pause.values().all(|e| *e >= paused_at + R), "kept past the pause + R: {at_pause:?}");

    // Within the pause's retention: nothing to rewrite.
    assert_eq!(push.keep(paused_at + R, true).await, kept);
    assert_eq!(push.expiries().await, at_pause, "items rewritten without need");

    let resumed_at = paused_at + R + 50;
    let kept = push.keep(resumed_at, true).await;
    assert_eq!(kept.kept_until, Some(resumed_at + 2 * R));
    let at_resume = push.expiries_checked().await;
    assert!(at_resume.values().all(|e| *e >= resumed_at + R), "kept past the resume + R: {at_resume:?}");
}

/// A push that ends after its start's retention: every item expires R after its end.
#[tokio::test]
async fn a_finished_push_expires_retention_after_its_end() {
    let push = push_with_journal("push-ttl-end").await;
    let ended_at = push.start + 3 * R;
    assert_eq!(push.keep(ended_at, false).await.kept_until, Some(ended_at + R));
    let ended = push.expiries_checked().await;
    assert!(ended.values().all(|e| *e == ended_at + R), "R after the end: {ended:?}");
}

/// An extension that died after marking the record and rewriting part of the items: the next attempt (a claim, a
/// transition) finishes it to the same target, and what was written meanwhile already carries that target.
#[tokio::test]
async fn an_extension_cut_short_is_finished_by_the_next_attempt() {
    let push = push_with_journal("push-ttl-crash").await;
    let target = push.start + 500;
    // What a holder that died mid-walk leaves: the record marked `keepingTo`, the plan item rewritten, the journal not.
    let dynamodb = push.stack.dynamodb();
    for (sk, set) in [("push", "SET keepingTo = :to, expiresAt = :to"), ("plan", "SET expiresAt = :to")] {
        dynamodb
            .update_item()
            .table_name(&push.table)
            .set_key(Some(tables::key(&push.push_id, sk)))
            .update_expression(set)
            .expression_attribute_values(":to", AttributeValue::N(target.to_string()))
            .send()
            .await
            .unwrap_or_else(|e| panic!("update_item: {e:?}"));
    }
    let marked = push.record().await;
    assert_eq!(marked.kept, Kept { kept_until: None, keeping_to: Some(target) });
    let cut = push.expiries_checked().await;
    assert_eq!(cut.values().filter(|e| **e == target).count(), 2, "only the record and plan: {cut:?}");

    // A segment that ran meanwhile writes its journal with the target.
    push.write_journal(&marked, &["sensor-late".to_owned()]).await;
    let late = push.expiries().await;
    assert_eq!(late.values().filter(|e| **e == target).count(), 4, "the late entries take the target: {late:?}");

    // The next attempt, early enough that the target still covers it.
    let kept = push.keep(push.start + 1, true).await;
    assert_eq!(kept, Kept { kept_until: Some(target), keeping_to: None });
    assert_eq!(push.record().await.kept, kept, "the record's marks once finished");
    let finished = push.expiries().await;
    assert!(finished.values().all(|e| *e == target), "every item at the target: {finished:?}");
}

/// A rollout that started `started_h_ago` hours ago (in the real clock), recorded as shadow-push leaves it between
/// segments (released, in `state`, one previous value in its journal), in `fx`'s table kept 1 day.
async fn rollout_at(fx: &PushFixture, started_h_ago: u64, state: PushState) -> String {
    let store = DynamoPushStore::new(fx.stack.dynamodb(), fx.table.clone(), Some(1));
    let push_id = unique("held");
    let rollout = json!({"phases": [{"percent": 50}, {"percent": 100}], "bakeSeconds": 1, "minThings": 1});
    let request = json!({"pushId": push_id, "desired": {"mode": 1}, "targets": {"things": ["t-1", "t-2"]},
                         "rollout": rollout});
    let plan = validate_request(&request, 4000, None).unwrap_or_else(|e| panic!("{e}"));
    let started_ms = now_ms() - started_h_ago * 3_600_000;
    let request = serde_json::to_value(&plan).expect("the plan as JSON");
    let definition = lifecycle::definition(&plan, request, lifecycle::plan_digest(&plan), vec![Source::Things]);
    let mut record = lifecycle::new_record(&plan, "owner-1".into(), started_ms, started_ms + 30_000);
    record.journal_shards = 1;
    record.status.state = state;
    record.holder.handed_off = record.holder.segment;
    assert!(store.create(&definition, &record).await.unwrap_or_else(|e| panic!("{e}")), "not created");
    let entry = JournalEntry { thing_name: "t-1".into(), phase: 1, values: json!({"mode": 0}) };
    let expires_at = record.kept.expires_at(started_ms, 86_400);
    store.record_previous(record.journal(), expires_at, &entry).await.unwrap_or_else(|e| panic!("{e}"));
    push_id
}

/// Through shadow-push with `PUSH_RETENTION_DAYS=1`, pushes started 20 hours ago (their items 4 hours from
/// expiring): one running is paused, one paused is resumed, and the items of each are then kept a day past that
/// moment. One paused 30 hours ago (its items expired) is refused, naming why, and left as it was.
#[tokio::test]
async fn shadow_push_extends_a_push_at_pause_and_resume_and_refuses_one_past_its_retention() {
    let fx = PushFixture::new().await;
    let function = fx.function(&[("PUSH_RETENTION_DAYS", "1")]).await;
    let items = |push_id: String| {
        let fx = &fx;
        async move {
            let got = fx.stack.dynamodb().scan().table_name(&fx.table).consistent_read(true).send().await;
            let items = got.unwrap_or_else(|e| panic!("scan: {e:?}")).items.unwrap_or_default();
            let of_push = |i: &HashMap<String, AttributeValue>| {
                i.get(tables::PARTITION_KEY).and_then(|v| v.as_s().ok()).is_some_and(|pk| pk.starts_with(&push_id))
            };
            let expiry = |i: &HashMap<String, AttributeValue>| {
                i.get(tables::TTL_ATTRIBUTE).and_then(|v| v.as_n().ok()).and_then(|n| n.parse::<u64>().ok())
            };
            items.iter().filter(|i| of_push(i)).map(expiry).collect::<Vec<_>>()
        }
    };

    let running = rollout_at(&fx, 20, PushState::Running).await;
    let before = now_ms() / 1000;
    let paused = push(&function, &json!({"pausePush": running})).await.unwrap_or_else(|e| panic!("pause: {e}"));
    assert_eq!(paused["state"], "paused", "{paused}");
    let expiries = items(running.clone()).await;
    assert_eq!(expiries.len(), 3, "plan, record and a journal entry: {expiries:?}");
    assert!(expiries.iter().all(|e| e.is_some_and(|e| e >= before + 86_400)), "a day past the pause: {expiries:?}");

    let kept = rollout_at(&fx, 20, PushState::Paused).await;
    let before = now_ms() / 1000;
    let resumed = push(&function, &json!({"resumePush": kept})).await.unwrap_or_else(|e| panic!("resume: {e}"));
    assert_eq!(resumed["state"], "running", "{resumed}");
    let expiries = items(kept.clone()).await;
    assert_eq!(expiries.len(), 3, "plan, record and a journal entry: {expiries:?}");
    assert!(expiries.iter().all(|e| e.is_some_and(|e| e >= before + 86_400)), "a day past the resume: {expiries:?}");

    let lapsed = rollout_at(&fx, 30, PushState::Paused).await;
    let refused = push(&function, &json!({"resumePush": lapsed})).await.err().map(|e| e.to_string());
    let refused = refused.unwrap_or_else(|| panic!("a resume past the retention was taken"));
    assert!(refused.contains("past its retention") && refused.contains("resumePush"), "{refused}");
    assert_eq!(fx.record(&lapsed).await.map(|r| r["state"].clone()), Some(json!("paused")));
}
