//! One quota for the account: pushes that run at the same time share `PUSH_MAX_TPS` (updates) and `PUSH_READ_TPS`
//! (reads) between them, each capped by its own rate.
//!
//! Each push that sends shadow requests announces itself on a board (the push table, [`Senders`]) when it claims a
//! segment and at every lease renewal, with its caps, the rates it paces at now, and until when its lease holds. It
//! then reads the board and paces itself at its [`share`]: the quota water-filled over the live senders' caps (a push
//! capped below an equal split leaves the rest to the others), but no more than what the others' announced rates
//! leave, and no less than half of it: a push that starts goes at half its part until the running ones have slowed
//! down (the next time they read the board: shadow-push reads it twice a second while it sends, and at every
//! renewal), so the account is asked for at most half a part too much meanwhile. It announces a
//! new rate before it takes it, and a segment that starts announces [`Quota::provisional`] rates (all it may take)
//! before its first look, so an entry never says less than its holder sends: pushes that start together count each
//! other at all they may take, and each takes at most half its part until they see each other's shares. An entry
//! whose lease ran out (a holder that died without withdrawing) no longer counts.

use std::future::Future;

use serde::{Deserialize, Serialize};

use super::PushPlan;
use super::lifecycle::Run;
use crate::service::ServiceError;

/// Requests per second, per shadow API: what a segment may send (its caps, `0` for an API it does not call), or what
/// it paces at now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rates {
    /// `UpdateThingShadow` requests per second, at most.
    pub updates: f64,
    /// `GetThingShadow` requests per second, at most.
    pub reads: f64,
}

impl Rates {
    /// What a segment running `run` for `plan` may send: its update cap (`maxRequestsPerSecond`) unless it writes no
    /// shadow (judging, a dry run), and `read_cap` for reads. Every walk may read: skip checks, a rollout's journal,
    /// and a thing whose update failed with a 5xx or a version conflict is read again even in a plain push.
    pub fn of(plan: &PushPlan, run: &Run, read_cap: u32) -> Self {
        let (updates, reads) = match run {
            Run::Push { .. } => (!plan.dry_run, true),
            Run::Judge { .. } => (false, true),
            Run::Rollback => (true, true),
        };
        let cap = |sends: bool, cap: u32| if sends { f64::from(cap) } else { 0.0 };
        Self { updates: cap(updates, plan.max_requests_per_second), reads: cap(reads, read_cap) }
    }

    /// Whether it sends anything at all.
    pub fn sends(&self) -> bool {
        self.updates > 0.0 || self.reads > 0.0
    }

    /// These rates, none above `caps` (an API a segment does not call is paced at 0).
    pub fn within(self, caps: Rates) -> Self {
        Self { updates: self.updates.min(caps.updates), reads: self.reads.min(caps.reads) }
    }
}

/// One push on the board: who holds it, what it may send, what it sends now, and until when its lease holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Sender {
    pub push_id: String,
    /// The claim token of the segment that announced it: only that holder withdraws it.
    pub owner: String,
    /// Epoch ms: the end of the holder's lease when it announced itself. After it, the entry is a dead holder's.
    pub until_ms: u64,
    /// Its caps.
    pub caps: Rates,
    /// The rates it paces at, as of its last announcement; before it took its first share, all it may take
    /// ([`Quota::provisional`]). Not less than what its holder sends, but for the moment between the announcement
    /// of a lower rate and the holder taking it.
    pub pace: Rates,
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

    /// What a segment with `caps` announces before its first look at the board: the most its first [`share`] can be
    /// (its caps, none above the quota). Every entry then says at least what its holder sends, from the moment it is
    /// on the board: a push that reads the board while another is starting counts the starter at all it may take,
    /// never at nothing.
    pub fn provisional(&self, caps: Rates) -> Rates {
        let most = |cap: f64, quota: f64| cap.min(quota.max(MIN_RATE));
        Rates { updates: most(caps.updates, self.updates), reads: most(caps.reads, self.reads) }
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

/// `me`'s share of `quota` among the senders on the board whose lease holds at `now_ms`: its water-filled part of
/// each quota, but no more than what the others' announced rates leave of it (they slow down at their own next
/// renewal), and no less than half its part. `me` counts with `caps` whatever the board says (its own entry may be missing, or
/// the board unreadable: then it is alone).
pub fn share(quota: Quota, me: &str, caps: Rates, board: &[Sender], now_ms: u64) -> Share {
    let others: Vec<&Sender> =
        board.iter().filter(|s| s.push_id != me && s.until_ms > now_ms && s.caps.sends()).collect();
    let take = |quota: f64, pick: fn(&Rates) -> f64| {
        let all_caps: Vec<f64> = std::iter::once(pick(&caps)).chain(others.iter().map(|s| pick(&s.caps))).collect();
        let left = quota - others.iter().map(|s| pick(&s.pace.within(s.caps))).sum::<f64>();
        let part = water_fill(quota, &all_caps)[0];
        // At least half its part: a segment at a rate near zero would hand off at once rather than wait.
        part.min(left).max(part / 2.0).max(MIN_RATE)
    };
    Share {
        updates: take(quota.updates, |r| r.updates),
        reads: take(quota.reads, |r| r.reads),
        senders: others.len() + 1,
    }
}

impl Share {
    /// The rates to announce: the share, none above `caps`.
    pub fn pace(&self, caps: Rates) -> Rates {
        Rates { updates: self.updates, reads: self.reads }.within(caps)
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

    /// An entry: `caps` and `pace` as (updates, reads).
    fn sender(id: &str, until_ms: u64, caps: (f64, f64), pace: (f64, f64)) -> Sender {
        Sender {
            push_id: id.into(),
            owner: format!("{id}-owner"),
            until_ms,
            caps: Rates { updates: caps.0, reads: caps.1 },
            pace: Rates { updates: pace.0, reads: pace.1 },
        }
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
        let alone = share(quota, "a", Rates { updates: 1000.0, reads: 1000.0 }, &[], 0);
        assert_eq!(alone, Share { updates: 400.0, reads: 300.0, senders: 1 });
        let capped = share(quota, "a", Rates { updates: 50.0, reads: 50.0 }, &[], 0);
        assert_eq!(capped, Share { updates: 50.0, reads: 50.0, senders: 1 });
        // Its own entry on the board does not count it twice.
        let own = [sender("a", 10, (1000.0, 1000.0), (400.0, 300.0))];
        assert_eq!(share(quota, "a", Rates { updates: 1000.0, reads: 1000.0 }, &own, 0), alone);
    }

    #[test]
    fn live_senders_share_and_dead_or_idle_ones_do_not_count() {
        let quota = Quota::new(100, 100, 0);
        let me = Rates { updates: 100.0, reads: 100.0 };
        // b and c pace at their parts already; c reads nothing; a dead holder's entry is past its lease.
        let board = [
            sender("b", 5_000, (100.0, 100.0), (40.0, 50.0)),
            sender("c", 5_000, (20.0, 0.0), (20.0, 0.0)),
            sender("dead", 999, (100.0, 100.0), (100.0, 100.0)),
        ];
        let got = share(quota, "a", me, &board, 1_000);
        assert!(close(got.updates, 40.0) && close(got.reads, 50.0) && got.senders == 3, "{got:?}");
        // A judging push sends no updates: the others share all of them.
        let judging = [sender("b", 5_000, (0.0, 100.0), (0.0, 50.0))];
        let got = share(quota, "a", me, &judging, 1_000);
        assert!(close(got.updates, 100.0) && close(got.reads, 50.0), "{got:?}");
        // An entry that sends nothing is not a sender.
        let idle = [sender("b", 5_000, (0.0, 0.0), (0.0, 0.0))];
        assert_eq!(share(quota, "a", me, &idle, 1_000).senders, 1);
        // Past its lease, a holder that died without withdrawing leaves its share to the others.
        assert_eq!(share(quota, "a", me, &board[..1], 5_000).updates, 100.0);
    }

    #[test]
    fn a_push_that_starts_takes_half_its_part_until_the_running_ones_slow_down() {
        let quota = Quota::new(100, 100, 0);
        let caps = Rates { updates: 100.0, reads: 100.0 };
        let a_alone = sender("a", 10_000, (100.0, 100.0), (100.0, 100.0));
        // b starts while a paces at the whole quota: b takes half its part, not all of it.
        let b = share(quota, "b", caps, std::slice::from_ref(&a_alone), 0);
        assert_eq!((b.updates, b.reads, b.senders), (25.0, 25.0, 2));
        let b_entry = Sender { pace: b.pace(caps), ..sender("b", 10_000, (100.0, 100.0), (0.0, 0.0)) };
        // At its next renewal a sees b and takes its half (b's quarter leaves it more).
        let a = share(quota, "a", caps, &[a_alone, b_entry.clone()], 0);
        assert!(close(a.updates, 50.0) && close(a.reads, 50.0), "{a:?}");
        // At b's next renewal, a has announced its half: b takes the other.
        let a_entry = Sender { pace: a.pace(caps), ..sender("a", 10_000, (100.0, 100.0), (0.0, 0.0)) };
        let b = share(quota, "b", caps, &[a_entry, b_entry], 0);
        assert!(close(b.updates, 50.0) && close(b.reads, 50.0), "{b:?}");
    }

    /// Pushes start, renew in any order and end; each renewal announces the old rate, reads the board, takes its
    /// share and announces it. The rates paced sum over the quota only by what a push that just started took before
    /// every running one renewed (at most half its part), and settle on the water-filled shares.
    #[test]
    fn renewals_in_any_order_stay_under_the_quota_and_settle_on_the_water_filled_shares() {
        let quota = Quota::new(400, 400, 0);
        let caps: [f64; 5] = [400.0, 400.0, 30.0, 400.0, 120.0];
        let mut board: Vec<Sender> = Vec::new();
        let mut seed = 7u64;
        let mut next = |n: usize| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) as usize % n
        };
        let renew = |board: &mut Vec<Sender>, i: usize| {
            let id = board[i].push_id.clone();
            let mine = board[i].caps;
            let taken = share(quota, &id, mine, board, 0);
            board[i].pace = taken.pace(mine);
        };
        let paced = |board: &[Sender]| board.iter().map(|s| s.pace.updates).sum::<f64>();
        let slack = caps.len() as f64 * MIN_RATE;
        // Pushes that started, with the running ones that have not renewed since.
        let mut unseen: Vec<(usize, Vec<usize>)> = Vec::new();
        for (n, cap) in caps.iter().enumerate() {
            board.push(sender(&format!("p{n}"), 1, (*cap, *cap), (0.0, 0.0)));
            renew(&mut board, n);
            let part = water_fill(400.0, &board.iter().map(|s| s.caps.updates).collect::<Vec<_>>())[n];
            assert!(board[n].pace.updates >= part / 2.0 - 1e-9, "a newcomer below half its part: {board:?}");
            unseen.push((n, (0..n).collect()));
            for _ in 0..3 {
                let i = next(board.len());
                renew(&mut board, i);
                for (_, running) in &mut unseen {
                    running.retain(|r| *r != i);
                }
                unseen.retain(|(_, running)| !running.is_empty());
                let early: f64 = unseen.iter().map(|(n, _)| board[*n].pace.updates).sum();
                assert!(paced(&board) <= 400.0 + early + slack, "over the quota: {board:?}");
            }
        }
        // Once every running push has renewed, the quota holds.
        for i in 0..board.len() {
            renew(&mut board, i);
        }
        assert!(paced(&board) <= 400.0 + slack, "over the quota: {board:?}");
        let settle = |board: &mut Vec<Sender>, next: &mut dyn FnMut(usize) -> usize| {
            for _ in 0..4 {
                let mut order: Vec<usize> = (0..board.len()).collect();
                for k in (1..order.len()).rev() {
                    order.swap(k, next(k + 1));
                }
                for i in order {
                    renew(board, i);
                    assert!(paced(board) <= 400.0 + slack, "over the quota: {board:?}");
                }
            }
        };
        settle(&mut board, &mut next);
        let want = water_fill(400.0, &board.iter().map(|s| s.caps.updates).collect::<Vec<_>>());
        let got: Vec<f64> = board.iter().map(|s| s.pace.updates).collect();
        assert!(got.iter().zip(&want).all(|(g, w)| (g - w).abs() < 1e-6), "{got:?}, want {want:?}");
        // One ends: the others take its part.
        board.remove(0);
        settle(&mut board, &mut next);
        let want = water_fill(400.0, &board.iter().map(|s| s.caps.updates).collect::<Vec<_>>());
        let got: Vec<f64> = board.iter().map(|s| s.pace.updates).collect();
        assert!(got.iter().zip(&want).all(|(g, w)| (g - w).abs() < 1e-6), "{got:?}, want {want:?}");
    }

    /// Pushes that start on an idle board, their three steps in the order given (a push's n-th appearance is its
    /// n-th step): announce the provisional rates; read the board and take the share (it sends from then on); announce
    /// the share. An order is "together" when every announcement comes before every look: each then sees all the
    /// others. The most asked at once; the bound it must stay under (the quota, and half a part more per push that
    /// looked beside others: its part among the pushes on the board when it looked; the quota alone when the order was
    /// together); whether it was together.
    fn starts(quota: Quota, caps: &[f64], order: &[usize]) -> (f64, f64, bool) {
        let mut board: Vec<Sender> = Vec::new();
        let mut steps = vec![0u8; caps.len()];
        let mut sends = vec![0.0f64; caps.len()];
        let mut taken: Vec<Option<Share>> = vec![None; caps.len()];
        let (mut worst, mut bound) = (0.0f64, quota.updates);
        let announced_all = |steps: &[u8]| steps.iter().all(|s| *s > 0);
        let together = order.iter().enumerate().all(|(k, &i)| {
            // A look (second step) comes after every push's first step.
            let nth = order[..=k].iter().filter(|j| **j == i).count();
            let mut before = vec![0u8; caps.len()];
            order[..k].iter().for_each(|j| before[*j] += 1);
            nth != 2 || announced_all(&before)
        });
        for &i in order {
            let id = format!("p{i}");
            let mine = Rates { updates: caps[i], reads: caps[i] };
            match steps[i] {
                0 => board.push(Sender {
                    pace: quota.provisional(mine),
                    ..sender(&id, 10_000, (caps[i], caps[i]), (0.0, 0.0))
                }),
                1 => {
                    let on_board: Vec<f64> = board.iter().map(|s| s.caps.updates).collect();
                    let me = board.iter().position(|s| s.push_id == id).unwrap_or(0);
                    // A push alone on the board takes no more than the quota; one beside others, at most half its
                    // part beyond what they leave.
                    if on_board.len() > 1 {
                        bound += water_fill(quota.updates, &on_board)[me] / 2.0;
                    }
                    let got = share(quota, &id, mine, &board, 0);
                    sends[i] = got.pace(mine).updates;
                    taken[i] = Some(got);
                }
                _ => {
                    if let (Some(entry), Some(got)) = (board.iter_mut().find(|s| s.push_id == id), taken[i]) {
                        entry.pace = got.pace(mine);
                    }
                }
            }
            steps[i] += 1;
            worst = worst.max(sends.iter().sum());
        }
        if together {
            bound = quota.updates;
        }
        (worst, bound, together)
    }

    /// Every order of `n` pushes' three steps (exhaustive for up to 3 pushes), else `sample` random ones.
    fn orders(n: usize, sample: usize) -> Vec<Vec<usize>> {
        fn go(left: &mut Vec<u8>, order: &mut Vec<usize>, all: &mut Vec<Vec<usize>>) {
            if left.iter().all(|l| *l == 0) {
                all.push(order.clone());
                return;
            }
            for i in 0..left.len() {
                if left[i] > 0 {
                    left[i] -= 1;
                    order.push(i);
                    go(left, order, all);
                    order.pop();
                    left[i] += 1;
                }
            }
        }
        let mut all = Vec::new();
        if n <= 3 {
            go(&mut vec![3; n], &mut Vec::new(), &mut all);
            return all;
        }
        let mut seed = 11u64;
        for k in 0..sample {
            let mut order: Vec<usize> = (0..3 * n).map(|j| j % n).collect();
            for j in (1..order.len()).rev() {
                seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                order.swap(j, (seed >> 33) as usize % (j + 1));
            }
            // Every tenth order: all announce first, then look and settle in a random order.
            if k % 10 == 0 {
                let mut first = vec![true; n];
                let rest = order.iter().copied().filter(|i| !std::mem::replace(&mut first[*i], false));
                order = (0..n).chain(rest.collect::<Vec<_>>()).collect();
            }
            all.push(order);
        }
        all
    }

    #[test]
    fn pushes_that_start_together_ask_for_no_more_than_the_quota_and_half_a_part_each_otherwise() {
        let quota = Quota::new(400, 400, 0);
        for caps in [&[400.0, 400.0][..], &[400.0, 120.0, 400.0], &[400.0; 5], &[400.0, 30.0, 400.0, 120.0, 400.0]] {
            let (mut together_seen, mut worst_together) = (0, 0.0f64);
            for order in orders(caps.len(), 20_000) {
                let (worst, bound, together) = starts(quota, caps, &order);
                assert!(worst <= bound + 1e-6, "{caps:?} started as {order:?}: {worst} asked, over {bound}");
                if together {
                    together_seen += 1;
                    worst_together = worst_together.max(worst);
                }
            }
            assert!(together_seen > 0, "{caps:?}: no order together");
            assert!(worst_together <= 400.0 + 1e-6, "{caps:?}: {worst_together}");
        }
    }

    #[test]
    fn a_share_is_never_zero_and_headroom_is_kept_for_others() {
        let quota = Quota::new(400, 400, 25);
        assert_eq!(quota, Quota { updates: 300.0, reads: 300.0 });
        let me = Rates { updates: 400.0, reads: 0.0 };
        let got = share(quota, "a", me, &[sender("b", 10, (400.0, 400.0), (150.0, 300.0))], 0);
        assert!(close(got.updates, 150.0) && got.reads == MIN_RATE, "{got:?}");
        let crowd: Vec<Sender> =
            (0..10_000).map(|i| sender(&format!("p{i}"), 10, (400.0, 400.0), (0.0, 0.0))).collect();
        assert_eq!(share(quota, "a", me, &crowd, 0).updates, MIN_RATE);
        assert_eq!(Quota::new(400, 400, 150), Quota { updates: 0.0, reads: 0.0 });
    }

    #[test]
    fn caps_follow_the_work() {
        let plan = |extra: serde_json::Value| {
            let mut request = json!({"pushId": "p", "desired": {"a": 1}, "targets": {"things": ["t"]},
                                     "maxRequestsPerSecond": 200});
            if let (Some(r), Some(e)) = (request.as_object_mut(), extra.as_object()) {
                r.extend(e.clone());
            }
            validate_request(&request, 400, None).unwrap_or_else(|e| panic!("{e}"))
        };
        let push = Run::Push { phase: None };
        let default = plan(json!({}));
        assert_eq!(Rates::of(&default, &push, 300), Rates { updates: 200.0, reads: 300.0 });
        // A plain push reads too: a thing whose update may have been applied (a 5xx) is read again.
        let plain = plan(json!({"skipUnchanged": false}));
        assert_eq!(Rates::of(&plain, &push, 300), Rates { updates: 200.0, reads: 300.0 });
        let dry = plan(json!({"dryRun": true}));
        assert_eq!(Rates::of(&dry, &push, 300), Rates { updates: 0.0, reads: 300.0 });
        assert_eq!(Rates::of(&plain, &Run::Judge { phase: 1 }, 300), Rates { updates: 0.0, reads: 300.0 });
        assert_eq!(Rates::of(&plain, &Run::Rollback, 300), Rates { updates: 200.0, reads: 300.0 });
    }
}
