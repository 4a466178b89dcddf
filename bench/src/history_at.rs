//! `fleet-bench history-at`: `shadow-fleet shadow get --at T | --version N` of one shadow with 100 000 recorded
//! events in DynamoDB Local, at the history's start, middle and end.
//!
//! The events are `update/documents` messages (the whole document before and after the change: a desired push and
//! the device's report of it in turn, one a second), recorded by `record_from_event` as snapshot items and written
//! straight into a table of the bench's own (BatchWriteItem, 25 items a request, 8 requests in flight, as `fleet-bench
//! cli` loads its table), then the shadow's head. Each point is then read three ways:
//! - in process: `DynamoHistoryStore::around` (or `at_version`) and the core's `point::at_time` (`at_version`), what
//!   `shadow get` does without the process around it: the first call of a fresh client (cold), then the median of
//!   21 calls, with the requests and items the read took;
//! - as a user runs it: the release `shadow-fleet shadow get THING --shadow S --at T --output json` (process start,
//!   AWS configuration, the reads, the output), median of 11;
//! - the peer a user would otherwise pick: every item of the shadow read (Query pages, as
//!   `DynamoHistoryStore::events` reads them, each limited to what DynamoDB's 1 MB page holds) and folded up to the
//!   point, median of 3.
//!
//! Every answer is checked against the document the loader wrote for that version: a wrong one fails the bench.

use std::path::Path;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::{AttributeValue, ReturnConsumedCapacity};
use devstack::{Stack, unique};
use futures::StreamExt;
use serde_json::{Value, json};
use shadow_aws::DynamoHistoryStore;
use shadow_aws::history::{self, EVENTS_END, ReadCost};
use shadow_aws::{tables, writes};
use shadow_core::history::point::{self, AroundTime, AtTime, Point, Recorded};
use shadow_core::history::state::ShadowState;
use shadow_core::history::{HistoryRecord, RecordKind, RecordOptions, partition_key, record_from_event};
use shadow_core::{ShadowName, ShadowRef, ThingName};

pub const EVENTS: u64 = 100_000;
/// Event `v` is at `T0 + v` (epoch seconds).
const T0: u64 = 1_700_000_000;
const RUNS: usize = 21;
const CLI_RUNS: usize = 11;
const FOLD_RUNS: usize = 3;
const THING: &str = "bench-device";
const SHADOW: &str = "cfg";
/// The points read, as versions: the history's start, middle and end (`--at T0 + v` is the same point).
pub const POINTS: [(&str, u64); 3] = [("start", 1), ("middle", EVENTS / 2), ("end", EVENTS)];

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values.get(values.len() / 2).copied().unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e4).round() / 10.0
}

/// What push `k` (an odd version) sets.
fn settings(k: u64) -> Value {
    json!({"mode": k % 3, "temp": 18 + k % 7})
}

/// The shadow's document after `version` (from 1): odd versions are pushes of desired settings, even ones the
/// device's report of the push before.
pub fn document(version: u64) -> Value {
    let push = if version.is_multiple_of(2) { version - 1 } else { version };
    let mut state = json!({"desired": {"settings": settings(push)}});
    // The last report (an even version) is of the push just before it.
    let report = version - version % 2;
    if report >= 2 {
        state["reported"] = json!({"settings": settings(report - 1), "fw": "1.2.3"});
    }
    state
}

/// The `update/documents` message of `version`, as the rule delivers it.
fn event(version: u64) -> Value {
    let timestamp = T0 + version;
    let mut event = json!({
        "current": {"state": document(version), "version": version},
        "timestamp": timestamp,
        "topic": format!("$aws/things/{THING}/shadow/name/{SHADOW}/update/documents"),
        "receivedAt": timestamp * 1000 + 5,
    });
    if version > 1 {
        event["previous"] = json!({"state": document(version - 1), "version": version - 1});
    }
    if !version.is_multiple_of(2) {
        event["clientToken"] = json!(format!("push-{}", version / 1000));
    }
    event
}

fn shadow() -> ShadowRef {
    ShadowRef {
        thing: ThingName::parse(THING).expect("the bench's thing name"),
        shadow: Some(ShadowName::parse(SHADOW).expect("the bench's shadow name")),
    }
}

fn record(version: u64) -> HistoryRecord {
    record_from_event(&event(version), &RecordOptions::default()).expect("recording the event")
}

/// Writes the `EVENTS` items, then the head (a copy of the last one).
async fn load(db: &aws_sdk_dynamodb::Client, table: &str) -> Duration {
    let started = Instant::now();
    // Built batch by batch as they are sent: 100 000 items held at once would take a few hundred MB.
    let batches = (0..EVENTS.div_ceil(writes::BATCH_LIMIT as u64)).map(|b| {
        let first = b * writes::BATCH_LIMIT as u64 + 1;
        (first..(first + writes::BATCH_LIMIT as u64).min(EVENTS + 1))
            .map(|v| writes::put_request(history::item(&record(v)).expect("the record's item")).expect("a put"))
            .collect::<Vec<_>>()
    });
    futures::stream::iter(batches)
        .for_each_concurrent(8, |batch| {
            let db = db.clone();
            async move { writes::batch_write(&db, table, batch).await.expect("batch_write") }
        })
        .await;
    let head = history::head_item(&record(EVENTS)).expect("the head item");
    db.put_item().table_name(table).set_item(Some(head)).send().await.expect("writing the head");
    started.elapsed()
}

#[derive(Debug, Clone, Copy)]
enum At {
    Time(u64),
    Version(u64),
}

impl At {
    fn flag(self) -> (&'static str, u64) {
        match self {
            Self::Time(t) => ("--at", t),
            Self::Version(v) => ("--version", v),
        }
    }
}

/// `shadow get --at T | --version N` in process: the bounded reads and the core's decision (a fold from the
/// nearest checkpoint when the item read is a change, as the CLI does; never the case here).
async fn point_read(store: &DynamoHistoryStore, shadow: &ShadowRef, at: At) -> Result<(Point, ReadCost), String> {
    let now = devstack::history::now_secs();
    let (answer, before, mut cost) = match at {
        At::Version(version) => {
            let (found, _earlier, cost) = store.at_version(shadow, version).await.map_err(|e| e.to_string())?;
            let found = found.as_ref().map(Recorded::from_item).transpose()?;
            (point::at_version(version, found.as_ref(), now), found, cost)
        }
        At::Time(t) => {
            let (items, cost) = store.around(shadow, t).await.map_err(|e| e.to_string())?;
            let mut read = AroundTime::default();
            for item in &items {
                let record = Recorded::from_item(item)?;
                match item.get("role").and_then(Value::as_str) {
                    Some("before") => read.before = Some(record),
                    Some("after") => read.after = Some(record),
                    _ => read.head = Some(record),
                }
            }
            (point::at_time(t, &read, now), read.before.clone(), cost)
        }
    };
    match answer.map_err(|e| e.to_string())? {
        AtTime::Known(point) => Ok((point, cost)),
        AtTime::Fold => {
            let sk = before.and_then(|b| b.sk).unwrap_or_default();
            let items = store.back_from(shadow, &sk, 200).await.map_err(|e| e.to_string())?;
            cost.requests += 1;
            cost.items += items.len() as u32;
            let older = items.iter().map(Recorded::from_item).collect::<Result<Vec<_>, _>>()?;
            let older: Vec<Recorded> = older.into_iter().filter(|r| point::live(r, now)).collect();
            point::fold(&older, 200).map(|p| (p, cost)).map_err(|e| e.to_string())
        }
    }
}

/// Whether an answer is the document the loader wrote for `version`; why not, if it is not.
fn wrong(what: &str, version: u64, got: Result<(u64, ShadowState), String>) -> Option<String> {
    let expected = ShadowState::from_snapshot(Some(&document(version)));
    match got {
        Ok((v, state)) if v == version && state.same_as(&expected) => None,
        Ok((v, state)) => Some(format!(
            "{what}: version {v} with {}, expected version {version} with {}",
            state.to_json(),
            expected.to_json()
        )),
        Err(e) => Some(format!("{what}: no answer ({e}), expected version {version}")),
    }
}

/// One point read in process: the first call of a fresh client, then the median of `RUNS`.
struct InProcess {
    cold: Duration,
    median: Duration,
    cost: ReadCost,
}

async fn in_process(stack: &Stack, table: &str, at: At, version: u64, problems: &mut Vec<String>) -> InProcess {
    let store = DynamoHistoryStore::new(stack.dynamodb(), table);
    let shadow = shadow();
    let (flag, value) = at.flag();
    let what = format!("in process, {flag} {value}");
    let mut times = Vec::with_capacity(RUNS + 1);
    let mut cost = ReadCost::default();
    for _ in 0..=RUNS {
        let started = Instant::now();
        let answer = point_read(&store, &shadow, at).await;
        times.push(started.elapsed());
        if let Ok((_, c)) = &answer {
            cost = *c;
        }
        problems.extend(wrong(&what, version, answer.map(|(p, _)| (p.version, p.state))));
    }
    let cold = times.remove(0);
    InProcess { cold, median: median(times), cost }
}

/// The release binary, as a user runs it: the median of `CLI_RUNS` wall times from spawn to exit.
async fn cli(
    binary: &Path,
    env: &[(String, String)],
    table: &str,
    at: At,
    version: u64,
    problems: &mut Vec<String>,
) -> Duration {
    let (flag, value) = at.flag();
    let what = format!("shadow-fleet shadow get {THING} --shadow {SHADOW} {flag} {value}");
    let mut times = Vec::with_capacity(CLI_RUNS);
    for _ in 0..CLI_RUNS {
        let mut command = tokio::process::Command::new(binary);
        command
            .args(["shadow", "get", THING, "--shadow", SHADOW, flag, &value.to_string(), "--output", "json"])
            .envs(env.iter().cloned())
            .env("HISTORY_TABLE", table);
        let started = Instant::now();
        let out = command.output().await.unwrap_or_else(|e| panic!("running {}: {e}", binary.display()));
        times.push(started.elapsed());
        let answer = if out.status.success() {
            let stdout = String::from_utf8_lossy(&out.stdout);
            serde_json::from_str::<Value>(stdout.lines().last().unwrap_or_default())
                .map_err(|e| format!("unreadable output {stdout:?}: {e}"))
                .map(|doc| (doc["version"].as_u64().unwrap_or(0), ShadowState::from_snapshot(doc.get("state"))))
        } else {
            Err(format!("exit {}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim()))
        };
        problems.extend(wrong(&what, version, answer));
    }
    median(times)
}

/// What the fold read: items, Query pages, read units (DynamoDB Local's ConsumedCapacity).
#[derive(Debug, Clone, Copy, Default)]
struct FoldCost {
    items: u64,
    requests: u64,
    read_units: f64,
}

/// The peer: every live item of the shadow, oldest first, a Query page after the other (as
/// `DynamoHistoryStore::events` reads them), folded: the document at the end of second `t`, and the one after
/// `version`.
///
/// Each page asks for at most `page_items` (`Limit`), as many as DynamoDB's 1 MB page holds: DynamoDB Local reads
/// every item from the page's start key on into its heap when a Query has no Limit, and a 100 000-item partition
/// runs it out of its 512 MB (InternalFailure, the server unusable after). DynamoDB stops at 1 MB itself.
async fn fold_all(
    db: &aws_sdk_dynamodb::Client,
    table: &str,
    t: u64,
    version: u64,
    page_items: i32,
) -> Result<(Option<(u64, ShadowState)>, Option<(u64, ShadowState)>, FoldCost), String> {
    let now = devstack::history::now_secs();
    let mut pages = db
        .query()
        .table_name(table)
        .key_condition_expression("#pk = :pk AND #sk < :end")
        .filter_expression("attribute_not_exists(#exp) OR #exp > :now")
        .expression_attribute_names("#pk", tables::PARTITION_KEY)
        .expression_attribute_names("#sk", tables::SORT_KEY)
        .expression_attribute_names("#exp", tables::TTL_ATTRIBUTE)
        .expression_attribute_values(":pk", AttributeValue::S(partition_key(&shadow())))
        .expression_attribute_values(":end", AttributeValue::S(EVENTS_END.into()))
        .expression_attribute_values(":now", AttributeValue::N(now.to_string()))
        .consistent_read(true)
        .limit(page_items)
        .return_consumed_capacity(ReturnConsumedCapacity::Total)
        .into_paginator()
        .send();
    let mut cost = FoldCost::default();
    let (mut state, mut at_t, mut at_version): (Option<(u64, ShadowState)>, _, _) = (None, None, None);
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| format!("Query: {}", aws_sdk_dynamodb::error::DisplayErrorContext(e)))?;
        cost.requests += 1;
        cost.read_units += page.consumed_capacity.and_then(|c| c.capacity_units).unwrap_or(0.0);
        for mut item in page.items.unwrap_or_default() {
            cost.items += 1;
            item.remove(tables::PARTITION_KEY);
            item.remove(tables::SORT_KEY);
            let item: Value = serde_dynamo::from_item(item).map_err(|e| format!("unreadable item: {e}"))?;
            let record = Recorded::from_item(&history::restore_numbers(item))?;
            state = match record.kind {
                RecordKind::Snapshot => Some((record.version, ShadowState::from_snapshot(record.state.as_ref()))),
                RecordKind::Update => {
                    let mut next = state.map(|(_, s)| s).unwrap_or_default();
                    next.apply_update(record.state.as_ref().unwrap_or(&Value::Null));
                    Some((record.version, next))
                }
                RecordKind::Delete => None,
            };
            if record.timestamp <= t {
                at_t.clone_from(&state);
            }
            if record.version == version {
                at_version.clone_from(&state);
            }
        }
    }
    Ok((at_t, at_version, cost))
}

/// One point: its time and version, read every way.
pub struct PointFigures {
    pub name: &'static str,
    pub version: u64,
    pub at: InProcessFigures,
    pub at_version: InProcessFigures,
    pub fold_ms: f64,
    pub fold_items: u64,
    pub fold_requests: u64,
}

pub struct InProcessFigures {
    pub ms: f64,
    pub cold_ms: f64,
    pub requests: u32,
    pub items: u32,
    pub cli_ms: f64,
}

/// One point read in process and by the release binary.
async fn read_both_ways(
    stack: &Stack,
    binary: &Path,
    env: &[(String, String)],
    table: &str,
    at: At,
    version: u64,
    problems: &mut Vec<String>,
) -> InProcessFigures {
    let read = in_process(stack, table, at, version, problems).await;
    let cli_ms = ms(cli(binary, env, table, at, version, problems).await);
    InProcessFigures {
        ms: ms(read.median),
        cold_ms: ms(read.cold),
        requests: read.cost.requests,
        items: read.cost.items,
        cli_ms,
    }
}

pub struct Figures {
    pub points: Vec<PointFigures>,
    pub report: Value,
}

pub async fn run(stack: &Stack, root: &Path, env: &[(String, String)]) -> Figures {
    let db = stack.dynamodb();
    let table = unique("bench-history-at");
    tables::ensure_table(&db, &table, &tables::HISTORY).await.expect("creating the history table");
    let loaded = load(&db, &table).await;
    println!("  loaded {EVENTS} update/documents events and the head in {:.1} s", loaded.as_secs_f64());
    let binary = root.join("target/release/shadow-fleet");
    // The fold's pages: as many items as DynamoDB's 1 MB page holds.
    let item_bytes = tables::item_size(&history::item(&record(EVENTS / 2)).expect("the record's item"));
    let page_items = i32::try_from(1024 * 1024 / item_bytes.max(1)).unwrap_or(i32::MAX);
    let mut problems = Vec::new();
    let mut points = Vec::new();
    let mut answers = 0;
    let mut report = json!({});
    for (name, version) in POINTS {
        let t = T0 + version;
        let at_fig = read_both_ways(stack, &binary, env, &table, At::Time(t), version, &mut problems).await;
        let version_fig =
            read_both_ways(stack, &binary, env, &table, At::Version(version), version, &mut problems).await;
        answers += 2 * (RUNS + 1 + CLI_RUNS);
        let mut fold_times = Vec::new();
        let mut fold_cost = FoldCost::default();
        for _ in 0..FOLD_RUNS {
            let started = Instant::now();
            let folded = fold_all(&db, &table, t, version, page_items).await;
            fold_times.push(started.elapsed());
            let (at_t, at_version) = match folded {
                Ok((at_t, at_version, cost)) => {
                    fold_cost = cost;
                    (at_t.ok_or("nothing at or before T".to_owned()), at_version.ok_or("no such version".to_owned()))
                }
                Err(e) => (Err(e.clone()), Err(e)),
            };
            problems.extend(wrong(&format!("fold peer, at {t}"), version, at_t));
            problems.extend(wrong(&format!("fold peer, version {version}"), version, at_version));
            answers += 2;
        }
        let fold_ms = ms(median(fold_times));
        let side = |f: &InProcessFigures, flag: &str, value: u64| {
            json!({"flag": flag, "value": value, "in_process_ms_median": f.ms, "in_process_first_call_ms": f.cold_ms,
                   "requests": f.requests, "items_read": f.items, "cli_process_ms_median": f.cli_ms,
                   "fold_over_point_latency": fold_ms / f.ms.max(0.001),
                   "fold_over_point_items": fold_cost.items as f64 / f64::from(f.items.max(1))})
        };
        report[name] = json!({
            "version": version, "t": t,
            "at": side(&at_fig, "--at", t),
            "version_read": side(&version_fig, "--version", version),
            "fold_peer": {"ms_median": fold_ms, "items_read": fold_cost.items, "requests": fold_cost.requests,
                          "read_units": fold_cost.read_units, "page_limit": page_items, "item_bytes": item_bytes},
        });
        points.push(PointFigures {
            name,
            version,
            at: at_fig,
            at_version: version_fig,
            fold_ms,
            fold_items: fold_cost.items,
            fold_requests: fold_cost.requests,
        });
    }
    let _ = db.delete_table().table_name(&table).send().await;
    if !problems.is_empty() {
        for problem in &problems {
            println!("  WRONG: {problem}");
        }
        panic!("{} of {answers} point-in-time answers were wrong (above)", problems.len());
    }
    println!(
        "  answers checked: all {answers} right (each the version and document the loader wrote at that point: \
         in process, the CLI's JSON, the fold peer's)"
    );
    let report = json!({
        "events": EVENTS, "load_seconds": (loaded.as_secs_f64() * 10.0).round() / 10.0,
        "runs": {"in_process": RUNS, "cli": CLI_RUNS, "fold_peer": FOLD_RUNS},
        "answers_checked": answers, "answers_wrong": 0,
        "points": report,
        "ours_in_process": "DynamoHistoryStore::around / at_version + shadow_core::history::point::at_time / at_version, \
                            one client (its first call is the cold figure)",
        "ours_cli": "target/release/shadow-fleet shadow get bench-device --shadow cfg --at T | --version N --output json \
                     (process wall time)",
        "peer": "every item of the shadow read with Query pages (strongly consistent, expired items filtered, as \
                 DynamoHistoryStore::events; Limit = the items of a 1 MB page, which DynamoDB Local needs) and folded \
                 to the point, in process",
    });
    Figures { points, report }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_document_is_the_one_before_with_its_push_or_report_merged() {
        let mut state = ShadowState::default();
        for version in 1..=12u64 {
            let change = if version.is_multiple_of(2) {
                json!({"reported": {"settings": settings(version - 1), "fw": "1.2.3"}})
            } else {
                json!({"desired": {"settings": settings(version)}})
            };
            state.apply_update(&change);
            assert!(state.same_as(&ShadowState::from_snapshot(Some(&document(version)))), "version {version}");
            let record = record_from_event(&event(version), &RecordOptions::default()).expect("recording");
            assert_eq!((record.kind, record.version, record.timestamp), (RecordKind::Snapshot, version, T0 + version));
            let previous = (version > 1).then(|| document(version - 1));
            assert_eq!(record.previous_state, previous, "version {version}");
        }
    }
}
