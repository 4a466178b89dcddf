//! What an invocation answers: the push as it stands, with its first failures and conflicts; and the totals logged
//! at each segment's end.

use shadow_core::push::quota::Senders;
use shadow_core::push::{HandOff, Journal, PushPlan, PushRecord, PushStore, PushSummary, Registry, Shadows};
use tokio::time::Instant;

use super::{PushError, Services};

/// Failures listed in a response; the record keeps them all.
const RESPONSE_FAILURES: usize = 100;

impl<S: Shadows, R: Registry, P: PushStore + Journal + Senders, H: HandOff> Services<S, R, P, H> {
    pub(super) fn log_totals(&self, totals: &PushRecord, dry_run: bool) {
        tracing::info!(
            push = %totals.push_id,
            segment = totals.holder.segment,
            state = ?totals.status.state,
            phase = totals.status.phase,
            targets = totals.status.counts.targets,
            updated = totals.status.counts.updated,
            unchanged = totals.status.counts.unchanged,
            failed = totals.status.counts.failed,
            throttled = totals.status.counts.throttled,
            complete = totals.status.complete,
            dry_run,
            "push summary"
        );
    }

    pub(super) async fn summary(
        &self,
        record: &PushRecord,
        plan: &PushPlan,
        deadline: Instant,
    ) -> Result<PushSummary, PushError> {
        let failures = if record.has_failures() {
            self.with_retries(deadline, || self.store.failures(record.journal(), RESPONSE_FAILURES)).await?
        } else {
            Vec::new()
        };
        let conflicts = if record.has_conflicts() {
            self.with_retries(deadline, || self.store.conflicts(record.journal(), RESPONSE_FAILURES)).await?
        } else {
            Vec::new()
        };
        Ok(record.summary(plan, failures, conflicts, RESPONSE_FAILURES, self.now_ms()))
    }
}
