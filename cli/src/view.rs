//! `push show` for an operator, as `kubectl describe` is for a resource: where the push stands, one row per phase
//! with the gate's thresholds beside the counts, the bake's end as a time and a countdown, and what happens next.
//! Pure: the record (as the push reader gives it, its plan's `request` beside it) and "now" are passed in.

use serde_json::Value;
use shadow_core::push::rollout::{OnAbort, Rollout, Verdict, judge};
use shadow_core::push::{PhaseCounts, PushState, Status};

use crate::progress::compact;
use crate::when;

/// What `push show` prints, in order: the push's fields, its phases, then the gate and what comes next.
#[derive(Debug, Clone, PartialEq)]
pub struct View {
    pub fields: Vec<(String, String)>,
    /// One row per phase (empty without a rollout), under [`PHASE_COLUMNS`].
    pub phases: Vec<Vec<String>>,
    /// The rollout's gate, the rollback's counts, and what happens next.
    pub after: Vec<(String, String)>,
}

pub const PHASE_COLUMNS: [&str; 10] =
    ["phase", "percent", "targets", "updated", "unchanged", "converged", "pending", "refused", "failed", "judged"];

/// A time, and how far it is from now: `2026-12-07T19:22:00Z (in 9m 58s)`, `(3m 02s ago)`.
fn time_and_countdown(at_ms: u64, now_ms: u64) -> String {
    let at = when::format_ms(at_ms);
    if at_ms >= now_ms {
        format!("{at} (in {})", when::format_duration((at_ms - now_ms).div_ceil(1000)))
    } else {
        format!("{at} ({} ago)", when::format_duration((now_ms - at_ms) / 1000))
    }
}

fn targets_text(request: &Value) -> String {
    let Some(targets) = request.get("targets") else { return "-".into() };
    let mut parts = Vec::new();
    if let Some(group) = targets.get("thingGroup").and_then(Value::as_str) {
        let recursive = targets.get("recursive").and_then(Value::as_bool).unwrap_or(false);
        parts.push(format!("thing group {group}{}", if recursive { " and its child groups" } else { "" }));
    }
    if let Some(query) = targets.get("query").and_then(Value::as_str) {
        parts.push(format!("fleet-index query {query}"));
    }
    let things = targets.get("things").and_then(Value::as_array).map_or(0, Vec::len);
    if things > 0 {
        parts.push(format!("{things} listed thing(s)"));
    }
    if parts.is_empty() { "-".into() } else { parts.join(" + ") }
}

/// How a phase's gate went, or where it stands: the verdict beside the thresholds it was held to.
fn judged_text(rollout: &Rollout, phases: &[PhaseCounts], index: usize, status: &Status, now_ms: u64) -> String {
    let phase = &phases[index];
    let number = index as u32 + 1;
    if phase.judged {
        let judged = phase.converged + phase.pending + phase.refused;
        let share = if judged == 0 { 0.0 } else { phase.converged as f64 * 100.0 / judged as f64 };
        let against = format!("{share:.1} % converged, needs ≥ {}", rollout.converged_percent);
        return match judge(rollout, phases, index) {
            Verdict::Proceed => format!("passed ({against})"),
            Verdict::Abort(_) => format!("failed ({against})"),
        };
    }
    match (number.cmp(&status.phase), status.state) {
        (std::cmp::Ordering::Equal, PushState::Baking) => match status.bake_until {
            Some(until) if until > now_ms => {
                format!("baking: judged in {}", when::format_duration((until - now_ms).div_ceil(1000)))
            }
            _ => "baking: judged at the next wake-up".into(),
        },
        (std::cmp::Ordering::Equal, PushState::Running) => "pushing".into(),
        (std::cmp::Ordering::Equal, PushState::Paused) => "paused".into(),
        (std::cmp::Ordering::Greater, _) if !status.state.is_final() => "not started".into(),
        _ => "not judged".into(),
    }
}

fn phase_row(rollout: &Rollout, phases: &[PhaseCounts], index: usize, status: &Status, now_ms: u64) -> Vec<String> {
    let phase = &phases[index];
    let reached = (index as u32) < status.phase;
    let count = |n: u64| if reached { n.to_string() } else { "-".into() };
    let judged_count = |n: u64| if phase.judged { n.to_string() } else { "-".into() };
    vec![
        (index + 1).to_string(),
        format!("{} %", phase.percent),
        count(phase.targets),
        count(phase.updated),
        count(phase.unchanged),
        judged_count(phase.converged),
        judged_count(phase.pending),
        judged_count(phase.refused),
        count(phase.failed),
        judged_text(rollout, phases, index, status, now_ms),
    ]
}

fn on_abort_text(rollout: &Rollout) -> &'static str {
    match rollout.on_abort {
        OnAbort::Rollback => "rolls back every updated thing to what it held before",
        OnAbort::Stop => "stops, keeping what was pushed",
    }
}

/// What happens next, in one sentence an operator can act on.
fn next_text(push_id: &str, status: &Status, rollout: Option<&Rollout>, stalled: Option<&str>, now_ms: u64) -> String {
    if let Some(why) = stalled {
        return format!(
            "nothing: the push stalled ({why}) and nothing resumes it; fix the cause, then `shadow-fleet push resume \
             {push_id}`, or `shadow-fleet push abort {push_id} --rollback`"
        );
    }
    if let Some(control) = &status.control {
        return format!(
            "the {} asked is carried out by the segment that holds the push within seconds, or at its next wake-up",
            match control {
                shadow_core::push::Control::Pause => "pause",
                shadow_core::push::Control::Abort => "abort",
                shadow_core::push::Control::AbortRollback => "abort with rollback",
            }
        );
    }
    let phases = rollout.map_or(1, |r| r.phases.len() as u32);
    let phase = status.phase;
    let following = rollout.and_then(|r| r.phases.get(phase as usize)).map(|p| p.percent);
    match status.state {
        PushState::Complete => "nothing: the push is complete".into(),
        PushState::RolledBack => format!(
            "nothing: the push is rolled back; things changed since by another writer were left alone \
             (`shadow-fleet push show {push_id} --conflicts`)"
        ),
        PushState::Aborted => {
            let rollback = if rollout.is_some() {
                format!(
                    "; to put the updated things back while the journal lasts: `shadow-fleet push abort {push_id} --rollback`"
                )
            } else {
                String::new()
            };
            format!("nothing: the push is aborted and keeps what was pushed{rollback}")
        }
        PushState::RollingBack => "putting every updated thing back to what it held before; then rolled back".into(),
        PushState::Paused => {
            format!("nothing until `shadow-fleet push resume {push_id}` (or `shadow-fleet push abort {push_id}`)")
        }
        PushState::Baking => {
            let when = status
                .bake_until
                .map_or_else(|| "at the next wake-up".to_owned(), |t| format!("at {}", time_and_countdown(t, now_ms)));
            let pass = match following {
                Some(percent) => format!("phase {} ({percent} %) starts", phase + 1),
                None => "the push is complete".into(),
            };
            let fail = rollout.map_or("the push aborts", on_abort_text);
            format!("{when} phase {phase} is judged: if it passes, {pass}; if not, the push {fail}")
        }
        PushState::Running if rollout.is_some() => {
            let bake = rollout.map_or(0, |r| r.bake_seconds);
            format!("phase {phase} of {phases} is pushed, then it bakes {} and is judged", when::format_duration(bake))
        }
        PushState::Running => "the walk goes on to the last target; then the push is complete".into(),
    }
}

/// The view of the push whose record is `record`, at `now_ms`; why not, when the record is not a push's status.
pub fn describe(record: &Value, now_ms: u64) -> Result<View, String> {
    let mut status: Status = serde_json::from_value(record.clone()).map_err(|e| {
        let id = record.get("pushId").and_then(Value::as_str).unwrap_or("?");
        format!("the record of push {id} cannot be read as a push's status: {e}")
    })?;
    // Records of pushes from before rollouts name no state: `complete` says it.
    if record.get("state").is_none() && status.complete {
        status.state = PushState::Complete;
    }
    let push_id = record.get("pushId").and_then(Value::as_str).unwrap_or_default();
    let request = record.get("request").cloned().unwrap_or(Value::Null);
    // A plan without a rollout, or one this CLI cannot read: the push is shown without phases.
    let rollout: Option<Rollout> = request.get("rollout").and_then(|r| serde_json::from_value(r.clone()).ok());
    let stalled = record.get("stalled").and_then(Value::as_str);

    let mut state = if stalled.is_some() { "stalled".to_owned() } else { status.state.as_str().to_owned() };
    if let Some(rollout) = &rollout {
        state.push_str(&format!(", phase {} of {}", status.phase, rollout.phases.len()));
    }
    if let Some(reason) = &status.abort_reason {
        state.push_str(&format!(": {reason}"));
    }
    let mut fields = vec![
        ("push".to_owned(), push_id.to_owned()),
        ("shadow".into(), record.get("shadowName").and_then(Value::as_str).unwrap_or("(classic)").to_owned()),
        ("state".into(), state),
    ];
    if let Some(why) = stalled {
        fields.push(("stalled".into(), why.to_owned()));
    }
    if record.get("dryRun").and_then(Value::as_bool).unwrap_or(false) {
        fields.push(("dry run".into(), "yes: nothing is written to any shadow".into()));
    }
    fields.push(("targets".into(), targets_text(&request)));
    if let Some(desired) = request.get("desired") {
        fields.push(("desired".into(), compact(desired)));
    }
    let rate = request.get("maxRequestsPerSecond").map(compact).unwrap_or_else(|| "-".into());
    let skip = match request.get("skipUnchanged").and_then(Value::as_bool) {
        Some(false) => "every target updated",
        _ => "things that hold the values already are skipped",
    };
    fields.push(("pace".into(), format!("at most {rate} requests/s; {skip}")));
    fields.push(("started".into(), time_and_countdown(status.started_at, now_ms)));
    if let Some(finished) = status.finished_at.filter(|_| status.state.is_final() || status.complete) {
        fields.push(("finished".into(), time_and_countdown(finished, now_ms)));
    }
    let c = &status.counts;
    fields.push((
        "things".into(),
        format!(
            "{} walked: {} updated, {} unchanged, {} failed{}",
            c.targets,
            c.updated,
            c.unchanged,
            c.failed,
            if c.failed > 0 { format!(" (`shadow-fleet push show {push_id} --failures`)") } else { String::new() }
        ),
    ));
    fields
        .push(("requests".into(), format!("{} shadow requests, {} answered 429 and retried", c.requests, c.throttled)));

    let mut phases = Vec::new();
    let mut after = Vec::new();
    if let Some(rollout) = &rollout {
        // Records keep one row per phase from the start; a record that has fewer is padded from the plan.
        let mut counts = status.phases.clone();
        for phase in rollout.phases.iter().skip(counts.len()) {
            counts.push(PhaseCounts { percent: phase.percent, ..PhaseCounts::default() });
        }
        phases = (0..counts.len()).map(|i| phase_row(rollout, &counts, i, &status, now_ms)).collect();
        if status.state == PushState::Baking
            && let Some(until) = status.bake_until
        {
            after.push(("bake ends".into(), time_and_countdown(until, now_ms)));
        }
        after.push((
            "gate".into(),
            format!(
                "a phase passes when ≥ {} % of its judged things converged, and, once {} things are judged, at most {} \
                 % of all judged so far failed, refused or are still pending; bake {}; on a failed gate the push {}",
                rollout.converged_percent,
                rollout.min_things,
                rollout.failed_percent,
                when::format_duration(rollout.bake_seconds),
                on_abort_text(rollout)
            ),
        ));
    }
    if let Some(rollback) = &status.rollback {
        after.push((
            "rollback".into(),
            format!(
                "{} restored, {} untouched (the update never landed), {} left alone (changed since by another writer), \
                 {} failed",
                rollback.restored, rollback.untouched, rollback.conflicts, rollback.failed
            ),
        ));
    }
    after.push(("next".into(), next_text(push_id, &status, rollout.as_ref(), stalled, now_ms)));
    Ok(View { fields, phases, after })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: u64 = 1_765_134_000_000; // 2025-12-07T19:00:00Z

    fn rollout_record(extra: Value) -> Value {
        let mut record = json!({
            "pushId": "fw-1", "shadowName": "cfg", "complete": false, "startedAt": NOW - 300_000,
            "targets": 12, "updated": 11, "unchanged": 1, "failed": 0, "requests": 24, "throttled": 0,
            "state": "baking", "phase": 2, "bakeUntil": NOW + 598_500, "recheck": false, "segment": 3,
            "phases": [
                {"percent": 10.0, "targets": 2, "updated": 2, "unchanged": 0, "failed": 0, "converged": 2,
                 "pending": 0, "refused": 0, "judged": true},
                {"percent": 50.0, "targets": 10, "updated": 9, "unchanged": 1, "failed": 0, "converged": 0,
                 "pending": 0, "refused": 0, "judged": false},
                {"percent": 100.0, "targets": 0, "updated": 0, "unchanged": 0, "failed": 0, "converged": 0,
                 "pending": 0, "refused": 0, "judged": false}],
            "request": {"pushId": "fw-1", "shadowName": "cfg", "desired": {"mode": 2},
                "targets": {"things": [], "thingGroup": "prod", "recursive": true, "query": null},
                "skipUnchanged": true, "dryRun": false, "maxRequestsPerSecond": 400,
                "rollout": {"phases": [{"percent": 10.0}, {"percent": 50.0}, {"percent": 100.0}], "bakeSeconds": 600,
                    "convergedPercent": 95.0, "failedPercent": 5.0, "minThings": 20, "onAbort": "rollback"}}
        });
        if let (Some(r), Some(e)) = (record.as_object_mut(), extra.as_object()) {
            r.extend(e.clone());
        }
        record
    }

    fn field<'a>(rows: &'a [(String, String)], key: &str) -> &'a str {
        rows.iter().find(|(k, _)| k == key).map_or("", |(_, v)| v.as_str())
    }

    #[test]
    fn mid_bake_shows_each_phase_the_gate_and_the_countdown() {
        let view = describe(&rollout_record(json!({})), NOW).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(field(&view.fields, "state"), "baking, phase 2 of 3");
        assert_eq!(field(&view.fields, "targets"), "thing group prod and its child groups");
        assert_eq!(field(&view.fields, "started"), "2025-12-07T18:55:00Z (5m 00s ago)");
        assert_eq!(view.phases.len(), 3);
        assert_eq!(
            view.phases[0],
            ["1", "10 %", "2", "2", "0", "2", "0", "0", "0", "passed (100.0 % converged, needs ≥ 95)"]
        );
        assert_eq!(view.phases[1], ["2", "50 %", "10", "9", "1", "-", "-", "-", "0", "baking: judged in 9m 59s"]);
        assert_eq!(view.phases[2], ["3", "100 %", "-", "-", "-", "-", "-", "-", "-", "not started"]);
        assert_eq!(field(&view.after, "bake ends"), "2025-12-07T19:09:58Z (in 9m 59s)");
        assert!(field(&view.after, "gate").starts_with("a phase passes when ≥ 95 % of its judged things converged"));
        assert_eq!(
            field(&view.after, "next"),
            "at 2025-12-07T19:09:58Z (in 9m 59s) phase 2 is judged: if it passes, phase 3 (100 %) starts; if not, the \
             push rolls back every updated thing to what it held before"
        );
    }

    #[test]
    fn after_an_abort_the_failed_phase_and_the_way_back_are_shown() {
        let record = rollout_record(json!({
            "state": "aborted", "phase": 1, "bakeUntil": null, "finishedAt": NOW - 60_000,
            "abortReason": "phase 1: 1 of 2 judged things converged (50.0 %), below convergedPercent 95",
            "phases": [
                {"percent": 10.0, "targets": 2, "updated": 2, "unchanged": 0, "failed": 0, "converged": 1,
                 "pending": 1, "refused": 0, "judged": true},
                {"percent": 50.0, "targets": 0, "updated": 0, "unchanged": 0, "failed": 0, "converged": 0,
                 "pending": 0, "refused": 0, "judged": false},
                {"percent": 100.0, "targets": 0, "updated": 0, "unchanged": 0, "failed": 0, "converged": 0,
                 "pending": 0, "refused": 0, "judged": false}],
        }));
        let mut record = record;
        record["request"]["rollout"]["onAbort"] = json!("stop");
        let view = describe(&record, NOW).unwrap_or_else(|e| panic!("{e}"));
        assert!(field(&view.fields, "state").starts_with("aborted, phase 1 of 3: phase 1: 1 of 2"));
        assert_eq!(field(&view.fields, "finished"), "2025-12-07T18:59:00Z (1m 00s ago)");
        assert_eq!(view.phases[0][9], "failed (50.0 % converged, needs ≥ 95)");
        assert_eq!((view.phases[0][5].as_str(), view.phases[0][6].as_str()), ("1", "1"));
        assert_eq!(view.phases[1][9], "not judged");
        assert!(field(&view.after, "bake ends").is_empty());
        assert_eq!(
            field(&view.after, "next"),
            "nothing: the push is aborted and keeps what was pushed; to put the updated things back while the journal \
             lasts: `shadow-fleet push abort fw-1 --rollback`"
        );
    }

    #[test]
    fn a_push_without_rollout_a_stall_and_a_rollback() {
        let plain = json!({"pushId": "p", "complete": false, "startedAt": NOW - 1000, "targets": 3, "updated": 3,
            "request": {"desired": {"a": 1}, "targets": {"things": ["a", "b"]}, "maxRequestsPerSecond": 100}});
        let view = describe(&plain, NOW).unwrap_or_else(|e| panic!("{e}"));
        assert!(view.phases.is_empty());
        assert_eq!(field(&view.fields, "state"), "running");
        assert_eq!(field(&view.fields, "shadow"), "(classic)");
        assert_eq!(field(&view.fields, "targets"), "2 listed thing(s)");
        assert_eq!(field(&view.after, "next"), "the walk goes on to the last target; then the push is complete");

        let stalled = describe(&rollout_record(json!({"state": "running", "stalled": "segment 4 died 3 times"})), NOW)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(field(&stalled.fields, "state"), "stalled, phase 2 of 3");
        assert!(field(&stalled.after, "next").contains("push resume fw-1"));

        let back = rollout_record(json!({"state": "rolledBack", "bakeUntil": null,
            "rollback": {"restored": 9, "untouched": 1, "conflicts": 1, "failed": 0}}));
        let view = describe(&back, NOW).unwrap_or_else(|e| panic!("{e}"));
        assert!(field(&view.after, "rollback").starts_with("9 restored, 1 untouched"));
        assert!(field(&view.after, "next").contains("--conflicts"));
    }
}
