//! Validated AWS IoT names. Rules from the `UpdateThingShadow` API reference:
//! thing `[a-zA-Z0-9:_-]{1,128}`, shadow `[$a-zA-Z0-9:_-]{1,64}`, thing group `[a-zA-Z0-9:_-]{1,128}`.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("is empty")]
    Empty,
    #[error("is {len} characters long; the maximum is {max}")]
    TooLong { len: usize, max: usize },
    #[error("contains {found:?}; only letters, digits and {allowed} are allowed")]
    BadCharacter { found: char, allowed: &'static str },
    #[error("starts with '$', which AWS reserves for its own shadows")]
    Reserved,
}

fn check(value: &str, max: usize, extra: &'static str) -> Result<(), NameError> {
    if value.is_empty() {
        return Err(NameError::Empty);
    }
    let len = value.chars().count();
    if len > max {
        return Err(NameError::TooLong { len, max });
    }
    if let Some(found) = value.chars().find(|c| !(c.is_ascii_alphanumeric() || extra.contains(*c))) {
        let allowed = if extra.contains('$') { "$ : _ -" } else { ": _ -" };
        return Err(NameError::BadCharacter { found, allowed });
    }
    Ok(())
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $max:expr, $extra:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn parse(value: impl Into<String>) -> Result<Self, NameError> {
                let value = value.into();
                check(&value, $max, $extra)?;
                Ok(Self(value))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = NameError;
            fn try_from(value: String) -> Result<Self, NameError> {
                Self::parse(value)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

name_type!(
    /// A thing's name as AWS IoT accepts it.
    ThingName, 128, ":_-"
);
name_type!(
    /// A named shadow's name. Names AWS sends are accepted as they are; see [`ShadowName::parse_user`].
    ShadowName, 64, "$:_-"
);
name_type!(
    /// A thing group's name.
    ThingGroupName, 128, ":_-"
);

impl ShadowName {
    /// A shadow name that a user chose: also refuses the `$` prefix AWS reserves.
    pub fn parse_user(value: impl Into<String>) -> Result<Self, NameError> {
        let name = Self::parse(value)?;
        if name.0.starts_with('$') {
            return Err(NameError::Reserved);
        }
        Ok(name)
    }
}

/// One shadow of one thing: the classic shadow when `shadow` is `None`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShadowRef {
    pub thing: ThingName,
    pub shadow: Option<ShadowName>,
}

impl ShadowRef {
    /// The shadow's name as the history records it: the empty string for the classic shadow.
    pub fn shadow_name(&self) -> &str {
        self.shadow.as_ref().map_or("", ShadowName::as_str)
    }
}

impl fmt::Display for ShadowRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.shadow {
            Some(shadow) => write!(f, "{}/{}", self.thing, shadow),
            None => write!(f, "{}/(classic)", self.thing),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thing_names() {
        assert!(ThingName::parse("Test-Device").is_ok());
        assert!(ThingName::parse("a:b_c-1").is_ok());
        assert_eq!(ThingName::parse(""), Err(NameError::Empty));
        assert_eq!(ThingName::parse("a/b"), Err(NameError::BadCharacter { found: '/', allowed: ": _ -" }));
        assert!(matches!(ThingName::parse("#"), Err(NameError::BadCharacter { .. })));
        assert!(matches!(ThingName::parse("$x"), Err(NameError::BadCharacter { .. })));
        assert!(ThingName::parse("x".repeat(128)).is_ok());
        assert_eq!(ThingName::parse("x".repeat(129)), Err(NameError::TooLong { len: 129, max: 128 }));
        assert!(matches!(ThingName::parse("café"), Err(NameError::BadCharacter { found: 'é', .. })));
    }

    #[test]
    fn shadow_names() {
        assert!(ShadowName::parse("test1").is_ok());
        assert!(ShadowName::parse("$package").is_ok());
        assert_eq!(ShadowName::parse_user("$package"), Err(NameError::Reserved));
        assert!(ShadowName::parse("x".repeat(64)).is_ok());
        assert!(ShadowName::parse("x".repeat(65)).is_err());
        assert!(ShadowName::parse("a b").is_err());
    }

    #[test]
    fn serde_validates() {
        let ok: Result<ThingName, _> = serde_json::from_str("\"Test-Device\"");
        assert!(ok.is_ok());
        let bad: Result<ThingName, _> = serde_json::from_str("\"a/b\"");
        assert!(bad.is_err());
    }
}
