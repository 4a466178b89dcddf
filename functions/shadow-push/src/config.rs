use shadow_runtime::config::{ConfigError, Settings};

/// Pushes keep at least a tenth of the quotas: a higher headroom is a mistake, not a setting.
const MAX_HEADROOM_PERCENT: u32 = 90;

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
    /// `PUSH_QUOTA_HEADROOM_PERCENT` (default 0, at most 90): the share of `PUSH_MAX_TPS` and `PUSH_READ_TPS` that
    /// pushes leave to other callers of the same account quotas (devices' own shadow requests, other tools). Pushes
    /// that run at the same time share the rest.
    pub headroom_percent: u32,
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
    /// `PUSH_PARTITION_WPS` (default 500, half of DynamoDB's 1000 write units/s per partition key value): the write
    /// units per second one partition of a push's journal is given. A new push spreads its journal, failures and
    /// conflicts over `ceil(rate × units of an entry / PUSH_PARTITION_WPS)` partitions
    /// (`shadow_core::push::journal::shards_for`), and each process writes any one partition at most twice this (at
    /// most 1000) units a second.
    pub partition_wps: u32,
    /// `PUSH_HANDOFF_GRACE_MS` (default 120 000): how long a released push waits for its hand-off message to be
    /// picked up before the sweeper wakes it again.
    pub hand_off_grace_ms: u64,
    /// `PUSH_ANSWER_MS` (default 20 000, at least 1 000): how long a synchronous start or control (the CLI's) may
    /// wait on the registry and the store before it answers with what it was waiting for. The CLI waits for the
    /// answer this long plus a cold start.
    pub answer_within_ms: u64,
}

impl Config {
    pub fn from_settings(settings: &impl Settings) -> Result<Self, ConfigError> {
        let max_tps = settings.at_least::<u32>("PUSH_MAX_TPS", 1)?.unwrap_or(400);
        let read_tps = settings.at_least::<u32>("PUSH_READ_TPS", 1)?.unwrap_or(400);
        let headroom_percent = settings.parsed::<u32>("PUSH_QUOTA_HEADROOM_PERCENT")?.unwrap_or(0);
        if headroom_percent > MAX_HEADROOM_PERCENT {
            return Err(ConfigError::Invalid {
                name: "PUSH_QUOTA_HEADROOM_PERCENT",
                value: headroom_percent.to_string(),
                reason: format!("must be at most {MAX_HEADROOM_PERCENT} (percent of PUSH_MAX_TPS kept for others)"),
            });
        }
        let concurrency = settings.at_least::<usize>("PUSH_CONCURRENCY", 1)?.unwrap_or(64);
        let lease_ms = settings.at_least::<u64>("PUSH_LEASE_MS", 300)?.unwrap_or(30_000);
        let partition_wps = settings.at_least::<u32>("PUSH_PARTITION_WPS", 1)?.unwrap_or(500);
        Ok(Self {
            partition_wps,
            lease_ms,
            hand_off_grace_ms: settings.parsed::<u64>("PUSH_HANDOFF_GRACE_MS")?.unwrap_or(120_000),
            answer_within_ms: settings.at_least::<u64>("PUSH_ANSWER_MS", 1_000)?.unwrap_or(20_000),
            table: settings.required("PUSH_TABLE")?,
            queue_url: settings.required("PUSH_QUEUE_URL")?,
            max_tps,
            read_tps,
            headroom_percent,
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
                headroom_percent: 0,
                concurrency: 64,
                data_endpoint: None,
                retention_days: None,
                lease_ms: 30_000,
                partition_wps: 500,
                hand_off_grace_ms: 120_000,
                answer_within_ms: 20_000,
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
        for (name, low, min) in [
            ("PUSH_MAX_TPS", "0", 1),
            ("PUSH_READ_TPS", "0", 1),
            ("PUSH_CONCURRENCY", "0", 1),
            ("PUSH_LEASE_MS", "299", 300),
            ("PUSH_PARTITION_WPS", "0", 1),
            ("PUSH_ANSWER_MS", "999", 1_000),
        ] {
            let got =
                Config::from_settings(&HashMap::from([("PUSH_TABLE", "t"), ("PUSH_QUEUE_URL", "q"), (name, low)]));
            let reason = format!("must be at least {min}");
            assert_eq!(got, Err(ConfigError::Invalid { name, value: low.into(), reason }), "{name}={low}");
        }
        let headroom = |value| {
            Config::from_settings(&HashMap::from([
                ("PUSH_TABLE", "t"),
                ("PUSH_QUEUE_URL", "q"),
                ("PUSH_QUOTA_HEADROOM_PERCENT", value),
            ]))
            .map(|c| c.headroom_percent)
        };
        assert_eq!(headroom("20"), Ok(20));
        assert!(matches!(headroom("91"), Err(ConfigError::Invalid { name: "PUSH_QUOTA_HEADROOM_PERCENT", .. })));
        assert!(matches!(headroom("-5"), Err(ConfigError::Invalid { name: "PUSH_QUOTA_HEADROOM_PERCENT", .. })));
    }
}
