//! What each history event changed: the shadow's `desired` and `reported` are replayed event by event (updates merge
//! as AWS merges them, a `null` removes, a snapshot replaces, a delete clears), and each event is reported as the
//! changes it made to the state before it. Pure: no AWS.
//!
//! Before the first event read, the state is not known (a `--since` window, or history that expired): a key first
//! seen being set is reported as `set` (its earlier value unknown), never as `added`.

use serde_json::{Map, Value, json};

/// What a key held before the event.
#[derive(Debug, Clone, PartialEq)]
pub enum Before {
    /// Not known: no event read so far said.
    Unknown,
    Absent,
    Was(Value),
}

/// One key the event changed, `path` dotted from the section's root (`settings.temp`).
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub path: String,
    pub from: Before,
    /// `None`: removed.
    pub to: Option<Value>,
}

impl Change {
    pub fn op(&self) -> &'static str {
        match (&self.from, &self.to) {
            (_, None) => "removed",
            (Before::Was(_), Some(_)) => "changed",
            (Before::Absent, Some(_)) => "added",
            (Before::Unknown, Some(_)) => "set",
        }
    }

    /// `{"path": "settings.temp", "op": "changed", "from": 20, "to": 25}`; `from` only when known, `to` unless removed.
    pub fn to_json(&self) -> Value {
        let mut change = json!({"path": self.path, "op": self.op()});
        if let Before::Was(from) = &self.from {
            change["from"] = from.clone();
        }
        if let Some(to) = &self.to {
            change["to"] = to.clone();
        }
        change
    }

    /// `settings.temp: 20 → 25`, `mode = 1`, `old removed (was 3)`.
    pub fn to_text(&self) -> String {
        let path = if self.path.is_empty() { "(all)" } else { &self.path };
        match (&self.from, &self.to) {
            (Before::Was(from), Some(to)) => format!("{path}: {from} → {to}"),
            (_, Some(to)) => format!("{path} = {to}"),
            (Before::Was(from), None) => format!("{path} removed (was {from})"),
            (_, None) => format!("{path} removed"),
        }
    }
}

/// The changes of one event, per section.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventChanges {
    pub desired: Vec<Change>,
    pub reported: Vec<Change>,
}

#[derive(Debug, Clone, Default)]
struct Section {
    /// In a section that is not `complete`, a `null` marks a key known to be absent.
    values: Map<String, Value>,
    /// Every key is known: one missing from `values` is absent (after a snapshot or a delete).
    complete: bool,
}

/// A shadow's state, replayed from its history events in order.
#[derive(Debug, Clone, Default)]
pub struct Replay {
    desired: Section,
    reported: Section,
}

const SECTIONS: [&str; 2] = ["desired", "reported"];

impl Replay {
    /// What an event says the state was just before it: a snapshot's `previousState`, or nothing at all for the
    /// shadow's first document (no `previousVersion`). Sections already known are kept.
    pub fn know_before(&mut self, event: &Value) {
        if event.get("kind").and_then(Value::as_str) != Some("snapshot") {
            return;
        }
        let before = match (event.get("previousState"), event.get("previousVersion")) {
            (Some(previous), _) => Some(previous),
            (None, None) => None,
            (None, Some(_)) => return,
        };
        for name in SECTIONS {
            let section = match name {
                "desired" => &mut self.desired,
                _ => &mut self.reported,
            };
            if !section.complete {
                let values = before.and_then(|b| b.get(name)).and_then(Value::as_object).cloned().unwrap_or_default();
                *section = Section { values, complete: true };
            }
        }
    }

    /// Applies one event (`kind`: `update`, `snapshot` or `delete`; `state`: its `state` attribute) and returns
    /// what it changed.
    pub fn apply(&mut self, kind: &str, state: Option<&Value>) -> EventChanges {
        let mut changes = EventChanges::default();
        for name in SECTIONS {
            let (section, out) = match name {
                "desired" => (&mut self.desired, &mut changes.desired),
                _ => (&mut self.reported, &mut changes.reported),
            };
            match kind {
                "delete" => clear(section, out),
                "snapshot" => {
                    let new = state.and_then(|s| s.get(name)).and_then(Value::as_object).cloned().unwrap_or_default();
                    diff_maps(&section.values, &new, section.complete, "", out);
                    *section = Section { values: new, complete: true };
                }
                _ => match state {
                    // `"state": null` removes both sections.
                    Some(Value::Null) => clear(section, out),
                    Some(state) => match state.get(name) {
                        Some(Value::Null) => clear(section, out),
                        Some(Value::Object(patch)) => {
                            let complete = section.complete;
                            merge(&mut section.values, patch, complete, "", out);
                        }
                        _ => {}
                    },
                    None => {}
                },
            }
        }
        changes
    }
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() { key.to_owned() } else { format!("{prefix}.{key}") }
}

fn before(map: &Map<String, Value>, key: &str, complete: bool) -> Before {
    match map.get(key) {
        Some(Value::Null) => Before::Absent,
        Some(value) => Before::Was(value.clone()),
        None if complete => Before::Absent,
        None => Before::Unknown,
    }
}

/// The section removed whole: every key it is known to hold, or the section itself when nothing is known.
fn clear(section: &mut Section, out: &mut Vec<Change>) {
    let known: Vec<(&String, &Value)> = section.values.iter().filter(|(_, v)| !v.is_null()).collect();
    if known.is_empty() && !section.complete {
        out.push(Change { path: String::new(), from: Before::Unknown, to: None });
    }
    for (key, value) in known {
        out.push(Change { path: key.clone(), from: Before::Was(value.clone()), to: None });
    }
    *section = Section { values: Map::new(), complete: true };
}

/// An update's section merged into the state, as AWS merges it: objects key by key, `null` removes, anything else
/// (arrays too) replaces.
fn merge(
    map: &mut Map<String, Value>,
    patch: &Map<String, Value>,
    complete: bool,
    prefix: &str,
    out: &mut Vec<Change>,
) {
    for (key, value) in patch {
        let path = join(prefix, key);
        match value {
            Value::Null => {
                let was = before(map, key, complete);
                if was != Before::Absent {
                    out.push(Change { path, from: was, to: None });
                }
                if complete {
                    map.remove(key);
                } else {
                    map.insert(key.clone(), Value::Null);
                }
            }
            Value::Object(inner_patch) => {
                if let Some(Value::Object(inner)) = map.get_mut(key) {
                    merge(inner, inner_patch, complete, &path, out);
                    continue;
                }
                match before(map, key, complete) {
                    Before::Was(old) => {
                        let new = without_nulls(value);
                        out.push(Change { path, from: Before::Was(old), to: Some(new.clone()) });
                        map.insert(key.clone(), new);
                    }
                    was => {
                        let mut inner = Map::new();
                        merge(&mut inner, inner_patch, complete || was == Before::Absent, &path, out);
                        map.insert(key.clone(), Value::Object(inner));
                    }
                }
            }
            other => {
                let was = before(map, key, complete);
                if !matches!(&was, Before::Was(old) if old == other) {
                    out.push(Change { path, from: was, to: Some(other.clone()) });
                }
                map.insert(key.clone(), other.clone());
            }
        }
    }
}

fn without_nulls(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k.clone(), without_nulls(v))).collect(),
        ),
        other => other.clone(),
    }
}

/// A snapshot against the state before it.
fn diff_maps(old: &Map<String, Value>, new: &Map<String, Value>, complete: bool, prefix: &str, out: &mut Vec<Change>) {
    for (key, value) in new {
        let path = join(prefix, key);
        match (old.get(key), value) {
            (Some(Value::Object(o)), Value::Object(n)) => diff_maps(o, n, complete, &path, out),
            (Some(o), n) if o == n => {}
            // A new object: its leaves, one by one, as an update that set them would show.
            (None, Value::Object(n)) if !n.is_empty() => diff_maps(&Map::new(), n, complete, &path, out),
            _ => out.push(Change { path, from: before(old, key, complete), to: Some(value.clone()) }),
        }
    }
    for (key, value) in old {
        if !new.contains_key(key) && !value.is_null() {
            out.push(Change { path: join(prefix, key), from: Before::Was(value.clone()), to: None });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(changes: &[Change]) -> Vec<String> {
        changes.iter().map(Change::to_text).collect()
    }

    #[test]
    fn updates_merge_and_report_only_what_changed() {
        let mut replay = Replay::default();
        replay.apply("snapshot", Some(&json!({"desired": {}, "reported": {}})));
        let first =
            replay.apply("update", Some(&json!({"desired": {"settings": {"mode": 1, "temp": 20}, "url": "a"}})));
        assert_eq!(texts(&first.desired), ["settings.mode = 1", "settings.temp = 20", "url = \"a\""]);
        assert_eq!(first.desired.iter().map(Change::op).collect::<Vec<_>>(), ["added", "added", "added"]);
        assert!(first.reported.is_empty());

        // The same values again change nothing; one value changes.
        let second =
            replay.apply("update", Some(&json!({"desired": {"settings": {"mode": 1, "temp": 25}, "url": "a"}})));
        assert_eq!(texts(&second.desired), ["settings.temp: 20 → 25"]);
        assert_eq!(
            second.desired[0].to_json(),
            json!({"path": "settings.temp", "op": "changed", "from": 20, "to": 25})
        );

        // A device reports; desired untouched.
        let report = replay.apply("update", Some(&json!({"reported": {"settings": {"mode": 1, "temp": 25}}})));
        assert!(report.desired.is_empty());
        assert_eq!(texts(&report.reported), ["settings.mode = 1", "settings.temp = 25"]);

        // null removes a key; removing an absent key changes nothing.
        let removed = replay.apply("update", Some(&json!({"desired": {"url": null, "never": null}})));
        assert_eq!(texts(&removed.desired), ["url removed (was \"a\")"]);
        assert_eq!(removed.desired[0].to_json(), json!({"path": "url", "op": "removed", "from": "a"}));

        // Arrays replace whole; a scalar replaced by an object.
        let arrays =
            replay.apply("update", Some(&json!({"desired": {"list": [1, 2], "settings": {"mode": {"a": 1}}}})));
        assert_eq!(texts(&arrays.desired), ["list = [1,2]", "settings.mode: 1 → {\"a\":1}"]);
        let again = replay.apply("update", Some(&json!({"desired": {"list": [1, 3]}})));
        assert_eq!(texts(&again.desired), ["list: [1,2] → [1,3]"]);
    }

    #[test]
    fn before_the_first_event_values_are_unknown() {
        let mut replay = Replay::default();
        let first = replay.apply("update", Some(&json!({"desired": {"temp": 20, "gone": null}})));
        // (keys in name order)
        assert_eq!(first.desired.iter().map(Change::op).collect::<Vec<_>>(), ["removed", "set"]);
        assert_eq!(first.desired[0].to_json(), json!({"path": "gone", "op": "removed"}));
        assert_eq!(first.desired[1].to_json(), json!({"path": "temp", "op": "set", "to": 20}));
        // Once seen, a key is known, also when removed.
        let second = replay.apply("update", Some(&json!({"desired": {"temp": 21, "gone": 1, "other": 2}})));
        assert_eq!(texts(&second.desired), ["gone = 1", "other = 2", "temp: 20 → 21"]);
        assert_eq!(second.desired.iter().map(Change::op).collect::<Vec<_>>(), ["added", "set", "changed"]);
    }

    #[test]
    fn snapshots_replace_and_deletes_clear() {
        let mut replay = Replay::default();
        replay.apply("update", Some(&json!({"desired": {"a": 1, "b": {"c": 2}}, "reported": {"a": 1}})));
        let snapshot = replay.apply("snapshot", Some(&json!({"desired": {"a": 1, "b": {"c": 3}, "d": 4}})));
        assert_eq!(texts(&snapshot.desired), ["b.c: 2 → 3", "d = 4"]);
        assert_eq!(texts(&snapshot.reported), ["a removed (was 1)"]);
        let deleted = replay.apply("delete", None);
        assert_eq!(texts(&deleted.desired), ["a removed (was 1)", "b removed (was {\"c\":3})", "d removed (was 4)"]);
        assert!(deleted.reported.is_empty());
        let recreated = replay.apply("update", Some(&json!({"desired": {"a": 1}})));
        assert_eq!(recreated.desired[0].op(), "added");
    }

    #[test]
    fn a_null_section_or_state_clears() {
        let mut replay = Replay::default();
        replay.apply("update", Some(&json!({"desired": {"a": 1}, "reported": {"b": 2}})));
        let cleared = replay.apply("update", Some(&json!({"desired": null})));
        assert_eq!(texts(&cleared.desired), ["a removed (was 1)"]);
        assert!(cleared.reported.is_empty());
        let all = replay.apply("update", Some(&Value::Null));
        assert!(all.desired.is_empty());
        assert_eq!(texts(&all.reported), ["b removed (was 2)"]);

        let mut unknown = Replay::default();
        let cleared = unknown.apply("delete", None);
        assert_eq!(texts(&cleared.desired), ["(all) removed"]);
    }
}
