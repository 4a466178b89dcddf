//! How long a push's items are kept: its record, plan, journal, failures and conflicts expire together (DynamoDB's
//! TTL on `expiresAt`), and while the push is not final they are kept at least the retention past now.
//!
//! The record item carries `keptUntil` (epoch s): every other item of the push has `expiresAt >= keptUntil`. To
//! extend, the record first takes a target `keepingTo` (from then on new items are written with it), the push's
//! items are rewritten to it, then `keptUntil = keepingTo`. A walk that died leaves `keepingTo > keptUntil`: the
//! next decision finishes it first.
//!
//! A walk stops before the invocation's deadline rather than being killed by it: it leaves where it got beside the
//! record ([`Through`]), and the next attempt resumes from there.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::PushRecord;
use crate::service::ServiceError;

/// The record's retention marks (epoch seconds). Both absent on a record written before they existed, or never
/// extended: its items expire `retention` after the push started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Kept {
    /// Every item of the push has `expiresAt` at or past this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kept_until: Option<u64>,
    /// An extension under way: items are being rewritten to this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keeping_to: Option<u64>,
}

/// What to do about a push's retention now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// Its items are kept long enough.
    Enough,
    /// Rewrite every item's `expiresAt` to `to`; `mark` says whether the record must first take `keepingTo = to`
    /// (false: a walk to `to` was started and stopped or died, and is finished now, from where the record's
    /// [`Through`] says it got).
    Extend { to: u64, mark: bool },
}

impl Kept {
    /// A new push's marks: kept `2 × retention` from its start, as an extension would keep it. A push that ends
    /// within `retention` of its start is then kept `retention` past its end without rewriting a single item.
    pub fn at_creation(started_at_ms: u64, retention_s: u64) -> Self {
        Self { kept_until: Some(started_at_ms / 1000 + retention_s.saturating_mul(2)), keeping_to: None }
    }

    /// Every item of the push expires at or after this (epoch s).
    pub fn until(&self, started_at_ms: u64, retention_s: u64) -> u64 {
        self.kept_until.unwrap_or(started_at_ms / 1000 + retention_s)
    }

    /// What a new item of the push is written with: the extension's target while one is under way, so that the
    /// walk need not come back for it.
    pub fn expires_at(&self, started_at_ms: u64, retention_s: u64) -> u64 {
        self.until(started_at_ms, retention_s).max(self.keeping_to.unwrap_or(0))
    }

    /// When the push's items were kept until a moment already past at `now_s`, that moment: a push left paused,
    /// stalled or aborted longer than its retention. DynamoDB may delete its items at any time from then (one by
    /// one, within days), so what needs them whole (resuming, rolling back) is refused.
    pub fn lapsed(&self, started_at_ms: u64, retention_s: u64, now_s: u64) -> Option<u64> {
        let until = self.until(started_at_ms, retention_s);
        (until <= now_s).then_some(until)
    }

    /// The target of an extension under way (started and not finished: stopped at a deadline, or died), if any.
    pub fn walking(&self, started_at_ms: u64, retention_s: u64) -> Option<u64> {
        self.keeping_to.filter(|to| *to > self.until(started_at_ms, retention_s))
    }

    /// The decision at a transition (a phase, a pause, a resume, an end) or a segment's start. An open push (`open`:
    /// not final) is kept until at least `now + retention`: when short of it, extended to `now + 2 × retention`, so
    /// that each item is rewritten at most once per `retention` the push stays open. A final push is kept
    /// `retention` past its end: extended to `now + retention` when short of it. A walk that died is finished first.
    pub fn decide(&self, started_at_ms: u64, retention_s: u64, now_s: u64, open: bool) -> Keep {
        let until = self.until(started_at_ms, retention_s);
        let floor = now_s.saturating_add(retention_s);
        // A walk that died, to a target that still covers now: finished, not restarted.
        if let Some(to) = self.keeping_to.filter(|to| *to > until && *to >= floor) {
            return Keep::Extend { to, mark: false };
        }
        if until.max(self.keeping_to.unwrap_or(0)) >= floor {
            return Keep::Enough;
        }
        let to = if open { now_s.saturating_add(retention_s.saturating_mul(2)) } else { floor };
        Keep::Extend { to, mark: true }
    }
}

/// Where a walk to a target got (an item of its own beside the record, written as the walk goes and when it stops): per
/// partition of the push's items, the last sort key rewritten. Each partition is walked in key order, so every item
/// of it up to that key that expired before the target was rewritten; the next attempt queries after it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Through {
    /// The target these positions were walked to.
    pub to: u64,
    /// Partition key → the last sort key rewritten there.
    #[serde(default)]
    pub after: BTreeMap<String, String>,
}

impl Through {
    /// A walk to `to` from the start of every partition.
    pub fn start(to: u64) -> Self {
        Self { to, after: BTreeMap::new() }
    }

    /// Positions read from the record for a walk to `to`: kept when they are that walk's, else the start (a walk to
    /// another target rewrites every item again).
    pub fn resuming(recorded: Option<Self>, to: u64) -> Self {
        recorded.filter(|t| t.to == to).unwrap_or_else(|| Self::start(to))
    }

    /// The sort key `partition`'s walk resumes after (`None`: from its start).
    pub fn after(&self, partition: &str) -> Option<&str> {
        self.after.get(partition).map(String::as_str)
    }

    /// `partition`'s walk rewrote (or passed) the item with sort key `key`.
    pub fn passed(&mut self, partition: &str, key: String) {
        self.after.insert(partition.to_owned(), key);
    }
}

/// A walk of a push's items to a target, shared by its partitions' walks.
pub struct Walk<'a> {
    pub push_id: &'a str,
    pub to: u64,
    /// Write units a second per partition.
    pub wps: u32,
    /// When to stop (the invocation's deadline less what follows the walk).
    pub stop_at: Option<Instant>,
    /// Where the walk got, per partition.
    pub through: Mutex<Through>,
}

impl Walk<'_> {
    /// A write that would start at `at` starts past the walk's time.
    pub fn out_of_time(&self, at: Instant) -> bool {
        self.stop_at.is_some_and(|stop| at >= stop)
    }

    /// Where the walk got so far.
    pub fn through(&self) -> Through {
        self.through.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The steps of a retention walk, as a store carries them out: each one read or conditional write. The order they
/// are taken in, and what each answer means, is [`extend_within`]'s, the same for every store.
pub trait WalkSteps: Sync {
    /// Sets the record's `keepingTo` (and its own expiry) to `to`, unless a target as late is there already: from
    /// then on the push's new items are written with `to`. `Ok(false)` when it was not set (or the record is gone).
    fn mark_keeping(&self, push_id: &str, to: u64) -> impl Future<Output = Result<bool, ServiceError>> + Send;
    /// Where a walk got, as last saved (`None`: never saved).
    fn kept_through(&self, push_id: &str) -> impl Future<Output = Result<Option<Through>, ServiceError>> + Send;
    /// Rewrites every item of the push that expires before `walk.to` (plan, saved positions, each journal
    /// partition from where `walk.through` says), paced under `walk.wps` write units a second per partition, until
    /// `walk.stop_at`: the items rewritten, and whether the walk got through them all.
    fn rewrite_expiry(
        &self,
        record: &PushRecord,
        walk: &Walk<'_>,
    ) -> impl Future<Output = Result<(u64, bool), ServiceError>> + Send;
    /// Saves where a walk got, unless a walk to a later target saved its own already.
    fn save_through(&self, push_id: &str, through: &Through)
    -> impl Future<Output = Result<bool, ServiceError>> + Send;
    /// The walk is done: `keptUntil = to`, `keepingTo` removed unless a later target replaced it meanwhile (then
    /// `keptUntil` is raised to `to` all the same).
    fn mark_kept(&self, push_id: &str, to: u64) -> impl Future<Output = Result<(), ServiceError>> + Send;
}

/// Keeps `record`'s items as [`Kept::decide`] says at `now_s` (an ended push: at its end; `open`: the push is not
/// final), in a store that keeps pushes `retention_s` (`None`: for ever, nothing to do): marks the target on the
/// record, rewrites every item's expiry, then sets `keptUntil`. Stopped once `within` has passed, it saves where it got and returns marks with
/// `keepingTo` still past `keptUntil` ([`Kept::walking`]); the next call resumes from there.
pub async fn extend_within<S: WalkSteps>(
    store: &S,
    retention_s: Option<u64>,
    record: &PushRecord,
    (now_s, open): (u64, bool),
    partition_wps: u32,
    within: Option<Duration>,
) -> Result<Kept, ServiceError> {
    let stop_at = within.map(|w| Instant::now() + w);
    let Some(retention) = retention_s else { return Ok(record.kept) };
    let at_s = decided_at(record, now_s, open);
    let Keep::Extend { to, mark } = record.kept.decide(record.status.started_at, retention, at_s, open) else {
        return Ok(record.kept);
    };
    let push = record.push_id.as_str();
    if mark && !store.mark_keeping(push, to).await? {
        // Another holder marked a later target meanwhile, or the record is gone: it walks (or will).
        tracing::info!(push, keeping_to = to, outcome = "duplicate", "push retention already being extended");
        return Ok(record.kept);
    }
    let through = if mark { Through::start(to) } else { Through::resuming(store.kept_through(push).await?, to) };
    let walk = Walk { push_id: push, to, wps: partition_wps, stop_at, through: Mutex::new(through) };
    let (rewritten, done) = store.rewrite_expiry(record, &walk).await?;
    if !done {
        // Where it got, for the next attempt; a later target marked meanwhile is walked from its own start.
        store.save_through(push, &walk.through()).await?;
        tracing::info!(
            push,
            keeping_to = to,
            items = rewritten,
            resumed = !mark,
            outcome = "stopped",
            "push retention walk stopped before the deadline; the next attempt resumes it"
        );
        return Ok(Kept { keeping_to: Some(to), ..record.kept });
    }
    store.mark_kept(push, to).await?;
    tracing::info!(push, kept_until = to, items = rewritten, resumed = !mark, "push retention extended");
    Ok(Kept { kept_until: Some(to), keeping_to: None })
}

/// The moment a push's retention is decided from: now while it is open; its end once it ended (it is kept
/// `retention` past its end), so that every later attempt decides the same target and finishes a walk that stopped or
/// died rather than starting another, to a later target, from the first item.
fn decided_at(record: &PushRecord, now_s: u64, open: bool) -> u64 {
    match record.status.finished_at {
        Some(end_ms) if !open => (end_ms / 1000).min(now_s),
        _ => now_s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const R: u64 = 86_400;
    const START_MS: u64 = 1_000_000_000;
    const START: u64 = START_MS / 1000;

    fn kept(until: Option<u64>, to: Option<u64>) -> Kept {
        Kept { kept_until: until, keeping_to: to }
    }

    #[test]
    fn decisions() {
        // (marks, now, open) -> decision
        let rows = [
            // A push recorded without marks: kept until start + R, enough while now + R is not past it.
            (kept(None, None), START, true, Keep::Enough),
            // An hour later, open: short of now + R; extended to now + 2R, marking the record first.
            (kept(None, None), START + 3600, true, Keep::Extend { to: START + 3600 + 2 * R, mark: true }),
            // Final an hour in: kept R past its end, not 2R.
            (kept(None, None), START + 3600, false, Keep::Extend { to: START + 3600 + R, mark: true }),
            // Extended before, still enough.
            (kept(Some(START + 2 * R), None), START + R, true, Keep::Enough),
            (kept(Some(START + 2 * R), None), START + R + 1, true, Keep::Extend { to: START + 3 * R + 1, mark: true }),
            // A walk that died: finished with its own target, without marking again.
            (
                kept(Some(START + R), Some(START + 3 * R)),
                START + R,
                true,
                Keep::Extend { to: START + 3 * R, mark: false },
            ),
            // A died walk's target now too short: a new, longer target.
            (
                kept(Some(START + R), Some(START + 2 * R)),
                START + 2 * R,
                true,
                Keep::Extend { to: START + 4 * R, mark: true },
            ),
            // Ends within its kept time: nothing to do.
            (kept(Some(START + 3 * R), None), START + R, false, Keep::Enough),
        ];
        for (i, (marks, now, open, want)) in rows.into_iter().enumerate() {
            assert_eq!(marks.decide(START_MS, R, now, open), want, "row {i}: {marks:?} at {now}, open {open}");
        }
    }

    #[test]
    fn a_push_that_ends_within_its_retention_rewrites_nothing() {
        let created = Kept::at_creation(START_MS, R);
        assert_eq!(created.kept_until, Some(START + 2 * R));
        for now in [START, START + 3600, START + R] {
            assert_eq!(created.decide(START_MS, R, now, false), Keep::Enough, "ended at {now}");
            assert_eq!(created.decide(START_MS, R, now, true), Keep::Enough, "a transition at {now}");
        }
        assert_eq!(
            created.decide(START_MS, R, START + R + 1, false),
            Keep::Extend { to: START + 2 * R + 1, mark: true }
        );
    }

    #[test]
    fn each_item_is_rewritten_at_most_once_per_retention_while_open() {
        // Transitions every hour for 30 days: count the extensions.
        let mut marks = Kept::default();
        let mut extensions = 0;
        for hour in 0..30 * 24 {
            let now = START + hour * 3600;
            if let Keep::Extend { to, .. } = marks.decide(START_MS, R, now, true) {
                extensions += 1;
                marks = kept(Some(to), None);
            }
            assert!(marks.until(START_MS, R) >= now + R, "kept past now + R at hour {hour}");
        }
        assert!(extensions <= 30, "{extensions} extensions in 30 days");
    }

    #[test]
    fn a_push_left_past_its_retention_has_lapsed() {
        assert_eq!(kept(None, None).lapsed(START_MS, R, START + R - 1), None);
        assert_eq!(kept(None, None).lapsed(START_MS, R, START + R), Some(START + R));
        assert_eq!(kept(Some(START + 3 * R), None).lapsed(START_MS, R, START + 2 * R), None);
        // A walk that died: only `keptUntil` holds for every item.
        assert_eq!(kept(Some(START + R), Some(START + 3 * R)).lapsed(START_MS, R, START + 2 * R), Some(START + R));
    }

    #[test]
    fn a_walk_under_way_and_where_it_resumes() {
        assert_eq!(kept(None, None).walking(START_MS, R), None);
        assert_eq!(kept(Some(START + R), Some(START + 3 * R)).walking(START_MS, R), Some(START + 3 * R));
        assert_eq!(kept(None, Some(START + 3 * R)).walking(START_MS, R), Some(START + 3 * R));
        // Finished (the target no later than what every item is kept until): nothing under way.
        assert_eq!(kept(Some(START + 3 * R), Some(START + 2 * R)).walking(START_MS, R), None);

        let mut through = Through::start(START + 3 * R);
        through.passed("p#0", "previous#1#b".into());
        through.passed("p#0", "previous#1#c".into());
        assert_eq!(through.after("p#0"), Some("previous#1#c"));
        assert_eq!(through.after("p#1"), None);
        let resumed = Through::resuming(Some(through.clone()), START + 3 * R);
        assert_eq!(resumed, through, "the same target: resumed where it got");
        let other = Through::resuming(Some(through), START + 4 * R);
        assert_eq!(other, Through::start(START + 4 * R), "another target: from the start");
        assert_eq!(Through::resuming(None, START + R), Through::start(START + R));
    }

    #[test]
    fn an_ended_push_is_decided_from_its_end_and_its_walk_finished_by_later_attempts() {
        use crate::push::record::{Holder, Status};
        let end = START + 20 * 3600;
        let ended = |kept: Kept| PushRecord {
            push_id: "p".into(),
            journal_shards: 1,
            status: Status { started_at: START_MS, finished_at: Some(end * 1000), ..Status::default() },
            holder: Holder::default(),
            kept,
        };
        // Decided at its end: kept R past it.
        let record = ended(Kept::default());
        assert_eq!(decided_at(&record, end, false), end);
        let at_end = record.kept.decide(START_MS, R, decided_at(&record, end, false), false);
        assert_eq!(at_end, Keep::Extend { to: end + R, mark: true });
        // That walk stopped or died: a later attempt (a message, a retry) finishes it, seconds or hours later.
        let walking = ended(kept(None, Some(end + R)));
        for later in [end + 1, end + 30, end + 3600] {
            let at = decided_at(&walking, later, false);
            assert_eq!(walking.kept.decide(START_MS, R, at, false), Keep::Extend { to: end + R, mark: false });
        }
        // Open again (an abort with rollback after the stop): decided from now.
        assert_eq!(decided_at(&walking, end + 30, true), end + 30);
    }

    #[test]
    fn new_items_take_the_target_of_a_walk_under_way() {
        assert_eq!(kept(None, None).expires_at(START_MS, R), START + R);
        assert_eq!(kept(Some(START + R), Some(START + 3 * R)).expires_at(START_MS, R), START + 3 * R);
        assert_eq!(kept(Some(START + 3 * R), Some(START + 2 * R)).expires_at(START_MS, R), START + 3 * R);
    }
}
