//! Every write condition defined once: one script of conditional writes, run through one generic function over the
//! push store's ports, against `DynamoPushStore` on DynamoDB Local and against the simulation's `MemoryStore`. Each
//! step's answer and the push's record as loaded after it must be the same from both, and the answers what the
//! script expects: claims (a free segment, the same segment twice, a takeover before and after the lease ran out,
//! past the most takeovers), renewals, a segment's record (by its holder, by a lost owner, the same write again),
//! controls, carrying them out, resume, stall, unstall, the sweeper's list, retention walks (complete, stopped by
//! their time and resumed), the board of senders, failures, conflicts and journal entries written twice.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use devstack::{Stack, unique};
use fleet_sim::store::MemoryStore;
use serde_json::json;
use shadow_aws::push_store::DynamoPushStore;
use shadow_aws::tables;
use shadow_core::push::quota::{Rates, Sender, Senders};
use shadow_core::push::{
    Claim, Control, Counts, Cursor, Failure, Holder, Journal, JournalEntry, JournalRef, PushDefinition, PushRecord,
    PushState, PushStore, Status, lifecycle, retention::Kept,
};

/// The retention both stores keep pushes for (seconds).
const RETENTION_S: u64 = 3600;

/// One step of the script: what it did, what the store answered, what the script expects it to answer (the start
/// of the answer's `Debug` text), and the push's record as loaded after it.
#[derive(Debug, Clone, PartialEq)]
struct Step {
    what: String,
    answer: String,
    expected: &'static str,
    record: Option<PushRecord>,
}

struct Run<'a, S> {
    store: &'a S,
    steps: Vec<Step>,
}

impl<S: PushStore + Journal + Senders> Run<'_, S> {
    /// Notes a step's answer, with `push_id`'s record loaded after it.
    async fn note(&mut self, what: impl Into<String>, push_id: &str, expected: &'static str, answer: impl Debug) {
        let record = self.store.load_record(push_id).await.unwrap_or_else(|e| panic!("loading {push_id}: {e}"));
        self.steps.push(Step { what: what.into(), answer: format!("{answer:?}"), expected, record });
    }
}

fn definition(push_id: &str) -> PushDefinition {
    PushDefinition {
        push_id: push_id.into(),
        shadow_name: Some("cfg".into()),
        dry_run: false,
        request: json!({"pushId": push_id, "desired": {"mode": 1}}),
        plan_digest: "digest".into(),
        sources: Vec::new(),
    }
}

/// A new push's record: segment 1 claimed by `owner` until `lease`, its journal over `shards` partitions.
fn new_record(push_id: &str, started_at: u64, owner: &str, lease: u64, shards: u32) -> PushRecord {
    PushRecord {
        push_id: push_id.into(),
        journal_shards: shards,
        status: Status { started_at, cursor: Some(Cursor::default()), ..Status::default() },
        holder: Holder {
            segment: 1,
            owner: owner.into(),
            lease_until: lease,
            segment_started_at: started_at,
            ..Holder::default()
        },
        kept: Kept::default(),
    }
}

/// A segment's record of `record`: `segment` done and handed on, with some progress, in `state`, released until
/// `lease`.
fn recorded(record: &PushRecord, segment: u64, state: PushState, lease: u64) -> PushRecord {
    let mut next = record.clone();
    next.holder.segment = segment;
    next.holder.handed_off = segment;
    next.holder.lease_until = lease;
    next.status.state = state;
    next.status.counts = Counts { targets: 4 * segment, updated: 3 * segment, unchanged: segment, ..Counts::default() };
    next.status.cursor = Some(Cursor { offset: 4 * segment as usize, walked: 4 * segment, ..Cursor::default() });
    if state.is_final() {
        next.status.complete = state == PushState::Complete;
        next.status.finished_at = Some(lease);
        next.status.cursor = None;
    }
    next
}

fn claim(segment: u64, owner: &str, lease: u64, takeover: bool) -> Claim {
    Claim { segment, owner: owner.into(), lease_until_ms: lease, takeover }
}

fn failure(thing: &str, message: &str) -> Failure {
    Failure { thing_name: thing.into(), code: "ThrottlingException".into(), message: message.into() }
}

fn sender(push_id: &str, owner: &str, until_ms: u64) -> Sender {
    let rates = Rates { updates: 50.0, reads: 40.0 };
    Sender { push_id: push_id.into(), owner: owner.into(), until_ms, caps: rates, pace: rates }
}

async fn load<S: PushStore>(store: &S, push_id: &str) -> PushRecord {
    store.load_record(push_id).await.unwrap_or_else(|e| panic!("loading {push_id}: {e}")).expect("the push exists")
}

/// The script: every step through the ports alone, times from `base` (epoch ms), so that both stores get the same.
async fn script<S: PushStore + Journal + Senders>(store: &S, base: u64) -> Vec<Step> {
    let mut run = Run { store, steps: Vec::new() };
    let t = |offset: u64| base + offset;
    let fail = |e: shadow_core::service::ServiceError| -> String { panic!("{e}") };

    // A push is created with its plan, once.
    let a = "push-a";
    let first = new_record(a, base, "o1", t(10_000), 3);
    let created = store.create(&definition(a), &first).await.map_err(fail);
    run.note("create", a, "Ok(true)", created).await;
    let again = new_record(a, base, "other", t(99_000), 3);
    let created = store.create(&definition(a), &again).await.map_err(fail);
    run.note("create the same push again", a, "Ok(false)", created).await;
    let loaded = store.load(a).await.map_err(fail).map(|p| p.map(|p| p.definition));
    run.note("load its plan", a, "Ok(Some(PushDefinition", loaded).await;

    // Renew: the holder, then another owner.
    let renewed = store.renew(a, 1, "o1", t(15_000)).await.map_err(fail);
    run.note("renew by the holder", a, "Ok(Some(None))", renewed).await;
    let renewed = store.renew(a, 1, "o-other", t(90_000)).await.map_err(fail);
    run.note("renew by another owner", a, "Ok(None)", renewed).await;

    // Claim: the next segment before this one is released; takeovers before and after the lease ran out.
    let claimed = store.claim(a, &claim(2, "o2", t(25_000), false), t(12_000)).await.map_err(fail);
    run.note("claim segment 2 while 1 is held", a, "Ok(false)", claimed).await;
    let claimed = store.claim(a, &claim(1, "o2", t(25_000), true), t(12_000)).await.map_err(fail);
    run.note("take over segment 1 before its lease ran out", a, "Ok(false)", claimed).await;
    let claimed = store.claim(a, &claim(1, "o2", t(25_000), true), t(16_000)).await.map_err(fail);
    run.note("take over segment 1 after its lease ran out", a, "Ok(true)", claimed).await;
    let renewed = store.renew(a, 1, "o1", t(30_000)).await.map_err(fail);
    run.note("renew by the owner taken over", a, "Ok(None)", renewed).await;

    // Record: by the owner that lost the segment, by its holder, and the same write again.
    let record = load(store, a).await;
    let next = recorded(&record, 1, PushState::Running, t(40_000));
    let written = store.finish_segment(&next, "o1").await.map_err(fail);
    run.note("record segment 1 by the owner taken over", a, "Ok(None)", written).await;
    let written = store.finish_segment(&next, "o2").await.map_err(fail);
    run.note("record segment 1 by its holder", a, "Ok(Some(PushRecord", written).await;
    let written = store.finish_segment(&next, "o2").await.map_err(fail);
    run.note("record segment 1 again", a, "Ok(None)", written).await;

    // Claim the free segment, then the same segment again; then take it over until the most takeovers.
    let claimed = store.claim(a, &claim(2, "o3", t(45_000), false), t(41_000)).await.map_err(fail);
    run.note("claim the free segment 2", a, "Ok(true)", claimed).await;
    let claimed = store.claim(a, &claim(2, "o4", t(45_000), false), t(41_000)).await.map_err(fail);
    run.note("claim segment 2 again", a, "Ok(false)", claimed).await;
    let mut now = 46_000;
    for n in 0..=lifecycle::MAX_TAKEOVERS {
        let owner = format!("t{n}");
        let claimed = store.claim(a, &claim(2, &owner, t(now + 1_000), true), t(now)).await.map_err(fail);
        let expected = if n < lifecycle::MAX_TAKEOVERS { "Ok(true)" } else { "Ok(false)" };
        run.note(format!("takeover {} of segment 2", n + 1), a, expected, claimed).await;
        now += 2_000;
    }
    let holder = format!("t{}", lifecycle::MAX_TAKEOVERS - 1);
    let renewed = store.renew(a, 2, &holder, t(now + 5_000)).await.map_err(fail);
    run.note("renew by the last taker", a, "Ok(Some(None))", renewed).await;
    let lease = now + 5_000;

    // Control: on a running push, a second request, an abort over a pause; the holder learns it as it renews.
    let asked = store.request_control(a, Control::Pause).await.map_err(fail);
    run.note("pause a running push", a, "Ok(true)", asked).await;
    let asked = store.request_control(a, Control::Pause).await.map_err(fail);
    run.note("pause it again", a, "Ok(false)", asked).await;
    let asked = store.request_control(a, Control::Abort).await.map_err(fail);
    run.note("abort over the pause", a, "Ok(true)", asked).await;
    let renewed = store.renew(a, 2, &holder, t(lease)).await.map_err(fail);
    run.note("renew learns the abort", a, "Ok(Some(Some(Abort)))", renewed).await;
    let claimed = store.claim(a, &claim(3, "o5", t(lease + 9_000), false), t(lease + 1_000)).await.map_err(fail);
    run.note("claim segment 3 with a control left", a, "Ok(false)", claimed).await;

    // Carry out: while a live segment holds it, after its lease ran out, then again once the record moved on.
    let record = load(store, a).await;
    let mut aborted = recorded(&record, 2, PushState::Aborted, t(lease + 2_000));
    aborted.status.abort_reason = Some("aborted by an operator".into());
    let applied = store.apply_control(&aborted, Control::Abort, t(lease - 1_000)).await.map_err(fail);
    run.note("carry out the abort while segment 2 is held", a, "Ok(false)", applied).await;
    let applied = store.apply_control(&aborted, Control::Abort, t(lease + 1_000)).await.map_err(fail);
    run.note("carry out the abort after its holder died", a, "Ok(true)", applied).await;
    let applied = store.apply_control(&aborted, Control::Abort, t(lease + 1_000)).await.map_err(fail);
    run.note("carry out the abort again", a, "Ok(false)", applied).await;
    let asked = store.request_control(a, Control::Pause).await.map_err(fail);
    run.note("pause a final push", a, "Ok(false)", asked).await;
    let asked = store.request_control(a, Control::Abort).await.map_err(fail);
    run.note("abort a final push", a, "Ok(false)", asked).await;
    let written = store.finish_segment(&recorded(&aborted, 2, PushState::Running, t(0)), &holder).await;
    run.note("record by the dead holder after the abort", a, "Ok(None)", written.map_err(fail)).await;

    // Pause and resume: a released push, paused through the record.
    let b = "push-b";
    let created = store.create(&definition(b), &new_record(b, base, "p1", t(10_000), 0)).await.map_err(fail);
    run.note("create push b", b, "Ok(true)", created).await;
    let resumed = store.resume(b, PushState::Running, t(20_000)).await.map_err(fail);
    run.note("resume a running push", b, "Ok(false)", resumed).await;
    let record = load(store, b).await;
    let written = store.finish_segment(&recorded(&record, 1, PushState::Running, t(20_000)), "p1").await;
    run.note("record b's segment 1", b, "Ok(Some(PushRecord", written.map_err(fail)).await;
    let asked = store.request_control(b, Control::Pause).await.map_err(fail);
    run.note("pause b", b, "Ok(true)", asked).await;
    let claimed = store.claim(b, &claim(2, "p2", t(30_000), false), t(14_000)).await.map_err(fail);
    run.note("claim b's free segment 2 with a pause asked", b, "Ok(false)", claimed).await;
    let record = load(store, b).await;
    let paused = recorded(&record, 1, PushState::Paused, t(20_000));
    let applied = store.apply_control(&paused, Control::Abort, t(15_000)).await.map_err(fail);
    run.note("carry out another control than the one asked", b, "Ok(false)", applied).await;
    let applied = store.apply_control(&paused, Control::Pause, t(15_000)).await.map_err(fail);
    run.note("carry out the pause on the released push", b, "Ok(true)", applied).await;
    let claimed = store.claim(b, &claim(2, "p2", t(30_000), false), t(21_000)).await.map_err(fail);
    run.note("claim a paused push", b, "Ok(false)", claimed).await;
    let resumed = store.resume(b, PushState::Running, t(40_000)).await.map_err(fail);
    run.note("resume the paused push", b, "Ok(true)", resumed).await;
    let resumed = store.resume(b, PushState::Running, t(40_000)).await.map_err(fail);
    run.note("resume it again", b, "Ok(false)", resumed).await;

    // Stall and unstall.
    let stalled = store.stall(b, 5, "segment 5 kept dying").await.map_err(fail);
    run.note("stall at another segment", b, "Ok(())", stalled).await;
    let stalled = store.stall(b, 1, "segment 1 kept dying").await.map_err(fail);
    run.note("stall", b, "Ok(())", stalled).await;
    let claimed = store.claim(b, &claim(2, "p2", t(60_000), false), t(41_000)).await.map_err(fail);
    run.note("claim a stalled push", b, "Ok(false)", claimed).await;
    let asked = store.request_control(b, Control::Abort).await.map_err(fail);
    run.note("abort a stalled push", b, "Ok(false)", asked).await;
    let record = load(store, b).await;
    let mut next = record.clone();
    next.holder.segment = 2;
    next.holder.lease_until = t(70_000);
    let unstalled = store.unstall(&next).await.map_err(fail);
    run.note("unstall at another segment", b, "Ok(false)", unstalled).await;
    next.holder.segment = 1;
    let unstalled = store.unstall(&next).await.map_err(fail);
    run.note("unstall", b, "Ok(true)", unstalled).await;
    let unstalled = store.unstall(&next).await.map_err(fail);
    run.note("unstall a push not stalled", b, "Ok(false)", unstalled).await;
    let claimed = store.claim(b, &claim(2, "p3", t(80_000), false), t(71_000)).await.map_err(fail);
    run.note("claim the unstalled push", b, "Ok(true)", claimed).await;

    // A complete push is claimed no more, and leaves the sweeper's list (open pushes whose lease ran out, by lease;
    // the aborted push left it too).
    let c = "push-c";
    let created = store.create(&definition(c), &new_record(c, base, "q1", t(50_000), 0)).await.map_err(fail);
    run.note("create push c", c, "Ok(true)", created).await;
    let record = load(store, c).await;
    let asked = store.request_control(c, Control::Pause).await.map_err(fail);
    run.note("pause c while its segment runs", c, "Ok(true)", asked).await;
    let written = store.finish_segment(&recorded(&record, 1, PushState::Complete, t(30_000)), "q1").await;
    let control = written.as_ref().ok().map(|r| r.as_ref().map(|r| r.status.control));
    run.note("record c complete", c, "Ok(Some(PushRecord", written.map_err(fail)).await;
    run.note("the record written carries the pause", c, "Some(Some(Some(Pause)))", control).await;
    let claimed = store.claim(c, &claim(2, "q2", t(40_000), false), t(31_000)).await.map_err(fail);
    run.note("claim a complete push", c, "Ok(false)", claimed).await;
    let asked = store.request_control(c, Control::AbortRollback).await.map_err(fail);
    run.note("roll back a complete push", c, "Ok(false)", asked).await;
    let asked = store.request_control(c, Control::Abort).await.map_err(fail);
    run.note("abort a complete push", c, "Ok(false)", asked).await;
    let stale = store.stale(t(60_000), 10).await.map_err(fail);
    run.note("stale before b's lease ran out", c, "Ok([])", stale).await;
    let stale = store.stale(t(90_000), 10).await.map_err(fail);
    run.note("stale after b's lease ran out", c, r#"Ok(["push-b"])"#, stale).await;
    let stale = store.stale(t(90_000), 0).await.map_err(fail);
    run.note("stale, none asked", c, "Ok([])", stale).await;

    // Failures and conflicts, each written twice; journal entries recorded twice.
    let at = JournalRef::new(a, 3);
    let listed = [failure("t-1", "first"), failure("t-2", "first"), failure("t-3", "first")];
    store.add_failures(at, base / 1000 + RETENTION_S, &listed).await.map_err(fail).ok();
    let twice = [failure("t-1", "second"), failure("t-4", "first")];
    let written = store.add_failures(at, base / 1000 + RETENTION_S, &twice).await.map_err(fail);
    run.note("failures written twice", a, "Ok(())", written).await;
    let read = store.failures(at, 10).await.map_err(fail);
    run.note("failures", a, "Ok([Failure", read).await;
    let read = store.failures(at, 2).await.map_err(fail);
    run.note("two failures", a, "Ok([Failure", read).await;
    store.add_conflicts(at, base / 1000 + RETENTION_S, &listed).await.map_err(fail).ok();
    let written = store.add_conflicts(at, base / 1000 + RETENTION_S, &twice).await.map_err(fail);
    run.note("conflicts written twice", a, "Ok(())", written).await;
    let read = store.conflicts(at, 10).await.map_err(fail);
    run.note("conflicts", a, "Ok([Failure", read).await;
    let read = store.failures(JournalRef::new(c, 0), 10).await.map_err(fail);
    run.note("no failures", c, "Ok([])", read).await;
    for (thing, value) in [("t-1", 1), ("t-1", 2), ("t-2", 3), ("t-9", 4)] {
        let entry = JournalEntry {
            thing_name: thing.into(),
            phase: if thing == "t-9" { 2 } else { 1 },
            values: json!({"mode": value}),
        };
        let recorded = store.record_previous(at, base / 1000 + RETENTION_S, &entry).await.map_err(fail);
        run.note(format!("journal {thing} = {value}"), a, "Ok(())", recorded).await;
    }
    let page = store.previous_page(at, Some(1), None).await.map_err(fail).map(|p| (p.entries, p.next));
    run.note("phase 1's journal", a, "Ok(([JournalEntry", page).await;
    let page = store.previous_page(at, None, Some("001#t-2")).await.map_err(fail).map(|p| (p.entries, p.next));
    run.note("the journal after 001#t-2", a, "Ok(([JournalEntry", page).await;
    let entry = store.previous(at, "001#t-1").await.map_err(fail);
    run.note("t-1's entry", a, "Ok(Some(JournalEntry", entry).await;

    // The board of senders.
    let announced = store.announce(&sender(a, "s1", t(5_000))).await.map_err(fail);
    run.note("announce a", a, "Ok(())", announced).await;
    let announced = store.announce(&sender(b, "s2", t(6_000))).await.map_err(fail);
    run.note("announce b", b, "Ok(())", announced).await;
    let announced = store.announce(&sender(a, "s3", t(7_000))).await.map_err(fail);
    run.note("announce a again, another holder", a, "Ok(())", announced).await;
    let board = store.senders().await.map_err(fail);
    run.note("the board", a, "Ok([Sender", board).await;
    let withdrawn = store.withdraw(a, "s1").await.map_err(fail);
    run.note("withdraw a by its former holder", a, "Ok(())", withdrawn).await;
    let withdrawn = store.withdraw(b, "s2").await.map_err(fail);
    run.note("withdraw b by its holder", b, "Ok(())", withdrawn).await;
    let board = store.senders().await.map_err(fail);
    run.note("the board after", a, "Ok([Sender", board).await;

    // Retention: a complete walk, then enough; a walk stopped by its time, then resumed.
    let now_s = base / 1000 + 2_000;
    for (push_id, entries) in [("push-k", 3), ("push-w", 20)] {
        let record = new_record(push_id, base, "k1", t(10_000), 1);
        let created = store.create(&definition(push_id), &record).await.map_err(fail);
        run.note(format!("create {push_id}"), push_id, "Ok(true)", created).await;
        let expires = record.kept.expires_at(base, RETENTION_S);
        for i in 0..entries {
            let entry = JournalEntry { thing_name: format!("thing-{i:03}"), phase: 1, values: json!({"mode": i}) };
            store.record_previous(record.journal(), expires, &entry).await.map_err(fail).ok();
        }
    }
    let record = load(store, "push-k").await;
    let kept = store.extend_within(&record, now_s, true, 1000, None).await.map_err(fail);
    run.note("extend push-k", "push-k", "Ok(Kept { kept_until: Some(", kept).await;
    let record = load(store, "push-k").await;
    let kept = store.extend_within(&record, now_s, true, 1000, None).await.map_err(fail);
    run.note("extend push-k again: enough", "push-k", "Ok(Kept { kept_until: Some(", kept).await;
    let record = load(store, "push-w").await;
    let kept = store.extend_within(&record, now_s, true, 10, Some(Duration::from_millis(250))).await.map_err(fail);
    run.note("extend push-w, stopped by its time", "push-w", "Ok(Kept { kept_until: None, keeping_to: Some(", kept)
        .await;
    let record = load(store, "push-w").await;
    let kept = store.extend_within(&record, now_s, true, 1000, None).await.map_err(fail);
    run.note("extend push-w, resumed", "push-w", "Ok(Kept { kept_until: Some(", kept).await;
    let kept = store.extend_within(&record, now_s, true, 1000, None).await.map_err(fail);
    run.note("extend push-w from its old marks", "push-w", "Ok(Kept {", kept).await;

    run.steps
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// On a thread of its own with a larger stack: the script's one long future is polled in frames larger than a test
/// thread's stack in a debug build.
#[test]
fn each_write_condition_holds_the_same_in_dynamodb_and_in_memory() {
    let conformance = std::thread::Builder::new()
        .stack_size(64 << 20)
        .spawn(|| {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
            runtime.block_on(conformance());
        })
        .expect("a thread");
    if let Err(panic) = conformance.join() {
        std::panic::resume_unwind(panic);
    }
}

async fn conformance() {
    let stack = Stack::get();
    let table = unique("conformance");
    tables::ensure_table(&stack.dynamodb(), &table, &tables::PUSH).await.unwrap_or_else(|e| panic!("{e}"));
    let dynamo = DynamoPushStore::new(stack.dynamodb(), table.clone(), Some(1)).with_retention_seconds(RETENTION_S);
    let memory = MemoryStore::new().with_retention_seconds(RETENTION_S);
    let base = now_ms();
    let expected = script(&dynamo, base).await;
    let got = script(&memory, base).await;
    for (i, (d, m)) in expected.iter().zip(&got).enumerate() {
        assert_eq!(
            m, d,
            "step {i} ({}): the memory store (left) differs from DynamoDB Local (right) on table {table}",
            d.what
        );
    }
    assert_eq!(got.len(), expected.len(), "the script ran to its end in both");
    for (i, step) in expected.iter().enumerate() {
        assert!(
            step.answer.starts_with(step.expected),
            "step {i} ({}): DynamoDB Local answered {}, the script expects {}...",
            step.what,
            step.answer,
            step.expected
        );
    }
    // What the walks rewrote, which no port reads: every item of the walked pushes expires at the same moment in both.
    for push_id in ["push-k", "push-w"] {
        let in_memory = memory.expiries(JournalRef::new(push_id, 1));
        let in_dynamodb = expiries(&stack, &table, push_id).await;
        assert_eq!(in_memory, in_dynamodb, "{push_id}'s items' expiresAt: memory (left), DynamoDB Local (right)");
        let until: std::collections::BTreeSet<_> = in_memory.values().collect();
        assert!(in_memory.len() >= 5 && until.len() == 1, "{push_id}'s items expire together: {in_memory:?}");
    }
    println!("{} steps, the same from DynamoDB Local and from memory", expected.len());
}

/// The `expiresAt` of every item of `push_id`'s partition and its journal's one shard, by partition and sort key.
async fn expiries(stack: &Stack, table: &str, push_id: &str) -> BTreeMap<(String, String), Option<u64>> {
    let mut all = BTreeMap::new();
    for partition in [push_id.to_owned(), format!("{push_id}#0")] {
        let items = stack
            .dynamodb()
            .query()
            .table_name(table)
            .key_condition_expression("#pk = :p")
            .expression_attribute_names("#pk", tables::PARTITION_KEY)
            .expression_attribute_values(":p", AttributeValue::S(partition.clone()))
            .consistent_read(true)
            .send()
            .await
            .unwrap_or_else(|e| panic!("querying {partition}: {e}"));
        for item in items.items() {
            let text = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned().unwrap_or_default();
            let expires = item.get(tables::TTL_ATTRIBUTE).and_then(|v| v.as_n().ok()).and_then(|n| n.parse().ok());
            all.insert((text(tables::PARTITION_KEY), text(tables::SORT_KEY)), expires);
        }
    }
    all
}
