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

/// The `Function` dimension of every metric: which function emitted it.
pub const DIMENSION: &str = "Function";

/// The functions that emit metrics, by the name of their binary (and package).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Emitter {
    History,
    Push,
}

impl Emitter {
    pub const ALL: [Self; 2] = [Self::History, Self::Push];

    /// The binary's name: `functions/<name>` in the repository, and the local stack's function name.
    pub fn binary(self) -> &'static str {
        match self {
            Self::History => "shadow-history",
            Self::Push => "shadow-push",
        }
    }

    /// The value of the [`DIMENSION`]: the deployed function's name (`AWS_LAMBDA_FUNCTION_NAME`, which Lambda sets;
    /// one per stack, so that two stacks in one account and region never add up into one metric), else the binary's.
    pub fn dimension_value(self) -> String {
        std::env::var("AWS_LAMBDA_FUNCTION_NAME").ok().filter(|n| !n.is_empty()).unwrap_or_else(|| self.binary().into())
    }
}

/// A metric's CloudWatch unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Unit {
    /// A count per invocation; graphed as a sum.
    Count,
    /// A duration per invocation; graphed as a maximum or an average.
    Milliseconds,
}

impl Unit {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Count => "Count",
            Self::Milliseconds => "Milliseconds",
        }
    }
}

/// One metric of the catalog below. Only this module makes them, so an emitter can only emit what the catalog
/// lists, and the dashboard's test checks the dashboard against the same list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Metric {
    emitter: Emitter,
    name: &'static str,
    unit: Unit,
}

impl Metric {
    const fn new(emitter: Emitter, name: &'static str, unit: Unit) -> Self {
        Self { emitter, name, unit }
    }

    pub fn emitter(self) -> Emitter {
        self.emitter
    }

    pub fn name(self) -> &'static str {
        self.name
    }

    pub fn unit(self) -> Unit {
        self.unit
    }
}

/// shadow-history's metrics, one EMF line per invocation.
pub mod history {
    use super::{Emitter::History, Metric, Unit::*};

    /// Events written to the history table.
    pub const WRITTEN: Metric = Metric::new(History, "written", Count);
    /// Events already recorded (a redelivery): nothing written.
    pub const DUPLICATE: Metric = Metric::new(History, "duplicate", Count);
    /// Malformed events, refused (`Final.InvalidEvent`).
    pub const REJECTED: Metric = Metric::new(History, "rejected", Count);
    /// Events not written after the function's retries (DynamoDB throttling or errors until the deadline).
    pub const FAILED: Metric = Metric::new(History, "failed", Count);
    /// The age of the newest event the invocation wrote: the write's time minus the shadow update's `timestamp`
    /// (epoch seconds, so up to a second more than the true age). Only in invocations that wrote an event.
    pub const NEWEST_EVENT_AGE: Metric = Metric::new(History, "newestEventAge", Milliseconds);

    pub const ALL: [Metric; 5] = [WRITTEN, DUPLICATE, REJECTED, FAILED, NEWEST_EVENT_AGE];
}

/// shadow-push's metrics: one EMF line per segment, per sweep, and per push marked stalled.
pub mod push {
    use super::{Emitter::Push, Metric, Unit::Count};

    /// Things whose shadow the segment updated (a dry run: would have updated).
    pub const UPDATED: Metric = Metric::new(Push, "updated", Count);
    /// Things that already held the values (`skipUnchanged`).
    pub const UNCHANGED: Metric = Metric::new(Push, "unchanged", Count);
    /// Things that failed for good (404, 409, other 4xx), recorded as the push's failures.
    pub const FAILED: Metric = Metric::new(Push, "failed", Count);
    /// Shadow requests answered 429 (retried, paced).
    pub const THROTTLED: Metric = Metric::new(Push, "throttled", Count);
    /// DynamoDB requests (and batch items) of the segment refused for throughput (a partition of the push table over
    /// its write limit, or the table's), each retried.
    pub const STORE_THROTTLED: Metric = Metric::new(Push, "storeThrottled", Count);
    /// Rollout judging: things whose `reported` holds the pushed values.
    pub const CONVERGED: Metric = Metric::new(Push, "converged", Count);
    /// Rollout judging: things not converged whose `desired` still holds the push's values (silent devices).
    pub const PENDING: Metric = Metric::new(Push, "pending", Count);
    /// Pushes marked stalled: a segment died again and again.
    pub const STALLED: Metric = Metric::new(Push, "stalled", Count);
    /// Pushes the sweeper woke: their lease ran out (a segment died, or a hand-off was lost).
    pub const WOKEN: Metric = Metric::new(Push, "woken", Count);

    /// What one segment reports, every name declared even when it stays zero.
    pub const SEGMENT: [Metric; 7] = [UPDATED, UNCHANGED, FAILED, THROTTLED, STORE_THROTTLED, CONVERGED, PENDING];
    pub const ALL: [Metric; 9] =
        [UPDATED, UNCHANGED, FAILED, THROTTLED, STORE_THROTTLED, CONVERGED, PENDING, STALLED, WOKEN];
}

/// Every metric the functions emit, in namespace [`NAMESPACE`] with the single dimension [`DIMENSION`].
pub fn catalog() -> impl Iterator<Item = Metric> {
    history::ALL.into_iter().chain(push::ALL)
}

/// One invocation's metrics (or one segment's), written as one EMF line.
#[derive(Debug, Clone)]
pub struct Counters {
    emitter: Emitter,
    values: BTreeMap<&'static str, (Unit, u64)>,
}

impl Counters {
    /// Declares `metrics` so that they are reported even when they stay zero. Each belongs to `emitter`.
    pub fn new(emitter: Emitter, metrics: &[Metric]) -> Self {
        let mut counters = Self { emitter, values: BTreeMap::new() };
        for metric in metrics {
            counters.add(*metric, 0);
        }
        counters
    }

    pub fn add(&mut self, metric: Metric, n: u64) {
        debug_assert_eq!(metric.emitter, self.emitter, "{} is another function's metric", metric.name);
        self.values.entry(metric.name).or_insert((metric.unit, 0)).1 += n;
    }

    /// Keeps the least `value` seen for `metric` in this invocation; the metric is reported only once seen.
    pub fn least(&mut self, metric: Metric, value: u64) {
        debug_assert_eq!(metric.emitter, self.emitter, "{} is another function's metric", metric.name);
        let entry = self.values.entry(metric.name).or_insert((metric.unit, value));
        entry.1 = entry.1.min(value);
    }

    /// The EMF document for the function named `function`, as a log line at `level` (see [`LogLevel::for_metrics`]),
    /// with the invocation's `request_id` when there is one.
    pub fn to_emf(&self, function: &str, level: LogLevel, request_id: Option<&str>) -> Value {
        let timestamp = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let definitions: Vec<Value> =
            self.values.iter().map(|(name, (unit, _))| json!({"Name": name, "Unit": unit.as_str()})).collect();
        let mut doc = json!({
            "_aws": {
                "Timestamp": timestamp,
                "CloudWatchMetrics": [{"Namespace": NAMESPACE, "Dimensions": [[DIMENSION]], "Metrics": definitions}]
            },
            "timestamp": rfc3339_now(),
            "level": level.as_str(),
            "message": EMF_MESSAGE,
            DIMENSION: function,
        });
        if let Value::Object(fields) = &mut doc {
            if let Some(id) = request_id {
                fields.insert(crate::telemetry::REQUEST_ID.to_owned(), json!(id));
            }
            for (name, (_, value)) in &self.values {
                fields.insert((*name).to_owned(), json!(value));
            }
        }
        doc
    }

    /// Prints the EMF line on stdout, where Lambda's log capture picks it up, at a level Lambda's filter keeps, with
    /// the request id of the invocation it runs in.
    pub fn emit(&self) {
        let request_id = crate::telemetry::request_id();
        let line = self.to_emf(
            &self.emitter.dimension_value(),
            LogLevel::for_metrics(LogLevel::configured()),
            request_id.as_deref(),
        );
        println!("{line}");
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
        let mut c = Counters::new(Emitter::History, &[history::WRITTEN, history::DUPLICATE, history::REJECTED]);
        c.add(history::WRITTEN, 2);
        c.add(history::WRITTEN, 1);
        let doc = c.to_emf("shadow-history", LogLevel::Info, Some("req-1"));
        assert_eq!(doc["written"], 3);
        assert_eq!(doc["rejected"], 0);
        assert_eq!(doc["Function"], "shadow-history");
        let metrics = &doc["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(metrics["Namespace"], NAMESPACE);
        assert_eq!(metrics["Metrics"].as_array().map(Vec::len), Some(3));
        assert!(doc["_aws"]["Timestamp"].as_u64().is_some_and(|t| t > 0));
        assert_eq!(doc["requestId"], "req-1");
        assert!(metrics["Metrics"].as_array().is_some_and(|m| m.iter().all(|d| d["Unit"] == "Count")));
    }

    #[test]
    fn the_least_value_is_kept_and_declared_only_once_seen() {
        let mut c = Counters::new(Emitter::History, &[history::WRITTEN]);
        assert!(c.to_emf("f", LogLevel::Info, None).get("newestEventAge").is_none());
        c.least(history::NEWEST_EVENT_AGE, 900);
        c.least(history::NEWEST_EVENT_AGE, 300);
        c.least(history::NEWEST_EVENT_AGE, 700);
        let doc = c.to_emf("f", LogLevel::Info, None);
        assert_eq!(doc["newestEventAge"], 300);
        let definitions = doc["_aws"]["CloudWatchMetrics"][0]["Metrics"].as_array().cloned().unwrap_or_default();
        assert!(definitions.contains(&json!({"Name": "newestEventAge", "Unit": "Milliseconds"})), "{doc}");
        assert!(doc.get("requestId").is_none(), "no invocation, no request id: {doc}");
    }

    #[test]
    fn the_catalog_names_each_metric_once_per_function() {
        let mut seen = std::collections::HashSet::new();
        for metric in catalog() {
            assert!(seen.insert((metric.emitter(), metric.name())), "{metric:?} twice");
        }
        assert_eq!(seen.len(), history::ALL.len() + push::ALL.len());
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
        let counters = Counters::new(Emitter::History, &[history::WRITTEN]);
        for configured in LogLevel::ALL.map(Some).into_iter().chain([None]) {
            let line = counters.to_emf("shadow-history", LogLevel::for_metrics(configured), None);
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
