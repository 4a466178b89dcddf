//! A push's record, split by concern: what the push is ([`PushDefinition`], written once), where it stands
//! ([`Status`], with its [`Counts`]) and who holds it ([`Holder`]). The definition and the hot record are kept apart
//! so that the writes a running push makes often (lease renewals, progress) touch only the small part.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::retention::Kept;
use super::rollout::{PhaseCounts, RollbackCounts};
use super::{Control, Cursor, Failure, JournalRef, PushPlan, Source};

/// A push's state, as its record and its answer give it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PushState {
    /// Pushing the current phase.
    #[default]
    Running,
    /// Waiting after the current phase's updates, then judging it.
    Baking,
    /// Stopped by an operator until resumed; the cursor and phase are kept.
    Paused,
    /// Stopped for good, keeping what was pushed.
    Aborted,
    /// Putting the updated things back.
    RollingBack,
    RolledBack,
    Complete,
}

impl PushState {
    /// The state's name, as records, answers and the CLI give it (its serde name).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Baking => "baking",
            Self::Paused => "paused",
            Self::Aborted => "aborted",
            Self::RollingBack => "rollingBack",
            Self::RolledBack => "rolledBack",
            Self::Complete => "complete",
        }
    }

    /// No segment runs again.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Aborted | Self::RolledBack | Self::Complete)
    }
}

/// What a push is: its validated request and the target sources resolved at its start. Written once, when the
/// push is created; every segment works from it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PushDefinition {
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
}

impl PushDefinition {
    /// The plan the push was started with (its validated request), or why it cannot be read.
    pub fn plan(&self) -> Result<PushPlan, String> {
        serde_json::from_value(self.request.clone())
            .map_err(|e| format!("push {} has an unreadable plan: {e}", self.push_id))
    }
}

/// The totals of a push's walks so far.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Counts {
    /// Things walked.
    pub targets: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub failed: u64,
    /// Shadow requests made (reads and updates).
    pub requests: u64,
    /// Shadow requests answered "slow down".
    pub throttled: u64,
    /// DynamoDB requests of the push's segments refused for throughput (ProvisionedThroughputExceeded, throttling,
    /// items left unprocessed), each retried.
    pub store_throttled: u64,
}

/// Where a push stands: its counts, state, phase and the cursor its next segment starts from. What the push's
/// answer and the CLI show.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Status {
    #[serde(flatten)]
    pub counts: Counts,
    /// Where the next segment starts; `None` once complete.
    pub cursor: Option<Cursor>,
    pub complete: bool,
    /// Epoch milliseconds.
    pub started_at: u64,
    pub finished_at: Option<u64>,
    pub state: PushState,
    /// The rollout's current phase (1-based; 1 without a rollout).
    pub phase: u32,
    /// Per-phase counts (empty without a rollout).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub phases: Vec<PhaseCounts>,
    /// Epoch ms: while baking, when the current phase is judged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bake_until: Option<u64>,
    /// An operator's pause or abort, not yet carried out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub control: Option<Control>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub abort_reason: Option<String>,
    /// The next segment treats every thing as uncertain: the last holder died before it could record (its push was
    /// paused or aborted meanwhile).
    pub recheck: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollback: Option<RollbackCounts>,
}

impl Default for Status {
    fn default() -> Self {
        Self {
            counts: Counts::default(),
            cursor: None,
            complete: false,
            started_at: 0,
            finished_at: None,
            state: PushState::Running,
            phase: 1,
            phases: Vec::new(),
            bake_until: None,
            control: None,
            abort_reason: None,
            recheck: false,
            rollback: None,
        }
    }
}

/// Who holds a push: the segment chain's claim and lease, and what became of holders that died.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Holder {
    /// The last segment that claimed the push; each hand-off starts the next.
    pub segment: u64,
    /// The last segment that finished (and handed the rest on, unless the push is complete).
    pub handed_off: u64,
    /// Who holds the current segment (a random token per claim); kept after the segment is released, so that a
    /// holder whose last write's answer was lost can tell the write was its own.
    pub owner: String,
    /// Epoch ms. While a segment runs: its claim holds until then (renewed as it runs). After a release: by then the
    /// next segment should have claimed the push, or the sweeper wakes it up again.
    pub lease_until: u64,
    /// Epoch ms when the current segment was first claimed.
    pub segment_started_at: u64,
    /// How many times the current segment was taken over from a holder that died.
    pub takeovers: u32,
    /// Why the push stopped without completing (a segment that kept dying); the sweeper leaves it alone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stalled: Option<String>,
}

/// A push's hot record: where it stands and who holds it. Every claim, renewal and segment writes it; the push's
/// [`PushDefinition`] is kept apart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PushRecord {
    pub push_id: String,
    /// How many partitions the push's journal, failures and conflicts are spread over, decided when the push is
    /// created ([`super::journal::shard_count`]); 0 (a record written before sharding): all in the push's own
    /// partition. Kept beside the id: every reader of the push's items needs both.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub journal_shards: u32,
    #[serde(flatten)]
    pub status: Status,
    #[serde(flatten)]
    pub holder: Holder,
    /// How long the push's items are kept (`keptUntil`, `keepingTo`): [`super::retention`].
    #[serde(flatten)]
    pub kept: Kept,
}

/// A push as stored: what it is, and its record.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredPush {
    pub definition: PushDefinition,
    pub record: PushRecord,
}

/// What a push returns: its status as the record has it, with failures capped for the response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PushSummary {
    pub push_id: String,
    pub shadow_name: Option<String>,
    pub dry_run: bool,
    #[serde(flatten)]
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stalled: Option<String>,
    pub failures: Vec<Failure>,
    /// How many failures the record holds beyond those listed here.
    pub failures_not_listed: u64,
    pub requests_per_second: f64,
    /// Things a rollback left alone because someone changed them since (capped like `failures`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub conflicts: Vec<Failure>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl PushRecord {
    /// Where the push's journal, failures and conflicts are.
    pub fn journal(&self) -> JournalRef<'_> {
        JournalRef::new(&self.push_id, self.journal_shards)
    }

    /// Whether the push recorded failed things (its pushes, or its rollback's): the summary lists them.
    pub fn has_failures(&self) -> bool {
        self.status.counts.failed > 0 || self.status.rollback.as_ref().is_some_and(|r| r.failed > 0)
    }

    /// Whether its rollback left things alone (another writer changed them): the summary lists them.
    pub fn has_conflicts(&self) -> bool {
        self.status.rollback.as_ref().is_some_and(|r| r.conflicts > 0)
    }

    /// The push's answer: its status, with at most `cap` of its failures and conflicts listed.
    pub fn summary(
        &self,
        plan: &PushPlan,
        failures: Vec<Failure>,
        conflicts: Vec<Failure>,
        cap: usize,
        now_ms: u64,
    ) -> PushSummary {
        let shown: Vec<Failure> = failures.into_iter().take(cap).collect();
        let status = &self.status;
        let end = status.finished_at.unwrap_or(now_ms);
        let seconds = (end.saturating_sub(status.started_at) as f64 / 1000.0).max(0.001);
        PushSummary {
            push_id: self.push_id.clone(),
            shadow_name: plan.shadow_name.as_ref().map(|s| s.to_string()),
            dry_run: plan.dry_run,
            status: status.clone(),
            stalled: self.holder.stalled.clone(),
            failures_not_listed: status.counts.failed.saturating_sub(shown.len() as u64),
            failures: shown,
            requests_per_second: (status.counts.requests as f64 / seconds * 10.0).round() / 10.0,
            conflicts: conflicts.into_iter().take(cap).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::push::validate_request;
    use serde_json::json;

    fn record() -> PushRecord {
        PushRecord {
            push_id: "p1".into(),
            journal_shards: 4,
            status: Status {
                counts: Counts {
                    targets: 10,
                    updated: 7,
                    unchanged: 2,
                    failed: 1,
                    requests: 20,
                    throttled: 3,
                    store_throttled: 5,
                },
                cursor: Some(Cursor { source: 1, offset: 4, ..Cursor::default() }),
                started_at: 1_000,
                state: PushState::Baking,
                phase: 2,
                phases: vec![PhaseCounts { percent: 10.0, targets: 1, ..PhaseCounts::default() }],
                bake_until: Some(9_000),
                rollback: Some(RollbackCounts { restored: 1, ..RollbackCounts::default() }),
                ..Status::default()
            },
            holder: Holder {
                segment: 4,
                handed_off: 3,
                owner: "o".into(),
                lease_until: 5_000,
                takeovers: 1,
                ..Holder::default()
            },
            kept: Kept::default(),
        }
    }

    /// The record is one flat document (the hot item's attributes): every concern's fields side by side, under the
    /// names the table and the CLI know.
    #[test]
    fn a_state_name_is_its_serde_name() {
        use PushState::*;
        for state in [Running, Baking, Paused, Aborted, RollingBack, RolledBack, Complete] {
            assert_eq!(serde_json::to_value(state).ok(), Some(json!(state.as_str())), "{state:?}");
            assert_eq!(serde_json::from_value::<PushState>(json!(state.as_str())).ok(), Some(state));
        }
    }

    #[test]
    fn the_record_is_flat_and_reads_back_whole() {
        let r = record();
        let json = serde_json::to_value(&r).expect("serializable");
        for key in ["pushId", "targets", "throttled", "cursor", "state", "phases", "segment", "handedOff", "owner"] {
            assert!(json.get(key).is_some(), "{key} missing from {json}");
        }
        assert!(json.get("status").is_none() && json.get("counts").is_none() && json.get("holder").is_none());
        assert!(json.get("request").is_none() && json.get("sources").is_none(), "the plan is not in the record");
        let back: PushRecord = serde_json::from_value(json).expect("reads back");
        assert_eq!(back, r);
    }

    /// A record written before the split (one item with the plan in it) reads as a record, its plan as a definition.
    #[test]
    fn a_record_of_one_item_reads_as_both() {
        let old = json!({"pushId": "p1", "shadowName": "cfg", "dryRun": false, "request": {"pushId": "p1"},
                         "planDigest": "d", "sources": [{"kind": "things"}], "segment": 2, "handedOff": 2,
                         "owner": "o", "leaseUntil": 7, "cursor": null, "targets": 3, "updated": 3, "unchanged": 0,
                         "failed": 0, "requests": 3, "throttled": 0, "complete": true, "startedAt": 1,
                         "finishedAt": 9, "state": "complete"});
        let record: PushRecord = serde_json::from_value(old.clone()).expect("the record part");
        assert_eq!((record.status.counts.updated, record.holder.handed_off), (3, 2));
        assert_eq!((record.status.state, record.status.phase), (PushState::Complete, 1));
        let definition: PushDefinition = serde_json::from_value(old).expect("the definition part");
        assert_eq!((definition.shadow_name.as_deref(), definition.sources.len()), (Some("cfg"), 1));
    }

    /// The summary carries the record's status as it is (no field copied one by one), the plan's identity, and the
    /// failures capped.
    #[test]
    fn the_summary_carries_the_status() {
        let plan = validate_request(
            &json!({"pushId": "p1", "shadowName": "cfg", "desired": {"a": 1}, "targets": {"thingGroup": "g"}}),
            400,
            None,
        )
        .expect("a valid request");
        let r = record();
        let failure = |t: &str| Failure { thing_name: t.into(), code: "c".into(), message: "m".into() };
        let summary = r.summary(&plan, vec![failure("a"), failure("b")], Vec::new(), 1, 3_000);
        assert_eq!(summary.status, r.status);
        assert_eq!((summary.shadow_name.as_deref(), summary.failures.len()), (Some("cfg"), 1));
        assert_eq!(summary.failures_not_listed, 0, "1 failed, 1 listed");
        assert_eq!(summary.requests_per_second, 10.0, "20 requests in 2 s");
        let json = serde_json::to_value(&summary).expect("serializable");
        assert_eq!((json["updated"].clone(), json["state"].clone()), (json!(7), json!("baking")));
    }

    /// A status read from a partial document (an older record, the CLI's view) takes the defaults.
    #[test]
    fn a_partial_status_takes_the_defaults() {
        let status: Status = serde_json::from_value(json!({"targets": 5, "complete": false})).expect("lenient");
        assert_eq!((status.counts.targets, status.phase, status.state), (5, 1, PushState::Running));
    }
}
