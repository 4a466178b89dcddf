//! A shadow's state as the Device Shadow service holds it, and how each recorded event changes it.
//!
//! The merge rules, from AWS's developer guide (`device-shadow-document`, `device-shadow-data-flow`):
//! - an update's `desired` and `reported` are merged into the document key by key; nested objects merge
//!   recursively;
//! - a key set to `null` is removed, a nested object of `null`s removes those keys;
//! - `"desired": null` removes the whole section, and `"state": null` removes both;
//! - anything else (a scalar, an array) replaces the value whole; arrays are never merged;
//! - a section left with no keys is not shown (GetThingShadow omits it);
//! - a delete ends the document; a later update starts a new one from nothing.
//!
//! Pure: the CLI reads the history, this decides what the document was.

use serde_json::{Map, Value};

use crate::document::equal;

/// `desired` and `reported` of one shadow at one version: `None` when the section is absent.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ShadowState {
    pub desired: Option<Map<String, Value>>,
    pub reported: Option<Map<String, Value>>,
}

/// The two sections of a shadow document, by name.
pub const SECTIONS: [&str; 2] = ["desired", "reported"];

impl ShadowState {
    /// The state a snapshot (`update/documents`' `current.state`, or GetThingShadow's `state`) holds. `delta` is
    /// derived, so it is ignored; a section that is not an object is absent.
    pub fn from_snapshot(state: Option<&Value>) -> Self {
        let section =
            |name: &str| state.and_then(|s| s.get(name)).and_then(Value::as_object).filter(|m| !m.is_empty()).cloned();
        Self { desired: section("desired"), reported: section("reported") }
    }

    pub fn section(&self, name: &str) -> Option<&Map<String, Value>> {
        match name {
            "desired" => self.desired.as_ref(),
            _ => self.reported.as_ref(),
        }
    }

    fn section_mut(&mut self, name: &str) -> &mut Option<Map<String, Value>> {
        match name {
            "desired" => &mut self.desired,
            _ => &mut self.reported,
        }
    }

    /// Applies an update's `state` (the `update/accepted` message's, which carries only what the request sent).
    pub fn apply_update(&mut self, state: &Value) {
        let Value::Object(sections) = state else {
            // `"state": null` removes both sections.
            if state.is_null() {
                *self = Self::default();
            }
            return;
        };
        for name in SECTIONS {
            match sections.get(name) {
                None => {}
                Some(Value::Object(patch)) => {
                    let section = self.section_mut(name);
                    let mut merged = section.take().unwrap_or_default();
                    merge(&mut merged, patch);
                    *section = Some(merged).filter(|m| !m.is_empty());
                }
                // `null` (and anything that is not an object, which the service refuses) removes the section.
                Some(_) => *self.section_mut(name) = None,
            }
        }
    }

    /// `delta`: every key of `desired` that `reported` does not hold, objects compared key by key, numbers by
    /// value. `None` when reported holds everything desired.
    pub fn delta(&self) -> Option<Map<String, Value>> {
        let desired = self.desired.as_ref()?;
        let delta = delta_of(desired, self.reported.as_ref());
        (!delta.is_empty()).then_some(delta)
    }

    /// The `state` object as GetThingShadow shows it: `desired`, `reported`, and `delta` where they are not empty.
    pub fn to_json(&self) -> Value {
        let mut state = Map::new();
        if let Some(desired) = &self.desired {
            state.insert("desired".into(), Value::Object(desired.clone()));
        }
        if let Some(reported) = &self.reported {
            state.insert("reported".into(), Value::Object(reported.clone()));
        }
        if let Some(delta) = self.delta() {
            state.insert("delta".into(), Value::Object(delta));
        }
        Value::Object(state)
    }

    /// Whether two states hold the same values (numbers compared by value: 30 equals 30.0).
    pub fn same_as(&self, other: &Self) -> bool {
        SECTIONS.iter().all(|name| match (self.section(name), other.section(name)) {
            (None, None) => true,
            (Some(a), Some(b)) => equal(&Value::Object(a.clone()), &Value::Object(b.clone())),
            _ => false,
        })
    }

    /// Every leaf of a section, dotted from its root (`settings.mode`), in key order. An empty object is a leaf.
    pub fn leaves(&self, name: &str) -> Vec<(String, Value)> {
        let mut out = Vec::new();
        if let Some(section) = self.section(name) {
            flatten(section, "", &mut out);
        }
        out
    }
}

fn merge(target: &mut Map<String, Value>, patch: &Map<String, Value>) {
    for (key, value) in patch {
        match value {
            Value::Null => {
                target.remove(key);
            }
            Value::Object(inner_patch) => match target.get_mut(key) {
                Some(Value::Object(inner)) => merge(inner, inner_patch),
                _ => {
                    let mut inner = Map::new();
                    merge(&mut inner, inner_patch);
                    target.insert(key.clone(), Value::Object(inner));
                }
            },
            other => {
                target.insert(key.clone(), other.clone());
            }
        }
    }
}

fn delta_of(desired: &Map<String, Value>, reported: Option<&Map<String, Value>>) -> Map<String, Value> {
    let mut delta = Map::new();
    for (key, want) in desired {
        let have = reported.and_then(|r| r.get(key));
        match (want, have) {
            (Value::Object(want_inner), Some(Value::Object(have_inner))) => {
                let inner = delta_of(want_inner, Some(have_inner));
                if !inner.is_empty() {
                    delta.insert(key.clone(), Value::Object(inner));
                }
            }
            (want, Some(have)) if equal(want, have) => {}
            (want, _) => {
                delta.insert(key.clone(), want.clone());
            }
        }
    }
    delta
}

pub fn flatten(map: &Map<String, Value>, prefix: &str, out: &mut Vec<(String, Value)>) {
    for (key, value) in map {
        let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
        match value {
            Value::Object(inner) if !inner.is_empty() => flatten(inner, &path, out),
            other => out.push((path, other.clone())),
        }
    }
}

/// One leaf that differs between two states.
#[derive(Debug, Clone, PartialEq)]
pub struct LeafChange {
    /// `desired` or `reported`.
    pub section: &'static str,
    /// Dotted from the section's root.
    pub path: String,
    /// `None`: absent.
    pub before: Option<Value>,
    pub after: Option<Value>,
}

/// Every leaf that differs between `before` and `after`, section by section, in path order. A `None` state is a
/// shadow that does not exist (every leaf absent).
pub fn leaf_changes(before: Option<&ShadowState>, after: Option<&ShadowState>) -> Vec<LeafChange> {
    let mut changes = Vec::new();
    for section in SECTIONS {
        let old = before.map(|s| s.leaves(section)).unwrap_or_default();
        let new = after.map(|s| s.leaves(section)).unwrap_or_default();
        let mut paths: Vec<&String> = old.iter().chain(&new).map(|(p, _)| p).collect();
        paths.sort();
        paths.dedup();
        for path in paths {
            let find = |leaves: &[(String, Value)]| leaves.iter().find(|(p, _)| p == path).map(|(_, v)| v.clone());
            let (b, a) = (find(&old), find(&new));
            let same = match (&b, &a) {
                (Some(b), Some(a)) => equal(b, a),
                (None, None) => true,
                _ => false,
            };
            if !same {
                changes.push(LeafChange { section, path: path.clone(), before: b, after: a });
            }
        }
    }
    changes
}

/// Whether `path` (dotted) is `filter` or lies under it, or `filter` lies under `path` (an object replaced or
/// removed whole touches every leaf below it).
pub fn touches(path: &str, filter: &str) -> bool {
    let under = |a: &str, b: &str| a == b || (a.starts_with(b) && a.as_bytes().get(b.len()) == Some(&b'.'));
    under(path, filter) || under(filter, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn state(v: Value) -> ShadowState {
        ShadowState::from_snapshot(Some(&v))
    }

    #[test]
    fn updates_merge_nested_objects_and_null_removes() {
        let mut s = state(json!({"desired": {"settings": {"mode": 1, "temp": 20}, "url": "a"}}));
        s.apply_update(&json!({"desired": {"settings": {"temp": null, "fan": true}, "url": [1, 2]}}));
        assert_eq!(
            s.to_json(),
            json!({"desired": {"settings": {"mode": 1, "fan": true}, "url": [1, 2]},
                                       "delta": {"settings": {"mode": 1, "fan": true}, "url": [1, 2]}})
        );
        s.apply_update(&json!({"reported": {"settings": {"mode": 1.0, "fan": true}, "url": [1, 2]}}));
        assert_eq!(s.delta(), None, "30 and 30.0 are the same number");
        s.apply_update(&json!({"desired": null}));
        assert_eq!(s.desired, None);
        s.apply_update(&Value::Null);
        assert_eq!(s, ShadowState::default());
    }

    #[test]
    fn a_section_emptied_by_nulls_is_not_shown() {
        let mut s = state(json!({"desired": {"a": 1}}));
        s.apply_update(&json!({"desired": {"a": null}}));
        assert_eq!(s.desired, None);
        s.apply_update(&json!({"desired": {"b": {"c": null}}}));
        assert_eq!(s.to_json(), json!({"desired": {"b": {}}, "delta": {"b": {}}}));
    }

    #[test]
    fn leaf_changes_and_paths() {
        let a = state(json!({"desired": {"s": {"mode": 1, "temp": 20}}}));
        let b = state(json!({"desired": {"s": {"mode": 2}}, "reported": {"x": 1}}));
        let changes = leaf_changes(Some(&a), Some(&b));
        let seen: Vec<(&str, &str, Option<Value>, Option<Value>)> =
            changes.iter().map(|c| (c.section, c.path.as_str(), c.before.clone(), c.after.clone())).collect();
        assert_eq!(
            seen,
            vec![
                ("desired", "s.mode", Some(json!(1)), Some(json!(2))),
                ("desired", "s.temp", Some(json!(20)), None),
                ("reported", "x", None, Some(json!(1))),
            ]
        );
        assert!(touches("settings.mode", "settings"));
        assert!(touches("settings", "settings.mode"));
        assert!(!touches("settings2", "settings"));
        assert!(!touches("settings.model", "settings.mode"));
    }
}
