//! Staged rollouts, as pure decisions: the request's `rollout`, which phase a thing falls into, what a thing held
//! before a push changed it, and whether a judged phase lets the push go on.
//!
//! A thing's phase is a pure function of (push id, thing name): nothing is stored, every segment and retry agrees,
//! and a thing that joins a group mid-rollout still falls into a phase.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// Phase shares are kept in millionths of the targets, so that shares like 0.5 % are exact.
const SCALE: u64 = 1_000_000;
/// The longest bake: one day.
pub const MAX_BAKE_SECONDS: u64 = 86_400;
/// The suffix of a rollback's `clientToken`.
pub const ROLLBACK_SUFFIX: &str = ".rollback";

/// What to do when a phase fails its judgment (or an operator aborts without saying).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum OnAbort {
    /// Keep what was pushed.
    Stop,
    /// Put every updated thing back where it was.
    Rollback,
}

/// One phase: the cumulative share of the targets it reaches.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Phase {
    pub percent: f64,
}

/// A validated rollout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rollout {
    pub phases: Vec<Phase>,
    pub bake_seconds: u64,
    pub converged_percent: f64,
    pub failed_percent: f64,
    pub min_things: u64,
    pub on_abort: OnAbort,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawRollout {
    phases: Option<Vec<Phase>>,
    bake_seconds: Option<u64>,
    converged_percent: Option<f64>,
    failed_percent: Option<f64>,
    min_things: Option<u64>,
    on_abort: Option<String>,
}

impl Rollout {
    /// Validates a request's `rollout`; every problem is pushed to `errors`, naming its field.
    pub fn validate(raw: &Value, errors: &mut Vec<(String, String)>) -> Option<Rollout> {
        let raw: RawRollout = match serde_path_to_error::deserialize(raw) {
            Ok(raw) => raw,
            Err(e) => {
                let path = e.path().to_string();
                let field = if path == "." { "rollout".to_owned() } else { format!("rollout.{path}") };
                errors.push((field, e.into_inner().to_string()));
                return None;
            }
        };
        let before = errors.len();
        let mut fail = |field: &str, reason: String| errors.push((format!("rollout.{field}"), reason));
        let phases = raw.phases.unwrap_or_default();
        if phases.is_empty() {
            fail("phases", "is missing or empty: give at least one phase, the last with percent 100".into());
        }
        let mut previous = 0.0;
        for (i, phase) in phases.iter().enumerate() {
            if !(phase.percent > 0.0 && phase.percent <= 100.0) {
                fail(&format!("phases[{i}].percent"), format!("is {}; must be above 0 and at most 100", phase.percent));
            } else if phase.percent <= previous {
                fail(
                    &format!("phases[{i}].percent"),
                    format!("is {}, not above the phase before ({previous}): shares are cumulative", phase.percent),
                );
            }
            previous = phase.percent;
        }
        if let Some(last) = phases.last()
            && last.percent < 100.0
        {
            fail(
                &format!("phases[{}].percent", phases.len() - 1),
                format!("is {}; the last phase must reach 100", last.percent),
            );
        }
        let bake_seconds = raw.bake_seconds.unwrap_or(600);
        if bake_seconds > MAX_BAKE_SECONDS {
            fail("bakeSeconds", format!("is {bake_seconds}; at most {MAX_BAKE_SECONDS} (one day)"));
        }
        let mut share = |field: &str, value: Option<f64>, default: f64| {
            let value = value.unwrap_or(default);
            if !(0.0..=100.0).contains(&value) {
                fail(field, format!("is {value}; must be between 0 and 100"));
            }
            value
        };
        let converged_percent = share("convergedPercent", raw.converged_percent, 95.0);
        let failed_percent = share("failedPercent", raw.failed_percent, 5.0);
        let on_abort = match raw.on_abort.as_deref() {
            None | Some("stop") => OnAbort::Stop,
            Some("rollback") => OnAbort::Rollback,
            Some(other) => {
                errors.push(("rollout.onAbort".into(), format!("is {other:?}; use \"stop\" or \"rollback\"")));
                OnAbort::Stop
            }
        };
        (errors.len() == before).then_some(Rollout {
            phases,
            bake_seconds,
            converged_percent,
            failed_percent,
            min_things: raw.min_things.unwrap_or(20),
            on_abort,
        })
    }

    /// The phase (0-based) `thing` falls into in push `push_id`: a stable hash of both, placed on the phases' bands.
    pub fn phase_of(&self, push_id: &str, thing: &str) -> usize {
        let digest = Sha256::new().chain_update(push_id).chain_update([0u8]).chain_update(thing).finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        let point = u64::from_be_bytes(first) % SCALE;
        self.phases
            .iter()
            .position(|p| point < (p.percent * (SCALE as f64 / 100.0)).round() as u64)
            .unwrap_or(self.phases.len().saturating_sub(1))
    }
}

/// The counts of one phase.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PhaseCounts {
    pub percent: f64,
    pub targets: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub failed: u64,
    /// Judged: updated things whose `reported` holds the pushed values.
    pub converged: u64,
    /// Judged: updated things whose `reported` does not (yet) hold them, while `desired` still does.
    pub pending: u64,
    /// Judged: updated things whose `desired` was changed away from the pushed values (the device or another
    /// writer put its own back) or whose shadow was deleted: counted as failed.
    #[serde(default)]
    pub refused: u64,
    /// The phase was judged.
    #[serde(default)]
    pub judged: bool,
}

/// What a rollback did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RollbackCounts {
    /// Put back to the values recorded before the push.
    pub restored: u64,
    /// Already held the recorded values (its update never landed).
    pub untouched: u64,
    /// Changed since by someone else (a later push): left alone, listed.
    pub conflicts: u64,
    pub failed: u64,
}

/// A judged phase's verdict.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Proceed,
    Abort(String),
}

/// Judges phase `index` (0-based) from the counts of the phases so far (all judged, `index` included).
///
/// - A phase that updated things and judged none of them does not pass: silence is not success.
/// - `convergedPercent` applies to the phase's judged things, however few.
/// - `minThings` delays only the cumulative `failedPercent` rule (as IoT Jobs' `minNumberOfExecutedThings`), so
///   that one early failure does not abort a large rollout.
pub fn judge(rollout: &Rollout, phases: &[PhaseCounts], index: usize) -> Verdict {
    let so_far = &phases[..(index + 1).min(phases.len())];
    let number = index + 1;
    if let Some(phase) = phases.get(index) {
        let judged = phase.converged + phase.pending + phase.refused;
        if phase.updated > 0 && judged == 0 {
            return Verdict::Abort(format!(
                "phase {number}: {} things updated and none of them could be judged (no journal entry read back)",
                phase.updated
            ));
        }
        if judged > 0 {
            let share = phase.converged as f64 * 100.0 / judged as f64;
            if share < rollout.converged_percent {
                return Verdict::Abort(format!(
                    "phase {number}: {} of {judged} judged things converged ({share:.1} %), below convergedPercent {}",
                    phase.converged, rollout.converged_percent
                ));
            }
        }
    }
    let judged: u64 = so_far.iter().map(|p| p.converged + p.pending + p.refused + p.failed).sum();
    if judged < rollout.min_things.max(1) {
        return Verdict::Proceed;
    }
    let failed: u64 = so_far.iter().map(|p| p.pending + p.refused + p.failed).sum();
    let failed_share = failed as f64 * 100.0 / judged as f64;
    if failed_share > rollout.failed_percent {
        return Verdict::Abort(format!(
            "phase {number}: {failed} of {judged} things judged so far failed, refused or did not converge \
             ({failed_share:.1} %), more than failedPercent {}",
            rollout.failed_percent
        ));
    }
    Verdict::Proceed
}

/// What `current` (a shadow's `desired`) held of the keys `pushed` sets, in `pushed`'s shape: an absent key is
/// `null`, so that sending the result back as `desired` puts the shadow back where it was.
pub fn previous_values(current: Option<&Value>, pushed: &Value) -> Value {
    match pushed {
        Value::Object(fields) => {
            let current = current.and_then(Value::as_object);
            let mut out = Map::new();
            for (key, value) in fields {
                let existing = current.and_then(|c| c.get(key)).filter(|v| !v.is_null());
                let previous = match (value, existing) {
                    (Value::Object(_), Some(e @ Value::Object(_))) => previous_values(Some(e), value),
                    // Leaf by leaf: an object absent before is recorded as its pushed leaves absent, so that a
                    // rollback removes those leaves and never a sibling another writer added since.
                    (Value::Object(_), None) => previous_values(None, value),
                    (_, Some(e)) => e.clone(),
                    (_, None) => Value::Null,
                };
                out.insert(key.clone(), previous);
            }
            Value::Object(out)
        }
        _ => current.cloned().unwrap_or(Value::Null),
    }
}

/// How a rollback conflict's message starts; the paths of the leaves left alone follow, joined by ", ".
const CONFLICT_MESSAGE: &str = "changed since the push by another writer, left alone: ";

/// The message of a thing's rollback conflict, naming the leaves left alone.
pub fn conflict_message(paths: &[String]) -> String {
    format!("{CONFLICT_MESSAGE}{}", paths.join(", "))
}

/// The paths a rollback conflict's message names; none for a message in another form.
pub fn conflict_paths(message: &str) -> Vec<String> {
    message
        .strip_prefix(CONFLICT_MESSAGE)
        .map(|paths| paths.split(", ").filter(|p| !p.is_empty()).map(str::to_owned).collect())
        .unwrap_or_default()
}

/// One thing's rollback, leaf by leaf: what to send back as `desired`, and the leaves left alone.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LeafRollback {
    /// The previous value (`null`: remove) of every leaf that still holds the pushed value; empty: nothing to send.
    pub desired: Map<String, Value>,
    /// The paths (`settings.mode`) of leaves changed since by another writer: neither pushed nor previous.
    pub conflicts: Vec<String>,
}

/// The rollback of a thing whose `desired` is `current`, for a push of `pushed` that found `previous` there. Only
/// the leaves this push wrote are touched.
pub fn rollback_leaves(current: Option<&Value>, pushed: &Value, previous: &Value) -> LeafRollback {
    let mut out = LeafRollback::default();
    walk_leaves(current, pushed, Some(previous), "", &mut out.desired, &mut out.conflicts);
    out
}

fn walk_leaves(
    current: Option<&Value>,
    pushed: &Value,
    previous: Option<&Value>,
    path: &str,
    desired: &mut Map<String, Value>,
    conflicts: &mut Vec<String>,
) {
    let Value::Object(fields) = pushed else { return };
    for (key, value) in fields {
        let here = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
        let current = current.and_then(|c| c.get(key)).filter(|v| !v.is_null());
        let previous = previous.and_then(|p| p.get(key)).filter(|v| !v.is_null());
        if value.is_object() && previous.is_none_or(Value::is_object) {
            let mut inner = Map::new();
            walk_leaves(current, value, previous, &here, &mut inner, conflicts);
            if !inner.is_empty() {
                desired.insert(key.clone(), Value::Object(inner));
            }
            continue;
        }
        let before = previous.cloned().unwrap_or(Value::Null);
        let as_before = if before.is_null() { current.is_none() } else { crate::document::holds(current, &before) };
        if as_before {
            continue; // already as before: the update never landed, or was put back
        }
        if crate::document::holds(current, value) {
            desired.insert(key.clone(), before);
        } else {
            conflicts.push(here);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::document::holds;
    use serde_json::json;

    #[test]
    fn a_conflict_message_names_its_paths_and_reads_back() {
        let paths = vec!["settings.mode".to_owned(), "url".to_owned()];
        let message = conflict_message(&paths);
        assert_eq!(message, "changed since the push by another writer, left alone: settings.mode, url");
        assert_eq!(conflict_paths(&message), paths);
        assert!(conflict_paths("throttled").is_empty());
    }

    fn rollout(request: Value) -> Result<Rollout, Vec<(String, String)>> {
        let mut errors = Vec::new();
        Rollout::validate(&request, &mut errors).ok_or(errors)
    }

    #[test]
    fn a_rollout_is_validated_field_by_field() {
        let ok = rollout(json!({"phases": [{"percent": 1}, {"percent": 10}, {"percent": 100}]}));
        let ok = ok.expect("a valid rollout");
        assert_eq!((ok.bake_seconds, ok.converged_percent, ok.failed_percent, ok.min_things), (600, 95.0, 5.0, 20));
        assert_eq!(ok.on_abort, OnAbort::Stop);
        let cases = [
            (json!({"phases": [{"percent": 10}, {"percent": 5}, {"percent": 100}]}), "rollout.phases[1].percent"),
            (json!({"phases": [{"percent": 10}, {"percent": 90}]}), "rollout.phases[1].percent"),
            (json!({"phases": [{"percent": 0}, {"percent": 100}]}), "rollout.phases[0].percent"),
            (json!({"phases": []}), "rollout.phases"),
            (json!({"phases": [{"percent": 100}], "convergedPercent": 101}), "rollout.convergedPercent"),
            (json!({"phases": [{"percent": 100}], "failedPercent": -1}), "rollout.failedPercent"),
            (json!({"phases": [{"percent": 100}], "bakeSeconds": 86_401}), "rollout.bakeSeconds"),
            (json!({"phases": [{"percent": 100}], "onAbort": "panic"}), "rollout.onAbort"),
            (json!({"phases": [{"percent": 100}], "colour": 1}), "rollout"),
            (json!({"phases": [{"share": 100}]}), "rollout.phases[0]"),
        ];
        for (request, field) in cases {
            let errors = rollout(request.clone()).err().unwrap_or_default();
            assert!(errors.iter().any(|(f, _)| f.starts_with(field)), "{request}: {errors:?}");
        }
    }

    #[test]
    fn cohorts_are_stable_and_follow_the_bands() {
        let r =
            rollout(json!({"phases": [{"percent": 10}, {"percent": 50}, {"percent": 100}]})).expect("a valid rollout");
        let mut counts = [0usize; 3];
        for i in 0..10_000 {
            let thing = format!("thing-{i}");
            let phase = r.phase_of("push-1", &thing);
            assert_eq!(phase, r.phase_of("push-1", &thing), "stable");
            counts[phase] += 1;
        }
        // 10 %, 40 %, 50 % of 10 000, within a few standard deviations.
        assert!((800..1200).contains(&counts[0]), "{counts:?}");
        assert!((3700..4300).contains(&counts[1]), "{counts:?}");
        assert!((4700..5300).contains(&counts[2]), "{counts:?}");
        let other: usize = (0..1000).filter(|i| r.phase_of("push-2", &format!("thing-{i}")) == 0).count();
        let same: usize = (0..1000).filter(|i| r.phase_of("push-1", &format!("thing-{i}")) == 0).count();
        let both: usize = (0..1000)
            .filter(|i| {
                r.phase_of("push-1", &format!("thing-{i}")) == 0 && r.phase_of("push-2", &format!("thing-{i}")) == 0
            })
            .count();
        assert!(both < same.min(other), "another push draws other cohorts: {both} of {same}/{other}");
        let all = rollout(json!({"phases": [{"percent": 100}]})).expect("a valid rollout");
        assert!((0..1000).all(|i| all.phase_of("p", &format!("t{i}")) == 0));
    }

    #[test]
    fn judging_a_phase() {
        let r =
            rollout(json!({"phases": [{"percent": 50}, {"percent": 100}], "minThings": 10})).expect("a valid rollout");
        let phase = |converged, pending, failed| PhaseCounts {
            converged,
            pending,
            failed,
            updated: converged + pending,
            ..PhaseCounts::default()
        };
        assert_eq!(judge(&r, &[phase(20, 0, 0)], 0), Verdict::Proceed);
        let Verdict::Abort(why) = judge(&r, &[phase(14, 6, 0)], 0) else { panic!("30 % pending proceeds") };
        assert!(why.contains("14 of 20") && why.contains("convergedPercent"), "{why}");
        let Verdict::Abort(why) = judge(&r, &[phase(19, 0, 1), phase(40, 0, 10)], 1) else { panic!("failures") };
        assert!(why.starts_with("phase 2") && why.contains("11 of 70"), "{why}");
        let lenient = Rollout { failed_percent: 100.0, ..r.clone() };
        let Verdict::Abort(why) = judge(&lenient, &[phase(18, 2, 0)], 0) else { panic!("90 % < 95 %") };
        assert!(why.contains("convergedPercent"), "{why}");
    }

    #[test]
    fn a_small_or_silent_phase_is_still_gated() {
        let r =
            rollout(json!({"phases": [{"percent": 10}, {"percent": 100}], "minThings": 20})).expect("a valid rollout");
        let small = |converged, pending| PhaseCounts { converged, pending, updated: 5, ..PhaseCounts::default() };
        // Below minThings, convergedPercent still applies: 3 of 5 converged is 60 %.
        let Verdict::Abort(why) = judge(&r, &[small(3, 2)], 0) else { panic!("a small canary is not gated") };
        assert!(why.contains("3 of 5") && why.contains("convergedPercent"), "{why}");
        assert_eq!(judge(&r, &[small(5, 0)], 0), Verdict::Proceed, "below minThings, all converged");
        // Devices that put their own value back in desired are refused, and refused counts as failed.
        let refusing = PhaseCounts { refused: 100, updated: 100, ..PhaseCounts::default() };
        let Verdict::Abort(why) = judge(&r, &[refusing], 0) else { panic!("refusing devices pass") };
        assert!(why.contains("0 of 100"), "{why}");
        // Updated things and nothing judged: no pass.
        let unread = PhaseCounts { updated: 30, ..PhaseCounts::default() };
        let Verdict::Abort(why) = judge(&r, &[unread], 0) else { panic!("a phase judged on nothing passes") };
        assert!(why.contains("none of them"), "{why}");
        // Nothing updated (every thing unchanged): nothing to judge, it proceeds.
        let unchanged = PhaseCounts { unchanged: 30, ..PhaseCounts::default() };
        assert_eq!(judge(&r, &[unchanged], 0), Verdict::Proceed);
        // minThings delays the cumulative failedPercent rule: 1 failure in 5 judged is 20 %, under minThings.
        let lenient = Rollout { converged_percent: 0.0, ..r };
        let early = PhaseCounts { converged: 4, refused: 1, updated: 5, ..PhaseCounts::default() };
        assert_eq!(judge(&lenient, std::slice::from_ref(&early), 0), Verdict::Proceed);
        let later = PhaseCounts { converged: 36, refused: 4, updated: 40, ..PhaseCounts::default() };
        let Verdict::Abort(why) = judge(&lenient, &[early, later], 1) else { panic!("10 % failed passes 5 %") };
        assert!(why.contains("5 of 45") && why.contains("failedPercent"), "{why}");
    }

    #[test]
    fn previous_values_put_a_shadow_back() {
        let pushed = json!({"settings": {"mode": 1, "temp": 20}, "url": "b", "new": {"x": 1}});
        let current = json!({"settings": {"mode": 0, "other": 5}, "url": "a", "keep": true});
        let previous = previous_values(Some(&current), &pushed);
        assert_eq!(previous, json!({"settings": {"mode": 0, "temp": null}, "url": "a", "new": {"x": null}}));
        assert!(holds(Some(&current), &previous), "the shadow as it was holds its previous values");
        assert_eq!(previous_values(None, &json!({"a": 1})), json!({"a": null}));
        assert_eq!(previous_values(None, &json!({"s": {"mode": 7}})), json!({"s": {"mode": null}}));
        assert_eq!(previous_values(Some(&json!({"a": 5})), &json!({"a": {"b": 1}})), json!({"a": 5}));
    }

    #[test]
    fn a_rollback_touches_only_the_leaves_the_push_wrote() {
        // The push set settings.mode on a thing that had no settings; another writer then set settings.temp.
        let pushed = json!({"settings": {"mode": 7}});
        let previous = previous_values(None, &pushed);
        let now = json!({"settings": {"mode": 7, "temp": 5}});
        let back = rollback_leaves(Some(&now), &pushed, &previous);
        assert_eq!(Value::Object(back.desired), json!({"settings": {"mode": null}}), "temp is not removed");
        assert!(back.conflicts.is_empty());
        // One leaf changed since by someone else: a conflict at its path; the other leaf is still put back.
        let pushed = json!({"settings": {"mode": 7, "url": "b"}, "level": 3});
        let previous = json!({"settings": {"mode": 1, "url": null}, "level": 2});
        let now = json!({"settings": {"mode": 9, "url": "b"}, "level": 3});
        let back = rollback_leaves(Some(&now), &pushed, &previous);
        assert_eq!(Value::Object(back.desired), json!({"settings": {"url": null}, "level": 2}));
        assert_eq!(back.conflicts, ["settings.mode"]);
        // Already as before (the update never landed, or a rollback put it back): nothing to send.
        let back = rollback_leaves(Some(&json!({"settings": {"mode": 1}, "level": 2})), &pushed, &previous);
        assert!(back.desired.is_empty() && back.conflicts.is_empty(), "{back:?}");
        let back = rollback_leaves(None, &json!({"s": {"mode": 7}}), &json!({"s": {"mode": null}}));
        assert!(back.desired.is_empty() && back.conflicts.is_empty(), "{back:?}");
    }
}
