//! The IoT data plane in memory (the `Shadows` port): each thing's classic or named shadow as one document with
//! `desired`, `reported`, per-leaf timestamps and a version; updates merged as AWS merges them (`null` deletes),
//! refused with 409 at a stale `version`, and with 429 `ThrottlingException` over the account's quota, counted per
//! simulated second. Every accepted write is logged with the invocation that made it; a device answers each change of
//! its `desired` as its kind does.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Map, Value};
use shadow_core::names::{ShadowName, ThingName};
use shadow_core::push::{DesiredState, Shadows};
use shadow_core::service::{FaultKind, ServiceError};

use crate::devices::{self, Kind};
use crate::dice::Dice;
use crate::trace::{Trace, invocation};

/// The `clientToken` the simulated devices write with.
pub const DEVICE: &str = "device";

/// One accepted update.
#[derive(Debug, Clone)]
pub struct Write {
    pub at_ms: u64,
    pub invocation: u64,
    pub thing: String,
    /// The update's `clientToken` (a push id, `<pushId>.rollback`, or [`DEVICE`]).
    pub token: String,
    /// The update's `state`.
    pub state: Value,
    /// `desired` before and after.
    pub before: Value,
    pub after: Value,
    /// For each leaf the update set in `desired`: who wrote it last before this update (`None`: nobody, or before
    /// the world began).
    pub overwrote: Vec<(String, Option<String>)>,
}

/// One answered read: what the invocation saw of `desired`.
#[derive(Debug, Clone)]
pub struct Read {
    pub at_ms: u64,
    pub invocation: u64,
    pub thing: String,
    pub desired: Value,
}

/// Requests made in one simulated second, accepted or not.
#[derive(Debug, Clone, Default)]
pub struct Second {
    pub updates_accepted: u32,
    /// Update requests from pushes (429s included).
    pub updates_asked: u32,
    pub reads_accepted: u32,
    pub reads_asked: u32,
}

#[derive(Debug, Clone, Default)]
struct Shadow {
    desired: Map<String, Value>,
    metadata: Map<String, Value>,
    reported: Map<String, Value>,
    version: u64,
    /// Who last wrote each leaf of `desired` (path joined with `.`).
    writers: BTreeMap<String, String>,
}

#[derive(Default)]
struct State {
    shadows: BTreeMap<String, Shadow>,
    kinds: BTreeMap<String, Kind>,
    calls: BTreeMap<String, u64>,
    seconds: BTreeMap<u64, Second>,
    writes: Vec<Write>,
    reads: Vec<Read>,
}

/// The data plane, shared by every invocation, device and check of a world.
#[derive(Clone)]
pub struct SimShadows {
    state: Arc<Mutex<State>>,
    dice: Dice,
    trace: Trace,
    /// `UpdateThingShadow`'s and `GetThingShadow`'s account quotas (requests a second).
    update_quota: u32,
    read_quota: u32,
    /// The longest bake of the world's rollouts: late devices answer past it.
    bake_ms: u64,
}

impl SimShadows {
    pub fn new(dice: Dice, trace: Trace, update_quota: u32, read_quota: u32, bake_ms: u64) -> Self {
        Self { state: Arc::default(), dice, trace, update_quota, read_quota, bake_ms }
    }

    /// A thing with a device of `kind`, its shadow holding `desired` (also reported).
    pub fn add(&self, thing: &str, kind: Kind, desired: &Value) {
        let mut shadow = Shadow::default();
        if let Value::Object(d) = desired {
            shadow.desired = d.clone();
            shadow.reported = d.clone();
            shadow.metadata = stamps(desired, 0).as_object().cloned().unwrap_or_default();
            shadow.version = 1;
        }
        if let Ok(mut s) = self.state.lock() {
            s.shadows.insert(thing.to_owned(), shadow);
            s.kinds.insert(thing.to_owned(), kind);
        }
    }

    pub fn kind(&self, thing: &str) -> Option<Kind> {
        self.state.lock().ok().and_then(|s| s.kinds.get(thing).copied())
    }

    /// Every accepted write so far, in order.
    pub fn writes(&self) -> Vec<Write> {
        self.state.lock().map(|s| s.writes.clone()).unwrap_or_default()
    }

    /// Every answered read so far, in order.
    pub fn reads(&self) -> Vec<Read> {
        self.state.lock().map(|s| s.reads.clone()).unwrap_or_default()
    }

    /// The requests of every simulated second so far.
    pub fn seconds(&self) -> BTreeMap<u64, Second> {
        self.state.lock().map(|s| s.seconds.clone()).unwrap_or_default()
    }

    /// A thing's `desired` and `reported` now.
    pub fn document(&self, thing: &str) -> Option<(Value, Value)> {
        let s = self.state.lock().ok()?;
        let shadow = s.shadows.get(thing)?;
        Some((Value::Object(shadow.desired.clone()), Value::Object(shadow.reported.clone())))
    }

    pub fn update_quota(&self) -> u32 {
        self.update_quota
    }

    fn count(&self, key: &str) -> u64 {
        self.state
            .lock()
            .map(|mut s| {
                let n = s.calls.entry(key.to_owned()).or_default();
                *n += 1;
                *n
            })
            .unwrap_or(0)
    }

    /// A request's latency before and after it takes effect.
    async fn latency(&self, key: &str, n: u64) {
        tokio::time::sleep(Duration::from_millis(self.dice.between(key, n, 2, 40))).await;
    }

    fn second(&self) -> u64 {
        self.trace.now() / 1000
    }

    /// Counts a request in the current second; `Err` (429) over the quota.
    fn admit(&self, operation: &'static str, update: bool) -> Result<(), ServiceError> {
        let second = self.second();
        let quota = if update { self.update_quota } else { self.read_quota };
        let mut s = self.state.lock().map_err(|_| poisoned(operation))?;
        let counts = s.seconds.entry(second).or_default();
        let (asked, accepted) = if update {
            (&mut counts.updates_asked, &mut counts.updates_accepted)
        } else {
            (&mut counts.reads_asked, &mut counts.reads_accepted)
        };
        *asked += 1;
        if *accepted >= quota {
            return Err(ServiceError::new(
                operation,
                FaultKind::Throttled,
                Some("ThrottlingException".into()),
                "Rate exceeded",
            ));
        }
        *accepted += 1;
        Ok(())
    }

    /// Applies an update's `state` (`desired` and `reported` sections) at `version` (if given) as `token`.
    fn apply(&self, thing: &str, token: &str, state: &Value, version: Option<u64>) -> Result<(), ServiceError> {
        let now_s = self.trace.epoch_now_ms() / 1000;
        let mut s = self.state.lock().map_err(|_| poisoned("UpdateThingShadow"))?;
        let shadow = s.shadows.entry(thing.to_owned()).or_default();
        if let Some(expected) = version
            && expected != shadow.version
        {
            return Err(ServiceError::new(
                "UpdateThingShadow",
                FaultKind::Rejected,
                Some("ConflictException".into()),
                format!("Version conflict: the shadow is at {}, the update expected {expected}", shadow.version),
            ));
        }
        let before = Value::Object(shadow.desired.clone());
        let mut overwrote = Vec::new();
        if let Some(Value::Object(patch)) = state.get("desired") {
            let mut set = Vec::new();
            devices::leaves(&Value::Object(patch.clone()), &mut Vec::new(), &mut set);
            for (path, _) in &set {
                let key = path.join(".");
                overwrote.push((key.clone(), shadow.writers.get(&key).cloned()));
                shadow.writers.insert(key, token.to_owned());
            }
            merge(&mut shadow.desired, &mut shadow.metadata, patch, now_s);
        } else if state.get("desired").is_some_and(Value::is_null) {
            shadow.desired.clear();
            shadow.metadata.clear();
            shadow.writers.clear();
        }
        if let Some(Value::Object(patch)) = state.get("reported") {
            let mut unused = Map::new();
            merge(&mut shadow.reported, &mut unused, patch, now_s);
        }
        shadow.version += 1;
        let after = Value::Object(shadow.desired.clone());
        let changed = before != after;
        let write = Write {
            at_ms: self.trace.now(),
            invocation: invocation(),
            thing: thing.to_owned(),
            token: token.to_owned(),
            state: state.clone(),
            before,
            after,
            overwrote,
        };
        s.writes.push(write);
        let kind = s.kinds.get(thing).copied();
        drop(s);
        if token != DEVICE {
            self.trace.line(format!("{thing}: {token} wrote {state} (invocation {})", invocation()));
        }
        if changed
            && let Some(kind) = kind
            && token != DEVICE
        {
            self.device_answers(thing, kind);
        }
        Ok(())
    }

    /// The thing's device answers the change of its `desired`, after its delay.
    fn device_answers(&self, thing: &str, kind: Kind) {
        let n = self.count(&format!("device:{thing}"));
        let (low, high) = devices::delay_ms(kind, self.bake_ms);
        let delay = Duration::from_millis(self.dice.between(&format!("device:{thing}"), n, low, high));
        let (shadows, thing) = (self.clone(), thing.to_owned());
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let Some((desired, reported)) = shadows.document(&thing) else { return };
            for state in devices::answer(kind, &desired, &reported) {
                shadows.trace.line(format!("{thing}: device ({kind:?}) wrote {state}"));
                let _ = shadows.apply(&thing, DEVICE, &state, None);
            }
        });
    }
}

impl Shadows for SimShadows {
    async fn desired(
        &self,
        thing: &ThingName,
        _shadow: Option<&ShadowName>,
    ) -> Result<Option<DesiredState>, ServiceError> {
        let key = format!("{thing}:{}", invocation());
        let n = self.count(&key);
        self.latency(&key, n).await;
        self.admit("GetThingShadow", false)?;
        let found = {
            let mut s = self.state.lock().map_err(|_| poisoned("GetThingShadow"))?;
            let found = s.shadows.get(thing.as_str()).cloned();
            let desired = Value::Object(found.as_ref().map(|f| f.desired.clone()).unwrap_or_default());
            let read = Read { at_ms: self.trace.now(), invocation: invocation(), thing: thing.to_string(), desired };
            s.reads.push(read);
            drop(s);
            self.trace.line(format!("{thing}: read (invocation {})", invocation()));
            found
        };
        self.latency(&key, n + 1_000_000).await;
        Ok(found.map(|s| DesiredState {
            state: Value::Object(s.desired),
            metadata: Value::Object(s.metadata),
            version: Some(s.version),
            reported: Value::Object(s.reported),
        }))
    }

    async fn update(
        &self,
        thing: &ThingName,
        _shadow: Option<&ShadowName>,
        document: &str,
    ) -> Result<(), ServiceError> {
        // Keyed by thing and invocation: invocations that reach one thing together do not change each other's draws.
        let key = format!("{thing}:{}", invocation());
        let n = self.count(&key);
        self.latency(&key, n).await;
        self.admit("UpdateThingShadow", true)?;
        let document: Value = serde_json::from_str(document).map_err(|e| {
            ServiceError::new("UpdateThingShadow", FaultKind::Rejected, Some("InvalidRequestException".into()), e)
        })?;
        let token = document.get("clientToken").and_then(Value::as_str).unwrap_or_default().to_owned();
        let state = document.get("state").cloned().unwrap_or(Value::Null);
        self.apply(thing.as_str(), &token, &state, document.get("version").and_then(Value::as_u64))?;
        // The answer may be lost on its way back: the invocation may die here, the update applied.
        self.latency(&key, n + 1_000_000).await;
        Ok(())
    }
}

fn poisoned(operation: &'static str) -> ServiceError {
    ServiceError::new(operation, FaultKind::Transient, None, "the simulated service's state is poisoned")
}

/// Merges `patch` into `into` as AWS does (objects key by key, `null` deletes, anything else replaces), stamping
/// each leaf set in `metadata` with `now_s`.
fn merge(into: &mut Map<String, Value>, metadata: &mut Map<String, Value>, patch: &Map<String, Value>, now_s: u64) {
    for (key, value) in patch {
        match value {
            Value::Null => {
                into.remove(key);
                metadata.remove(key);
            }
            Value::Object(fields) => {
                let target = into.entry(key.clone()).or_insert_with(|| Value::Object(Map::new()));
                if !target.is_object() {
                    *target = Value::Object(Map::new());
                }
                let meta = metadata.entry(key.clone()).or_insert_with(|| Value::Object(Map::new()));
                if !meta.is_object() || meta.get("timestamp").is_some() {
                    *meta = Value::Object(Map::new());
                }
                if let (Value::Object(t), Value::Object(m)) = (target, meta) {
                    merge(t, m, fields, now_s);
                }
                if into.get(key).and_then(Value::as_object).is_some_and(Map::is_empty) {
                    into.remove(key);
                    metadata.remove(key);
                }
            }
            other => {
                into.insert(key.clone(), other.clone());
                metadata.insert(key.clone(), serde_json::json!({"timestamp": now_s}));
            }
        }
    }
}

fn stamps(value: &Value, t: u64) -> Value {
    match value {
        Value::Object(fields) => Value::Object(fields.iter().map(|(k, v)| (k.clone(), stamps(v, t))).collect()),
        _ => serde_json::json!({"timestamp": t}),
    }
}
