//! A push's retention: extending how long its items (record, plan, journal) are kept, resuming a walk of them left
//! under way, the `expiresAt` its items are written with, and refusing what needs items that may have lapsed.

use std::time::Duration;

use shadow_core::push::machine::{self, Action};
use shadow_core::push::quota::Senders;
use shadow_core::push::rollout::OnAbort;
use shadow_core::push::{HandOff, Journal, PushPlan, PushRecord, PushStore, Registry, Shadows};
use tokio::time::Instant;

use super::error::refusal;
use super::{PushError, Services};
use crate::config::Config;

impl<S: Shadows, R: Registry, P: PushStore + Journal + Senders, H: HandOff> Services<S, R, P, H> {
    /// Keeps the push's items (record, plan, journal) at least the retention past now, when it is short of that or
    /// an extension stopped or died midway ([`shadow_core::push::retention`]): after each segment's record and each
    /// pause, resume or abort, once written; and on an arrival at a push no segment follows (ended, paused,
    /// stalled) that has a walk under way.
    /// The walk stops before the invocation's deadline, leaving time for what follows it (the hand-off, the answer),
    /// and leaves where it got beside the record: the next transition resumes it, and a push no segment follows is
    /// woken (a hand-off message) to resume it.
    /// Not extended (the store failing past the deadline): the push goes on, and its next transition tries again,
    /// finishing a walk left marked on the record first.
    pub(super) async fn extend_retention(&self, config: &Config, record: &mut PushRecord, deadline: Instant) {
        let open = !record.status.state.is_final();
        let now_s = self.now_ms() / 1000;
        let kept_back = after_retention_walk(deadline.saturating_duration_since(Instant::now()));
        let stop_at = deadline.checked_sub(kept_back).unwrap_or_else(Instant::now);
        let current: &PushRecord = record;
        let kept = self
            .with_retries(deadline, || {
                let within = Some(stop_at.saturating_duration_since(Instant::now()));
                self.store.keep_within(current, now_s, open, config.partition_wps, within)
            })
            .await;
        match kept {
            Ok(kept) => record.kept = kept,
            Err(e) => {
                tracing::warn!(push = %record.push_id, error = ?e, outcome = "not_extended", "push retention not extended; the next transition retries");
                return;
            }
        }
        let state = record.status.state;
        let followed =
            !state.is_final() && state != shadow_core::push::PushState::Paused && record.holder.stalled.is_none();
        let Some(to) = self.retention_walk_to(record).filter(|_| !followed) else { return };
        let (push_id, segment) = (record.push_id.as_str(), record.holder.segment);
        match self.with_retries(deadline, || self.hand_off.hand_off(push_id, segment, 0)).await {
            Ok(()) => tracing::info!(push = %push_id, keeping_to = to, "push woken to resume its retention walk"),
            Err(e) => {
                tracing::warn!(push = %push_id, keeping_to = to, error = ?e, outcome = "not_extended", "push retention walk stopped and not handed on; the next arrival resumes it");
            }
        }
    }

    /// The target of a retention walk under way on `record` (stopped, or died), if any.
    pub(super) fn retention_walk_to(&self, record: &PushRecord) -> Option<u64> {
        self.store.retention_s().and_then(|r| record.kept.walking(record.status.started_at, r))
    }

    /// Refuses what needs the push's items whole (a resume, a rollback) once they were kept until a moment past:
    /// DynamoDB may have deleted some of them already.
    pub(super) fn refuse_lapsed(&self, record: &PushRecord, plan: &PushPlan, action: Action) -> Result<(), PushError> {
        let needs_items = match action {
            Action::Resume => true,
            Action::Abort { rollback } => {
                rollback.unwrap_or(plan.rollout.as_ref().is_some_and(|r| r.on_abort == OnAbort::Rollback))
            }
            Action::Pause => false,
        };
        let Some(retention) = self.store.retention_s().filter(|_| needs_items) else { return Ok(()) };
        let Some(until) = record.kept.lapsed(record.status.started_at, retention, self.now_ms() / 1000) else {
            return Ok(());
        };
        Err(refusal(machine::Refusal {
            field: action.field(),
            reason: format!(
                "push {} was left {:?} past its retention: its items (record, plan, journal) were kept until {until} (epoch s) and DynamoDB may have deleted some of them since; it cannot {}. Start a new push",
                record.push_id,
                record.status.state,
                if action == Action::Resume { "resume" } else { "roll back" }
            ),
        }))
    }

    /// The `expiresAt` of the push's items written now (0 when the store keeps them for ever).
    pub(super) fn expires_at(&self, record: &PushRecord) -> u64 {
        self.store.retention_s().map_or(0, |r| record.kept.expires_at(record.status.started_at, r))
    }
}

/// The time kept back from a retention walk for what follows it in the invocation (the hand-off and the answer), of
/// the `remaining` time: a tenth, at least 500 ms and at most 5 s.
fn after_retention_walk(remaining: Duration) -> Duration {
    (remaining / 10).clamp(Duration::from_millis(500), Duration::from_secs(5))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retention_walk_leaves_time_for_what_follows_it() {
        let ms = Duration::from_millis;
        // (time left, kept back): a tenth, at least 500 ms (a 3 s invocation's segment end), at most 5 s.
        for (left, kept) in [(ms(600), ms(500)), (ms(3000), ms(500)), (ms(20_000), ms(2000)), (ms(900_000), ms(5000))] {
            assert_eq!(after_retention_walk(left), kept, "{left:?} left");
        }
    }
}
