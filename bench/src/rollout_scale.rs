//! `fleet-bench rollout-scale`: a rollout of 1 000 000 things in 3 phases (1 %, 10 %, 100 %, bake 0) at AWS's
//! scale: the data-plane stand-in at the 4000/s update quota (and 4000/s for reads), and DynamoDB's partition
//! limit (1000 write units, 3000 read units a second per partition-key value) in front of the push table, whose
//! journal the front serves from memory ([`crate::dynamo_front`]); the record goes on to DynamoDB Local.
//!
//! It reports the walk's things/s ÷ the quota, the journal writes refused, the function's RSS over the run, what
//! each updated thing cost in requests and units (the stand-ins' counters, the function's invocations timed), and
//! that bill at the default region's prices ([`cost::DEFAULT`]) next to AWS IoT Jobs' price for the same fleet.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use devstack::http::{Seen, watching};
use devstack::lambda::LocalLambda;
use devstack::service::{LambdaService, Timing};
use devstack::unique;
use serde_json::{Value, json};
use shadow_aws::tables;

use crate::cost::{self, Line};
use crate::dynamo_front::{DynamoFront, Limits as PartitionLimits};
use crate::meter::{InvokedBy, Meter, Timed};
use crate::standin::{Limits, StandIn};
use crate::{Bench, SEED_DESIRED, mb};

pub const THINGS: usize = 1_000_000;
/// A smaller fleet, to try the mode out quickly (the figures are the million's only at the default).
const THINGS_VAR: &str = "FLEET_BENCH_SCALE_THINGS";
const QUOTA: f64 = 4000.0;
/// How long the whole rollout may take before the bench gives up on it.
const LIMIT: Duration = Duration::from_secs(3 * 3600);
const TIMELINE_EVERY: Duration = Duration::from_millis(250);

/// Seconds in which the stand-in took updates, and in which it took reads only (judging).
fn walk_and_judge_seconds(timeline: &[(Instant, u64, u64)]) -> (f64, f64) {
    let (mut walking, mut judging) = (0.0, 0.0);
    for pair in timeline.windows(2) {
        let ((t0, u0, r0), (t1, u1, r1)) = (pair[0], pair[1]);
        let dt = t1.duration_since(t0).as_secs_f64();
        if u1 > u0 {
            walking += dt;
        } else if r1 > r0 {
            judging += dt;
        }
    }
    (walking, judging)
}

/// The function's embedded-metric lines, summed by metric name.
fn metric_totals(lines: &[String]) -> Value {
    let mut totals = serde_json::Map::new();
    for line in lines.iter().filter(|l| l.contains("\"_aws\"")) {
        let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(line) else { continue };
        for name in ["updated", "unchanged", "failed", "throttled", "converged", "pending", "stalled", "woken"] {
            if let Some(n) = fields.get(name).and_then(Value::as_u64) {
                let sum = totals.get(name).and_then(Value::as_u64).unwrap_or(0) + n;
                totals.insert(name.into(), json!(sum));
            }
        }
    }
    Value::Object(totals)
}

impl Bench {
    pub(crate) async fn rollout_scale(&mut self) {
        let things = std::env::var(THINGS_VAR).ok().and_then(|n| n.parse().ok()).unwrap_or(THINGS);
        let limits = Limits {
            requests_per_second: QUOTA,
            burst: QUOTA / 10.0,
            latency: Duration::from_millis(20),
            reads_per_second: Some(QUOTA),
        };
        let (group, prefix) = ("bench-scale", "bench-scale-");
        let standin = StandIn::start(limits, group, prefix, things).await;
        let db = self.stack.dynamodb();
        let table = unique("bench-push");
        tables::ensure_table(&db, &table, &tables::PUSH).await.expect("creating the push table");
        let front =
            DynamoFront::start(&self.stack.var("AWS_ENDPOINT_URL_DYNAMODB"), Some(&table), Some(PartitionLimits::AWS))
                .await;
        let sqs = self.stack.sqs();
        let queue_url = sqs
            .create_queue()
            .queue_name(unique("bench-push"))
            .send()
            .await
            .expect("create_queue")
            .queue_url
            .unwrap_or_default();
        // The function's own SQS requests (its hand-offs), seen on their way to moto.
        let sent = Seen::default();
        let sqs_front = watching(&self.stack.var("AWS_ENDPOINT_URL_SQS"), sent.clone()).await;
        let env = self.env(&[
            ("PUSH_TABLE", table.clone()),
            ("PUSH_QUEUE_URL", queue_url.clone()),
            ("PUSH_MAX_TPS", (QUOTA as u32).to_string()),
            ("PUSH_READ_TPS", (QUOTA as u32).to_string()),
            ("PUSH_CONCURRENCY", "256".into()),
            ("AWS_ENDPOINT_URL_IOT_DATA_PLANE", standin.url.clone()),
            ("AWS_ENDPOINT_URL_IOT", standin.url.clone()),
            ("AWS_ENDPOINT_URL_DYNAMODB", front.url.clone()),
            ("AWS_ENDPOINT_URL_SQS", sqs_front.url()),
        ]);
        // Lambda's CPU share at the template's MemorySize (FLEET_BENCH_CPU_CAP=none: a whole core).
        let cap = self.cap("shadow-push", "ShadowPushFunction");
        let function =
            LocalLambda::start_command_capturing(cap.command(Self::our_binary("shadow-push")), "shadow-push", &env)
                .await;
        let pid = function.pid_handle();
        let push_id = unique("bench-scale");
        let request = json!({"pushId": push_id,
                             "desired": serde_json::from_str::<Value>(SEED_DESIRED).unwrap_or_default(),
                             "targets": {"thingGroup": group}, "skipUnchanged": true,
                             "rollout": {"phases": [{"percent": 1}, {"percent": 10}, {"percent": 100}],
                                         "bakeSeconds": 0, "convergedPercent": 0, "failedPercent": 100}});
        let timing = Timing {
            timeout: Duration::from_secs(900),
            retries: [Duration::from_secs(60), Duration::from_secs(120)],
            visibility: Duration::from_secs(1800),
            schedule_every: Duration::from_secs(60),
            poll_every: Duration::from_millis(50),
        };
        let timed = Timed::new(&function);
        let service = LambdaService::new(&timed, sqs.clone(), &queue_url, timing);
        let record = || crate::push_record(&db, &table, &push_id);
        let done = || async { crate::is_final(&record().await) };
        // The stand-in's counters over time: when the walk updated, and when only judging read.
        let timeline = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sampler = {
            let (timeline, counts) = (timeline.clone(), standin.counts.clone());
            tokio::spawn(async move {
                loop {
                    let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
                    if let Ok(mut t) = timeline.lock() {
                        t.push((Instant::now(), load(&counts.updates), load(&counts.reads)));
                    }
                    tokio::time::sleep(TIMELINE_EVERY).await;
                }
            })
        };
        let meter = Meter::start(&self.root, pid);
        let started = Instant::now();
        let finished = service.run_until(&request, &json!({"sweepPushes": true}), LIMIT, done).await;
        let seconds = started.elapsed().as_secs_f64();
        let usage = meter.finish().capped_by(&cap);
        sampler.abort();
        let hwm = function.peak_rss().unwrap_or(0);
        let logs = function.logs().map(|l| l.lines()).unwrap_or_default();
        function.stop().await;
        drop(cap);
        let summary = record().await;
        assert!(finished, "the rollout of {things} things did not finish: {summary}");

        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let c = &standin.counts;
        let (reads, updates, listings, metered, throttled_429) =
            (load(&c.reads), load(&c.updates), load(&c.listings), load(&c.metered), load(&c.throttled));
        let per = |n: f64| n / (updates.max(1) as f64);
        let timeline = timeline.lock().map(|t| t.clone()).unwrap_or_default();
        let (walking, judging) = walk_and_judge_seconds(&timeline);
        let walk_efficiency = updates as f64 / walking.max(1e-3) / QUOTA;
        let overall = updates as f64 / seconds / QUOTA;
        let journal = &front.counts.journal_writes;
        let (journal_accepted, journal_refused) = (load(&journal.items), load(&journal.refused));
        let journal_throttling = journal_refused as f64 / (journal_accepted + journal_refused).max(1) as f64;
        let sqs_by_function = sent.requests().len() as u64;
        let (queue_invocations, _) = timed.billed(|by| by == InvokedBy::Queue);
        // The event source mapping receives and deletes each message: two more requests (its empty polls are the
        // queue's, whatever runs).
        let sqs_requests = sqs_by_function + 2 * queue_invocations;
        let (invocations, lambda_seconds) = timed.billed(|by| by != InvokedBy::Sweep);
        let (sweeps, sweep_seconds) = timed.billed(|by| by == InvokedBy::Sweep);
        let memory_mb = cost::template_memory_mb(&self.root, "ShadowPushFunction").unwrap_or_else(|e| panic!("{e}"));
        let gb_seconds = lambda_seconds * f64::from(memory_mb) / 1024.0;
        let dynamo = &front.counts;
        let (total, bill) = cost::bill(&[
            Line {
                what: "shadow operations (reads + updates, per KB)",
                per_unit: per(metered as f64),
                price: cost::SHADOW_OR_REGISTRY_OPERATION,
            },
            Line {
                what: "registry: ListThingsInThingGroup pages",
                per_unit: per(listings as f64),
                price: cost::SHADOW_OR_REGISTRY_OPERATION,
            },
            Line {
                what: "DynamoDB write units",
                per_unit: per(dynamo.write_units()),
                price: cost::DYNAMODB_WRITE_UNIT,
            },
            Line { what: "DynamoDB read units", per_unit: per(dynamo.read_units()), price: cost::DYNAMODB_READ_UNIT },
            Line {
                what: "SQS requests (hand-offs: send, receive, delete)",
                per_unit: per(sqs_requests as f64),
                price: cost::SQS_REQUEST,
            },
            Line { what: "Lambda requests", per_unit: per(invocations as f64), price: cost::LAMBDA_REQUEST },
            Line { what: "Lambda GB-seconds (arm64)", per_unit: per(gb_seconds), price: cost::LAMBDA_ARM_GB_SECOND },
        ]);
        let jobs = cost::IOT_JOB_EXECUTION.usd * 1e6;
        let per_sweep = if sweeps > 0 { sweep_seconds / sweeps as f64 } else { 0.0 };
        let (sweeper, sweeper_bill) = cost::sweeper_per_month(&cost::DEFAULT, per_sweep, memory_mb);

        let bound = usage.describe();
        let capped = if usage.cap_json["capped"] == json!(true) { "capped" } else { "UNCAPPED" };
        let cpu_ms_per_thing = per(usage.function_cpu_seconds) * 1000.0;
        self.row(
            &format!("rollout-scale: walk things/s / update quota ({things}, 3 phases, {capped})"),
            walk_efficiency,
            None,
            None,
            ">= 0.95",
            Some(walk_efficiency >= 0.95),
        );
        self.bound(&usage);
        self.row("rollout-scale: updates/s over the whole run (judging too) / quota", overall, None, None, "-", None);
        self.bound(&usage);
        self.row(
            "rollout-scale: journal writes refused (ProvisionedThroughputExceeded), %",
            journal_throttling * 100.0,
            None,
            None,
            "<= 1%",
            Some(journal_throttling <= 0.01),
        );
        self.row(
            "rollout-scale: push peak RSS, MB (sampled every 0.5 s)",
            mb(usage.peak_rss.max(hwm)),
            None,
            None,
            "flat",
            None,
        );
        self.row(
            "per updated thing: shadow reads / updates",
            per(reads as f64),
            Some(per(updates as f64)),
            None,
            "-",
            None,
        );
        self.row(
            "per updated thing: DynamoDB write requests / write units",
            per(dynamo.write_requests() as f64),
            Some(per(dynamo.write_units())),
            None,
            "-",
            None,
        );
        self.row(
            "per updated thing: DynamoDB read requests / read units",
            per(dynamo.read_requests() as f64),
            Some(per(dynamo.read_units())),
            None,
            "-",
            None,
        );
        self.row("per updated thing: SQS requests", per(sqs_requests as f64), None, None, "-", None);
        self.row("per updated thing: Lambda ms", per(lambda_seconds) * 1000.0, None, None, "-", None);
        self.row(&format!("per updated thing: shadow-push CPU-ms ({capped})"), cpu_ms_per_thing, None, None, "-", None);
        self.bound(&usage);
        self.row(
            &format!("cost per million updated things, USD in {} (vs AWS IoT Jobs)", cost::DEFAULT_REGION.code()),
            total,
            Some(jobs),
            Some(jobs / total.max(1e-9)),
            "-",
            None,
        );
        let sweeper_row =
            format!("the sweeper a month, USD in {} ({sweeps} sweeps measured)", cost::DEFAULT_REGION.code());
        self.row(&sweeper_row, sweeper, None, None, "-", None);
        let timeline_every = TIMELINE_EVERY.as_secs_f64();
        self.results.push((
            "rollout_scale".into(),
            json!({
                "things": things, "phases_percent": [1, 10, 100], "bake_seconds": 0, "quota_rps": QUOTA,
                "read_quota_rps": QUOTA, "partition_limits": {"write_units_per_second": PartitionLimits::AWS.write_units_per_second,
                                                             "read_units_per_second": PartitionLimits::AWS.read_units_per_second},
                "journal": "served from memory by the bench's DynamoDB front (bench/src/dynamo_front.rs); the record by DynamoDB Local",
                "seconds": seconds, "walking_seconds": walking, "judging_seconds": judging,
                "timeline_resolution_seconds": timeline_every,
                "updates": updates, "reads": reads, "listings": listings, "shadow_operations_metered": metered,
                "shadow_429s": throttled_429,
                "walk_efficiency": walk_efficiency, "overall_efficiency": overall,
                "function_cpu_ms_per_updated_thing": cpu_ms_per_thing,
                "journal_writes_accepted": journal_accepted, "journal_writes_refused": journal_refused,
                "journal_throttling": journal_throttling,
                "dynamodb": dynamo.to_json(),
                "sqs": {"by_function": sqs_by_function, "queue_invocations": queue_invocations, "counted": sqs_requests},
                "lambda": {"invocations": invocations, "billed_seconds": lambda_seconds, "memory_mb": memory_mb,
                           "gb_seconds": gb_seconds, "sweeps": sweeps, "sweep_seconds": sweep_seconds},
                "function_metrics": metric_totals(&logs),
                "record": {"state": summary["state"], "updated": summary["updated"], "unchanged": summary["unchanged"],
                           "failed": summary["failed"], "throttled": summary["throttled"], "requests": summary["requests"],
                           "phases": summary["phases"]},
                "peak_rss_mb": mb(usage.peak_rss.max(hwm)),
                "usage": usage.to_json(), "bound": bound,
                "cost_per_million_updated_things": bill, "iot_jobs_per_million_things_usd": jobs,
                "sweeper_per_month": sweeper_bill,
            }),
        ));
        let _ = sqs.delete_queue().queue_url(&queue_url).send().await;
        let _ = db.delete_table().table_name(table).send().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walking_is_when_updates_advance_and_judging_when_only_reads_do() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let timeline =
            [(at(0), 0, 0), (at(250), 100, 100), (at(500), 200, 200), (at(750), 200, 300), (at(1000), 200, 300)];
        let (walking, judging) = walk_and_judge_seconds(&timeline);
        assert!((walking - 0.5).abs() < 1e-9 && (judging - 0.25).abs() < 1e-9, "{walking} {judging}");
    }

    #[test]
    fn metric_lines_are_summed_by_name() {
        let lines = vec![
            r#"{"_aws":{},"updated":10,"throttled":2}"#.to_owned(),
            r#"{"level":"WARN","message":"retrying"}"#.to_owned(),
            r#"{"_aws":{},"updated":5}"#.to_owned(),
        ];
        assert_eq!(metric_totals(&lines), json!({"updated": 15, "throttled": 2}));
    }
}
