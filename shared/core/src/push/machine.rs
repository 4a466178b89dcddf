//! The push's state machine: every decision about what a push does next, in one pure function.
//!
//! Shaped like raft-rs's `RawNode`: the function handler feeds [`step`] an [`Event`] (an arrival, a claim won, a
//! segment's run that ended, the record as written, an operator's control, a conditional write refused) with the
//! record as it stands and what else the decision needs ([`Context`]: the time, the lease timing, the store's
//! retention), and carries out the [`Effect`]s it returns, in order, feeding their results back as events. An
//! effect that is a conditional write ([`Effect::Claim`], [`Effect::Record`], [`Effect::CarryOut`],
//! [`Effect::RequestControl`], [`Effect::Resume`], [`Effect::Unstall`]) guards the effects after it: when its
//! condition fails (someone else moved the push on), the handler drops them, rereads the record and, for a record
//! or a control request, feeds that back ([`Event::NotRecorded`], [`Event::NotRequested`]); for the others it reports
//! the push as it stands. No decision is left to the handler: its executor branches on effects, never on the
//! record's state.

use super::PushPlan;
use super::engine::{JournalOutcome, SegmentOutcome};
use super::lifecycle::{self, LeaseTiming, MAX_DELAY_S, Run, Step, Work};
use super::record::PushState;
use super::rollout::OnAbort;
use super::{Control, PushRecord};

/// How long an operator's control request waits for the push to carry it out before answering with it pending.
pub const CONTROL_WAIT_MS: u64 = 8_000;

/// How often the record is read again while a control request waits.
pub const POLL_EVERY_MS: u64 = 250;

/// An operator's control request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Pause,
    Resume,
    /// `rollback`: `None` follows the rollout's `onAbort`.
    Abort {
        rollback: Option<bool>,
    },
}

impl Action {
    /// The request's field that carries it.
    pub fn field(self) -> &'static str {
        match self {
            Self::Pause => "pausePush",
            Self::Resume => "resumePush",
            Self::Abort { .. } => "abortPush",
        }
    }
}

impl Control {
    /// The request's field that asks for it.
    pub fn field(self) -> &'static str {
        match self {
            Self::Pause => Action::Pause.field(),
            Self::Abort | Self::AbortRollback => Action::Abort { rollback: None }.field(),
        }
    }
}

/// What a segment's run did.
#[derive(Debug, Clone, Copy)]
pub enum Ran<'a> {
    Push(&'a SegmentOutcome),
    Judge(&'a JournalOutcome),
    Rollback(&'a JournalOutcome),
}

/// What a step knows besides the record and the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Context {
    pub now_ms: u64,
    pub timing: LeaseTiming,
    /// How long the store keeps a push's items past now (s): `None` when they never expire.
    pub retention_s: Option<u64>,
}

#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    /// An arrival finds the push: a retried start, a hand-off message.
    Woken,
    /// The sweeper finds the push past its lease: it wakes it with a message rather than running it itself.
    Swept,
    /// A start request that answers at once (the CLI's synchronous start) created the push, released before its
    /// first segment, or found it (the same request again): a free segment is handed to the queue, as the sweeper
    /// does, rather than run in the invocation the caller waits on.
    Asked,
    /// This invocation won the claim on `segment` (`takeover`: from a holder that died).
    Claimed { segment: u64, takeover: bool },
    /// The run of a claimed segment ended (done, or out of time with a cursor).
    Ended { segment: u64, takeover: bool, ran: Ran<'a> },
    /// The segment's record is written: the record is as it stands after the write.
    Recorded,
    /// The segment's record write found its condition failed; the record is as it stands now. Either an earlier
    /// attempt of the same write took effect and its answer was lost, or `owner` lost its claim on `segment`.
    NotRecorded { segment: u64, owner: &'a str },
    /// The push's retention was extended (or its walk stopped short of the deadline): the record has its new marks.
    Extended,
    /// An operator's control.
    Control(Action),
    /// The control request's write found its condition failed; the record is as it stands now.
    NotRequested(Control),
    /// A control is pending: the record reread `waited_ms` after the request was written.
    Polled { waited_ms: u64 },
}

/// What the handler carries out.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Claim `segment`: conditional on the record still calling for it (a free segment, or a holder's lease run
    /// out). Won: feed [`Event::Claimed`].
    Claim { segment: u64, takeover: bool },
    /// Run `run` from the record's cursor, renewing the claim; then feed [`Event::Ended`]. `uncertain`: taking over
    /// from a holder that died, or after one: every thing walked is checked before it is updated.
    Run { run: Run, uncertain: bool },
    /// Write the segment's record: conditional on this claim's owner and segment. Then feed [`Event::Recorded`], or
    /// [`Event::NotRecorded`] with the record reread when the condition failed.
    Record(Box<PushRecord>),
    /// Carry out `control` on a push no live segment holds: write `next`, conditional on `control` still pending
    /// and on the segment it was decided against.
    CarryOut { control: Control, next: Box<PushRecord> },
    /// Leave `control` on the record for its holder: conditional on the state it was decided against (no other
    /// control pending, not final; a rollback after a stop: still aborted or stalled). Refused: feed
    /// [`Event::NotRequested`] with the record reread.
    RequestControl(Control),
    /// Resume a paused push in `to`, its lease at `lease_until` ms: conditional on still paused.
    Resume { to: PushState, lease_until: u64 },
    /// Send the message that wakes segment `segment` after `delay_s`.
    HandOff { segment: u64, delay_s: u32 },
    /// Wake the push through the queue for `segment` (the sweeper's or a queued start's): a hand-off that starts
    /// the push again rather than continuing it.
    Wake { segment: u64 },
    /// Keep the push's items the retention past now (`open`: as a push that is not final, else past its end),
    /// walking their expiry as far as the invocation's time allows; then feed [`Event::Extended`] (a failure is
    /// logged: the next transition tries again).
    Extend { open: bool },
    /// Read the record again after `after_ms`, then feed [`Event::Polled`].
    Poll { after_ms: u64 },
    /// Mark the push stalled at `segment` (it leaves the sweeper's index): conditional on the segment.
    Stall { segment: u64, reason: String },
    /// Restart a stalled push as `next`: conditional on still stalled at its segment.
    Unstall(Box<PushRecord>),
    /// Nothing (more) to do here; answer with the record as it stands.
    Report(Report),
}

/// Why a step does nothing more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Report {
    /// A live segment holds the push.
    Running,
    Paused,
    /// Complete, aborted or rolled back.
    Final,
    Stalled,
    /// A control is pending; the answer waited for it as long as it may.
    ControlPending,
    /// Nothing to resume: the push is not paused.
    NotPaused,
    /// This invocation's claim was lost before its record was written: whoever holds the push now redoes the
    /// segment from its cursor.
    ClaimLost,
}

/// A request the push cannot take: the field it names and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{field}` {reason}")]
pub struct Refusal {
    pub field: &'static str,
    pub reason: String,
}

/// The effects of `event` on the push `record` with `plan`, in `at`; or the reason it is refused.
pub fn step(record: &PushRecord, plan: &PushPlan, event: Event<'_>, at: Context) -> Result<Vec<Effect>, Refusal> {
    let Context { now_ms, timing, .. } = at;
    let effects = match event {
        Event::Woken => woken(record, now_ms),
        Event::Swept | Event::Asked => match woken(record, now_ms).as_slice() {
            [Effect::Claim { segment, .. }] => vec![Effect::Wake { segment: *segment }],
            _ => woken(record, now_ms),
        },
        Event::Polled { waited_ms } => polled(record, waited_ms, now_ms),
        Event::Claimed { .. } | Event::Ended { .. } if !runs(record) => {
            let mut state = format!("{:?}", record.status.state);
            state[..1].make_ascii_lowercase();
            let state = if record.holder.stalled.is_some() { "stalled".to_owned() } else { state };
            return Err(Refusal { field: "event", reason: format!("no segment runs on a {state} push") });
        }
        Event::Ended { ran, .. } if !matches_run(record, plan, ran, now_ms) => {
            return Err(Refusal {
                field: "event",
                reason: format!("{ran:?} does not match the push's {:?}", record.status.state),
            });
        }
        Event::Claimed { segment, takeover } => match lifecycle::work(record, plan, now_ms) {
            Work::Bake { delay_s } => {
                vec![Effect::Record(Box::new(lifecycle::after_bake_step(record, segment, delay_s, now_ms, timing)))]
            }
            Work::Run(run) => vec![Effect::Run { run, uncertain: takeover || record.status.recheck }],
        },
        Event::Ended { segment, takeover, ran } => {
            // Taking over from a holder that died, or after one: the rest of the walk is uncertain.
            let uncertain = takeover || record.status.recheck;
            let next = match ran {
                Ran::Push(out) => lifecycle::after_push(record, plan, segment, out, uncertain, now_ms, timing),
                Ran::Judge(out) => lifecycle::after_judge(record, plan, segment, out, now_ms, timing),
                Ran::Rollback(out) => lifecycle::after_rollback(record, segment, out, uncertain, now_ms, timing),
            };
            vec![Effect::Record(Box::new(next))]
        }
        // Released: the push's items are kept before anything else (a new phase, a bake and an end are all segment
        // ends), and a long walk of them holds no lease.
        Event::Recorded => [vec![extend(record)], recorded(record, now_ms)].concat(),
        Event::NotRecorded { segment, owner } if written_by(record, segment, owner) => {
            [vec![extend(record)], recorded(record, now_ms)].concat()
        }
        Event::NotRecorded { .. } => vec![Effect::Report(Report::ClaimLost)],
        Event::Extended => extended(record, at),
        Event::Control(action) => control(record, plan, action, at)?,
        Event::NotRequested(control) if record.status.control == Some(control) => {
            // The same control is on the record: an earlier attempt of this write, or another operator's.
            vec![Effect::Poll { after_ms: 0 }]
        }
        Event::NotRequested(control) => {
            return Err(Refusal {
                field: control.field(),
                reason: format!(
                    "push {} is {:?} and cannot take it now (another control is pending, or it moved on)",
                    record.push_id, record.status.state
                ),
            });
        }
    };
    Ok(match event {
        Event::Woken | Event::Swept | Event::Asked | Event::Polled { .. } | Event::Control(_) => {
            finishing_walk(record, at, effects)
        }
        _ => effects,
    })
}

/// A segment can run on the push: it is not stopped (final, paused or stalled).
fn runs(record: &PushRecord) -> bool {
    !(record.status.complete
        || record.status.state.is_final()
        || record.status.state == PushState::Paused
        || record.holder.stalled.is_some())
}

/// No segment follows the push: it is final, paused or stalled, so nothing else comes back to it.
fn unfollowed(record: &PushRecord) -> bool {
    !runs(record)
}

/// The run that ended is the one the record calls for.
fn matches_run(record: &PushRecord, plan: &PushPlan, ran: Ran<'_>, now_ms: u64) -> bool {
    matches!(
        (lifecycle::work(record, plan, now_ms), ran),
        (Work::Run(Run::Push { .. }), Ran::Push(_))
            | (Work::Run(Run::Judge { .. }), Ran::Judge(_))
            | (Work::Run(Run::Rollback), Ran::Rollback(_))
    )
}

/// The record, reread after its write's condition failed, shows that write took effect: `owner` released `segment`
/// (an earlier attempt of this very write succeeded, and its answer was lost).
fn written_by(record: &PushRecord, segment: u64, owner: &str) -> bool {
    record.holder.owner == owner && record.holder.handed_off >= segment
}

/// The target of a retention walk under way on the push (stopped at a deadline, or died), if any.
fn walking(record: &PushRecord, at: Context) -> Option<u64> {
    at.retention_s.and_then(|r| record.kept.walking(record.status.started_at, r))
}

/// After the items' expiry was walked: a walk not finished on a push that no segment follows is handed on to a
/// message of its own (a running push finishes it at its next segment end).
fn extended(record: &PushRecord, at: Context) -> Vec<Effect> {
    if walking(record, at).is_some() && unfollowed(record) {
        return vec![Effect::HandOff { segment: record.holder.segment, delay_s: 0 }];
    }
    Vec::new()
}

/// An arrival that reports a push no segment follows first finishes a retention walk left under way on it.
fn finishing_walk(record: &PushRecord, at: Context, mut effects: Vec<Effect>) -> Vec<Effect> {
    let ends_unfollowed =
        matches!(effects.last(), Some(Effect::Report(Report::Final | Report::Paused | Report::Stalled)));
    let extends = effects.iter().any(|e| matches!(e, Effect::Extend { .. }));
    if ends_unfollowed && !extends && walking(record, at).is_some() {
        effects.insert(effects.len() - 1, extend(record));
    }
    effects
}

/// Keep `record`'s items: as an open push's while it is not final.
fn extend(record: &PushRecord) -> Effect {
    Effect::Extend { open: !record.status.state.is_final() }
}

fn report(record: &PushRecord) -> Report {
    if record.holder.stalled.is_some() {
        Report::Stalled
    } else if record.status.complete || record.status.state.is_final() {
        Report::Final
    } else if record.status.state == PushState::Paused {
        Report::Paused
    } else {
        Report::Running
    }
}

fn woken(record: &PushRecord, now_ms: u64) -> Vec<Effect> {
    match lifecycle::next_step(record, now_ms) {
        Step::Run { segment, takeover } => vec![Effect::Claim { segment, takeover }],
        Step::Running { .. } => vec![Effect::Report(Report::Running)],
        Step::Control { control, over_dead_holder } => carry_out(record, control, over_dead_holder, now_ms),
        Step::Paused => vec![Effect::Report(Report::Paused)],
        Step::Complete => vec![Effect::Report(Report::Final)],
        // Marked once; an arrival on a push marked stalled already only reports it.
        Step::Stalled(reason) if record.holder.stalled.is_none() => {
            vec![Effect::Stall { segment: record.holder.segment, reason }, Effect::Report(Report::Stalled)]
        }
        Step::Stalled(_) => vec![Effect::Report(Report::Stalled)],
    }
}

/// A control request's answer waits: a control nobody holds is carried out; one a segment holds is polled for, up to
/// [`CONTROL_WAIT_MS`] after it was written.
fn polled(record: &PushRecord, waited_ms: u64, now_ms: u64) -> Vec<Effect> {
    let pending = record.status.control.is_some() && !record.status.state.is_final();
    if waited_ms >= CONTROL_WAIT_MS {
        return vec![Effect::Report(if pending { Report::ControlPending } else { report(record) })];
    }
    match lifecycle::next_step(record, now_ms) {
        Step::Control { control, over_dead_holder } => carry_out(record, control, over_dead_holder, now_ms),
        _ if pending => vec![Effect::Poll { after_ms: POLL_EVERY_MS }],
        _ => vec![Effect::Report(report(record))],
    }
}

/// A control carried out on a push no live segment holds (its items kept at once: paused or final, nothing else
/// comes back to it); a rollback is then handed on at once.
fn carry_out(record: &PushRecord, control: Control, over_dead_holder: bool, now_ms: u64) -> Vec<Effect> {
    let after_stop = control == Control::AbortRollback
        && (record.status.state == PushState::Aborted || record.holder.stalled.is_some())
        && !record.status.phases.is_empty();
    if (record.status.complete || record.status.state.is_final()) && !after_stop {
        // The push ended as the control came (its last segment finished): nothing to pause or abort.
        return vec![Effect::Report(Report::Final)];
    }
    let next = lifecycle::controlled(record, control, over_dead_holder, now_ms);
    let mut effects = Vec::with_capacity(3);
    let hand_off = next.status.state == PushState::RollingBack;
    let segment = next.holder.segment + 1;
    let keep = extend(&next);
    effects.push(Effect::CarryOut { control, next: Box::new(next) });
    effects.push(keep);
    if hand_off {
        effects.push(Effect::HandOff { segment, delay_s: 0 });
    }
    effects
}

/// After the segment's record is written: a control left on it meanwhile is carried out, else the push is handed
/// on (at once, or after the rest of the bake).
fn recorded(record: &PushRecord, now_ms: u64) -> Vec<Effect> {
    if let Some(control) = record.status.control {
        return carry_out(record, control, false, now_ms);
    }
    if record.holder.stalled.is_some() {
        return vec![Effect::Report(Report::Stalled)];
    }
    if record.status.complete || record.status.state.is_final() {
        return vec![Effect::Report(Report::Final)];
    }
    if record.status.state == PushState::Paused {
        return vec![Effect::Report(Report::Paused)];
    }
    let delay_s = match (record.status.state, record.status.bake_until) {
        (PushState::Baking, Some(until)) if until > now_ms => (until - now_ms).div_ceil(1000).min(MAX_DELAY_S) as u32,
        _ => 0,
    };
    vec![Effect::HandOff { segment: record.holder.segment + 1, delay_s }]
}

/// An operator's control: refused, or left on the record (a pause or abort, carried out by the holder within its
/// next renewal, or at once over a push nobody holds, the answer polling for it), or a resume.
fn control(record: &PushRecord, plan: &PushPlan, action: Action, at: Context) -> Result<Vec<Effect>, Refusal> {
    let Context { now_ms, timing, retention_s } = at;
    let field = action.field();
    let refuse = |reason: String| Err(Refusal { field, reason });
    let push_id = &record.push_id;
    let state = format!("{:?}", record.status.state).to_lowercase();
    let rollout = plan.rollout.as_ref();
    // A plain abort follows the rollout's onAbort; a push without a rollout has nothing to roll back to.
    let rollback = match action {
        Action::Abort { rollback } => rollback.unwrap_or(rollout.is_some_and(|r| r.on_abort == OnAbort::Rollback)),
        _ => false,
    };
    // What needs the push's items whole (a resume, a rollback) is refused once they were kept until a moment past:
    // DynamoDB may have deleted some of them already.
    let needs_items = action == Action::Resume || rollback;
    if let Some(retention) = retention_s.filter(|_| needs_items)
        && let Some(until) = record.kept.lapsed(record.status.started_at, retention, now_ms / 1000)
    {
        return refuse(format!(
            "push {push_id} was left {:?} past its retention: its items (record, plan, journal) were kept until \
             {until} (epoch s) and DynamoDB may have deleted some of them since; it cannot {}. Start a new push",
            record.status.state,
            if action == Action::Resume { "resume" } else { "roll back" }
        ));
    }
    if rollback && rollout.is_none() {
        return Err(Refusal {
            field: "rollback",
            reason: format!("push {push_id} has no rollout, so it recorded no previous values to roll back to"),
        });
    }
    // A rollback is taken after a stop too (aborted, or stalled), while the journal lasts.
    let stopped = record.holder.stalled.is_some() || record.status.state == PushState::Aborted;
    let rollback_after_stop = matches!(action, Action::Abort { .. }) && rollback && stopped;
    if action == Action::Resume
        && record.holder.stalled.is_some()
        && !record.status.complete
        && !record.status.state.is_final()
    {
        // A stalled push resumes where it stood, its takeovers counted afresh, the next segment woken at once.
        let next = lifecycle::unstalled(record, now_ms);
        let segment = next.holder.segment + 1;
        return Ok(vec![Effect::Unstall(Box::new(next)), Effect::HandOff { segment, delay_s: 0 }]);
    }
    if !rollback_after_stop
        && (record.holder.stalled.is_some() || record.status.complete || record.status.state.is_final())
    {
        let why = record.holder.stalled.as_deref().map_or_else(|| state.clone(), |s| format!("stalled ({s})"));
        return refuse(format!("push {push_id} is {why}: nothing to {}", field.trim_end_matches("Push")));
    }
    let control = match action {
        Action::Resume if record.status.state != PushState::Paused => {
            return Ok(vec![Effect::Report(Report::NotPaused)]);
        }
        Action::Resume => {
            let to = lifecycle::resumed_state(record);
            // Paused is not final: its items are kept as an open push's at the resume.
            return Ok(vec![
                Effect::Resume { to, lease_until: now_ms + timing.hand_off_grace_ms },
                Effect::Extend { open: true },
                Effect::HandOff { segment: record.holder.segment + 1, delay_s: 0 },
            ]);
        }
        // Pausing a paused push asks for what holds already: answer with it (as resuming a running push does).
        Action::Pause if record.status.state == PushState::Paused => return Ok(vec![Effect::Report(Report::Paused)]),
        Action::Pause
            if !matches!(record.status.state, PushState::Running | PushState::Baking | PushState::RollingBack) =>
        {
            return refuse(format!(
                "push {push_id} is {state}; only a running, baking or rolling-back push can be paused"
            ));
        }
        Action::Pause => Control::Pause,
        // Once a rollback is under way it ends rolled back: it can be paused and resumed, not abandoned.
        Action::Abort { .. } if record.status.state == PushState::RollingBack => {
            return refuse(format!("push {push_id} is rolling back already"));
        }
        Action::Abort { .. } if record.status.rollback.is_some() => {
            return refuse(format!("push {push_id} is rolling back already (paused: resume it to go on)"));
        }
        Action::Abort { .. } if rollback => Control::AbortRollback,
        Action::Abort { .. } => Control::Abort,
    };
    Ok(vec![Effect::RequestControl(control), Effect::Poll { after_ms: 0 }])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::push::engine::JournalOutcome;
    use crate::push::retention::Kept;
    use crate::push::rollout::RollbackCounts;
    use crate::push::{Counts, Cursor, Holder, PhaseCounts, Status, validate_request};
    use serde_json::json;
    use std::collections::VecDeque;

    const NOW: u64 = 1_000_000;
    const TIMING: LeaseTiming = LeaseTiming { lease_ms: 30_000, hand_off_grace_ms: 60_000 };
    /// A day: the store keeps a push's items that long past now.
    const RETENTION_S: u64 = 86_400;
    const AT: Context = Context { now_ms: NOW, timing: TIMING, retention_s: Some(RETENTION_S) };

    /// `now_ms` at the table's timing, with a store that keeps pushes for ever.
    fn at(now_ms: u64) -> Context {
        Context { now_ms, timing: TIMING, retention_s: None }
    }

    fn plan() -> PushPlan {
        let request = json!({"pushId": "p", "desired": {"mode": 1}, "targets": {"thingGroup": "fleet"},
                             "rollout": {"phases": [{"percent": 50}, {"percent": 100}], "bakeSeconds": 60,
                                         "minThings": 1, "onAbort": "stop"}});
        validate_request(&request, 400, None).expect("a valid request")
    }

    /// A released record (no live holder) in phase 1 of 2.
    fn released() -> PushRecord {
        PushRecord {
            push_id: "p".into(),
            journal_shards: 0,
            status: Status {
                counts: Counts { targets: 4, updated: 4, requests: 8, ..Counts::default() },
                cursor: Some(Cursor::default()),
                phases: vec![
                    PhaseCounts { percent: 50.0, targets: 4, updated: 4, ..PhaseCounts::default() },
                    PhaseCounts { percent: 100.0, ..PhaseCounts::default() },
                ],
                ..Status::default()
            },
            holder: Holder {
                segment: 3,
                handed_off: 3,
                owner: "o".into(),
                lease_until: NOW + 1_000,
                ..Holder::default()
            },
            kept: Kept::default(),
        }
    }

    /// The record in each state the table covers.
    fn in_state(name: &str) -> PushRecord {
        let mut r = released();
        let finish = |r: &mut PushRecord, state| {
            r.status.state = state;
            r.status.cursor = None;
            r.status.finished_at = Some(NOW - 1);
            r.status.complete = state == PushState::Complete;
        };
        match name {
            "running" => {}
            "running (held)" => {
                r.holder.segment = 4;
                r.holder.lease_until = NOW + 10_000;
            }
            "running (holder died)" => {
                r.holder.segment = 4;
                r.holder.lease_until = NOW - 1;
            }
            "baking" => {
                r.status.state = PushState::Baking;
                r.status.bake_until = Some(NOW + 30_000);
            }
            "judging" => {
                r.status.state = PushState::Baking;
                r.status.bake_until = Some(NOW - 1);
            }
            "paused (running)" => r.status.state = PushState::Paused,
            "paused (baking)" => {
                r.status.state = PushState::Paused;
                r.status.bake_until = Some(NOW + 30_000);
            }
            "paused (judging)" => {
                r.status.state = PushState::Paused;
                r.status.bake_until = Some(NOW - 1);
            }
            "paused (rollingBack)" => {
                r.status.state = PushState::Paused;
                r.status.rollback = Some(RollbackCounts::default());
            }
            "rollingBack" => {
                r.status.state = PushState::RollingBack;
                r.status.rollback = Some(RollbackCounts::default());
            }
            "aborted" => finish(&mut r, PushState::Aborted),
            "rolledBack" => {
                r.status.rollback = Some(RollbackCounts { restored: 4, ..RollbackCounts::default() });
                finish(&mut r, PushState::RolledBack);
            }
            "complete" => finish(&mut r, PushState::Complete),
            "running (recheck)" => r.status.recheck = true,
            "running (held, pause pending)" => {
                r.holder.segment = 4;
                r.holder.lease_until = NOW + 10_000;
                r.status.control = Some(Control::Pause);
            }
            "paused (past retention)" => {
                r.status.state = PushState::Paused;
                r.kept = Kept { kept_until: Some(NOW / 1000 - 1), keeping_to: None };
            }
            "aborted (past retention)" => {
                finish(&mut r, PushState::Aborted);
                r.kept = Kept { kept_until: Some(NOW / 1000 - 1), keeping_to: None };
            }
            "complete (retention walk under way)" => {
                finish(&mut r, PushState::Complete);
                r.kept = Kept { kept_until: Some(RETENTION_S / 2), keeping_to: Some(RETENTION_S * 2) };
            }
            "stalled" => {
                r.holder.segment = 4;
                r.holder.lease_until = NOW - 1;
                r.holder.takeovers = 3;
                r.holder.stalled = Some("segment 4 died 4 times".into());
            }
            other => panic!("no state {other}"),
        }
        r
    }

    const STATES: [&str; 19] = [
        "running",
        "running (recheck)",
        "running (held, pause pending)",
        "running (held)",
        "running (holder died)",
        "baking",
        "judging",
        "paused (running)",
        "paused (baking)",
        "paused (judging)",
        "paused (rollingBack)",
        "rollingBack",
        "aborted",
        "rolledBack",
        "complete",
        "stalled",
        "paused (past retention)",
        "aborted (past retention)",
        "complete (retention walk under way)",
    ];

    /// One line per effect: what it is and, for a write, the state it leads to.
    fn describe(result: &Result<Vec<Effect>, Refusal>) -> String {
        let state = |r: &PushRecord| {
            let mut s = format!("{:?}", r.status.state);
            s[..1].make_ascii_lowercase();
            if r.status.state == PushState::Paused
                || r.status.state == PushState::RollingBack
                || r.status.state == PushState::Running
            {
                s = format!("{s}@{}", r.status.phase);
            }
            s
        };
        match result {
            Err(r) => format!("refused: {}", r.field),
            Ok(effects) if effects.is_empty() => "nothing".into(),
            Ok(effects) => effects
                .iter()
                .map(|e| match e {
                    Effect::Claim { segment, takeover } => {
                        format!("claim {segment}{}", if *takeover { " (takeover)" } else { "" })
                    }
                    Effect::Run { run, uncertain } => {
                        let run = match run {
                            Run::Push { phase } => format!("run push {phase:?}"),
                            Run::Judge { phase } => format!("run judge {phase}"),
                            Run::Rollback => "run rollback".into(),
                        };
                        format!("{run}{}", if *uncertain { " (uncertain)" } else { "" })
                    }
                    Effect::Record(next) => format!("record {}", state(next)),
                    Effect::CarryOut { control, next } => format!("carry {control:?} -> {}", state(next)),
                    Effect::RequestControl(c) => format!("request {c:?}"),
                    Effect::Resume { to, .. } => format!("resume {to:?}"),
                    Effect::HandOff { segment, delay_s } => format!("hand off {segment}+{delay_s}s"),
                    Effect::Wake { segment } => format!("wake {segment}"),
                    Effect::Extend { open: true } => "extend".into(),
                    Effect::Extend { open: false } => "extend final".into(),
                    Effect::Poll { after_ms } => format!("poll +{after_ms}ms"),
                    Effect::Stall { segment, .. } => format!("stall {segment}"),
                    Effect::Unstall(next) => format!("unstall -> {}", state(next)),
                    Effect::Report(r) => format!("report {r:?}"),
                })
                .collect::<Vec<_>>()
                .join(", "),
        }
    }

    fn events<'a>(
        done: &'a SegmentOutcome,
        more: &'a SegmentOutcome,
        pass: &'a JournalOutcome,
        fail: &'a JournalOutcome,
    ) -> Vec<(&'static str, Event<'a>)> {
        vec![
            ("woken", Event::Woken),
            ("swept", Event::Swept),
            ("asked", Event::Asked),
            ("claimed", Event::Claimed { segment: 4, takeover: false }),
            ("claimed (takeover)", Event::Claimed { segment: 4, takeover: true }),
            ("pushed, walk done", Event::Ended { segment: 4, takeover: false, ran: Ran::Push(done) }),
            ("pushed, more to walk", Event::Ended { segment: 4, takeover: false, ran: Ran::Push(more) }),
            ("judged: pass", Event::Ended { segment: 4, takeover: false, ran: Ran::Judge(pass) }),
            ("judged: fail", Event::Ended { segment: 4, takeover: false, ran: Ran::Judge(fail) }),
            ("rolled back, done", Event::Ended { segment: 4, takeover: false, ran: Ran::Rollback(pass) }),
            ("recorded", Event::Recorded),
            ("not recorded (was ours)", Event::NotRecorded { segment: 3, owner: "o" }),
            ("not recorded (lost)", Event::NotRecorded { segment: 4, owner: "o2" }),
            ("extended", Event::Extended),
            ("pause", Event::Control(Action::Pause)),
            ("resume", Event::Control(Action::Resume)),
            ("abort", Event::Control(Action::Abort { rollback: None })),
            ("abort, rollback", Event::Control(Action::Abort { rollback: Some(true) })),
            ("abort, no rollback", Event::Control(Action::Abort { rollback: Some(false) })),
            ("pause not written", Event::NotRequested(Control::Pause)),
            ("polled", Event::Polled { waited_ms: 0 }),
            ("polled at 8 s", Event::Polled { waited_ms: CONTROL_WAIT_MS }),
        ]
    }

    fn table() -> Vec<String> {
        let done = SegmentOutcome { targets: 4, updated: 4, ..SegmentOutcome::default() };
        let more =
            SegmentOutcome { targets: 2, updated: 2, cursor: Some(Cursor::default()), ..SegmentOutcome::default() };
        let pass = JournalOutcome { converged: 4, ..JournalOutcome::default() };
        let fail = JournalOutcome { pending: 4, ..JournalOutcome::default() };
        let plan = plan();
        let mut lines = Vec::new();
        for state in STATES {
            for (name, event) in events(&done, &more, &pass, &fail) {
                let record = in_state(state);
                lines.push(format!("{state} | {name} | {}", describe(&step(&record, &plan, event, AT))));
            }
        }
        lines
    }

    /// Every (state, event) pair: the effects, or the refusal. A segment's events (claimed, ended) on a push that
    /// no segment runs, or a run that is not the one its state calls for, are refused; so is every control that
    /// the state cannot take, naming the request's field, and a resume or rollback once the push's items were kept
    /// until a moment past. A run after a takeover or a recheck is uncertain; a record write refused by its
    /// condition goes on as recorded when the reread record shows it written by this owner, else reports the claim
    /// lost; a control request refused by its condition polls when the same control is on the record, else is
    /// refused; a poll reports once the answer waited [`CONTROL_WAIT_MS`]; every release keeps the push's items
    /// (extend), and an arrival on a push no segment follows finishes a retention walk under way and hands on what
    /// it could not finish.
    const TABLE: &str = "
running                             | woken                   | claim 4
running                             | swept                   | wake 4
running                             | asked                   | wake 4
running                             | claimed                 | run push Some(0)
running                             | claimed (takeover)      | run push Some(0) (uncertain)
running                             | pushed, walk done       | record baking
running                             | pushed, more to walk    | record running@1
running                             | judged: pass            | refused: event
running                             | judged: fail            | refused: event
running                             | rolled back, done       | refused: event
running                             | recorded                | extend, hand off 4+0s
running                             | not recorded (was ours) | extend, hand off 4+0s
running                             | not recorded (lost)     | report ClaimLost
running                             | extended                | nothing
running                             | pause                   | request Pause, poll +0ms
running                             | resume                  | report NotPaused
running                             | abort                   | request Abort, poll +0ms
running                             | abort, rollback         | request AbortRollback, poll +0ms
running                             | abort, no rollback      | request Abort, poll +0ms
running                             | pause not written       | refused: pausePush
running                             | polled                  | report Running
running                             | polled at 8 s           | report Running
running (recheck)                   | woken                   | claim 4
running (recheck)                   | swept                   | wake 4
running (recheck)                   | asked                   | wake 4
running (recheck)                   | claimed                 | run push Some(0) (uncertain)
running (recheck)                   | claimed (takeover)      | run push Some(0) (uncertain)
running (recheck)                   | pushed, walk done       | record baking
running (recheck)                   | pushed, more to walk    | record running@1
running (recheck)                   | judged: pass            | refused: event
running (recheck)                   | judged: fail            | refused: event
running (recheck)                   | rolled back, done       | refused: event
running (recheck)                   | recorded                | extend, hand off 4+0s
running (recheck)                   | not recorded (was ours) | extend, hand off 4+0s
running (recheck)                   | not recorded (lost)     | report ClaimLost
running (recheck)                   | extended                | nothing
running (recheck)                   | pause                   | request Pause, poll +0ms
running (recheck)                   | resume                  | report NotPaused
running (recheck)                   | abort                   | request Abort, poll +0ms
running (recheck)                   | abort, rollback         | request AbortRollback, poll +0ms
running (recheck)                   | abort, no rollback      | request Abort, poll +0ms
running (recheck)                   | pause not written       | refused: pausePush
running (recheck)                   | polled                  | report Running
running (recheck)                   | polled at 8 s           | report Running
running (held, pause pending)       | woken                   | report Running
running (held, pause pending)       | swept                   | report Running
running (held, pause pending)       | asked                   | report Running
running (held, pause pending)       | claimed                 | run push Some(0)
running (held, pause pending)       | claimed (takeover)      | run push Some(0) (uncertain)
running (held, pause pending)       | pushed, walk done       | record baking
running (held, pause pending)       | pushed, more to walk    | record running@1
running (held, pause pending)       | judged: pass            | refused: event
running (held, pause pending)       | judged: fail            | refused: event
running (held, pause pending)       | rolled back, done       | refused: event
running (held, pause pending)       | recorded                | extend, carry Pause -> paused@1, extend
running (held, pause pending)       | not recorded (was ours) | extend, carry Pause -> paused@1, extend
running (held, pause pending)       | not recorded (lost)     | report ClaimLost
running (held, pause pending)       | extended                | nothing
running (held, pause pending)       | pause                   | request Pause, poll +0ms
running (held, pause pending)       | resume                  | report NotPaused
running (held, pause pending)       | abort                   | request Abort, poll +0ms
running (held, pause pending)       | abort, rollback         | request AbortRollback, poll +0ms
running (held, pause pending)       | abort, no rollback      | request Abort, poll +0ms
running (held, pause pending)       | pause not written       | poll +0ms
running (held, pause pending)       | polled                  | poll +250ms
running (held, pause pending)       | polled at 8 s           | report ControlPending
running (held)                      | woken                   | report Running
running (held)                      | swept                   | report Running
running (held)                      | asked                   | report Running
running (held)                      | claimed                 | run push Some(0)
running (held)                      | claimed (takeover)      | run push Some(0) (uncertain)
running (held)                      | pushed, walk done       | record baking
running (held)                      | pushed, more to walk    | record running@1
running (held)                      | judged: pass            | refused: event
running (held)                      | judged: fail            | refused: event
running (held)                      | rolled back, done       | refused: event
running (held)                      | recorded                | extend, hand off 5+0s
running (held)                      | not recorded (was ours) | extend, hand off 5+0s
running (held)                      | not recorded (lost)     | report ClaimLost
running (held)                      | extended                | nothing
running (held)                      | pause                   | request Pause, poll +0ms
running (held)                      | resume                  | report NotPaused
running (held)                      | abort                   | request Abort, poll +0ms
running (held)                      | abort, rollback         | request AbortRollback, poll +0ms
running (held)                      | abort, no rollback      | request Abort, poll +0ms
running (held)                      | pause not written       | refused: pausePush
running (held)                      | polled                  | report Running
running (held)                      | polled at 8 s           | report Running
running (holder died)               | woken                   | claim 4 (takeover)
running (holder died)               | swept                   | wake 4
running (holder died)               | asked                   | wake 4
running (holder died)               | claimed                 | run push Some(0)
running (holder died)               | claimed (takeover)      | run push Some(0) (uncertain)
running (holder died)               | pushed, walk done       | record baking
running (holder died)               | pushed, more to walk    | record running@1
running (holder died)               | judged: pass            | refused: event
running (holder died)               | judged: fail            | refused: event
running (holder died)               | rolled back, done       | refused: event
running (holder died)               | recorded                | extend, hand off 5+0s
running (holder died)               | not recorded (was ours) | extend, hand off 5+0s
running (holder died)               | not recorded (lost)     | report ClaimLost
running (holder died)               | extended                | nothing
running (holder died)               | pause                   | request Pause, poll +0ms
running (holder died)               | resume                  | report NotPaused
running (holder died)               | abort                   | request Abort, poll +0ms
running (holder died)               | abort, rollback         | request AbortRollback, poll +0ms
running (holder died)               | abort, no rollback      | request Abort, poll +0ms
running (holder died)               | pause not written       | refused: pausePush
running (holder died)               | polled                  | report Running
running (holder died)               | polled at 8 s           | report Running
baking                              | woken                   | claim 4
baking                              | swept                   | wake 4
baking                              | asked                   | wake 4
baking                              | claimed                 | record baking
baking                              | claimed (takeover)      | record baking
baking                              | pushed, walk done       | refused: event
baking                              | pushed, more to walk    | refused: event
baking                              | judged: pass            | refused: event
baking                              | judged: fail            | refused: event
baking                              | rolled back, done       | refused: event
baking                              | recorded                | extend, hand off 4+30s
baking                              | not recorded (was ours) | extend, hand off 4+30s
baking                              | not recorded (lost)     | report ClaimLost
baking                              | extended                | nothing
baking                              | pause                   | request Pause, poll +0ms
baking                              | resume                  | report NotPaused
baking                              | abort                   | request Abort, poll +0ms
baking                              | abort, rollback         | request AbortRollback, poll +0ms
baking                              | abort, no rollback      | request Abort, poll +0ms
baking                              | pause not written       | refused: pausePush
baking                              | polled                  | report Running
baking                              | polled at 8 s           | report Running
judging                             | woken                   | claim 4
judging                             | swept                   | wake 4
judging                             | asked                   | wake 4
judging                             | claimed                 | run judge 1
judging                             | claimed (takeover)      | run judge 1 (uncertain)
judging                             | pushed, walk done       | refused: event
judging                             | pushed, more to walk    | refused: event
judging                             | judged: pass            | record running@2
judging                             | judged: fail            | record aborted
judging                             | rolled back, done       | refused: event
judging                             | recorded                | extend, hand off 4+0s
judging                             | not recorded (was ours) | extend, hand off 4+0s
judging                             | not recorded (lost)     | report ClaimLost
judging                             | extended                | nothing
judging                             | pause                   | request Pause, poll +0ms
judging                             | resume                  | report NotPaused
judging                             | abort                   | request Abort, poll +0ms
judging                             | abort, rollback         | request AbortRollback, poll +0ms
judging                             | abort, no rollback      | request Abort, poll +0ms
judging                             | pause not written       | refused: pausePush
judging                             | polled                  | report Running
judging                             | polled at 8 s           | report Running
paused (running)                    | woken                   | report Paused
paused (running)                    | swept                   | report Paused
paused (running)                    | asked                   | report Paused
paused (running)                    | claimed                 | refused: event
paused (running)                    | claimed (takeover)      | refused: event
paused (running)                    | pushed, walk done       | refused: event
paused (running)                    | pushed, more to walk    | refused: event
paused (running)                    | judged: pass            | refused: event
paused (running)                    | judged: fail            | refused: event
paused (running)                    | rolled back, done       | refused: event
paused (running)                    | recorded                | extend, report Paused
paused (running)                    | not recorded (was ours) | extend, report Paused
paused (running)                    | not recorded (lost)     | report ClaimLost
paused (running)                    | extended                | nothing
paused (running)                    | pause                   | report Paused
paused (running)                    | resume                  | resume Running, extend, hand off 4+0s
paused (running)                    | abort                   | request Abort, poll +0ms
paused (running)                    | abort, rollback         | request AbortRollback, poll +0ms
paused (running)                    | abort, no rollback      | request Abort, poll +0ms
paused (running)                    | pause not written       | refused: pausePush
paused (running)                    | polled                  | report Paused
paused (running)                    | polled at 8 s           | report Paused
paused (baking)                     | woken                   | report Paused
paused (baking)                     | swept                   | report Paused
paused (baking)                     | asked                   | report Paused
paused (baking)                     | claimed                 | refused: event
paused (baking)                     | claimed (takeover)      | refused: event
paused (baking)                     | pushed, walk done       | refused: event
paused (baking)                     | pushed, more to walk    | refused: event
paused (baking)                     | judged: pass            | refused: event
paused (baking)                     | judged: fail            | refused: event
paused (baking)                     | rolled back, done       | refused: event
paused (baking)                     | recorded                | extend, report Paused
paused (baking)                     | not recorded (was ours) | extend, report Paused
paused (baking)                     | not recorded (lost)     | report ClaimLost
paused (baking)                     | extended                | nothing
paused (baking)                     | pause                   | report Paused
paused (baking)                     | resume                  | resume Baking, extend, hand off 4+0s
paused (baking)                     | abort                   | request Abort, poll +0ms
paused (baking)                     | abort, rollback         | request AbortRollback, poll +0ms
paused (baking)                     | abort, no rollback      | request Abort, poll +0ms
paused (baking)                     | pause not written       | refused: pausePush
paused (baking)                     | polled                  | report Paused
paused (baking)                     | polled at 8 s           | report Paused
paused (judging)                    | woken                   | report Paused
paused (judging)                    | swept                   | report Paused
paused (judging)                    | asked                   | report Paused
paused (judging)                    | claimed                 | refused: event
paused (judging)                    | claimed (takeover)      | refused: event
paused (judging)                    | pushed, walk done       | refused: event
paused (judging)                    | pushed, more to walk    | refused: event
paused (judging)                    | judged: pass            | refused: event
paused (judging)                    | judged: fail            | refused: event
paused (judging)                    | rolled back, done       | refused: event
paused (judging)                    | recorded                | extend, report Paused
paused (judging)                    | not recorded (was ours) | extend, report Paused
paused (judging)                    | not recorded (lost)     | report ClaimLost
paused (judging)                    | extended                | nothing
paused (judging)                    | pause                   | report Paused
paused (judging)                    | resume                  | resume Baking, extend, hand off 4+0s
paused (judging)                    | abort                   | request Abort, poll +0ms
paused (judging)                    | abort, rollback         | request AbortRollback, poll +0ms
paused (judging)                    | abort, no rollback      | request Abort, poll +0ms
paused (judging)                    | pause not written       | refused: pausePush
paused (judging)                    | polled                  | report Paused
paused (judging)                    | polled at 8 s           | report Paused
paused (rollingBack)                | woken                   | report Paused
paused (rollingBack)                | swept                   | report Paused
paused (rollingBack)                | asked                   | report Paused
paused (rollingBack)                | claimed                 | refused: event
paused (rollingBack)                | claimed (takeover)      | refused: event
paused (rollingBack)                | pushed, walk done       | refused: event
paused (rollingBack)                | pushed, more to walk    | refused: event
paused (rollingBack)                | judged: pass            | refused: event
paused (rollingBack)                | judged: fail            | refused: event
paused (rollingBack)                | rolled back, done       | refused: event
paused (rollingBack)                | recorded                | extend, report Paused
paused (rollingBack)                | not recorded (was ours) | extend, report Paused
paused (rollingBack)                | not recorded (lost)     | report ClaimLost
paused (rollingBack)                | extended                | nothing
paused (rollingBack)                | pause                   | report Paused
paused (rollingBack)                | resume                  | resume RollingBack, extend, hand off 4+0s
paused (rollingBack)                | abort                   | refused: abortPush
paused (rollingBack)                | abort, rollback         | refused: abortPush
paused (rollingBack)                | abort, no rollback      | refused: abortPush
paused (rollingBack)                | pause not written       | refused: pausePush
paused (rollingBack)                | polled                  | report Paused
paused (rollingBack)                | polled at 8 s           | report Paused
rollingBack                         | woken                   | claim 4
rollingBack                         | swept                   | wake 4
rollingBack                         | asked                   | wake 4
rollingBack                         | claimed                 | run rollback
rollingBack                         | claimed (takeover)      | run rollback (uncertain)
rollingBack                         | pushed, walk done       | refused: event
rollingBack                         | pushed, more to walk    | refused: event
rollingBack                         | judged: pass            | refused: event
rollingBack                         | judged: fail            | refused: event
rollingBack                         | rolled back, done       | record rolledBack
rollingBack                         | recorded                | extend, hand off 4+0s
rollingBack                         | not recorded (was ours) | extend, hand off 4+0s
rollingBack                         | not recorded (lost)     | report ClaimLost
rollingBack                         | extended                | nothing
rollingBack                         | pause                   | request Pause, poll +0ms
rollingBack                         | resume                  | report NotPaused
rollingBack                         | abort                   | refused: abortPush
rollingBack                         | abort, rollback         | refused: abortPush
rollingBack                         | abort, no rollback      | refused: abortPush
rollingBack                         | pause not written       | refused: pausePush
rollingBack                         | polled                  | report Running
rollingBack                         | polled at 8 s           | report Running
aborted                             | woken                   | report Final
aborted                             | swept                   | report Final
aborted                             | asked                   | report Final
aborted                             | claimed                 | refused: event
aborted                             | claimed (takeover)      | refused: event
aborted                             | pushed, walk done       | refused: event
aborted                             | pushed, more to walk    | refused: event
aborted                             | judged: pass            | refused: event
aborted                             | judged: fail            | refused: event
aborted                             | rolled back, done       | refused: event
aborted                             | recorded                | extend final, report Final
aborted                             | not recorded (was ours) | extend final, report Final
aborted                             | not recorded (lost)     | report ClaimLost
aborted                             | extended                | nothing
aborted                             | pause                   | refused: pausePush
aborted                             | resume                  | refused: resumePush
aborted                             | abort                   | refused: abortPush
aborted                             | abort, rollback         | request AbortRollback, poll +0ms
aborted                             | abort, no rollback      | refused: abortPush
aborted                             | pause not written       | refused: pausePush
aborted                             | polled                  | report Final
aborted                             | polled at 8 s           | report Final
rolledBack                          | woken                   | report Final
rolledBack                          | swept                   | report Final
rolledBack                          | asked                   | report Final
rolledBack                          | claimed                 | refused: event
rolledBack                          | claimed (takeover)      | refused: event
rolledBack                          | pushed, walk done       | refused: event
rolledBack                          | pushed, more to walk    | refused: event
rolledBack                          | judged: pass            | refused: event
rolledBack                          | judged: fail            | refused: event
rolledBack                          | rolled back, done       | refused: event
rolledBack                          | recorded                | extend final, report Final
rolledBack                          | not recorded (was ours) | extend final, report Final
rolledBack                          | not recorded (lost)     | report ClaimLost
rolledBack                          | extended                | nothing
rolledBack                          | pause                   | refused: pausePush
rolledBack                          | resume                  | refused: resumePush
rolledBack                          | abort                   | refused: abortPush
rolledBack                          | abort, rollback         | refused: abortPush
rolledBack                          | abort, no rollback      | refused: abortPush
rolledBack                          | pause not written       | refused: pausePush
rolledBack                          | polled                  | report Final
rolledBack                          | polled at 8 s           | report Final
complete                            | woken                   | report Final
complete                            | swept                   | report Final
complete                            | asked                   | report Final
complete                            | claimed                 | refused: event
complete                            | claimed (takeover)      | refused: event
complete                            | pushed, walk done       | refused: event
complete                            | pushed, more to walk    | refused: event
complete                            | judged: pass            | refused: event
complete                            | judged: fail            | refused: event
complete                            | rolled back, done       | refused: event
complete                            | recorded                | extend final, report Final
complete                            | not recorded (was ours) | extend final, report Final
complete                            | not recorded (lost)     | report ClaimLost
complete                            | extended                | nothing
complete                            | pause                   | refused: pausePush
complete                            | resume                  | refused: resumePush
complete                            | abort                   | refused: abortPush
complete                            | abort, rollback         | refused: abortPush
complete                            | abort, no rollback      | refused: abortPush
complete                            | pause not written       | refused: pausePush
complete                            | polled                  | report Final
complete                            | polled at 8 s           | report Final
stalled                             | woken                   | report Stalled
stalled                             | swept                   | report Stalled
stalled                             | asked                   | report Stalled
stalled                             | claimed                 | refused: event
stalled                             | claimed (takeover)      | refused: event
stalled                             | pushed, walk done       | refused: event
stalled                             | pushed, more to walk    | refused: event
stalled                             | judged: pass            | refused: event
stalled                             | judged: fail            | refused: event
stalled                             | rolled back, done       | refused: event
stalled                             | recorded                | extend, report Stalled
stalled                             | not recorded (was ours) | extend, report Stalled
stalled                             | not recorded (lost)     | report ClaimLost
stalled                             | extended                | nothing
stalled                             | pause                   | refused: pausePush
stalled                             | resume                  | unstall -> running@1, hand off 5+0s
stalled                             | abort                   | refused: abortPush
stalled                             | abort, rollback         | request AbortRollback, poll +0ms
stalled                             | abort, no rollback      | refused: abortPush
stalled                             | pause not written       | refused: pausePush
stalled                             | polled                  | report Stalled
stalled                             | polled at 8 s           | report Stalled
paused (past retention)             | woken                   | report Paused
paused (past retention)             | swept                   | report Paused
paused (past retention)             | asked                   | report Paused
paused (past retention)             | claimed                 | refused: event
paused (past retention)             | claimed (takeover)      | refused: event
paused (past retention)             | pushed, walk done       | refused: event
paused (past retention)             | pushed, more to walk    | refused: event
paused (past retention)             | judged: pass            | refused: event
paused (past retention)             | judged: fail            | refused: event
paused (past retention)             | rolled back, done       | refused: event
paused (past retention)             | recorded                | extend, report Paused
paused (past retention)             | not recorded (was ours) | extend, report Paused
paused (past retention)             | not recorded (lost)     | report ClaimLost
paused (past retention)             | extended                | nothing
paused (past retention)             | pause                   | report Paused
paused (past retention)             | resume                  | refused: resumePush
paused (past retention)             | abort                   | request Abort, poll +0ms
paused (past retention)             | abort, rollback         | refused: abortPush
paused (past retention)             | abort, no rollback      | request Abort, poll +0ms
paused (past retention)             | pause not written       | refused: pausePush
paused (past retention)             | polled                  | report Paused
paused (past retention)             | polled at 8 s           | report Paused
aborted (past retention)            | woken                   | report Final
aborted (past retention)            | swept                   | report Final
aborted (past retention)            | asked                   | report Final
aborted (past retention)            | claimed                 | refused: event
aborted (past retention)            | claimed (takeover)      | refused: event
aborted (past retention)            | pushed, walk done       | refused: event
aborted (past retention)            | pushed, more to walk    | refused: event
aborted (past retention)            | judged: pass            | refused: event
aborted (past retention)            | judged: fail            | refused: event
aborted (past retention)            | rolled back, done       | refused: event
aborted (past retention)            | recorded                | extend final, report Final
aborted (past retention)            | not recorded (was ours) | extend final, report Final
aborted (past retention)            | not recorded (lost)     | report ClaimLost
aborted (past retention)            | extended                | nothing
aborted (past retention)            | pause                   | refused: pausePush
aborted (past retention)            | resume                  | refused: resumePush
aborted (past retention)            | abort                   | refused: abortPush
aborted (past retention)            | abort, rollback         | refused: abortPush
aborted (past retention)            | abort, no rollback      | refused: abortPush
aborted (past retention)            | pause not written       | refused: pausePush
aborted (past retention)            | polled                  | report Final
aborted (past retention)            | polled at 8 s           | report Final
complete (retention walk under way) | woken                   | extend final, report Final
complete (retention walk under way) | swept                   | extend final, report Final
complete (retention walk under way) | asked                   | extend final, report Final
complete (retention walk under way) | claimed                 | refused: event
complete (retention walk under way) | claimed (takeover)      | refused: event
complete (retention walk under way) | pushed, walk done       | refused: event
complete (retention walk under way) | pushed, more to walk    | refused: event
complete (retention walk under way) | judged: pass            | refused: event
complete (retention walk under way) | judged: fail            | refused: event
complete (retention walk under way) | rolled back, done       | refused: event
complete (retention walk under way) | recorded                | extend final, report Final
complete (retention walk under way) | not recorded (was ours) | extend final, report Final
complete (retention walk under way) | not recorded (lost)     | report ClaimLost
complete (retention walk under way) | extended                | hand off 3+0s
complete (retention walk under way) | pause                   | refused: pausePush
complete (retention walk under way) | resume                  | refused: resumePush
complete (retention walk under way) | abort                   | refused: abortPush
complete (retention walk under way) | abort, rollback         | refused: abortPush
complete (retention walk under way) | abort, no rollback      | refused: abortPush
complete (retention walk under way) | pause not written       | refused: pausePush
complete (retention walk under way) | polled                  | extend final, report Final
complete (retention walk under way) | polled at 8 s           | extend final, report Final
";

    #[test]
    fn every_state_takes_every_event_as_the_table_says() {
        let expected: Vec<String> =
            TABLE.trim().lines().map(|l| l.split(" | ").map(str::trim).collect::<Vec<_>>().join(" | ")).collect();
        let got = table();
        assert_eq!(got.len(), STATES.len() * 22);
        let wrong: Vec<String> = got
            .iter()
            .zip(&expected)
            .filter(|(g, e)| g != e)
            .map(|(g, e)| format!("expected {e}\n     got {g}"))
            .collect();
        assert!(wrong.is_empty() && got.len() == expected.len(), "{}", wrong.join("\n"));
    }

    /// A push created by a start that answers at once is released before segment 1: the start hands segment 1 to
    /// the queue (the same request again finds it so and hands it again: the claim keeps it one segment), and the
    /// message that arrives claims it.
    #[test]
    fn a_queued_push_hands_its_first_segment_to_the_queue() {
        let plan = plan();
        let record = lifecycle::queued_record(&plan, NOW, TIMING);
        assert_eq!(
            (record.holder.segment, record.holder.handed_off, record.holder.lease_until),
            (0, 0, NOW + TIMING.hand_off_grace_ms)
        );
        let asked = step(&record, &plan, Event::Asked, at(NOW));
        assert_eq!(asked, Ok(vec![Effect::Wake { segment: 1 }]));
        let woken = step(&record, &plan, Event::Woken, at(NOW + 5));
        assert_eq!(woken, Ok(vec![Effect::Claim { segment: 1, takeover: false }]));
        // Unclaimed after the grace (the message was lost): the sweeper finds it in its index and hands it again.
        let swept = step(&record, &plan, Event::Swept, at(NOW + TIMING.hand_off_grace_ms + 1));
        assert_eq!(swept, Ok(vec![Effect::Wake { segment: 1 }]));
    }

    /// The record's store, the queue and the clock, as AWS would hold them: each effect's write is applied under
    /// the condition the store puts on it, so the simulation finds what a real retry, duplicate or crash finds.
    struct World {
        plan: PushPlan,
        stored: PushRecord,
        queue: Vec<u64>,
        now: u64,
        tokens: u64,
        /// Things per phase's band.
        band: u64,
        /// The state a pause was carried out in.
        paused_from: Option<PushState>,
        rollback_required: bool,
        /// A final push ran again without an operator's rollback.
        left_final: Option<String>,
        resumed_wrong: Option<String>,
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// A hand-off message arrives (`keep`: a duplicate stays on the queue); the invocation dies after `crash`
        /// effects, if given.
        Deliver {
            keep: bool,
            crash: Option<usize>,
            chunk: u64,
            pass: bool,
        },
        Sweep {
            crash: Option<usize>,
            chunk: u64,
            pass: bool,
        },
        Operator(Action),
        /// The start request again (a caller's retry of a synchronous start), at any time; it dies after `crash`.
        Ask {
            crash: Option<usize>,
        },
        Wait(u64),
    }

    fn ops() -> impl proptest::strategy::Strategy<Value = Vec<Op>> {
        use proptest::prelude::*;
        let crash = proptest::option::weighted(0.3, 0usize..6);
        let action = prop_oneof![
            Just(Action::Pause),
            Just(Action::Resume),
            Just(Action::Abort { rollback: None }),
            Just(Action::Abort { rollback: Some(true) }),
            Just(Action::Abort { rollback: Some(false) }),
        ];
        let op = prop_oneof![
            4 => (any::<bool>(), crash.clone(), 1u64..8, proptest::bool::weighted(0.8))
                .prop_map(|(keep, crash, chunk, pass)| Op::Deliver { keep, crash, chunk, pass }),
            1 => (crash.clone(), 1u64..8, proptest::bool::weighted(0.8))
                .prop_map(|(crash, chunk, pass)| Op::Sweep { crash, chunk, pass }),
            1 => crash.prop_map(|crash| Op::Ask { crash }),
            1 => action.prop_map(Op::Operator),
            2 => (0u64..200_000).prop_map(Op::Wait),
        ];
        proptest::collection::vec(op, 1..60)
    }

    impl World {
        fn new(band: u64) -> Self {
            let mut stored = released();
            (stored.holder.segment, stored.holder.handed_off) = (1, 0);
            stored.holder.lease_until = NOW;
            stored.status.cursor = Some(Cursor::default());
            (stored.status.counts.targets, stored.status.counts.updated, stored.status.counts.requests) = (0, 0, 0);
            for phase in &mut stored.status.phases {
                *phase = PhaseCounts { percent: phase.percent, ..PhaseCounts::default() };
            }
            World {
                plan: plan(),
                stored,
                queue: vec![1],
                now: NOW + 1,
                tokens: 0,
                band,
                paused_from: None,
                rollback_required: false,
                left_final: None,
                resumed_wrong: None,
            }
        }

        /// Writes `next` as the stored record, watching the invariants that span writes.
        fn write(&mut self, next: PushRecord, why: &str) {
            let was_final = self.stored.status.complete || self.stored.status.state.is_final();
            if was_final && !(next.status.complete || next.status.state.is_final()) && why != "carry AbortRollback" {
                self.left_final = Some(format!("{why}: {:?} -> {:?}", self.stored.status.state, next.status.state));
            }
            if next.status.state == PushState::RollingBack {
                self.rollback_required = true;
            }
            self.stored = next;
        }

        /// One invocation: `event` first, then the effects it leads to, until it reports or dies after `crash`.
        fn arrive(&mut self, event: Event<'_>, crash: Option<usize>, chunk: u64, pass: bool) {
            let mut record = self.stored.clone();
            let Ok(effects) = step(&record, &self.plan, event, at(self.now)) else { return };
            let mut queue: VecDeque<Effect> = effects.into();
            let mut owner = String::new();
            let mut carried = 0;
            while let Some(effect) = queue.pop_front() {
                if crash.is_some_and(|c| carried >= c) {
                    return;
                }
                carried += 1;
                let (out, journal);
                let event = match effect {
                    Effect::Claim { segment, takeover } => {
                        let s = &self.stored;
                        if lifecycle::next_step(s, self.now) != (Step::Run { segment, takeover }) {
                            return;
                        }
                        self.tokens += 1;
                        owner = format!("o{}", self.tokens);
                        let mut next = s.clone();
                        next.holder.segment = segment;
                        next.holder.owner = owner.clone();
                        next.holder.lease_until = self.now + TIMING.lease_ms;
                        next.holder.takeovers = if takeover { s.holder.takeovers + 1 } else { 0 };
                        self.write(next, "claim");
                        record = self.stored.clone();
                        Event::Claimed { segment, takeover }
                    }
                    Effect::Run { run, .. } => {
                        let offset = record.status.cursor.as_ref().map_or(0, |c| c.offset as u64);
                        let segment = record.holder.segment;
                        let takeover = record.holder.takeovers > 0;
                        match run {
                            Run::Push { .. } => {
                                let k = chunk.min(self.band.saturating_sub(offset));
                                let done = offset + k >= self.band;
                                let cursor =
                                    (!done).then(|| Cursor { offset: (offset + k) as usize, ..Cursor::default() });
                                out = SegmentOutcome { targets: k, updated: k, cursor, ..SegmentOutcome::default() };
                                Event::Ended { segment, takeover, ran: Ran::Push(&out) }
                            }
                            Run::Judge { .. } => {
                                let updated =
                                    record.status.phases.get(record.status.phase as usize - 1).map_or(0, |p| p.updated);
                                journal = if pass {
                                    JournalOutcome { converged: updated, ..JournalOutcome::default() }
                                } else {
                                    JournalOutcome { pending: updated, ..JournalOutcome::default() }
                                };
                                Event::Ended { segment, takeover, ran: Ran::Judge(&journal) }
                            }
                            _ => {
                                journal = JournalOutcome {
                                    rollback: RollbackCounts {
                                        restored: record.status.counts.updated,
                                        ..RollbackCounts::default()
                                    },
                                    ..JournalOutcome::default()
                                };
                                Event::Ended { segment, takeover, ran: Ran::Rollback(&journal) }
                            }
                        }
                    }
                    Effect::Record(next) => {
                        let s = &self.stored;
                        if s.holder.owner != owner
                            || s.holder.segment != next.holder.segment
                            || s.holder.handed_off + 1 != next.holder.segment
                        {
                            return;
                        }
                        let control = s.status.control;
                        let mut next = *next;
                        next.status.control = control;
                        next.holder.owner = owner.clone();
                        self.write(next, "record");
                        record = self.stored.clone();
                        Event::Recorded
                    }
                    Effect::CarryOut { control, next } => {
                        let s = &self.stored;
                        let free = s.holder.handed_off == next.holder.segment
                            || (s.holder.handed_off + 1 == next.holder.segment && s.holder.lease_until < self.now);
                        if s.status.control != Some(control) || s.holder.segment != next.holder.segment || !free {
                            return;
                        }
                        if control == Control::Pause {
                            self.paused_from = Some(s.status.state);
                        }
                        self.write(*next, &format!("carry {control:?}"));
                        record = self.stored.clone();
                        continue;
                    }
                    Effect::RequestControl(control) => {
                        let s = &self.stored;
                        let state = s.status.state;
                        let allowed = !s.status.complete
                            && match control {
                                Control::Pause => {
                                    s.holder.stalled.is_none()
                                        && s.status.control.is_none()
                                        && matches!(
                                            state,
                                            PushState::Running | PushState::Baking | PushState::RollingBack
                                        )
                                }
                                Control::Abort => {
                                    s.holder.stalled.is_none()
                                        && matches!(state, PushState::Running | PushState::Baking | PushState::Paused)
                                }
                                Control::AbortRollback => matches!(
                                    state,
                                    PushState::Running | PushState::Baking | PushState::Paused | PushState::Aborted
                                ),
                            };
                        if !allowed {
                            return;
                        }
                        self.stored.status.control = Some(control);
                        continue;
                    }
                    // The answer polls once at once (a push nobody holds has the control carried out then); its later
                    // polls wait for a holder this model does not run meanwhile: the invocation answers.
                    Effect::Poll { after_ms: 0 } => {
                        record = self.stored.clone();
                        Event::Polled { waited_ms: 0 }
                    }
                    Effect::Poll { .. } => return,
                    Effect::Extend { .. } => Event::Extended,
                    Effect::Resume { to, lease_until } => {
                        if self.stored.status.state != PushState::Paused || self.stored.status.control.is_some() {
                            return;
                        }
                        if self.paused_from.is_some_and(|from| from != to) {
                            self.resumed_wrong = Some(format!("paused in {:?}, resumed in {to:?}", self.paused_from));
                        }
                        let mut next = self.stored.clone();
                        next.status.state = to;
                        next.holder.lease_until = lease_until;
                        self.write(next, "resume");
                        record = self.stored.clone();
                        continue;
                    }
                    Effect::HandOff { segment, .. } | Effect::Wake { segment } => {
                        self.queue.push(segment);
                        continue;
                    }
                    Effect::Stall { reason, .. } => {
                        if !self.stored.status.complete {
                            self.stored.holder.stalled = Some(reason);
                        }
                        continue;
                    }
                    Effect::Unstall(next) => {
                        if self.stored.holder.stalled.is_none() || self.stored.holder.segment != next.holder.segment {
                            return;
                        }
                        self.write(*next, "unstall");
                        record = self.stored.clone();
                        continue;
                    }
                    Effect::Report(_) => return,
                };
                match step(&record, &self.plan, event, at(self.now)) {
                    Ok(effects) => {
                        for e in effects.into_iter().rev() {
                            queue.push_front(e);
                        }
                    }
                    Err(_) => return,
                }
            }
        }

        fn apply(&mut self, op: &Op) {
            match op {
                Op::Deliver { keep, crash, chunk, pass } => {
                    if self.queue.is_empty() {
                        return;
                    }
                    if !keep {
                        self.queue.remove(0);
                    }
                    self.arrive(Event::Woken, *crash, *chunk, *pass);
                }
                Op::Sweep { crash, chunk, pass } => {
                    if self.stored.holder.lease_until < self.now && !self.stored.status.state.is_final() {
                        self.arrive(Event::Swept, *crash, *chunk, *pass);
                    }
                }
                Op::Operator(action) => self.arrive(Event::Control(*action), None, 1, true),
                Op::Ask { crash } => self.arrive(Event::Asked, *crash, 1, true),
                Op::Wait(ms) => self.now += ms,
            }
        }

        /// Runs the push to its end with no more crashes or controls (an operator resumes a paused push, and rolls
        /// back a stalled one that was rolling back).
        fn drain(&mut self) {
            for _ in 0..2_000 {
                let s = &self.stored;
                if s.status.complete || s.status.state.is_final() {
                    return;
                }
                if s.holder.stalled.is_some() {
                    let action =
                        if self.rollback_required { Action::Abort { rollback: Some(true) } } else { Action::Resume };
                    self.arrive(Event::Control(action), None, 4, true);
                } else if s.status.state == PushState::Paused && s.status.control.is_none() {
                    self.arrive(Event::Control(Action::Resume), None, 4, true);
                }
                self.now += 70_000;
                self.queue.clear();
                self.arrive(Event::Swept, None, 4, true);
                self.arrive(Event::Woken, None, 4, true);
            }
            panic!("no end after 2000 rounds: {:?}", self.stored);
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 400, ..Default::default() })]

        #[test]
        fn random_deliveries_controls_duplicates_and_crashes_keep_the_promises(ops in ops(), band in 1u64..12) {
            let mut world = World::new(band);
            for op in &ops {
                world.apply(op);
            }
            world.drain();
            let end = &world.stored;
            proptest::prop_assert_eq!(&world.left_final, &None, "a final state left without a rollback: {:?}", end);
            proptest::prop_assert_eq!(&world.resumed_wrong, &None);
            if world.rollback_required {
                proptest::prop_assert_eq!(end.status.state, PushState::RolledBack, "a rollback required did not end: {:?}", end);
            }
            let sum = |f: fn(&PhaseCounts) -> u64| end.status.phases.iter().map(f).sum::<u64>();
            proptest::prop_assert_eq!(end.status.counts.targets, sum(|p| p.targets), "{:?}", end);
            proptest::prop_assert_eq!(end.status.counts.updated, sum(|p| p.updated), "{:?}", end);
            for phase in &end.status.phases {
                proptest::prop_assert!(phase.targets <= band, "a phase walked twice: {:?}", end);
            }
            if end.status.state == PushState::Complete {
                proptest::prop_assert!(end.status.phases.iter().all(|p| p.targets == band && p.judged), "{:?}", end);
            }
        }
    }
}
