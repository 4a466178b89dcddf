//! Reading a function's configuration from its environment, once, at start-up: a bad value stops the start with
//! the variable's name, never a request half-way.

use std::fmt::Display;
use std::str::FromStr;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("environment variable {0} is not set")]
    Missing(&'static str),
    #[error("environment variable {name}={value:?} is invalid: {reason}")]
    Invalid { name: &'static str, value: String, reason: String },
}

impl ConfigError {
    /// The same error, with `hint` added to an invalid value's reason.
    pub fn hint(self, hint: &str) -> Self {
        match self {
            Self::Invalid { name, value, reason } => {
                Self::Invalid { name, value, reason: format!("{reason} ({hint})") }
            }
            missing => missing,
        }
    }
}

/// A source of settings: the process environment in Lambda, a map in tests.
pub trait Settings {
    fn get(&self, name: &str) -> Option<String>;

    fn required(&self, name: &'static str) -> Result<String, ConfigError> {
        self.get(name).filter(|v| !v.trim().is_empty()).ok_or(ConfigError::Missing(name))
    }

    fn parsed<T>(&self, name: &'static str) -> Result<Option<T>, ConfigError>
    where
        T: FromStr,
        T::Err: Display,
    {
        match self.get(name).filter(|v| !v.trim().is_empty()) {
            None => Ok(None),
            Some(value) => value.trim().parse().map(Some).map_err(|e: T::Err| ConfigError::Invalid {
                name,
                value,
                reason: e.to_string(),
            }),
        }
    }

    /// A number that must be at least `min` when set: the error names the variable, its value and the minimum.
    fn at_least<T>(&self, name: &'static str, min: T) -> Result<Option<T>, ConfigError>
    where
        T: FromStr + PartialOrd + Display,
        T::Err: Display,
    {
        match self.parsed::<T>(name)? {
            Some(value) if value < min => {
                Err(ConfigError::Invalid { name, value: value.to_string(), reason: format!("must be at least {min}") })
            }
            value => Ok(value),
        }
    }

    fn flag(&self, name: &'static str) -> Result<bool, ConfigError> {
        match self.get(name).map(|v| v.trim().to_ascii_lowercase()).as_deref() {
            None | Some("") | Some("false") | Some("0") | Some("no") => Ok(false),
            Some("true") | Some("1") | Some("yes") => Ok(true),
            Some(other) => {
                Err(ConfigError::Invalid { name, value: other.to_owned(), reason: "expected true or false".into() })
            }
        }
    }
}

/// The process environment.
pub struct Env;

impl Settings for Env {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl Settings for std::collections::HashMap<&str, &str> {
    fn get(&self, name: &str) -> Option<String> {
        std::collections::HashMap::get(self, name).map(|v| (*v).to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn reads_and_names_bad_values() {
        let s = HashMap::from([("A", "x"), ("N", "12"), ("BAD", "twelve"), ("F", "TRUE"), ("G", "maybe"), ("E", " ")]);
        assert_eq!(s.required("A"), Ok("x".into()));
        assert_eq!(s.required("MISSING"), Err(ConfigError::Missing("MISSING")));
        assert_eq!(s.required("E"), Err(ConfigError::Missing("E")));
        assert_eq!(s.parsed::<u32>("N"), Ok(Some(12)));
        assert_eq!(s.parsed::<u32>("MISSING"), Ok(None));
        let err = s.parsed::<u32>("BAD").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("BAD") && err.contains("twelve"), "{err}");
        assert_eq!(s.flag("F"), Ok(true));
        assert_eq!(s.flag("MISSING"), Ok(false));
        assert!(s.flag("G").is_err());
        assert_eq!(s.at_least::<u32>("N", 12), Ok(Some(12)));
        assert_eq!(s.at_least::<u32>("MISSING", 1), Ok(None));
        let low = s.at_least::<u32>("N", 13).err().map(|e| e.to_string()).unwrap_or_default();
        assert_eq!(low, r#"environment variable N="12" is invalid: must be at least 13"#);
        assert!(matches!(s.at_least::<u32>("BAD", 1), Err(ConfigError::Invalid { name: "BAD", .. })));
    }
}
