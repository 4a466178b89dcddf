use shadow_core::history::RecordOptions;
use shadow_runtime::config::{ConfigError, Settings};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `HISTORY_TABLE`
    pub table: String,
    /// `HISTORY_RETENTION_DAYS` (optional, at least 1) and `HISTORY_STORE_METADATA` (true/false, default false).
    pub record: RecordOptions,
}

impl Config {
    pub fn from_settings(settings: &impl Settings) -> Result<Self, ConfigError> {
        let retention_days = settings
            .at_least::<u32>("HISTORY_RETENTION_DAYS", 1)
            .map_err(|e| e.hint("unset it to keep history forever"))?;
        Ok(Self {
            table: settings.required("HISTORY_TABLE")?,
            record: RecordOptions { retention_days, store_metadata: settings.flag("HISTORY_STORE_METADATA")? },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn reads_the_environment() {
        let c = Config::from_settings(&HashMap::from([
            ("HISTORY_TABLE", "t"),
            ("HISTORY_RETENTION_DAYS", "30"),
            ("HISTORY_STORE_METADATA", "true"),
        ]));
        assert_eq!(
            c,
            Ok(Config { table: "t".into(), record: RecordOptions { retention_days: Some(30), store_metadata: true } })
        );
        assert_eq!(Config::from_settings(&HashMap::new()), Err(ConfigError::Missing("HISTORY_TABLE")));
        let zero = Config::from_settings(&HashMap::from([("HISTORY_TABLE", "t"), ("HISTORY_RETENTION_DAYS", "0")]));
        let reason = "must be at least 1 (unset it to keep history forever)".into();
        assert_eq!(zero, Err(ConfigError::Invalid { name: "HISTORY_RETENTION_DAYS", value: "0".into(), reason }));
    }
}
