//! The phase walk: a push segment walks the targets' sources and pushes each thing (of the phase's band, in a
//! rollout, journaling its previous values first), paced, until done or until it is time to hand the rest on.

use std::collections::VecDeque;
use std::marker::PhantomData;
use std::sync::atomic::Ordering;

use super::engine::{NoJournal, Segment, SegmentOutcome, SegmentStart, ThingOutcome};
use super::pace::{Request, Stats};
use super::rollout::Rollout;
use super::targets::{Seen, page};
use super::thing::{Journaled, Pushing, push_thing};
use super::walker::{self, Course, Meeting, Page, Take};
use super::{Cursor, Failure, Journal, Registry, Shadows, Source};
use crate::names::ThingName;
use crate::retry::{GaveUp, retry_until};
use crate::service::{FaultKind, ServiceError};

/// Pushes the segment's plan to the things of its sources, from `start`, until done or until it is time to hand off.
/// `progress` is called after every thing. Registry errors that stay past the deadline end the segment early with
/// a cursor (nothing is lost); a registry error that is final (an unknown group, a bad query) is reported as a
/// failure of that source, and the other sources go on.
pub async fn run_segment<S: Shadows, R: Registry>(
    segment: &Segment<'_, S, R, NoJournal>,
    start: SegmentStart,
    progress: impl FnMut(&SegmentOutcome),
) -> SegmentOutcome {
    run_phase_segment(segment, start, progress).await
}

/// [`run_segment`] for a rollout's phase (`start.phase`): only the things of the phase's band are taken on, and
/// each thing's previous values go to the segment's journal before it is updated.
pub async fn run_phase_segment<S: Shadows, R: Registry, J: Journal>(
    segment: &Segment<'_, S, R, J>,
    start: SegmentStart,
    progress: impl FnMut(&SegmentOutcome),
) -> SegmentOutcome {
    let Segment { plan, pace, .. } = *segment;
    let band = start.phase.and_then(|p| plan.rollout.as_ref().map(|r| (r, p)));
    let journal = band.map(|(_, p)| Journaled {
        journal: segment.journal,
        at: segment.journal_at(),
        phase: p as u32 + 1,
        expires_at: start.expires_at,
    });
    let stats = Stats::default();
    let thing = Pushing {
        segment,
        stats: &stats,
        journal,
        document: plan.update_document(),
        since: (!plan.dry_run).then_some(start.written_since),
    };
    let phase = PhaseCourse {
        segment,
        stats: &stats,
        thing,
        band,
        // The first request of the next thing: a read when things are compared first.
        first: if plan.skip_unchanged || band.is_some() || start.takeover { Request::Read } else { Request::Update },
        progress: PhantomData,
    };
    let mut state = PhaseState { out: SegmentOutcome::default(), seen: Seen::default(), progress };
    let cursor = walker::follow(&phase, &mut state, pace, start.cursor, start.takeover).await;
    finish(SegmentOutcome { cursor, ..state.out }, &stats)
}

/// A push segment's course: the targets' sources, each thing of the phase's band pushed (and journaled, in a rollout).
struct PhaseCourse<'a, S, R, J, P> {
    segment: &'a Segment<'a, S, R, J>,
    stats: &'a Stats,
    /// What each thing is pushed with.
    thing: Pushing<'a, S, R, J>,
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

impl<S, R, J, P> PhaseCourse<'_, S, R, J, P> {
    /// A source that failed for good: reported as its failure, and walked no further (an empty last page).
    fn source_failed(&self, state: &mut PhaseState<P>, source: usize, e: &ServiceError) -> Page<String> {
        let failure = Failure::from_error(describe(&self.segment.sources[source]), e);
        tracing::error!(source = %failure.thing_name, error = %e, "target source failed");
        state.out.failed += 1;
        state.out.failures.push(failure);
        Page { items: Vec::new(), next: None, restarted: false }
    }

    /// A late joiner (a thing of an earlier band) counts as a target of this phase once it is taken on; the things
    /// of the band are counted when the walk meets them.
    fn late(&self, name: &str) -> bool {
        self.band.is_some_and(|(rollout, phase)| rollout.phase_of(&self.segment.plan.push_id, name) < phase)
    }

    fn parse(name: String) -> Take<ThingName, (String, ThingOutcome, Meeting)> {
        match ThingName::parse(name.as_str()) {
            Ok(thing) => Take::Start(thing),
            Err(e) => {
                let outcome = invalid_name(&name, &e);
                Take::Done((name, outcome, Meeting::First))
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
        if source + 1 < self.segment.sources.len() {
            state.seen.insert(name);
        }
        // Later bands wait for their phase; earlier ones are looked up in the journal (push_thing).
        self.band.is_none_or(|(rollout, phase)| rollout.phase_of(&self.segment.plan.push_id, name) <= phase)
    }
}

impl<S: Shadows, R: Registry, J: Journal, P: FnMut(&SegmentOutcome)> Course for PhaseCourse<'_, S, R, J, P> {
    type Item = String;
    type Entry = ThingName;
    /// The thing, its outcome, and whether it was met again after a refused page token.
    type Done = (String, ThingOutcome, Meeting);
    type State = PhaseState<P>;

    fn sources(&self) -> usize {
        self.segment.sources.len()
    }

    fn first(&self) -> Request {
        self.first
    }

    async fn resume(&self, state: &mut Self::State, at: &Cursor) -> Result<(), ()> {
        remember_walked(self.segment, self.stats, at, &mut state.seen).await
    }

    // Things to redo are known targets: they need no de-duplication.
    async fn redo(&self, _: &mut Self::State, name: String) -> Result<Take<ThingName, Self::Done>, ()> {
        Ok(Self::parse(name))
    }

    async fn page(&self, state: &mut Self::State, source: usize, token: Option<&str>) -> Result<Page<String>, ()> {
        match fetch(self.segment, self.stats, &self.segment.sources[source], token).await {
            Ok(page) => Ok(Page { items: page.things, next: page.next, restarted: false }),
            Err(GaveUp::OutOfTime { .. }) => Err(()),
            // A saved page token the registry no longer takes (AWS documents no lifetime for them): the source is
            // listed again from its start, and the walk skips what the cursor counts before its position.
            Err(GaveUp::Final(e)) if token.is_some() && refused_token(&e) => {
                tracing::warn!(source = %describe(&self.segment.sources[source]), error = %e,
                    "the registry refused a saved page token; listing the source again from its start");
                match fetch(self.segment, self.stats, &self.segment.sources[source], None).await {
                    Ok(page) => Ok(Page { items: page.things, next: page.next, restarted: true }),
                    Err(GaveUp::OutOfTime { .. }) => Err(()),
                    Err(GaveUp::Final(e)) => Ok(self.source_failed(state, source, &e)),
                }
            }
            Err(GaveUp::Final(e)) => Ok(self.source_failed(state, source, &e)),
        }
    }

    fn name<'i>(&self, item: &'i String) -> Option<&'i str> {
        Some(item)
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
        let (name, outcome) = push_thing(&self.thing, thing, meeting).await;
        (name, outcome, meeting)
    }

    fn tally(&self, state: &mut Self::State, (name, outcome, meeting): Self::Done) -> Option<(String, Meeting)> {
        let out = &mut state.out;
        let counted =
            !matches!(outcome, ThingOutcome::Unfinished | ThingOutcome::TakenEarlier | ThingOutcome::MetAgain);
        // A thing met again that was not walked before joined the source meanwhile: a target now.
        let again = matches!(meeting, Meeting::Again | Meeting::Beyond);
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
            ThingOutcome::Unfinished => Some((name, if again { meeting } else { Meeting::Uncertain })),
            ThingOutcome::TakenEarlier | ThingOutcome::MetAgain => None,
        };
        (state.progress)(out);
        redo
    }
}

/// Things earlier segments walked, known again so that a thing in two sources is still pushed once: every thing of
/// the sources before the cursor, and the things of the cursor's source before it (when a later source could
/// repeat them). Listing only; `Err` when time ran out first.
/// How many of the current source's things before the count a segment rebuilding its de-duplication holds back
/// until it has found the last thing taken: as many members may have left the walked stretch.
const HELD_BACK: usize = 1000;

async fn remember_walked<S, R: Registry, J>(
    segment: &Segment<'_, S, R, J>,
    stats: &Stats,
    at: &Cursor,
    seen: &mut Seen,
) -> Result<(), ()> {
    let sources = segment.sources;
    let in_current = if at.source + 1 < sources.len() { at.walked + at.offset as u64 } else { 0 };
    for (i, source) in sources.iter().enumerate().take(at.source + 1) {
        let current = i == at.source;
        let wanted = if current { in_current } else { u64::MAX };
        // In the current source, what was walked ends at the latest of the last things taken (`Cursor::last`) still
        // listed, so that things that left or joined before it shift nothing; counted, when all of those left. The
        // listing goes a page past the count to find them. Only the things near the count are held back: those
        // further before it than `HELD_BACK` were walked unless as many members left the stretch.
        let (mut held, mut token, mut pages_past) = (VecDeque::new(), None::<String>, 0);
        let (mut listed, mut settled) = (0u64, 0u64);
        while listed < wanted || (current && !at.last.is_empty() && pages_past < 1) {
            if listed >= wanted {
                pages_past += 1;
            }
            match fetch(segment, stats, source, token.as_deref()).await {
                Ok(p) => {
                    let ends = current && p.things.iter().any(|t| at.last.last() == Some(t));
                    listed += p.things.len() as u64;
                    for thing in p.things {
                        if current {
                            held.push_back(thing);
                        } else {
                            // An earlier source: all of it was walked.
                            seen.insert(&thing);
                        }
                    }
                    while held.len() > HELD_BACK && settled + (HELD_BACK as u64) < wanted {
                        if let Some(thing) = held.pop_front() {
                            seen.insert(&thing);
                            settled += 1;
                        }
                    }
                    match p.next {
                        Some(next) if !ends => token = Some(next),
                        _ => break,
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
        let walked = match held.iter().rposition(|t| at.last.contains(t)) {
            Some(cut) => cut + 1,
            None => usize::try_from(wanted.saturating_sub(settled)).unwrap_or(usize::MAX).min(held.len()),
        };
        for thing in held.iter().take(walked) {
            seen.insert(thing);
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

/// One page of a source, retried to the deadline, counting throttles.
async fn fetch<S, R: Registry, J>(
    segment: &Segment<'_, S, R, J>,
    stats: &Stats,
    source: &Source,
    token: Option<&str>,
) -> Result<super::Page, GaveUp<ServiceError>> {
    let Segment { plan, registry, pace, .. } = *segment;
    retry_until(
        pace.deadline,
        pace.reserve(),
        pace.backoff,
        || pace.timed(page(plan, source, token, registry)),
        |e: &ServiceError| {
            if e.is_throttling() {
                stats.throttled.fetch_add(1, Ordering::Relaxed);
            }
        },
    )
    .await
}

#[cfg(test)]
mod tests;
