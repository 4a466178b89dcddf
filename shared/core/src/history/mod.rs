//! Shadow events as the IoT Rule delivers them, and the history records they become.
//!
//! The rule is `SELECT *, topic() AS topic, timestamp() AS receivedAt FROM '<shadow topic>'`; a rule may instead
//! select `topic(3) AS thingName` (and, on named-shadow topics only, `topic(6) AS shadowName`). The payload itself
//! never names the thing.

#[cfg(test)]
mod model_tests;
pub mod point;
pub mod state;

use std::time::Duration;

use serde_json::{Map, Value};

use crate::names::{ShadowName, ShadowRef, ThingName};
use crate::retry::{Backoff, GaveUp, retry_until};
use crate::service::ServiceError;
use crate::topic::{CLASSIC_SIXTH_LEVELS, ShadowMessage, ShadowTopic};

/// What a history item records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    Update,
    Snapshot,
    Delete,
}

impl RecordKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Update => "update",
            Self::Snapshot => "snapshot",
            Self::Delete => "delete",
        }
    }

    /// Orders kinds that share a timestamp and a version: the update, then its snapshot, then a delete.
    fn rank(self) -> u8 {
        match self {
            Self::Update => 1,
            Self::Snapshot => 2,
            Self::Delete => 3,
        }
    }
}

/// How shadow-history turns events into records; read once from the environment by the function.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordOptions {
    /// Items expire this many days after the event's timestamp (DynamoDB TTL, epoch seconds).
    pub retention_days: Option<u32>,
    /// Keep the shadow's `metadata` (per-key timestamps) as well.
    pub store_metadata: bool,
}

/// One recorded shadow event: one item of the history table.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryRecord {
    pub shadow: ShadowRef,
    pub version: u64,
    /// Epoch seconds, from the payload.
    pub timestamp: u64,
    pub kind: RecordKind,
    /// `desired` / `reported` as the message carried them (absent for a delete; `Value::Null` for `"state": null`).
    pub state: Option<Value>,
    pub client_token: Option<String>,
    /// Epoch milliseconds, from the rule's `timestamp()`.
    pub received_at: Option<u64>,
    pub expires_at: Option<u64>,
    pub metadata: Option<Value>,
    /// For a snapshot: the version of the document it replaced.
    pub previous_version: Option<u64>,
    /// For a snapshot: the document it replaced (`previous.state`), so that the document before this event stays
    /// known for as long as this item is kept, even after the item of the version before has expired.
    pub previous_state: Option<Value>,
}

const SECONDS_PER_DAY: u64 = 86_400;

impl HistoryRecord {
    /// `<thing>#<shadow>`: thing names cannot contain `#`, so the classic shadow (`<thing>#`) cannot collide.
    pub fn partition_key(&self) -> String {
        partition_key(&self.shadow)
    }

    /// `<timestamp, 10 digits>#<version, 20 digits>#<rank>-<kind>`.
    ///
    /// Sorts by time, then version; a redelivered event gets the same key (so it is a duplicate), while a version
    /// that repeats after the shadow was re-created (numbering restarts after 48 h) comes with a later timestamp
    /// and so gets a new key.
    pub fn sort_key(&self) -> String {
        format!("{}{:020}#{}-{}", time_prefix(self.timestamp), self.version, self.kind.rank(), self.kind.as_str())
    }
}

pub fn partition_key(shadow: &ShadowRef) -> String {
    format!("{}#{}", shadow.thing, shadow.shadow_name())
}

/// The sort-key prefix of every event at `timestamp` (epoch seconds), for time-range queries:
/// `sk BETWEEN time_prefix(from) AND time_prefix(to + 1)` covers `from..=to`.
pub fn time_prefix(timestamp: u64) -> String {
    format!("{timestamp:010}#")
}

/// Why an event cannot be recorded. Always final: the same event will fail the same way.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{field}` {reason}")]
pub struct EventError {
    pub field: String,
    pub reason: String,
}

impl EventError {
    fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self { field: field.into(), reason: reason.into() }
    }
}

/// Builds the record of one event, or says which field is wrong and why.
pub fn record_from_event(event: &Value, options: &RecordOptions) -> Result<HistoryRecord, EventError> {
    let Value::Object(fields) = event else {
        return Err(EventError::new("event", format!("must be a JSON object, found {}", type_name(event))));
    };
    let (shadow, message) = locate(fields)?;
    let timestamp =
        unsigned(fields, "timestamp", "timestamp")?.ok_or_else(|| EventError::new("timestamp", "is missing"))?;
    let client_token = match fields.get("clientToken") {
        None | Some(Value::Null) => None,
        Some(Value::String(token)) => Some(token.clone()),
        Some(other) => {
            return Err(EventError::new("clientToken", format!("must be a string, found {}", type_name(other))));
        }
    };
    let received_at = unsigned(fields, "receivedAt", "receivedAt")?;

    let (kind, version, state, metadata, (previous_version, previous_state)) = match message {
        ShadowMessage::UpdateAccepted => {
            let version = required_version(fields, "version")?;
            let state = state_of(fields.get("state"), "state")?;
            (RecordKind::Update, version, Some(state), fields.get("metadata"), (None, None))
        }
        ShadowMessage::UpdateDocuments => {
            let current = object(fields, "current")?;
            let previous = match fields.get("previous") {
                None | Some(Value::Null) => (None, None),
                Some(Value::Object(previous)) => (
                    unsigned(previous, "version", "previous.version")?,
                    match previous.get("state") {
                        None | Some(Value::Null) => None,
                        state => Some(state_of(state, "previous.state")?),
                    },
                ),
                Some(other) => {
                    return Err(EventError::new("previous", format!("must be an object, found {}", type_name(other))));
                }
            };
            let version = required_version(current, "current.version")?;
            let state = state_of(current.get("state"), "current.state")?;
            (RecordKind::Snapshot, version, Some(state), current.get("metadata"), previous)
        }
        ShadowMessage::DeleteAccepted => {
            (RecordKind::Delete, required_version(fields, "version")?, None, None, (None, None))
        }
    };

    Ok(HistoryRecord {
        shadow,
        version,
        timestamp,
        kind,
        state,
        client_token,
        received_at,
        expires_at: options.retention_days.map(|days| timestamp.saturating_add(u64::from(days) * SECONDS_PER_DAY)),
        metadata: if options.store_metadata { metadata.cloned() } else { None },
        previous_version,
        previous_state,
    })
}

/// Thing, shadow and message: from `topic`, else from `thingName` / `shadowName` and the payload's shape.
fn locate(fields: &Map<String, Value>) -> Result<(ShadowRef, ShadowMessage), EventError> {
    let from_topic = match fields.get("topic") {
        None | Some(Value::Null) => None,
        Some(Value::String(topic)) => {
            let parsed = ShadowTopic::parse(topic).map_err(|e| EventError::new("topic", format!("{topic:?} {e}")))?;
            Some(parsed)
        }
        Some(other) => {
            return Err(EventError::new("topic", format!("must be a string, found {}", type_name(other))));
        }
    };
    let thing = match fields.get("thingName") {
        None | Some(Value::Null) => None,
        Some(Value::String(name)) => {
            Some(ThingName::parse(name.as_str()).map_err(|e| EventError::new("thingName", format!("{name:?} {e}")))?)
        }
        Some(other) => {
            return Err(EventError::new("thingName", format!("must be a string, found {}", type_name(other))));
        }
    };
    let shadow = match fields.get("shadowName") {
        None | Some(Value::Null) => None,
        Some(Value::String(name)) if name.is_empty() => None,
        Some(Value::String(name)) => {
            Some(ShadowName::parse(name.as_str()).map_err(|e| EventError::new("shadowName", format!("{name:?} {e}")))?)
        }
        Some(other) => {
            return Err(EventError::new("shadowName", format!("must be a string, found {}", type_name(other))));
        }
    };

    match (from_topic, thing) {
        // The topic names the shadow itself; a `shadowName` next to it (topic(6)) is not needed.
        (Some(topic), thing) => {
            if let Some(thing) = thing.filter(|t| *t != topic.shadow.thing) {
                return Err(EventError::new(
                    "thingName",
                    format!("{:?} disagrees with the topic's thing {:?}", thing.as_str(), topic.shadow.thing.as_str()),
                ));
            }
            Ok((topic.shadow, topic.message))
        }
        (None, Some(thing)) => {
            if let Some(name) = shadow.as_ref().filter(|s| CLASSIC_SIXTH_LEVELS.contains(&s.as_str())) {
                return Err(EventError::new(
                    "shadowName",
                    format!(
                        "{name:?} is ambiguous: topic(6) of the classic shadow's topic \
                         $aws/things/{thing}/shadow/update/{name} is {name:?} too, so this may be the classic \
                         shadow or a named shadow called {name:?}; select topic() AS topic in the rule (or select \
                         topic(6) AS shadowName only from named-shadow topics, $aws/things/+/shadow/name/+/...)"
                    ),
                ));
            }
            Ok((ShadowRef { thing, shadow }, message_from_shape(fields)?))
        }
        (None, None) => Err(EventError::new(
            "topic",
            "is missing, and so is `thingName`: the rule must select topic() AS topic (or topic(3) AS thingName)",
        )),
    }
}

/// The fields of a `delete/accepted` payload.
const DELETE_FIELDS: [&str; 3] = ["version", "timestamp", "clientToken"];
/// The fields a rule adds to the payload.
const RULE_FIELDS: [&str; 4] = ["topic", "thingName", "shadowName", "receivedAt"];

/// The message, from the payload's shape when no topic says it: `current` is an `update/documents`, `state` an
/// `update/accepted`. Only the exact shape of a `delete/accepted` (`version` and `timestamp`, perhaps `clientToken`,
/// and nothing else but the rule's fields) is a delete: anything else without a state is refused, never recorded as
/// a tombstone.
fn message_from_shape(fields: &Map<String, Value>) -> Result<ShadowMessage, EventError> {
    if fields.contains_key("current") {
        return Ok(ShadowMessage::UpdateDocuments);
    }
    if fields.contains_key("state") {
        return Ok(ShadowMessage::UpdateAccepted);
    }
    let missing: Vec<&str> = ["version", "timestamp"].into_iter().filter(|k| !fields.contains_key(*k)).collect();
    let extra: Vec<&str> =
        fields.keys().map(String::as_str).filter(|k| !DELETE_FIELDS.contains(k) && !RULE_FIELDS.contains(k)).collect();
    if missing.is_empty() && extra.is_empty() {
        return Ok(ShadowMessage::DeleteAccepted);
    }
    let why = if extra.is_empty() {
        format!("it has no `{}`", missing.join("`, `"))
    } else {
        format!("it also has `{}`", extra.join("`, `"))
    };
    Err(EventError::new(
        "state",
        format!(
            "is missing, and without a topic only a delete/accepted ({{\"version\":N,\"timestamp\":S}} and \
             nothing else) may have no state: {why}"
        ),
    ))
}

fn object<'a>(fields: &'a Map<String, Value>, field: &str) -> Result<&'a Map<String, Value>, EventError> {
    match fields.get(field) {
        Some(Value::Object(inner)) => Ok(inner),
        None => Err(EventError::new(field, "is missing")),
        Some(other) => Err(EventError::new(field, format!("must be an object, found {}", type_name(other)))),
    }
}

fn required_version(fields: &Map<String, Value>, name: &str) -> Result<u64, EventError> {
    let key = name.rsplit('.').next().unwrap_or(name);
    unsigned(fields, key, name)?.ok_or_else(|| EventError::new(name, "is missing"))
}

/// An optional non-negative integer field.
fn unsigned(fields: &Map<String, Value>, key: &str, name: &str) -> Result<Option<u64>, EventError> {
    match fields.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .map(Some)
            .ok_or_else(|| EventError::new(name, format!("must be a non-negative integer, found {n}"))),
        Some(other) => {
            Err(EventError::new(name, format!("must be a non-negative integer, found {}", type_name(other))))
        }
    }
}

/// `state` must be an object whose `desired` and `reported` are objects or null; `"state": null` is kept as null.
fn state_of(state: Option<&Value>, name: &str) -> Result<Value, EventError> {
    match state {
        None => Err(EventError::new(name, "is missing")),
        Some(Value::Null) => Ok(Value::Null),
        Some(Value::Object(sections)) => {
            for section in ["desired", "reported"] {
                match sections.get(section) {
                    None | Some(Value::Null) | Some(Value::Object(_)) => {}
                    Some(other) => {
                        return Err(EventError::new(
                            format!("{name}.{section}"),
                            format!("must be an object or null, found {}", type_name(other)),
                        ));
                    }
                }
            }
            Ok(Value::Object(sections.clone()))
        }
        Some(other) => Err(EventError::new(name, format!("must be an object, found {}", type_name(other)))),
    }
}

pub fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Whether an event was new to the history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    Written,
    /// The same event was recorded before (a redelivery); the stored item was left as it was.
    Duplicate,
}

impl PutOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Written => "written",
            Self::Duplicate => "duplicate",
        }
    }
}

/// Where history records go. Implemented over DynamoDB in `shadow-aws`, in memory in tests.
pub trait HistoryStore: Sync {
    /// Writes `record` unless an item with its keys exists; never changes an existing item.
    fn put_new(&self, record: &HistoryRecord) -> impl Future<Output = Result<PutOutcome, ServiceError>> + Send;
}

/// Writes one record, retrying throttles and passing faults while `deadline` (less `reserve`) allows.
pub async fn store_record(
    store: &impl HistoryStore,
    record: &HistoryRecord,
    deadline: tokio::time::Instant,
    reserve: Duration,
) -> Result<PutOutcome, GaveUp<ServiceError>> {
    retry_until(deadline, reserve, Backoff::default(), || store.put_new(record), |e| {
        tracing::debug!(thing = %record.shadow.thing, version = record.version, error = %e, "retrying history write");
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(event: Value) -> HistoryRecord {
        record_from_event(&event, &RecordOptions::default()).expect("recording the event")
    }

    fn rejected(event: Value) -> EventError {
        match record_from_event(&event, &RecordOptions::default()) {
            Ok(r) => panic!("accepted {r:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn seed_update_on_named_shadow() {
        let r = record(json!({
            "state": {"desired": {"settings": {"mode": 1, "temp": 20}, "firmware_url": "https://s3.com/firmware.bin"}, "reported": null},
            "metadata": {"desired": {"settings": {"mode": {"timestamp": 1764210000}}}},
            "version": 7, "timestamp": 1764210000, "clientToken": "push-1",
            "topic": "$aws/things/Test-Device/shadow/name/test1/update/accepted", "receivedAt": 1764210000123u64
        }));
        assert_eq!(r.shadow.thing.as_str(), "Test-Device");
        assert_eq!(r.shadow.shadow_name(), "test1");
        assert_eq!((r.version, r.timestamp, r.kind), (7, 1764210000, RecordKind::Update));
        assert_eq!(r.client_token.as_deref(), Some("push-1"));
        assert_eq!(r.received_at, Some(1764210000123));
        assert_eq!(r.state.as_ref().and_then(|s| s.get("reported")), Some(&Value::Null));
        assert_eq!(r.metadata, None, "metadata is kept only when asked for");
        assert_eq!(r.expires_at, None);
        assert_eq!(r.partition_key(), "Test-Device#test1");
        assert_eq!(r.sort_key(), "1764210000#00000000000000000007#1-update");
    }

    #[test]
    fn classic_shadow_and_options() {
        let options = RecordOptions { retention_days: Some(30), store_metadata: true };
        let r = record_from_event(
            &json!({"state": {"reported": {"t": 1}}, "metadata": {"reported": {"t": {"timestamp": 100}}}, "version": 1,
                    "timestamp": 100, "topic": "$aws/things/d1/shadow/update/accepted"}),
            &options,
        )
        .expect("recording the event");
        assert_eq!(r.shadow.shadow_name(), "");
        assert_eq!(r.partition_key(), "d1#");
        assert_eq!(r.expires_at, Some(100 + 30 * 86_400));
        assert!(r.metadata.is_some());
        assert_eq!(r.client_token, None);
    }

    #[test]
    fn documents_become_snapshots() {
        let r = record(json!({
            "previous": {"state": {"desired": {"a": 1}}, "metadata": {}, "version": 4},
            "current": {"state": {"desired": {"a": 2}}, "metadata": {}, "version": 5},
            "timestamp": 200, "clientToken": "c", "topic": "$aws/things/d1/shadow/name/cfg/update/documents"
        }));
        assert_eq!((r.kind, r.version, r.previous_version), (RecordKind::Snapshot, 5, Some(4)));
        assert_eq!(r.state, Some(json!({"desired": {"a": 2}})));
    }

    #[test]
    fn delete_is_a_tombstone() {
        let r =
            record(json!({"version": 9, "timestamp": 300, "topic": "$aws/things/d1/shadow/name/cfg/delete/accepted"}));
        assert_eq!((r.kind, r.version, r.state.clone()), (RecordKind::Delete, 9, None));
        assert!(r.sort_key().ends_with("#3-delete"));
    }

    #[test]
    fn thing_name_instead_of_topic() {
        let update = record(
            json!({"state": {"desired": {"a": 1}}, "version": 1, "timestamp": 1, "thingName": "d1", "shadowName": "cfg"}),
        );
        assert_eq!((update.shadow.shadow_name(), update.kind), ("cfg", RecordKind::Update));
        let classic = record(json!({"state": {"desired": {"a": 1}}, "version": 1, "timestamp": 1, "thingName": "d1"}));
        assert_eq!(classic.shadow.shadow, None);
        let delete = record(json!({"version": 3, "timestamp": 1, "thingName": "d1"}));
        assert_eq!(delete.kind, RecordKind::Delete);
        let snapshot = record(json!({"current": {"state": {}, "version": 2}, "timestamp": 1, "thingName": "d1"}));
        assert_eq!(snapshot.kind, RecordKind::Snapshot);
    }

    #[test]
    fn thing_name_rules_never_take_a_classic_topic_level_for_a_shadow_name() {
        // `SELECT *, topic(3) AS thingName, topic(6) AS shadowName` on `$aws/things/d1/shadow/update/accepted`
        // gives `shadowName: "accepted"`: the classic shadow, or a named shadow called `accepted`?
        for (level, event) in [
            ("accepted", json!({"state": {"reported": {"a": 1}}, "version": 1, "timestamp": 1})),
            ("documents", json!({"current": {"state": {}, "version": 2}, "timestamp": 1})),
            ("accepted", json!({"version": 3, "timestamp": 1})),
            ("delta", json!({"state": {"a": 1}, "version": 4, "timestamp": 1})),
            ("rejected", json!({"code": 409, "message": "Version conflict", "timestamp": 1})),
        ] {
            let mut event = event;
            event["thingName"] = json!("d1");
            event["shadowName"] = json!(level);
            let e = rejected(event.clone());
            assert_eq!(e.field, "shadowName", "{event}: {e}");
            assert!(e.reason.contains("ambiguous") && e.reason.contains("topic()"), "{event}: {e}");
        }
        // A named shadow whose name is no classic topic level, and the classic shadow without `shadowName`.
        let named =
            record(json!({"state": {}, "version": 1, "timestamp": 1, "thingName": "d1", "shadowName": "update"}));
        assert_eq!(named.partition_key(), "d1#update");
        let classic = record(json!({"state": {}, "version": 1, "timestamp": 1, "thingName": "d1"}));
        assert_eq!(classic.partition_key(), "d1#");
        // With the topic, the topic decides: `shadowName` from topic(6) next to it changes nothing.
        let with_topic = record(json!({"state": {}, "version": 1, "timestamp": 1, "thingName": "d1",
            "shadowName": "accepted", "topic": "$aws/things/d1/shadow/update/accepted"}));
        assert_eq!(with_topic.partition_key(), "d1#");
    }

    #[test]
    fn without_a_topic_only_a_delete_shape_is_a_tombstone() {
        let deletes = [
            json!({"version": 3, "timestamp": 1, "thingName": "d1"}),
            json!({"version": 3, "timestamp": 1, "clientToken": "c", "receivedAt": 5,
                   "thingName": "d1", "shadowName": "cfg"}),
        ];
        for event in deletes {
            assert_eq!(record(event).kind, RecordKind::Delete);
        }
        let not_deletes = [
            json!({"reported": {"a": 1}, "version": 3, "timestamp": 1, "thingName": "d1"}),
            json!({"metadata": {}, "version": 3, "timestamp": 1, "thingName": "d1", "shadowName": "cfg"}),
            json!({"State": {"desired": {"a": 1}}, "version": 3, "timestamp": 1, "thingName": "d1"}),
            json!({"code": 400, "message": "Missing required node: state", "timestamp": 1, "thingName": "d1"}),
            json!({"timestamp": 1, "thingName": "d1"}),
            json!({"version": 3, "thingName": "d1"}),
        ];
        for event in not_deletes {
            let e = rejected(event.clone());
            assert_eq!(e.field, "state", "{event}: {e}");
            assert!(e.reason.contains("is missing") && e.reason.contains("delete/accepted"), "{event}: {e}");
        }
    }

    #[test]
    fn sort_keys_order_chronologically_and_tell_resets_apart() {
        let at = |ts: u64, v: u64| {
            record(json!({"state": {}, "version": v, "timestamp": ts, "topic": "$aws/things/d/shadow/update/accepted"}))
                .sort_key()
        };
        assert!(at(100, 9) < at(100, 10), "versions within a second");
        assert!(at(100, 99) < at(101, 1), "time before version");
        assert!(at(9, 1) < at(10, 1), "zero-padded");
        assert_ne!(at(100, 1), at(100 + 2 * 86_400, 1), "a version reset after 48 h is a new event");
        let from = time_prefix(100);
        let to = time_prefix(101);
        assert!(from.as_str() <= at(100, 5).as_str() && at(100, 5).as_str() < to.as_str());
    }

    #[test]
    fn malformed_events_name_the_field() {
        let topic = "$aws/things/d1/shadow/update/accepted";
        let cases: Vec<(Value, &str, &str)> = vec![
            (json!([1, 2]), "event", "must be a JSON object, found an array"),
            (json!("text"), "event", "must be a JSON object, found a string"),
            (json!({"state": {}, "version": 1, "timestamp": 1}), "topic", "is missing"),
            (
                json!({"state": {}, "version": 1, "timestamp": 1, "topic": "sensors/d1"}),
                "topic",
                "not a Device Shadow topic",
            ),
            (
                json!({"state": {}, "version": 1, "timestamp": 1, "topic": "$aws/things/d1/shadow/update/delta"}),
                "topic",
                "not one that is recorded",
            ),
            (json!({"state": {}, "version": 1, "timestamp": 1, "topic": 5}), "topic", "must be a string"),
            (json!({"state": {}, "timestamp": 1, "topic": topic}), "version", "is missing"),
            (
                json!({"state": {}, "version": 1.5, "timestamp": 1, "topic": topic}),
                "version",
                "non-negative integer, found 1.5",
            ),
            (
                json!({"state": {}, "version": -1, "timestamp": 1, "topic": topic}),
                "version",
                "non-negative integer, found -1",
            ),
            (json!({"state": {}, "version": "1", "timestamp": 1, "topic": topic}), "version", "found a string"),
            (json!({"state": {}, "version": 1, "topic": topic}), "timestamp", "is missing"),
            (
                json!({"state": "on", "version": 1, "timestamp": 1, "topic": topic}),
                "state",
                "must be an object, found a string",
            ),
            (json!({"version": 1, "timestamp": 1, "topic": topic}), "state", "is missing"),
            (
                json!({"state": {"desired": [1]}, "version": 1, "timestamp": 1, "topic": topic}),
                "state.desired",
                "object or null",
            ),
            (
                json!({"state": {}, "version": 1, "timestamp": 1, "topic": topic, "clientToken": 7}),
                "clientToken",
                "must be a string",
            ),
            (
                json!({"state": {}, "version": 1, "timestamp": 1, "topic": topic, "receivedAt": "now"}),
                "receivedAt",
                "non-negative integer",
            ),
            (json!({"state": {}, "version": 1, "timestamp": 1, "thingName": "bad/name"}), "thingName", "contains '/'"),
            (
                json!({"state": {}, "version": 1, "timestamp": 1, "thingName": "d1", "shadowName": "a b"}),
                "shadowName",
                "contains ' '",
            ),
            (
                json!({"state": {}, "version": 1, "timestamp": 1, "thingName": "d2", "topic": topic}),
                "thingName",
                "disagrees",
            ),
            (
                json!({"version": 1, "timestamp": 1, "topic": "$aws/things/d1/shadow/update/documents"}),
                "current",
                "is missing",
            ),
            (
                json!({"current": {"state": {}}, "timestamp": 1, "topic": "$aws/things/d1/shadow/update/documents"}),
                "current.version",
                "is missing",
            ),
            (
                json!({"current": {"state": {}, "version": 2}, "previous": {"version": "x"}, "timestamp": 1, "topic": "$aws/things/d1/shadow/update/documents"}),
                "previous.version",
                "non-negative integer",
            ),
        ];
        for (event, field, reason) in cases {
            let e = rejected(event.clone());
            assert_eq!(e.field, field, "{event}: {e}");
            assert!(e.reason.contains(reason), "{event}: {e} should say {reason:?}");
        }
    }
}

#[cfg(test)]
mod sample_events {
    use super::*;
    use std::path::Path;

    fn sample(name: &str) -> Value {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../events/history").join(name);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    #[test]
    fn every_sample_event_is_recorded_as_its_kind() {
        let cases = [
            ("update-accepted-named.json", "Test-Device#test1", RecordKind::Update, 1),
            ("update-accepted-classic.json", "Test-Device#", RecordKind::Update, 12),
            ("update-documents.json", "Test-Device#test1", RecordKind::Snapshot, 2),
            ("delete-accepted.json", "Test-Device#test1", RecordKind::Delete, 3),
            ("update-accepted-thing-name.json", "Test-Device#test1", RecordKind::Update, 4),
            ("delete-accepted-thing-name.json", "Test-Device#test1", RecordKind::Delete, 5),
            ("update-accepted-classic-thing-name.json", "Test-Device#", RecordKind::Update, 13),
        ];
        for (name, pk, kind, version) in cases {
            let r =
                record_from_event(&sample(name), &RecordOptions::default()).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!((r.partition_key().as_str(), r.kind, r.version), (pk, kind, version), "{name}");
        }
        let invalid = [
            ("invalid-no-topic.json", "topic"),
            ("update-accepted-classic-topic6.json", "shadowName"),
            ("invalid-no-state-thing-name.json", "state"),
            ("invalid-update-rejected-thing-name.json", "state"),
        ];
        for (name, field) in invalid {
            match record_from_event(&sample(name), &RecordOptions::default()) {
                Ok(r) => panic!("{name}: recorded as {r:?}"),
                Err(e) => assert_eq!(e.field, field, "{name}: {e}"),
            }
        }
    }

    #[test]
    fn sqs_sample_bodies_are_events() {
        let batch = sample("sqs-batch.json");
        let records = batch["Records"].as_array().cloned().unwrap_or_default();
        assert_eq!(records.len(), 2);
        for record in records {
            let body: Value =
                serde_json::from_str(record["body"].as_str().unwrap_or_default()).expect("the body is JSON");
            assert!(record_from_event(&body, &RecordOptions::default()).is_ok());
        }
    }
}
