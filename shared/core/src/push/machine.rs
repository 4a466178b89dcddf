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
            effects => effects.to_vec(),
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
    if matches!(action, Action::Abort { .. })
        && record.status.state == PushState::Aborted
        && !rollback_after_stop
        && walking(record, at).is_some()
    {
        // The abort again (Lambda's retry, the operator's) after one that died before its retention walk was done:
        // answered with the push as it stands, once that walk is finished (`finishing_walk`).
        return Ok(vec![Effect::Report(Report::Final)]);
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
mod tests;
