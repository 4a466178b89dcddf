//! A push's progress, read from its record: where it stands as the same [`Status`] the function answers with, and
//! the record's other fields as JSON, so that fields the record gains later show without a change here. Pure: "now"
//! is passed in.

use serde_json::{Map, Value, json};
use shadow_core::push::{PushState, Status};

/// Record attributes that are bookkeeping, not news for an operator.
const INTERNAL: [&str; 16] = [
    "pk",
    "sk",
    "request",
    "planDigest",
    "sources",
    "cursor",
    "owner",
    "leaseUntil",
    "segmentStartedAt",
    "openPush",
    "pushList",
    "expiresAt",
    "keptUntil",
    "keepingTo",
    "handedOff",
    "takeovers",
];

#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    pub push_id: String,
    /// Where the push stands, as its record says.
    pub status: Status,
    /// The record's state, when it names one (records of pushes from before rollouts do not).
    pub state: Option<PushState>,
    /// The record's phase, when it names one.
    pub phase: Option<u32>,
    /// Things walked so far (the record's `targets`, counted as segments record).
    pub done: u64,
    /// How many things the push has in all, when known: a count on the record, a push to listed things only, or
    /// a finished push.
    pub total: Option<u64>,
    pub things_per_second: f64,
    pub eta_seconds: Option<u64>,
    pub elapsed_seconds: u64,
    pub stalled: Option<String>,
}

impl Progress {
    /// The progress of the push whose record (its items' attributes, as JSON) is `record`; why not, when the record
    /// cannot be read as a push's status.
    pub fn from_record(record: &Value, now_ms: u64) -> Result<Self, String> {
        let status: Status = serde_json::from_value(record.clone()).map_err(|e| {
            let id = record.get("pushId").and_then(Value::as_str).unwrap_or("?");
            format!("the record of push {id} cannot be read as a push's status: {e}")
        })?;
        let done = status.counts.targets;
        let complete = status.complete;
        let started = status.started_at;
        let end = status.finished_at.filter(|_| complete).unwrap_or(now_ms);
        let elapsed_ms = end.saturating_sub(started);
        let things_per_second = if elapsed_ms == 0 { 0.0 } else { done as f64 * 1000.0 / elapsed_ms as f64 };
        let total = ["totalTargets", "plannedTargets"]
            .iter()
            .find_map(|k| record.get(*k).and_then(Value::as_u64))
            .or_else(|| listed_things_only(record))
            .or(complete.then_some(done))
            .map(|t| t.max(done));
        let eta_seconds = match total {
            Some(total) if !complete && things_per_second > 0.0 => {
                Some(((total - done) as f64 / things_per_second).ceil() as u64)
            }
            _ => None,
        };
        let named = |key: &str| record.get(key).is_some_and(|v| !v.is_null());
        Ok(Self {
            push_id: record.get("pushId").and_then(Value::as_str).unwrap_or_default().to_owned(),
            state: named("state").then_some(status.state),
            phase: named("phase").then_some(status.phase),
            stalled: record.get("stalled").and_then(Value::as_str).map(str::to_owned),
            status,
            done,
            total,
            things_per_second,
            eta_seconds,
            elapsed_seconds: elapsed_ms / 1000,
        })
    }

    /// Things that failed so far.
    pub fn failed(&self) -> u64 {
        self.status.counts.failed
    }

    /// Nothing more will happen to the push.
    pub fn finished(&self) -> bool {
        self.stalled.is_some()
            || match self.state {
                Some(state) => state.is_final(),
                None => self.status.complete,
            }
    }

    /// Stopped by an operator until resumed: neither over nor stalled.
    pub fn paused(&self) -> bool {
        self.stalled.is_none() && self.state == Some(PushState::Paused)
    }

    /// Why the push needs a look, when it does: failed things, a stall, an abort or rollback.
    pub fn trouble(&self) -> Option<String> {
        if let Some(reason) = &self.stalled {
            return Some(format!("the push stalled: {reason}"));
        }
        if let Some(state) =
            self.state.filter(|s| matches!(s, PushState::Aborted | PushState::RollingBack | PushState::RolledBack))
        {
            let reason = self.status.abort_reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default();
            return Some(format!("the push is {}{reason}", state.as_str()));
        }
        (self.failed() > 0)
            .then(|| format!("{} thing(s) failed: `shadow-fleet push show {} --failures`", self.failed(), self.push_id))
    }

    /// The progress bar's message: state, phase, rate and failures.
    pub fn message(&self) -> String {
        let mut parts = Vec::new();
        if let Some(state) = self.state {
            parts.push(state.as_str().to_owned());
        }
        if let Some(phase) = self.phase {
            parts.push(format!("phase {phase}"));
        }
        parts.push(format!("{:.1} things/s", self.things_per_second));
        if let Some(eta) = self.eta_seconds {
            parts.push(format!("ETA {}", crate::when::format_duration(eta)));
        }
        parts.push(format!("{} failed", self.failed()));
        parts.join(" · ")
    }

    /// One JSON line per poll of `push watch --output json`.
    pub fn to_json(&self) -> Value {
        json!({"pushId": self.push_id, "done": self.done, "total": self.total, "failed": self.failed(),
               "thingsPerSecond": (self.things_per_second * 10.0).round() / 10.0, "etaSeconds": self.eta_seconds,
               "state": self.state.map(PushState::as_str), "phase": self.phase, "complete": self.status.complete,
               "stalled": self.stalled})
    }
}

/// A push whose targets are only listed things has that many in all.
fn listed_things_only(record: &Value) -> Option<u64> {
    let targets = record.get("request")?.get("targets")?;
    let by_group = targets.get("thingGroup").is_some_and(|g| !g.is_null());
    let by_query = targets.get("query").is_some_and(|q| !q.is_null());
    if by_group || by_query {
        return None;
    }
    targets.get("things")?.as_array().map(|t| t.len() as u64)
}

/// A value on one line: strings bare, everything else as compact JSON.
pub fn compact(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The record's fields for people: the known ones first, in this order, then any others the record has (fields a
/// newer shadow-push writes), leaving out bookkeeping. Times as RFC 3339.
pub fn record_rows(record: &Value) -> Vec<(String, String)> {
    const FIRST: [&str; 18] = [
        "pushId",
        "shadowName",
        "dryRun",
        "state",
        "phase",
        "abortReason",
        "stalled",
        "complete",
        "targets",
        "updated",
        "unchanged",
        "failed",
        "throttled",
        "requests",
        "segment",
        "startedAt",
        "finishedAt",
        "phases",
    ];
    let empty = Map::new();
    let fields = record.as_object().unwrap_or(&empty);
    let show = |key: &str, value: &Value| match (key, value) {
        ("startedAt" | "finishedAt", Value::Number(n)) => n.as_u64().map(crate::when::format_ms).unwrap_or_default(),
        (_, Value::Null) => "-".to_owned(),
        (_, value) => compact(value),
    };
    let mut rows: Vec<(String, String)> =
        FIRST.iter().filter_map(|k| fields.get(*k).map(|v| ((*k).to_owned(), show(k, v)))).collect();
    if let Some(desired) = record.get("request").and_then(|r| r.get("desired")) {
        rows.push(("desired".into(), compact(desired)));
    }
    for (key, value) in fields {
        if !FIRST.contains(&key.as_str()) && !INTERNAL.contains(&key.as_str()) {
            rows.push((key.clone(), show(key, value)));
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(extra: Value) -> Value {
        let mut record = json!({"pushId": "p1", "shadowName": "config", "targets": 50, "updated": 40, "unchanged": 8,
            "failed": 2, "complete": false, "startedAt": 1_000_000, "finishedAt": null, "owner": "x", "cursor": {},
            "request": {"desired": {"a": 1}, "targets": {"things": [], "thingGroup": "g", "query": null}}});
        if let (Some(r), Some(e)) = (record.as_object_mut(), extra.as_object()) {
            r.extend(e.clone());
        }
        record
    }

    fn progress(record: &Value, now_ms: u64) -> Progress {
        Progress::from_record(record, now_ms).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_record_that_is_not_a_status_is_said_so() {
        let error = Progress::from_record(&record(json!({"targets": "many"})), 0).err().unwrap_or_default();
        assert!(error.contains("push p1") && error.contains("\"many\""), "{error}");
    }

    #[test]
    fn a_running_group_push_has_a_rate_but_no_total() {
        let p = progress(&record(json!({})), 1_010_000);
        assert_eq!((p.done, p.total, p.failed(), p.elapsed_seconds), (50, None, 2, 10));
        assert!((p.things_per_second - 5.0).abs() < 1e-9);
        assert_eq!(p.eta_seconds, None);
        assert!(!p.finished());
        assert!(p.trouble().is_some_and(|t| t.contains("2 thing(s) failed")));
        assert_eq!(p.message(), "5.0 things/s · 2 failed");
    }

    #[test]
    fn listed_things_give_a_total_and_an_eta() {
        let r = record(json!({"request": {"targets": {"things": vec!["a"; 100]}}}));
        let p = progress(&r, 1_010_000);
        assert_eq!((p.total, p.eta_seconds), (Some(100), Some(10)));
        let counted = record(json!({"totalTargets": 200}));
        assert_eq!(progress(&counted, 1_010_000).eta_seconds, Some(30));
    }

    #[test]
    fn complete_stalled_and_rollout_states() {
        let done = record(json!({"complete": true, "finishedAt": 1_005_000, "failed": 0}));
        let p = progress(&done, 9_000_000);
        assert!(p.finished() && p.trouble().is_none());
        assert_eq!((p.total, p.elapsed_seconds), (Some(50), 5));

        let stalled = progress(&record(json!({"stalled": "segment 3 died 4 times", "failed": 0})), 0);
        assert!(stalled.finished());
        assert!(stalled.trouble().is_some_and(|t| t.contains("stalled: segment 3")));

        // A rollout's state decides, and shows with its phase, whatever `complete` says.
        let paused = progress(&record(json!({"state": "paused", "phase": 2, "complete": false})), 0);
        assert!(!paused.finished() && paused.paused());
        assert!(paused.message().starts_with("paused · phase 2 · "));
        let aborted = record(json!({"state": "aborted", "abortReason": "failure rate 7% over 5%", "failed": 0}));
        let aborted = progress(&aborted, 0);
        assert!(aborted.finished());
        assert_eq!(aborted.trouble().as_deref(), Some("the push is aborted: failure rate 7% over 5%"));
        let baking = progress(&record(json!({"state": "baking", "complete": true, "failed": 0})), 0);
        assert!(!baking.finished(), "a rollout that bakes is not over");
    }

    #[test]
    fn rows_show_known_fields_then_new_ones_without_bookkeeping() {
        let r = record(json!({"phases": [{"phase": 1, "updated": 5}], "state": "running", "newField": "x"}));
        let rows = record_rows(&r);
        let keys: Vec<&str> = rows.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "pushId",
                "shadowName",
                "state",
                "complete",
                "targets",
                "updated",
                "unchanged",
                "failed",
                "startedAt",
                "finishedAt",
                "phases",
                "desired",
                "newField"
            ]
        );
        assert!(rows.contains(&("startedAt".into(), "1970-01-01T00:16:40Z".into())));
        assert!(rows.contains(&("phases".into(), r#"[{"phase":1,"updated":5}]"#.into())));
        assert!(rows.contains(&("finishedAt".into(), "-".into())));
    }
}
