//! One quota for the account: pushes that run at the same time share `PUSH_MAX_TPS` (updates) and `PUSH_READ_TPS`
//! (reads) between them, each capped by its own rate.
//!
//! Each push that sends shadow requests announces itself on a board (the push table, [`Senders`]) when it claims a
//! segment and at every lease renewal, with what it may send ([`Demand`]) and until when its lease holds. It then
//! reads the board and paces itself at its [`share`]: the quota water-filled over the live senders' caps, so that a
//! push capped below an equal split leaves the rest to the others. An entry whose lease ran out (a holder that died
//! without withdrawing) no longer counts.

use std::future::Future;

use serde::{Deserialize, Serialize};

use super::PushPlan;
use super::lifecycle::Work;
use crate::store::ServiceError;

/// What a segment may send each second, per shadow API: its cap on each, `0` for an API it does not call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Demand {
    /// `UpdateThingShadow` requests per second, at most.
    pub updates: f64,
    /// `GetThingShadow` requests per second, at most.
    pub reads: f64,
}

impl Demand {
    /// What a segment doing `work` for `plan` may send: its update cap (`maxRequestsPerSecond`) unless it writes no
    /// shadow (judging, a dry run), and `read_cap` for reads. Every walk may read: skip checks, a rollout's journal,
    /// and a thing whose update failed with a 5xx or a version conflict is read again even in a plain push.
    pub fn of(plan: &PushPlan, work: &Work, read_cap: u32) -> Self {
        let (updates, reads) = match work {
            Work::Push { .. } => (!plan.dry_run, true),
            Work::Judge { .. } => (false, true),
            Work::Rollback => (true, true),
            Work::Bake { .. } => (false, false),
        };
        let cap = |sends: bool, cap: u32| if sends { f64::from(cap) } else { 0.0 };
        Self { updates: cap(updates, plan.max_requests_per_second), reads: cap(reads, read_cap) }
    }

    /// Whether it sends anything at all.
    pub fn sends(&self) -> bool {
        self.updates > 0.0 || self.reads > 0.0
    }
}

/// One push on the board: who holds it, what it may send, and until when its lease holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Sender {
    pub push_id: String,
    /// The claim token of the segment that announced it: only that holder withdraws it.
    pub owner: String,
    /// Epoch ms: the end of the holder's lease when it announced itself. After it, the entry is a dead holder's.
    pub until_ms: u64,
    pub demand: Demand,
}

/// The account's quotas as shadow-push may use them: `PUSH_MAX_TPS` and `PUSH_READ_TPS`, less the headroom kept for
/// other callers (devices' own shadow requests, other tools).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quota {
    pub updates: f64,
    pub reads: f64,
}

impl Quota {
    /// `max_tps` and `read_tps`, with `headroom_percent` of each kept for others.
    pub fn new(max_tps: u32, read_tps: u32, headroom_percent: u32) -> Self {
        let left = f64::from(100 - headroom_percent.min(100)) / 100.0;
        Self { updates: f64::from(max_tps) * left, reads: f64::from(read_tps) * left }
    }
}

/// A push's share of the quotas: the rates it paces itself at, and how many live senders (itself included) the
/// quotas were shared among.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Share {
    pub updates: f64,
    pub reads: f64,
    pub senders: usize,
}

/// The slowest rate a limiter is set to: a share is never zero, so a push always makes some progress.
pub const MIN_RATE: f64 = 0.1;

/// Water-fills `quota` over `caps`: every cap gets `min(cap, level)`, with the level as high as the quota allows.
/// A cap below an equal split leaves the rest to the others; caps that sum to less than the quota get all they ask.
pub fn water_fill(quota: f64, caps: &[f64]) -> Vec<f64> {
    let quota = quota.max(0.0);
    let mut order: Vec<usize> = (0..caps.len()).collect();
    order.sort_by(|a, b| caps[*a].total_cmp(&caps[*b]));
    let mut shares = vec![0.0; caps.len()];
    let mut left = quota;
    for (done, &i) in order.iter().enumerate() {
        let level = left / (caps.len() - done) as f64;
        let share = caps[i].max(0.0).min(level);
        shares[i] = share;
        left -= share;
    }
    shares
}

/// `me`'s share of `quota` among the senders on the board whose lease holds at `now_ms`. `me` counts with `mine`
/// whatever the board says (its own entry may be missing, or the board unreadable: then it is alone).
pub fn share(quota: Quota, me: &str, mine: Demand, board: &[Sender], now_ms: u64) -> Share {
    let others: Vec<&Demand> = board
        .iter()
        .filter(|s| s.push_id != me && s.until_ms > now_ms && s.demand.sends())
        .map(|s| &s.demand)
        .collect();
    let fill = |quota: f64, pick: fn(&Demand) -> f64| {
        let caps: Vec<f64> = std::iter::once(pick(&mine)).chain(others.iter().map(|d| pick(d))).collect();
        water_fill(quota, &caps)[0]
    };
    Share {
        updates: fill(quota.updates, |d| d.updates).max(MIN_RATE),
        reads: fill(quota.reads, |d| d.reads).max(MIN_RATE),
        senders: others.len() + 1,
    }
}

/// The board of pushes that send shadow requests now (the push table).
pub trait Senders: Sync {
    /// Puts `sender` on the board, or refreshes its entry (one entry per push).
    fn announce(&self, sender: &Sender) -> impl Future<Output = Result<(), ServiceError>> + Send;
    /// Every entry on the board, live or not.
    fn senders(&self) -> impl Future<Output = Result<Vec<Sender>, ServiceError>> + Send;
    /// Takes `push_id`'s entry off the board if `owner` announced it (its segment ended); `Ok(())` when it is gone
    /// or another holder's.
    fn withdraw(&self, push_id: &str, owner: &str) -> impl Future<Output = Result<(), ServiceError>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::push::validate_request;
    use serde_json::json;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    fn sender(id: &str, until_ms: u64, updates: f64, reads: f64) -> Sender {
        Sender { push_id: id.into(), owner: format!("{id}-owner"), until_ms, demand: Demand { updates, reads } }
    }

    #[test]
    fn water_filling_splits_equally_and_gives_what_a_low_cap_leaves_to_the_others() {
        let cases: [(f64, &[f64], &[f64]); 9] = [
            (100.0, &[100.0, 100.0], &[50.0, 50.0]),
            (90.0, &[400.0, 400.0, 400.0], &[30.0, 30.0, 30.0]),
            // Capped below an equal split: the rest goes to the others.
            (100.0, &[10.0, 400.0], &[10.0, 90.0]),
            (100.0, &[400.0, 10.0, 20.0], &[70.0, 10.0, 20.0]),
            (100.0, &[30.0, 40.0, 400.0], &[30.0, 35.0, 35.0]),
            (120.0, &[30.0, 40.0, 400.0], &[30.0, 40.0, 50.0]),
            // Caps that sum below the quota get all they ask.
            (400.0, &[100.0, 50.0], &[100.0, 50.0]),
            // A push that sends nothing of this kind takes none of it.
            (100.0, &[0.0, 400.0], &[0.0, 100.0]),
            (100.0, &[], &[]),
        ];
        for (quota, caps, want) in cases {
            let got = water_fill(quota, caps);
            assert_eq!(got.len(), want.len());
            assert!(got.iter().zip(want).all(|(g, w)| close(*g, *w)), "{quota} over {caps:?}: {got:?}, want {want:?}");
            assert!(got.iter().sum::<f64>() <= quota + 1e-9, "over the quota: {got:?}");
        }
    }

    #[test]
    fn water_filling_never_exceeds_the_quota_nor_a_cap() {
        for n in 1..12usize {
            for quota in [1.0, 7.0, 100.0, 4000.0] {
                let caps: Vec<f64> = (0..n).map(|i| ((i * 37) % 11) as f64 * 50.0).collect();
                let got = water_fill(quota, &caps);
                let total: f64 = got.iter().sum();
                assert!(total <= quota + 1e-9, "{quota} over {caps:?}: {got:?}");
                assert!(got.iter().zip(&caps).all(|(g, c)| *g <= *c + 1e-9), "{caps:?}: {got:?}");
                // Nothing is left over while some cap is not met.
                let unmet = got.iter().zip(&caps).any(|(g, c)| *g < *c - 1e-9);
                assert!(!unmet || close(total, quota), "{quota} over {caps:?}: {got:?}");
            }
        }
    }

    #[test]
    fn one_push_alone_gets_its_cap_or_the_quota() {
        let quota = Quota::new(400, 300, 0);
        let alone = share(quota, "a", Demand { updates: 1000.0, reads: 1000.0 }, &[], 0);
        assert_eq!(alone, Share { updates: 400.0, reads: 300.0, senders: 1 });
        let capped = share(quota, "a", Demand { updates: 50.0, reads: 50.0 }, &[], 0);
        assert_eq!(capped, Share { updates: 50.0, reads: 50.0, senders: 1 });
        // Its own entry on the board does not count it twice.
        let listed = share(quota, "a", Demand { updates: 1000.0, reads: 1000.0 }, &[sender("a", 10, 1.0, 1.0)], 0);
        assert_eq!(listed, alone);
    }

    #[test]
    fn live_senders_share_and_dead_or_idle_ones_do_not_count() {
        let quota = Quota::new(100, 100, 0);
        let me = Demand { updates: 100.0, reads: 100.0 };
        let board =
            [sender("b", 5_000, 100.0, 100.0), sender("c", 5_000, 20.0, 0.0), sender("dead", 999, 100.0, 100.0)];
        let got = share(quota, "a", me, &board, 1_000);
        assert!(close(got.updates, 40.0) && close(got.reads, 50.0) && got.senders == 3, "{got:?}");
        // A judging push sends no updates: the others share all of them.
        let judging = [sender("b", 5_000, 0.0, 100.0)];
        let got = share(quota, "a", me, &judging, 1_000);
        assert!(close(got.updates, 100.0) && close(got.reads, 50.0), "{got:?}");
        // An entry that sends nothing is not a sender.
        let idle = [sender("b", 5_000, 0.0, 0.0)];
        assert_eq!(share(quota, "a", me, &idle, 1_000).senders, 1);
        // Past its lease, a holder that died without withdrawing leaves its share to the others.
        assert_eq!(share(quota, "a", me, &board[..1], 5_000).updates, 100.0);
    }

    #[test]
    fn a_share_is_never_zero_and_headroom_is_kept_for_others() {
        let quota = Quota::new(400, 400, 25);
        assert_eq!(quota, Quota { updates: 300.0, reads: 300.0 });
        let me = Demand { updates: 400.0, reads: 0.0 };
        let got = share(quota, "a", me, &[sender("b", 10, 400.0, 400.0)], 0);
        assert!(close(got.updates, 150.0) && got.reads == MIN_RATE, "{got:?}");
        let crowd: Vec<Sender> = (0..10_000).map(|i| sender(&format!("p{i}"), 10, 400.0, 400.0)).collect();
        assert_eq!(share(quota, "a", me, &crowd, 0).updates, MIN_RATE);
        assert_eq!(Quota::new(400, 400, 150), Quota { updates: 0.0, reads: 0.0 });
    }

    #[test]
    fn demand_follows_the_work() {
        let plan = |extra: serde_json::Value| {
            let mut request = json!({"pushId": "p", "desired": {"a": 1}, "targets": {"things": ["t"]},
                                     "maxRequestsPerSecond": 200});
            if let (Some(r), Some(e)) = (request.as_object_mut(), extra.as_object()) {
                r.extend(e.clone());
            }
            validate_request(&request, 400, None).unwrap_or_else(|e| panic!("{e}"))
        };
        let push = Work::Push { phase: None };
        let default = plan(json!({}));
        assert_eq!(Demand::of(&default, &push, 300), Demand { updates: 200.0, reads: 300.0 });
        // A plain push reads too: a thing whose update may have been applied (a 5xx) is read again.
        let plain = plan(json!({"skipUnchanged": false}));
        assert_eq!(Demand::of(&plain, &push, 300), Demand { updates: 200.0, reads: 300.0 });
        let dry = plan(json!({"dryRun": true}));
        assert_eq!(Demand::of(&dry, &push, 300), Demand { updates: 0.0, reads: 300.0 });
        assert_eq!(Demand::of(&plain, &Work::Judge { phase: 1 }, 300), Demand { updates: 0.0, reads: 300.0 });
        assert_eq!(Demand::of(&plain, &Work::Rollback, 300), Demand { updates: 200.0, reads: 300.0 });
        assert!(!Demand::of(&plain, &Work::Bake { delay_s: 5 }, 300).sends());
    }
}
