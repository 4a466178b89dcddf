//! The Device Shadow service's MQTT messages, as AWS documents them (developerguide `device-shadow-mqtt`,
//! `device-shadow-document`, `device-shadow-error-messages`): which topic asks for what, how an update request is
//! checked, and the payloads of `accepted`, `rejected` and `delta`. Pure: the rules stand-in (`rules.rs`) carries
//! the requests out on moto's shadows and publishes what this module builds.

use serde_json::{Map, Value};

use crate::rules::ShadowKey;

/// What a device asks for on `.../get`, `.../update` or `.../delete`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Get,
    Update,
    Delete,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "get",
            Self::Update => "update",
            Self::Delete => "delete",
        }
    }
}

/// The topic filters the service subscribes to: the three requests, on classic and on named shadows.
pub const REQUEST_FILTERS: [&str; 6] = [
    "$aws/things/+/shadow/get",
    "$aws/things/+/shadow/update",
    "$aws/things/+/shadow/delete",
    "$aws/things/+/shadow/name/+/get",
    "$aws/things/+/shadow/name/+/update",
    "$aws/things/+/shadow/name/+/delete",
];

fn is_name(text: &str, extra: &[char]) -> bool {
    !text.is_empty()
        && text.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '_' | '-') || extra.contains(&c))
}

/// A request topic -> the shadow and what is asked; `None` for any other topic (the service's own answers
/// included) and for names AWS would not take.
pub fn request_of(topic: &str) -> Option<(ShadowKey, Operation)> {
    let parts: Vec<&str> = topic.split('/').collect();
    let (thing, name, operation) = match parts.as_slice() {
        ["$aws", "things", thing, "shadow", op] => (*thing, None, *op),
        ["$aws", "things", thing, "shadow", "name", name, op] => (*thing, Some(*name), *op),
        _ => return None,
    };
    let operation = match operation {
        "get" => Operation::Get,
        "update" => Operation::Update,
        "delete" => Operation::Delete,
        _ => return None,
    };
    if thing.len() > 128 || !is_name(thing, &[]) {
        return None;
    }
    if let Some(name) = name
        && (name.len() > 64 || !is_name(name, &['$']) || name.starts_with('$'))
    {
        return None;
    }
    Some((ShadowKey { thing: thing.to_owned(), name: name.map(str::to_owned) }, operation))
}

/// A `rejected` message's code and text, as the Device Shadow service sends them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub code: u16,
    pub message: String,
}

impl Rejection {
    pub fn new(code: u16, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }

    /// The rejection for a refusal from the data plane (moto) with `status` and `body`.
    pub fn from_upstream(status: u16, body: &[u8], shadow: &ShadowKey) -> Self {
        match status {
            400 => {
                let message = serde_json::from_slice::<Value>(body)
                    .ok()
                    .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_owned))
                    .filter(|m| !m.is_empty())
                    .unwrap_or_else(|| "Invalid JSON".to_owned());
                Self::new(400, message)
            }
            404 => Self::new(404, format!("No shadow exists with name: '{}'", shadow.display_name())),
            409 => Self::new(409, "Version conflict"),
            413 => Self::new(413, "The payload exceeds the maximum size allowed"),
            429 => Self::new(429, "Too Many Requests"),
            _ => Self::new(500, "Internal service failure"),
        }
    }
}

/// The most a request's `state` may weigh (desired and reported), in bytes: AWS's default 8 KB.
pub const MAX_STATE_BYTES: usize = 8 * 1024;
/// AWS's limit on `clientToken`.
pub const MAX_CLIENT_TOKEN_BYTES: usize = 64;
/// The nesting AWS's current error text gives: "JSON contains too many levels of nesting; maximum is 6".
pub const MAX_DEPTH: usize = 6;

/// An update request that passed AWS's checks.
#[derive(Debug, Clone, PartialEq)]
pub struct UpdateRequest {
    /// The request's `state` (`null` clears the whole document).
    pub state: Value,
    pub version: Option<u64>,
    pub client_token: Option<String>,
}

fn depth(value: &Value) -> usize {
    match value {
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// The request's `clientToken`, when it is one (a string of at most 64 bytes).
pub fn client_token_of(payload: &[u8]) -> Option<String> {
    let value = serde_json::from_slice::<Value>(payload).ok()?;
    value.get("clientToken")?.as_str().filter(|t| t.len() <= MAX_CLIENT_TOKEN_BYTES).map(str::to_owned)
}

/// Checks an update request as the Device Shadow service does, in its order: JSON, `clientToken`, `version`, `state`
/// and its sections, nesting, size.
pub fn check_update(payload: &[u8]) -> Result<UpdateRequest, Rejection> {
    if std::str::from_utf8(payload).is_err() {
        return Err(Rejection::new(415, "Unsupported documented encoding; supported encoding is UTF-8"));
    }
    let Ok(Value::Object(request)) = serde_json::from_slice::<Value>(payload) else {
        return Err(Rejection::new(400, "Invalid JSON"));
    };
    let client_token = match request.get("clientToken") {
        None | Some(Value::Null) => None,
        Some(Value::String(t)) if t.len() <= MAX_CLIENT_TOKEN_BYTES => Some(t.clone()),
        Some(_) => return Err(Rejection::new(400, "Invalid clientToken")),
    };
    let version = match request.get("version") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_u64().ok_or_else(|| Rejection::new(400, "Invalid version"))?),
    };
    let state = match request.get("state") {
        None => return Err(Rejection::new(400, "Missing required node: state")),
        Some(state @ (Value::Object(_) | Value::Null)) => state.clone(),
        Some(_) => return Err(Rejection::new(400, "State node must be an object")),
    };
    if let Value::Object(sections) = &state {
        for (section, value) in sections {
            let message = match section.as_str() {
                "desired" => "Desired node must be an object",
                "reported" => "Reported node must be an object",
                _ => return Err(Rejection::new(400, "State contains an invalid node")),
            };
            if !matches!(value, Value::Object(_) | Value::Null) {
                return Err(Rejection::new(400, message));
            }
            // The state's own two levels (`state`, the section) count in AWS's depth.
            if depth(value) + 1 > MAX_DEPTH {
                return Err(Rejection::new(400, "JSON contains too many levels of nesting; maximum is 6"));
            }
        }
    }
    if state.to_string().len() > MAX_STATE_BYTES {
        return Err(Rejection::new(413, "The payload exceeds the maximum size allowed"));
    }
    Ok(UpdateRequest { state, version, client_token })
}

fn with_token(mut message: Map<String, Value>, client_token: Option<&str>) -> Value {
    if let Some(token) = client_token {
        message.insert("clientToken".into(), Value::String(token.to_owned()));
    }
    Value::Object(message)
}

/// `{"code", "message", "timestamp", "clientToken"}` on `.../rejected`.
pub fn rejected(rejection: &Rejection, timestamp: u64, client_token: Option<&str>) -> Value {
    let mut message = Map::new();
    message.insert("code".into(), Value::from(rejection.code));
    message.insert("message".into(), Value::String(rejection.message.clone()));
    message.insert("timestamp".into(), Value::from(timestamp));
    with_token(message, client_token)
}

/// Metadata mirroring `value`: a `{"timestamp"}` for every leaf the request set (`null` included).
fn metadata_for(value: &Value, timestamp: &Value) -> Value {
    match value {
        Value::Object(fields) => {
            Value::Object(fields.iter().map(|(k, v)| (k.clone(), metadata_for(v, timestamp))).collect())
        }
        _ => serde_json::json!({ "timestamp": timestamp }),
    }
}

/// `update/accepted`: the request's own `state` (a diff, not the document), its metadata, the timestamp, the new
/// version and the `clientToken`.
pub fn update_accepted(state: &Value, version: u64, timestamp: &Value, client_token: Option<&str>) -> Value {
    let mut message = Map::new();
    message.insert("state".into(), state.clone());
    let metadata = match state {
        Value::Object(sections) => {
            sections.iter().map(|(section, v)| (section.clone(), metadata_for(v, timestamp))).collect()
        }
        _ => Map::new(),
    };
    message.insert("metadata".into(), Value::Object(metadata));
    message.insert("version".into(), Value::from(version));
    message.insert("timestamp".into(), timestamp.clone());
    with_token(message, client_token)
}

/// Whether an accepted update changed `desired`: only then does AWS publish `update/delta`.
pub fn sets_desired(state: &Value) -> bool {
    state.get("desired").is_some_and(|d| !d.is_null())
}

/// `update/delta` from the document after the update (GetThingShadow's answer, with its `delta`): every desired
/// key that differs from reported, their metadata, the version and the timestamp. `None` when nothing differs.
pub fn delta(current: &Value, timestamp: &Value) -> Option<Value> {
    let Some(Value::Object(delta)) = current.pointer("/state/delta") else { return None };
    if delta.is_empty() {
        return None;
    }
    let desired_metadata = current.pointer("/metadata/desired").and_then(Value::as_object);
    let metadata: Map<String, Value> =
        delta.keys().filter_map(|k| Some((k.clone(), desired_metadata?.get(k)?.clone()))).collect();
    let mut message = Map::new();
    message.insert("version".into(), current.get("version").cloned().unwrap_or(Value::Null));
    message.insert("timestamp".into(), timestamp.clone());
    message.insert("state".into(), Value::Object(delta.clone()));
    message.insert("metadata".into(), Value::Object(metadata));
    Some(Value::Object(message))
}

/// `get/accepted`: the document as GetThingShadow gives it (`state` with `desired`, `reported`, `delta`,
/// `metadata`, `version`, `timestamp`), with the request's `clientToken`.
pub fn get_accepted(document: &Value, client_token: Option<&str>) -> Value {
    let message = document.as_object().cloned().unwrap_or_default();
    with_token(message, client_token)
}

/// `delete/accepted`: `{"version", "timestamp", "clientToken"}`.
pub fn delete_accepted(version: &Value, timestamp: &Value, client_token: Option<&str>) -> Value {
    let mut message = Map::new();
    message.insert("version".into(), version.clone());
    message.insert("timestamp".into(), timestamp.clone());
    with_token(message, client_token)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn key(thing: &str, name: Option<&str>) -> ShadowKey {
        ShadowKey { thing: thing.into(), name: name.map(str::to_owned) }
    }

    #[test]
    fn request_topics() {
        let cases = [
            ("$aws/things/d/shadow/update", Some((key("d", None), Operation::Update))),
            ("$aws/things/d/shadow/get", Some((key("d", None), Operation::Get))),
            (
                "$aws/things/Test-Device/shadow/name/test1/delete",
                Some((key("Test-Device", Some("test1")), Operation::Delete)),
            ),
            ("$aws/things/d/shadow/update/accepted", None),
            ("$aws/things/d/shadow/name/s/update/delta", None),
            ("$aws/things/d/shadow/name/$s/update", None),
            ("$aws/things//shadow/update", None),
            ("$aws/things/d/shadow/list", None),
            ("things/d/shadow/update", None),
        ];
        for (topic, want) in cases {
            assert_eq!(request_of(topic), want, "{topic}");
        }
    }

    #[test]
    fn update_requests_are_checked_as_aws_checks_them() {
        let code = |payload: &[u8]| check_update(payload).err().map(|r| r.code);
        assert_eq!(code(br#"{"state": {"desired": {"a": 1}}}"#), None);
        assert_eq!(code(br#"{"state": null}"#), None);
        assert_eq!(code(br#"{"state": {"desired": null, "reported": {"a": 1}}}"#), None);
        assert_eq!(code(b"{not json"), Some(400));
        assert_eq!(code(b"[1]"), Some(400));
        assert_eq!(code(br#"{"desired": {}}"#), Some(400));
        assert_eq!(code(br#"{"state": 1}"#), Some(400));
        assert_eq!(code(br#"{"state": {"desired": 1}}"#), Some(400));
        assert_eq!(code(br#"{"state": {"delta": {}}}"#), Some(400));
        assert_eq!(code(br#"{"state": {}, "version": "x"}"#), Some(400));
        assert_eq!(code(br#"{"state": {}, "clientToken": 5}"#), Some(400));
        let long_token = format!(r#"{{"state": {{}}, "clientToken": "{}"}}"#, "t".repeat(65));
        assert_eq!(code(long_token.as_bytes()), Some(400));
        assert_eq!(code(br#"{"state": {"desired": {"a": {"b": {"c": {"d": {"e": 1}}}}}}}"#), None);
        assert_eq!(code(br#"{"state": {"desired": {"a": {"b": {"c": {"d": {"e": {"f": 1}}}}}}}}"#), Some(400));
        let big = format!(r#"{{"state": {{"desired": {{"blob": "{}"}}}}}}"#, "x".repeat(MAX_STATE_BYTES));
        assert_eq!(code(big.as_bytes()), Some(413));
        assert_eq!(code(b"\xff\xfe"), Some(415));
        let ok = check_update(br#"{"state": {"desired": {"a": 1}}, "version": 3, "clientToken": "t"}"#);
        assert_eq!(
            ok,
            Ok(UpdateRequest { state: json!({"desired": {"a": 1}}), version: Some(3), client_token: Some("t".into()) })
        );
    }

    #[test]
    fn accepted_carries_the_request_not_the_document() {
        let message = update_accepted(&json!({"desired": {"a": {"b": 1}, "c": null}}), 7, &json!(100), Some("t"));
        assert_eq!(
            message,
            json!({
                "state": {"desired": {"a": {"b": 1}, "c": null}},
                "metadata": {"desired": {"a": {"b": {"timestamp": 100}}, "c": {"timestamp": 100}}},
                "version": 7, "timestamp": 100, "clientToken": "t"
            })
        );
    }

    #[test]
    fn delta_lists_what_differs_with_its_metadata() {
        let current = json!({
            "state": {"desired": {"a": 2, "b": 1}, "reported": {"a": 1, "b": 1}, "delta": {"a": 2}},
            "metadata": {"desired": {"a": {"timestamp": 9}, "b": {"timestamp": 8}}},
            "version": 4, "timestamp": 9
        });
        assert_eq!(
            delta(&current, &json!(9)),
            Some(json!({"state": {"a": 2}, "metadata": {"a": {"timestamp": 9}}, "version": 4, "timestamp": 9}))
        );
        assert_eq!(
            delta(&json!({"state": {"desired": {"a": 1}, "reported": {"a": 1}}, "version": 2}), &json!(9)),
            None
        );
        assert!(sets_desired(&json!({"desired": {"a": 1}})));
        assert!(!sets_desired(&json!({"reported": {"a": 1}})));
        assert!(!sets_desired(&json!({"desired": null})));
    }

    #[test]
    fn rejections_from_the_data_plane() {
        let shadow = key("d", Some("s"));
        assert_eq!(Rejection::from_upstream(409, b"{}", &shadow), Rejection::new(409, "Version conflict"));
        assert_eq!(Rejection::from_upstream(404, b"", &shadow).message, "No shadow exists with name: 'd~s'");
        assert_eq!(Rejection::from_upstream(404, b"", &key("d", None)).message, "No shadow exists with name: 'd'");
        assert_eq!(Rejection::from_upstream(503, b"", &shadow).code, 500);
        assert_eq!(
            rejected(&Rejection::new(400, "Invalid JSON"), 5, Some("t")),
            json!({"code": 400, "message": "Invalid JSON", "timestamp": 5, "clientToken": "t"})
        );
        assert_eq!(delete_accepted(&json!(3), &json!(5), None), json!({"version": 3, "timestamp": 5}));
        assert_eq!(
            get_accepted(&json!({"state": {}, "version": 1}), Some("g")),
            json!({"state": {}, "version": 1, "clientToken": "g"})
        );
    }
}
