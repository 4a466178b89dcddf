//! Pushing desired settings to a fleet: the request, its targets, the pacing engine, and the record it leaves.

mod engine;
#[cfg(test)]
mod fakes;
pub mod journal;
mod journal_walk;
pub mod lifecycle;
pub mod machine;
mod pace;
mod phase;
pub mod quota;
mod record;
mod request;
pub mod retention;
pub mod rollout;
mod targets;
mod thing;
mod walker;

pub use engine::{JournalOutcome, NoJournal, Segment, SegmentOutcome, SegmentStart, ThingOutcome};
pub use journal::JournalRef;
pub use journal_walk::{JudgeOrRollback, run_journal_segment};
pub use pace::{Lease, Pace};
pub use phase::{run_phase_segment, run_segment};
pub use record::{Counts, Holder, PushDefinition, PushRecord, PushState, PushSummary, Status, StoredPush};
pub use request::{MAX_LISTED_THINGS_BYTES, PushPlan, PushRequestError, Targets, push_id_problem, validate_request};
pub use rollout::{PhaseCounts, RollbackCounts};
pub use targets::{Cursor, Page, Registry, Source, check_sources, sources_for};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::names::{ShadowName, ThingName};
use crate::service::ServiceError;

/// A shadow's `desired` section and its metadata (per-key `timestamp`s, epoch seconds), and its `reported` section.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DesiredState {
    pub state: Value,
    pub metadata: Value,
    /// The shadow document's version.
    pub version: Option<u64>,
    /// What the device last reported (`null` when nothing).
    pub reported: Value,
}

/// The IoT data plane, as far as a push needs it.
pub trait Shadows: Sync {
    /// The shadow's `desired` section (and `reported`); `Ok(None)` when the shadow does not exist.
    fn desired(
        &self,
        thing: &ThingName,
        shadow: Option<&ShadowName>,
    ) -> impl Future<Output = Result<Option<DesiredState>, ServiceError>> + Send;

    /// Sends an update document (`{"state":{"desired":..},"clientToken":..}`).
    fn update(
        &self,
        thing: &ThingName,
        shadow: Option<&ShadowName>,
        document: &str,
    ) -> impl Future<Output = Result<(), ServiceError>> + Send;
}

/// One thing that could not be pushed, with the service's error code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Failure {
    pub thing_name: String,
    pub code: String,
    pub message: String,
}

impl Failure {
    /// A thing (or a target source) given up on after a service's final error: the service's error code (else the
    /// kind of fault), and the operation with what the service said, cause by cause.
    pub fn from_error(thing_name: impl Into<String>, e: &ServiceError) -> Self {
        let mut message = format!("{}: {}", e.operation, e.source);
        let mut cause = e.source.source();
        while let Some(c) = cause {
            let text = c.to_string();
            // Some errors print their cause already.
            if !message.contains(&text) {
                message.push_str(": ");
                message.push_str(&text);
            }
            cause = c.source();
        }
        Self { thing_name: thing_name.into(), code: e.code.clone().unwrap_or_else(|| format!("{:?}", e.kind)), message }
    }
}

/// What a thing's `desired` held of the pushed keys before a rollout's push changed it (an absent key is `null`),
/// recorded before the update: rollback sends it back, judging reads the things it lists.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JournalEntry {
    pub thing_name: String,
    /// The rollout's phase (1-based).
    pub phase: u32,
    pub values: Value,
}

impl JournalEntry {
    /// Its key among the push's entries: sorted by phase, then thing.
    pub fn key(&self) -> String {
        format!("{:03}#{}", self.phase, self.thing_name)
    }
}

/// One page of recorded previous values, and the key to read the next page after.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JournalPage {
    pub entries: Vec<JournalEntry>,
    pub next: Option<String>,
}

/// Where a rollout's previous values go: the push's journal, `at` ([`JournalRef`]: its id and its shards).
pub trait Journal: Sync {
    /// Records `entry` unless one is recorded for that thing already (the first reading is what the thing held),
    /// expiring at `expires_at` (epoch s, [`retention::Kept::expires_at`]) when the store keeps pushes for a time.
    fn record_previous(
        &self,
        at: JournalRef<'_>,
        expires_at: u64,
        entry: &JournalEntry,
    ) -> impl Future<Output = Result<(), ServiceError>> + Send;
    /// One page of the entries of one phase (1-based), or of all, after the key `after`, from every shard.
    fn previous_page(
        &self,
        at: JournalRef<'_>,
        phase: Option<u32>,
        after: Option<&str>,
    ) -> impl Future<Output = Result<JournalPage, ServiceError>> + Send;
    /// One entry by its key ([`JournalEntry::key`]).
    fn previous(
        &self,
        at: JournalRef<'_>,
        key: &str,
    ) -> impl Future<Output = Result<Option<JournalEntry>, ServiceError>> + Send;
}

/// An operator's request to a running push, kept on its record until a segment or an arrival carries it out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Control {
    Pause,
    Abort,
    AbortRollback,
}

/// A claim on one segment of a push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub segment: u64,
    /// The claimant's token: every later write of the segment is conditional on it.
    pub owner: String,
    pub lease_until_ms: u64,
    /// Taking over a segment whose holder died (its lease ran out), rather than starting the next one.
    pub takeover: bool,
}

/// Where push records go: every port of the push store together. Implemented for any store that implements each:
/// [`PushRecords`] (a push's record: its claims, segments and controls), [`PushLists`] (its failures and
/// conflicts) and [`Retention`] (how long its items are kept). Its journal ([`Journal`]) and the board of senders
/// ([`quota::Senders`]) are ports of their own.
pub trait PushStore: PushRecords + PushLists + Retention {}

impl<T: PushRecords + PushLists + Retention> PushStore for T {}

/// A push's record and plan: created together, then claimed, renewed, recorded and controlled by conditional writes.
pub trait PushRecords: Sync {
    /// Creates a new push, its definition and its record together (both or neither), its segment 1 claimed as the
    /// record says; `Ok(false)` when the push id was used before.
    fn create(
        &self,
        definition: &PushDefinition,
        record: &PushRecord,
    ) -> impl Future<Output = Result<bool, ServiceError>> + Send;
    /// The push's definition and record.
    fn load(&self, push_id: &str) -> impl Future<Output = Result<Option<StoredPush>, ServiceError>> + Send;
    /// The push's record alone: for an arrival that holds its definition already.
    fn load_record(&self, push_id: &str) -> impl Future<Output = Result<Option<PushRecord>, ServiceError>> + Send;
    /// Claims a segment, conditionally: the next one after a release, or the current one once its lease ran out
    /// (and it was taken over fewer than [`lifecycle::MAX_TAKEOVERS`] times). `Ok(false)` when another claimant won.
    fn claim(
        &self,
        push_id: &str,
        claim: &Claim,
        now_ms: u64,
    ) -> impl Future<Output = Result<bool, ServiceError>> + Send;
    /// Extends the holder's lease; `Ok(None)` when it no longer holds the segment, else the control an operator left
    /// on the record (if any).
    fn renew(
        &self,
        push_id: &str,
        segment: u64,
        owner: &str,
        lease_until_ms: u64,
    ) -> impl Future<Output = Result<Option<Option<Control>>, ServiceError>> + Send;
    /// Records a segment and releases it, if `owner` still holds it: writes `next`'s counts, cursor, state, phase and
    /// lease (when the sweeper may wake the push if no next segment claimed it), with `handedOff` = `next.segment`.
    /// Returns the record as written (with any control an operator added meanwhile), `Ok(None)` when the owner
    /// does not hold the segment.
    fn finish_segment(
        &self,
        next: &PushRecord,
        owner: &str,
    ) -> impl Future<Output = Result<Option<PushRecord>, ServiceError>> + Send;
    /// Leaves an operator's pause or abort on a push that is not finished; `Ok(false)` when its state refuses it.
    fn request_control(
        &self,
        push_id: &str,
        control: Control,
    ) -> impl Future<Output = Result<bool, ServiceError>> + Send;
    /// Carries out the control on the record of a push that no live segment holds (released, or its holder's lease
    /// ran out before `now_ms`): writes `next`'s state, phase, cursor, lease, reason and `recheck`, removes the control.
    /// `Ok(false)` when the record moved on meanwhile.
    fn apply_control(
        &self,
        next: &PushRecord,
        control: Control,
        now_ms: u64,
    ) -> impl Future<Output = Result<bool, ServiceError>> + Send;
    /// Resumes a paused push: `Ok(false)` when it is not paused.
    fn resume(
        &self,
        push_id: &str,
        state: PushState,
        lease_until_ms: u64,
    ) -> impl Future<Output = Result<bool, ServiceError>> + Send;
    /// Marks a push that cannot go on (its segment kept dying): the sweeper stops waking it.
    fn stall(&self, push_id: &str, segment: u64, reason: &str)
    -> impl Future<Output = Result<(), ServiceError>> + Send;
    /// Restarts a stalled push as `next` says (released, its takeovers reset, back in the sweeper's index):
    /// `Ok(false)` when it is no longer stalled at `next.segment`.
    fn unstall(&self, next: &PushRecord) -> impl Future<Output = Result<bool, ServiceError>> + Send;
    /// Pushes not complete whose lease ran out before `now_ms`: a segment that died, or a hand-off nobody picked up.
    fn stale(&self, now_ms: u64, limit: usize) -> impl Future<Output = Result<Vec<String>, ServiceError>> + Send;
    /// How many of this store's requests the service refused for throughput so far, in this process (each was
    /// retried): a running count, read before and after a segment.
    fn throttled(&self) -> u64 {
        0
    }
}

/// The things a push could not push (failures) and those a rollback left alone (conflicts), spread over the shards
/// of its journal.
pub trait PushLists: Sync {
    /// Records failed things (once each, each in its shard of the push's journal `at`), expiring at `expires_at`
    /// (epoch s, [`retention::Kept::expires_at`]) when the store keeps pushes for a time.
    fn add_failures(
        &self,
        at: JournalRef<'_>,
        expires_at: u64,
        failures: &[Failure],
    ) -> impl Future<Output = Result<(), ServiceError>> + Send;
    /// Up to `limit` failures, from every shard.
    fn failures(
        &self,
        at: JournalRef<'_>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Failure>, ServiceError>> + Send;
    /// Records things a rollback left alone (once each).
    fn add_conflicts(
        &self,
        at: JournalRef<'_>,
        expires_at: u64,
        conflicts: &[Failure],
    ) -> impl Future<Output = Result<(), ServiceError>> + Send;
    /// Up to `limit` conflicts, from every shard.
    fn conflicts(
        &self,
        at: JournalRef<'_>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Failure>, ServiceError>> + Send;
}

/// How long a push's items (record, plan, journal, failures, conflicts) are kept.
pub trait Retention: Sync {
    /// How long the store keeps a push's items past now (seconds): `None` when they never expire.
    fn retention_s(&self) -> Option<u64> {
        None
    }
    /// Keeps `record`'s items (record, plan, journal, failures, conflicts) as [`retention::Kept::decide`] says at
    /// `now_s`, `open` while the push is not final: marks the record's `keepingTo`, rewrites every item's
    /// `expiresAt` (each journal partition paced under `partition_wps` write units a second), then sets
    /// `keptUntil`. Returns the record's marks as they now stand. With no time limit: [`Retention::extend_within`].
    fn extend(
        &self,
        record: &PushRecord,
        now_s: u64,
        open: bool,
        partition_wps: u32,
    ) -> impl Future<Output = Result<retention::Kept, ServiceError>> + Send {
        self.extend_within(record, now_s, open, partition_wps, None)
    }
    /// [`Retention::extend`], its walk stopped once `within` has passed: it then leaves where it got on the record
    /// ([`retention::Through`]) and returns marks with `keepingTo` still past `keptUntil`
    /// ([`retention::Kept::walking`]); the next call resumes it from there.
    fn extend_within(
        &self,
        record: &PushRecord,
        now_s: u64,
        open: bool,
        partition_wps: u32,
        within: Option<std::time::Duration>,
    ) -> impl Future<Output = Result<retention::Kept, ServiceError>> + Send {
        let _ = (now_s, open, partition_wps, within);
        std::future::ready(Ok(record.kept))
    }
}

/// Wakes a push up in another invocation: the next segment after a hand-off, or a push the sweeper found stale.
pub trait HandOff: Sync {
    /// Wakes the push for `segment`, after `delay_s` seconds (at most 900: a durable wait that runs nothing).
    fn hand_off(
        &self,
        push_id: &str,
        segment: u64,
        delay_s: u32,
    ) -> impl Future<Output = Result<(), ServiceError>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::FaultKind;

    #[derive(Debug, thiserror::Error)]
    #[error("service error")]
    struct Outer(#[source] Inner);

    #[derive(Debug, thiserror::Error)]
    #[error("ResourceNotFoundException: No thing named a")]
    struct Inner;

    #[test]
    fn a_failure_keeps_the_code_and_what_the_service_said() {
        let e = ServiceError::new(
            "UpdateThingShadow",
            FaultKind::Rejected,
            Some("ResourceNotFoundException".into()),
            Outer(Inner),
        );
        let failure = Failure::from_error("a", &e);
        assert_eq!(failure.thing_name, "a");
        assert_eq!(failure.code, "ResourceNotFoundException");
        assert_eq!(failure.message, "UpdateThingShadow: service error: ResourceNotFoundException: No thing named a");
        // Without a code, the kind of fault.
        let e = ServiceError::new("ListThingsInThingGroup", FaultKind::Transient, None, "timed out");
        let failure = Failure::from_error("thingGroup:prod", &e);
        assert_eq!(
            (failure.code.as_str(), failure.message.as_str()),
            ("Transient", "ListThingsInThingGroup: timed out")
        );
    }
}
