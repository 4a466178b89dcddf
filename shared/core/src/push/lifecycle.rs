//! A push's life across invocations, as pure decisions.
//!
//! A push is a chain of segments, each run by one invocation that claims it on the push record with a lease it
//! renews while it runs. Whatever wakes a push (its first invocation, Lambda's retry of it, a hand-off message, a
//! duplicate of one, the sweeper) asks [`next_step`] what to do with the record as it finds it, so every arrival
//! is safe at any time: the conditional claim lets exactly one of them run the next segment.

use std::fmt::Write as _;

use sha2::{Digest, Sha256};

use super::record::PushState;
use super::retention::Kept;
use super::rollout::{OnAbort, Verdict, judge};
use super::{
    Control, Counts, Cursor, Holder, JournalOutcome, PushDefinition, PushPlan, PushRecord, SegmentOutcome, Status,
};

/// A segment whose holder died this many times in a row is not taken over again: the push is marked stalled.
pub const MAX_TAKEOVERS: u32 = 3;
/// SQS's longest message delay: a longer bake is a chain of delayed messages.
pub const MAX_DELAY_S: u64 = 900;

/// What an arrival does with a push record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Claim `segment` and run it; `takeover` when its last holder died.
    Run { segment: u64, takeover: bool },
    /// A live segment holds the push until `lease_until` (epoch ms): nothing to do.
    Running { lease_until: u64 },
    /// An operator's pause or abort waits on a push no live segment holds: carry it out (`over_dead_holder`: the
    /// last holder died without recording).
    Control { control: Control, over_dead_holder: bool },
    /// Paused by an operator: nothing runs until it is resumed.
    Paused,
    /// Complete, aborted or rolled back.
    Complete,
    /// The push cannot go on: why.
    Stalled(String),
}

/// What a new push is: its plan as JSON (`request`), its [`plan_digest`] and the target sources it walks.
pub fn definition(
    plan: &PushPlan,
    request: serde_json::Value,
    digest: String,
    sources: Vec<super::Source>,
) -> PushDefinition {
    PushDefinition {
        push_id: plan.push_id.clone(),
        shadow_name: plan.shadow_name.as_ref().map(|s| s.to_string()),
        dry_run: plan.dry_run,
        request,
        plan_digest: digest,
        sources,
    }
}

/// The record of a new push: segment 1 claimed by `owner` until `lease_until` (the creation is its claim), running
/// phase 1 from the start of its sources.
pub fn new_record(plan: &PushPlan, owner: String, started_at: u64, lease_until: u64) -> PushRecord {
    PushRecord {
        push_id: plan.push_id.clone(),
        journal_shards: 0,
        status: Status {
            counts: Counts::default(),
            cursor: Some(Cursor::default()),
            complete: false,
            started_at,
            finished_at: None,
            state: PushState::Running,
            phase: 1,
            phases: plan
                .rollout
                .iter()
                .flat_map(|r| &r.phases)
                .map(|p| super::PhaseCounts { percent: p.percent, ..super::PhaseCounts::default() })
                .collect(),
            bake_until: None,
            control: None,
            abort_reason: None,
            recheck: false,
            rollback: None,
        },
        holder: Holder {
            segment: 1,
            handed_off: 0,
            owner,
            lease_until,
            segment_started_at: started_at,
            takeovers: 0,
            stalled: None,
        },
        kept: Kept::default(),
    }
}

/// The record of a new push whose first segment runs elsewhere (a start that answers at once): released before
/// segment 1, so that whichever arrival comes first claims it (its hand-off message, or the sweeper once
/// `hand_off_grace_ms` has passed without one).
pub fn queued_record(plan: &PushPlan, started_at: u64, timing: LeaseTiming) -> PushRecord {
    let mut record = new_record(plan, String::new(), started_at, started_at + timing.hand_off_grace_ms);
    record.holder.segment = 0;
    record
}

/// What to do with `record` at `now_ms`.
pub fn next_step(record: &PushRecord, now_ms: u64) -> Step {
    // A rollback asked for after the push stopped (aborted without one, or stalled): its journal is still there.
    if record.status.control == Some(Control::AbortRollback)
        && (record.status.state == PushState::Aborted || record.holder.stalled.is_some())
        && (record.holder.segment == record.holder.handed_off || record.holder.lease_until < now_ms)
    {
        return Step::Control {
            control: Control::AbortRollback,
            over_dead_holder: record.holder.segment != record.holder.handed_off,
        };
    }
    if record.status.complete || record.status.state.is_final() {
        return Step::Complete;
    }
    if let Some(reason) = &record.holder.stalled {
        return Step::Stalled(reason.clone());
    }
    if record.holder.segment == record.holder.handed_off {
        if let Some(control) = record.status.control {
            return Step::Control { control, over_dead_holder: false };
        }
        if record.status.state == PushState::Paused {
            return Step::Paused;
        }
        // Released: the next segment is free to claim, whoever arrives first.
        return Step::Run { segment: record.holder.segment + 1, takeover: false };
    }
    if record.holder.segment == record.holder.handed_off + 1 {
        if record.holder.lease_until >= now_ms {
            return Step::Running { lease_until: record.holder.lease_until };
        }
        if let Some(control) = record.status.control {
            return Step::Control { control, over_dead_holder: true };
        }
        if record.holder.takeovers >= MAX_TAKEOVERS {
            return Step::Stalled(format!(
                "segment {} died {} times (out of memory, a crash, or a timeout)",
                record.holder.segment,
                record.holder.takeovers + 1
            ));
        }
        return Step::Run { segment: record.holder.segment, takeover: true };
    }
    Step::Stalled(format!("inconsistent record: segment {} after {}", record.holder.segment, record.holder.handed_off))
}

/// What a claimed segment does, by the record's state: run a walk, or release at once for the rest of a bake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    Run(Run),
    /// The bake is not over: release at once, and wake the push again in `delay_s` seconds.
    Bake {
        delay_s: u32,
    },
}

/// The walk a claimed segment runs from the record's cursor: never a bake (a bake walks nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Run {
    /// Push the things of the current phase (`phase`, 0-based, with a rollout; every thing without).
    Push { phase: Option<usize> },
    /// Judge phase `phase` (1-based): read the things it updated.
    Judge { phase: u32 },
    /// Restore the journal's previous values.
    Rollback,
}

/// What a segment claimed on `record` at `now_ms` does.
pub fn work(record: &PushRecord, plan: &PushPlan, now_ms: u64) -> Work {
    match record.status.state {
        PushState::Baking => match record.status.bake_until {
            Some(until) if until > now_ms => {
                Work::Bake { delay_s: (until - now_ms).div_ceil(1000).clamp(1, MAX_DELAY_S) as u32 }
            }
            _ => Work::Run(Run::Judge { phase: record.status.phase }),
        },
        PushState::RollingBack => Work::Run(Run::Rollback),
        _ => Work::Run(Run::Push {
            phase: plan.rollout.as_ref().map(|_| record.status.phase.saturating_sub(1) as usize),
        }),
    }
}

/// The record after a segment of `work` that ended with `cursor`: released (`handedOff` = the segment), and on to
/// the next state when its walk is done. The counts are added by the caller ([`after_push`], [`after_judge`],
/// [`after_rollback`]).
fn released(mut next: PushRecord, segment: u64, now_ms: u64, timing: LeaseTiming) -> PushRecord {
    next.holder.segment = segment;
    next.holder.handed_off = segment;
    next.status.recheck = false;
    next.holder.lease_until = now_ms + timing.hand_off_grace_ms;
    next
}

fn finish(next: &mut PushRecord, state: PushState, now_ms: u64) {
    next.status.state = state;
    next.status.cursor = None;
    next.status.complete = state == PushState::Complete;
    next.status.finished_at = Some(now_ms);
    next.status.bake_until = None;
}

/// After a push segment: its counts added to the totals and the phase's; when the phase's walk is done, the bake
/// (with a rollout) or the end. A segment that took over from a holder that died (`takeover`) leaves the rest of
/// the walk uncertain too: nobody knows how far the dead holder got, so every later segment of the walk checks each
/// thing before it updates it (no extra request with skipUnchanged, which reads first anyway).
pub fn after_push(
    record: &PushRecord,
    plan: &PushPlan,
    segment: u64,
    outcome: &SegmentOutcome,
    takeover: bool,
    now_ms: u64,
    timing: LeaseTiming,
) -> PushRecord {
    let mut next = released(record.clone(), segment, now_ms, timing);
    next.status.recheck = takeover && outcome.cursor.is_some();
    next.status.counts.targets += outcome.targets;
    next.status.counts.updated += outcome.updated;
    next.status.counts.unchanged += outcome.unchanged;
    next.status.counts.failed += outcome.failed;
    next.status.counts.requests += outcome.requests;
    next.status.counts.throttled += outcome.throttled;
    next.status.counts.store_throttled += outcome.store_throttled;
    if let Some(phase) = next.status.phases.get_mut(record.status.phase.saturating_sub(1) as usize) {
        phase.targets += outcome.targets;
        phase.updated += outcome.updated;
        phase.unchanged += outcome.unchanged;
        phase.failed += outcome.failed;
    }
    next.status.cursor = outcome.cursor.clone();
    if next.status.cursor.is_none() {
        match &plan.rollout {
            Some(rollout) => {
                next.status.state = PushState::Baking;
                next.status.bake_until = Some(now_ms + rollout.bake_seconds * 1000);
                // The lease covers the bake: the sweeper wakes the push only once the bake and the grace are over
                // (the delayed hand-off wakes it at the bake's end).
                next.holder.lease_until = now_ms + rollout.bake_seconds * 1000 + timing.hand_off_grace_ms;
                next.status.cursor = Some(Cursor::default());
            }
            None => finish(&mut next, PushState::Complete, now_ms),
        }
    }
    next
}

/// After a judging segment: its counts added to the phase; when the walk is done, the verdict: the next phase, the
/// end, or the abort the rollout asks for.
pub fn after_judge(
    record: &PushRecord,
    plan: &PushPlan,
    segment: u64,
    outcome: &JournalOutcome,
    now_ms: u64,
    timing: LeaseTiming,
) -> PushRecord {
    let mut next = released(record.clone(), segment, now_ms, timing);
    next.status.counts.requests += outcome.requests;
    next.status.counts.throttled += outcome.throttled;
    next.status.counts.store_throttled += outcome.store_throttled;
    let index = record.status.phase.saturating_sub(1) as usize;
    if let Some(phase) = next.status.phases.get_mut(index) {
        phase.converged += outcome.converged;
        phase.pending += outcome.pending;
        phase.refused += outcome.refused;
    }
    next.status.cursor = outcome.cursor.clone();
    if next.status.cursor.is_some() {
        return next;
    }
    if let Some(phase) = next.status.phases.get_mut(index) {
        phase.judged = true;
    }
    let Some(rollout) = &plan.rollout else {
        finish(&mut next, PushState::Complete, now_ms);
        return next;
    };
    match judge(rollout, &next.status.phases, index) {
        Verdict::Proceed if index + 1 >= rollout.phases.len() => finish(&mut next, PushState::Complete, now_ms),
        Verdict::Proceed => {
            next.status.state = PushState::Running;
            next.status.phase += 1;
            next.status.bake_until = None;
            next.status.cursor = Some(Cursor::default());
        }
        Verdict::Abort(reason) => {
            next.status.abort_reason = Some(reason);
            abort(&mut next, rollout.on_abort == OnAbort::Rollback, now_ms);
        }
    }
    next
}

fn abort(next: &mut PushRecord, rollback: bool, now_ms: u64) {
    if rollback {
        next.status.state = PushState::RollingBack;
        next.status.bake_until = None;
        next.status.cursor = Some(Cursor::default());
        next.status.rollback = Some(Default::default());
    } else {
        finish(next, PushState::Aborted, now_ms);
    }
}

/// After a rollback segment: its counts added; rolled back when the walk is done.
pub fn after_rollback(
    record: &PushRecord,
    segment: u64,
    outcome: &JournalOutcome,
    takeover: bool,
    now_ms: u64,
    timing: LeaseTiming,
) -> PushRecord {
    let mut next = released(record.clone(), segment, now_ms, timing);
    // A takeover's uncertainty lasts the rest of the walk, as for a push.
    next.status.recheck = (record.status.recheck || takeover) && outcome.cursor.is_some();
    next.status.counts.requests += outcome.requests;
    next.status.counts.throttled += outcome.throttled;
    next.status.counts.store_throttled += outcome.store_throttled;
    let counts = next.status.rollback.get_or_insert_with(Default::default);
    counts.restored += outcome.rollback.restored;
    counts.untouched += outcome.rollback.untouched;
    counts.conflicts += outcome.rollback.conflicts;
    counts.failed += outcome.rollback.failed;
    next.status.cursor = outcome.cursor.clone();
    if next.status.cursor.is_none() {
        finish(&mut next, PushState::RolledBack, now_ms);
    }
    next
}

/// After a bake step: released at once, to be woken `delay_s` later (the sweeper waits that much longer too).
pub fn after_bake_step(
    record: &PushRecord,
    segment: u64,
    delay_s: u32,
    now_ms: u64,
    timing: LeaseTiming,
) -> PushRecord {
    let mut next = released(record.clone(), segment, now_ms, timing);
    next.holder.lease_until += u64::from(delay_s) * 1000;
    next
}

/// The record once `control` is carried out on a push no live segment holds.
pub fn controlled(record: &PushRecord, control: Control, over_dead_holder: bool, now_ms: u64) -> PushRecord {
    let mut next = record.clone();
    next.status.control = None;
    next.holder.handed_off = next.holder.segment;
    // The dead holder may have updated things after its cursor: the next push segment checks each first.
    next.status.recheck = record.status.recheck || (over_dead_holder && record.status.state == PushState::Running);
    next.holder.lease_until = now_ms;
    match control {
        Control::Pause => next.status.state = PushState::Paused,
        // An abort asked for while the push was judged, left on the record as the judgment began a rollback: the
        // rollback under way stands (once begun, it ends rolled back), neither abandoned nor started over.
        Control::Abort | Control::AbortRollback if record.status.state == PushState::RollingBack => {}
        Control::Abort => {
            next.status.abort_reason.get_or_insert_with(|| "aborted by an operator".into());
            abort(&mut next, false, now_ms);
        }
        Control::AbortRollback => {
            next.status.abort_reason.get_or_insert_with(|| "aborted by an operator, with rollback".into());
            // After a stop (aborted, or stalled): the push runs again, its segments counted afresh, and every
            // thing is checked before it is put back (a stalled holder may have died mid-update).
            let stopped = record.holder.stalled.is_some() || record.status.state == PushState::Aborted;
            next.status.recheck |= record.holder.stalled.is_some();
            if stopped {
                next.holder.stalled = None;
                next.holder.takeovers = 0;
                next.status.finished_at = None;
                next.status.complete = false;
            }
            abort(&mut next, true, now_ms);
        }
    }
    next
}

/// A stalled push restarted by an operator: released at its segment, its takeovers counted afresh, and every thing
/// the next segment walks checked first (the holders that died may have updated things after the cursor).
pub fn unstalled(record: &PushRecord, now_ms: u64) -> PushRecord {
    let mut next = record.clone();
    next.holder.stalled = None;
    next.holder.takeovers = 0;
    next.holder.handed_off = next.holder.segment;
    next.status.recheck = true;
    next.holder.lease_until = now_ms;
    next
}

/// The state a paused push resumes in: the rollback it was paused in, the bake (or judging), or pushing.
pub fn resumed_state(record: &PushRecord) -> PushState {
    if record.status.rollback.is_some() {
        PushState::RollingBack
    } else if record.status.bake_until.is_some() {
        PushState::Baking
    } else {
        PushState::Running
    }
}

/// A digest of the validated plan (hex SHA-256 of its JSON), stable across processes and releases.
pub fn plan_digest(plan: &PushPlan) -> String {
    // Struct fields serialize in declaration order and JSON objects as sorted maps: the text is canonical.
    let text = serde_json::to_string(plan).unwrap_or_default();
    Sha256::digest(text.as_bytes()).iter().fold(String::with_capacity(64), |mut hex, byte| {
        let _ = write!(hex, "{byte:02x}");
        hex
    })
}

/// How long claims last, how often they are renewed, and how long a released push waits for its next segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTiming {
    pub lease_ms: u64,
    pub hand_off_grace_ms: u64,
}

impl LeaseTiming {
    /// Renew three times per lease, so that one slow or failed renewal does not lose the claim, and at least every
    /// 3 s: a renewal also brings an operator's pause or abort, which a segment must notice within 5 s.
    pub fn renew_every_ms(&self) -> u64 {
        (self.lease_ms / 3).clamp(1, 3_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::push::rollout::RollbackCounts;
    use crate::push::{PhaseCounts, validate_request};
    use serde_json::{Value, json};

    fn record(segment: u64, handed_off: u64, lease_until: u64, takeovers: u32, complete: bool) -> PushRecord {
        PushRecord {
            push_id: "p".into(),
            journal_shards: 0,
            status: Status { complete, ..Status::default() },
            holder: Holder { segment, handed_off, owner: "o".into(), lease_until, takeovers, ..Holder::default() },
            kept: Kept::default(),
        }
    }

    #[test]
    fn every_state_a_push_can_be_found_in() {
        let now = 10_000;
        let cases = [
            // (segment, handed_off, lease_until, takeovers, complete) -> step
            ((1, 0, now + 1, 0, false), Step::Running { lease_until: now + 1 }),
            ((1, 0, now, 0, false), Step::Running { lease_until: now }),
            ((1, 0, now - 1, 0, false), Step::Run { segment: 1, takeover: true }),
            ((4, 3, now - 1, 2, false), Step::Run { segment: 4, takeover: true }),
            ((1, 1, now + 60_000, 0, false), Step::Run { segment: 2, takeover: false }),
            ((1, 1, now - 1, 0, false), Step::Run { segment: 2, takeover: false }),
            ((3, 3, 0, 0, true), Step::Complete),
            ((3, 2, now + 1, 0, true), Step::Complete),
        ];
        for ((segment, handed_off, lease, takeovers, complete), step) in cases {
            let r = record(segment, handed_off, lease, takeovers, complete);
            assert_eq!(next_step(&r, now), step, "{segment}/{handed_off}/{lease}/{takeovers}/{complete}");
        }
        let dying = record(4, 3, now - 1, MAX_TAKEOVERS, false);
        assert!(matches!(next_step(&dying, now), Step::Stalled(reason) if reason.contains("segment 4 died")));
        assert!(matches!(next_step(&record(5, 2, 0, 0, false), now), Step::Stalled(_)));
        let mut stalled = record(1, 1, 0, 0, false);
        stalled.holder.stalled = Some("why".into());
        assert_eq!(next_step(&stalled, now), Step::Stalled("why".into()));
    }

    #[test]
    fn the_digest_tells_requests_apart() {
        let plan = |desired: Value| {
            validate_request(&json!({"pushId": "p1", "desired": desired, "targets": {"things": ["a"]}}), 400, None)
                .expect("a valid request")
        };
        let a = plan_digest(&plan(json!({"mode": 1, "temp": 2})));
        assert_eq!(a.len(), 64);
        assert_eq!(a, plan_digest(&plan(json!({"temp": 2, "mode": 1}))), "key order does not matter");
        assert_ne!(a, plan_digest(&plan(json!({"mode": 2, "temp": 2}))));
    }

    #[test]
    fn the_renewal_interval_is_a_third_of_the_lease_and_at_most_3_s() {
        assert_eq!(LeaseTiming { lease_ms: 30_000, hand_off_grace_ms: 60_000 }.renew_every_ms(), 3_000);
        assert_eq!(LeaseTiming { lease_ms: 3_000, hand_off_grace_ms: 60_000 }.renew_every_ms(), 1_000);
    }

    #[test]
    fn a_rollout_goes_from_phase_to_bake_to_judgment() {
        let plan = validate_request(
            &json!({"pushId": "p1", "desired": {"a": 1}, "targets": {"things": ["a"]},
                    "rollout": {"phases": [{"percent": 50}, {"percent": 100}], "bakeSeconds": 60, "minThings": 2,
                                "onAbort": "rollback"}}),
            400,
            None,
        )
        .expect("a valid request");
        let timing = LeaseTiming { lease_ms: 30_000, hand_off_grace_ms: 1_000 };
        let mut r = record(1, 0, 0, 0, false);
        r.status.phases = vec![PhaseCounts { percent: 50.0, ..Default::default() }, PhaseCounts::default()];
        assert_eq!(work(&r, &plan, 0), Work::Run(Run::Push { phase: Some(0) }));
        let pushed = SegmentOutcome { targets: 4, updated: 4, ..Default::default() };
        let baking = after_push(&r, &plan, 1, &pushed, false, 10_000, timing);
        assert_eq!(
            (baking.status.state, baking.status.bake_until, baking.holder.handed_off),
            (PushState::Baking, Some(70_000), 1)
        );
        assert_eq!(baking.holder.lease_until, 70_000 + 1_000, "the sweeper waits for the bake and the grace");
        assert_eq!(baking.status.phases[0].updated, 4);
        assert_eq!(work(&baking, &plan, 10_000), Work::Bake { delay_s: 60 });
        let stepped = after_bake_step(&baking, 2, 60, 10_000, timing);
        assert_eq!(stepped.holder.lease_until, 10_000 + 1_000 + 60_000, "the sweeper waits for the delayed message");
        assert_eq!(work(&stepped, &plan, 70_000), Work::Run(Run::Judge { phase: 1 }));
        let converged = JournalOutcome { converged: 4, ..Default::default() };
        let next = after_judge(&stepped, &plan, 3, &converged, 71_000, timing);
        assert_eq!(
            (next.status.state, next.status.phase, next.status.cursor.clone()),
            (PushState::Running, 2, Some(Cursor::default()))
        );
        assert!(next.status.phases[0].judged);
        let silent = JournalOutcome { converged: 1, pending: 3, ..Default::default() };
        let aborted = after_judge(&stepped, &plan, 3, &silent, 71_000, timing);
        assert_eq!(aborted.status.state, PushState::RollingBack);
        assert!(aborted.status.abort_reason.as_deref().is_some_and(|r| r.starts_with("phase 1")), "{aborted:?}");
        assert_eq!(work(&aborted, &plan, 71_000), Work::Run(Run::Rollback));
    }

    #[test]
    fn controls_wait_for_a_live_segment_and_are_carried_out_over_a_dead_one() {
        let now = 10_000;
        let mut held = record(2, 1, now + 5_000, 0, false);
        held.status.control = Some(Control::Pause);
        assert_eq!(next_step(&held, now), Step::Running { lease_until: now + 5_000 });
        held.holder.lease_until = now - 1;
        assert_eq!(next_step(&held, now), Step::Control { control: Control::Pause, over_dead_holder: true });
        let paused = controlled(&held, Control::Pause, true, now);
        assert_eq!(
            (paused.status.state, paused.holder.handed_off, paused.status.recheck, paused.status.control),
            (PushState::Paused, 2, true, None)
        );
        assert_eq!(next_step(&paused, now), Step::Paused);
        assert_eq!(resumed_state(&paused), PushState::Running);
        let aborted = controlled(&record(2, 2, 0, 0, false), Control::Abort, false, now);
        assert_eq!((aborted.status.state, aborted.status.finished_at), (PushState::Aborted, Some(now)));
        assert_eq!(next_step(&aborted, now), Step::Complete);
    }

    #[test]
    fn an_abort_left_on_the_record_as_a_rollback_begins_leaves_it_rolling_back() {
        let now = 10_000;
        let mut rolling = controlled(&record(2, 2, 0, 0, false), Control::AbortRollback, false, now);
        rolling.status.rollback = Some(RollbackCounts { restored: 3, ..RollbackCounts::default() });
        rolling.status.cursor = Some(Cursor { walked: 3, ..Cursor::default() });
        for control in [Control::Abort, Control::AbortRollback] {
            let mut asked = rolling.clone();
            asked.status.control = Some(control);
            let next = controlled(&asked, control, false, now);
            assert_eq!(
                (next.status.state, next.status.finished_at, next.status.control),
                (PushState::RollingBack, None, None),
                "{control:?}"
            );
            assert_eq!(
                (next.status.rollback.clone(), next.status.cursor.clone()),
                (rolling.status.rollback.clone(), rolling.status.cursor.clone()),
                "{control:?}: the rollback was started over"
            );
            assert_eq!(next_step(&next, now), Step::Run { segment: 3, takeover: false }, "{control:?}");
        }
    }

    #[test]
    fn a_stopped_push_can_still_be_rolled_back() {
        let now = 10_000;
        let mut aborted = controlled(&record(2, 2, 0, 0, false), Control::Abort, false, now);
        aborted.status.control = Some(Control::AbortRollback);
        assert_eq!(
            next_step(&aborted, now),
            Step::Control { control: Control::AbortRollback, over_dead_holder: false }
        );
        let rolling = controlled(&aborted, Control::AbortRollback, false, now);
        assert_eq!(
            (rolling.status.state, rolling.status.finished_at, rolling.status.control),
            (PushState::RollingBack, None, None)
        );
        assert_eq!(next_step(&rolling, now), Step::Run { segment: 3, takeover: false });

        let mut stalled = record(4, 3, now - 1, MAX_TAKEOVERS, false);
        stalled.holder.stalled = Some("segment 4 died 4 times".into());
        assert!(matches!(next_step(&stalled, now), Step::Stalled(_)));
        stalled.status.control = Some(Control::AbortRollback);
        assert_eq!(next_step(&stalled, now), Step::Control { control: Control::AbortRollback, over_dead_holder: true });
        let rolling = controlled(&stalled, Control::AbortRollback, true, now);
        assert_eq!(
            (rolling.status.state, rolling.holder.stalled.clone(), rolling.holder.takeovers),
            (PushState::RollingBack, None, 0)
        );
        assert!(rolling.status.recheck, "a stalled holder may have died mid-update: every thing is checked");
        assert_eq!(next_step(&rolling, now), Step::Run { segment: 5, takeover: false });
        // A plain abort left on an aborted push does nothing: it is final.
        let mut again = aborted.clone();
        again.status.control = Some(Control::Abort);
        assert_eq!(next_step(&again, now), Step::Complete);
    }
}
