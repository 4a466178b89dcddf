//! The push engine: walks the targets, paces every shadow request under one rate limit with bounded concurrency,
//! retries what is retryable, and stops in time to hand the rest on.
//!
//! Time is tokio's clock throughout (the limiter too), so the engine's tests run on a paused clock.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use std::marker::PhantomData;

use tokio::time::Instant;

use super::quota::MIN_RATE;
use super::rollout::{RollbackCounts, Rollout, conflict_message, previous_values, rollback_leaves};
use super::targets::{Seen, page};
use super::walker::{self, Meeting, Page, Take, Walk};
use super::{Cursor, Failure, Journal, JournalPage, JournalRef, Previous, PushPlan, Registry, Shadows, Source};
use crate::document::{holds, written_since};
use crate::names::ThingName;
use crate::retry::{Backoff, GaveUp, Retryable, retry_until};
use crate::store::{FaultKind, ServiceError};

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
    /// Stop starting requests this long before the deadline (or the end of the lease), so that those in flight can
    /// finish.
    pub hand_off_margin: Duration,
    /// Time kept back after the last attempt, to record the segment and answer.
    pub reserve: Duration,
    pub backoff: Backoff,
    lease: Lease,
    /// Stop starting requests this long before the lease ends, so that those in flight end inside it.
    lease_margin: Duration,
}

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
            reserve,
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

    /// The segment's claim: the handler renews it while the segment runs.
    pub fn lease(&self) -> &Lease {
        &self.lease
    }

    /// No request starts at or after this instant.
    pub(super) fn stop_at(&self) -> Instant {
        if self.lease.is_lost() || self.lease.is_halted() {
            return self.lease.base;
        }
        let by_deadline = self.deadline.checked_sub(self.hand_off_margin);
        let by_lease = self.lease.until().checked_sub(self.lease_margin);
        by_deadline.min(by_lease).unwrap_or(self.lease.base)
    }

    /// The last instant a thing already under way may send its next request (its update after its read, a retry):
    /// the reserve before the deadline, and the end of the lease.
    pub(super) fn finish_by(&self) -> Instant {
        if self.lease.is_lost() {
            return self.lease.base;
        }
        let by_deadline = self.deadline.checked_sub(self.reserve).unwrap_or(self.lease.base);
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

/// What happened to one thing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ThingOutcome {
    Updated,
    Unchanged,
    /// A dry run found that the thing would be updated.
    WouldUpdate,
    Failed(Failure),
    /// Out of time (or lease) while the thing was being pushed: the next segment does it again.
    Unfinished,
    /// A rollout's thing of an earlier band that an earlier phase took on already: not counted again.
    TakenEarlier,
    /// A thing met again after a refused page token that holds the pushed values: walked before (or holding them
    /// already when it joined), not counted again.
    MetAgain,
}

/// The counts of one segment, and where the next one starts (`cursor: None` when the push is complete).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SegmentOutcome {
    /// Distinct things this segment took on (things redone from an earlier segment are not counted again).
    pub targets: u64,
    /// Updated, or in a dry run: would be updated.
    pub updated: u64,
    pub unchanged: u64,
    pub failed: u64,
    pub requests: u64,
    pub throttled: u64,
    /// DynamoDB requests refused for throughput while the segment ran (counted by the store, not the engine).
    pub store_throttled: u64,
    pub failures: Vec<Failure>,
    pub cursor: Option<Cursor>,
}

/// Where a segment starts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Start {
    pub cursor: Cursor,
    /// When the push started (epoch seconds). A thing whose outcome is uncertain (one to redo, whose last request
    /// may have reached the shadow; or any thing of a segment taken over from a holder that died) is read first:
    /// when its shadow holds the pushed values, written since then, this push updated it, and it is counted as
    /// updated without a second update.
    pub written_since: u64,
    /// This segment takes over one whose holder died: every thing it walks is uncertain.
    pub takeover: bool,
    /// A rollout's phase (0-based): the things of its band are pushed, and each thing's previous values are
    /// recorded before it is updated. A thing of an earlier band that no earlier phase took on (it joined the
    /// targets since) is pushed too, and judged with this phase.
    pub phase: Option<usize>,
    /// When recorded previous values expire (epoch s): with the push's other items.
    pub expires_at: u64,
    /// How many shards the push's journal is spread over (the record's `journalShards`).
    pub journal_shards: u32,
}

/// A journal for pushes without a rollout: nothing is recorded, nothing read back.
pub struct NoJournal;

impl Journal for NoJournal {
    async fn record_previous(&self, _: JournalRef<'_>, _: u64, _: &Previous) -> Result<(), ServiceError> {
        Ok(())
    }
    async fn previous_page(
        &self,
        _: JournalRef<'_>,
        _: Option<u32>,
        _: Option<&str>,
    ) -> Result<JournalPage, ServiceError> {
        Ok(JournalPage::default())
    }
    async fn previous(&self, _: JournalRef<'_>, _: &str) -> Result<Option<Previous>, ServiceError> {
        Ok(None)
    }
}

#[derive(Default)]
struct Stats {
    requests: AtomicU64,
    throttled: AtomicU64,
}

/// Pushes `plan` to the things of `sources`, from `start`, until done or until it is time to hand off.
/// `progress` is called after every thing. Registry errors that stay past the deadline end the segment early with
/// a cursor (nothing is lost); a registry error that is final (an unknown group, a bad query) is reported as a
/// failure of that source, and the other sources go on.
pub async fn run_segment(
    plan: &PushPlan,
    sources: &[Source],
    start: Start,
    shadows: &impl Shadows,
    registry: &impl Registry,
    pace: &Pace,
    progress: impl FnMut(&SegmentOutcome),
) -> SegmentOutcome {
    run_phase_segment(plan, sources, start, shadows, registry, &NoJournal, pace, progress).await
}

/// [`run_segment`] for a rollout's phase (`start.phase`): only the things of the phase's band are taken on, and
/// each thing's previous values go to `journal` before it is updated.
#[allow(clippy::too_many_arguments)]
pub async fn run_phase_segment(
    plan: &PushPlan,
    sources: &[Source],
    start: Start,
    shadows: &impl Shadows,
    registry: &impl Registry,
    journal: &impl Journal,
    pace: &Pace,
    progress: impl FnMut(&SegmentOutcome),
) -> SegmentOutcome {
    let band = start.phase.and_then(|p| plan.rollout.as_ref().map(|r| (r, p)));
    let journal = band.map(|(_, p)| Journaled {
        journal,
        at: JournalRef::new(&plan.push_id, start.journal_shards),
        phase: p as u32 + 1,
        expires_at: start.expires_at,
    });
    let phase = PhaseWalk {
        plan,
        sources,
        registry,
        shadows,
        journal,
        pace,
        stats: Stats::default(),
        document: plan.update_document(),
        since: (!plan.dry_run).then_some(start.written_since),
        band,
        // The first request of the next thing: a read when things are compared first.
        first: if plan.skip_unchanged || band.is_some() || start.takeover { Request::Read } else { Request::Update },
        progress: PhantomData,
    };
    let mut state = PhaseState { out: SegmentOutcome::default(), seen: Seen::default(), progress };
    let cursor = walker::walk(&phase, &mut state, pace, start.cursor, start.takeover).await;
    finish(SegmentOutcome { cursor, ..state.out }, &phase.stats)
}

/// A push segment's walk: the targets' sources, each thing of the phase's band pushed (and journaled, in a rollout).
struct PhaseWalk<'a, S, R, J, P> {
    plan: &'a PushPlan,
    sources: &'a [Source],
    registry: &'a R,
    shadows: &'a S,
    journal: Option<Journaled<'a, J>>,
    pace: &'a Pace,
    stats: Stats,
    document: String,
    since: Option<u64>,
    /// A rollout's plan and phase (0-based).
    band: Option<(&'a Rollout, usize)>,
    first: Request,
    /// The type of the state's progress callback.
    progress: PhantomData<fn() -> P>,
}

struct PhaseState<P> {
    out: SegmentOutcome,
    /// Things already taken on, when a later source could repeat them.
    seen: Seen,
    progress: P,
}

impl<S, R, J, P> PhaseWalk<'_, S, R, J, P> {
    /// A source that failed for good: reported as its failure, and walked no further (an empty last page).
    fn source_failed(&self, state: &mut PhaseState<P>, source: usize, e: &ServiceError) -> Page<String> {
        let failure = Failure::from_error(describe(&self.sources[source]), e);
        tracing::error!(source = %failure.thing_name, error = %e, "target source failed");
        state.out.failed += 1;
        state.out.failures.push(failure);
        Page { items: Vec::new(), next: None, restarted: false }
    }

    /// A late joiner (a thing of an earlier band) counts as a target of this phase once it is taken on; the things
    /// of the band are counted when the walk meets them.
    fn late(&self, name: &str) -> bool {
        self.band.is_some_and(|(rollout, phase)| rollout.phase_of(&self.plan.push_id, name) < phase)
    }

    fn parse(name: String) -> Take<ThingName, (String, ThingOutcome, bool)> {
        match ThingName::parse(name.as_str()) {
            Ok(thing) => Take::Start(thing),
            Err(e) => {
                let outcome = invalid_name(&name, &e);
                Take::Done((name, outcome, false))
            }
        }
    }

    /// Whether a thing of `source` is to be taken on: not met in an earlier source, and of the phase's band or an
    /// earlier one.
    fn admits(&self, state: &mut PhaseState<P>, source: usize, name: &str) -> bool {
        if state.seen.contains(name) {
            return false;
        }
        // A source has no duplicates of its own: remember its things only if a later source could repeat them.
        if source + 1 < self.sources.len() {
            state.seen.insert(name);
        }
        // Later bands wait for their phase; earlier ones are looked up in the journal (push_thing).
        self.band.is_none_or(|(rollout, phase)| rollout.phase_of(&self.plan.push_id, name) <= phase)
    }
}

impl<S: Shadows, R: Registry, J: Journal, P: FnMut(&SegmentOutcome)> Walk for PhaseWalk<'_, S, R, J, P> {
    type Item = String;
    type Entry = ThingName;
    /// The thing, its outcome, and whether it was met again after a refused page token.
    type Done = (String, ThingOutcome, bool);
    type State = PhaseState<P>;

    fn sources(&self) -> usize {
        self.sources.len()
    }

    fn first(&self) -> Request {
        self.first
    }

    async fn resume(&self, state: &mut Self::State, at: &Cursor) -> Result<(), ()> {
        remember_walked(self.plan, self.sources, at, self.registry, self.pace, &self.stats, &mut state.seen).await
    }

    // Things to redo are known targets: they need no de-duplication.
    async fn redo(&self, _: &mut Self::State, name: String) -> Result<Take<ThingName, Self::Done>, ()> {
        Ok(Self::parse(name))
    }

    async fn page(&self, state: &mut Self::State, source: usize, token: Option<&str>) -> Result<Page<String>, ()> {
        match fetch(self.plan, &self.sources[source], token, self.registry, self.pace, &self.stats).await {
            Ok(page) => Ok(Page { items: page.things, next: page.next, restarted: false }),
            Err(GaveUp::OutOfTime { .. }) => Err(()),
            // A saved page token the registry no longer takes (AWS documents no lifetime for them): the source is
            // listed again from its start, and the walk skips what the cursor counts before its position.
            Err(GaveUp::Final(e)) if token.is_some() && refused_token(&e) => {
                tracing::warn!(source = %describe(&self.sources[source]), error = %e,
                    "the registry refused a saved page token; listing the source again from its start");
                match fetch(self.plan, &self.sources[source], None, self.registry, self.pace, &self.stats).await {
                    Ok(page) => Ok(Page { items: page.things, next: page.next, restarted: true }),
                    Err(GaveUp::OutOfTime { .. }) => Err(()),
                    Err(GaveUp::Final(e)) => Ok(self.source_failed(state, source, &e)),
                }
            }
            Err(GaveUp::Final(e)) => Ok(self.source_failed(state, source, &e)),
        }
    }

    fn take(&self, state: &mut Self::State, source: usize, name: String) -> Take<ThingName, Self::Done> {
        if !self.admits(state, source, &name) {
            return Take::Skip;
        }
        if !self.late(&name) {
            state.out.targets += 1;
        }
        Self::parse(name)
    }

    // Counted as a target only if it turns out not to have been walked before (tally).
    fn take_again(&self, state: &mut Self::State, source: usize, name: String) -> Take<ThingName, Self::Done> {
        match ThingName::parse(name.as_str()) {
            Ok(thing) if self.admits(state, source, &name) => Take::Start(thing),
            // Not admitted, or a name already reported as invalid when it was first met.
            _ => Take::Skip,
        }
    }

    async fn start(&self, thing: ThingName, meeting: Meeting) -> Self::Done {
        let (name, outcome) = push_thing(
            self.plan,
            thing,
            &self.document,
            self.since,
            meeting,
            self.shadows,
            self.journal.as_ref(),
            self.pace,
            &self.stats,
        )
        .await;
        (name, outcome, meeting == Meeting::Again)
    }

    fn tally(&self, state: &mut Self::State, (name, outcome, again): Self::Done) -> Option<(String, Meeting)> {
        let out = &mut state.out;
        let counted =
            !matches!(outcome, ThingOutcome::Unfinished | ThingOutcome::TakenEarlier | ThingOutcome::MetAgain);
        // A thing met again that was not walked before joined the source meanwhile: a target now.
        if counted && (again || self.late(&name)) {
            out.targets += 1;
        }
        let redo = match outcome {
            ThingOutcome::Updated | ThingOutcome::WouldUpdate => {
                out.updated += 1;
                None
            }
            ThingOutcome::Unchanged => {
                out.unchanged += 1;
                None
            }
            ThingOutcome::Failed(failure) => {
                out.failed += 1;
                out.failures.push(failure);
                None
            }
            ThingOutcome::Unfinished => Some((name, if again { Meeting::Again } else { Meeting::Uncertain })),
            ThingOutcome::TakenEarlier | ThingOutcome::MetAgain => None,
        };
        (state.progress)(out);
        redo
    }
}

/// Things earlier segments walked, known again so that a thing in two sources is still pushed once: every thing of
/// the sources before the cursor, and the things of the cursor's source before it (when a later source could
/// repeat them). Listing only; `Err` when time ran out first.
async fn remember_walked(
    plan: &PushPlan,
    sources: &[Source],
    walk: &Cursor,
    registry: &impl Registry,
    pace: &Pace,
    stats: &Stats,
    seen: &mut Seen,
) -> Result<(), ()> {
    let in_current = if walk.source + 1 < sources.len() { walk.walked + walk.offset as u64 } else { 0 };
    for (i, source) in sources.iter().enumerate().take(walk.source + 1) {
        let mut wanted = if i < walk.source { u64::MAX } else { in_current };
        let mut token: Option<String> = None;
        while wanted > 0 {
            match fetch(plan, source, token.as_deref(), registry, pace, stats).await {
                Ok(p) => {
                    for thing in p.things.iter().take(usize::try_from(wanted).unwrap_or(usize::MAX)) {
                        seen.insert(thing);
                    }
                    wanted = wanted.saturating_sub(p.things.len() as u64);
                    match p.next {
                        Some(next) => token = Some(next),
                        None => break,
                    }
                }
                Err(GaveUp::OutOfTime { .. }) => return Err(()),
                // A final error here was reported by the segment that walked this source.
                Err(GaveUp::Final(_)) => {
                    tracing::debug!(source = i, "source skipped while rebuilding de-duplication");
                    break;
                }
            }
        }
    }
    Ok(())
}

fn finish(mut out: SegmentOutcome, stats: &Stats) -> SegmentOutcome {
    out.requests = stats.requests.load(Ordering::Relaxed);
    out.throttled = stats.throttled.load(Ordering::Relaxed);
    out
}

/// Whether the registry refused a page token. Asked only of a request that sent a saved token, which differs from
/// the source's first request (that the start checked) by the token alone: `InvalidRequestException`, the one client
/// error ListThingsInThingGroup and SearchIndex document besides throttling and the ones about the group or the
/// query, or a code that names a next token as other AWS APIs answer (`InvalidNextTokenException`).
fn refused_token(e: &ServiceError) -> bool {
    e.kind == FaultKind::Rejected
        && e.code.as_deref().is_some_and(|c| {
            matches!(c, "InvalidRequestException" | "InvalidNextTokenException" | "InvalidTokenException")
        })
}

fn describe(source: &Source) -> String {
    match source {
        Source::Things => "targets.things".into(),
        Source::Group(g) => format!("thingGroup:{g}"),
        Source::Query(q) => format!("query:{q}"),
    }
}

fn invalid_name(name: &str, e: &crate::names::NameError) -> ThingOutcome {
    ThingOutcome::Failed(Failure {
        thing_name: name.to_owned(),
        code: "InvalidThingName".into(),
        message: e.to_string(),
    })
}

async fn fetch(
    plan: &PushPlan,
    source: &Source,
    token: Option<&str>,
    registry: &impl Registry,
    pace: &Pace,
    stats: &Stats,
) -> Result<super::Page, GaveUp<ServiceError>> {
    retry_until(
        pace.deadline,
        pace.reserve,
        pace.backoff,
        || page(plan, source, token, registry),
        |e: &ServiceError| {
            if e.is_throttling() {
                stats.throttled.fetch_add(1, Ordering::Relaxed);
            }
        },
    )
    .await
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

/// Retries `op` to the deadline, every attempt waiting for a request slot, counting requests and throttles.
/// A thing's first request takes no slot after the stop (the thing is then handed back, unfinished, having sent
/// nothing); a thing already under way (`started`, or a retry) may go on until the reserve before the deadline, so
/// that what a segment started, it finishes.
///
/// With `ambiguous_ends`, a fault that leaves unknown whether the request took effect (a 5xx, a timeout) is not
/// retried here but returned as final, for the caller to look first (an update is not idempotent).
async fn paced<T, Fut>(
    pace: &Pace,
    stats: &Stats,
    kind: Request,
    started: bool,
    ambiguous_ends: bool,
    mut op: impl FnMut() -> Fut,
) -> Result<T, GaveUp<ServiceError>>
where
    Fut: Future<Output = Result<T, ServiceError>>,
{
    let mut first = !started;
    let attempt = || {
        let request = op();
        let until = if first { pace.stop_at() } else { pace.finish_by() };
        first = false;
        async move {
            if !pace.slot(kind, until).await {
                return Err(Attempt::NoSlot);
            }
            stats.requests.fetch_add(1, Ordering::Relaxed);
            request.await.map_err(|e| {
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
    match retry_until(pace.deadline, pace.reserve, pace.backoff, attempt, on_retry).await {
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

/// Where a rollout's segment records each thing's previous values.
struct Journaled<'a, J> {
    journal: &'a J,
    at: JournalRef<'a>,
    /// 1-based.
    phase: u32,
    expires_at: u64,
}

/// One thing: read and compare (when skipping unchanged things, or when its outcome is uncertain), then update.
/// One request at a time per thing.
///
/// A thing is uncertain when an update of this push may already have reached it, or may still be on its way: one
/// to redo (its last attempt was cut off), one walked by a takeover (the dead holder may have updated it), and one
/// whose update just failed in a way that does not say whether it was applied (a 5xx, a timeout). An uncertain
/// thing is read first: when it holds the pushed values written since the push started (`since`), this push
/// updated it. Otherwise it is updated at the version just read, so that if the earlier update lands first, AWS
/// refuses this one (409) and the thing is read again. Throttling (429) says the update was not applied: it is
/// retried as it is.
#[allow(clippy::too_many_arguments)]
async fn push_thing<J: Journal>(
    plan: &PushPlan,
    thing: ThingName,
    document: &str,
    since: Option<u64>,
    meeting: Meeting,
    shadows: &impl Shadows,
    journal: Option<&Journaled<'_, J>>,
    pace: &Pace,
    stats: &Stats,
) -> (String, ThingOutcome) {
    let shadow = plan.shadow_name.as_ref();
    let name = thing.to_string();
    let again = meeting == Meeting::Again;
    let mut uncertain = meeting != Meeting::First;
    // A thing of an earlier band: an earlier phase took it on when its journal holds it (from its own band's phase
    // to this one's, as a late joiner is recorded in the phase that found it).
    let band = plan.rollout.as_ref().map(|r| r.phase_of(&plan.push_id, &name) as u32 + 1);
    let earlier = match (journal, band) {
        (Some(j), Some(band)) if band < j.phase => Some((j, band)),
        _ => None,
    };
    if let Some((j, band)) = earlier {
        for phase in band..j.phase {
            let key = Previous { thing_name: name.clone(), phase, values: serde_json::Value::Null }.key();
            let found =
                retry_until(pace.finish_by(), Duration::ZERO, pace.backoff, || j.journal.previous(j.at, &key), |_| {})
                    .await;
            match found {
                Ok(Some(_)) => return (name, ThingOutcome::TakenEarlier),
                Ok(None) => {}
                Err(e) => return (name.clone(), gave_up(&name, e)),
            }
        }
    }
    let (mut looks, mut started) = (0u32, false);
    loop {
        let recognise = uncertain && since.is_some();
        let mut at_version = None;
        if plan.skip_unchanged || recognise || journal.is_some() || again {
            match paced(pace, stats, Request::Read, started, false, || shadows.desired(&thing, shadow)).await {
                Ok(current) => {
                    let current = current.unwrap_or_default();
                    let state = Some(&current.state).filter(|s| !s.is_null());
                    if holds(state, &plan.desired) {
                        // Met again after a refused page token: walked before, or it joined holding the values.
                        if again {
                            tracing::debug!(thing = %name, "met again, holding the pushed values");
                            return (name, ThingOutcome::MetAgain);
                        }
                        if recognise && since.is_some_and(|t| written_since(Some(&current.metadata), &plan.desired, t))
                        {
                            tracing::debug!(thing = %name, outcome = "updated", "already updated by this push");
                            return (name, ThingOutcome::Updated);
                        }
                        // Unchanged things are not journaled: one of an earlier band was counted by its phase (or, a
                        // late joiner already holding the values, is not counted).
                        if plan.skip_unchanged && earlier.is_some() {
                            return (name, ThingOutcome::TakenEarlier);
                        }
                        if plan.skip_unchanged {
                            tracing::debug!(thing = %name, outcome = "unchanged", "unchanged");
                            return (name, ThingOutcome::Unchanged);
                        }
                    }
                    at_version = current.version.filter(|_| recognise);
                    if let Some(j) = journal
                        && !plan.dry_run
                    {
                        let entry = Previous {
                            thing_name: name.clone(),
                            phase: j.phase,
                            values: previous_values(state, &plan.desired),
                        };
                        let recorded = retry_until(
                            pace.finish_by(),
                            Duration::ZERO,
                            pace.backoff,
                            || j.journal.record_previous(j.at, j.expires_at, &entry),
                            |_| {},
                        )
                        .await;
                        if let Err(e) = recorded {
                            return (name.clone(), gave_up(&name, e));
                        }
                    }
                }
                Err(e) => return (name.clone(), gave_up(&name, e)),
            }
            started = true;
        }
        if plan.dry_run {
            return (name, ThingOutcome::WouldUpdate);
        }
        let versioned = at_version.map(|v| plan.update_document_at(v));
        let document = versioned.as_deref().unwrap_or(document);
        let outcome =
            paced(pace, stats, Request::Update, started, true, || shadows.update(&thing, shadow, document)).await;
        started = true;
        match outcome {
            Ok(()) => {
                tracing::debug!(thing = %name, outcome = "updated", checked = recognise, "updated");
                return (name, ThingOutcome::Updated);
            }
            // Someone wrote the shadow since it was read (perhaps this push's own earlier update): look again.
            Err(GaveUp::Final(e)) if at_version.is_some() && e.code.as_deref() == Some(CONFLICT) && looks < 5 => {
                tracing::debug!(thing = %name, "version conflict; reading again");
            }
            // Applied or not, nobody knows: look before updating again.
            Err(GaveUp::Final(e)) if e.kind == FaultKind::Transient && looks < 5 => {
                tracing::debug!(thing = %name, error = %e, "update may have been applied; reading again");
                uncertain = true;
                tokio::time::sleep(crate::chance::with(|rng| pace.backoff.delay(looks, rng))).await;
            }
            Err(e) => return (name.clone(), gave_up(&name, e)),
        }
        looks += 1;
    }
}

/// What a walk over a push's recorded previous values does to each thing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JournalWalk {
    /// Reads each thing phase `phase` (1-based) updated, and counts whether its `reported` holds the pushed values.
    Judge { phase: u32 },
    /// Puts each updated thing back to its previous values, unless someone changed it since.
    Rollback,
}

/// The counts of a judging or rollback segment, and where the next one starts (`None`: the walk is done).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JournalOutcome {
    pub converged: u64,
    pub pending: u64,
    /// Judging: recorded things whose `reported` does not hold the pushed values and whose `desired` no longer does
    /// either (the device or another writer put its own back, or the update failed), or whose shadow is gone.
    pub refused: u64,
    /// Judging: journal entries whose thing name cannot be read: not judged.
    pub not_judged: u64,
    pub rollback: RollbackCounts,
    /// Rollback: things changed since by someone else, left alone; and things that could not be put back.
    pub conflicts: Vec<Failure>,
    pub failures: Vec<Failure>,
    pub requests: u64,
    pub throttled: u64,
    /// DynamoDB requests refused for throughput while the segment ran (counted by the store, not the engine).
    pub store_throttled: u64,
    pub cursor: Option<Cursor>,
}

enum JournalThing {
    Converged,
    Pending,
    Refused,
    NotJudged,
    Restored,
    Untouched,
    Conflict(Failure),
    Failed(Failure),
    /// Out of time: the next segment does it again (its key).
    Unfinished(String),
}

/// Walks the push's recorded previous values (one phase's, to judge it; all, to roll back) from `cursor`, paced
/// like a push segment, until done or until it is time to hand off. `takeover`: a holder died in this walk, so a
/// thing found already put back may be its work (counted as restored). `journal_shards`: the record's.
#[allow(clippy::too_many_arguments)]
pub async fn run_journal_segment(
    plan: &PushPlan,
    walk: JournalWalk,
    cursor: Cursor,
    takeover: bool,
    shadows: &impl Shadows,
    journal: &impl Journal,
    journal_shards: u32,
    pace: &Pace,
) -> JournalOutcome {
    let at = JournalRef::new(&plan.push_id, journal_shards);
    let journaled = JournalWalker { plan, walk, shadows, journal, at, pace, stats: Stats::default() };
    let mut out = JournalOutcome::default();
    out.cursor = walker::walk(&journaled, &mut out, pace, cursor, takeover).await;
    out.requests = journaled.stats.requests.load(Ordering::Relaxed);
    out.throttled = journaled.stats.throttled.load(Ordering::Relaxed);
    out
}

/// A judging or rollback segment's walk: one source, the journal's entries (of one phase, or all).
struct JournalWalker<'a, S, J> {
    plan: &'a PushPlan,
    walk: JournalWalk,
    shadows: &'a S,
    journal: &'a J,
    at: JournalRef<'a>,
    pace: &'a Pace,
    stats: Stats,
}

impl<S: Shadows, J: Journal> Walk for JournalWalker<'_, S, J> {
    type Item = Previous;
    type Entry = Previous;
    type Done = JournalThing;
    type State = JournalOutcome;

    fn sources(&self) -> usize {
        1
    }

    fn first(&self) -> Request {
        Request::Read
    }

    async fn redo(&self, _: &mut JournalOutcome, key: String) -> Result<Take<Previous, JournalThing>, ()> {
        let found = retry_until(
            self.pace.finish_by(),
            Duration::ZERO,
            self.pace.backoff,
            || self.journal.previous(self.at, &key),
            |_| {},
        )
        .await;
        match found {
            Ok(Some(entry)) => Ok(Take::Start(entry)),
            Ok(None) => Ok(Take::Skip),
            Err(_) => Err(()),
        }
    }

    async fn page(&self, _: &mut JournalOutcome, _: usize, token: Option<&str>) -> Result<Page<Previous>, ()> {
        let phase = match self.walk {
            JournalWalk::Judge { phase } => Some(phase),
            JournalWalk::Rollback => None,
        };
        let page = retry_until(
            self.pace.deadline,
            self.pace.reserve,
            self.pace.backoff,
            || self.journal.previous_page(self.at, phase, token),
            |_| {},
        )
        .await;
        match page {
            Ok(page) => Ok(Page { items: page.entries, next: page.next, restarted: false }),
            Err(e) => {
                tracing::warn!(error = ?e, "journal page not read; handing on");
                Err(())
            }
        }
    }

    fn take(&self, _: &mut JournalOutcome, _: usize, entry: Previous) -> Take<Previous, JournalThing> {
        Take::Start(entry)
    }

    fn start(&self, entry: Previous, meeting: Meeting) -> impl Future<Output = JournalThing> + '_ {
        let uncertain = meeting != Meeting::First;
        journal_thing(self.plan, self.walk, entry, uncertain, self.shadows, self.pace, &self.stats)
    }

    fn tally(&self, out: &mut JournalOutcome, done: JournalThing) -> Option<(String, Meeting)> {
        match done {
            JournalThing::Converged => out.converged += 1,
            JournalThing::Pending => out.pending += 1,
            JournalThing::Refused => out.refused += 1,
            JournalThing::NotJudged => out.not_judged += 1,
            JournalThing::Restored => out.rollback.restored += 1,
            JournalThing::Untouched => out.rollback.untouched += 1,
            JournalThing::Conflict(f) => {
                out.rollback.conflicts += 1;
                out.conflicts.push(f);
            }
            JournalThing::Failed(f) => {
                out.rollback.failed += 1;
                out.failures.push(f);
            }
            JournalThing::Unfinished(key) => return Some((key, Meeting::Uncertain)),
        }
        None
    }
}

/// Judges or puts back one thing. A rollback reads first and writes at the version read: a thing that already
/// holds its previous values is left alone (its update never landed, or an earlier attempt put it back), one whose
/// `desired` no longer holds this push's values was changed by someone else since and is a conflict.
async fn journal_thing(
    plan: &PushPlan,
    walk: JournalWalk,
    entry: Previous,
    uncertain: bool,
    shadows: &impl Shadows,
    pace: &Pace,
    stats: &Stats,
) -> JournalThing {
    let shadow = plan.shadow_name.as_ref();
    let key = entry.key();
    let Ok(thing) = ThingName::parse(entry.thing_name.as_str()) else { return JournalThing::NotJudged };
    let mut started = false;
    for _look in 0..5 {
        let current = match paced(pace, stats, Request::Read, started, false, || shadows.desired(&thing, shadow)).await
        {
            // A deleted shadow holds nothing of the push: judged as refused (failed).
            Ok(None) if matches!(walk, JournalWalk::Judge { .. }) => return JournalThing::Refused,
            Ok(current) => current.unwrap_or_default(),
            Err(GaveUp::OutOfTime { .. }) => return JournalThing::Unfinished(key),
            Err(GaveUp::Final(e)) => {
                return match walk {
                    // Not known to have converged.
                    JournalWalk::Judge { .. } => JournalThing::Pending,
                    JournalWalk::Rollback => JournalThing::Failed(Failure::from_error(entry.thing_name, &e)),
                };
            }
        };
        started = true;
        let state = Some(&current.state).filter(|s| !s.is_null());
        match walk {
            // Converged: `reported` holds every pushed leaf, whatever `desired` holds now (a device may apply,
            // report and clear `desired`). Pending while `desired` still holds the push's values; refused after it
            // was changed away from them.
            JournalWalk::Judge { .. } => {
                let reported = Some(&current.reported).filter(|r| !r.is_null());
                return if holds(reported, &plan.desired) {
                    JournalThing::Converged
                } else if holds(state, &plan.desired) {
                    JournalThing::Pending
                } else {
                    JournalThing::Refused
                };
            }
            JournalWalk::Rollback => {
                // Leaf by leaf: only the leaves this push wrote, each put back where it still holds the pushed
                // value; a leaf changed since by another writer is left alone and listed.
                let back = rollback_leaves(state, &plan.desired, &entry.values);
                let conflict = (!back.conflicts.is_empty()).then(|| Failure {
                    thing_name: entry.thing_name.clone(),
                    code: "RollbackConflict".into(),
                    message: conflict_message(&back.conflicts),
                });
                if back.desired.is_empty() {
                    if let Some(conflict) = conflict {
                        tracing::info!(thing = %entry.thing_name, outcome = "conflict", "changed since the push; left alone");
                        return JournalThing::Conflict(conflict);
                    }
                    return if uncertain { JournalThing::Restored } else { JournalThing::Untouched };
                }
                let document = plan.rollback_document(&serde_json::Value::Object(back.desired), current.version);
                let updated =
                    paced(pace, stats, Request::Update, true, true, || shadows.update(&thing, shadow, &document)).await;
                match updated {
                    Ok(()) => return conflict.map_or(JournalThing::Restored, JournalThing::Conflict),
                    Err(GaveUp::OutOfTime { .. }) => return JournalThing::Unfinished(key),
                    // Written meanwhile (409), or perhaps applied (5xx): read again.
                    Err(GaveUp::Final(e)) if e.code.as_deref() == Some(CONFLICT) || e.kind == FaultKind::Transient => {
                        tracing::debug!(thing = %entry.thing_name, error = %e, "rollback: reading again");
                    }
                    Err(GaveUp::Final(e)) => return JournalThing::Failed(Failure::from_error(entry.thing_name, &e)),
                }
            }
        }
    }
    JournalThing::Failed(Failure {
        thing_name: entry.thing_name,
        code: "RollbackContended".into(),
        message: "written by someone else on every attempt".into(),
    })
}

/// The IoT data plane's answer to an update at a version the shadow is no longer at (HTTP 409).
const CONFLICT: &str = "ConflictException";

fn gave_up(thing: &str, e: GaveUp<ServiceError>) -> ThingOutcome {
    match e {
        GaveUp::OutOfTime { .. } => ThingOutcome::Unfinished,
        GaveUp::Final(e) => {
            tracing::warn!(thing, code = e.code.as_deref().unwrap_or("-"), error = %e, "thing not pushed");
            ThingOutcome::Failed(Failure::from_error(thing, &e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::{ShadowName, ThingGroupName};
    use crate::push::{DesiredState, Page, validate_request};
    use crate::store::FaultKind;
    use serde_json::{Value, json};
    use std::collections::HashMap;
    use std::sync::Mutex;

    /// In-memory shadows: desired documents with per-key write times, an update count per thing, a share of
    /// throttled calls, and a latency (on tokio's clock).
    #[derive(Default)]
    struct FakeShadows {
        desired: Mutex<HashMap<String, DesiredState>>,
        updates: Mutex<HashMap<String, u32>>,
        unknown: Vec<String>,
        throttle_every: u64,
        calls: AtomicU64,
        delay: Duration,
        /// Epoch seconds the fake stamps on writes.
        clock_s: AtomicU64,
    }

    impl FakeShadows {
        fn fault(&self, thing: &ThingName) -> Result<(), ServiceError> {
            let n = self.calls.fetch_add(1, Ordering::Relaxed);
            if self.throttle_every > 0 && n.is_multiple_of(self.throttle_every) {
                return Err(ServiceError::new(
                    "X",
                    FaultKind::Throttled,
                    Some("ThrottlingException".into()),
                    "slow down",
                ));
            }
            if self.unknown.iter().any(|u| u == thing.as_str()) {
                return Err(ServiceError::new(
                    "X",
                    FaultKind::Rejected,
                    Some("ResourceNotFoundException".into()),
                    "no such thing",
                ));
            }
            Ok(())
        }

        fn set(&self, thing: &str, desired: Value) {
            let stamp = self.clock_s.load(Ordering::Relaxed);
            let metadata = stamps(&desired, stamp);
            if let Ok(mut d) = self.desired.lock() {
                let version = d.get(thing).and_then(|c| c.version).unwrap_or(0) + 1;
                d.insert(
                    thing.to_owned(),
                    DesiredState { state: desired, metadata, version: Some(version), ..DesiredState::default() },
                );
            }
        }

        fn updates(&self) -> HashMap<String, u32> {
            self.updates.lock().map(|u| u.clone()).unwrap_or_default()
        }
    }

    fn stamps(desired: &Value, t: u64) -> Value {
        match desired {
            Value::Object(fields) => Value::Object(fields.iter().map(|(k, v)| (k.clone(), stamps(v, t))).collect()),
            _ => json!({"timestamp": t}),
        }
    }

    impl Shadows for FakeShadows {
        async fn desired(
            &self,
            thing: &ThingName,
            _: Option<&ShadowName>,
        ) -> Result<Option<DesiredState>, ServiceError> {
            tokio::time::sleep(self.delay).await;
            self.fault(thing)?;
            Ok(self.desired.lock().map(|d| d.get(thing.as_str()).cloned()).unwrap_or_default())
        }

        async fn update(&self, thing: &ThingName, _: Option<&ShadowName>, document: &str) -> Result<(), ServiceError> {
            tokio::time::sleep(self.delay).await;
            self.fault(thing)?;
            let doc: Value = serde_json::from_str(document).unwrap_or_default();
            let current = self.desired.lock().ok().and_then(|d| d.get(thing.as_str()).and_then(|c| c.version));
            if let Some(expected) = doc["version"].as_u64()
                && current != Some(expected)
            {
                return Err(ServiceError::new("X", FaultKind::Rejected, Some("ConflictException".into()), "version"));
            }
            self.set(thing.as_str(), doc["state"]["desired"].clone());
            if let Ok(mut u) = self.updates.lock() {
                *u.entry(thing.to_string()).or_default() += 1;
            }
            Ok(())
        }
    }

    struct FakeRegistry {
        groups: HashMap<String, Vec<String>>,
        children: Vec<String>,
        search: Vec<String>,
        calls: AtomicU64,
        page_size: usize,
        /// Page tokens are refused (`InvalidRequestException`) once older than this, from `epoch`.
        token_ttl: Option<(Duration, Instant)>,
    }

    impl FakeRegistry {
        fn paged(&self, things: &[String], token: Option<&str>) -> Result<Page, ServiceError> {
            self.calls.fetch_add(1, Ordering::Relaxed);
            let (position, issued) = token.and_then(|t| t.split_once('@')).unwrap_or(("0", "0"));
            if let (Some((ttl, epoch)), Some(_)) = (self.token_ttl, token)
                && Instant::now().saturating_duration_since(epoch).as_millis()
                    > issued.parse::<u128>().unwrap_or(0) + ttl.as_millis()
            {
                let code = Some("InvalidRequestException".into());
                return Err(ServiceError::new("L", FaultKind::Rejected, code, "invalid token"));
            }
            let now =
                self.token_ttl.map_or(0, |(_, epoch)| Instant::now().saturating_duration_since(epoch).as_millis());
            let start: usize = position.parse().unwrap_or(0);
            let end = (start + self.page_size).min(things.len());
            let next = (end < things.len()).then(|| format!("{end}@{now}"));
            Ok(Page { things: things[start..end].to_vec(), next })
        }
    }

    impl Registry for FakeRegistry {
        async fn things_in_group(&self, group: &ThingGroupName, token: Option<&str>) -> Result<Page, ServiceError> {
            match self.groups.get(group.as_str()) {
                Some(things) => self.paged(things, token),
                None => Err(ServiceError::new(
                    "L",
                    FaultKind::Rejected,
                    Some("ResourceNotFoundException".into()),
                    "no group",
                )),
            }
        }
        async fn child_groups(&self, _: &ThingGroupName) -> Result<Vec<ThingGroupName>, ServiceError> {
            Ok(self.children.iter().filter_map(|c| ThingGroupName::parse(c.as_str()).ok()).collect())
        }
        async fn search(&self, _: &str, token: Option<&str>) -> Result<Page, ServiceError> {
            self.paged(&self.search, token)
        }
    }

    /// A start checks each source with one request, whatever its size (the paging is the segments'); a group that
    /// does not exist is refused with a sentence that names it.
    #[tokio::test]
    async fn sources_are_checked_with_one_request_each() {
        let mut registry = registry();
        registry.groups.insert("huge".into(), names("h", 100_000));
        let plan = |targets: Value| {
            let request = json!({"pushId": "p", "desired": {"a": 1}, "targets": targets});
            validate_request(&request, 400, None).expect("a valid request")
        };
        let checked = crate::push::check_sources(&plan(json!({"thingGroup": "huge", "query": "q"})), &registry).await;
        assert_eq!(checked.ok(), Some(None));
        assert_eq!(registry.calls.load(Ordering::Relaxed), 2, "one page of the group, one of the query");
        let missing = plan(json!({"thingGroup": "nope", "recursive": true}));
        let checked = crate::push::check_sources(&missing, &registry).await;
        assert_eq!(checked.ok(), Some(Some("thing group nope does not exist".to_owned())));
    }

    fn names(prefix: &str, n: usize) -> Vec<String> {
        (0..n).map(|i| format!("{prefix}{i}")).collect()
    }

    fn registry() -> FakeRegistry {
        FakeRegistry {
            groups: HashMap::from([
                ("prod".to_owned(), names("g", 10)),
                ("child".to_owned(), [names("g", 2), names("c", 5)].concat()),
            ]),
            children: vec!["child".into()],
            search: [names("c", 3), names("s", 4)].concat(),
            calls: AtomicU64::new(0),
            page_size: 3,
            token_ttl: None,
        }
    }

    async fn run_with(
        plan: &PushPlan,
        shadows: &impl Shadows,
        registry: &FakeRegistry,
        pace: &Pace,
        start: Start,
    ) -> SegmentOutcome {
        let sources = super::super::sources_for(plan, registry).await.expect("resolving the sources");
        run_segment(plan, &sources, start, shadows, registry, pace, |_| {}).await
    }

    async fn run(
        plan: &PushPlan,
        shadows: &FakeShadows,
        registry: &FakeRegistry,
        budget: Duration,
        start: Cursor,
    ) -> SegmentOutcome {
        let pace =
            Pace::new(100_000, 8, Instant::now() + budget, Duration::from_millis(200), Duration::from_millis(50));
        run_with(plan, shadows, registry, &pace, Start { cursor: start, ..Start::default() }).await
    }

    fn request(extra: Value) -> PushPlan {
        let mut r = json!({"pushId": "p1", "desired": {"settings": {"mode": 1}},
                           "targets": {"things": ["g0", "x1", "x1"], "thingGroup": "prod", "recursive": true, "query": "q"}});
        if let (Some(r), Value::Object(extra)) = (r.as_object_mut(), extra) {
            r.extend(extra);
        }
        validate_request(&r, 100_000, Some(&|| "id".into())).expect("a valid request")
    }

    /// Runs segments until the push is complete; returns how many it took.
    async fn to_completion(
        plan: &PushPlan,
        shadows: &FakeShadows,
        registry: &FakeRegistry,
        pace: impl Fn() -> Pace,
    ) -> (u32, u64) {
        let (mut cursor, mut segments, mut targets) = (Cursor::default(), 0, 0);
        loop {
            segments += 1;
            let pace = pace();
            let out = run_with(plan, shadows, registry, &pace, Start { cursor, ..Start::default() }).await;
            assert!(Instant::now() < pace.deadline, "segment {segments} ran to its deadline");
            targets += out.targets;
            match out.cursor {
                Some(next) => cursor = next,
                None => return (segments, targets),
            }
            assert!(segments < 200, "no progress");
        }
    }

    /// An in-memory journal: entries by key, put-if-absent as the table's. With a page size, pages are read as a
    /// query reads them, and an empty page with a next key comes between any two (as DynamoDB may answer).
    #[derive(Default)]
    struct FakeJournal(Mutex<std::collections::BTreeMap<String, Previous>>, usize);

    impl Journal for FakeJournal {
        async fn record_previous(&self, _: JournalRef<'_>, _: u64, entry: &Previous) -> Result<(), ServiceError> {
            if let Ok(mut j) = self.0.lock() {
                j.entry(entry.key()).or_insert_with(|| entry.clone());
            }
            Ok(())
        }
        async fn previous_page(
            &self,
            _: JournalRef<'_>,
            phase: Option<u32>,
            after: Option<&str>,
        ) -> Result<JournalPage, ServiceError> {
            if self.1 == 0 {
                return Ok(JournalPage::default());
            }
            let after = match after {
                Some(key) if !key.starts_with('!') => {
                    return Ok(JournalPage { entries: Vec::new(), next: Some(format!("!{key}")) });
                }
                Some(key) => Some(key.trim_start_matches('!').to_owned()),
                None => None,
            };
            let journal = self.0.lock().map(|j| j.clone()).unwrap_or_default();
            let mut left = journal
                .into_iter()
                .filter(|(key, e)| after.as_ref().is_none_or(|a| key > a) && phase.is_none_or(|p| e.phase == p));
            let entries: Vec<Previous> = left.by_ref().take(self.1).map(|(_, e)| e).collect();
            let next = entries.last().filter(|_| left.next().is_some()).map(Previous::key);
            Ok(JournalPage { entries, next })
        }
        async fn previous(&self, _: JournalRef<'_>, key: &str) -> Result<Option<Previous>, ServiceError> {
            Ok(self.0.lock().ok().and_then(|j| j.get(key).cloned()))
        }
    }

    /// A rollback over a journal read in pages, with empty pages between, and segments too short for it: every
    /// thing is put back, once.
    #[tokio::test(start_paused = true)]
    async fn a_journal_walk_goes_on_past_empty_pages_and_across_hand_offs() {
        let request = json!({"pushId": "back", "desired": {"settings": {"mode": 1}}, "targets": {"thingGroup": "prod"},
                             "rollout": {"phases": [{"percent": 50}, {"percent": 100}]}});
        let plan = validate_request(&request, 100_000, None).expect("a valid request");
        let shadows = FakeShadows { delay: Duration::from_millis(100), ..Default::default() };
        let journal = FakeJournal(Mutex::default(), 3);
        let fleet = names("t", 14);
        for (i, name) in fleet.iter().enumerate() {
            shadows.set(name, json!({"settings": {"mode": 1}}));
            let entry = Previous {
                thing_name: name.clone(),
                phase: 1 + (i % 2) as u32,
                values: json!({"settings": {"mode": null}}),
            };
            journal
                .record_previous(JournalRef::new("back", 1), 0, &entry)
                .await
                .expect("recording the previous values");
        }
        let (mut cursor, mut segments, mut restored, mut judged) = (Some(Cursor::default()), 0, 0, 0);
        // Judging phase 1 first, in one segment: its 7 things, every page read.
        let pace =
            Pace::new(100_000, 4, Instant::now() + Duration::from_secs(30), Duration::from_millis(200), Duration::ZERO);
        let judge = run_journal_segment(
            &plan,
            JournalWalk::Judge { phase: 1 },
            Cursor::default(),
            false,
            &shadows,
            &journal,
            1,
            &pace,
        )
        .await;
        judged += judge.pending;
        assert_eq!((judged, &judge.cursor), (7, &None), "{judge:?}");
        while let Some(at) = cursor {
            segments += 1;
            let deadline = Instant::now() + Duration::from_millis(600);
            let pace = Pace::new(100_000, 2, deadline, Duration::from_millis(200), Duration::from_millis(50));
            let out = run_journal_segment(&plan, JournalWalk::Rollback, at, false, &shadows, &journal, 1, &pace).await;
            assert!(out.failures.is_empty() && out.conflicts.is_empty(), "{out:?}");
            restored += out.rollback.restored;
            cursor = out.cursor;
            assert!(segments < 50, "no progress");
        }
        assert!(segments >= 3, "the budget should force hand-offs ({segments})");
        assert_eq!(restored, 14);
        let updates = shadows.updates();
        assert_eq!(updates.len(), 14, "{updates:?}");
        assert!(updates.values().all(|n| *n == 1), "put back twice: {updates:?}");
    }

    /// A journal in shards, in memory, read as the push store reads it: each shard a page of at most 2 entries
    /// after the key, the pages merged ([`super::super::journal::merge_pages`]).
    struct ShardedJournal(Mutex<Vec<std::collections::BTreeMap<String, Previous>>>);

    impl ShardedJournal {
        fn new(shards: usize) -> Self {
            Self(Mutex::new(vec![Default::default(); shards]))
        }
    }

    impl Journal for ShardedJournal {
        async fn record_previous(&self, at: JournalRef<'_>, _: u64, entry: &Previous) -> Result<(), ServiceError> {
            let shard = at.shard_of(&entry.thing_name).unwrap_or(0) as usize;
            if let Ok(mut shards) = self.0.lock() {
                shards[shard].entry(entry.key()).or_insert_with(|| entry.clone());
            }
            Ok(())
        }
        async fn previous_page(
            &self,
            _: JournalRef<'_>,
            phase: Option<u32>,
            after: Option<&str>,
        ) -> Result<JournalPage, ServiceError> {
            use super::super::journal::{ShardPage, merge_pages};
            let shards = self.0.lock().map(|s| s.clone()).unwrap_or_default();
            let pages = shards
                .into_iter()
                .map(|shard| {
                    let mut left = shard
                        .into_values()
                        .filter(|e| after.is_none_or(|a| e.key().as_str() > a) && phase.is_none_or(|p| e.phase == p));
                    let entries: Vec<Previous> = left.by_ref().take(2).collect();
                    let last = entries.last().filter(|_| left.next().is_some()).map(Previous::key);
                    ShardPage { entries, last }
                })
                .collect();
            Ok(merge_pages(pages))
        }
        async fn previous(&self, at: JournalRef<'_>, key: &str) -> Result<Option<Previous>, ServiceError> {
            let thing = key.split_once('#').map_or(key, |(_, t)| t);
            let shard = at.shard_of(thing).unwrap_or(0) as usize;
            Ok(self.0.lock().ok().and_then(|s| s[shard].get(key).cloned()))
        }
    }

    /// A rollback over a journal of 5 shards, in segments too short for it: every thing of every shard is put back
    /// once, and judging counts every thing of its phase.
    #[tokio::test(start_paused = true)]
    async fn a_journal_walk_sees_every_shard_across_hand_offs() {
        let request = json!({"pushId": "sharded", "desired": {"settings": {"mode": 1}},
                             "targets": {"thingGroup": "prod"},
                             "rollout": {"phases": [{"percent": 50}, {"percent": 100}]}});
        let plan = validate_request(&request, 100_000, None).expect("a valid request");
        let shadows = FakeShadows { delay: Duration::from_millis(100), ..Default::default() };
        let journal = ShardedJournal::new(5);
        let at = JournalRef::new("sharded", 5);
        let fleet = names("t", 40);
        for (i, name) in fleet.iter().enumerate() {
            shadows.set(name, json!({"settings": {"mode": 1}}));
            let entry =
                Previous { thing_name: name.clone(), phase: 1 + (i % 2) as u32, values: json!({"settings": null}) };
            journal.record_previous(at, 0, &entry).await.expect("recording the previous values");
        }
        let used = journal.0.lock().map(|s| s.iter().filter(|shard| !shard.is_empty()).count()).unwrap_or(0);
        assert_eq!(used, 5, "40 things spread over every shard");
        let pace =
            Pace::new(100_000, 4, Instant::now() + Duration::from_secs(30), Duration::from_millis(200), Duration::ZERO);
        let judge = run_journal_segment(
            &plan,
            JournalWalk::Judge { phase: 2 },
            Cursor::default(),
            false,
            &shadows,
            &journal,
            5,
            &pace,
        )
        .await;
        assert_eq!((judge.pending, &judge.cursor), (20, &None), "{judge:?}");
        let (mut cursor, mut segments, mut restored) = (Some(Cursor::default()), 0, 0);
        while let Some(from) = cursor {
            segments += 1;
            let deadline = Instant::now() + Duration::from_millis(700);
            let pace = Pace::new(100_000, 2, deadline, Duration::from_millis(200), Duration::from_millis(50));
            let out =
                run_journal_segment(&plan, JournalWalk::Rollback, from, false, &shadows, &journal, 5, &pace).await;
            assert!(out.failures.is_empty() && out.conflicts.is_empty(), "{out:?}");
            restored += out.rollback.restored;
            cursor = out.cursor;
            assert!(segments < 100, "no progress");
        }
        assert!(segments >= 3, "the budget should force hand-offs ({segments})");
        assert_eq!(restored, 40);
        let updates = shadows.updates();
        assert_eq!(updates.len(), 40, "{updates:?}");
        assert!(updates.values().all(|n| *n == 1), "put back twice: {updates:?}");
    }

    /// Runs one phase of a rollout over the group `prod` of `registry` to its end; returns its counts.
    async fn run_phase(
        plan: &PushPlan,
        shadows: &FakeShadows,
        registry: &FakeRegistry,
        journal: &FakeJournal,
        phase: usize,
    ) -> SegmentOutcome {
        let sources = super::super::sources_for(plan, registry).await.expect("resolving the sources");
        let pace = Pace::new(
            100_000,
            8,
            Instant::now() + Duration::from_secs(60),
            Duration::from_millis(200),
            Duration::from_millis(50),
        );
        let start = Start { phase: Some(phase), ..Start::default() };
        let out = run_phase_segment(plan, &sources, start, shadows, registry, journal, &pace, |_| {}).await;
        assert_eq!(out.cursor, None, "one segment is enough: {out:?}");
        out
    }

    #[tokio::test(start_paused = true)]
    async fn things_that_join_after_their_band_walked_are_pushed_in_a_later_phase_once() {
        let request = json!({"pushId": "late", "desired": {"settings": {"mode": 1}}, "targets": {"thingGroup": "prod"},
                             "rollout": {"phases": [{"percent": 30}, {"percent": 60}, {"percent": 100}]}});
        let plan = validate_request(&request, 100_000, None).expect("a valid request");
        let rollout = plan.rollout.clone().expect("a rollout");
        let fleet = names("t", 90);
        let band = |name: &String| rollout.phase_of("late", name);
        let mut registry = registry();
        let (shadows, journal) = (FakeShadows::default(), FakeJournal::default());
        // Phase 1 sees the first 60 things; 30 more join before phase 2, and the last third holds the values already
        // (unchanged, not journaled) before phase 1.
        for name in &fleet[40..60] {
            shadows.set(name, json!({"settings": {"mode": 1}}));
        }
        registry.groups.insert("prod".into(), fleet[..60].to_vec());
        let first = run_phase(&plan, &shadows, &registry, &journal, 0).await;
        registry.groups.insert("prod".into(), fleet.clone());
        let second = run_phase(&plan, &shadows, &registry, &journal, 1).await;
        let third = run_phase(&plan, &shadows, &registry, &journal, 2).await;

        let in_band = |things: &[String], b: usize| things.iter().filter(|t| band(t) == b).count() as u64;
        let late = fleet[60..].iter().filter(|t| band(t) == 0).count() as u64;
        assert!(late > 0, "the draw put no late joiner into band 1");
        assert_eq!(first.targets, in_band(&fleet[..60], 0), "{first:?}");
        assert_eq!(second.targets, in_band(&fleet, 1) + late, "band 2 and the late joiners of band 1: {second:?}");
        assert_eq!(third.targets, in_band(&fleet, 2), "nothing of bands 1 and 2 again: {third:?}");
        assert_eq!(first.targets + second.targets + third.targets, 90);
        let updates = shadows.updates();
        for name in &fleet {
            let expected = u32::from(!fleet[40..60].contains(name));
            assert_eq!(updates.get(name).copied().unwrap_or(0), expected, "{name} (band {})", band(name) + 1);
        }
        let journaled = journal.0.lock().map(|j| j.values().cloned().collect::<Vec<_>>()).unwrap_or_default();
        for entry in journaled.iter().filter(|e| fleet[60..].contains(&e.thing_name) && band(&e.thing_name) == 0) {
            assert_eq!(entry.phase, 2, "a late joiner is judged with the phase that found it: {entry:?}");
        }
        assert_eq!(journaled.len(), 70, "every updated thing journaled once");
    }

    #[tokio::test(start_paused = true)]
    async fn union_without_duplicates_then_nothing_left_to_change() {
        let (shadows, registry) = (FakeShadows::default(), registry());
        let plan = request(json!({}));
        let out = run(&plan, &shadows, &registry, Duration::from_secs(30), Cursor::default()).await;
        // g0 x1 | g0..g9 | g0 g1 c0..c4 | c0..c2 s0..s3  => g0..g9, x1, c0..c4, s0..s3 = 20
        assert_eq!((out.targets, out.updated, out.failed, out.cursor.clone()), (20, 20, 0, None));
        let updates = shadows.updates();
        assert_eq!(updates.len(), 20);
        assert!(updates.values().all(|n| *n == 1), "{updates:?}");

        let again = run(&plan, &shadows, &registry, Duration::from_secs(30), Cursor::default()).await;
        assert_eq!((again.targets, again.updated, again.unchanged), (20, 0, 20));
        assert!(shadows.updates().values().all(|n| *n == 1));
    }

    #[tokio::test(start_paused = true)]
    async fn dry_run_writes_nothing() {
        let (shadows, registry) = (FakeShadows::default(), registry());
        shadows.set("g3", json!({"settings": {"mode": 1, "other": 2}}));
        let out =
            run(&request(json!({"dryRun": true})), &shadows, &registry, Duration::from_secs(30), Cursor::default())
                .await;
        assert_eq!((out.targets, out.updated, out.unchanged), (20, 19, 1));
        assert!(shadows.updates().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn unknown_things_fail_alone_and_throttling_is_retried() {
        let shadows = FakeShadows { unknown: vec!["x1".into()], throttle_every: 3, ..Default::default() };
        let out = run(&request(json!({})), &shadows, &registry(), Duration::from_secs(30), Cursor::default()).await;
        assert_eq!((out.updated, out.failed), (19, 1));
        assert_eq!(out.failures[0].thing_name, "x1");
        assert_eq!(out.failures[0].code, "ResourceNotFoundException");
        assert!(out.throttled > 5, "{}", out.throttled);
    }

    #[tokio::test(start_paused = true)]
    async fn an_unknown_group_fails_as_a_source_and_the_rest_goes_on() {
        let shadows = FakeShadows::default();
        let mut registry = registry();
        registry.groups.remove("prod");
        let out = run(&request(json!({})), &shadows, &registry, Duration::from_secs(30), Cursor::default()).await;
        assert_eq!(out.failures.iter().map(|f| f.thing_name.as_str()).collect::<Vec<_>>(), ["thingGroup:prod"]);
        assert_eq!(out.updated, 12, "g0 x1 | (prod fails) | g1 c0..c4 | s0..s3");
    }

    #[tokio::test(start_paused = true)]
    async fn segments_hand_off_and_every_thing_is_updated_once() {
        let shadows = FakeShadows { delay: Duration::from_millis(100), ..Default::default() };
        let registry = registry();
        let plan = request(json!({"skipUnchanged": false}));
        let pace = || {
            let deadline = Instant::now() + Duration::from_millis(320);
            Pace::new(100_000, 8, deadline, Duration::from_millis(200), Duration::from_millis(50))
        };
        let (segments, targets) = to_completion(&plan, &shadows, &registry, pace).await;
        assert!(segments >= 2, "the budget should force hand-offs ({segments})");
        assert_eq!(targets, 20);
        let updates = shadows.updates();
        assert_eq!(updates.len(), 20);
        assert!(updates.values().all(|n| *n == 1), "{updates:?}");
    }

    /// A thing in a group and in its child group, with a hand-off inside the group: still pushed once.
    #[tokio::test(start_paused = true)]
    async fn a_hand_off_inside_a_source_remembers_what_it_walked() {
        let shadows = FakeShadows { delay: Duration::from_millis(100), ..Default::default() };
        let mut registry = registry();
        registry.groups.insert("prod".into(), names("g", 30));
        registry.groups.insert("child".into(), [names("g", 30), names("c", 2)].concat());
        let plan = request(json!({"skipUnchanged": false, "targets": {"thingGroup": "prod", "recursive": true}}));
        let pace = || {
            let deadline = Instant::now() + Duration::from_millis(500);
            Pace::new(100_000, 4, deadline, Duration::from_millis(200), Duration::from_millis(50))
        };
        let (segments, targets) = to_completion(&plan, &shadows, &registry, pace).await;
        assert!(segments >= 3, "{segments}");
        assert_eq!(targets, 32);
        let updates = shadows.updates();
        assert_eq!(updates.len(), 32);
        assert!(
            updates.values().all(|n| *n == 1),
            "pushed twice: {:?}",
            updates.iter().filter(|(_, n)| **n > 1).collect::<Vec<_>>()
        );
    }

    /// Page tokens that expire between segments (a pause, a slow hand-off), in a group and in a query after it:
    /// each source is listed again from its start, and every thing is pushed once, none skipped.
    #[tokio::test(start_paused = true)]
    async fn a_refused_page_token_lists_the_source_again_and_meets_again_what_was_done() {
        let shadows = FakeShadows { delay: Duration::from_millis(100), ..Default::default() };
        let mut registry = registry();
        registry.groups.insert("prod".into(), names("g", 30));
        registry.search = names("s", 20);
        registry.token_ttl = Some((Duration::from_secs(1), Instant::now()));
        let plan = request(json!({"skipUnchanged": false, "targets": {"thingGroup": "prod", "query": "q"}}));
        let (mut cursor, mut segments, mut targets, mut refused) = (Cursor::default(), 0, 0, 0);
        loop {
            segments += 1;
            let deadline = Instant::now() + Duration::from_millis(500);
            let pace = Pace::new(100_000, 4, deadline, Duration::from_millis(200), Duration::from_millis(50));
            let out = run_with(&plan, &shadows, &registry, &pace, Start { cursor, ..Start::default() }).await;
            targets += out.targets;
            assert_eq!(out.failed, 0, "segment {segments}: {:?}", out.failures);
            match out.cursor {
                Some(next) => cursor = next,
                None => break,
            }
            // The next segment comes after the saved token's lifetime.
            refused += u32::from(cursor.token.is_some());
            tokio::time::advance(Duration::from_secs(2)).await;
            assert!(segments < 100, "no progress");
        }
        assert!(refused >= 2, "too few saved tokens were refused ({refused} in {segments} segments)");
        assert_eq!(targets, 50);
        let updates = shadows.updates();
        assert_eq!(updates.len(), 50, "things skipped");
        let twice: Vec<_> = updates.iter().filter(|(_, n)| **n > 1).collect();
        assert!(twice.is_empty(), "pushed twice: {twice:?}");
    }

    /// A group whose members change between the listing that saved a token and the one that replaces it: a thing
    /// that joined at the front, and one of those walked before that left. Every member is pushed once: the joiner
    /// is not skipped and no thing walked before is pushed again (a skip by position would do both).
    #[tokio::test(start_paused = true)]
    async fn a_refused_page_token_after_the_group_changed_pushes_each_member_once() {
        let shadows = FakeShadows { delay: Duration::from_millis(100), ..Default::default() };
        let mut registry = registry();
        registry.groups.insert("prod".into(), names("g", 30));
        registry.token_ttl = Some((Duration::from_secs(1), Instant::now()));
        for skip_unchanged in [false, true] {
            let plan = request(json!({"skipUnchanged": skip_unchanged, "targets": {"thingGroup": "prod"}}));
            let shadows = FakeShadows { delay: shadows.delay, ..Default::default() };
            registry.groups.insert("prod".into(), names("g", 30));
            let (mut cursor, mut segments, mut targets, mut updated) = (Cursor::default(), 0, 0, 0);
            loop {
                segments += 1;
                let deadline = Instant::now() + Duration::from_millis(500);
                let pace = Pace::new(100_000, 4, deadline, Duration::from_millis(200), Duration::from_millis(50));
                let out = run_with(&plan, &shadows, &registry, &pace, Start { cursor, ..Start::default() }).await;
                (targets, updated) = (targets + out.targets, updated + out.updated);
                match out.cursor {
                    Some(next) => cursor = next,
                    None => break,
                }
                if segments == 1 {
                    assert!(cursor.token.is_some() && cursor.walked >= 6, "{cursor:?}");
                    // Between the listings: one joins at the front, one walked already leaves.
                    let members = registry.groups.get_mut("prod").expect("the group");
                    members.insert(0, "a-joiner".into());
                    members.retain(|m| m != "g1");
                }
                tokio::time::advance(Duration::from_secs(2)).await;
                assert!(segments < 100, "no progress");
            }
            let updates = shadows.updates();
            let twice: Vec<_> = updates.iter().filter(|(_, n)| **n > 1).collect();
            assert!(twice.is_empty(), "skipUnchanged {skip_unchanged}: pushed twice: {twice:?}");
            assert!(updates.contains_key("a-joiner"), "skipUnchanged {skip_unchanged}: the joiner was skipped");
            // All 30 first members (g1 before it left) and the joiner.
            assert_eq!(updates.len(), 31, "skipUnchanged {skip_unchanged}: {updates:?}");
            assert_eq!((targets, updated), (31, 31), "skipUnchanged {skip_unchanged}");
        }
    }

    /// A cursor past the last source with a few things to redo lists nothing.
    #[tokio::test(start_paused = true)]
    async fn redoing_a_few_things_lists_no_source() {
        let (shadows, registry) = (FakeShadows::default(), registry());
        let plan = request(json!({}));
        let sources = super::super::sources_for(&plan, &registry).await.expect("resolving the sources");
        let listed = registry.calls.load(Ordering::Relaxed);
        let cursor = Cursor { source: sources.len(), redo: vec!["g1".into(), "s3".into()], ..Cursor::default() };
        let out = run(&plan, &shadows, &registry, Duration::from_secs(30), cursor).await;
        assert_eq!((out.updated, out.cursor.clone()), (2, None), "{out:?}");
        assert_eq!(registry.calls.load(Ordering::Relaxed), listed, "a source was listed again");
    }

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

    /// A lost lease stops the segment at once: nothing more is sent.
    #[tokio::test(start_paused = true)]
    async fn a_lost_lease_stops_the_segment() {
        let shadows = FakeShadows { delay: Duration::from_millis(10), ..Default::default() };
        let mut registry = registry();
        registry.groups.insert("prod".into(), names("g", 100));
        let plan = request(json!({"skipUnchanged": false, "targets": {"thingGroup": "prod"}}));
        let pace =
            Pace::new(50, 4, Instant::now() + Duration::from_secs(60), Duration::from_millis(200), Duration::ZERO);
        let sources = super::super::sources_for(&plan, &registry).await.expect("resolving the sources");
        let run = run_segment(&plan, &sources, Start::default(), &shadows, &registry, &pace, |_| {});
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
        let pace =
            Pace::new(100, 8, Instant::now() + Duration::from_secs(900), Duration::from_millis(500), Duration::ZERO);
        pace.lease().extend(Instant::now() + Duration::from_secs(2));
        let lease = Lease::new(Instant::now() + Duration::from_secs(2));
        assert_eq!(lease.until(), Instant::now() + Duration::from_secs(2));
        // The lease starts at the deadline; a renewal cannot shorten it, so build a pace whose lease is short.
        let mut short =
            Pace::new(100, 8, Instant::now() + Duration::from_secs(900), Duration::from_millis(500), Duration::ZERO);
        short.lease = lease;
        let sources = super::super::sources_for(&plan, &registry).await.expect("resolving the sources");
        let out = run_segment(&plan, &sources, Start::default(), &shadows, &registry, &short, |_| {}).await;
        assert!(Instant::now() <= short.lease().until(), "ran past its lease");
        assert!((140..=160).contains(&out.updated), "{}", out.updated);
    }

    /// Taking over a dead segment: the things it updated are recognised by their write time and not updated again.
    #[tokio::test(start_paused = true)]
    async fn a_takeover_recognises_what_the_dead_segment_did() {
        let shadows = FakeShadows::default();
        let mut registry = registry();
        registry.groups.insert("prod".into(), names("g", 10));
        let plan = request(json!({"skipUnchanged": false, "targets": {"thingGroup": "prod"}}));
        // Before the push: g9 already held the value (written at t=100); the dead segment (started t=1000)
        // updated g0..g3 at t=1000.
        shadows.clock_s.store(100, Ordering::Relaxed);
        shadows.set("g9", json!({"settings": {"mode": 1}}));
        shadows.clock_s.store(1000, Ordering::Relaxed);
        for i in 0..4 {
            shadows.set(&format!("g{i}"), json!({"settings": {"mode": 1}}));
        }
        let pace =
            Pace::new(1000, 8, Instant::now() + Duration::from_secs(30), Duration::from_millis(200), Duration::ZERO);
        let start = Start { cursor: Cursor::default(), written_since: 1000, takeover: true, ..Start::default() };
        let out = run_with(&plan, &shadows, &registry, &pace, start).await;
        assert_eq!((out.targets, out.updated, out.unchanged), (10, 10, 0), "{out:?}");
        let updates = shadows.updates();
        let mut updated: Vec<&String> = updates.keys().collect();
        updated.sort();
        assert_eq!(
            updated,
            ["g4", "g5", "g6", "g7", "g8", "g9"],
            "g0..g3 were done; g9 is updated (skipUnchanged false)"
        );
    }

    /// Things handed back unfinished may have been updated (their last request was cut off): the next segment
    /// recognises those, even without skipUnchanged, and updates only the others.
    #[tokio::test(start_paused = true)]
    async fn things_to_redo_are_checked_before_they_are_updated_again() {
        let shadows = FakeShadows::default();
        let registry = registry();
        let plan = request(json!({"skipUnchanged": false, "targets": {"things": ["a", "b"]}}));
        shadows.clock_s.store(1000, Ordering::Relaxed);
        shadows.set("a", json!({"settings": {"mode": 1}}));
        let pace =
            Pace::new(1000, 8, Instant::now() + Duration::from_secs(30), Duration::from_millis(200), Duration::ZERO);
        let cursor = Cursor { source: 1, redo: vec!["a".into(), "b".into()], ..Cursor::default() };
        let out = run_with(
            &plan,
            &shadows,
            &registry,
            &pace,
            Start { cursor, written_since: 1000, takeover: false, ..Start::default() },
        )
        .await;
        assert_eq!((out.updated, out.cursor.clone()), (2, None), "{out:?}");
        assert_eq!(shadows.updates().keys().collect::<Vec<_>>(), ["b"]);
    }

    /// An uncertain thing's earlier update lands between the read and the new update: the new one is refused at
    /// the version read (409), the thing is read again and recognised, and it is updated once.
    #[tokio::test(start_paused = true)]
    async fn a_late_update_is_not_applied_twice() {
        struct Late {
            inner: FakeShadows,
            reads: AtomicU64,
        }
        impl Shadows for Late {
            async fn desired(
                &self,
                thing: &ThingName,
                shadow: Option<&ShadowName>,
            ) -> Result<Option<DesiredState>, ServiceError> {
                let read = self.inner.desired(thing, shadow).await;
                // Right after the first read, the update an earlier segment sent lands.
                if self.reads.fetch_add(1, Ordering::SeqCst) == 0 {
                    self.inner.set(thing.as_str(), json!({"settings": {"mode": 1}}));
                }
                read
            }
            async fn update(
                &self,
                thing: &ThingName,
                shadow: Option<&ShadowName>,
                doc: &str,
            ) -> Result<(), ServiceError> {
                self.inner.update(thing, shadow, doc).await
            }
        }
        let shadows = Late { inner: FakeShadows::default(), reads: AtomicU64::new(0) };
        shadows.inner.clock_s.store(1000, Ordering::Relaxed);
        shadows.inner.set("a", json!({"settings": {"mode": 0}}));
        let registry = registry();
        let plan = request(json!({"skipUnchanged": false, "targets": {"things": ["a"]}}));
        let pace =
            Pace::new(1000, 8, Instant::now() + Duration::from_secs(30), Duration::from_millis(200), Duration::ZERO);
        let cursor = Cursor { source: 1, redo: vec!["a".into()], ..Cursor::default() };
        let out = run_with(
            &plan,
            &shadows,
            &registry,
            &pace,
            Start { cursor, written_since: 1000, takeover: false, ..Start::default() },
        )
        .await;
        assert_eq!((out.updated, out.failed), (1, 0), "{out:?}");
        assert!(shadows.inner.updates().is_empty(), "updated again: {:?}", shadows.inner.updates());
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

    /// An update applied but answered with a 500 (or cut off by a timeout): the thing is read again, recognised as
    /// updated by this push, and not updated a second time. A 429 is retried as it is.
    #[tokio::test(start_paused = true)]
    async fn an_update_whose_answer_was_lost_is_not_sent_again() {
        struct Lossy {
            inner: FakeShadows,
            updates: AtomicU64,
        }
        impl Shadows for Lossy {
            async fn desired(
                &self,
                thing: &ThingName,
                shadow: Option<&ShadowName>,
            ) -> Result<Option<DesiredState>, ServiceError> {
                self.inner.desired(thing, shadow).await
            }
            async fn update(
                &self,
                thing: &ThingName,
                shadow: Option<&ShadowName>,
                doc: &str,
            ) -> Result<(), ServiceError> {
                self.inner.update(thing, shadow, doc).await?;
                // The first update is applied, and its answer lost.
                if self.updates.fetch_add(1, Ordering::SeqCst) == 0 {
                    return Err(ServiceError::new("X", FaultKind::Transient, Some("InternalFailure".into()), "lost"));
                }
                Ok(())
            }
        }
        let shadows = Lossy { inner: FakeShadows::default(), updates: AtomicU64::new(0) };
        shadows.inner.clock_s.store(1000, Ordering::Relaxed);
        let registry = registry();
        let plan = request(json!({"skipUnchanged": false, "targets": {"things": ["a"]}}));
        let pace =
            Pace::new(1000, 8, Instant::now() + Duration::from_secs(30), Duration::from_millis(200), Duration::ZERO);
        let start = Start { cursor: Cursor::default(), written_since: 1000, takeover: false, ..Start::default() };
        let out = run_with(&plan, &shadows, &registry, &pace, start).await;
        assert_eq!((out.updated, out.failed), (1, 0), "{out:?}");
        assert_eq!(shadows.inner.updates().get("a"), Some(&1), "sent again");
    }
}
