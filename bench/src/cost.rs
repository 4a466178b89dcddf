//! List prices, each with the region it holds in, where it was read and when, and the measured counts they multiply.
//! The bench bills in [`DEFAULT_REGION`], the region samconfig.toml deploys to, with [`AP_NORTHEAST_1`]: Tokyo's own
//! price where one was found in a citable source, else us-east-1's, which keeps [`Region::UsEast1`] in its
//! [`Price::region`] so that every bill names the lines priced in another region.
//! Free tiers and volume tiers are left out: these are the first-tier prices a new workload pays.

use std::path::Path;

use serde_json::{Value, json};

/// A region whose prices are written here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Region {
    UsEast1,
    ApNortheast1,
}

impl Region {
    pub const fn code(self) -> &'static str {
        match self {
            Region::UsEast1 => "us-east-1",
            Region::ApNortheast1 => "ap-northeast-1",
        }
    }
}

/// The region samconfig.toml deploys to; its prices are the ones the bench reports.
pub const DEFAULT_REGION: Region = Region::ApNortheast1;

/// A list price: USD per unit, and the region whose price it is.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Price {
    pub usd: f64,
    pub region: Region,
}

/// us-east-1 list prices.
pub mod us_east_1 {
    use super::{Price, Region};

    const fn usd(usd: f64) -> Price {
        Price { usd, region: Region::UsEast1 }
    }

    /// AWS IoT Core, Device Shadow and registry: $1.25 per million operations, each metered per 1 KB of the shadow
    /// record (an 1.5 KB document is two operations); registry calls such as ListThingsInThingGroup are operations
    /// too. <https://aws.amazon.com/iot-core/pricing/> and its "additional metering details", read 2026-12-07.
    pub const SHADOW_OR_REGISTRY_OPERATION: Price = usd(1.25 / 1e6);
    /// AWS IoT Core rules engine: $0.15 per million rules triggered. <https://aws.amazon.com/iot-core/pricing/>
    /// (the price this project quotes; the page's tables render from a template, and the copy reached on 2026-12-07
    /// did not show the figure itself: check it there).
    pub const RULE_TRIGGERED: Price = usd(0.15 / 1e6);
    /// AWS IoT Core rules engine: $0.15 per million actions executed (same page and caveat as [`RULE_TRIGGERED`]).
    pub const RULE_ACTION: Price = usd(0.15 / 1e6);
    /// DynamoDB on-demand, Standard table class: $0.625 per million write request units (after the November 2024
    /// price cut). <https://aws.amazon.com/dynamodb/pricing/on-demand/>, read 2026-12-07.
    pub const DYNAMODB_WRITE_UNIT: Price = usd(0.625 / 1e6);
    /// DynamoDB on-demand: $0.125 per million read request units (same page).
    pub const DYNAMODB_READ_UNIT: Price = usd(0.125 / 1e6);
    /// SQS standard queues: $0.40 per million requests (each 64 KB chunk of a payload is a request).
    /// <https://aws.amazon.com/sqs/pricing/>: not checked against that page (the figure long published there).
    pub const SQS_REQUEST: Price = usd(0.40 / 1e6);
    /// Lambda on arm64: $0.0000133334 per GB-second (the first 7.5 billion GB-s a month).
    /// <https://aws.amazon.com/lambda/pricing/>, read 2026-12-07.
    pub const LAMBDA_ARM_GB_SECOND: Price = usd(0.000_013_333_4);
    /// Lambda: $0.20 per million requests (same page).
    pub const LAMBDA_REQUEST: Price = usd(0.20 / 1e6);
    /// AWS IoT Device Management Jobs: $0.003 per remote action (a job execution on one thing), the first 250 000 a
    /// month; later volumes are cheaper per action. <https://aws.amazon.com/iot-device-management/pricing/>, read
    /// 2026-12-07.
    pub const IOT_JOB_EXECUTION: Price = usd(0.003);
    /// EventBridge Scheduler: $1.00 per million scheduled invocations after the first 14 million a month
    /// (<https://aws.amazon.com/eventbridge/pricing/>: the figure this project quoted, not re-read here).
    pub const SCHEDULER_INVOCATION: Price = usd(1.00 / 1e6);
}

/// ap-northeast-1 (Tokyo) list prices found in a citable source. The pricing pages render their region tables
/// from JSON at run time, so the copies read did not show Tokyo's figures; the ones here are the AWS Price List's,
/// each named by its usage type (`APN1-` is Tokyo's prefix), either from a copy of the Price List itself or as
/// quoted, with the usage type, by public code that read it. Such a file is cited by what it is and by a string to
/// find it with in GitHub's code search (its repository was not identified when it was read).
pub mod ap_northeast_1 {
    use super::{Price, Region};

    const fn usd(usd: f64) -> Price {
        Price { usd, region: Region::ApNortheast1 }
    }

    /// EventBridge Scheduler in Asia Pacific (Tokyo): $1.25 per million scheduled invocations after the first
    /// 14 million a month (usage type `APN1-ScheduledInvocation`, price list effective 2024-10-01). The AWS Price
    /// List's `AWSEvents` offer as kept by
    /// <https://huggingface.co/datasets/labofsahil/aws-pricing-dataset/raw/18779999a001e7aaaa0d18e08a3b665d2ec74895/AWSEvents.csv>
    /// (row SKU `29C3758CBCYNXH8B`, rate `AGTZK4FFDN`: "$1.25 per million scheduled invocations in Asia Pacific
    /// (Tokyo)"), read 2026-12-08.
    pub const SCHEDULER_INVOCATION: Price = usd(1.25 / 1e6);
    /// DynamoDB on-demand, Standard table class, in Asia Pacific (Tokyo): $0.715 per million write request units
    /// (usage type `APN1-WriteRequestUnits`; us-east-1's is $0.625). The Price List's figure as quoted, with its
    /// usage type, by a cost model whose header says its prices are the AWS Price List API's for ap-northeast-1,
    /// downloaded 2026-09-23 from `pricing.us-east-1.amazonaws.com/offers/v1.0/aws/<Service>/current/ap-northeast-1/
    /// index.json` (a Python `cost_model.py` of a project called milk-camera, in two versions; find it by
    /// `"ddb_wru":            0.000000715, # APN1-WriteRequestUnits`); the same figure under the same usage type in
    /// a JavaScript test fixture of Price List offers (a weaker source: `buildRegionPrices` with
    /// `'APN1-WriteRequestUnits', dims: [[0, null, '0.000000715']]`). Read 2026-12-08.
    pub const DYNAMODB_WRITE_UNIT: Price = usd(0.715 / 1e6);
    /// DynamoDB on-demand in Asia Pacific (Tokyo): $0.1425 per million read request units (usage type
    /// `APN1-ReadRequestUnits`; us-east-1's is $0.125). Same sources as [`DYNAMODB_WRITE_UNIT`].
    pub const DYNAMODB_READ_UNIT: Price = usd(0.1425 / 1e6);
    /// SQS standard queues in Asia Pacific (Tokyo): $0.40 per million requests (usage type `APN1-Requests-Tier1` of
    /// the `AWSQueueService` offer; the same as us-east-1's). The cost model of [`DYNAMODB_WRITE_UNIT`] (its
    /// `sqs_req`, price list downloaded 2026-09-23). Read 2026-12-08.
    pub const SQS_REQUEST: Price = usd(0.40 / 1e6);
    /// CloudWatch in Asia Pacific (Tokyo): $0.10 per standard-resolution alarm a month (usage type
    /// `APN1-CW:AlarmMonitorUsage`; the same as us-east-1's). Two sources that agree: a quote's table of AWS Price
    /// List figures queried with the AWS CLI on 2026-07-20 for `Asia Pacific (Tokyo)`, effective 2026-07-01 (a
    /// Markdown quote for CloudWatch Synthetics, "S2b 報價 - 2026-07-20"; find it by
    /// ``| CloudWatch standard alarm | `APN1-CW:AlarmMonitorUsage` ``), and the cost model of
    /// [`DYNAMODB_WRITE_UNIT`]. Read 2026-12-08.
    /// Not in a bill: the monthly floor in docs/deploying.md multiplies it by the template's alarms.
    #[allow(dead_code, reason = "docs/deploying.md's cost to run quotes it; no bill multiplies it")]
    pub const CLOUDWATCH_ALARM_MONTH: Price = usd(0.10);
    /// CloudWatch Logs in Asia Pacific (Tokyo): $0.76 per GB ingested (usage type `APN1-DataProcessing-Bytes` of
    /// `AmazonCloudWatch`; us-east-1's is $0.50). Three sources that agree: the quote of [`CLOUDWATCH_ALARM_MONTH`]
    /// (effective 2026-07-01), a table of Tokyo's unit prices read from the AWS Pricing API on 2026-08-17 (price
    /// list published 2026-08-14, effective 2026-08-01; a Markdown file titled "東京リージョンの単価（実測）"), and
    /// the cost model of [`DYNAMODB_WRITE_UNIT`]. Read 2026-12-08. Not in a bill (docs/deploying.md).
    #[allow(dead_code, reason = "docs/deploying.md's cost to run quotes it; no bill multiplies it")]
    pub const CLOUDWATCH_LOGS_INGESTED_GB: Price = usd(0.76);
    /// CloudWatch Logs in Asia Pacific (Tokyo): $0.033 per GB-month stored (usage type `APN1-TimedStorage-ByteHrs`
    /// of `AmazonCloudWatch`; us-east-1's is $0.03). The first two sources of [`CLOUDWATCH_LOGS_INGESTED_GB`].
    /// Read 2026-12-08. Not in a bill (docs/deploying.md).
    #[allow(dead_code, reason = "docs/deploying.md's cost to run quotes it; no bill multiplies it")]
    pub const CLOUDWATCH_LOGS_STORED_GB_MONTH: Price = usd(0.033);
}

/// The prices a bill multiplies by, for one region.
#[derive(Clone, Copy, Debug)]
pub struct Prices {
    pub region: Region,
    pub shadow_or_registry_operation: Price,
    pub rule_triggered: Price,
    pub rule_action: Price,
    pub dynamodb_write_unit: Price,
    pub dynamodb_read_unit: Price,
    pub sqs_request: Price,
    pub lambda_arm_gb_second: Price,
    pub lambda_request: Price,
    pub iot_job_execution: Price,
    pub scheduler_invocation: Price,
}

pub const US_EAST_1: Prices = Prices {
    region: Region::UsEast1,
    shadow_or_registry_operation: us_east_1::SHADOW_OR_REGISTRY_OPERATION,
    rule_triggered: us_east_1::RULE_TRIGGERED,
    rule_action: us_east_1::RULE_ACTION,
    dynamodb_write_unit: us_east_1::DYNAMODB_WRITE_UNIT,
    dynamodb_read_unit: us_east_1::DYNAMODB_READ_UNIT,
    sqs_request: us_east_1::SQS_REQUEST,
    lambda_arm_gb_second: us_east_1::LAMBDA_ARM_GB_SECOND,
    lambda_request: us_east_1::LAMBDA_REQUEST,
    iot_job_execution: us_east_1::IOT_JOB_EXECUTION,
    scheduler_invocation: us_east_1::SCHEDULER_INVOCATION,
};

/// Tokyo: its own price where one was found ([`ap_northeast_1`]: the Scheduler's, DynamoDB's requests, SQS's);
/// us-east-1's for the rest, each keeping its region so that the bill says so: IoT Core's shadow, registry and rules
/// prices and IoT Jobs' (no Tokyo figure found in a source that names its usage type), and Lambda's arm64 requests
/// and GB-seconds (the Tokyo figures found, `APN1-Request` and `APN1-Lambda-GB-Second`, are x86's; the arm64 ones
/// only in a test fixture). Replace a us-east-1 price with Tokyo's here once it is read from a source that says it
/// is Tokyo's.
pub const AP_NORTHEAST_1: Prices = Prices {
    region: Region::ApNortheast1,
    dynamodb_write_unit: ap_northeast_1::DYNAMODB_WRITE_UNIT,
    dynamodb_read_unit: ap_northeast_1::DYNAMODB_READ_UNIT,
    sqs_request: ap_northeast_1::SQS_REQUEST,
    scheduler_invocation: ap_northeast_1::SCHEDULER_INVOCATION,
    ..US_EAST_1
};

/// The prices of `region`.
pub const fn prices(region: Region) -> Prices {
    match region {
        Region::UsEast1 => US_EAST_1,
        Region::ApNortheast1 => AP_NORTHEAST_1,
    }
}

/// The default region's prices: the ones the bench bills with.
pub const DEFAULT: Prices = prices(DEFAULT_REGION);

// The default region's prices by name, as the bench's bills use them.
pub const SHADOW_OR_REGISTRY_OPERATION: Price = DEFAULT.shadow_or_registry_operation;
pub const RULE_TRIGGERED: Price = DEFAULT.rule_triggered;
pub const RULE_ACTION: Price = DEFAULT.rule_action;
pub const DYNAMODB_WRITE_UNIT: Price = DEFAULT.dynamodb_write_unit;
pub const DYNAMODB_READ_UNIT: Price = DEFAULT.dynamodb_read_unit;
pub const SQS_REQUEST: Price = DEFAULT.sqs_request;
pub const LAMBDA_ARM_GB_SECOND: Price = DEFAULT.lambda_arm_gb_second;
pub const LAMBDA_REQUEST: Price = DEFAULT.lambda_request;
pub const IOT_JOB_EXECUTION: Price = DEFAULT.iot_job_execution;

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
    pub price: Price,
}

impl Line {
    pub fn per_million(&self) -> f64 {
        self.per_unit * self.price.usd * 1e6
    }
}

/// [`bill_in`] the default region.
pub fn bill(lines: &[Line]) -> (f64, Value) {
    bill_in(DEFAULT_REGION, lines)
}

/// The lines, their total per million units of work, as JSON: the region billed, each line's price with the region
/// it was read for, and the lines priced in another region (no price of `region`'s own was found for them).
pub fn bill_in(region: Region, lines: &[Line]) -> (f64, Value) {
    let total: f64 = lines.iter().map(Line::per_million).sum();
    let items: Vec<Value> = lines
        .iter()
        .map(|l| {
            json!({"what": l.what, "per_unit": l.per_unit, "price_usd": l.price.usd,
                   "price_region": l.price.region.code(), "usd_per_million": l.per_million()})
        })
        .collect();
    let elsewhere: Vec<Value> = lines
        .iter()
        .filter(|l| l.price.region != region)
        .map(|l| json!({"what": l.what, "price_region": l.price.region.code()}))
        .collect();
    (
        total,
        json!({"region": region.code(), "lines": items, "usd_per_million": total, "priced_in_another_region": elsewhere}),
    )
}

/// The sweeper's schedule, `rate(1 minute)`, runs this many times in a 30-day month.
pub const SWEEPS_PER_MONTH: f64 = 43_200.0;

/// What the sweeper costs a month in `prices.region`, whether anything is pushed or not: each sweep is a scheduled
/// invocation, a Lambda request and `billed_seconds` of Lambda at `memory_mb` (its Query of the open-pushes index
/// is not in it: the bench counts DynamoDB's units for the whole run).
pub fn sweeper_per_month(prices: &Prices, billed_seconds: f64, memory_mb: u32) -> (f64, Value) {
    let gb_seconds = SWEEPS_PER_MONTH * billed_seconds * f64::from(memory_mb) / 1024.0;
    let lines = [
        ("EventBridge Scheduler invocations", SWEEPS_PER_MONTH, prices.scheduler_invocation),
        ("Lambda requests", SWEEPS_PER_MONTH, prices.lambda_request),
        ("Lambda GB-seconds (arm64)", gb_seconds, prices.lambda_arm_gb_second),
    ];
    let total: f64 = lines.iter().map(|(_, count, price)| count * price.usd).sum();
    let items: Vec<Value> = lines
        .iter()
        .map(|(what, count, price)| {
            json!({"what": what, "per_month": count, "price_usd": price.usd, "price_region": price.region.code(),
                   "usd_per_month": count * price.usd})
        })
        .collect();
    let json = json!({"region": prices.region.code(), "sweeps_per_month": SWEEPS_PER_MONTH,
                      "billed_seconds_per_sweep": billed_seconds, "memory_mb": memory_mb,
                      "lines": items, "usd_per_month": total});
    (total, json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bill_multiplies_counts_by_prices() {
        let (total, _) = bill_in(
            Region::UsEast1,
            &[
                Line { what: "shadow", per_unit: 3.0, price: us_east_1::SHADOW_OR_REGISTRY_OPERATION },
                Line { what: "write", per_unit: 1.0, price: us_east_1::DYNAMODB_WRITE_UNIT },
            ],
        );
        assert!((total - (3.75 + 0.625)).abs() < 1e-9, "{total}");
    }

    #[test]
    fn a_bill_names_the_lines_priced_in_another_region() {
        let tokyo = prices(Region::ApNortheast1);
        let lines = [
            Line { what: "shadow", per_unit: 3.0, price: tokyo.shadow_or_registry_operation },
            Line { what: "sweeps", per_unit: 1.0, price: tokyo.scheduler_invocation },
        ];
        let (_, json) = bill_in(Region::ApNortheast1, &lines);
        assert_eq!(json["region"], "ap-northeast-1");
        assert_eq!(json["lines"][0]["price_region"], "us-east-1", "{json}");
        assert_eq!(json["lines"][1]["price_region"], "ap-northeast-1", "{json}");
        assert_eq!(
            json["priced_in_another_region"],
            json!([{"what": "shadow", "price_region": "us-east-1"}]),
            "{json}"
        );
        // Billed in us-east-1, the same us-east-1 price is the region's own, and Tokyo's Scheduler price is not.
        let (_, json) = bill_in(Region::UsEast1, &lines);
        assert_eq!(
            json["priced_in_another_region"],
            json!([{"what": "sweeps", "price_region": "ap-northeast-1"}]),
            "{json}"
        );
    }

    #[test]
    fn the_sweeper_costs_a_month_its_invocations_and_its_seconds() {
        // 20 ms billed a sweep at 1769 MB: 43 200 × 0.020 s × 1769/1024 GB = 1492.6 GB-s.
        let (tokyo, json) = sweeper_per_month(&AP_NORTHEAST_1, 0.020, 1769);
        let gb_seconds = 43_200.0 * 0.020 * 1769.0 / 1024.0;
        let expected = 43_200.0 * 1.25e-6 + 43_200.0 * 0.20e-6 + gb_seconds * 0.000_013_333_4;
        assert!((tokyo - expected).abs() < 1e-9, "{tokyo} {expected}");
        assert!((tokyo - 0.0826).abs() < 0.0001, "{tokyo}");
        assert_eq!(json["region"], "ap-northeast-1");
        assert_eq!(json["lines"][0]["price_region"], "ap-northeast-1", "{json}");
        assert_eq!(json["lines"][1]["price_region"], "us-east-1", "{json}");
        // us-east-1's Scheduler price is $1.00 a million: the same sweeps cost 43 200 × $0.25/1e6 less there.
        let (virginia, _) = sweeper_per_month(&US_EAST_1, 0.020, 1769);
        assert!((tokyo - virginia - 43_200.0 * 0.25e-6).abs() < 1e-9, "{tokyo} {virginia}");
    }

    #[test]
    fn tokyo_prices_with_its_own_prices_where_found_and_names_the_rest() {
        let tokyo = AP_NORTHEAST_1;
        let own = [
            ("scheduler", tokyo.scheduler_invocation, 1.25e-6),
            ("dynamodb write", tokyo.dynamodb_write_unit, 0.715e-6),
            ("dynamodb read", tokyo.dynamodb_read_unit, 0.1425e-6),
            ("sqs", tokyo.sqs_request, 0.40e-6),
        ];
        for (what, price, usd) in own {
            assert_eq!(price.region, Region::ApNortheast1, "{what}");
            assert!((price.usd - usd).abs() < 1e-15, "{what}: {}", price.usd);
        }
        let elsewhere = [
            ("shadow or registry", tokyo.shadow_or_registry_operation),
            ("rule triggered", tokyo.rule_triggered),
            ("rule action", tokyo.rule_action),
            ("lambda arm GB-s", tokyo.lambda_arm_gb_second),
            ("lambda request", tokyo.lambda_request),
            ("iot job execution", tokyo.iot_job_execution),
        ];
        for (what, price) in elsewhere {
            assert_eq!(price.region, Region::UsEast1, "{what} is priced at us-east-1's until Tokyo's is sourced");
        }
        // The default region's prices by name are Tokyo's.
        assert_eq!(DYNAMODB_WRITE_UNIT, ap_northeast_1::DYNAMODB_WRITE_UNIT);
        assert_eq!(DYNAMODB_READ_UNIT, ap_northeast_1::DYNAMODB_READ_UNIT);
        assert_eq!(SQS_REQUEST, ap_northeast_1::SQS_REQUEST);
    }

    /// The per-million figures docs/deploying.md, docs/benchmarks.md and README.md quote: the measured counts
    /// written there times each region's prices, to the cent.
    #[test]
    fn the_docs_per_million_figures_are_the_measured_counts_times_the_prices() {
        let cents = |total: f64| (total * 100.0).round() / 100.0;
        // A rollout, per updated thing (docs/benchmarks.md, the quiet run): 3 shadow operations, 0.012 registry
        // pages, 1.001 write units, 0.204 read units, 0.59 ms of Lambda at 1 GB, 9 invocations and 24 SQS requests
        // for the million.
        let rollout = |p: &Prices| {
            bill_in(
                p.region,
                &[
                    Line { what: "shadow", per_unit: 3.0, price: p.shadow_or_registry_operation },
                    Line { what: "registry", per_unit: 0.012, price: p.shadow_or_registry_operation },
                    Line { what: "write", per_unit: 1.001, price: p.dynamodb_write_unit },
                    Line { what: "read", per_unit: 0.204, price: p.dynamodb_read_unit },
                    Line { what: "sqs", per_unit: 24e-6, price: p.sqs_request },
                    Line { what: "requests", per_unit: 9e-6, price: p.lambda_request },
                    Line { what: "GB-s", per_unit: 0.59e-3, price: p.lambda_arm_gb_second },
                ],
            )
            .0
        };
        assert_eq!(cents(rollout(&US_EAST_1)), 4.42);
        assert_eq!(cents(rollout(&AP_NORTHEAST_1)), 4.52);
        // A history event (docs/benchmarks.md, `history-cost`): a rule and its action, 1 write unit, and direct
        // 1 request and 2.01 ms at 256 MB, or queued 0.1 request, 0.96 ms and 1.2 SQS requests.
        let history = |p: &Prices, requests: f64, ms: f64, sqs: f64| {
            bill_in(
                p.region,
                &[
                    Line { what: "rule", per_unit: 1.0, price: p.rule_triggered },
                    Line { what: "action", per_unit: 1.0, price: p.rule_action },
                    Line { what: "requests", per_unit: requests, price: p.lambda_request },
                    Line { what: "GB-s", per_unit: ms / 1e3 * 0.25, price: p.lambda_arm_gb_second },
                    Line { what: "write", per_unit: 1.0, price: p.dynamodb_write_unit },
                    Line { what: "sqs", per_unit: sqs, price: p.sqs_request },
                ],
            )
            .0
        };
        assert_eq!(cents(history(&US_EAST_1, 1.0, 2.01, 0.0)), 1.13);
        assert_eq!(cents(history(&US_EAST_1, 0.1, 0.96, 1.2)), 1.43);
        assert_eq!(cents(history(&AP_NORTHEAST_1, 1.0, 2.01, 0.0)), 1.22);
        assert_eq!(cents(history(&AP_NORTHEAST_1, 0.1, 0.96, 1.2)), 1.52);
    }

    /// The monthly floor docs/deploying.md gives for Tokyo: the sweeper (20 ms billed a sweep at 1769 MB), its
    /// Query of the open-pushes index (0.5 read unit a sweep), 6 alarms and the dashboard ($3.00, a global price).
    #[test]
    fn the_floor_in_tokyo_is_the_docs() {
        let (sweeper, _) = sweeper_per_month(&AP_NORTHEAST_1, 0.020, 1769);
        let query = SWEEPS_PER_MONTH * 0.5 * AP_NORTHEAST_1.dynamodb_read_unit.usd;
        let alarms = 6.0 * ap_northeast_1::CLOUDWATCH_ALARM_MONTH.usd;
        let floor = sweeper + query + alarms + 3.00;
        let gb_seconds = 43_200.0 * 0.020 * 1769.0 / 1024.0;
        let expected = 0.054 + 0.00864 + gb_seconds * 0.000_013_333_4 + 21_600.0 * 0.1425e-6 + 0.60 + 3.00;
        assert!((floor - expected).abs() < 1e-9, "{floor} {expected}");
        assert!((query - 0.003_078).abs() < 1e-9, "{query}");
        assert_eq!((floor * 100.0).round() / 100.0, 3.69);
    }

    #[test]
    fn the_bench_bills_in_the_region_samconfig_deploys_to() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../samconfig.toml");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let regions: Vec<&str> = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("region"))
            .filter_map(|l| l.trim().strip_prefix('='))
            .map(|v| v.trim().trim_matches('"'))
            .collect();
        assert!(!regions.is_empty(), "no region in {}", path.display());
        for region in regions {
            assert_eq!(region, DEFAULT_REGION.code(), "samconfig.toml deploys to {region}");
        }
        assert_eq!(DEFAULT.region, DEFAULT_REGION);
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
