//! Counters as CloudWatch embedded-metric-format (EMF) lines: CloudWatch turns each line into metric points.
//!
//! The format is one JSON object; a metrics facade and its global recorder would add more than it saves here.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

pub const NAMESPACE: &str = "ShadowFleet";

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

    /// The EMF document for `function`.
    pub fn to_emf(&self, function: &str) -> Value {
        let timestamp = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let definitions: Vec<Value> = self.counts.keys().map(|name| json!({"Name": name, "Unit": "Count"})).collect();
        let mut doc = json!({
            "_aws": {
                "Timestamp": timestamp,
                "CloudWatchMetrics": [{"Namespace": NAMESPACE, "Dimensions": [["Function"]], "Metrics": definitions}]
            },
            "Function": function,
        });
        if let Value::Object(fields) = &mut doc {
            for (name, count) in &self.counts {
                fields.insert((*name).to_owned(), json!(count));
            }
        }
        doc
    }

    /// Prints the EMF line on stdout, where Lambda's log capture picks it up.
    pub fn emit(&self, function: &str) {
        println!("{}", self.to_emf(function));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emf_declares_every_counter() {
        let mut c = Counters::new(&["written", "duplicate", "rejected"]);
        c.add("written", 2);
        c.add("written", 1);
        let doc = c.to_emf("shadow-history");
        assert_eq!(doc["written"], 3);
        assert_eq!(doc["rejected"], 0);
        assert_eq!(doc["Function"], "shadow-history");
        let metrics = &doc["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(metrics["Namespace"], NAMESPACE);
        assert_eq!(metrics["Metrics"].as_array().map(Vec::len), Some(3));
        assert!(doc["_aws"]["Timestamp"].as_u64().is_some_and(|t| t > 0));
    }
}
