use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;

use super::*;
use crate::push::fakes::*;
use crate::push::{NoJournal, Segment, SegmentStart, run_segment};

/// 8 requests/s with 64 in flight and 3-second invocations: no segment runs to its deadline, and the push ends.
/// A push's share of the quota changes while it runs: the next slots are spaced at the new rate, none of the
/// slots already given moves, and the burst follows the rate.
#[tokio::test(start_paused = true)]
async fn a_limiter_takes_a_new_rate_from_its_next_slot() {
    let limiter = Limiter::new(10.0);
    let start = Instant::now();
    let far = start + Duration::from_secs(60);
    let slots = |n: usize| (0..n).filter_map(|_| limiter.take_before(far)).last();
    assert_eq!(slots(10).map(|s| s - start), Some(Duration::from_millis(900)));
    limiter.set_rate(100.0);
    assert!((limiter.rate() - 100.0).abs() < 1e-6, "{}", limiter.rate());
    // The slot after the last one given at 10/s (1 s), then 10 ms apart.
    assert_eq!(slots(11).map(|s| s - start), Some(Duration::from_millis(1100)));
    limiter.set_rate(2.0);
    assert_eq!(slots(2).map(|s| s - start), Some(Duration::from_millis(1610)));
    // Idle for a while at 100/s: a burst of 5 slots (1/20 s) goes at once, then they are spaced again.
    limiter.set_rate(100.0);
    tokio::time::advance(Duration::from_secs(10)).await;
    let now = Instant::now();
    let burst: Vec<Instant> = (0..6).filter_map(|_| limiter.take_before(far)).collect();
    assert_eq!(
        burst.iter().filter(|s| **s == now).count(),
        5,
        "{:?}",
        burst.iter().map(|s| *s - now).collect::<Vec<_>>()
    );
    assert_eq!(burst.last().map(|s| *s - now), Some(Duration::from_millis(10)));
    // Shares below 1/s still pace (at least MIN_RATE).
    limiter.set_rate(0.0);
    assert!((limiter.rate() - MIN_RATE).abs() < 1e-9);
}

#[tokio::test(start_paused = true)]
async fn a_slow_rate_never_holds_more_than_the_time_left() {
    let shadows = FakeShadows { delay: Duration::from_millis(20), ..Default::default() };
    let mut registry = registry();
    registry.groups.insert("prod".into(), names("g", 60));
    let plan = request(json!({"skipUnchanged": true, "targets": {"thingGroup": "prod"}}));
    let pace = || {
        let deadline = Instant::now() + Duration::from_secs(3);
        Pace::new(8, 64, deadline, Duration::from_millis(600), Duration::from_millis(300))
    };
    let (segments, targets) = to_completion(&plan, &shadows, &registry, pace).await;
    assert_eq!(targets, 60);
    // 60 reads and 60 updates, each at 8/s on its own limiter: at least 7.5 s of requests in 3-second
    // invocations.
    assert!(segments >= 3, "{segments}");
    let updates = shadows.updates();
    assert_eq!(updates.len(), 60);
    assert!(updates.values().all(|n| *n == 1), "{updates:?}");
}

/// Shadow requests that take 150 ms each (a slow service, a loaded machine): the segment keeps back the time its
/// record write and hand-off would take at that latency (6 requests, 0.9 s), not the 300 ms it was given, and at
/// most a third of its invocation.
#[tokio::test(start_paused = true)]
async fn the_reserve_follows_the_slowest_request() {
    let pace = Pace::new(
        8,
        4,
        Instant::now() + Duration::from_secs(3),
        Duration::from_millis(600),
        Duration::from_millis(300),
    );
    assert_eq!(pace.reserve(), Duration::from_millis(300), "nothing observed yet");
    pace.observe(Duration::from_millis(100));
    pace.observe(Duration::from_millis(20));
    assert_eq!(pace.reserve(), Duration::from_millis(600), "the slowest request, six times");
    assert_eq!(pace.stop_at(), pace.deadline - Duration::from_millis(700), "one request more before the reserve");
    pace.observe(Duration::from_secs(1));
    assert_eq!(pace.reserve(), Duration::from_secs(1), "at most a third of the invocation");

    let shadows = FakeShadows { delay: Duration::from_millis(150), ..Default::default() };
    let mut registry = registry();
    registry.groups.insert("prod".into(), names("g", 60));
    let plan = request(json!({"skipUnchanged": true, "targets": {"thingGroup": "prod"}}));
    let deadline = Instant::now() + Duration::from_secs(3);
    let pace = Pace::new(8, 64, deadline, Duration::from_millis(600), Duration::from_millis(300));
    let sources = super::super::sources_for(&plan, &registry).await.expect("resolving the sources");
    let segment = Segment {
        plan: &plan,
        sources: &sources,
        shadows: &shadows,
        registry: &registry,
        journal: &NoJournal,
        journal_shards: 1,
        pace: &pace,
    };
    let out = run_segment(&segment, SegmentStart::default(), |_| {}).await;
    let left = deadline.saturating_duration_since(Instant::now());
    assert!(out.cursor.is_some() && out.updated > 0, "{out:?}");
    assert!(left >= Duration::from_millis(900), "the segment ended {left:?} before its deadline");
}

/// A lost lease stops the segment at once: nothing more is sent.
#[tokio::test(start_paused = true)]
async fn a_lost_lease_stops_the_segment() {
    let shadows = FakeShadows { delay: Duration::from_millis(10), ..Default::default() };
    let mut registry = registry();
    registry.groups.insert("prod".into(), names("g", 100));
    let plan = request(json!({"skipUnchanged": false, "targets": {"thingGroup": "prod"}}));
    let pace = Pace::new(50, 4, Instant::now() + Duration::from_secs(60), Duration::from_millis(200), Duration::ZERO);
    let sources = super::super::sources_for(&plan, &registry).await.expect("resolving the sources");
    let segment = Segment {
        plan: &plan,
        sources: &sources,
        shadows: &shadows,
        registry: &registry,
        journal: &NoJournal,
        journal_shards: 1,
        pace: &pace,
    };
    let run = run_segment(&segment, SegmentStart::default(), |_| {});
    let lose = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        pace.lease().lose();
    };
    let (out, ()) = tokio::join!(run, lose);
    let updated = shadows.updates().len() as u64;
    assert!((20..=30).contains(&updated), "{updated} updated in 0.5 s at 50/s");
    assert_eq!(out.updated, updated);
    assert!(out.cursor.is_some());
    assert!(Instant::now() < pace.deadline - Duration::from_secs(50), "it did not stop at once");
}

/// A lease that is not renewed ends the segment before it runs out, however far the deadline.
#[tokio::test(start_paused = true)]
async fn a_lease_not_renewed_ends_the_segment_in_time() {
    let shadows = FakeShadows::default();
    let mut registry = registry();
    registry.groups.insert("prod".into(), names("g", 1000));
    let plan = request(json!({"skipUnchanged": false, "targets": {"thingGroup": "prod"}}));
    let pace = Pace::new(100, 8, Instant::now() + Duration::from_secs(900), Duration::from_millis(500), Duration::ZERO);
    pace.lease().extend(Instant::now() + Duration::from_secs(2));
    let lease = Lease::new(Instant::now() + Duration::from_secs(2));
    assert_eq!(lease.until(), Instant::now() + Duration::from_secs(2));
    // The lease starts at the deadline; a renewal cannot shorten it, so build a pace whose lease is short.
    let mut short =
        Pace::new(100, 8, Instant::now() + Duration::from_secs(900), Duration::from_millis(500), Duration::ZERO);
    short.lease = lease;
    let sources = super::super::sources_for(&plan, &registry).await.expect("resolving the sources");
    let segment = Segment {
        plan: &plan,
        sources: &sources,
        shadows: &shadows,
        registry: &registry,
        journal: &NoJournal,
        journal_shards: 1,
        pace: &short,
    };
    let out = run_segment(&segment, SegmentStart::default(), |_| {}).await;
    assert!(Instant::now() <= short.lease().until(), "ran past its lease");
    assert!((140..=160).contains(&out.updated), "{}", out.updated);
}

/// Below 4 requests/s a slot is further away than one waiting step: waiters must keep the slot they took, or
/// they leapfrog each other to the stop and nothing is pushed.
#[tokio::test(start_paused = true)]
async fn a_very_slow_rate_still_makes_progress_every_segment() {
    let shadows = FakeShadows { delay: Duration::from_millis(20), ..Default::default() };
    let mut registry = registry();
    registry.groups.insert("prod".into(), names("g", 8));
    let plan = request(json!({"skipUnchanged": true, "targets": {"thingGroup": "prod"}}));
    let pace = || {
        let deadline = Instant::now() + Duration::from_secs(3);
        Pace::new(2, 4, deadline, Duration::from_millis(600), Duration::from_millis(300))
    };
    let (segments, targets) = to_completion(&plan, &shadows, &registry, pace).await;
    assert_eq!(targets, 8);
    // 16 requests at 2/s in 3-second invocations.
    assert!(segments <= 8, "{segments} segments");
    assert!(shadows.updates().values().all(|n| *n == 1));
}

/// Past the stop (the hand-off margin before the deadline), a thing's first request takes no slot and is not sent,
/// while a thing under way still sends until the reserve before the deadline.
#[tokio::test(start_paused = true)]
async fn after_the_stop_only_a_thing_under_way_sends() {
    let deadline = Instant::now() + Duration::from_secs(10);
    let pace = Pace::new(100, 1, deadline, Duration::from_secs(5), Duration::from_secs(1));
    tokio::time::advance(Duration::from_secs(6)).await;
    let stats = Stats::default();
    let sent = AtomicU64::new(0);
    let op = || async {
        sent.fetch_add(1, Ordering::Relaxed);
        Ok::<(), ServiceError>(())
    };
    let first = paced(&pace, &stats, Request::Update, Stage::First, op).await;
    assert!(matches!(first, Err(GaveUp::OutOfTime { attempts: 0, .. })), "{first:?}");
    assert_eq!(sent.load(Ordering::Relaxed), 0, "a first request sent after the stop");
    let under_way = paced(&pace, &stats, Request::Update, Stage::UnderWay, op).await;
    assert!(under_way.is_ok(), "{under_way:?}");
    assert_eq!(sent.load(Ordering::Relaxed), 1);
}

/// A 5xx leaves unknown whether an update took effect: it is returned at once, for the caller to look first; a
/// read's 5xx is retried.
#[tokio::test(start_paused = true)]
async fn an_updates_transient_fault_is_returned_and_a_reads_is_retried() {
    let pace = Pace::new(100, 1, Instant::now() + Duration::from_secs(10), Duration::from_millis(200), Duration::ZERO);
    let stats = Stats::default();
    let calls = AtomicU64::new(0);
    let fails_once = || {
        let n = calls.fetch_add(1, Ordering::Relaxed);
        async move {
            match n {
                0 => Err(ServiceError::new("X", FaultKind::Transient, Some("InternalFailure".into()), "lost")),
                _ => Ok(()),
            }
        }
    };
    let read = paced(&pace, &stats, Request::Read, Stage::First, fails_once).await;
    assert!(read.is_ok(), "{read:?}");
    assert_eq!(calls.swap(0, Ordering::Relaxed), 2, "the read is retried");
    let update = paced(&pace, &stats, Request::Update, Stage::First, fails_once).await;
    assert!(matches!(&update, Err(GaveUp::Final(e)) if e.kind == FaultKind::Transient), "{update:?}");
    assert_eq!(calls.load(Ordering::Relaxed), 1, "the update is not sent again");
}
