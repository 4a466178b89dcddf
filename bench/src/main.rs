//! `make bench`: shadow-fleet's release binaries side by side with what a user would otherwise run (Python 3 +
//! boto3), in the same run on the same machine. It prints ours, the peer's and the ratio, and writes
//! `bench/results/latest.json`. It asserts nothing about time: the targets are reported as met or missed.

mod cli_history;
mod cost;
mod cpu_cap;
mod dynamo_front;
mod history_at;
mod meter;
mod rollout_scale;
mod standin;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use devstack::lambda::LocalLambda;
use devstack::service::{LambdaService, Timing};
use devstack::{Stack, unique};
use serde_json::{Value, json};
use shadow_aws::{push_store, tables};
use shadow_core::push::PushState;
use tokio::process::Command;

use cpu_cap::CpuCap;
use dynamo_front::DynamoFront;
use meter::{Meter, Usage};
use standin::{Limits, StandIn};

const COLD_STARTS: usize = 21;
const PUSH_THINGS: usize = 100_000;
const PUSH_QUOTA: f64 = 4000.0;
const PEER_PUSH_THINGS: usize = 20_000;
const ROLLOUT_THINGS: usize = 20_000;
const HISTORY_EVENTS: u64 = 10_000;
/// Fewer history events, to try `fleet-bench history` out quickly (the figures are the 10 000's only at the default).
const HISTORY_EVENTS_VAR: &str = "FLEET_BENCH_HISTORY_EVENTS";
const SEED_DESIRED: &str = r#"{"settings":{"mode":1,"temp":20},"firmware_url":"https://s3.com/firmware.bin"}"#;

struct Bench {
    stack: Stack,
    root: PathBuf,
    python: PathBuf,
    peers: PathBuf,
    results: Vec<(String, Value)>,
    /// metric, ours, peer, ratio, target, met, and what bound the figure.
    rows: Vec<[String; 7]>,
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e4).round() / 10.0
}

fn mb(bytes: u64) -> f64 {
    (bytes as f64 / 1048576.0 * 10.0).round() / 10.0
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values.get(values.len() / 2).copied().unwrap_or_default()
}

fn fmt(x: f64) -> String {
    if x >= 100.0 { format!("{x:.0}") } else { format!("{x:.2}") }
}

impl Bench {
    fn row(&mut self, metric: &str, ours: f64, peer: Option<f64>, ratio: Option<f64>, target: &str, met: Option<bool>) {
        self.rows.push([
            metric.to_owned(),
            fmt(ours),
            peer.map(fmt).unwrap_or_else(|| "-".into()),
            ratio.map(|r| format!("{r:.1}x")).unwrap_or_else(|| "-".into()),
            target.to_owned(),
            match met {
                Some(true) => "met".into(),
                Some(false) => "MISSED".into(),
                None => "-".into(),
            },
            String::new(),
        ]);
    }

    /// Says what bound the last row's figure: the function's CPU, the stand-ins', the machine's. A figure taken while
    /// the machine was the bound is marked so, not judged against its target as the function's.
    fn bound(&mut self, usage: &Usage) {
        if let Some(row) = self.rows.last_mut() {
            row[6] = usage.describe();
            if usage.machine_bound() {
                row[5] = "machine-bound".into();
            }
        }
    }

    fn env(&self, extra: &[(&str, String)]) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = self.stack.env.clone().into_iter().collect();
        env.retain(|(k, _)| !extra.iter().any(|(e, _)| e == k));
        env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
        env.push(("RUST_LOG".into(), "warn".into()));
        env
    }

    fn python(&self, handler: &str) -> Command {
        let mut command = Command::new(&self.python);
        command.args(["-m", "awslambdaric", handler]).current_dir(&self.peers);
        command
    }

    /// A Python handler under `awslambdaric`, inside `cap`.
    fn python_in(&self, handler: &str, cap: &CpuCap) -> Command {
        let mut command = cap.command(&self.python);
        command.args(["-m", "awslambdaric", handler]).current_dir(&self.peers);
        command
    }

    /// Our release binary; `FLEET_BENCH_BIN_DIR` points at another build of it (to compare release profiles).
    fn our_binary(name: &str) -> PathBuf {
        match std::env::var_os("FLEET_BENCH_BIN_DIR") {
            Some(dir) => PathBuf::from(dir).join(name),
            None => devstack::lambda::binary(name),
        }
    }

    async fn ours(&self, name: &str, env: &[(String, String)]) -> LocalLambda {
        LocalLambda::start_binary(Self::our_binary(name), name, env).await
    }

    /// Our release binary inside `cap`.
    async fn ours_in(&self, name: &str, env: &[(String, String)], cap: &CpuCap) -> LocalLambda {
        LocalLambda::start_command(cap.command(Self::our_binary(name)), name, env).await
    }

    /// The CPU cap the run asks for ([`cpu_cap::CAP_VAR`]) for the template's function `logical`: Lambda's share
    /// at its `MemorySize`, or none.
    fn cap(&self, name: &str, logical: &str) -> CpuCap {
        let memory_mb = cost::template_memory_mb(&self.root, logical).unwrap_or_else(|e| panic!("{e}"));
        CpuCap::for_run(name, memory_mb)
    }

    /// Median time to the first poll for an event, over `COLD_STARTS` fresh processes.
    async fn cold_start(&self, start: impl AsyncFn() -> LocalLambda) -> Duration {
        let mut times = Vec::new();
        for _ in 0..COLD_STARTS {
            let lambda = start().await;
            match lambda.wait_ready(Duration::from_secs(30)).await {
                Ok(d) => times.push(d),
                Err(e) => panic!("cold start: {e}"),
            }
            lambda.stop().await;
        }
        median(times)
    }

    /// Peak RSS after one real event.
    async fn rss_after(&self, lambda: LocalLambda, event: &Value) -> u64 {
        if let Err(e) = lambda.invoke(event, Duration::from_secs(60)).await {
            panic!("invoke for memory: {e}");
        }
        let rss = lambda.peak_rss().unwrap_or(0);
        lambda.stop().await;
        rss
    }

    async fn cold_starts_and_memory(&mut self) {
        let db = self.stack.dynamodb();
        let history_table = unique("bench-history");
        tables::ensure_table(&db, &history_table, &tables::HISTORY).await.expect("creating the history table");
        let push_table = unique("bench-push");
        tables::ensure_table(&db, &push_table, &tables::PUSH).await.expect("creating the push table");
        let thing = unique("bench-cold");
        self.stack.iot().create_thing().thing_name(&thing).send().await.expect("create_thing");

        let history_env = self.env(&[("HISTORY_TABLE", history_table.clone())]);
        let push_env = self.env(&[("PUSH_TABLE", push_table.clone())]);
        let history_event = devstack::history::sample("update-accepted-named.json");
        let push_event = json!({"desired": serde_json::from_str::<Value>(SEED_DESIRED).unwrap_or_default(),
                                "targets": {"things": [thing]}, "shadowName": "test1", "skipUnchanged": false});

        let mut figures = json!({});
        for (name, handler, env, event) in [
            ("shadow-history", "history_handler.handler", &history_env, &history_event),
            ("shadow-push", "push_handler.handler", &push_env, &push_event),
        ] {
            let ours = self.cold_start(async || self.ours(name, env).await).await;
            let peer =
                self.cold_start(async || LocalLambda::start_command(self.python(handler), name, env).await).await;
            // A push of its own for each (a push id seen before is answered from its record).
            let fresh = || {
                let mut event = event.clone();
                if event.get("desired").is_some() {
                    event["pushId"] = json!(unique("bench-cold"));
                }
                event
            };
            let ours_rss = self.rss_after(self.ours(name, env).await, &fresh()).await;
            let peer_rss =
                self.rss_after(LocalLambda::start_command(self.python(handler), name, env).await, &fresh()).await;
            let start_ratio = peer.as_secs_f64() / ours.as_secs_f64().max(1e-9);
            let rss_ratio = peer_rss as f64 / ours_rss.max(1) as f64;
            self.row(
                &format!("{name} cold start, ms (median of {COLD_STARTS})"),
                ms(ours),
                Some(ms(peer)),
                Some(start_ratio),
                "peer/ours >= 15",
                Some(start_ratio >= 15.0),
            );
            self.row(
                &format!("{name} peak RSS after one event, MB"),
                mb(ours_rss),
                Some(mb(peer_rss)),
                Some(rss_ratio),
                "peer/ours >= 4",
                Some(rss_ratio >= 4.0),
            );
            figures[name] = json!({
                "cold_start_ms": {"ours": ms(ours), "peer": ms(peer), "peer_over_ours": start_ratio},
                "peak_rss_mb": {"ours": mb(ours_rss), "peer": mb(peer_rss), "peer_over_ours": rss_ratio},
            });
        }
        self.results.push(("cold_start_and_memory".into(), figures));
        let _ = db.delete_table().table_name(history_table).send().await;
        let _ = db.delete_table().table_name(push_table).send().await;
        let _ = self.stack.iot().delete_thing().thing_name(thing).send().await;
    }

    fn zip_sizes(&mut self) {
        let mut figures = json!({});
        for (name, logical) in [("shadow-history", "ShadowHistoryFunction"), ("shadow-push", "ShadowPushFunction")] {
            let candidates = [
                self.root.join(".aws-sam/build").join(logical).join("bootstrap"),
                self.root.join("target/lambda").join(name).join("bootstrap"),
            ];
            let Some(bootstrap) = candidates.iter().find(|p| p.exists()) else {
                println!("  {name}: no arm64 bootstrap (run `make build` first); zip size not measured");
                continue;
            };
            let zipped = zip_size(bootstrap);
            let raw = std::fs::metadata(bootstrap).map(|m| m.len()).unwrap_or(0);
            self.row(
                &format!("{name} arm64 bootstrap zip, MB"),
                mb(zipped),
                None,
                None,
                "<= 5 MB",
                Some(zipped <= 5 * 1024 * 1024),
            );
            figures[name] = json!({"zip_bytes": zipped, "bootstrap_bytes": raw, "path": bootstrap.strip_prefix(&self.root).unwrap_or(bootstrap)});
        }
        self.results.push(("bootstrap_zip".into(), figures));
    }

    /// Our release shadow-push, pushing the seed's settings to the stand-in's `group` (streamed from its
    /// ListThingsInThingGroup) under `quota`: its summary, the wall time and the process's peak RSS.
    async fn push_group(
        &self,
        standin: &StandIn,
        quota: f64,
        push_table: &str,
        group: &str,
    ) -> (Value, f64, u64, Usage) {
        self.push_group_with(
            standin,
            quota,
            push_table,
            json!({"targets": {"thingGroup": group}, "skipUnchanged": false}),
        )
        .await
    }

    /// [`Self::push_group`] with request fields of its own (over the seed's settings).
    async fn push_group_with(
        &self,
        standin: &StandIn,
        quota: f64,
        push_table: &str,
        fields: Value,
    ) -> (Value, f64, u64, Usage) {
        let env = self.env(&[
            ("PUSH_TABLE", push_table.to_owned()),
            ("PUSH_MAX_TPS", (quota as u32).to_string()),
            ("PUSH_READ_TPS", (quota as u32).to_string()),
            ("PUSH_CONCURRENCY", "256".into()),
            ("AWS_ENDPOINT_URL_IOT_DATA_PLANE", standin.url.clone()),
            ("AWS_ENDPOINT_URL_IOT", standin.url.clone()),
        ]);
        let cap = self.cap("shadow-push", "ShadowPushFunction");
        let push = self.ours_in("shadow-push", &env, &cap).await;
        let mut request = json!({"pushId": unique("bench-push"),
                                 "desired": serde_json::from_str::<Value>(SEED_DESIRED).unwrap_or_default()});
        if let (Some(r), Some(fields)) = (request.as_object_mut(), fields.as_object()) {
            r.extend(fields.clone());
        }
        let meter = Meter::start(&self.root, push.pid_handle());
        let started = Instant::now();
        let summary = push.invoke(&request, Duration::from_secs(900)).await.expect("push");
        let seconds = started.elapsed().as_secs_f64();
        let usage = meter.finish().capped_by(&cap);
        let rss = push.peak_rss().unwrap_or(0);
        push.stop().await;
        (summary, seconds, rss, usage)
    }

    async fn push_throughput(&mut self) {
        let limits = Limits {
            requests_per_second: PUSH_QUOTA,
            burst: PUSH_QUOTA / 10.0,
            latency: Duration::from_millis(20),
            reads_per_second: None,
        };
        let group = "bench-fleet";
        let prefix = "bench-thing-";
        let db = self.stack.dynamodb();
        let push_table = unique("bench-push");
        tables::ensure_table(&db, &push_table, &tables::PUSH).await.expect("creating the push table");

        // Ours: the release binary, the group streamed from the stand-in's ListThingsInThingGroup.
        let standin = StandIn::start(limits, group, prefix, PUSH_THINGS).await;
        let (summary, seconds, rss, usage) = self.push_group(&standin, PUSH_QUOTA, &push_table, group).await;
        let updated = summary["updated"].as_u64().unwrap_or(0);
        let failed = summary["failed"].as_u64().unwrap_or(0);
        let accepted = standin.counts.accepted.load(std::sync::atomic::Ordering::Relaxed);
        let throttled = standin.counts.throttled.load(std::sync::atomic::Ordering::Relaxed);
        let things_per_second = updated as f64 / seconds;
        let efficiency = accepted as f64 / seconds / PUSH_QUOTA;
        let throttled_share = throttled as f64 / (accepted + throttled).max(1) as f64;
        drop(standin);

        // Peers, each against a fresh stand-in with the same limits.
        let mut peers = json!({});
        // `make bench` installs the peers' Python first; one part run on its own may go without them.
        let peer_runs = if self.python.exists() {
            vec![
                ("boto3-threadpool", "push_threadpool.py", vec!["--threads", "64"]),
                ("aws-sample-page-per-second", "push_aws_sample.py", vec!["--page", "500"]),
            ]
        } else {
            println!(
                "  peers skipped: {} is missing (`bash scripts/tools.sh bench` installs it)",
                self.python.display()
            );
            peers["skipped"] = json!("the peers' Python is not installed");
            Vec::new()
        };
        for (peer, script, args) in peer_runs {
            let standin = StandIn::start(limits, group, prefix, PUSH_THINGS).await;
            let out = Command::new(&self.python)
                .arg(script)
                .args(["--things", &PEER_PUSH_THINGS.to_string(), "--prefix", prefix])
                .args(args)
                .current_dir(&self.peers)
                .envs(self.env(&[("AWS_ENDPOINT_URL_IOT_DATA_PLANE", standin.url.clone())]))
                .output()
                .await
                .unwrap_or_else(|e| panic!("{script}: {e}"));
            let line = String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or_default().to_owned();
            let mut result: Value = serde_json::from_str(&line).unwrap_or_else(|e| {
                panic!("{script} printed {line:?} ({e}); stderr: {}", String::from_utf8_lossy(&out.stderr))
            });
            result["standin_throttled"] = json!(standin.counts.throttled.load(std::sync::atomic::Ordering::Relaxed));
            peers[peer] = result;
        }
        // The default push (skipUnchanged: true) on a fleet that needs the change: a read and an update per thing,
        // each API under its own quota. Updates should reach the update quota, not half of it.
        let split = Limits { reads_per_second: Some(PUSH_QUOTA), ..limits };
        let standin = StandIn::start(split, group, prefix, PUSH_THINGS).await;
        let default_table = unique("bench-push");
        tables::ensure_table(&db, &default_table, &tables::PUSH).await.expect("creating the push table");
        let fields = json!({"targets": {"thingGroup": group}, "skipUnchanged": true});
        let (default_summary, default_seconds, _, default_usage) =
            self.push_group_with(&standin, PUSH_QUOTA, &default_table, fields).await;
        let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        let (reads, updates) = (load(&standin.counts.reads), load(&standin.counts.updates));
        let default_efficiency = updates as f64 / default_seconds / PUSH_QUOTA;
        let read_share = reads as f64 / default_seconds / PUSH_QUOTA;
        drop(standin);
        let _ = db.delete_table().table_name(default_table).send().await;
        self.row(
            "default push (skipUnchanged) updates/s / update quota",
            default_efficiency,
            None,
            None,
            ">= 0.95",
            Some(default_efficiency >= 0.95),
        );
        self.bound(&default_usage);
        self.row("default push reads/s / read quota", read_share, None, None, "<= 1", Some(read_share <= 1.0));
        let default = json!({"seconds": default_seconds, "reads": reads, "updates": updates,
                             "update_efficiency": default_efficiency, "read_share": read_share,
                             "summary": default_summary, "usage": default_usage.to_json(),
                             "bound": default_usage.describe()});
        let boto3 = peers["boto3-threadpool"]["things_per_second"].as_f64().unwrap_or(0.0);
        let sample = peers["aws-sample-page-per-second"]["things_per_second"].as_f64().unwrap_or(0.0);
        let ratio = things_per_second / boto3.max(1e-9);
        let ran = boto3 > 0.0;
        self.row(
            &format!("push things/s ({PUSH_THINGS} ours, {PEER_PUSH_THINGS} peers)"),
            things_per_second,
            ran.then_some(boto3),
            ran.then_some(ratio),
            ">= 5x boto3",
            ran.then_some(ratio >= 5.0),
        );
        self.bound(&usage);
        if sample > 0.0 {
            self.row(
                "push things/s vs AWS sample pattern",
                things_per_second,
                Some(sample),
                Some(things_per_second / sample.max(1e-9)),
                "-",
                None,
            );
        }
        self.row(
            "push efficiency (accepted req/s / quota)",
            efficiency,
            None,
            None,
            ">= 0.95",
            Some(efficiency >= 0.95),
        );
        self.bound(&usage);
        self.row("push failures", failed as f64, None, None, "0", Some(failed == 0));
        self.row(
            "push requests throttled, %",
            throttled_share * 100.0,
            None,
            None,
            "<= 1%",
            Some(throttled_share <= 0.01),
        );
        self.row("push peak RSS, MB", mb(rss), None, None, "<= 64 MB", Some(rss <= 64 * 1024 * 1024));
        self.results.push((
            "push".into(),
            json!({
                "quota_rps": PUSH_QUOTA, "latency_ms": 20, "per_thing_rps": standin::PER_THING_PER_SECOND,
                "ours": {"things": PUSH_THINGS, "seconds": seconds, "updated": updated, "failed": failed,
                         "things_per_second": things_per_second, "efficiency": efficiency, "accepted": accepted,
                         "throttled": throttled, "throttled_share": throttled_share, "peak_rss_mb": mb(rss),
                         "summary": summary, "usage": usage.to_json(), "bound": usage.describe()},
                "peers": peers,
                "default_push": default,
            }),
        ));
        let _ = db.delete_table().table_name(push_table).send().await;
    }

    /// What a rollout costs: the same fleet pushed with the default request and with a two-phase rollout (previous
    /// values recorded in DynamoDB Local before each update, each phase judged by reading its updated things),
    /// under split read and update quotas. The stand-in's devices never report, so the judgment is set to let
    /// everything through; what is measured is the work.
    async fn rollout_cost(&mut self) {
        let limits = Limits {
            requests_per_second: PUSH_QUOTA,
            burst: PUSH_QUOTA / 10.0,
            latency: Duration::from_millis(20),
            reads_per_second: Some(PUSH_QUOTA),
        };
        let group = "bench-rollout";
        let prefix = "bench-rollout-";
        let db = self.stack.dynamodb();
        let mut figures = json!({"things": ROLLOUT_THINGS, "quota_rps": PUSH_QUOTA});
        let mut usages = Vec::new();
        for (name, rollout) in [
            ("plain", Value::Null),
            (
                "rollout",
                json!({"phases": [{"percent": 10}, {"percent": 100}], "bakeSeconds": 0, "convergedPercent": 0,
                       "failedPercent": 100}),
            ),
        ] {
            let standin = StandIn::start(limits, group, prefix, ROLLOUT_THINGS).await;
            let table = unique("bench-push");
            tables::ensure_table(&db, &table, &tables::PUSH).await.expect("creating the push table");
            // A queue of its own: the phases after the first are hand-offs, drained as the event source mapping would.
            let sqs = self.stack.sqs();
            let queue_url = sqs
                .create_queue()
                .queue_name(unique("bench-push"))
                .send()
                .await
                .expect("create_queue")
                .queue_url
                .unwrap_or_default();
            let env = self.env(&[
                ("PUSH_TABLE", table.clone()),
                ("PUSH_QUEUE_URL", queue_url.clone()),
                ("PUSH_MAX_TPS", (PUSH_QUOTA as u32).to_string()),
                ("PUSH_READ_TPS", (PUSH_QUOTA as u32).to_string()),
                ("PUSH_CONCURRENCY", "256".into()),
                ("AWS_ENDPOINT_URL_IOT_DATA_PLANE", standin.url.clone()),
                ("AWS_ENDPOINT_URL_IOT", standin.url.clone()),
            ]);
            let function = self.ours("shadow-push", &env).await;
            let push_id = unique("bench-rollout");
            let mut request = json!({"pushId": push_id,
                                     "desired": serde_json::from_str::<Value>(SEED_DESIRED).unwrap_or_default(),
                                     "targets": {"thingGroup": group}, "skipUnchanged": true});
            if !rollout.is_null() {
                request["rollout"] = rollout;
            }
            let timing = Timing {
                timeout: Duration::from_secs(900),
                retries: [Duration::from_secs(60), Duration::from_secs(120)],
                visibility: Duration::from_secs(1800),
                schedule_every: Duration::from_secs(60),
                poll_every: Duration::from_millis(50),
            };
            let meter = Meter::start(&self.root, function.pid_handle());
            let service = LambdaService::new(&function, sqs.clone(), &queue_url, timing);
            let record = || push_record(&db, &table, &push_id);
            let done = || async { is_final(&record().await) };
            let started = Instant::now();
            let finished =
                service.run_until(&request, &json!({"sweepPushes": true}), Duration::from_secs(600), done).await;
            let seconds = started.elapsed().as_secs_f64();
            let usage = meter.finish();
            let rss = function.peak_rss().unwrap_or(0);
            function.stop().await;
            let summary = record().await;
            assert!(finished, "the {name} push did not finish: {summary}");
            let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
            let (reads, updates) = (load(&standin.counts.reads), load(&standin.counts.updates));
            figures[name] = json!({"seconds": seconds, "reads": reads, "updates": updates,
                                   "things_per_second": updates as f64 / seconds, "peak_rss_mb": mb(rss),
                                   "invocations": service.invocations().len(),
                                   "state": summary["state"], "phases": summary["phases"],
                                   "usage": usage.to_json(), "bound": usage.describe()});
            usages.push(usage);
            let _ = sqs.delete_queue().queue_url(&queue_url).send().await;
            let _ = db.delete_table().table_name(table).send().await;
        }
        let plain = figures["plain"]["things_per_second"].as_f64().unwrap_or(0.0);
        let staged = figures["rollout"]["things_per_second"].as_f64().unwrap_or(0.0);
        let updates = figures["rollout"]["updates"].as_u64().unwrap_or(0);
        let reads = figures["rollout"]["reads"].as_u64().unwrap_or(0);
        // A rollout reads every thing once before its update (as skipUnchanged does); judging reads every updated
        // thing once more. Anything above that is a cost the design does not intend.
        let judging_reads = reads.saturating_sub(ROLLOUT_THINGS as u64);
        let per_updated = judging_reads as f64 / updates.max(1) as f64;
        figures["judging_reads_per_updated_thing"] = json!(per_updated);
        self.row(
            &format!("rollout things/s ({ROLLOUT_THINGS}, 2 phases) vs plain push"),
            staged,
            Some(plain),
            Some(staged / plain.max(1e-9)),
            "-",
            None,
        );
        if let Some(usage) = usages.last() {
            self.bound(&usage.clone());
        }
        self.row(
            "rollout judging reads per updated thing",
            per_updated,
            None,
            None,
            "1",
            Some((per_updated - 1.0).abs() < 0.01),
        );
        self.results.push(("rollout".into(), figures));
    }

    /// One push to a million things, to show that memory stays flat: no names or documents are kept, only the
    /// 16-byte fingerprints that de-duplicate targets. A faster quota and a 1 ms stand-in keep it to minutes.
    async fn push_scale(&mut self) {
        const THINGS: usize = 1_000_000;
        const QUOTA: f64 = 20_000.0;
        let limits = Limits {
            requests_per_second: QUOTA,
            burst: QUOTA / 10.0,
            latency: Duration::from_millis(1),
            reads_per_second: None,
        };
        let db = self.stack.dynamodb();
        let push_table = unique("bench-push");
        tables::ensure_table(&db, &push_table, &tables::PUSH).await.expect("creating the push table");
        let mut figures = json!({"quota_rps": QUOTA, "latency_ms": 1});
        for size in [THINGS / 10, THINGS] {
            let standin = StandIn::start(limits, "bench-fleet", "bench-thing-", size).await;
            let (summary, seconds, rss, usage) = self.push_group(&standin, QUOTA, &push_table, "bench-fleet").await;
            let updated = summary["updated"].as_u64().unwrap_or(0);
            self.row(&format!("push peak RSS, MB, group of {size} things"), mb(rss), None, None, "flat", None);
            self.row(
                &format!("push things/s at a {QUOTA} quota, group of {size}"),
                updated as f64 / seconds,
                None,
                None,
                "-",
                None,
            );
            self.bound(&usage);
            figures[size.to_string()] = json!({"updated": updated, "failed": summary["failed"], "seconds": seconds,
                                               "things_per_second": updated as f64 / seconds, "peak_rss_mb": mb(rss),
                                               "usage": usage.to_json(), "bound": usage.describe()});
        }
        self.results.push(("push_scale".into(), figures));
        let _ = db.delete_table().table_name(push_table).send().await;
    }

    async fn history_throughput(&mut self) {
        let db = self.stack.dynamodb();
        let table = unique("bench-history");
        tables::ensure_table(&db, &table, &tables::HISTORY).await.expect("creating the history table");
        let env = self.env(&[("HISTORY_TABLE", table.clone())]);
        let events_wanted: u64 =
            std::env::var(HISTORY_EVENTS_VAR).ok().and_then(|n| n.parse().ok()).unwrap_or(HISTORY_EVENTS);
        let mut figures = json!({});
        let mut events_per_second = std::collections::HashMap::new();
        let mut usages = std::collections::HashMap::new();
        // Both sides under Lambda's CPU share at the template's MemorySize (FLEET_BENCH_CPU_CAP=none: whole
        // cores), then both on whole cores.
        let runs = [("ours", false), ("ours", true), ("peer", false), ("peer", true)];
        let capped_first = std::env::var(cpu_cap::CAP_VAR).as_deref() != Ok("none");
        let caps: &[bool] = if capped_first { &[true, false] } else { &[false] };
        for (capped, (who, batched)) in caps.iter().flat_map(|c| runs.iter().map(move |r| (*c, *r))) {
            let cap = if capped {
                self.cap("shadow-history", "ShadowHistoryFunction")
            } else {
                CpuCap::none(0, "the uncapped run")
            };
            let lambda = match who {
                "ours" => self.ours_in("shadow-history", &env, &cap).await,
                _ => {
                    let python = self.python_in("history_handler.handler", &cap);
                    LocalLambda::start_command(python, "shadow-history", &env).await
                }
            };
            lambda.wait_ready(Duration::from_secs(30)).await.expect("the function's cold start");
            let prefix = unique(&format!("{who}-{}", if batched { "sqs" } else { "direct" }));
            // Recent timestamps: with retention on, DynamoDB Local's TTL sweeper would delete old events as they land.
            let now = devstack::history::now_secs();
            let events: Vec<Value> = (0..events_wanted)
                .map(|i| {
                    devstack::history::update(
                        &format!("{prefix}-{}", i % 100),
                        Some("cfg"),
                        i / 100 + 1,
                        now + i,
                        json!({"desired": {"settings": {"mode": i % 4, "temp": 20.5}}, "reported": {"fw": "1.2.3"}}),
                    )
                })
                .collect();
            let cpu_before = lambda.cpu_time().unwrap_or_default();
            let meter = Meter::start(&self.root, lambda.pid_handle());
            let started = Instant::now();
            let mut failures = 0usize;
            if batched {
                for chunk in events.chunks(10) {
                    let bodies: Vec<String> = chunk.iter().map(Value::to_string).collect();
                    let answer = lambda.invoke(&devstack::history::sqs_batch(&bodies), Duration::from_secs(30)).await;
                    failures += answer.map(|a| devstack::history::batch_failures(&a).len()).unwrap_or(chunk.len());
                }
            } else {
                for event in &events {
                    failures += usize::from(lambda.invoke(event, Duration::from_secs(30)).await.is_err());
                }
            }
            let seconds = started.elapsed().as_secs_f64();
            let usage = if capped { meter.finish().capped_by(&cap) } else { meter.finish() };
            let cpu = lambda.cpu_time().unwrap_or_default().saturating_sub(cpu_before).as_secs_f64();
            lambda.stop().await;
            drop(cap);
            let mode = if batched { "sqs_batch_10" } else { "direct" };
            let rate = events_wanted as f64 / seconds;
            events_per_second.insert((capped, who, batched), rate);
            // CPU seconds per 1000 events are CPU-ms per event.
            let cpu_ms = cpu / (events_wanted as f64 / 1000.0);
            let figure = json!({"events": events_wanted, "seconds": seconds, "events_per_second": rate,
                                "cpu_seconds_per_1000": cpu_ms, "cpu_ms_per_event": cpu_ms, "failures": failures,
                                "usage": usage.to_json(), "bound": usage.describe()});
            if capped {
                figures["capped"][mode][who] = figure;
            } else {
                figures[mode][who] = figure;
            }
            usages.insert((capped, who, batched), usage);
        }
        for (capped, (batched, mode)) in
            caps.iter().flat_map(|c| [(false, "direct"), (true, "sqs_batch_10")].map(|m| (*c, m)))
        {
            let under = if capped { "capped" } else { "uncapped" };
            let ours = events_per_second.get(&(capped, "ours", batched)).copied().unwrap_or(0.0);
            let peer = events_per_second.get(&(capped, "peer", batched)).copied().unwrap_or(0.0);
            let ratio = ours / peer.max(1e-9);
            self.row(
                &format!("history events/s, {mode} ({under})"),
                ours,
                Some(peer),
                Some(ratio),
                ">= 2x peer",
                Some(ratio >= 2.0),
            );
            if let Some(usage) = usages.get(&(capped, "ours", batched)) {
                self.bound(&usage.clone());
            }
            let at = if capped { &figures["capped"][mode] } else { &figures[mode] };
            let cpu_ours = at["ours"]["cpu_ms_per_event"].as_f64().unwrap_or(0.0);
            let cpu_peer = at["peer"]["cpu_ms_per_event"].as_f64().unwrap_or(0.0);
            let ratio = cpu_peer / cpu_ours.max(1e-9);
            self.row(
                &format!("history CPU-ms per event, {mode} ({under})"),
                cpu_ours,
                Some(cpu_peer),
                Some(ratio),
                if batched { "-" } else { ">= 4x less" },
                (!batched).then_some(ratio >= 4.0),
            );
            if let (Some(usage), Some(row)) = (usages.get(&(capped, "peer", batched)), self.rows.last_mut()) {
                row[6] = format!("peer: {}", usage.describe());
            }
        }
        self.results.push(("history".into(), figures));
        let _ = db.delete_table().table_name(table).send().await;
    }
}

impl Bench {
    /// `shadow-fleet history`: the first page of a 100 000-event shadow, the release binary against the boto3 peer.
    async fn cli_history(&mut self) {
        let env = self.env(&[]);
        let f = cli_history::run(&self.stack, &self.root, &self.python, &env).await;
        let ratio = f.peer_ms / f.ours_ms.max(0.001);
        self.row(
            "history CLI first page, 100 000 events (ms)",
            f.ours_ms,
            Some(f.peer_ms),
            Some(ratio),
            "< 100 ms",
            Some(f.ours_ms < 100.0),
        );
        self.row(
            "history CLI page from the middle (--since), ms",
            f.ours_window_ms,
            None,
            None,
            "< 100 ms",
            Some(f.ours_window_ms < 100.0),
        );
        self.row("boto3 peer: the Query alone, in process (ms)", f.peer_query_ms, None, None, "", None);
        self.results.push(("cli".into(), f.report));
    }
}

impl Bench {
    /// `shadow-fleet shadow get --at T | --version N` of a 100 000-event shadow at its start, middle and end: in
    /// process and as the release binary, against the fold of the whole partition. A wrong answer fails the bench.
    async fn history_at(&mut self) {
        let env = self.env(&[]);
        let f = history_at::run(&self.stack, &self.root, &env).await;
        for p in &f.points {
            let t = format!("t0+{}", p.version);
            for (flag, value, read) in [("--at", t, &p.at), ("--version", p.version.to_string(), &p.at_version)] {
                let point = format!("{flag} {value} ({})", p.name);
                self.row(
                    &format!("shadow get {point}, in process, ms (median of 21) / fold peer (of 3)"),
                    read.ms,
                    Some(p.fold_ms),
                    Some(p.fold_ms / read.ms.max(0.001)),
                    "-",
                    None,
                );
                self.row(
                    &format!(
                        "shadow get {point}, items read ({} requests) / fold peer ({} pages)",
                        read.requests, p.fold_requests
                    ),
                    f64::from(read.items),
                    Some(p.fold_items as f64),
                    Some(p.fold_items as f64 / f64::from(read.items.max(1))),
                    "-",
                    None,
                );
                self.row(
                    &format!("shadow get {point}, in process, first call (cold), ms"),
                    read.cold_ms,
                    None,
                    None,
                    "-",
                    None,
                );
                self.row(
                    &format!("shadow-fleet shadow get {point}, process, ms (median of 11)"),
                    read.cli_ms,
                    None,
                    None,
                    "-",
                    None,
                );
            }
        }
        self.results.push(("history_at".into(), f.report));
    }
}

impl Bench {
    /// What a history event costs on AWS, measured: the release shadow-history behind a DynamoDB front that counts
    /// its requests and units (DynamoDB Local's own ConsumedCapacity, from the real items), each invocation timed,
    /// direct (a rule's Lambda action per event) and in SQS batches of 10 (the queued ingestion).
    async fn history_cost(&mut self) {
        const EVENTS: u64 = 2000;
        let db = self.stack.dynamodb();
        let table = unique("bench-history");
        tables::ensure_table(&db, &table, &tables::HISTORY).await.expect("creating the history table");
        let front = DynamoFront::start(&self.stack.var("AWS_ENDPOINT_URL_DYNAMODB"), None, None).await;
        let env = self.env(&[("HISTORY_TABLE", table.clone()), ("AWS_ENDPOINT_URL_DYNAMODB", front.url.clone())]);
        let memory_mb = cost::template_memory_mb(&self.root, "ShadowHistoryFunction").unwrap_or_else(|e| panic!("{e}"));
        let mut figures = json!({"events": EVENTS, "memory_mb": memory_mb});
        for batched in [false, true] {
            let cap = self.cap("shadow-history", "ShadowHistoryFunction");
            figures["cpu_cap"] = cap.to_json();
            let lambda = self.ours_in("shadow-history", &env, &cap).await;
            lambda.wait_ready(Duration::from_secs(30)).await.expect("the function's cold start");
            let counts = &front.counts;
            let before = (counts.write_requests(), counts.write_units(), counts.read_requests(), counts.read_units());
            let prefix = unique(if batched { "cost-sqs" } else { "cost-direct" });
            let now = devstack::history::now_secs();
            let events: Vec<Value> = (0..EVENTS)
                .map(|i| {
                    devstack::history::update(
                        &format!("{prefix}-{}", i % 100),
                        Some("cfg"),
                        i / 100 + 1,
                        now + i,
                        json!({"desired": {"settings": {"mode": i % 4, "temp": 20.5}}, "reported": {"fw": "1.2.3"}}),
                    )
                })
                .collect();
            let cpu_before = lambda.cpu_time().unwrap_or_default();
            let (mut invocations, mut billed, mut failures) = (0u64, 0.0f64, 0usize);
            let mut timed = async |payload: &Value| {
                let started = Instant::now();
                let answer = lambda.invoke(payload, Duration::from_secs(30)).await;
                invocations += 1;
                billed += (started.elapsed().as_secs_f64() * 1000.0).ceil() / 1000.0;
                answer
            };
            if batched {
                for chunk in events.chunks(10) {
                    let bodies: Vec<String> = chunk.iter().map(Value::to_string).collect();
                    let answer = timed(&devstack::history::sqs_batch(&bodies)).await;
                    failures += answer.map(|a| devstack::history::batch_failures(&a).len()).unwrap_or(chunk.len());
                }
            } else {
                for event in &events {
                    failures += usize::from(timed(event).await.is_err());
                }
            }
            let cap_seen = cap.describe();
            let capped = if cap.is_capped() { "capped" } else { "UNCAPPED" };
            let cpu = lambda.cpu_time().unwrap_or_default().saturating_sub(cpu_before).as_secs_f64();
            lambda.stop().await;
            drop(cap);
            assert_eq!(failures, 0, "history events failed while measuring their cost");
            let per = |n: f64| n / EVENTS as f64;
            let writes = per((counts.write_requests() - before.0) as f64);
            let write_units = per(counts.write_units() - before.1);
            let reads = per((counts.read_requests() - before.2) as f64);
            let read_units = per(counts.read_units() - before.3);
            let gb_seconds = per(billed) * f64::from(memory_mb) / 1024.0;
            let mode = if batched { "sqs_batch_10" } else { "direct" };
            let mut lines = vec![
                cost::Line { what: "IoT rules triggered", per_unit: 1.0, price: cost::RULE_TRIGGERED },
                cost::Line { what: "IoT rule actions executed", per_unit: 1.0, price: cost::RULE_ACTION },
                cost::Line { what: "Lambda requests", per_unit: per(invocations as f64), price: cost::LAMBDA_REQUEST },
                cost::Line {
                    what: "Lambda GB-seconds (arm64)",
                    per_unit: gb_seconds,
                    price: cost::LAMBDA_ARM_GB_SECOND,
                },
                cost::Line { what: "DynamoDB write units", per_unit: write_units, price: cost::DYNAMODB_WRITE_UNIT },
                cost::Line { what: "DynamoDB read units", per_unit: read_units, price: cost::DYNAMODB_READ_UNIT },
            ];
            if batched {
                // The rule's SendMessage per event; the event source mapping's receive and delete per batch.
                let sqs = 1.0 + 2.0 * per(invocations as f64);
                lines.push(cost::Line { what: "SQS requests", per_unit: sqs, price: cost::SQS_REQUEST });
            }
            let (total, bill) = cost::bill(&lines);
            let row = format!("cost per million history events, {mode}, USD in {}", cost::DEFAULT_REGION.code());
            self.row(&row, total, None, None, "-", None);
            self.row(
                &format!("per history event, {mode}: DynamoDB write units / Lambda ms"),
                write_units,
                Some(per(billed) * 1000.0),
                None,
                "-",
                None,
            );
            if let Some(row) = self.rows.last_mut() {
                row[6] = cap_seen.clone();
            }
            self.row(
                &format!("per history event, {mode}: CPU-ms ({capped})"),
                per(cpu) * 1000.0,
                None,
                None,
                "-",
                None,
            );
            if let Some(row) = self.rows.last_mut() {
                row[6] = cap_seen.clone();
            }
            figures[mode] = json!({"dynamodb_write_requests": writes, "dynamodb_write_units": write_units,
                                   "dynamodb_read_requests": reads, "dynamodb_read_units": read_units,
                                   "lambda_invocations": invocations, "lambda_billed_seconds": billed,
                                   "cpu_ms_per_event": per(cpu) * 1000.0, "cpu_cap": cap_seen,
                                   "cost_per_million_events": bill});
        }
        self.results.push(("history_cost".into(), figures));
        let _ = db.delete_table().table_name(table).send().await;
    }
}

/// The write units of one PutItem, from DynamoDB Local's ConsumedCapacity (`ReturnConsumedCapacity: INDEXES`):
/// the total, the table's part, and the version index's part when it says one.
fn put_units(consumed: Option<&aws_sdk_dynamodb::types::ConsumedCapacity>) -> (Option<f64>, Option<f64>, Option<f64>) {
    let total = consumed.and_then(|c| c.capacity_units);
    let table = consumed.and_then(|c| c.table.as_ref()).and_then(|t| t.capacity_units);
    let index = consumed
        .and_then(|c| c.global_secondary_indexes.as_ref())
        .and_then(|m| m.get(shadow_aws::history::VERSION_INDEX))
        .and_then(|i| i.capacity_units);
    (total, table, index)
}

impl Bench {
    /// What recording an `update/documents` event writes, measured: each PutItem with `ReturnConsumedCapacity:
    /// INDEXES` on DynamoDB Local, for the same events recorded two ways:
    /// - old: the change alone, as the `update/accepted` event of the same update (one conditional PutItem), in a
    ///   table without the version index (the table before point-in-time reads);
    /// - new: the snapshot item (the document after and before), the head's conditional PutItem (as
    ///   `DynamoHistoryStore::put_new` makes them), and the `by-version` index entry the snapshot item adds.
    ///
    /// Two kinds of shadow: the bench's small settings document, and one whose first report also carries a 600-byte
    /// string that later changes leave alone (the old recording writes it once; every snapshot holds it twice, the
    /// head once). Beside them, what the old recording costs in today's table (a rule still on `update/accepted`):
    /// its items have a version too, so each is in the index as well.
    async fn history_write_cost(&mut self) {
        use aws_sdk_dynamodb::types::{AttributeValue, ReturnConsumedCapacity};
        use shadow_core::history::state::ShadowState;
        use shadow_core::history::{RecordOptions, record_from_event};

        const SHADOWS: u64 = 50;
        const VERSIONS: u64 = 20;
        let db = self.stack.dynamodb();
        let old_table = unique("bench-history-old");
        let old_spec = tables::TableSpec { indexes: &[], ..tables::HISTORY };
        tables::ensure_table(&db, &old_table, &old_spec).await.expect("creating the old history table");
        let new_table = unique("bench-history");
        tables::ensure_table(&db, &new_table, &tables::HISTORY).await.expect("creating the history table");
        let accepted_table = unique("bench-history-accepted");
        tables::ensure_table(&db, &accepted_table, &tables::HISTORY).await.expect("creating the history table");
        let events = SHADOWS * VERSIONS;
        let (price, price_region) = (cost::DYNAMODB_WRITE_UNIT.usd, cost::DYNAMODB_WRITE_UNIT.region.code());
        let mut figures = json!({"events_per_document": events, "usd_per_write_unit": price, "price_region": price_region,
                                 "measured_with": "PutItem ReturnConsumedCapacity=INDEXES on DynamoDB Local"});
        let settings = |k: u64| json!({"mode": k % 3, "temp": 18 + k % 7});
        for (size, padding) in [("settings only", 0usize), ("settings + 600 B info", 600)] {
            let prefix = unique("cost-documents");
            let now = devstack::history::now_secs();
            // Sums over the events: units by part, bytes by item, and how the index's units were found.
            let (mut old_units, mut event_units, mut head_units, mut index_units) = (0.0, 0.0, 0.0, 0.0);
            let mut accepted_today_units = 0.0;
            let (mut old_bytes, mut event_bytes, mut head_bytes, mut entry_bytes, mut state_bytes) = (0, 0, 0, 0, 0);
            let (mut index_reported, mut index_computed) = (0u64, 0u64);
            for s in 0..SHADOWS {
                let thing = format!("{prefix}-{s}");
                let mut document = ShadowState::default();
                for version in 1..=VERSIONS {
                    let timestamp = now + version;
                    // A push of desired settings, then the device's report of it, in turn.
                    let change = if version % 2 == 1 {
                        json!({"desired": {"settings": settings(version)}})
                    } else {
                        let mut reported = json!({"settings": settings(version - 1), "fw": "1.2.3"});
                        if version == 2 && padding > 0 {
                            reported["info"] = json!("x".repeat(padding));
                        }
                        json!({"reported": reported})
                    };
                    let state_of = |d: &ShadowState| {
                        let mut state = d.to_json();
                        if let Some(fields) = state.as_object_mut() {
                            fields.remove("delta");
                        }
                        state
                    };
                    let previous = (version > 1).then(|| state_of(&document));
                    document.apply_update(&change);
                    let current = state_of(&document);
                    state_bytes += current.to_string().len();

                    // Old: the change, recorded from update/accepted.
                    let accepted = devstack::history::update(&thing, Some("cfg"), version, timestamp, change);
                    let record = record_from_event(&accepted, &RecordOptions::default()).expect("recording");
                    let item = shadow_aws::history::item(&record).expect("the record's item");
                    old_bytes += tables::item_size(&item);
                    let put = db
                        .put_item()
                        .table_name(&accepted_table)
                        .set_item(Some(item.clone()))
                        .condition_expression("attribute_not_exists(#pk)")
                        .expression_attribute_names("#pk", tables::PARTITION_KEY)
                        .return_consumed_capacity(ReturnConsumedCapacity::Indexes)
                        .send()
                        .await
                        .expect("the old recording's PutItem in today's table");
                    let (total, _, _) = put_units(put.consumed_capacity.as_ref());
                    accepted_today_units += total.expect("DynamoDB Local reports no ConsumedCapacity for PutItem");
                    let put = db
                        .put_item()
                        .table_name(&old_table)
                        .set_item(Some(item))
                        .condition_expression("attribute_not_exists(#pk)")
                        .expression_attribute_names("#pk", tables::PARTITION_KEY)
                        .return_consumed_capacity(ReturnConsumedCapacity::Indexes)
                        .send()
                        .await
                        .expect("the old recording's PutItem");
                    let (total, _, _) = put_units(put.consumed_capacity.as_ref());
                    old_units += total.expect("DynamoDB Local reports no ConsumedCapacity for PutItem");

                    // New: the snapshot of update/documents, then the head.
                    let mut documents = json!({
                        "current": {"state": current, "version": version},
                        "timestamp": timestamp, "receivedAt": timestamp * 1000 + 5,
                        "topic": format!("$aws/things/{thing}/shadow/name/cfg/update/documents"),
                    });
                    if let Some(previous) = previous {
                        documents["previous"] = json!({"state": previous, "version": version - 1});
                    }
                    let record = record_from_event(&documents, &RecordOptions::default()).expect("recording");
                    let item = shadow_aws::history::item(&record).expect("the record's item");
                    event_bytes += tables::item_size(&item);
                    // The index entry: keys only (the table's keys and the index's).
                    let entry: std::collections::HashMap<String, AttributeValue> = item
                        .iter()
                        .filter(|(k, _)| [tables::PARTITION_KEY, tables::SORT_KEY, "version"].contains(&k.as_str()))
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect();
                    let entry_size = tables::item_size(&entry);
                    entry_bytes += entry_size;
                    let put = db
                        .put_item()
                        .table_name(&new_table)
                        .set_item(Some(item))
                        .condition_expression("attribute_not_exists(#pk)")
                        .expression_attribute_names("#pk", tables::PARTITION_KEY)
                        .return_consumed_capacity(ReturnConsumedCapacity::Indexes)
                        .send()
                        .await
                        .expect("the snapshot's PutItem");
                    let (total, table, index) = put_units(put.consumed_capacity.as_ref());
                    let total = total.expect("DynamoDB Local reports no ConsumedCapacity for PutItem");
                    let table = table.unwrap_or(total);
                    event_units += table;
                    match index {
                        Some(units) => {
                            index_units += units;
                            index_reported += 1;
                        }
                        None if total > table => {
                            index_units += total - table;
                            index_reported += 1;
                        }
                        None => {
                            // Billed as one more write of the entry's size, rounded up to 1 KB.
                            index_units += entry_size.div_ceil(1024).max(1) as f64;
                            index_computed += 1;
                        }
                    }
                    let head = shadow_aws::history::head_item(&record).expect("the head item");
                    head_bytes += tables::item_size(&head);
                    let put = db
                        .put_item()
                        .table_name(&new_table)
                        .set_item(Some(head))
                        .condition_expression("attribute_not_exists(#pk) OR #event < :event")
                        .expression_attribute_names("#pk", tables::PARTITION_KEY)
                        .expression_attribute_names("#event", "eventSk")
                        .expression_attribute_values(":event", AttributeValue::S(record.sort_key()))
                        .return_consumed_capacity(ReturnConsumedCapacity::Indexes)
                        .send()
                        .await
                        .expect("the head's PutItem");
                    let (total, _, _) = put_units(put.consumed_capacity.as_ref());
                    head_units += total.expect("DynamoDB Local reports no ConsumedCapacity for PutItem");
                }
            }
            let per = |x: f64| x / events as f64;
            let bytes = |x: usize| x as f64 / events as f64;
            let old = per(old_units);
            let new = per(event_units + head_units + index_units);
            let (old_usd, new_usd) = (old * price * 1e6, new * price * 1e6);
            let source = if index_computed == 0 {
                "reported by DynamoDB Local: ConsumedCapacity.GlobalSecondaryIndexes".to_owned()
            } else if index_reported == 0 {
                "NOT reported by DynamoDB Local: computed from the keys-only entry's size (tables::item_size), \
                 rounded up to 1 KB"
                    .to_owned()
            } else {
                format!("reported for {index_reported} events, computed from the entry's size for {index_computed}")
            };
            println!(
                "  {size} ({:.0} B of state): old: the change's item {:.0} B = {:.2} units; new: the snapshot \
                 item {:.0} B = {:.2}, the head {:.0} B = {:.2}, the by-version entry {:.0} B = {:.2} ({source})",
                bytes(state_bytes),
                bytes(old_bytes),
                old,
                bytes(event_bytes),
                per(event_units),
                bytes(head_bytes),
                per(head_units),
                bytes(entry_bytes),
                per(index_units),
            );
            println!(
                "  {size}: the old recording in today's table (update/accepted items are in the version index too): \
                 {:.2} units, USD {:.2} per million events",
                per(accepted_today_units),
                per(accepted_today_units) * price * 1e6,
            );
            self.row(
                &format!("history write units per update/documents event, {size}: new / old (ratio new/old)"),
                new,
                Some(old),
                Some(new / old.max(1e-9)),
                "-",
                None,
            );
            self.row(
                &format!("history DynamoDB writes, USD per million events, {size}: new / old"),
                new_usd,
                Some(old_usd),
                Some(new_usd / old_usd.max(1e-9)),
                "-",
                None,
            );
            self.row(
                &format!("history DynamoDB writes, USD per million events, {size}: new - old"),
                new_usd - old_usd,
                None,
                None,
                "-",
                None,
            );
            figures[size] = json!({
                "state_bytes_avg": bytes(state_bytes),
                "old": {"what": "update/accepted: one conditional PutItem of the change, no version index",
                        "item_bytes_avg": bytes(old_bytes), "write_units_per_event": old,
                        "usd_per_million_events": old_usd},
                "new": {"what": "update/documents: the snapshot item (state and previousState), the head's conditional PutItem, the by-version index entry",
                        "event_item_bytes_avg": bytes(event_bytes), "event_item_units": per(event_units),
                        "head_bytes_avg": bytes(head_bytes), "head_units": per(head_units),
                        "index_entry_bytes_avg": bytes(entry_bytes), "index_units": per(index_units),
                        "index_units_source": source,
                        "write_units_per_event": new, "usd_per_million_events": new_usd},
                "difference_usd_per_million_events": new_usd - old_usd,
                "old_in_todays_table": {"what": "update/accepted items in the table with the by-version index",
                                        "write_units_per_event": per(accepted_today_units),
                                        "usd_per_million_events": per(accepted_today_units) * price * 1e6},
            });
        }
        self.results.push(("history_write_cost".into(), figures));
        let _ = db.delete_table().table_name(old_table).send().await;
        let _ = db.delete_table().table_name(new_table).send().await;
        let _ = db.delete_table().table_name(accepted_table).send().await;
    }
}

fn zip_size(path: &Path) -> u64 {
    let script = "import io,sys,zipfile\nb=io.BytesIO()\nz=zipfile.ZipFile(b,'w',zipfile.ZIP_DEFLATED,compresslevel=9)\nz.write(sys.argv[1],'bootstrap')\nz.close()\nprint(len(b.getvalue()))";
    std::process::Command::new("python3")
        .args(["-c", script])
        .arg(path)
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(0)
}

fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned());
    let memory =
        std::fs::read_to_string("/proc/meminfo").unwrap_or_default().lines().next().unwrap_or_default().to_owned();
    json!({"cpu": model, "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0), "memory": memory,
           "os": std::env::consts::ARCH})
}

#[tokio::main]
async fn main() {
    let root = devstack::stack::repo_root();
    let mut bench = Bench {
        stack: Stack::get(),
        python: root.join(".tools/bench-venv/bin/python"),
        peers: root.join("bench/peers"),
        root: root.clone(),
        results: Vec::new(),
        rows: Vec::new(),
    };
    let only = std::env::args().nth(1).unwrap_or_default();
    println!("shadow-fleet benchmarks (release binaries vs the Python 3 + boto3 peers; same machine, same run)");
    if only.is_empty() || only == "cold" {
        println!("- cold start and memory ...");
        bench.cold_starts_and_memory().await;
        bench.zip_sizes();
    }
    if only.is_empty() || only == "push" {
        println!("- push throughput ...");
        bench.push_throughput().await;
    }
    if only.is_empty() || only == "rollout" {
        println!("- rollout cost ...");
        bench.rollout_cost().await;
    }
    if only.is_empty() || only == "rollout-scale" {
        println!("- rollout at scale ({} things, 3 phases, DynamoDB partition limits) ...", rollout_scale::THINGS);
        bench.rollout_scale().await;
    }
    if only == "scale" {
        println!("- push memory at scale (1 000 000 things) ...");
        bench.push_scale().await;
    }
    if only.is_empty() || only == "history" {
        println!("- history throughput ...");
        bench.history_throughput().await;
    }
    if only.is_empty() || only == "history" || only == "history-cost" {
        println!("- history cost per event ...");
        bench.history_cost().await;
        println!("- history write units per update/documents event, old recording vs new ...");
        bench.history_write_cost().await;
    }
    if only.is_empty() || only == "cli" {
        println!("- shadow-fleet history, first page of {} events ...", cli_history::EVENTS);
        bench.cli_history().await;
    }
    if only.is_empty() || only == "history-at" {
        println!("- shadow-fleet shadow get --at / --version, one shadow of {} events ...", history_at::EVENTS);
        bench.history_at().await;
    }
    let header = ["metric", "ours", "peer", "ratio", "target", "", "bound (CPU over the run)"];
    let widths: Vec<usize> =
        (0..7).map(|i| bench.rows.iter().map(|r| r[i].len()).chain([header[i].len()]).max().unwrap_or(0)).collect();
    let line = |cells: [&str; 7]| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        println!("  {}", padded.join("  ").trim_end());
    };
    println!();
    line(header);
    for row in &bench.rows {
        line([&row[0], &row[1], &row[2], &row[3], &row[4], &row[5], &row[6]]);
    }
    let mut report = json!({"machine": machine(), "unix_time": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())});
    for (key, value) in bench.results {
        report[key] = value;
    }
    let dir = root.join("bench/results");
    let _ = std::fs::create_dir_all(&dir);
    // A partial run (one mode) does not replace the full run's figures.
    let path = dir.join(if only.is_empty() { "latest.json".to_owned() } else { format!("latest-{only}.json") });
    match std::fs::write(&path, serde_json::to_string_pretty(&report).unwrap_or_default()) {
        Ok(()) => println!("\nwritten: {}", path.display()),
        Err(e) => println!("\ncould not write {}: {e}", path.display()),
    }
}

/// A push's record item as JSON (`null` while it cannot be read).
async fn push_record(db: &aws_sdk_dynamodb::Client, table: &str, push_id: &str) -> Value {
    let got = db
        .get_item()
        .table_name(table)
        .set_key(Some(push_store::record_key(push_id)))
        .consistent_read(true)
        .send()
        .await
        .ok()
        .and_then(|g| g.item);
    got.and_then(|item| serde_dynamo::from_item::<_, Value>(item).ok()).unwrap_or(Value::Null)
}

/// Whether a push record says the push is over.
fn is_final(record: &Value) -> bool {
    serde_json::from_value::<PushState>(record["state"].clone()).is_ok_and(PushState::is_final)
}
