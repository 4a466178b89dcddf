//! The walk over a push's journal: judging a phase (has each thing it updated converged?) or rolling back
//! (putting each updated thing back to its previous values), paced like a push segment.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::engine::{JournalOutcome, Segment};
use super::pace::{Request, Stage, Stats, paced};
use super::rollout::{conflict_message, rollback_leaves};
use super::thing::CONFLICT;
use super::walker::{self, Course, Meeting, Page, Take};
use super::{Cursor, Failure, Journal, JournalEntry, JournalRef, Shadows};
use crate::document::holds;
use crate::names::ThingName;
use crate::retry::{GaveUp, retry_until};
use crate::service::FaultKind;

/// What a walk over a push's recorded previous values does to each thing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JudgeOrRollback {
    /// Reads each thing phase `phase` (1-based) updated, and counts whether its `reported` holds the pushed values.
    Judge { phase: u32 },
    /// Puts each updated thing back to its previous values, unless someone changed it since.
    Rollback,
}

/// What became of one journal entry's thing.
enum EntryOutcome {
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
/// thing found already put back may be its work (counted as restored). The segment's sources and registry are not
/// used.
pub async fn run_journal_segment<S: Shadows, R, J: Journal>(
    segment: &Segment<'_, S, R, J>,
    mode: JudgeOrRollback,
    cursor: Cursor,
    takeover: bool,
) -> JournalOutcome {
    let course = JournalCourse { segment, mode, at: segment.journal_at(), stats: Stats::default() };
    let mut out = JournalOutcome::default();
    out.cursor = walker::follow(&course, &mut out, segment.pace, cursor, takeover).await;
    out.requests = course.stats.requests.load(Ordering::Relaxed);
    out.throttled = course.stats.throttled.load(Ordering::Relaxed);
    out
}

/// A judging or rollback segment's course: one source, the journal's entries (of one phase, or all).
struct JournalCourse<'a, S, R, J> {
    segment: &'a Segment<'a, S, R, J>,
    mode: JudgeOrRollback,
    at: JournalRef<'a>,
    stats: Stats,
}

impl<S: Shadows, R, J: Journal> Course for JournalCourse<'_, S, R, J> {
    type Item = JournalEntry;
    type Entry = JournalEntry;
    type Done = EntryOutcome;
    type State = JournalOutcome;

    fn sources(&self) -> usize {
        1
    }

    fn first(&self) -> Request {
        Request::Read
    }

    async fn redo(&self, _: &mut JournalOutcome, key: String) -> Result<Take<JournalEntry, EntryOutcome>, ()> {
        let found = retry_until(
            self.segment.pace.finish_by(),
            Duration::ZERO,
            self.segment.pace.backoff,
            || self.segment.journal.previous(self.at, &key),
            |_| {},
        )
        .await;
        match found {
            Ok(Some(entry)) => Ok(Take::Start(entry)),
            Ok(None) => Ok(Take::Skip),
            Err(_) => Err(()),
        }
    }

    async fn page(&self, _: &mut JournalOutcome, _: usize, token: Option<&str>) -> Result<Page<JournalEntry>, ()> {
        let phase = match self.mode {
            JudgeOrRollback::Judge { phase } => Some(phase),
            JudgeOrRollback::Rollback => None,
        };
        let page = retry_until(
            self.segment.pace.deadline,
            self.segment.pace.reserve(),
            self.segment.pace.backoff,
            || self.segment.pace.timed(self.segment.journal.previous_page(self.at, phase, token)),
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

    fn take(&self, _: &mut JournalOutcome, _: usize, entry: JournalEntry) -> Take<JournalEntry, EntryOutcome> {
        Take::Start(entry)
    }

    fn start(&self, entry: JournalEntry, meeting: Meeting) -> impl Future<Output = EntryOutcome> + '_ {
        let uncertain = meeting != Meeting::First;
        judge_or_put_back(self, entry, uncertain)
    }

    fn tally(&self, out: &mut JournalOutcome, done: EntryOutcome) -> Option<(String, Meeting)> {
        match done {
            EntryOutcome::Converged => out.converged += 1,
            EntryOutcome::Pending => out.pending += 1,
            EntryOutcome::Refused => out.refused += 1,
            EntryOutcome::NotJudged => out.not_judged += 1,
            EntryOutcome::Restored => out.rollback.restored += 1,
            EntryOutcome::Untouched => out.rollback.untouched += 1,
            EntryOutcome::Conflict(f) => {
                out.rollback.conflicts += 1;
                out.conflicts.push(f);
            }
            EntryOutcome::Failed(f) => {
                out.rollback.failed += 1;
                out.failures.push(f);
            }
            EntryOutcome::Unfinished(key) => return Some((key, Meeting::Uncertain)),
        }
        None
    }
}

/// Judges or puts back one thing. A rollback reads first and writes at the version read: a thing that already
/// holds its previous values is left alone (its update never landed, or an earlier attempt put it back), one whose
/// `desired` no longer holds this push's values was changed by someone else since and is a conflict.
async fn judge_or_put_back<S: Shadows, R, J>(
    course: &JournalCourse<'_, S, R, J>,
    entry: JournalEntry,
    uncertain: bool,
) -> EntryOutcome {
    let Segment { plan, shadows, pace, .. } = *course.segment;
    let (mode, stats) = (course.mode, &course.stats);
    let shadow = plan.shadow_name.as_ref();
    let key = entry.key();
    let Ok(thing) = ThingName::parse(entry.thing_name.as_str()) else { return EntryOutcome::NotJudged };
    let mut stage = Stage::First;
    for _look in 0..5 {
        let current = match paced(pace, stats, Request::Read, stage, || shadows.desired(&thing, shadow)).await {
            // A deleted shadow holds nothing of the push: judged as refused (failed).
            Ok(None) if matches!(mode, JudgeOrRollback::Judge { .. }) => return EntryOutcome::Refused,
            Ok(current) => current.unwrap_or_default(),
            Err(GaveUp::OutOfTime { .. }) => return EntryOutcome::Unfinished(key),
            Err(GaveUp::Final(e)) => {
                return match mode {
                    // Not known to have converged.
                    JudgeOrRollback::Judge { .. } => EntryOutcome::Pending,
                    JudgeOrRollback::Rollback => EntryOutcome::Failed(Failure::from_error(entry.thing_name, &e)),
                };
            }
        };
        stage = Stage::UnderWay;
        let state = Some(&current.state).filter(|s| !s.is_null());
        match mode {
            // Converged: `reported` holds every pushed leaf, whatever `desired` holds now (a device may apply,
            // report and clear `desired`). Pending while `desired` still holds the push's values; refused after it
            // was changed away from them.
            JudgeOrRollback::Judge { .. } => {
                let reported = Some(&current.reported).filter(|r| !r.is_null());
                return if holds(reported, &plan.desired) {
                    EntryOutcome::Converged
                } else if holds(state, &plan.desired) {
                    EntryOutcome::Pending
                } else {
                    EntryOutcome::Refused
                };
            }
            JudgeOrRollback::Rollback => {
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
                        return EntryOutcome::Conflict(conflict);
                    }
                    return if uncertain { EntryOutcome::Restored } else { EntryOutcome::Untouched };
                }
                let document = plan.rollback_document(&serde_json::Value::Object(back.desired), current.version);
                let updated =
                    paced(pace, stats, Request::Update, Stage::UnderWay, || shadows.update(&thing, shadow, &document))
                        .await;
                match updated {
                    Ok(()) => return conflict.map_or(EntryOutcome::Restored, EntryOutcome::Conflict),
                    Err(GaveUp::OutOfTime { .. }) => return EntryOutcome::Unfinished(key),
                    // Written meanwhile (409), or perhaps applied (5xx): read again.
                    Err(GaveUp::Final(e)) if e.code.as_deref() == Some(CONFLICT) || e.kind == FaultKind::Transient => {
                        tracing::debug!(thing = %entry.thing_name, error = %e, "rollback: reading again");
                    }
                    Err(GaveUp::Final(e)) => return EntryOutcome::Failed(Failure::from_error(entry.thing_name, &e)),
                }
            }
        }
    }
    EntryOutcome::Failed(Failure {
        thing_name: entry.thing_name,
        code: "RollbackContended".into(),
        message: "written by someone else on every attempt".into(),
    })
}

#[cfg(test)]
mod tests;
