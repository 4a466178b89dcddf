//! The operator's view of pushes, the built `shadow-fleet` CLI against DynamoDB Local: `push show` of a rollout
//! mid-bake and after an abort (the table's content: a row per phase, the gate, the bake's countdown, what happens
//! next; `--output json` keeps the whole record), and `push list --state` across the whole table. The records are
//! written by shadow-push's own store (`DynamoPushStore::create`) from records the core builds, in a push table of
//! the test's own.

use devstack::cli::{Run, run_with, stack_env};
use devstack::{Stack, unique};
use serde_json::json;
use shadow_aws::{DynamoPushStore, tables};
use shadow_core::push::lifecycle::{new_record, plan_digest};
use shadow_core::push::{PhaseCounts, PushDefinition, PushRecord, PushRecords, PushState, validate_request};

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// A rollout of three phases over group `prod`, onAbort as given; its definition and its new record.
fn rollout(push_id: &str, on_abort: &str, started_at: u64) -> (PushDefinition, PushRecord) {
    let request = json!({"pushId": push_id, "shadowName": "cfg", "desired": {"settings": {"mode": 2}},
        "targets": {"thingGroup": "prod", "recursive": true},
        "rollout": {"phases": [{"percent": 10}, {"percent": 50}, {"percent": 100}], "bakeSeconds": 600,
                    "convergedPercent": 95, "failedPercent": 5, "minThings": 20, "onAbort": on_abort}});
    let plan = validate_request(&request, 400, None).unwrap_or_else(|e| panic!("{e}"));
    let definition = PushDefinition {
        push_id: push_id.to_owned(),
        shadow_name: Some("cfg".into()),
        dry_run: false,
        request: serde_json::to_value(&plan).unwrap_or_default(),
        plan_digest: plan_digest(&plan),
        sources: Vec::new(),
    };
    (definition, new_record(&plan, "owner".into(), started_at, started_at + 30_000))
}

fn phase(percent: f64, targets: u64, updated: u64, judged: Option<(u64, u64)>) -> PhaseCounts {
    let (converged, pending) = judged.unwrap_or_default();
    PhaseCounts {
        percent,
        targets,
        updated,
        unchanged: targets - updated,
        converged,
        pending,
        judged: judged.is_some(),
        ..PhaseCounts::default()
    }
}

async fn push_table(stack: &Stack, pushes: &[(PushDefinition, PushRecord)]) -> String {
    let table = unique("operator-push");
    let db = stack.dynamodb();
    tables::ensure_table(&db, &table, &tables::PUSH).await.expect("creating the push table");
    let store = DynamoPushStore::new(db, table.clone(), None);
    for (definition, record) in pushes {
        assert!(store.create(definition, record).await.expect("creating the push"), "{}", record.push_id);
    }
    table
}

fn env_for(stack: &Stack, table: &str) -> std::collections::BTreeMap<String, String> {
    let mut env = stack_env(stack);
    env.insert("PUSH_TABLE".into(), table.to_owned());
    env
}

/// The value of field `key` in a two-column table of the view, its wrapped lines joined.
fn field(run: &Run, key: &str) -> String {
    let lines: Vec<&str> = run.stdout.lines().collect();
    let Some(at) = lines.iter().position(|l| l.trim_start().strip_prefix(key).is_some_and(|r| r.starts_with(' ')))
    else {
        panic!("no line {key:?} in:\n{}", run.stdout);
    };
    let first = lines[at];
    let key_end = first.find(key).unwrap_or(0) + key.len();
    let column = key_end + first[key_end..].len() - first[key_end..].trim_start().len();
    let mut value = vec![first[column..].trim()];
    // A wrapped value goes on under its own column, the key's column blank.
    for line in &lines[at + 1..] {
        match (line.get(..column), line.get(column..)) {
            (Some(blank), Some(rest)) if blank.trim().is_empty() && !rest.trim().is_empty() => value.push(rest.trim()),
            _ => break,
        }
    }
    value.join(" ")
}

/// The cells of the phase table's row for phase `n`.
fn phase_row(run: &Run, n: u32) -> Vec<String> {
    run.stdout
        .lines()
        .map(|l| l.split(['│', '┆']).map(str::trim).filter(|c| !c.is_empty()).map(str::to_owned).collect::<Vec<_>>())
        .find(|cells| cells.first().is_some_and(|c| *c == n.to_string()) && cells.len() == 10)
        .unwrap_or_else(|| panic!("no row for phase {n} in:\n{}", run.stdout))
}

#[tokio::test]
async fn push_show_is_an_operators_view_of_a_rollout_mid_bake_and_after_an_abort() {
    let stack = Stack::get();
    let now = now_ms();
    let baking_id = unique("fw-baking");
    let (definition, mut baking) = rollout(&baking_id, "rollback", now - 300_000);
    baking.status.state = PushState::Baking;
    baking.status.phase = 2;
    baking.status.bake_until = Some(now + 420_000);
    baking.status.phases = vec![
        phase(10.0, 3, 3, Some((3, 0))),
        phase(50.0, 12, 11, None),
        PhaseCounts { percent: 100.0, ..Default::default() },
    ];
    baking.status.counts.targets = 15;
    baking.status.counts.updated = 14;
    baking.status.counts.unchanged = 1;
    let aborted_id = unique("fw-aborted");
    let (aborted_definition, mut aborted) = rollout(&aborted_id, "stop", now - 900_000);
    aborted.status.state = PushState::Aborted;
    aborted.status.complete = true;
    aborted.status.finished_at = Some(now - 120_000);
    aborted.status.phases = vec![
        phase(10.0, 4, 4, Some((2, 2))),
        PhaseCounts { percent: 50.0, ..Default::default() },
        PhaseCounts { percent: 100.0, ..Default::default() },
    ];
    aborted.status.counts.targets = 4;
    aborted.status.counts.updated = 4;
    aborted.status.abort_reason =
        Some("phase 1: 2 of 4 judged things converged (50.0 %), below convergedPercent 95".into());
    let table = push_table(&stack, &[(definition, baking), (aborted_definition, aborted)]).await;
    let env = env_for(&stack, &table);

    // Mid-bake: the phases with the gate beside them, the bake's end as a time and a countdown, what comes next.
    let shown = run_with(&env, &["push", "show", &baking_id]);
    assert_eq!(shown.code, 0, "{}", shown.stderr);
    assert_eq!(field(&shown, "state"), "baking, phase 2 of 3");
    assert_eq!(field(&shown, "targets"), "thing group prod and its child groups");
    assert_eq!(
        phase_row(&shown, 1),
        ["1", "10 %", "3", "3", "0", "3", "0", "0", "0", "passed (100.0 % converged, needs ≥ 95)"]
    );
    let second = phase_row(&shown, 2);
    assert_eq!(second[..9], ["2", "50 %", "12", "11", "1", "-", "-", "-", "0"]);
    assert!(
        second[9].starts_with("baking: judged in 6m") || second[9].starts_with("baking: judged in 7m"),
        "{second:?}"
    );
    assert_eq!(phase_row(&shown, 3)[9], "not started");
    let bake_ends = field(&shown, "bake ends");
    assert!(bake_ends.contains("(in 6m") || bake_ends.contains("(in 7m"), "{bake_ends}");
    let next = field(&shown, "next");
    assert!(next.contains("phase 2 is judged: if it passes, phase 3 (100 %) starts"), "{next}");
    assert!(next.contains("rolls back every updated thing"), "{next}");
    assert!(field(&shown, "gate").starts_with("a phase passes when ≥ 95 % of its judged things converged"));
    // Bookkeeping is not shown; no line is wider than a terminal's 160 columns.
    for internal in ["recheck", "journalShards", "segment", "storeThrottled", "bakeUntil"] {
        assert!(!shown.stdout.contains(internal), "{internal} in:\n{}", shown.stdout);
    }
    assert!(shown.stdout.lines().all(|l| l.trim_end().chars().count() <= 160), "{}", shown.stdout);

    // The whole record, as stored, with --output json.
    let json = run_with(&env, &["push", "show", &baking_id, "--output", "json"]);
    let record = json.lines().pop().unwrap_or_default();
    assert_eq!(record["bakeUntil"], json!(now + 420_000), "{record}");
    assert_eq!((record["state"].clone(), record["phase"].clone()), (json!("baking"), json!(2)));
    assert_eq!(record["phases"][1]["updated"], 11);
    assert!(record.get("recheck").is_some() && record.get("segment").is_some(), "{record}");

    // After an abort: the phase that failed its gate, and the way back.
    let shown = run_with(&env, &["push", "show", &aborted_id]);
    assert_eq!(shown.code, 0, "{}", shown.stderr);
    assert!(field(&shown, "state").starts_with("aborted, phase 1 of 3: phase 1: 2 of 4 judged"), "{}", shown.stdout);
    let finished = field(&shown, "finished");
    assert!(finished.ends_with("s ago)") && finished.contains("(2m 0"), "{}", shown.stdout);
    assert_eq!(field(&shown, "things"), "4 walked: 4 updated, 0 unchanged, 0 failed");
    assert_eq!(
        phase_row(&shown, 1),
        ["1", "10 %", "4", "4", "0", "2", "2", "0", "0", "failed (50.0 % converged, needs ≥ 95)"]
    );
    assert_eq!(phase_row(&shown, 2)[9], "not judged");
    assert!(!shown.stdout.contains("bake ends"), "{}", shown.stdout);
    assert!(field(&shown, "next").contains(&format!("shadow-fleet push abort {aborted_id} --rollback")));
}

#[tokio::test]
async fn push_list_by_state_finds_every_push_in_that_state_across_the_table() {
    let stack = Stack::get();
    let now = now_ms();
    let month_ago = now - 30 * 86_400_000;
    let mut pushes = Vec::new();
    let mut ids = std::collections::BTreeMap::new();
    for (name, started_at) in [
        ("running", now - 60_000),
        ("paused", now - 120_000),
        ("paused-long-ago", month_ago),
        ("stalled", now - 180_000),
        ("rolling-back", now - 240_000),
        ("complete", now - 300_000),
        ("aborted", now - 360_000),
        ("rolled-back", now - 420_000),
    ] {
        let id = unique(&format!("list-{name}"));
        let (definition, mut record) = rollout(&id, "rollback", started_at);
        match name {
            "paused" | "paused-long-ago" => record.status.state = PushState::Paused,
            "stalled" => record.holder.stalled = Some("segment 1 died 3 times".into()),
            "rolling-back" => record.status.state = PushState::RollingBack,
            "complete" | "aborted" | "rolled-back" => {
                record.status.complete = true;
                record.status.finished_at = Some(started_at + 1000);
                record.status.state = match name {
                    "complete" => PushState::Complete,
                    "aborted" => PushState::Aborted,
                    _ => PushState::RolledBack,
                };
            }
            _ => {}
        }
        ids.insert(name, id);
        pushes.push((definition, record));
    }
    let table = push_table(&stack, &pushes).await;
    let env = env_for(&stack, &table);
    let listed = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["push", "list", "--output", "json"];
        all.extend_from_slice(args);
        let run = run_with(&env, &all);
        assert_eq!(run.code, 0, "{args:?}: {}", run.stderr);
        run.lines().iter().map(|r| r["pushId"].as_str().unwrap_or_default().to_owned()).collect()
    };
    let of = |names: &[&str]| -> Vec<String> { names.iter().map(|n| ids[n].clone()).collect() };

    // Newest first, across the whole table (the paused push of a month ago too), without --since.
    assert_eq!(listed(&["--state", "open"]), of(&["running", "paused", "stalled", "rolling-back", "paused-long-ago"]));
    assert_eq!(listed(&["--state", "paused"]), of(&["paused", "paused-long-ago"]));
    assert_eq!(listed(&["--state", "stalled"]), of(&["stalled"]));
    assert_eq!(listed(&["--state", "rolling-back"]), of(&["rolling-back"]));
    // --since and --limit still bound it; without --state the week's pushes, as before.
    assert_eq!(listed(&["--state", "paused", "--since", "1d"]), of(&["paused"]));
    assert_eq!(listed(&["--state", "open", "--limit", "2"]), of(&["running", "paused"]));
    assert_eq!(listed(&[]).len(), 7, "the pushes of the last 7 days");

    let table_run = run_with(&env, &["push", "list", "--state", "stalled"]);
    assert_eq!(table_run.code, 0, "{}", table_run.stderr);
    let row = table_run.stdout.lines().find(|l| l.contains(&ids["stalled"])).unwrap_or_default();
    assert!(row.contains("stalled"), "{}", table_run.stdout);
    let empty = unique("operator-empty");
    let db = stack.dynamodb();
    tables::ensure_table(&db, &empty, &tables::PUSH).await.expect("creating the push table");
    let none = run_with(&env_for(&stack, &empty), &["push", "list", "--state", "rolling-back"]);
    assert_eq!(none.code, 0, "{}", none.stderr);
    assert!(none.stderr.contains(&format!("no rolling-back pushes in table {empty}")), "{}", none.stderr);
    let bad = run_with(&env, &["push", "list", "--state", "sleeping"]);
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    assert!(bad.stderr.contains("open") && bad.stderr.contains("rolling-back"), "{}", bad.stderr);
}
