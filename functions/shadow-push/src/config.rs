use shadow_runtime::config::{ConfigError, Settings};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `PUSH_TABLE`: push records and failures.
    pub table: String,
    /// `PUSH_QUEUE_URL`: where a push that runs out of time hands the rest on.
    pub queue_url: String,
    /// `PUSH_MAX_TPS` (default 400): the account's `UpdateThingShadow` quota.
    pub max_tps: u32,
    /// `PUSH_READ_TPS` (default 400): the account's `GetThingShadow` quota, apart from updates (AWS sets each shadow
    /// API's rate apart). Skip checks, checks of uncertain things and rollout judging read under it.
    pub read_tps: u32,
    /// `PUSH_CONCURRENCY` (default 64): shadow requests in flight at once.
    pub concurrency: usize,
    /// `IOT_DATA_ENDPOINT`: the account's data-plane host; found with DescribeEndpoint when unset.
    pub data_endpoint: Option<String>,
    /// `PUSH_RETENTION_DAYS`: push records expire this many days after the push started.
    pub retention_days: Option<u32>,
    /// `PUSH_LEASE_MS` (default 30 000): how long a segment's claim lasts unless renewed (it is renewed three times a
    /// lease). A holder that dies is taken over this long after its last renewal, well before Lambda's first async
    /// retry (about a minute). Shorter only in tests.
    pub lease_ms: u64,
    /// `PUSH_HANDOFF_GRACE_MS` (default 120 000): how long a released push waits for its hand-off message to be
    /// picked up before the sweeper wakes it again.
    pub hand_off_grace_ms: u64,
}

impl Config {
    pub fn from_settings(settings: &impl Settings) -> Result<Self, ConfigError> {
        let max_tps = settings.parsed::<u32>("PUSH_MAX_TPS")?.unwrap_or(400);
        if max_tps == 0 {
            return Err(ConfigError::Invalid {
                name: "PUSH_MAX_TPS",
                value: "0".into(),
                reason: "must be at least 1".into(),
            });
        }
        let read_tps = settings.parsed::<u32>("PUSH_READ_TPS")?.unwrap_or(400);
        if read_tps == 0 {
            return Err(ConfigError::Invalid {
                name: "PUSH_READ_TPS",
                value: "0".into(),
                reason: "must be at least 1".into(),
            });
        }
        let concurrency = settings.parsed::<usize>("PUSH_CONCURRENCY")?.unwrap_or(64);
        if concurrency == 0 {
            return Err(ConfigError::Invalid {
                name: "PUSH_CONCURRENCY",
                value: "0".into(),
                reason: "must be at least 1".into(),
            });
        }
        let lease_ms = settings.parsed::<u64>("PUSH_LEASE_MS")?.unwrap_or(30_000);
        if lease_ms < 300 {
            return Err(ConfigError::Invalid {
                name: "PUSH_LEASE_MS",
                value: lease_ms.to_string(),
                reason: "must be at least 300".into(),
            });
        }
        Ok(Self {
            lease_ms,
            hand_off_grace_ms: settings.parsed::<u64>("PUSH_HANDOFF_GRACE_MS")?.unwrap_or(120_000),
            table: settings.required("PUSH_TABLE")?,
            queue_url: settings.required("PUSH_QUEUE_URL")?,
            max_tps,
            read_tps,
            concurrency,
            data_endpoint: settings.get("IOT_DATA_ENDPOINT").filter(|e| !e.trim().is_empty()),
            retention_days: settings.parsed::<u32>("PUSH_RETENTION_DAYS")?.filter(|d| *d > 0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn defaults_and_errors() {
        let c = Config::from_settings(&HashMap::from([("PUSH_TABLE", "t"), ("PUSH_QUEUE_URL", "q")]));
        assert_eq!(
            c,
            Ok(Config {
                table: "t".into(),
                queue_url: "q".into(),
                max_tps: 400,
                read_tps: 400,
                concurrency: 64,
                data_endpoint: None,
                retention_days: None,
                lease_ms: 30_000,
                hand_off_grace_ms: 120_000,
            })
        );
        assert_eq!(
            Config::from_settings(&HashMap::from([("PUSH_TABLE", "t")])),
            Err(ConfigError::Missing("PUSH_QUEUE_URL"))
        );
        let bad = Config::from_settings(&HashMap::from([
            ("PUSH_TABLE", "t"),
            ("PUSH_QUEUE_URL", "q"),
            ("PUSH_MAX_TPS", "fast"),
        ]));
        assert!(matches!(bad, Err(ConfigError::Invalid { name: "PUSH_MAX_TPS", .. })));
    }
}
