//! A push's retention: extending how long its items (record, plan, journal) are kept (a walk of their expiry, within
//! the invocation's time), and the `expiresAt` its items are written with.

use std::time::Duration;

use shadow_core::push::quota::Senders;
use shadow_core::push::retention::Kept;
use shadow_core::push::{HandOff, Journal, PushRecord, PushStore, Registry, Shadows};
use tokio::time::Instant;

use super::Services;
use crate::config::Config;

impl<S: Shadows, R: Registry, P: PushStore + Journal + Senders, H: HandOff> Services<S, R, P, H> {
    /// Keeps the push's items (record, plan, journal) at least the retention past now, when it is short of that or
    /// an extension stopped or died midway ([`shadow_core::push::retention`]), as the state machine calls for it
    /// ([`shadow_core::push::machine::Effect::Extend`]; `open`: the push is not final). The walk stops before the invocation's
    /// deadline, leaving time for what follows it (the hand-off, the answer), and leaves where it got beside the
    /// record. Returns the record's marks as they now stand; `None` when the store failed past the deadline (the push
    /// goes on, and its next transition tries again, finishing a walk left marked on the record first).
    pub(super) async fn extend_retention(
        &self,
        config: &Config,
        record: &PushRecord,
        open: bool,
        deadline: Instant,
    ) -> Option<Kept> {
        let now_s = self.now_ms() / 1000;
        let kept_back = after_retention_walk(deadline.saturating_duration_since(Instant::now()));
        let stop_at = deadline.checked_sub(kept_back).unwrap_or_else(Instant::now);
        let kept = self
            .with_retries(deadline, || {
                let within = Some(stop_at.saturating_duration_since(Instant::now()));
                self.store.extend_within(record, now_s, open, config.partition_wps, within)
            })
            .await;
        match kept {
            Ok(kept) => Some(kept),
            Err(e) => {
                tracing::warn!(push = %record.push_id, error = ?e, outcome = "not_extended", "push retention not extended; the next transition retries");
                None
            }
        }
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
