//! One thing's protocol in a push segment: look up an earlier band's thing in the journal, read and compare,
//! journal the previous values, update (at the version read when the outcome is uncertain), and what a thing given
//! up on reports.

use std::time::Duration;

use super::engine::{Segment, ThingOutcome};
use super::pace::{Request, Stage, Stats, paced};
use super::rollout::previous_values;
use super::walker::Meeting;
use super::{Failure, Journal, JournalEntry, JournalRef, Shadows};
use crate::document::{holds, touched_since, written_since};
use crate::names::ThingName;
use crate::retry::{GaveUp, retry_until};
use crate::service::{FaultKind, ServiceError};

/// What each thing of a push segment is pushed with.
pub(super) struct Pushing<'a, S, R, J> {
    pub(super) segment: &'a Segment<'a, S, R, J>,
    pub(super) stats: &'a Stats,
    /// A rollout's phase: where each thing's previous values are recorded before it is updated.
    pub(super) journal: Option<Journaled<'a, J>>,
    /// The update document.
    pub(super) document: String,
    /// When the push started (epoch s), to recognise its own updates; `None` in a dry run.
    pub(super) since: Option<u64>,
}

/// Where a rollout's segment records each thing's previous values.
pub(super) struct Journaled<'a, J> {
    pub(super) journal: &'a J,
    pub(super) at: JournalRef<'a>,
    /// 1-based.
    pub(super) phase: u32,
    pub(super) expires_at: u64,
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
pub(super) async fn push_thing<S: Shadows, R, J: Journal>(
    pushing: &Pushing<'_, S, R, J>,
    thing: ThingName,
    meeting: Meeting,
) -> (String, ThingOutcome) {
    let Segment { plan, shadows, pace, .. } = *pushing.segment;
    let (document, since, journal, stats) =
        (pushing.document.as_str(), pushing.since, pushing.journal.as_ref(), pushing.stats);
    let shadow = plan.shadow_name.as_ref();
    let name = thing.to_string();
    let (mut again, mut beyond) = (meeting == Meeting::Again, meeting == Meeting::Beyond);
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
            match journaled(j, &name, phase, pace).await {
                Ok(true) => return (name, ThingOutcome::TakenEarlier),
                Ok(false) => {}
                Err(e) => return (name.clone(), gave_up(&name, e)),
            }
        }
    }
    let (mut looks, mut stage) = (0u32, Stage::First);
    loop {
        let recognise = uncertain && since.is_some();
        let mut at_version = None;
        if plan.skip_unchanged || recognise || journal.is_some() || again || beyond {
            match paced(pace, stats, Request::Read, stage, || shadows.desired(&thing, shadow)).await {
                Ok(current) => {
                    let current = current.unwrap_or_default();
                    let state = Some(&current.state).filter(|s| !s.is_null());
                    if holds(state, &plan.desired) {
                        // Met again after a refused page token: walked before, or it joined holding the values.
                        if again {
                            tracing::debug!(thing = %name, "met again, holding the pushed values");
                            return (name, ThingOutcome::MetAgain);
                        }
                        // Met after those: walked before when the values were written since the push started.
                        if beyond && since.is_some_and(|t| written_since(Some(&current.metadata), &plan.desired, t)) {
                            tracing::debug!(thing = %name, "met again further down, holding the pushed values");
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
                    if again || beyond {
                        match walked_before(plan, &current, since, journal, pace, &name, again).await {
                            Ok(true) => return (name, ThingOutcome::MetAgain),
                            Ok(false) => {}
                            Err(e) => return (name.clone(), gave_up(&name, e)),
                        }
                    }
                    at_version = current.version.filter(|_| recognise);
                    if let Some(j) = journal
                        && !plan.dry_run
                    {
                        let entry = JournalEntry {
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
            stage = Stage::UnderWay;
        }
        if plan.dry_run {
            return (name, ThingOutcome::WouldUpdate);
        }
        // Taken for new from here: a look after this update (its answer lost, or refused at a version) finds this
        // push's own write, which is not a sign of having been walked before.
        (again, beyond) = (false, false);
        let versioned = at_version.map(|v| plan.update_document_at(v));
        let document = versioned.as_deref().unwrap_or(document);
        let outcome = paced(pace, stats, Request::Update, stage, || shadows.update(&thing, shadow, document)).await;
        stage = Stage::UnderWay;
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

/// A thing met again after a refused page token, no longer holding the pushed values: whether it shows it was walked
/// before. Among the things met again (`again`): when someone wrote a pushed key in `desired` while the push ran (its
/// update, then another writer's), when its device reports the values (it applied them and cleared `desired`), or
/// when this phase's journal holds it. Met after those, most likely new: only the journal tells. Otherwise it joined
/// between the listings, and is pushed.
async fn walked_before<J: Journal>(
    plan: &super::PushPlan,
    current: &super::DesiredState,
    since: Option<u64>,
    journal: Option<&Journaled<'_, J>>,
    pace: &super::Pace,
    name: &str,
    again: bool,
) -> Result<bool, GaveUp<ServiceError>> {
    let touched = again && since.is_some_and(|t| touched_since(Some(&current.metadata), &plan.desired, t));
    let applied = again && holds(Some(&current.reported).filter(|r| !r.is_null()), &plan.desired);
    let journaled = match journal {
        Some(j) if !touched && !applied => journaled(j, name, j.phase, pace).await?,
        _ => false,
    };
    if touched || applied || journaled {
        tracing::debug!(thing = %name, touched, applied, journaled, "met again, changed since this push took it on");
    }
    Ok(touched || applied || journaled)
}

/// Whether `phase`'s journal holds `thing`: that phase took it on (recorded its previous values before updating it).
async fn journaled<J: Journal>(
    j: &Journaled<'_, J>,
    thing: &str,
    phase: u32,
    pace: &super::Pace,
) -> Result<bool, GaveUp<ServiceError>> {
    let key = JournalEntry { thing_name: thing.to_owned(), phase, values: serde_json::Value::Null }.key();
    retry_until(pace.finish_by(), Duration::ZERO, pace.backoff, || j.journal.previous(j.at, &key), |_| {})
        .await
        .map(|found| found.is_some())
}

/// The IoT data plane's answer to an update at a version the shadow is no longer at (HTTP 409).
pub(super) const CONFLICT: &str = "ConflictException";

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
mod tests;
