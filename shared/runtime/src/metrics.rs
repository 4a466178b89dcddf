//! Counters as CloudWatch embedded-metric-format (EMF) lines: CloudWatch turns each line into metric points.
//!
//! The format is one JSON object; a metrics facade and its global recorder would add more than it saves here.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;

pub const NAMESPACE: &str = "ShadowFleet";

/// The `message` of every EMF line, so that log queries can tell metrics from decisions.
pub const EMF_MESSAGE: &str = "metrics";

/// Lambda's application log levels, least severe first (`ApplicationLogLevel`; Lambda passes the configured one to
/// the function as `AWS_LAMBDA_LOG_LEVEL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
    Fatal,
}

impl LogLevel {
    pub const ALL: [Self; 6] = [Self::Trace, Self::Debug, Self::Info, Self::Warn, Self::Error, Self::Fatal];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Trace => "TRACE",
            Self::Debug => "DEBUG",
            Self::Info => "INFO",
            Self::Warn => "WARN",
            Self::Error => "ERROR",
            Self::Fatal => "FATAL",
        }
    }

    /// A level name as Lambda spells it, in any case; `None` for anything else.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|level| level.as_str().eq_ignore_ascii_case(name.trim()))
    }

    /// The level Lambda filters application logs at: `AWS_LAMBDA_LOG_LEVEL`, `None` when logs are not filtered.
    pub fn configured() -> Option<Self> {
        std::env::var("AWS_LAMBDA_LOG_LEVEL").ok().as_deref().and_then(Self::parse)
    }

    /// The level of an EMF line when Lambda keeps only `configured` and above.
    ///
    /// With JSON logs, Lambda reads each line's `level` (a missing or invalid one, or a `timestamp` that is not
    /// RFC 3339, counts as INFO) and drops lines below the function's `ApplicationLogLevel`, so a metric line must
    /// carry a level that passes. It is INFO, what metrics are, unless the filter is above INFO: then it is the
    /// filter's level, the lowest that passes. Not always FATAL: at the usual INFO filter, metrics logged as errors
    /// would match every `level = "ERROR"` or `"FATAL"` query and alarm. Under a WARN, ERROR or FATAL filter the
    /// line does carry that level; queries for real errors tell it apart by its `_aws` key or its `message`
    /// ([`EMF_MESSAGE`]), and the project's alarms use Lambda's `Errors` metric, not log levels.
    pub fn for_metrics(configured: Option<Self>) -> Self {
        configured.map_or(Self::Info, |level| level.max(Self::Info))
    }
}

/// Counts for one invocation, written as one EMF line.
#[derive(Debug, Clone, Default)]
pub struct Counters {
    counts: BTreeMap<&'static str, u64>,
}

impl Counters {
    /// Declares `names` so that they are reported even when they stay zero.
    pub fn new(names: &[&'static str]) -> Self {
        Self { counts: names.iter().map(|n| (*n, 0)).collect() }
    }

    pub fn add(&mut self, name: &'static str, n: u64) {
        *self.counts.entry(name).or_default() += n;
    }

    /// The EMF document for `function`, as a log line at `level` (see [`LogLevel::for_metrics`]).
    pub fn to_emf(&self, function: &str, level: LogLevel) -> Value {
        let timestamp = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let definitions: Vec<Value> = self.counts.keys().map(|name| json!({"Name": name, "Unit": "Count"})).collect();
        let mut doc = json!({
            "_aws": {
                "Timestamp": timestamp,
                "CloudWatchMetrics": [{"Namespace": NAMESPACE, "Dimensions": [["Function"]], "Metrics": definitions}]
            },
            "timestamp": rfc3339_now(),
            "level": level.as_str(),
            "message": EMF_MESSAGE,
            "Function": function,
        });
        if let Value::Object(fields) = &mut doc {
            for (name, count) in &self.counts {
                fields.insert((*name).to_owned(), json!(count));
            }
        }
        doc
    }

    /// Prints the EMF line on stdout, where Lambda's log capture picks it up, at a level Lambda's filter keeps.
    pub fn emit(&self, function: &str) {
        println!("{}", self.to_emf(function, LogLevel::for_metrics(LogLevel::configured())));
    }
}

/// Now, in RFC 3339 as the JSON log lines write it (`2026-11-27T01:02:03.456789Z`): Lambda reads a line's level
/// only when its `timestamp` is valid.
fn rfc3339_now() -> String {
    let mut text = String::new();
    // Writing into a String cannot fail; an empty timestamp would only make Lambda supply its own.
    let _ = tracing_subscriber::fmt::time::SystemTime.format_time(&mut Writer::new(&mut text));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emf_declares_every_counter() {
        let mut c = Counters::new(&["written", "duplicate", "rejected"]);
        c.add("written", 2);
        c.add("written", 1);
        let doc = c.to_emf("shadow-history", LogLevel::Info);
        assert_eq!(doc["written"], 3);
        assert_eq!(doc["rejected"], 0);
        assert_eq!(doc["Function"], "shadow-history");
        let metrics = &doc["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(metrics["Namespace"], NAMESPACE);
        assert_eq!(metrics["Metrics"].as_array().map(Vec::len), Some(3));
        assert!(doc["_aws"]["Timestamp"].as_u64().is_some_and(|t| t > 0));
    }

    /// Lambda's filter on JSON logs: a line is kept when its `level` is at or above the configured one; a missing
    /// or invalid `level`, or a `timestamp` that is not RFC 3339, makes the line INFO.
    fn lambda_keeps(line: &Value, configured: Option<LogLevel>) -> bool {
        let Some(configured) = configured else { return true };
        let rfc3339 = line["timestamp"].as_str().is_some_and(|t| {
            let b = t.as_bytes();
            let digits = |range: std::ops::Range<usize>| b.get(range).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
            digits(0..4)
                && b.get(4) == Some(&b'-')
                && digits(5..7)
                && b.get(7) == Some(&b'-')
                && digits(8..10)
                && b.get(10) == Some(&b'T')
                && digits(11..13)
                && digits(14..16)
                && digits(17..19)
                && t.ends_with('Z')
        });
        let level = line["level"].as_str().and_then(LogLevel::parse).filter(|_| rfc3339).unwrap_or(LogLevel::Info);
        level >= configured
    }

    #[test]
    fn emf_line_survives_every_lambda_log_level() {
        let counters = Counters::new(&["written"]);
        for configured in LogLevel::ALL.map(Some).into_iter().chain([None]) {
            let line = counters.to_emf("shadow-history", LogLevel::for_metrics(configured));
            assert!(lambda_keeps(&line, configured), "dropped at {configured:?}: {line}");
            assert_eq!(line["message"], EMF_MESSAGE);
            if configured <= Some(LogLevel::Info) {
                assert_eq!(line["level"], "INFO", "metrics are not warnings unless the filter demands it");
            } else {
                assert_eq!(LogLevel::parse(line["level"].as_str().unwrap_or_default()), configured);
            }
        }
    }

    #[test]
    fn log_levels_parse_as_lambda_spells_them() {
        assert_eq!(LogLevel::parse("WARN"), Some(LogLevel::Warn));
        assert_eq!(LogLevel::parse("fatal"), Some(LogLevel::Fatal));
        assert_eq!(LogLevel::parse("warning"), None);
        assert_eq!(LogLevel::for_metrics(LogLevel::parse("nonsense")), LogLevel::Info);
    }
}
