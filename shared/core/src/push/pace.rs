//! Pacing: every shadow request of a segment under one rate limit per shadow API (a token bucket each), the
//! segment's claim on the push (its lease), and the retries of one paced request.
//!
//! Time is tokio's clock throughout (the limiter too), so the engine's tests run on a paused clock.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use super::quota::MIN_RATE;
use crate::retry::{Backoff, GaveUp, Retryable, retry_until};
use crate::service::{FaultKind, ServiceError};

/// A token bucket on tokio's clock: requests are given evenly spaced slots, with a burst of 1/20 s worth of slots.
/// A caller learns its slot before it waits, so nothing waits for a slot past the time it may still send. Its rate
/// can change while requests wait (a push's share of the account's quota): the spacing is atomic, the slot a mutex.
#[derive(Debug)]
pub(super) struct Limiter {
    interval_ns: AtomicU64,
    tolerance_ns: AtomicU64,
    next: Mutex<Instant>,
}

impl Limiter {
    fn new(rate: f64) -> Self {
        let limiter =
            Self { interval_ns: AtomicU64::new(0), tolerance_ns: AtomicU64::new(0), next: Mutex::new(Instant::now()) };
        limiter.set_rate(rate);
        limiter
    }

    /// `rate` requests per second from the next slot on (at least [`MIN_RATE`]).
    fn set_rate(&self, rate: f64) {
        let rate = if rate.is_finite() { rate.max(MIN_RATE) } else { MIN_RATE };
        let interval = (1e9 / rate).round() as u64;
        let burst = (rate / 20.0).floor().max(1.0) as u64;
        self.interval_ns.store(interval.max(1), Ordering::Relaxed);
        self.tolerance_ns.store(interval.saturating_mul(burst - 1), Ordering::Relaxed);
    }

    /// Requests per second.
    fn rate(&self) -> f64 {
        1e9 / self.interval_ns.load(Ordering::Relaxed).max(1) as f64
    }

    fn tolerance(&self) -> Duration {
        Duration::from_nanos(self.tolerance_ns.load(Ordering::Relaxed))
    }

    /// The earliest time a request taken at `now` could go.
    pub(super) fn next_slot(&self, now: Instant) -> Instant {
        let next = *self.next.lock().unwrap_or_else(|e| e.into_inner());
        next.max(now.checked_sub(self.tolerance()).unwrap_or(now)).max(now)
    }

    /// Moves the next slot to a random point of the coming interval.
    fn stagger(&self) {
        use rand::Rng;
        let interval = self.interval_ns.load(Ordering::Relaxed);
        let offset = crate::chance::with(|rng| rng.random_range(0..interval.max(1)));
        *self.next.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now() + Duration::from_nanos(offset);
    }

    /// Takes the next slot if it comes before `stop`; returns when it may be used.
    fn take_before(&self, stop: Instant) -> Option<Instant> {
        let now = Instant::now();
        let tolerance = self.tolerance();
        let interval = Duration::from_nanos(self.interval_ns.load(Ordering::Relaxed));
        let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
        let slot = (*next).max(now.checked_sub(tolerance).unwrap_or(now));
        if slot.max(now) >= stop {
            return None;
        }
        *next = slot + interval;
        Some(slot.max(now))
    }
}

/// The segment's claim on the push, as far as the engine needs it: how long the claim is known to hold, and whether
/// it was lost. The handler extends it as it renews the claim; the engine starts nothing it could not finish within.
#[derive(Debug)]
pub struct Lease {
    base: Instant,
    until_ms: AtomicU64,
    lost: AtomicBool,
    halted: AtomicBool,
}

impl Lease {
    pub fn new(until: Instant) -> Self {
        let base = Instant::now();
        Self {
            base,
            until_ms: AtomicU64::new(Self::offset(base, until)),
            lost: AtomicBool::new(false),
            halted: AtomicBool::new(false),
        }
    }

    fn offset(base: Instant, at: Instant) -> u64 {
        at.saturating_duration_since(base).as_millis() as u64
    }

    pub fn until(&self) -> Instant {
        self.base + Duration::from_millis(self.until_ms.load(Ordering::Acquire))
    }

    /// The claim was renewed: it holds at least until `until`.
    pub fn extend(&self, until: Instant) {
        self.until_ms.fetch_max(Self::offset(self.base, until), Ordering::AcqRel);
    }

    /// Another invocation holds the push now: stop starting requests at once.
    pub fn lose(&self) {
        self.lost.store(true, Ordering::Release);
    }

    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::Acquire)
    }

    /// An operator paused or aborted the push: start nothing new, let the things under way finish.
    pub fn halt(&self) {
        self.halted.store(true, Ordering::Release);
    }

    pub fn is_halted(&self) -> bool {
        self.halted.load(Ordering::Acquire)
    }
}

/// How fast and for how long a segment may run.
pub struct Pace {
    /// Shadow updates (`UpdateThingShadow`).
    limiter: Limiter,
    /// Shadow reads (`GetThingShadow`): AWS sets each shadow API's rate apart.
    reads: Limiter,
    pub concurrency: usize,
    /// When the invocation ends.
    pub deadline: Instant,
    /// Stop starting requests at least this long before the deadline (or the end of the lease), so that those in
    /// flight can finish.
    pub hand_off_margin: Duration,
    /// The least time kept back after the last attempt, to record the segment and answer ([`Pace::reserve`]).
    min_reserve: Duration,
    /// The most time kept back: a third of what was left when the segment started, so that it always gets to work.
    max_reserve: Duration,
    /// The slowest request seen in the segment (ms): its shadow requests and listings, and the store calls the
    /// handler reports ([`Pace::observe`]).
    slowest_ms: AtomicU64,
    pub backoff: Backoff,
    lease: Lease,
    /// Stop starting requests this long before the lease ends, so that those in flight end inside it.
    lease_margin: Duration,
}

/// The requests a segment makes after its last attempt, one after another, before it answers: leaving the board of
/// senders, its failures, its record, the hand-off and the record read back, and one to spare.
const TAIL_REQUESTS: u32 = 6;

impl Pace {
    /// `rate` updates per second, and as many reads, each spread evenly (bursts of at most 1/20 s worth).
    pub fn new(rate: u32, concurrency: usize, deadline: Instant, hand_off_margin: Duration, reserve: Duration) -> Self {
        let rate = rate.max(1);
        Self {
            limiter: Limiter::new(f64::from(rate)),
            reads: Limiter::new(f64::from(rate)),
            concurrency: concurrency.max(1),
            deadline,
            hand_off_margin,
            min_reserve: reserve,
            max_reserve: deadline.saturating_duration_since(Instant::now()) / 3,
            slowest_ms: AtomicU64::new(0),
            backoff: Backoff::default(),
            lease: Lease::new(deadline),
            lease_margin: hand_off_margin,
        }
    }

    /// A segment that holds its claim until `until` (and renews it), stopping `margin` before the claim ends.
    pub fn with_lease(mut self, until: Instant, margin: Duration) -> Self {
        self.lease = Lease::new(until);
        self.lease_margin = margin;
        self
    }

    /// Reads paced at `rate` per second, apart from updates.
    pub fn with_read_rate(mut self, rate: u32) -> Self {
        self.reads = Limiter::new(f64::from(rate.max(1)));
        self
    }

    /// Paces updates and reads at these rates (requests per second) from now on: the push's share of the account's
    /// quotas, as it changes while the segment runs.
    pub fn set_rates(&self, updates: f64, reads: f64) {
        self.limiter.set_rate(updates);
        self.reads.set_rate(reads);
    }

    /// Starts each limiter at a random point of its first interval: pushes that start together, at equal shares,
    /// then do not send in step (each interval's requests of all of them arriving at once, a burst that the account's
    /// token bucket answers in part with 429s).
    pub fn stagger(&self) {
        self.limiter.stagger();
        self.reads.stagger();
    }

    /// The rates updates and reads are paced at now.
    pub fn rates(&self) -> (f64, f64) {
        (self.limiter.rate(), self.reads.rate())
    }

    pub(super) fn limiter(&self, request: Request) -> &Limiter {
        match request {
            Request::Read => &self.reads,
            Request::Update => &self.limiter,
        }
    }

    /// Time kept back after the last attempt, to record the segment and answer: the segment's requests after it at
    /// the slowest latency seen so far, at least the reserve it was given (a loaded machine, a slow service: a fixed
    /// reserve would be overrun, and the record written after the deadline, or never).
    pub fn reserve(&self) -> Duration {
        let tail = self.slowest() * TAIL_REQUESTS;
        tail.min(self.max_reserve).max(self.min_reserve)
    }

    fn slowest(&self) -> Duration {
        Duration::from_millis(self.slowest_ms.load(Ordering::Relaxed))
    }

    /// A request of the segment took `took` (the handler's store calls are reported here too): the reserve follows.
    pub fn observe(&self, took: Duration) {
        self.slowest_ms.fetch_max(u64::try_from(took.as_millis()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// `request`, its time observed.
    pub(super) async fn timed<T>(&self, request: impl Future<Output = T>) -> T {
        let asked = Instant::now();
        let answer = request.await;
        self.observe(asked.elapsed());
        answer
    }

    /// The segment's claim: the handler renews it while the segment runs.
    pub fn lease(&self) -> &Lease {
        &self.lease
    }

    /// No request starts at or after this instant.
    pub(super) fn stop_at(&self) -> Instant {
        if self.lease.is_lost() || self.lease.is_halted() {
            return self.lease.base;
        }
        // A thing that starts now has time for one request before the reserve.
        let margin = self.hand_off_margin.max(self.reserve() + self.slowest());
        let by_deadline = self.deadline.checked_sub(margin);
        let by_lease = self.lease.until().checked_sub(self.lease_margin);
        by_deadline.min(by_lease).unwrap_or(self.lease.base)
    }

    /// The last instant a thing already under way may send its next request (its update after its read, a retry):
    /// the reserve before the deadline, and the end of the lease.
    pub(super) fn finish_by(&self) -> Instant {
        if self.lease.is_lost() {
            return self.lease.base;
        }
        let by_deadline = self.deadline.checked_sub(self.reserve()).unwrap_or(self.lease.base);
        by_deadline.min(self.lease.until())
    }

    /// Takes a request slot and waits for it; `false` when none comes before `until` (the request is not sent) or
    /// the lease is lost meanwhile.
    async fn slot(&self, request: Request, until: Instant) -> bool {
        let Some(at) = self.limiter(request).take_before(until) else { return false };
        loop {
            if self.lease.is_lost() {
                return false;
            }
            let now = Instant::now();
            if at <= now {
                return true;
            }
            // Short steps, so that a lost lease stops a waiting request too.
            tokio::time::sleep_until(at.min(now + Duration::from_millis(250))).await;
        }
    }
}

/// Which shadow API a request calls: each has its own rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Request {
    Read,
    Update,
}

#[derive(Default)]
pub(super) struct Stats {
    pub(super) requests: AtomicU64,
    pub(super) throttled: AtomicU64,
}

/// An attempt that got no request slot before the stop, or a service error.
#[derive(Debug)]
enum Attempt {
    NoSlot,
    Service(ServiceError),
    /// A fault after which nobody knows whether the request took effect; not retried blindly.
    Ambiguous(ServiceError),
}

impl Retryable for Attempt {
    fn is_retryable(&self) -> bool {
        match self {
            Self::NoSlot | Self::Ambiguous(_) => false,
            Self::Service(e) => e.is_retryable(),
        }
    }
}

/// Where a thing stands when it sends a request: its first request takes no slot after the stop (the thing is then
/// handed back, unfinished, having sent nothing); a thing already under way (or a retry) may go on until the reserve
/// before the deadline, so that what a segment started, it finishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stage {
    First,
    UnderWay,
}

/// Retries `op` to the deadline, every attempt waiting for a request slot, counting requests and throttles; the
/// thing's `stage` says until when its first attempt may take a slot.
///
/// An update's fault that leaves unknown whether it took effect (a 5xx, a timeout) is not retried here but returned
/// as final, for the caller to look first (an update is not idempotent); a read's is retried.
pub(super) async fn paced<T, Fut>(
    pace: &Pace,
    stats: &Stats,
    kind: Request,
    stage: Stage,
    mut op: impl FnMut() -> Fut,
) -> Result<T, GaveUp<ServiceError>>
where
    Fut: Future<Output = Result<T, ServiceError>>,
{
    let ambiguous_ends = kind == Request::Update;
    let mut first = stage == Stage::First;
    let attempt = || {
        let request = op();
        let until = if first { pace.stop_at() } else { pace.finish_by() };
        first = false;
        async move {
            if !pace.slot(kind, until).await {
                return Err(Attempt::NoSlot);
            }
            stats.requests.fetch_add(1, Ordering::Relaxed);
            pace.timed(request).await.map_err(|e| {
                if ambiguous_ends && e.kind == FaultKind::Transient {
                    Attempt::Ambiguous(e)
                } else {
                    Attempt::Service(e)
                }
            })
        }
    };
    let on_retry = |e: &Attempt| {
        if let Attempt::Service(e) = e
            && e.is_throttling()
        {
            stats.throttled.fetch_add(1, Ordering::Relaxed);
        }
    };
    match retry_until(pace.deadline, pace.reserve(), pace.backoff, attempt, on_retry).await {
        Ok(value) => Ok(value),
        Err(GaveUp::Final(Attempt::Service(e) | Attempt::Ambiguous(e))) => Err(GaveUp::Final(e)),
        Err(GaveUp::Final(Attempt::NoSlot)) => Err(GaveUp::OutOfTime { last: None, attempts: 0 }),
        Err(GaveUp::OutOfTime { last, attempts }) => Err(GaveUp::OutOfTime {
            last: last.and_then(|e| match e {
                Attempt::Service(e) | Attempt::Ambiguous(e) => Some(e),
                Attempt::NoSlot => None,
            }),
            attempts,
        }),
    }
}

#[cfg(test)]
mod tests;
