//! Drift: which desired values a device's `reported` does not hold, and since when (from the shadow's history).
//! Pure: the CLI reads shadows and history, this decides.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use crate::document::equal;

/// One desired leaf that `reported` does not hold.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyBehind {
    /// The leaf's path from the section's root, one entry per level.
    pub path: Vec<String>,
    /// What desired holds there (`null`: desired asks for the key to go).
    pub desired: Value,
    /// What reported holds there; `None` when reported lacks the key.
    pub reported: Option<Value>,
}

impl KeyBehind {
    /// `settings.temp`.
    pub fn dotted(&self) -> String {
        self.path.join(".")
    }
}

/// The desired leaves that `reported` does not hold, in key order. Objects are compared leaf by leaf (the shadow
/// merges them key by key); arrays and scalars must be equal, numbers by value (1 equals 1.0); a `null` in desired
/// asks for deletion, so it is held when reported lacks the key. An empty object sets nothing.
pub fn behind(desired: &Value, reported: &Value) -> Vec<KeyBehind> {
    let mut out = Vec::new();
    if let Value::Object(desired) = desired {
        let reported = reported.as_object();
        walk(desired, reported, &mut Vec::new(), &mut out);
    }
    out
}

fn walk(
    desired: &Map<String, Value>,
    reported: Option<&Map<String, Value>>,
    path: &mut Vec<String>,
    out: &mut Vec<KeyBehind>,
) {
    for (key, want) in desired {
        let have = reported.and_then(|r| r.get(key)).filter(|v| !v.is_null());
        path.push(key.clone());
        match want {
            Value::Object(inner) => walk(inner, have.and_then(Value::as_object), path, out),
            Value::Null => {
                if let Some(have) = have {
                    out.push(KeyBehind { path: path.clone(), desired: Value::Null, reported: Some(have.clone()) });
                }
            }
            _ => {
                if !have.is_some_and(|h| equal(h, want)) {
                    out.push(KeyBehind { path: path.clone(), desired: want.clone(), reported: have.cloned() });
                }
            }
        }
        path.pop();
    }
}

/// Since when one key has been behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Since {
    /// The epoch second of the desired write that set the value the device does not hold.
    At(u64),
    /// The history read does not say: the write is older than the history kept (or read), the shadow was deleted
    /// and re-created since, or the newest write the history holds set another value (history lags the shadow).
    Unknown,
}

impl Since {
    pub fn at(self) -> Option<u64> {
        match self {
            Self::At(t) => Some(t),
            Self::Unknown => None,
        }
    }
}

static NULL: Value = Value::Null;

/// Finds, for each key behind, the newest desired write of that key in a shadow's history read newest first.
/// Feed it events (the history items: `kind`, `timestamp`, `state`) until [`SinceSearch::done`].
#[derive(Debug, Clone)]
pub struct SinceSearch {
    pending: Vec<(Vec<String>, Value)>,
    found: BTreeMap<Vec<String>, Since>,
    /// The `clientToken` of the write found (a push's id, for shadow-push's writes).
    by: BTreeMap<Vec<String>, String>,
}

impl SinceSearch {
    pub fn new(keys: &[KeyBehind]) -> Self {
        Self {
            pending: keys.iter().map(|k| (k.path.clone(), k.desired.clone())).collect(),
            found: BTreeMap::new(),
            by: BTreeMap::new(),
        }
    }

    /// Every key is decided: no older event can change the answer.
    pub fn done(&self) -> bool {
        self.pending.is_empty()
    }

    /// Takes the next older event. A delete ends the search (what came before was another shadow's life); a
    /// snapshot only restates the document and says nothing of when a key was written; an update that wrote a key
    /// decides it: the time when it wrote the value desired holds now, unknown when it wrote another one.
    pub fn older(&mut self, event: &Value) {
        let timestamp = event.get("timestamp").and_then(Value::as_u64);
        match event.get("kind").and_then(Value::as_str).unwrap_or("update") {
            "delete" => self.give_up(),
            // A snapshot of update/documents holds the document before and after: a key whose value differs was
            // written by it. Without the document before (history from before it was kept), it says nothing.
            "snapshot" => {
                let empty = Value::Object(serde_json::Map::new());
                let previous = match (event.get("previousState"), event.get("previousVersion")) {
                    (Some(previous), _) => previous,
                    // The shadow's first document: everything in it was written by it.
                    (None, None) => &empty,
                    (None, Some(_)) => return,
                };
                let leaf = |state: Option<&Value>, path: &[String]| {
                    let mut at = state.and_then(|s| s.get("desired"))?;
                    for key in path {
                        at = at.get(key)?;
                    }
                    Some(at.clone())
                };
                let token = event.get("clientToken").and_then(Value::as_str);
                let (found, by) = (&mut self.found, &mut self.by);
                self.pending.retain(|(path, want)| {
                    let (before, after) = (leaf(Some(previous), path), leaf(event.get("state"), path));
                    let changed = match (&before, &after) {
                        (Some(b), Some(a)) => !equal(b, a),
                        (None, None) => false,
                        _ => true,
                    };
                    if !changed {
                        return true;
                    }
                    let since = match (&after, timestamp) {
                        (Some(value), Some(t)) if equal(value, want) => Since::At(t),
                        _ => Since::Unknown,
                    };
                    if let (Since::At(_), Some(token)) = (since, token) {
                        by.insert(path.clone(), token.to_owned());
                    }
                    found.insert(path.clone(), since);
                    false
                });
            }
            _ => {
                let desired = match event.get("state") {
                    None => return,
                    Some(Value::Null) => Some(&NULL),
                    Some(state) => state.get("desired"),
                };
                let Some(desired) = desired else { return };
                let token = event.get("clientToken").and_then(Value::as_str);
                let (found, by) = (&mut self.found, &mut self.by);
                self.pending.retain(|(path, want)| match written(desired, path) {
                    None => true,
                    Some(wrote) => {
                        let since = match (wrote, timestamp) {
                            (Some(value), Some(t)) if equal(value, want) => Since::At(t),
                            _ => Since::Unknown,
                        };
                        if let (Since::At(_), Some(token)) = (since, token) {
                            by.insert(path.clone(), token.to_owned());
                        }
                        found.insert(path.clone(), since);
                        false
                    }
                });
            }
        }
    }

    /// No older history is read: every key still open is unknown.
    pub fn give_up(&mut self) {
        for (path, _) in self.pending.drain(..) {
            self.found.insert(path, Since::Unknown);
        }
    }

    /// Who made the write [`SinceSearch::since`] found: its `clientToken`, when it had one.
    pub fn written_by(&self, key: &KeyBehind) -> Option<&str> {
        self.by.get(&key.path).map(String::as_str)
    }

    /// The answer for `key` (unknown until decided).
    pub fn since(&self, key: &KeyBehind) -> Since {
        self.found.get(&key.path).copied().unwrap_or(Since::Unknown)
    }
}

/// Whether the desired patch `desired` wrote the leaf at `path`: `None` when it did not touch it, `Some(Some(v))`
/// when it wrote `v` there, `Some(None)` when it replaced or removed the leaf or a parent (a `null`, or a scalar where
/// an object stood).
fn written<'a>(desired: &'a Value, path: &[String]) -> Option<Option<&'a Value>> {
    let mut at = desired;
    for (i, key) in path.iter().enumerate() {
        match at {
            Value::Object(fields) => match fields.get(key) {
                None => return None,
                Some(next) => at = next,
            },
            // `"desired": null`, or a parent set to a value: the leaf was removed or replaced.
            _ => return if i == 0 && !at.is_null() { None } else { Some(None) },
        }
    }
    Some(Some(at))
}

/// What one thing's shadow says.
#[derive(Debug, Clone, PartialEq)]
pub enum ThingDrift {
    InSync,
    Behind(Vec<KeyBehind>),
    NoShadow,
}

/// Counts over the things checked, and how many things are behind on each key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    pub checked: u64,
    pub in_sync: u64,
    pub drifting: u64,
    pub no_shadow: u64,
    /// Dotted key → things behind on it.
    pub per_key: BTreeMap<String, u64>,
}

impl Tally {
    pub fn add(&mut self, drift: &ThingDrift) {
        self.checked += 1;
        match drift {
            ThingDrift::InSync => self.in_sync += 1,
            ThingDrift::NoShadow => self.no_shadow += 1,
            ThingDrift::Behind(keys) => {
                self.drifting += 1;
                for key in keys {
                    *self.per_key.entry(key.dotted()).or_default() += 1;
                }
            }
        }
    }
}

/// The fleet-index query that finds the things whose shadow has a delta among `targets` (a query string).
pub fn delta_query(targets: &str, shadow: Option<&str>) -> String {
    let has_delta = match shadow {
        Some(name) => format!("shadow.name.{name}.hasDelta:true"),
        None => "shadow.hasDelta:true".to_owned(),
    };
    format!("({targets}) AND {has_delta}")
}

/// The fleet-index query for the direct members of a thing group. Group names are `[a-zA-Z0-9:_-]+`, of which the
/// query syntax reserves only `:` (escaped).
pub fn group_query(group: &str) -> String {
    format!("thingGroupNames:{}", group.replace(':', "\\:"))
}

/// The parts of the account's fleet-indexing configuration (GetIndexingConfiguration) that say which shadows the
/// index holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IndexConfig {
    /// `OFF`, `REGISTRY` or `REGISTRY_AND_SHADOW`.
    pub thing_indexing_mode: String,
    /// `OFF` or `ON`.
    pub named_shadow_indexing_mode: String,
    pub named_shadow_names: Vec<String>,
}

impl IndexConfig {
    /// Whether the index holds `shadow` (`None`: the classic shadow), so that its `hasDelta` can be searched.
    pub fn holds(&self, shadow: Option<&str>) -> bool {
        match shadow {
            None => self.thing_indexing_mode == "REGISTRY_AND_SHADOW",
            Some(name) => {
                self.thing_indexing_mode != "OFF"
                    && !self.thing_indexing_mode.is_empty()
                    && self.named_shadow_indexing_mode == "ON"
                    && self.named_shadow_names.iter().any(|n| n == name)
            }
        }
    }

    /// Why the index does not hold `shadow`, for the message that names the path taken.
    pub fn why_not(&self, shadow: Option<&str>) -> String {
        let mode = if self.thing_indexing_mode.is_empty() { "OFF" } else { &self.thing_indexing_mode };
        match shadow {
            None => format!("thing indexing mode is {mode}, not REGISTRY_AND_SHADOW"),
            Some(name) if mode == "OFF" => format!("thing indexing is OFF (named shadow {name} needs it on)"),
            Some(name) if self.named_shadow_indexing_mode != "ON" => {
                format!("named shadow indexing is off (named shadow {name} is not indexed)")
            }
            Some(name) => format!("named shadow {name} is not among the indexed named shadows"),
        }
    }
}

/// Requests spread evenly at `rate` per second: each takes the next slot.
#[derive(Debug, Clone)]
pub struct Pacer {
    interval: Duration,
    next: Option<Instant>,
}

impl Pacer {
    /// `rate` must be positive and finite (the CLI checks it); anything else paces at one a second.
    pub fn new(rate: f64) -> Self {
        let interval = if rate.is_finite() && rate > 0.0 {
            Duration::try_from_secs_f64(1.0 / rate).unwrap_or(Duration::from_secs(1))
        } else {
            Duration::from_secs(1)
        };
        Self { interval, next: None }
    }

    /// When a request asked for at `now` may go. A pacer left idle does not save up a burst.
    pub fn take(&mut self, now: Instant) -> Instant {
        let at = self.next.map_or(now, |next| next.max(now));
        self.next = Some(at + self.interval);
        at
    }
}

/// `--max-tps`: a positive, finite number of requests a second.
pub fn parse_rate(text: &str) -> Result<f64, String> {
    let rate: f64 = text.trim().parse().map_err(|_| format!("{text:?} is not a number"))?;
    if !rate.is_finite() || rate <= 0.0 {
        return Err(format!("{text:?} must be a positive, finite number of requests a second"));
    }
    Ok(rate)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn dotted(keys: &[KeyBehind]) -> Vec<(String, Value, Option<Value>)> {
        keys.iter().map(|k| (k.dotted(), k.desired.clone(), k.reported.clone())).collect()
    }

    #[test]
    fn behind_compares_leaf_by_leaf() {
        let desired = json!({"settings": {"mode": 3, "temp": 20, "deep": {"a": [1, 2]}}, "url": "u", "n": 1.0,
                             "gone": null, "kept": null, "empty": {}});
        let reported = json!({"settings": {"mode": 2, "temp": 20.0, "deep": {"a": [1, 2]}, "extra": 9}, "n": 1,
                              "kept": "still here"});
        assert_eq!(
            dotted(&behind(&desired, &reported)),
            [
                ("kept".into(), Value::Null, Some(json!("still here"))),
                ("settings.mode".into(), json!(3), Some(json!(2))),
                ("url".into(), json!("u"), None),
            ]
        );
    }

    #[test]
    fn behind_in_sync_and_edge_cases() {
        assert!(behind(&json!({"a": {"b": 1}, "c": [1]}), &json!({"a": {"b": 1, "x": 2}, "c": [1.0]})).is_empty());
        assert!(behind(&json!({}), &Value::Null).is_empty());
        assert!(behind(&Value::Null, &json!({"a": 1})).is_empty(), "no desired section: nothing asked");
        assert!(behind(&json!({"gone": null}), &Value::Null).is_empty(), "a deletion held by an absent key");
        // An array differs as a whole; an object where a scalar is wanted (and back) is behind.
        assert_eq!(dotted(&behind(&json!({"c": [1, 2]}), &json!({"c": [2, 1]})))[0].0, "c");
        assert_eq!(
            dotted(&behind(&json!({"a": 1, "b": {"x": 1}}), &json!({"a": {"x": 1}, "b": 5}))),
            [("a".into(), json!(1), Some(json!({"x": 1}))), ("b.x".into(), json!(1), None)]
        );
        assert_eq!(dotted(&behind(&json!({"a": "1"}), &json!({"a": 1}))).len(), 1, "a string is not a number");
    }

    fn update(t: u64, desired: Value) -> Value {
        json!({"kind": "update", "timestamp": t, "state": {"desired": desired}})
    }

    #[test]
    fn a_snapshot_with_the_document_before_says_what_it_wrote() {
        let keys = behind(&json!({"mode": 3, "url": "u"}), &json!({}));
        let mut search = SinceSearch::new(&keys);
        search.older(&json!({"kind": "snapshot", "timestamp": 600, "clientToken": "push-2", "previousVersion": 4,
                             "previousState": {"desired": {"mode": 2, "url": "u"}},
                             "state": {"desired": {"mode": 3, "url": "u"}}}));
        assert_eq!(search.since(&keys[0]), Since::At(600));
        assert_eq!(search.written_by(&keys[0]), Some("push-2"));
        assert!(!search.done(), "url did not change there");
        search.older(&json!({"kind": "snapshot", "timestamp": 500, "state": {"desired": {"url": "u"}}}));
        assert_eq!(search.since(&keys[1]), Since::At(500), "the first document wrote everything in it");
    }

    #[test]
    fn since_is_the_newest_write_of_the_value_desired_holds() {
        let keys = behind(&json!({"settings": {"mode": 3, "temp": 21}, "url": "u"}), &json!({"settings": {}}));
        let mut search = SinceSearch::new(&keys);
        // Newest first: a report, a snapshot, the write of mode, an older write of url, the write of temp.
        for event in [
            json!({"kind": "update", "timestamp": 500, "state": {"reported": {"settings": {"mode": 2}}}}),
            json!({"kind": "snapshot", "timestamp": 400, "previousVersion": 3,
                   "state": {"desired": {"settings": {"mode": 3}}}}),
            json!({"kind": "update", "timestamp": 400, "clientToken": "push-1",
                   "state": {"desired": {"settings": {"mode": 3}}}}),
            update(300, json!({"url": "u", "settings": {"temp": 21}})),
        ] {
            assert!(!search.done());
            search.older(&event);
        }
        assert!(search.done());
        let got: Vec<Since> = keys.iter().map(|k| search.since(k)).collect();
        assert_eq!(got, [Since::At(400), Since::At(300), Since::At(300)]);
        assert_eq!(search.written_by(&keys[0]), Some("push-1"));
        assert_eq!(search.written_by(&keys[2]), None);
    }

    #[test]
    fn since_unknown_when_history_disagrees_or_ends() {
        let keys = behind(&json!({"a": 1, "b": {"c": 2}, "d": 4, "e": 5}), &json!({}));
        let mut search = SinceSearch::new(&keys);
        search.older(&update(90, json!({"a": 7}))); // wrote another value: history lags the shadow
        search.older(&update(80, json!({"b": "flat"}))); // replaced the parent
        search.older(&json!({"kind": "update", "timestamp": 70, "state": {"desired": null}}));
        assert!(search.done(), "`desired: null` removed d and e");
        assert!(keys.iter().all(|k| search.since(k) == Since::Unknown));

        let mut deleted = SinceSearch::new(&keys);
        deleted.older(&update(50, json!({"a": 1})));
        deleted.older(&json!({"kind": "delete", "timestamp": 40, "version": 3}));
        assert!(deleted.done());
        assert_eq!(deleted.since(&keys[0]), Since::At(50));
        assert_eq!(deleted.since(&keys[1]), Since::Unknown, "older than the shadow's re-creation");

        let mut ran_out = SinceSearch::new(&keys);
        ran_out.older(&update(10, json!({"d": 4.0})));
        ran_out.give_up();
        assert_eq!(ran_out.since(&keys[2]), Since::At(10), "numbers compared by value");
        assert_eq!(ran_out.since(&keys[3]), Since::Unknown);
    }

    #[test]
    fn tally_counts_things_and_keys() {
        let mut tally = Tally::default();
        let one = behind(&json!({"a": 1, "s": {"m": 1}}), &json!({}));
        tally.add(&ThingDrift::Behind(one));
        tally.add(&ThingDrift::Behind(behind(&json!({"a": 1}), &json!({"a": 2}))));
        tally.add(&ThingDrift::InSync);
        tally.add(&ThingDrift::NoShadow);
        assert_eq!((tally.checked, tally.in_sync, tally.drifting, tally.no_shadow), (4, 1, 2, 1));
        assert_eq!(tally.per_key, BTreeMap::from([("a".into(), 2), ("s.m".into(), 1)]));
    }

    #[test]
    fn index_config_says_which_shadows_it_holds() {
        let config = |mode: &str, named: &str, names: &[&str]| IndexConfig {
            thing_indexing_mode: mode.into(),
            named_shadow_indexing_mode: named.into(),
            named_shadow_names: names.iter().map(|n| (*n).to_owned()).collect(),
        };
        assert!(config("REGISTRY_AND_SHADOW", "OFF", &[]).holds(None));
        assert!(!config("REGISTRY", "ON", &["cfg"]).holds(None));
        assert!(!IndexConfig::default().holds(None));
        assert!(config("REGISTRY", "ON", &["cfg"]).holds(Some("cfg")));
        assert!(!config("REGISTRY", "ON", &["other"]).holds(Some("cfg")));
        assert!(!config("REGISTRY_AND_SHADOW", "OFF", &["cfg"]).holds(Some("cfg")));
        assert!(!config("OFF", "ON", &["cfg"]).holds(Some("cfg")));
        assert!(config("REGISTRY", "OFF", &[]).why_not(None).contains("REGISTRY, not REGISTRY_AND_SHADOW"));
        assert!(IndexConfig::default().why_not(None).contains("OFF"));
        assert!(config("REGISTRY", "ON", &["x"]).why_not(Some("cfg")).contains("not among"));
        assert_eq!(
            delta_query(&group_query("site-1"), Some("cfg")),
            "(thingGroupNames:site-1) AND shadow.name.cfg.hasDelta:true"
        );
        assert_eq!(group_query("a:b"), "thingGroupNames:a\\:b");
        assert_eq!(delta_query("attributes.site:tokyo", None), "(attributes.site:tokyo) AND shadow.hasDelta:true");
    }

    #[test]
    fn pacer_spreads_requests_and_saves_no_burst() {
        let start = Instant::now();
        let mut pacer = Pacer::new(4.0);
        let slots: Vec<Duration> = (0..3).map(|_| pacer.take(start) - start).collect();
        assert_eq!(slots, [Duration::ZERO, Duration::from_millis(250), Duration::from_millis(500)]);
        let later = start + Duration::from_secs(10);
        assert_eq!(pacer.take(later), later, "idle time is not saved up");
        assert_eq!(pacer.take(later) - later, Duration::from_millis(250));
        assert_eq!(Pacer::new(0.5).take(start), start);
    }

    #[test]
    fn rates_must_be_positive_and_finite() {
        assert_eq!(parse_rate("2.5"), Ok(2.5));
        assert_eq!(parse_rate(" 10 "), Ok(10.0));
        for bad in ["0", "-1", "NaN", "inf", "fast", ""] {
            let err = parse_rate(bad).err().unwrap_or_default();
            assert!(err.contains(&format!("{bad:?}")), "{bad}: {err}");
        }
    }
}
