//! Devices of six kinds, as the rollout rehearsal on MQTT plays them (devstack's `mqtt_fleet`): what a device sends
//! when its shadow's `desired` differs from what it reported, and how long it takes.

use serde_json::{Map, Value, json};

/// How a simulated device answers a delta.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// Applies it and reports it after a moment.
    Healthy,
    /// Never answers.
    Silent,
    /// Puts its own value back in `desired` for each key of the delta (`null` for a key it never had).
    Refusing,
    /// Applies it, reports it, then clears those keys of `desired`.
    Clearing,
    /// Applies every leaf of the delta but the last (in key order): one leaf alone, it applies nothing.
    Partial,
    /// Applies it and reports it, long after (past a bake).
    Late,
}

impl Kind {
    pub const ALL: [Kind; 6] = [Kind::Healthy, Kind::Silent, Kind::Refusing, Kind::Clearing, Kind::Partial, Kind::Late];

    /// How long after a change of `desired` the device answers (ms), `low..=high`.
    pub fn delay_ms(self, bake_ms: u64) -> (u64, u64) {
        match self {
            Kind::Late => (bake_ms * 2, bake_ms * 3),
            _ => (100, 1_500),
        }
    }
}

/// The leaves of `value` with their paths.
pub fn leaves(value: &Value, path: &mut Vec<String>, out: &mut Vec<(Vec<String>, Value)>) {
    match value {
        Value::Object(fields) if !fields.is_empty() => {
            for (k, v) in fields {
                path.push(k.clone());
                leaves(v, path, out);
                path.pop();
            }
        }
        Value::Object(_) => {}
        other => out.push((path.clone(), other.clone())),
    }
}

pub fn get<'a>(value: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(value, |v, k| v.get(k))
}

fn set(map: &mut Map<String, Value>, path: &[String], value: Value) {
    let Some((last, parents)) = path.split_last() else { return };
    let mut at = map;
    for key in parents {
        let entry = at.entry(key.clone()).or_insert_with(|| Value::Object(Map::new()));
        if !entry.is_object() {
            *entry = Value::Object(Map::new());
        }
        let Value::Object(next) = entry else { return };
        at = next;
    }
    at.insert(last.clone(), value);
}

/// The updates (`state` documents) a device of `kind` sends for a shadow whose `desired` is `desired` and
/// `reported` is `reported`: none when nothing differs.
pub fn answer(kind: Kind, desired: &Value, reported: &Value) -> Vec<Value> {
    let mut all = Vec::new();
    leaves(desired, &mut Vec::new(), &mut all);
    all.retain(|(path, value)| !value.is_null() && get(reported, path) != Some(value));
    if all.is_empty() {
        return Vec::new();
    }
    let report = |count: usize| {
        let mut applied = Map::new();
        for (path, value) in all.iter().take(count) {
            set(&mut applied, path, value.clone());
        }
        (!applied.is_empty()).then(|| json!({"reported": applied}))
    };
    match kind {
        Kind::Silent => Vec::new(),
        Kind::Healthy | Kind::Late => report(all.len()).into_iter().collect(),
        Kind::Partial => report(all.len() - 1).into_iter().collect(),
        Kind::Clearing => {
            let mut cleared = Map::new();
            for (path, _) in &all {
                set(&mut cleared, path, Value::Null);
            }
            report(all.len()).into_iter().chain([json!({"desired": cleared})]).collect()
        }
        Kind::Refusing => {
            let mut own = Map::new();
            for (path, _) in &all {
                set(&mut own, path, get(reported, path).cloned().unwrap_or(Value::Null));
            }
            vec![json!({"desired": own})]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_answers_as_the_rehearsal_does() {
        let desired = json!({"fw": "v2", "s": {"a": 1, "b": 2}});
        let reported = json!({"fw": "v1"});
        let healthy = answer(Kind::Healthy, &desired, &reported);
        assert_eq!(healthy, vec![json!({"reported": {"fw": "v2", "s": {"a": 1, "b": 2}}})]);
        assert_eq!(answer(Kind::Late, &desired, &reported), healthy);
        assert!(answer(Kind::Silent, &desired, &reported).is_empty());
        assert_eq!(answer(Kind::Partial, &desired, &reported), vec![json!({"reported": {"fw": "v2", "s": {"a": 1}}})]);
        assert_eq!(
            answer(Kind::Refusing, &desired, &reported),
            vec![json!({"desired": {"fw": "v1", "s": {"a": null, "b": null}}})]
        );
        let clearing = answer(Kind::Clearing, &desired, &reported);
        assert_eq!(clearing[1], json!({"desired": {"fw": null, "s": {"a": null, "b": null}}}));
        assert!(answer(Kind::Healthy, &desired, &healthy[0]["reported"]).is_empty(), "nothing differs: no answer");
    }
}
