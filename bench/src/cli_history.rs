//! `fleet-bench cli`: `shadow-fleet history` of one shadow with 100 000 events in DynamoDB Local, first page.
//!
//! The events are written straight into a table of the bench's own (BatchWriteItem, 25 items a request, 8 requests
//! in flight), as shadow-history's items. Then the release binary is run as a user runs it (process start, AWS
//! configuration, one Query, the diffs, the output), and so is the peer a user would reach for: a boto3
//! `query(Limit=100)` on the same key, in a fresh Python process (as `aws dynamodb query` would be).

use std::path::Path;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::WriteRequest;
use devstack::{Stack, unique};
use futures::StreamExt;
use serde_json::{Value, json};
use shadow_aws::{tables, writes};
use shadow_core::history::{RecordOptions, record_from_event};

pub const EVENTS: u64 = 100_000;
const RUNS: usize = 11;
const THING: &str = "bench-device";
const SHADOW: &str = "cfg";

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values.get(values.len() / 2).copied().unwrap_or_default()
}

/// Writes `EVENTS` events of one shadow: desired pushes and device reports in turn, one a second.
async fn load(stack: &Stack, table: &str) -> Duration {
    let db = stack.dynamodb();
    let started = Instant::now();
    let t0 = 1_700_000_000;
    let requests: Vec<Vec<WriteRequest>> = (1..=EVENTS)
        .map(|version| {
            let state = if version % 2 == 1 {
                json!({"desired": {"settings": {"mode": version % 3, "temp": 18 + version % 7}}})
            } else {
                json!({"reported": {"settings": {"mode": (version - 1) % 3, "temp": 18 + (version - 1) % 7}}})
            };
            let mut event = devstack::history::update(THING, Some(SHADOW), version, t0 + version, state);
            if version % 2 == 1 {
                event["clientToken"] = json!(format!("push-{}", version / 1000));
            }
            let record = record_from_event(&event, &RecordOptions::default()).expect("recording the event");
            let item = shadow_aws::history::item(&record).expect("the record's item");
            writes::put_request(item).expect("a put request")
        })
        .collect::<Vec<_>>()
        .chunks(writes::BATCH_LIMIT)
        .map(<[WriteRequest]>::to_vec)
        .collect();
    futures::stream::iter(requests)
        .for_each_concurrent(8, |batch| {
            let db = db.clone();
            async move { writes::batch_write(&db, table, batch).await.expect("batch_write") }
        })
        .await;
    started.elapsed()
}

/// Wall time of a process from spawn to exit, and its stdout.
async fn timed(mut command: tokio::process::Command) -> (Duration, String) {
    let started = Instant::now();
    let out = command.output().await.expect("running the command");
    let elapsed = started.elapsed();
    assert!(out.status.success(), "{:?} failed: {}", command.as_std(), String::from_utf8_lossy(&out.stderr));
    (elapsed, String::from_utf8_lossy(&out.stdout).into_owned())
}

pub struct Figures {
    pub ours_ms: f64,
    pub ours_window_ms: f64,
    pub peer_ms: f64,
    pub peer_query_ms: f64,
    pub load_seconds: f64,
    pub report: Value,
}

pub async fn run(stack: &Stack, root: &Path, python: &Path, env: &[(String, String)]) -> Figures {
    let table = unique("bench-cli-history");
    tables::ensure_table(&stack.dynamodb(), &table, &tables::HISTORY).await.expect("creating the history table");
    let loaded = load(stack, &table).await;
    let binary = root.join("target/release/shadow-fleet");
    let cli = |args: &[&str]| {
        let mut command = tokio::process::Command::new(&binary);
        command.args(["history", THING, "--shadow", SHADOW]).args(args).envs(env.iter().cloned());
        command.env("HISTORY_TABLE", &table);
        command
    };
    // The first page (the default --limit 100), as JSON lines; then a window in the middle of the history (a key
    // condition: the 99 900 events before it are never read).
    let (mut first, mut window, mut peer, mut peer_query) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..RUNS {
        let (took, out) = timed(cli(&["--output", "json"])).await;
        assert_eq!(out.lines().count(), 100, "the first page has 100 events");
        first.push(took);
        let (took, out) = timed(cli(&["--since", "1700050000", "--limit", "100", "--output", "json"])).await;
        assert!(out.lines().next().is_some_and(|l| l.contains("\"version\":50000")), "{}", &out[..out.len().min(200)]);
        window.push(took);
        let mut command = tokio::process::Command::new(python);
        command
            .arg(root.join("bench/peers/history_query.py"))
            .args(["--table", &table, "--pk", &format!("{THING}#{SHADOW}"), "--limit", "100"])
            .envs(env.iter().cloned());
        let (took, out) = timed(command).await;
        let answer: Value = serde_json::from_str(out.lines().last().unwrap_or_default()).unwrap_or_default();
        assert_eq!(answer["items"], 100, "{out}");
        peer.push(took);
        peer_query.push(Duration::from_secs_f64(answer["query_seconds"].as_f64().unwrap_or(0.0)));
    }
    let _ = stack.dynamodb().delete_table().table_name(&table).send().await;
    let ms = |d: Duration| (d.as_secs_f64() * 1e4).round() / 10.0;
    let figures = Figures {
        ours_ms: ms(median(first)),
        ours_window_ms: ms(median(window)),
        peer_ms: ms(median(peer)),
        peer_query_ms: ms(median(peer_query)),
        load_seconds: (loaded.as_secs_f64() * 10.0).round() / 10.0,
        report: Value::Null,
    };
    let report = json!({
        "events": EVENTS, "runs": RUNS, "load_seconds": figures.load_seconds,
        "ours_first_page_ms_median": figures.ours_ms, "ours_window_page_ms_median": figures.ours_window_ms,
        "peer_boto3_process_ms_median": figures.peer_ms, "peer_boto3_query_only_ms_median": figures.peer_query_ms,
        "ours": "target/release/shadow-fleet history (process wall time: start, config, Query, diffs, JSON output)",
        "peer": "python3 + boto3 Table.query(Limit=100) in a fresh process (bench/peers/history_query.py)",
    });
    Figures { report, ..figures }
}
