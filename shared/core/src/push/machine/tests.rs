//! The machine's table: every state against every event.

use super::*;
use crate::push::engine::JournalOutcome;
use crate::push::retention::Kept;
use crate::push::rollout::RollbackCounts;
use crate::push::{Counts, Cursor, Holder, PhaseCounts, Status, validate_request};
use serde_json::json;

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
        holder: Holder { segment: 3, handed_off: 3, owner: "o".into(), lease_until: NOW + 1_000, ..Holder::default() },
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
        "rollingBack (abort pending)" => {
            r.status.state = PushState::RollingBack;
            r.status.rollback = Some(RollbackCounts { restored: 2, ..RollbackCounts::default() });
            r.status.control = Some(Control::Abort);
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
        "aborted (retention walk under way)" => {
            finish(&mut r, PushState::Aborted);
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

const STATES: [&str; 21] = [
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
    "rollingBack (abort pending)",
    "aborted",
    "rolledBack",
    "complete",
    "stalled",
    "paused (past retention)",
    "aborted (past retention)",
    "complete (retention walk under way)",
    "aborted (retention walk under way)",
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
    let more = SegmentOutcome { targets: 2, updated: 2, cursor: Some(Cursor::default()), ..SegmentOutcome::default() };
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
rollingBack (abort pending)         | woken                   | carry Abort -> rollingBack@1, extend, hand off 4+0s
rollingBack (abort pending)         | swept                   | carry Abort -> rollingBack@1, extend, hand off 4+0s
rollingBack (abort pending)         | asked                   | carry Abort -> rollingBack@1, extend, hand off 4+0s
rollingBack (abort pending)         | claimed                 | run rollback
rollingBack (abort pending)         | claimed (takeover)      | run rollback (uncertain)
rollingBack (abort pending)         | pushed, walk done       | refused: event
rollingBack (abort pending)         | pushed, more to walk    | refused: event
rollingBack (abort pending)         | judged: pass            | refused: event
rollingBack (abort pending)         | judged: fail            | refused: event
rollingBack (abort pending)         | rolled back, done       | record rolledBack
rollingBack (abort pending)         | recorded                | extend, carry Abort -> rollingBack@1, extend, hand off 4+0s
rollingBack (abort pending)         | not recorded (was ours) | extend, carry Abort -> rollingBack@1, extend, hand off 4+0s
rollingBack (abort pending)         | not recorded (lost)     | report ClaimLost
rollingBack (abort pending)         | extended                | nothing
rollingBack (abort pending)         | pause                   | request Pause, poll +0ms
rollingBack (abort pending)         | resume                  | report NotPaused
rollingBack (abort pending)         | abort                   | refused: abortPush
rollingBack (abort pending)         | abort, rollback         | refused: abortPush
rollingBack (abort pending)         | abort, no rollback      | refused: abortPush
rollingBack (abort pending)         | pause not written       | refused: pausePush
rollingBack (abort pending)         | polled                  | carry Abort -> rollingBack@1, extend, hand off 4+0s
rollingBack (abort pending)         | polled at 8 s           | report ControlPending
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
aborted (retention walk under way)  | woken                   | extend final, report Final
aborted (retention walk under way)  | swept                   | extend final, report Final
aborted (retention walk under way)  | asked                   | extend final, report Final
aborted (retention walk under way)  | claimed                 | refused: event
aborted (retention walk under way)  | claimed (takeover)      | refused: event
aborted (retention walk under way)  | pushed, walk done       | refused: event
aborted (retention walk under way)  | pushed, more to walk    | refused: event
aborted (retention walk under way)  | judged: pass            | refused: event
aborted (retention walk under way)  | judged: fail            | refused: event
aborted (retention walk under way)  | rolled back, done       | refused: event
aborted (retention walk under way)  | recorded                | extend final, report Final
aborted (retention walk under way)  | not recorded (was ours) | extend final, report Final
aborted (retention walk under way)  | not recorded (lost)     | report ClaimLost
aborted (retention walk under way)  | extended                | hand off 3+0s
aborted (retention walk under way)  | pause                   | refused: pausePush
aborted (retention walk under way)  | resume                  | refused: resumePush
aborted (retention walk under way)  | abort                   | extend final, report Final
aborted (retention walk under way)  | abort, rollback         | request AbortRollback, poll +0ms
aborted (retention walk under way)  | abort, no rollback      | extend final, report Final
aborted (retention walk under way)  | pause not written       | refused: pausePush
aborted (retention walk under way)  | polled                  | extend final, report Final
aborted (retention walk under way)  | polled at 8 s           | extend final, report Final
";

#[test]
fn every_state_takes_every_event_as_the_table_says() {
    let expected: Vec<String> =
        TABLE.trim().lines().map(|l| l.split(" | ").map(str::trim).collect::<Vec<_>>().join(" | ")).collect();
    let got = table();
    assert_eq!(got.len(), STATES.len() * 22);
    let wrong: Vec<String> =
        got.iter().zip(&expected).filter(|(g, e)| g != e).map(|(g, e)| format!("expected {e}\n     got {g}")).collect();
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
