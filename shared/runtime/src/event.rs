//! An invocation's payload, read so that no payload fails before the handler.

use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// An invocation's payload: its JSON, or why it is not readable JSON (nested past serde_json's limit of 128 levels,
/// for one).
///
/// lambda_runtime reads the payload before the handler runs, and answers a payload it cannot read with an error type
/// of its own (`&lambda_runtime::deserializer::DeserializeError`): Lambda retries it, and it reaches the DLQ under an
/// error type no alarm or operator expects. Reading a `Payload` never fails, so the handler gets the reason and
/// refuses the event as `Final.InvalidEvent`.
#[derive(Debug, Clone, PartialEq)]
pub struct Payload(Result<Value, UnreadablePayload>);

/// Why a payload could not be read as JSON.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the payload is not readable JSON: {0}")]
pub struct UnreadablePayload(String);

impl Payload {
    /// The payload's JSON, or why it could not be read.
    pub fn json(self) -> Result<Value, UnreadablePayload> {
        self.0
    }
}

impl UnreadablePayload {
    /// What the JSON reader said, with where.
    pub fn reason(&self) -> &str {
        &self.0
    }
}

impl From<Value> for Payload {
    fn from(value: Value) -> Self {
        Self(Ok(value))
    }
}

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Kept, not returned: returned, the error would fail the invocation inside the runtime.
        Ok(Self(Value::deserialize(deserializer).map_err(|e| UnreadablePayload(e.to_string()))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As lambda_runtime reads it: one value from the body, nothing checked after it.
    fn read(body: &str) -> Result<Value, UnreadablePayload> {
        let mut deserializer = serde_json::Deserializer::from_str(body);
        Payload::deserialize(&mut deserializer).map(Payload::json).expect("reading a Payload never fails")
    }

    #[test]
    fn an_unreadable_payload_is_read_with_its_reason() {
        assert_eq!(read(r#"{"a":[1]}"#), Ok(serde_json::json!({"a": [1]})));
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        let err = read(&deep).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.starts_with("the payload is not readable JSON: recursion limit exceeded"), "{err}");
        let err = read("{\"a\":").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("EOF while parsing"), "{err}");
    }
}
