//! Device Shadow MQTT topics: which thing, which shadow, which message.

use crate::names::{NameError, ShadowName, ShadowRef, ThingName};

/// The shadow messages shadow-history records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShadowMessage {
    /// `update/accepted`: the part of the state that an update changed.
    UpdateAccepted,
    /// `update/documents`: full previous and current documents.
    UpdateDocuments,
    /// `delete/accepted`: the shadow was deleted.
    DeleteAccepted,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShadowTopic {
    pub shadow: ShadowRef,
    pub message: ShadowMessage,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("is not a Device Shadow topic ($aws/things/<thing>/shadow/...)")]
    NotShadow,
    #[error("is a shadow topic, but not one that is recorded (update/accepted, update/documents, delete/accepted)")]
    NotRecorded,
    #[error("names an invalid thing: {0}")]
    Thing(NameError),
    #[error("names an invalid shadow: {0}")]
    Shadow(NameError),
}

impl ShadowTopic {
    pub fn parse(topic: &str) -> Result<Self, TopicError> {
        let parts: Vec<&str> = topic.split('/').collect();
        let (thing, shadow, rest) = match parts.as_slice() {
            ["$aws", "things", thing, "shadow", "name", shadow, rest @ ..] => (*thing, Some(*shadow), rest),
            ["$aws", "things", thing, "shadow", rest @ ..] => (*thing, None, rest),
            _ => return Err(TopicError::NotShadow),
        };
        let message = match rest {
            ["update", "accepted"] => ShadowMessage::UpdateAccepted,
            ["update", "documents"] => ShadowMessage::UpdateDocuments,
            ["delete", "accepted"] => ShadowMessage::DeleteAccepted,
            ["update" | "get" | "delete", ..] => return Err(TopicError::NotRecorded),
            _ => return Err(TopicError::NotShadow),
        };
        let thing = ThingName::parse(thing).map_err(TopicError::Thing)?;
        let shadow = shadow.map(ShadowName::parse).transpose().map_err(TopicError::Shadow)?;
        Ok(Self { shadow: ShadowRef { thing, shadow }, message })
    }
}

/// What the rules engine's `topic(6)` gives for a classic shadow's response topics:
/// `$aws/things/T/shadow/update/accepted` has `accepted` there, where a named shadow's topic
/// (`$aws/things/T/shadow/name/S/update/accepted`) has its name. A `shadowName` selected as `topic(6)` that is one of
/// these may therefore be either.
pub const CLASSIC_SIXTH_LEVELS: [&str; 4] = ["accepted", "rejected", "delta", "documents"];

/// The topic prefix of a shadow: `$aws/things/T/shadow` or `$aws/things/T/shadow/name/S`.
pub fn shadow_topic_prefix(shadow: &ShadowRef) -> String {
    match &shadow.shadow {
        Some(name) => format!("$aws/things/{}/shadow/name/{}", shadow.thing, name),
        None => format!("$aws/things/{}/shadow", shadow.thing),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(topic: &str) -> (String, String, ShadowMessage) {
        let t = ShadowTopic::parse(topic).unwrap_or_else(|e| panic!("{topic}: {e}"));
        (t.shadow.thing.to_string(), t.shadow.shadow_name().to_string(), t.message)
    }

    #[test]
    fn recorded_topics() {
        use ShadowMessage::*;
        let cases = [
            ("$aws/things/Test-Device/shadow/name/test1/update/accepted", "Test-Device", "test1", UpdateAccepted),
            ("$aws/things/Test-Device/shadow/update/accepted", "Test-Device", "", UpdateAccepted),
            ("$aws/things/d1/shadow/name/cfg/update/documents", "d1", "cfg", UpdateDocuments),
            ("$aws/things/d1/shadow/update/documents", "d1", "", UpdateDocuments),
            ("$aws/things/d1/shadow/name/cfg/delete/accepted", "d1", "cfg", DeleteAccepted),
            ("$aws/things/d1/shadow/delete/accepted", "d1", "", DeleteAccepted),
        ];
        for (topic, thing, shadow, message) in cases {
            assert_eq!(parsed(topic), (thing.into(), shadow.into(), message), "{topic}");
        }
    }

    #[test]
    fn prefix_round_trips() {
        for topic in ["$aws/things/a/shadow/name/b/update/accepted", "$aws/things/a/shadow/update/accepted"] {
            let t = ShadowTopic::parse(topic).expect("parsing a shadow topic");
            assert_eq!(format!("{}/update/accepted", shadow_topic_prefix(&t.shadow)), topic);
        }
    }

    #[test]
    fn malformed_topics() {
        let cases = [
            ("", TopicError::NotShadow),
            ("devices/d1/state", TopicError::NotShadow),
            ("$aws/things/d1/jobs/notify", TopicError::NotShadow),
            ("$aws/things/d1/shadow", TopicError::NotShadow),
            ("$aws/things/d1/shadow/update", TopicError::NotRecorded),
            ("$aws/things/d1/shadow/update/delta", TopicError::NotRecorded),
            ("$aws/things/d1/shadow/update/rejected", TopicError::NotRecorded),
            ("$aws/things/d1/shadow/name/s/get/accepted", TopicError::NotRecorded),
            ("$aws/things/d1/shadow/name/update/accepted", TopicError::NotShadow),
            ("$aws/things//shadow/update/accepted", TopicError::Thing(NameError::Empty)),
            (
                "$aws/things/d 1/shadow/update/accepted",
                TopicError::Thing(NameError::BadCharacter { found: ' ', allowed: ": _ -" }),
            ),
            ("$aws/things/d1/shadow/name//update/accepted", TopicError::Shadow(NameError::Empty)),
            ("$aws/things/d1/shadow/name/a/b/update/accepted", TopicError::NotShadow),
        ];
        for (topic, want) in cases {
            assert_eq!(ShadowTopic::parse(topic), Err(want), "{topic:?}");
        }
    }
}
