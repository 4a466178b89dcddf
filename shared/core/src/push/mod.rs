//! Pushing desired settings to a fleet: the request, its targets, the pacing engine, and the record it leaves.

mod engine;
mod request;
mod targets;

pub use engine::{Pace, SegmentOutcome, ThingOutcome, run_segment};
pub use request::{PushPlan, PushRequestError, Targets, validate_request};
pub use targets::{Cursor, Page, Registry, Source, sources_for};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::names::{ShadowName, ThingName};
use crate::store::ServiceError;

/// The IoT data plane, as far as a push needs it.
pub trait Shadows: Sync {
    /// The shadow's `desired` section; `Ok(None)` when the shadow (or its desired section) does not exist.
    fn desired(
        &self,
        thing: &ThingName,
        shadow: Option<&ShadowName>,
    ) -> impl Future<Output = Result<Option<Value>, ServiceError>> + Send;

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

/// A push's record: what was asked, how far it got, and the totals so far. Kept in the push table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PushRecord {
    pub push_id: String,
    pub shadow_name: Option<String>,
    pub dry_run: bool,
    /// The validated request, so that every segment of the push works from the same plan.
    pub request: Value,
    /// The resolved target sources, in the order they are walked.
    pub sources: Vec<Source>,
    /// The last segment that claimed the push; each hand-off starts the next.
    pub segment: u64,
    /// The last segment that finished (and handed the rest on, unless the push is complete).
    pub handed_off: u64,
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
    pub failures: Vec<Failure>,
    /// How many failures the record holds beyond those listed here.
    pub failures_not_listed: u64,
    pub started_at: u64,
    pub finished_at: Option<u64>,
    pub requests_per_second: f64,
    pub throttled: u64,
}

impl PushRecord {
    pub fn summary(&self, failures: Vec<Failure>, cap: usize, now_ms: u64) -> PushSummary {
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
            failures_not_listed: self.failed.saturating_sub(shown.len() as u64),
            failures: shown,
            started_at: self.started_at,
            finished_at: self.finished_at,
            requests_per_second: (self.requests as f64 / seconds * 10.0).round() / 10.0,
            throttled: self.throttled,
        }
    }
}

/// Where push records go.
pub trait PushStore: Sync {
    /// Creates the record of a new push, its segment 1 leased until `lease_until_ms`; `Ok(false)` when the push id
    /// was used before.
    fn create(
        &self,
        record: &PushRecord,
        lease_until_ms: u64,
    ) -> impl Future<Output = Result<bool, ServiceError>> + Send;
    fn load(&self, push_id: &str) -> impl Future<Output = Result<Option<PushRecord>, ServiceError>> + Send;
    /// Claims segment `segment` (the previous must be `segment - 1`, or `segment` itself with its lease run out):
    /// `Ok(false)` when another delivery claimed it, so a duplicate hand-off message does nothing.
    fn claim(
        &self,
        push_id: &str,
        segment: u64,
        lease_until_ms: u64,
        now_ms: u64,
    ) -> impl Future<Output = Result<bool, ServiceError>> + Send;
    /// Adds a segment's counts and moves the cursor, if `segment` still holds the claim; returns the totals.
    fn finish_segment(
        &self,
        push_id: &str,
        segment: u64,
        outcome: &SegmentOutcome,
        finished_at_ms: Option<u64>,
    ) -> impl Future<Output = Result<PushRecord, ServiceError>> + Send;
    fn add_failures(
        &self,
        push_id: &str,
        failures: &[Failure],
    ) -> impl Future<Output = Result<(), ServiceError>> + Send;
    fn failures(&self, push_id: &str, limit: usize) -> impl Future<Output = Result<Vec<Failure>, ServiceError>> + Send;
}

/// Where the rest of a push goes when its invocation runs out of time.
pub trait HandOff: Sync {
    fn hand_off(&self, push_id: &str, segment: u64) -> impl Future<Output = Result<(), ServiceError>> + Send;
}
