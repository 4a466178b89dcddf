//! A running segment's heartbeat: renews its lease, halts it when an operator's control is left on the record,
//! stops it when the claim is lost, and follows its share of the quotas on the board of senders.

use std::time::Duration;

use shadow_core::push::lifecycle::LeaseTiming;
use shadow_core::push::quota::{Quota, Sender, Senders, Share};
use shadow_core::push::{HandOff, Journal, Pace, PushStore, Registry, Shadows};
use tokio::time::Instant;

use super::Services;
use super::board::{BOARD_LOOK_EVERY, EARLY_LOOK_EVERY, log_share};

/// What a segment's heartbeat works with: the segment it renews, its pace (extended, halted or stopped from here),
/// and its entry and share on the board of senders.
pub(super) struct Renewal<'a> {
    pub(super) push_id: &'a str,
    pub(super) segment: u64,
    pub(super) owner: &'a str,
    pub(super) timing: LeaseTiming,
    pub(super) quota: Quota,
    /// Whether the segment sends (takes a share of the quotas) at all.
    pub(super) sends: bool,
    pub(super) pace: &'a Pace,
    pub(super) sender: Sender,
    pub(super) share: Share,
}

impl<S: Shadows, R: Registry, P: PushStore + Journal + Senders, H: HandOff> Services<S, R, P, H> {
    /// Runs beside a segment ([`Services::run_segment`]) until the claim is lost (the pace is told at once, and this
    /// returns); the segment ends on its own otherwise, and this is dropped with it.
    pub(super) async fn heartbeat(&self, renewal: Renewal<'_>) {
        let Renewal { push_id, segment, owner, timing, quota, sends, pace, mut sender, mut share } = renewal;
        let lease_ms = Duration::from_millis(timing.lease_ms);
        let every = Duration::from_millis(timing.renew_every_ms());
        // The board is read more often than the lease is renewed: a push that starts beside this one is seen
        // within BOARD_LOOK_EVERY, which bounds how long the account is asked for more than its quota.
        let look = every.min(BOARD_LOOK_EVERY);
        let mut next_renewal = Instant::now() + every;
        // Just started, it looks more often: a push that starts a moment after this one took its share sees this
        // one at once, but this one sees it only at its next look.
        let early_until = (Instant::now() + look).min(next_renewal);
        while sends && Instant::now() + EARLY_LOOK_EVERY < early_until {
            tokio::time::sleep(EARLY_LOOK_EVERY).await;
            if let Some(next) = self.look_at_board(quota, &mut sender).await
                && next != share
            {
                share = next;
                pace.set_rates(share.updates, share.reads);
                log_share(push_id, segment, &share);
            }
        }
        // Renewals keep their cadence: the board's requests after one do not push the next one back.
        let mut ticks = tokio::time::interval_at(Instant::now() + look, look);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let asked = Instant::now();
            if asked + look / 2 < next_renewal {
                if sends
                    && let Some(next) = self.look_at_board(quota, &mut sender).await
                    && next != share
                {
                    share = next;
                    pace.set_rates(share.updates, share.reads);
                    log_share(push_id, segment, &share);
                }
                continue;
            }
            next_renewal += every;
            let renewed = self.store.renew(push_id, segment, owner, self.now_ms() + timing.lease_ms).await;
            pace.observe(asked.elapsed());
            match renewed {
                Ok(Some(control)) => {
                    pace.lease().extend(asked + lease_ms);
                    if let Some(control) = control
                        && !pace.lease().is_halted()
                    {
                        tracing::info!(push = %push_id, segment, ?control, "operator control: stopping the segment");
                        pace.lease().halt();
                    }
                    // Pushes that started or ended since: the share follows at every renewal.
                    sender.until_ms = self.now_ms() + timing.lease_ms;
                    if let Some(next) = self.share_out(quota, &mut sender).await
                        && next != share
                    {
                        share = next;
                        pace.set_rates(share.updates, share.reads);
                        log_share(push_id, segment, &share);
                    }
                }
                Ok(None) => {
                    tracing::error!(push = %push_id, segment, "claim lost to another invocation; stopping");
                    pace.lease().lose();
                    return;
                }
                // The lease is not extended: if renewals keep failing, the segment stops before it runs out.
                Err(e) => tracing::warn!(push = %push_id, segment, error = %e, "lease renewal failed"),
            }
        }
    }
}
