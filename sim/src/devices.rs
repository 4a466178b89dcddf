//! Devices of six kinds, as the rollout rehearsal on MQTT plays them (devstack's `mqtt_fleet`): what a device sends
//! when its shadow's `desired` differs from what it reported, and how long it takes.

use devstack::mqtt_fleet;
use serde_json::{Map, Value};

pub use devstack::mqtt_fleet::{Kind, get};

/// How long after a change of `desired` a device of `kind` answers (ms), `low..=high`.
pub fn delay_ms(kind: Kind, bake_ms: u64) -> (u64, u64) {
    match kind {
        Kind::Late => (bake_ms * 2, bake_ms * 3),
        _ => (100, 1_500),
    }
}

/// The leaves of `value` with their paths, in key order (an empty object is no leaf).
pub fn leaves(value: &Value, path: &mut Vec<String>, out: &mut Vec<(Vec<String>, Value)>) {
    let mut all = Vec::new();
    mqtt_fleet::leaves(value, path, &mut all);
    out.extend(all.into_iter().filter(|(_, v)| !matches!(v, Value::Object(fields) if fields.is_empty())));
}

/// The updates (`state` documents) a device of `kind` sends for a shadow whose `desired` is `desired` and
/// `reported` is `reported`: its answer to the delta (the leaves of `desired` that `reported` lacks), as the MQTT
/// rehearsal's devices answer it; none when nothing differs.
pub fn answer(kind: Kind, desired: &Value, reported: &Value) -> Vec<Value> {
    let mut all = Vec::new();
    leaves(desired, &mut Vec::new(), &mut all);
    let mut delta = Map::new();
    for (path, value) in all.into_iter().filter(|(path, value)| !value.is_null() && get(reported, path) != Some(value))
    {
        mqtt_fleet::set(&mut delta, &path, value);
    }
    if delta.is_empty() {
        return Vec::new();
    }
    let (messages, _) = mqtt_fleet::answer(kind, &Value::Object(delta), reported);
    messages.into_iter().filter_map(|m| m.get("state").cloned()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
