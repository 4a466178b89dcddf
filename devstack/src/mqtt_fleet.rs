//! Simulated devices over MQTT (`fleet-local devices`, the rollout rehearsal): each connects with its own
//! certificate, subscribes to its shadow's `update/delta` and `get/accepted`, asks for its shadow once (a delta
//! published before it connected is in the answer), and answers each delta as its kind does.

use std::str::FromStr;
use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::mqtt_ca::LocalCa;
use crate::mqtt_device::{Device, DeviceError, Endpoint};
use crate::rules::ShadowKey;

/// How a simulated device answers a delta (here over MQTT; in the deterministic simulation, `sim/src/devices.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// Applies it and reports it (the seed's subscribe.py, answering).
    Healthy,
    /// Never answers.
    Silent,
    /// Puts its own value back in `desired` for each key of the delta (`null` for a key it never had).
    Refusing,
    /// Applies it, reports it, then clears those keys of `desired`.
    Clearing,
    /// Applies every leaf of the delta but the last (in key order): one leaf alone, it applies nothing.
    Partial,
    /// Applies it and reports it, after `--report-after` seconds (default 30).
    Late,
}

impl Kind {
    pub const ALL: [Kind; 6] = [Kind::Healthy, Kind::Silent, Kind::Refusing, Kind::Clearing, Kind::Partial, Kind::Late];
}

impl FromStr for Kind {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        Ok(match text {
            "healthy" => Kind::Healthy,
            "silent" => Kind::Silent,
            "refusing" => Kind::Refusing,
            "clearing" => Kind::Clearing,
            "partial" => Kind::Partial,
            "late" => Kind::Late,
            _ => return Err(format!("{text} is not a kind: healthy, silent, refusing, clearing, partial or late")),
        })
    }
}

/// The leaves of `value` as (path, value), in key order.
pub fn leaves(value: &Value, path: &mut Vec<String>, out: &mut Vec<(Vec<String>, Value)>) {
    match value {
        Value::Object(fields) if !fields.is_empty() => {
            for (k, v) in fields {
                path.push(k.clone());
                leaves(v, path, out);
                path.pop();
            }
        }
        leaf => out.push((path.clone(), leaf.clone())),
    }
}

/// Sets the leaf at `path` of `document`, making the objects on the way.
pub fn set(document: &mut Map<String, Value>, path: &[String], value: Value) {
    let Some((last, parents)) = path.split_last() else { return };
    let mut node = document;
    for key in parents {
        let entry = node.entry(key.clone()).or_insert_with(|| Value::Object(Map::new()));
        if !entry.is_object() {
            *entry = Value::Object(Map::new());
        }
        let Value::Object(next) = entry else { return };
        node = next;
    }
    node.insert(last.clone(), value);
}

/// The value at `path` of `document`.
pub fn get<'a>(document: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(document, |node, key| node.get(key))
}

/// What a device of `kind` publishes on its shadow's `update` for `delta`, given what it reported so far; with the
/// report it then holds. Pure, so that each kind is tested without a broker.
pub fn answer(kind: Kind, delta: &Value, reported: &Value) -> (Vec<Value>, Value) {
    let mut all = Vec::new();
    leaves(delta, &mut Vec::new(), &mut all);
    let mut now = reported.as_object().cloned().unwrap_or_default();
    let mut applied = Map::new();
    let apply = |count: usize, now: &mut Map<String, Value>, applied: &mut Map<String, Value>| {
        for (path, value) in all.iter().take(count) {
            set(now, path, value.clone());
            set(applied, path, value.clone());
        }
    };
    let report = |applied: Map<String, Value>| json!({"state": {"reported": applied}});
    let messages = match kind {
        Kind::Silent => Vec::new(),
        Kind::Healthy | Kind::Late => {
            apply(all.len(), &mut now, &mut applied);
            vec![report(applied)]
        }
        Kind::Partial => {
            apply(all.len().saturating_sub(1), &mut now, &mut applied);
            if applied.is_empty() { Vec::new() } else { vec![report(applied)] }
        }
        Kind::Clearing => {
            apply(all.len(), &mut now, &mut applied);
            let mut cleared = Map::new();
            for (path, _) in &all {
                set(&mut cleared, path, Value::Null);
            }
            vec![report(applied), json!({"state": {"desired": cleared}})]
        }
        Kind::Refusing => {
            let mut own = Map::new();
            for (path, _) in &all {
                set(&mut own, path, get(reported, path).cloned().unwrap_or(Value::Null));
            }
            vec![json!({"state": {"desired": own}})]
        }
    };
    (messages, Value::Object(now))
}

/// One simulated device, until its task is dropped or its connection fails for good.
async fn run_device(
    endpoint: Endpoint,
    credentials: crate::mqtt_ca::Issued,
    shadow: ShadowKey,
    kind: Kind,
    report_after: Duration,
) -> Result<(), DeviceError> {
    let (mut device, _) = Device::connect(&shadow.thing, &endpoint, &credentials, true).await?;
    let (delta_topic, got_topic) = (shadow.topic("update/delta"), shadow.topic("get/accepted"));
    device.subscribe(&[delta_topic.clone(), got_topic.clone()]).await?;
    device.publish(&shadow.topic("get"), json!({"clientToken": "boot"}).to_string()).await?;
    let update = shadow.topic("update");
    let mut reported = Value::Object(Map::new());
    let mut seen_version = 0;
    loop {
        let Some(incoming) = device.next(Duration::from_secs(3600)).await else { continue };
        let crate::mqtt_device::Incoming::Message { topic, payload } = incoming else { continue };
        let delta = if topic == got_topic {
            if let Some(now) = payload.pointer("/state/reported") {
                reported = now.clone();
            }
            payload.pointer("/state/delta").cloned()
        } else if topic == delta_topic {
            payload.get("state").cloned()
        } else {
            None
        };
        // AWS advises discarding a message older than the version already seen.
        let version = payload.get("version").and_then(Value::as_u64).unwrap_or(0);
        let Some(delta) = delta.filter(|_| version >= seen_version) else { continue };
        seen_version = version;
        if !report_after.is_zero() {
            tokio::time::sleep(report_after).await;
        }
        let (messages, now) = answer(kind, &delta, &reported);
        reported = now;
        for message in messages {
            device.publish(&update, message.to_string()).await?;
        }
    }
}

/// A running fleet of simulated devices; they disconnect when it is dropped.
pub struct Fleet {
    tasks: Vec<tokio::task::JoinHandle<Result<(), DeviceError>>>,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Fleet {
    /// Starts a device for each (thing, kind) on `shadow` (`None`: the classic shadow). `report_after` delays every
    /// answer; a late device waits `late_after` instead. Certificates come from the stack's CA.
    pub fn start(
        ca: &LocalCa,
        endpoint: &Endpoint,
        devices: &[(String, Kind)],
        shadow: Option<&str>,
        report_after: Duration,
        late_after: Duration,
    ) -> Result<Self, crate::mqtt_ca::CaError> {
        let mut tasks = Vec::with_capacity(devices.len());
        for (thing, kind) in devices {
            let credentials = ca.issue_thing(thing)?;
            let key = ShadowKey { thing: thing.clone(), name: shadow.map(str::to_owned) };
            let delay = if *kind == Kind::Late { late_after } else { report_after };
            tasks.push(tokio::spawn(run_device(endpoint.clone(), credentials, key, *kind, delay)));
        }
        Ok(Self { tasks })
    }

    /// How many devices still run (a device whose connection failed has stopped).
    pub fn running(&self) -> usize {
        self.tasks.iter().filter(|t| !t.is_finished()).count()
    }

    /// Waits for every device to stop (it runs until the process ends): the first failure, if any.
    pub async fn wait(self) -> Result<(), DeviceError> {
        let mut this = self;
        for task in std::mem::take(&mut this.tasks) {
            if let Ok(Err(e)) = task.await {
                return Err(e);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_answers_a_delta_as_it_should() {
        let delta = json!({"settings": {"mode": 2, "temp": 21}, "firmware_url": "fw-2"});
        let reported = json!({"settings": {"mode": 1}});
        let (healthy, now) = answer(Kind::Healthy, &delta, &reported);
        assert_eq!(healthy, [json!({"state": {"reported": delta}})]);
        assert_eq!(now, json!({"settings": {"mode": 2, "temp": 21}, "firmware_url": "fw-2"}));
        assert_eq!(answer(Kind::Late, &delta, &reported).0, healthy);
        assert_eq!(answer(Kind::Silent, &delta, &reported), (vec![], reported.clone()));
        let (refusing, now) = answer(Kind::Refusing, &delta, &reported);
        assert_eq!(
            refusing,
            [json!({"state": {"desired": {"settings": {"mode": 1, "temp": null}, "firmware_url": null}}})]
        );
        assert_eq!(now, reported, "a refusing device keeps its own value");
        let (clearing, _) = answer(Kind::Clearing, &delta, &reported);
        assert_eq!(
            clearing[1],
            json!({"state": {"desired": {"settings": {"mode": null, "temp": null}, "firmware_url": null}}})
        );
        // Keys in order: firmware_url, settings.mode, settings.temp; the last one is left out.
        let (partial, _) = answer(Kind::Partial, &delta, &reported);
        assert_eq!(partial, [json!({"state": {"reported": {"firmware_url": "fw-2", "settings": {"mode": 2}}}})]);
        assert_eq!(answer(Kind::Partial, &json!({"a": 1}), &reported).0, Vec::<Value>::new());
        for kind in Kind::ALL {
            let name = format!("{kind:?}").to_lowercase();
            assert_eq!(name.parse::<Kind>(), Ok(kind));
        }
        assert!("eager".parse::<Kind>().is_err());
    }
}
