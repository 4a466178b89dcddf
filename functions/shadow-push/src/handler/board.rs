//! The board of senders: a segment's entry on it, and its share of the account's quotas, read from the live
//! entries.

use std::time::Duration;

use shadow_core::push::quota::{self, Quota, Sender, Senders, Share};
use shadow_core::push::{HandOff, Journal, PushStore, Registry, Shadows};

use super::Services;

impl<S: Shadows, R: Registry, P: PushStore + Journal + Senders, H: HandOff> Services<S, R, P, H> {
    /// Puts the segment's entry on the board; a failure leaves the others sharing without it until the next renewal.
    async fn announce(&self, sender: &Sender) {
        if let Err(e) = self.store.announce(sender).await {
            tracing::warn!(push = %sender.push_id, error = %e, "could not announce the push on the board of senders");
        }
    }

    /// Puts this segment on the board of senders (or refreshes its entry, with the lease it holds now), reads its
    /// share of the quotas from the live entries, and announces the new rates at once when they changed. `None` when
    /// the board cannot be read: the pace stays as it is.
    pub(super) async fn share_out(&self, quota: Quota, sender: &mut Sender) -> Option<Share> {
        if !sender.caps.sends() {
            return None;
        }
        self.announce(sender).await;
        self.look_at_board(quota, sender).await
    }

    /// A segment's first share. Its entry goes on the board with provisional rates (all it may take) and a short
    /// lease (`provisional_until`: a holder that dies now holds them no longer than a renewal's interval), then the
    /// board is read twice, one round trip apart: a push that announced itself while the first read was on its way is
    /// seen by the second, so pushes that start within a round trip of each other all see each other. The share is
    /// taken from the second read and announced with the holder's lease. `None` when the board cannot be read (the
    /// entry keeps its provisional rates until it lapses or the next renewal announces again).
    pub(super) async fn first_share(&self, quota: Quota, sender: &mut Sender, provisional_until: u64) -> Option<Share> {
        if !sender.caps.sends() {
            return None;
        }
        let lease_until = sender.until_ms;
        sender.until_ms = lease_until.min(provisional_until);
        self.announce(sender).await;
        let first = self.store.senders().await;
        let board = match (first, self.store.senders().await) {
            (_, Ok(board)) | (Ok(board), Err(_)) => board,
            (Err(_), Err(e)) => {
                tracing::warn!(push = %sender.push_id, error = %e, "could not read the board of senders");
                return None;
            }
        };
        let share = quota::share(quota, &sender.push_id, sender.caps, &board, self.now_ms());
        sender.pace = share.pace(sender.caps);
        sender.until_ms = lease_until;
        self.announce(sender).await;
        Some(share)
    }

    /// Reads the board and takes this segment's share, announcing its new rates when they changed (its entry's lease
    /// is left as the last renewal wrote it). `None` when the board cannot be read: the pace stays as it is.
    pub(super) async fn look_at_board(&self, quota: Quota, sender: &mut Sender) -> Option<Share> {
        let board = match self.store.senders().await {
            Ok(board) => board,
            Err(e) => {
                tracing::warn!(push = %sender.push_id, error = %e, "could not read the board of senders; pace kept");
                return None;
            }
        };
        let share = quota::share(quota, &sender.push_id, sender.caps, &board, self.now_ms());
        let pace = share.pace(sender.caps);
        if pace != sender.pace {
            sender.pace = pace;
            self.announce(sender).await;
        }
        Some(share)
    }
}

/// How often a sending segment reads the board of senders between its lease renewals: one consistent Query of a
/// partition of a few hundred bytes (1 read unit), twice a second per running push.
pub(super) const BOARD_LOOK_EVERY: Duration = Duration::from_millis(500);

/// How often a segment reads the board in its first [`BOARD_LOOK_EVERY`]: pushes often start together (a schedule,
/// an operator's several starts), and one that took its share alone sees the others within this.
pub(super) const EARLY_LOOK_EVERY: Duration = Duration::from_millis(100);

/// The push's share of the account's quotas: one line when it starts and whenever it changes.
pub(super) fn log_share(push_id: &str, segment: u64, share: &Share) {
    tracing::info!(
        push = %push_id,
        segment,
        update_share = format!("{:.1}", share.updates),
        read_share = format!("{:.1}", share.reads),
        senders = share.senders,
        "quota share"
    );
}
