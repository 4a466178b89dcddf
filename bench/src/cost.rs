//! us-east-1 list prices, each with where it was read and when, and the measured counts they multiply.
//! Free tiers and volume tiers are left out: these are the first-tier prices a new workload pays.

use std::path::Path;

use serde_json::{Value, json};

/// AWS IoT Core, Device Shadow and registry: $1.25 per million operations, each metered per 1 KB of the shadow
/// record (an 1.5 KB document is two operations); registry calls such as ListThingsInThingGroup are operations
/// too. <https://aws.amazon.com/iot-core/pricing/> and its "additional metering details", read 2026-12-07.
pub const SHADOW_OR_REGISTRY_OPERATION: f64 = 1.25 / 1e6;
/// AWS IoT Core rules engine: $0.15 per million rules triggered. <https://aws.amazon.com/iot-core/pricing/>
/// (the price this project quotes; the page's tables render from a template, and the copy reached on 2026-12-07
/// did not show the figure itself: check it there).
pub const RULE_TRIGGERED: f64 = 0.15 / 1e6;
/// AWS IoT Core rules engine: $0.15 per million actions executed (same page and caveat as [`RULE_TRIGGERED`]).
pub const RULE_ACTION: f64 = 0.15 / 1e6;
/// DynamoDB on-demand, Standard table class: $0.625 per million write request units (after the November 2024
/// price cut). <https://aws.amazon.com/dynamodb/pricing/on-demand/>, read 2026-12-07.
pub const DYNAMODB_WRITE_UNIT: f64 = 0.625 / 1e6;
/// DynamoDB on-demand: $0.125 per million read request units (same page).
pub const DYNAMODB_READ_UNIT: f64 = 0.125 / 1e6;
/// SQS standard queues: $0.40 per million requests (each 64 KB chunk of a payload is a request).
/// <https://aws.amazon.com/sqs/pricing/>: not checked against that page (the figure long published there).
pub const SQS_REQUEST: f64 = 0.40 / 1e6;
/// Lambda on arm64: $0.0000133334 per GB-second (the first 7.5 billion GB-s a month).
/// <https://aws.amazon.com/lambda/pricing/>, read 2026-12-07.
pub const LAMBDA_ARM_GB_SECOND: f64 = 0.000_013_333_4;
/// Lambda: $0.20 per million requests (same page).
pub const LAMBDA_REQUEST: f64 = 0.20 / 1e6;
/// AWS IoT Device Management Jobs: $0.003 per remote action (a job execution on one thing), the first 250 000 a
/// month; later volumes are cheaper per action. <https://aws.amazon.com/iot-device-management/pricing/>, read
/// 2026-12-07.
pub const IOT_JOB_EXECUTION: f64 = 0.003;

/// `MemorySize` of `function` (a logical id) in template.yaml, in MB.
pub fn template_memory_mb(root: &Path, function: &str) -> Result<u32, String> {
    let path = root.join("template.yaml");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let header = format!("  {function}:");
    let mut lines = text.lines().skip_while(|l| l.trim_end() != header);
    lines.next().ok_or_else(|| format!("{function} is not in {}", path.display()))?;
    // The function's own properties, up to the next resource (two-space indent).
    lines
        .take_while(|l| l.is_empty() || l.starts_with("   ") || l.trim_start().starts_with('#'))
        .find_map(|l| l.trim().strip_prefix("MemorySize:").map(|m| m.trim().to_owned()))
        .ok_or_else(|| format!("{function} has no MemorySize in {}", path.display()))?
        .parse()
        .map_err(|e| format!("{function}'s MemorySize: {e}"))
}

/// One line of a bill: what, how many per unit of work, the price each, and the cost per million units of work.
pub struct Line {
    pub what: &'static str,
    pub per_unit: f64,
    pub price: f64,
}

impl Line {
    pub fn per_million(&self) -> f64 {
        self.per_unit * self.price * 1e6
    }
}

/// The lines, their total per million units of work, as JSON.
pub fn bill(lines: &[Line]) -> (f64, Value) {
    let total: f64 = lines.iter().map(Line::per_million).sum();
    let items: Vec<Value> = lines
        .iter()
        .map(|l| json!({"what": l.what, "per_unit": l.per_unit, "price_usd": l.price, "usd_per_million": l.per_million()}))
        .collect();
    (total, json!({"lines": items, "usd_per_million": total}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bill_multiplies_counts_by_prices() {
        let (total, _) = bill(&[
            Line { what: "shadow", per_unit: 3.0, price: SHADOW_OR_REGISTRY_OPERATION },
            Line { what: "write", per_unit: 1.0, price: DYNAMODB_WRITE_UNIT },
        ]);
        assert!((total - (3.75 + 0.625)).abs() < 1e-9, "{total}");
    }

    #[test]
    fn the_template_gives_each_function_its_memory() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let push = template_memory_mb(&root, "ShadowPushFunction").expect("shadow-push's memory");
        let history = template_memory_mb(&root, "ShadowHistoryFunction").expect("shadow-history's memory");
        assert!((128..=10_240).contains(&push) && (128..=10_240).contains(&history), "{push} {history}");
        assert!(template_memory_mb(&root, "NoSuchFunction").is_err());
    }
}
