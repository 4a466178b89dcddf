//! Pushing desired settings to a fleet: the request, its targets, the pacing engine, and the record it leaves.

mod engine;
pub mod journal;
pub mod lifecycle;
pub mod machine;
pub mod quota;
mod request;
pub mod rollout;
mod targets;
mod walker;

pub use engine::{
    JournalOutcome, JournalWalk, Lease, NoJournal, Pace, SegmentOutcome, Start, ThingOutcome, run_journal_segment,
    run_phase_segment, run_segment,
};
pub use journal::JournalRef;
pub use request::{PushPlan, PushRequestError, Targets, push_id_problem, validate_request};
pub use rollout::{PhaseCounts, PushState, RollbackCounts};
pub use targets::{Cursor, Page, Registry, Source, check_sources, sources_for};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::names::{ShadowName, ThingName};
use crate::store::ServiceError;

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
pub struct Previous {
    pub thing_name: String,
    /// The rollout's phase (1-based).
    pub phase: u32,
    pub values: Value,
}

impl Previous {
    /// Its key among the push's entries: sorted by phase, then thing.
    pub fn key(&self) -> String {
        format!("{:03}#{}", self.phase, self.thing_name)
    }
}

/// One page of recorded previous values, and the key to read the next page after.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JournalPage {
    pub entries: Vec<Previous>,
    pub next: Option<String>,
}

/// Where a rollout's previous values go: the push's journal, `at` ([`JournalRef`]: its id and its shards).
pub trait Journal: Sync {
    /// Records `entry` unless one is recorded for that thing already (the first reading is what the thing held).
    fn record_previous(
        &self,
        at: JournalRef<'_>,
        started_at_ms: u64,
        entry: &Previous,
    ) -> impl Future<Output = Result<(), ServiceError>> + Send;
    /// One page of the entries of one phase (1-based), or of all, after the key `after`, from every shard.
    fn previous_page(
        &self,
        at: JournalRef<'_>,
        phase: Option<u32>,
        after: Option<&str>,
    ) -> impl Future<Output = Result<JournalPage, ServiceError>> + Send;
    /// One entry by its key ([`Previous::key`]).
    fn previous(
        &self,
        at: JournalRef<'_>,
        key: &str,
    ) -> impl Future<Output = Result<Option<Previous>, ServiceError>> + Send;
}

/// An operator's request to a running push, kept on its record until a segment or an arrival carries it out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Control {
    Pause,
    Abort,
    AbortRollback,
}

/// A push's record: what was asked, how far it got, and the totals so far. Kept in the push table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PushRecord {
    pub push_id: String,
    pub shadow_name: Option<String>,
    pub dry_run: bool,
    /// The validated request, so that every segment of the push works from the same plan.
    pub request: Value,
    /// A digest of the validated plan: the same push id with another request is refused.
    #[serde(default)]
    pub plan_digest: String,
    /// The resolved target sources, in the order they are walked.
    pub sources: Vec<Source>,
    /// The last segment that claimed the push; each hand-off starts the next.
    pub segment: u64,
    /// The last segment that finished (and handed the rest on, unless the push is complete).
    pub handed_off: u64,
    /// Who holds the current segment (a random token per claim); kept after the segment is released, so that a
    /// holder whose last write's answer was lost can tell the write was its own.
    #[serde(default)]
    pub owner: String,
    /// Epoch ms. While a segment runs: its claim holds until then (renewed as it runs). After a release: by then the
    /// next segment should have claimed the push, or the sweeper wakes it up again.
    #[serde(default)]
    pub lease_until: u64,
    /// Epoch ms when the current segment was first claimed.
    #[serde(default)]
    pub segment_started_at: u64,
    /// How many times the current segment was taken over from a holder that died.
    #[serde(default)]
    pub takeovers: u32,
    /// Why the push stopped without completing (a segment that kept dying); the sweeper leaves it alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stalled: Option<String>,
    /// Where the next segment starts; `None` once complete.
    pub cursor: Option<Cursor>,
    pub targets: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub failed: u64,
    pub requests: u64,
    pub throttled: u64,
    pub complete: bool,
    /// Epoch milliseconds.
    pub started_at: u64,
    pub finished_at: Option<u64>,
    #[serde(default)]
    pub state: PushState,
    /// The rollout's current phase (1-based; 1 without a rollout).
    #[serde(default = "first_phase")]
    pub phase: u32,
    /// Per-phase counts (empty without a rollout).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub phases: Vec<PhaseCounts>,
    /// Epoch ms: while baking, when the current phase is judged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bake_until: Option<u64>,
    /// An operator's pause or abort, not yet carried out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control: Option<Control>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort_reason: Option<String>,
    /// The next segment treats every thing as uncertain: the last holder died before it could record (its push was
    /// paused or aborted meanwhile).
    #[serde(default)]
    pub recheck: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<RollbackCounts>,
    /// How many partitions the push's journal, failures and conflicts are spread over, decided when the push is
    /// created ([`journal::shard_count`]); 0 (a record written before sharding): all in the push's own partition.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub journal_shards: u32,
    /// DynamoDB requests of the push's segments refused for throughput (ProvisionedThroughputExceeded, throttling,
    /// items left unprocessed), each retried.
    #[serde(default)]
    pub store_throttled: u64,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn first_phase() -> u32 {
    1
}

/// What a push returns (and what its record says), with failures capped for the response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PushSummary {
    pub push_id: String,
    pub shadow_name: Option<String>,
    pub dry_run: bool,
    pub targets: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub failed: u64,
    pub complete: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stalled: Option<String>,
    pub failures: Vec<Failure>,
    /// How many failures the record holds beyond those listed here.
    pub failures_not_listed: u64,
    pub started_at: u64,
    pub finished_at: Option<u64>,
    pub requests_per_second: f64,
    pub throttled: u64,
    pub state: PushState,
    pub phase: u32,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub phases: Vec<PhaseCounts>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bake_until: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub control: Option<Control>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub abort_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollback: Option<RollbackCounts>,
    /// Things a rollback left alone because someone changed them since (capped like `failures`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub conflicts: Vec<Failure>,
}

impl PushRecord {
    /// Where the push's journal, failures and conflicts are.
    pub fn journal(&self) -> JournalRef<'_> {
        JournalRef::new(&self.push_id, self.journal_shards)
    }

    /// The plan the push was started with (its validated request), or why it cannot be read.
    pub fn plan(&self) -> Result<PushPlan, String> {
        serde_json::from_value(self.request.clone())
            .map_err(|e| format!("push {} has an unreadable plan: {e}", self.push_id))
    }

    pub fn summary(&self, failures: Vec<Failure>, conflicts: Vec<Failure>, cap: usize, now_ms: u64) -> PushSummary {
        let shown: Vec<Failure> = failures.into_iter().take(cap).collect();
        let end = self.finished_at.unwrap_or(now_ms);
        let seconds = (end.saturating_sub(self.started_at) as f64 / 1000.0).max(0.001);
        PushSummary {
            push_id: self.push_id.clone(),
            shadow_name: self.shadow_name.clone(),
            dry_run: self.dry_run,
            targets: self.targets,
            updated: self.updated,
            unchanged: self.unchanged,
            failed: self.failed,
            complete: self.complete,
            stalled: self.stalled.clone(),
            failures_not_listed: self.failed.saturating_sub(shown.len() as u64),
            failures: shown,
            started_at: self.started_at,
            finished_at: self.finished_at,
            requests_per_second: (self.requests as f64 / seconds * 10.0).round() / 10.0,
            throttled: self.throttled,
            state: self.state,
            phase: self.phase,
            phases: self.phases.clone(),
            bake_until: self.bake_until,
            control: self.control,
            abort_reason: self.abort_reason.clone(),
            rollback: self.rollback.clone(),
            conflicts: conflicts.into_iter().take(cap).collect(),
        }
    }
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

/// Where push records go.
pub trait PushStore: Sync {
    /// Creates the record of a new push, its segment 1 claimed as the record says; `Ok(false)` when the push id
    /// was used before.
    fn create(&self, record: &PushRecord) -> impl Future<Output = Result<bool, ServiceError>> + Send;
    fn load(&self, push_id: &str) -> impl Future<Output = Result<Option<PushRecord>, ServiceError>> + Send;
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
    /// Records failed things (once each, each in its shard of the push's journal `at`), expiring with the push that
    /// started at `started_at_ms`.
    fn add_failures(
        &self,
        at: JournalRef<'_>,
        started_at_ms: u64,
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
        started_at_ms: u64,
        conflicts: &[Failure],
    ) -> impl Future<Output = Result<(), ServiceError>> + Send;
    /// Up to `limit` conflicts, from every shard.
    fn conflicts(
        &self,
        at: JournalRef<'_>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Failure>, ServiceError>> + Send;
    /// How many of this store's requests the service refused for throughput so far, in this process (each was
    /// retried): a running count, read before and after a segment.
    fn throttled(&self) -> u64 {
        0
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
    use crate::store::FaultKind;

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
