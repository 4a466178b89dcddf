//! The `shadow-fleet` CLI, the built binary, against the local stack: pushes started through the local Lambda's
//! Invoke API and watched to the end, listed and shown; a shadow's history across two pushes and device reports
//! (recorded by shadow-history through the rules stand-in); time bounds; JSON output parsed back; bad input.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::{AttributeValue, PutRequest, WriteRequest};
use aws_smithy_types::Blob;
use devstack::cli::{create_stack, history_when, run, run_with, stack_env, write_request};
use devstack::{Stack, unique};
use serde_json::{Value, json};
use shadow_aws::tables;
use shadow_core::history::{RecordOptions, record_from_event};

async fn create_things(stack: &Stack, names: &[String]) {
    let iot = stack.iot();
    for name in names {
        iot.create_thing().thing_name(name).send().await.expect("create_thing");
    }
}

/// A device reports, through the data plane the stack serves (the rules stand-in records it in history).
async fn report(stack: &Stack, thing: &str, shadow: &str, reported: Value) {
    let document = json!({"state": {"reported": reported}}).to_string();
    stack
        .iot_data()
        .update_thing_shadow()
        .thing_name(thing)
        .shadow_name(shadow)
        .payload(Blob::new(document))
        .send()
        .await
        .expect("update_thing_shadow");
}

/// `push start --wait --output json` to the end: the push id and the summary line.
fn start_and_wait(stack: &Stack, request: &Value, expect_code: i32) -> (String, Value) {
    let path = write_request(request);
    let path = path.to_string_lossy().into_owned();
    let started = run(stack, &["push", "start", &path, "--wait", "--interval", "0.2", "--output", "json"]);
    assert_eq!(started.code, expect_code, "stdout: {}\nstderr: {}", started.stdout, started.stderr);
    let lines = started.lines();
    let push_id = lines.first().and_then(|l| l["pushId"].as_str()).unwrap_or_default().to_owned();
    assert!(!push_id.is_empty(), "the first line names the push: {}", started.stdout);
    let summary = lines.last().cloned().unwrap_or_default();
    assert_eq!(summary["kind"], "summary", "{}", started.stdout);
    assert_eq!(summary["pushId"], push_id.as_str());
    (push_id, summary)
}

#[tokio::test]
async fn a_push_started_is_watched_to_its_end_then_listed_and_shown() {
    let stack = Stack::get();
    let prefix = unique("cli");
    let things: Vec<String> = (0..3).map(|i| format!("{prefix}-{i}")).collect();
    create_things(&stack, &things).await;
    let missing = format!("{prefix}-missing");

    // No pushId in the request: the CLI chooses one, and the record is under the id it printed.
    let request = json!({"shadowName": "cfg", "desired": {"settings": {"mode": 3}},
                         "targets": {"things": [&things[0], &things[1], &things[2], &missing]}});
    let (push_id, summary) = start_and_wait(&stack, &request, 1);
    assert!(push_id.starts_with("push-"), "{push_id}");
    assert_eq!((summary["done"].clone(), summary["total"].clone()), (json!(4), json!(4)), "{summary}");
    assert_eq!(summary["record"]["updated"], 3, "{summary}");
    assert_eq!(summary["failed"], 1);
    assert_eq!(summary["complete"], true);
    assert_eq!(summary["failures"][0]["thingName"], missing.as_str(), "{summary}");

    // A push with nothing failing ends 0; the table says so.
    let clean = json!({"pushId": unique("cli-clean"), "shadowName": "cfg", "desired": {"settings": {"mode": 4}},
                       "targets": {"things": [&things[0], &things[1]]}});
    let (clean_id, clean_summary) = start_and_wait(&stack, &clean, 0);
    assert_eq!(clean_id, clean["pushId"].as_str().unwrap_or_default());
    assert_eq!(clean_summary["record"]["updated"], 2);
    let watched = run(&stack, &["push", "watch", &clean_id]);
    assert_eq!(watched.code, 0, "{}", watched.stderr);
    assert!(watched.stdout.contains("updated") && watched.stdout.contains(&clean_id), "{}", watched.stdout);

    // Listed newest first, with the index's records.
    let listed = run(&stack, &["push", "list", "--since", "1h", "--output", "json"]);
    assert_eq!(listed.code, 0, "{}", listed.stderr);
    let ids: Vec<String> = listed.lines().iter().filter_map(|l| l["pushId"].as_str().map(str::to_owned)).collect();
    let (first, second) = (ids.iter().position(|i| *i == clean_id), ids.iter().position(|i| *i == push_id));
    assert!(first.is_some() && second.is_some() && first < second, "newest first: {ids:?}");
    let started_at: Vec<u64> = listed.lines().iter().map(|l| l["startedAt"].as_u64().unwrap_or(0)).collect();
    assert!(started_at.windows(2).all(|w| w[0] >= w[1]), "{started_at:?}");
    let table = run(&stack, &["push", "list"]);
    assert!(table.code == 0 && table.stdout.contains(&push_id), "{}", table.stdout);
    // A window that ends before these pushes started does not list them.
    let none = run(&stack, &["push", "list", "--since", "2000-01-01", "--limit", "1", "--output", "json"]);
    assert_eq!(none.lines().len(), 1);

    // Shown, with its failures.
    let shown = run(&stack, &["push", "show", &push_id, "--failures", "--output", "json"]);
    assert_eq!(shown.code, 0, "{}", shown.stderr);
    let record = shown.lines().pop().unwrap_or_default();
    assert_eq!((record["targets"].clone(), record["failed"].clone()), (json!(4), json!(1)));
    assert_eq!(record["failures"][0]["code"], "ResourceNotFoundException", "{record}");
    let shown = run(&stack, &["push", "show", &push_id, "--failures"]);
    assert!(shown.stdout.contains(&missing) && shown.stdout.contains("ResourceNotFoundException"), "{}", shown.stdout);
}

#[tokio::test]
async fn history_across_two_pushes_and_device_reports_shows_what_each_changed() {
    let stack = Stack::get();
    let thing = unique("cli-device");
    create_things(&stack, std::slice::from_ref(&thing)).await;
    let push = |id: &str, desired: Value| json!({"pushId": id, "shadowName": "cfg", "desired": desired, "targets": {"things": [&thing]}});
    let (first, second) = (unique("cli-first"), unique("cli-second"));

    start_and_wait(&stack, &push(&first, json!({"settings": {"mode": 1, "temp": 20}, "url": "a"})), 0);
    history_when(&stack_env(&stack), &thing, 1);
    report(&stack, &thing, "cfg", json!({"settings": {"mode": 1, "temp": 20}})).await;
    history_when(&stack_env(&stack), &thing, 2);
    start_and_wait(&stack, &push(&second, json!({"settings": {"temp": 25}, "url": null})), 0);
    history_when(&stack_env(&stack), &thing, 3);
    report(&stack, &thing, "cfg", json!({"settings": {"temp": 25}})).await;
    let events = history_when(&stack_env(&stack), &thing, 4);
    assert_eq!(events.len(), 4, "{events:#?}");

    let versions: Vec<u64> = events.iter().map(|e| e["version"].as_u64().unwrap_or(0)).collect();
    assert_eq!(versions, [1, 2, 3, 4]);
    assert_eq!(events[0]["clientToken"], first.as_str());
    assert_eq!(events[2]["clientToken"], second.as_str());
    assert_eq!(events[1]["clientToken"], Value::Null);
    // The first push created the shadow: its snapshot has no document before it, so every value is added.
    assert_eq!(
        events[0]["desired"],
        json!([{"path": "settings.mode", "op": "added", "to": 1}, {"path": "settings.temp", "op": "added", "to": 20},
               {"path": "url", "op": "added", "to": "a"}])
    );
    assert_eq!(events[0]["reported"], json!([]));
    assert_eq!(events[1]["desired"], json!([]));
    assert_eq!(
        events[1]["reported"],
        json!([{"path": "settings.mode", "op": "added", "to": 1}, {"path": "settings.temp", "op": "added", "to": 20}])
    );
    // The second push: only what it changed, with the value before.
    assert_eq!(
        events[2]["desired"],
        json!([{"path": "settings.temp", "op": "changed", "from": 20, "to": 25},
               {"path": "url", "op": "removed", "from": "a"}])
    );
    assert_eq!(events[3]["reported"], json!([{"path": "settings.temp", "op": "changed", "from": 20, "to": 25}]));

    // --push: that push's events only, diffs still against the event before.
    let only = run(&stack, &["history", &thing, "--shadow", "cfg", "--push", &second, "--output", "json"]);
    assert_eq!(only.code, 0, "{}", only.stderr);
    let only = only.lines();
    assert_eq!(only.len(), 1);
    assert_eq!(only[0]["desired"], events[2]["desired"]);

    // The table, for people.
    let table = run(&stack, &["history", &thing, "--shadow", "cfg"]);
    assert_eq!(table.code, 0, "{}", table.stderr);
    for text in ["settings.temp: 20 → 25", "url removed (was \"a\")", first.as_str(), second.as_str()] {
        assert!(table.stdout.contains(text), "{text} missing from:\n{}", table.stdout);
    }

    // The current document.
    let got = run(&stack, &["shadow", "get", &thing, "--shadow", "cfg", "--output", "json"]);
    assert_eq!(got.code, 0, "{}", got.stderr);
    let document = got.lines().pop().unwrap_or_default();
    assert_eq!(document["state"]["desired"], json!({"settings": {"mode": 1, "temp": 25}}), "{document}");
    assert_eq!(document["version"], 4);
    let got = run(&stack, &["shadow", "get", &thing, "--shadow", "cfg"]);
    assert!(got.code == 0 && got.stdout.contains("settings.temp") && got.stdout.contains("25"), "{}", got.stdout);
}

/// A history table of the test's own, with events written straight into it at chosen times.
async fn history_table(stack: &Stack, events: &[Value]) -> String {
    let table = unique("cli-history");
    tables::ensure_table(&stack.dynamodb(), &table, &tables::HISTORY).await.expect("creating the history table");
    for event in events {
        let record = record_from_event(event, &RecordOptions::default()).expect("the shadow event as a history record");
        let item = shadow_aws::history::item(&record).expect("the history record as a DynamoDB item");
        stack.dynamodb().put_item().table_name(&table).set_item(Some(item)).send().await.expect("put_item");
    }
    table
}

#[tokio::test]
async fn since_and_until_bound_the_history_and_numbers_read_back() {
    let stack = Stack::get();
    let update = devstack::history::update;
    // Four events, 1000 s apart (2026-11-27T00:00:00Z is 1795737600).
    let t0 = 1_795_737_600;
    let events = [
        update("dev", Some("cfg"), 1, t0, json!({"desired": {"n": 1}})),
        update("dev", Some("cfg"), 2, t0 + 1000, json!({"desired": {"n": 2, "huge": 1e200}})),
        update("dev", Some("cfg"), 3, t0 + 2000, json!({"desired": {"n": 3}})),
        update("dev", Some("cfg"), 4, t0 + 3000, json!({"desired": {"n": 4, "huge": null}})),
    ];
    let table = history_table(&stack, &events).await;
    let mut env = stack_env(&stack);
    env.insert("HISTORY_TABLE".into(), table);
    let versions = |args: &[&str]| {
        let mut all = vec!["history", "dev", "--shadow", "cfg", "--output", "json"];
        all.extend_from_slice(args);
        let got = run_with(&env, &all);
        let versions: Vec<u64> = got.lines().iter().map(|e| e["version"].as_u64().unwrap_or(0)).collect();
        (got, versions)
    };

    assert_eq!(versions(&[]).1, [1, 2, 3, 4]);
    // Both bounds included, to the second; RFC 3339 and epoch seconds alike.
    let (from, to) = ((t0 + 1000).to_string(), (t0 + 2000).to_string());
    assert_eq!(versions(&["--since", &from, "--until", &to]).1, [2, 3]);
    assert_eq!(versions(&["--since", "2026-11-27T00:16:40Z", "--until", "2026-11-27T00:33:20Z"]).1, [2, 3]);
    assert_eq!(versions(&["--since", "2026-11-27T00:16:41Z"]).1, [3, 4]);
    assert_eq!(versions(&["--until", "2026-11-27T00:33:19Z"]).1, [1, 2]);
    assert_eq!(versions(&["--since", "2026-11-27"]).1, [1, 2, 3, 4]);
    // In a window, the first event's earlier state is not known.
    let (window, _) = versions(&["--since", &from]);
    assert_eq!(window.lines()[1]["desired"], json!([{"path": "n", "op": "changed", "from": 2, "to": 3}]));
    assert_eq!(window.lines()[0]["desired"][1], json!({"path": "n", "op": "set", "to": 2}));

    // A number DynamoDB cannot hold reads back as the number.
    let (all, _) = versions(&[]);
    let lines = all.lines();
    assert_eq!(lines[1]["desired"][0], json!({"path": "huge", "op": "set", "to": 1e200}), "{}", all.stdout);
    assert_eq!(lines[3]["desired"][0], json!({"path": "huge", "op": "removed", "from": 1e200}));

    // --limit: the first events, and where the rest start.
    let (limited, shown) = versions(&["--limit", "2"]);
    assert_eq!(shown, [1, 2]);
    assert!(limited.stderr.contains("more events follow") && limited.stderr.contains("2026-11-27T00:33:20Z"));

    // An empty window is said, exit 1; --since after --until is bad usage.
    let (empty, shown) = versions(&["--since", "2030-01-01"]);
    assert!(shown.is_empty() && empty.code == 1 && empty.stderr.contains("no history"), "{}", empty.stderr);
    let (reversed, _) = versions(&["--since", &to, "--until", &from]);
    assert_eq!(reversed.code, 2, "{}", reversed.stderr);
}

#[tokio::test]
async fn every_failure_of_a_push_is_shown_across_pages() {
    let stack = Stack::get();
    let table = unique("cli-push");
    let db = stack.dynamodb();
    tables::ensure_table(&db, &table, &tables::PUSH).await.expect("creating the push table");
    let push_id = unique("many-failures");
    db.put_item()
        .table_name(&table)
        .item("pk", AttributeValue::S(push_id.clone()))
        .item("sk", AttributeValue::S("push".into()))
        .item("pushId", AttributeValue::S(push_id.clone()))
        .item("failed", AttributeValue::N("1500".into()))
        .item("complete", AttributeValue::Bool(true))
        .send()
        .await
        .expect("put_item");
    // 1500 failures of about 1 KB each: a Query page holds at most 1 MB, so at least two pages.
    let message = "x".repeat(1000);
    for chunk in (0..1500).collect::<Vec<_>>().chunks(25) {
        let writes: Vec<WriteRequest> = chunk
            .iter()
            .map(|i| {
                let put = PutRequest::builder()
                    .item("pk", AttributeValue::S(push_id.clone()))
                    .item("sk", AttributeValue::S(format!("failure#thing-{i:04}")))
                    .item("thingName", AttributeValue::S(format!("thing-{i:04}")))
                    .item("code", AttributeValue::S("ThrottlingException".into()))
                    .item("message", AttributeValue::S(message.clone()))
                    .build()
                    .expect("building the failure item");
                WriteRequest::builder().put_request(put).build()
            })
            .collect();
        shadow_aws::writes::batch_write(&db, &table, writes).await.expect("batch_write");
    }
    let mut env = stack_env(&stack);
    env.insert("PUSH_TABLE".into(), table);
    let shown = run_with(&env, &["push", "show", &push_id, "--failures", "--output", "json"]);
    assert_eq!(shown.code, 0, "{}", shown.stderr);
    let record = shown.lines().pop().unwrap_or_default();
    let failures = record["failures"].as_array().cloned().unwrap_or_default();
    assert_eq!(failures.len(), 1500);
    assert_eq!(failures[1499]["thingName"], "thing-1499");
}

#[tokio::test]
async fn bad_input_gets_a_message_and_an_exit_code_never_a_panic() {
    let stack = Stack::get();
    let expect = |args: &[&str], code: i32, text: &str| {
        let got = run(&stack, args);
        assert_eq!(got.code, code, "{args:?}: {}", got.stderr);
        assert!(got.stderr.contains(text), "{args:?}: {text:?} not in {}", got.stderr);
    };
    expect(&["push", "show", "no-such-push"], 1, "no push no-such-push in table");
    expect(&["push", "watch", "no-such-push"], 1, "no push no-such-push");
    expect(&["shadow", "get", &unique("no-such-thing")], 1, "does not exist");
    expect(&["history", "thing", "--since", "yesterday"], 2, "\"yesterday\" is not a time");
    expect(&["history", "thing", "--until", "2026-13-01"], 2, "is not a time");
    expect(&["push", "list", "--since", "7x"], 2, "is not a time");
    expect(&["history", "bad/thing"], 2, "thing name \"bad/thing\"");
    expect(&["push", "frobnicate"], 2, "unrecognized subcommand");
    expect(&["history", &unique("never-reported")], 1, "no history for");

    // A request with several problems: every one listed, nothing sent.
    let bad = write_request(&json!({"pushId": "a b", "desired": {}, "targets": {"recursive": true}}));
    let bad = bad.to_string_lossy().into_owned();
    let got = run(&stack, &["push", "start", &bad]);
    assert_eq!(got.code, 1, "{}", got.stderr);
    for field in ["pushId", "desired", "targets.recursive", "nothing was sent"] {
        assert!(got.stderr.contains(field), "{field} not in {}", got.stderr);
    }
    expect(&["push", "start", "/nonexistent/request.json"], 1, "cannot read /nonexistent/request.json");

    // Control messages reach shadow-push (which refuses what it does not know yet); its error comes back whole.
    let got = run(&stack, &["push", "abort", "some-push", "--rollback"]);
    assert_eq!(got.code, 1, "{}", got.stderr);
    assert!(got.stderr.contains("shadow-push refused to abort") && got.stderr.contains("abortPush"), "{}", got.stderr);

    // No table or function configured, and no stack given.
    let mut env = stack_env(&stack);
    env.remove("PUSH_TABLE");
    env.remove("PUSH_FUNCTION_NAME");
    let got = run_with(&env, &["push", "show", "x"]);
    assert!(
        got.code == 1 && got.stderr.contains("--stack NAME") && got.stderr.contains("PUSH_TABLE"),
        "{}",
        got.stderr
    );

    // A stack that does not exist, and one without the outputs (CloudFormation in moto).
    let mut env = stack_env(&stack);
    env.insert("AWS_ENDPOINT_URL_CLOUDFORMATION".into(), stack.var("AWS_ENDPOINT_URL_IOT"));
    let missing = unique("no-stack");
    let got = run_with(&env, &["--stack", &missing, "push", "list"]);
    assert!(got.code == 1 && got.stderr.contains(&format!("stack {missing} does not exist")), "{}", got.stderr);
    let bare = unique("bare-stack");
    create_stack(&stack, &bare, &json!({"Resources": {"Queue": {"Type": "AWS::SQS::Queue"}}}), &[]);
    let got = run_with(&env, &["--stack", &bare, "push", "list"]);
    assert!(
        got.code == 1 && got.stderr.contains("has no output") && got.stderr.contains("PushTableName"),
        "{}",
        got.stderr
    );
    // A stack with the outputs: the CLI finds its tables there, with no table names in the environment.
    let deployed = unique("deployed-stack");
    let output = |value: String| json!({"Value": value});
    create_stack(
        &stack,
        &deployed,
        &json!({"Resources": {"Queue": {"Type": "AWS::SQS::Queue"}},
                "Outputs": {"HistoryTableName": output(stack.var("HISTORY_TABLE")),
                            "PushTableName": output(stack.var("PUSH_TABLE")),
                            "ShadowPushFunctionArn": output(stack.var("PUSH_FUNCTION_NAME"))}}),
        &[],
    );
    env.remove("PUSH_TABLE");
    let got = run_with(&env, &["--stack", &deployed, "push", "show", "no-such-push"]);
    assert!(
        got.code == 1 && got.stderr.contains(&format!("no push no-such-push in table {}", stack.var("PUSH_TABLE")))
    );

    // No credentials anywhere in the chain.
    let mut env: BTreeMap<String, String> = stack_env(&stack)
        .into_iter()
        .filter(|(k, _)| !k.starts_with("AWS_ACCESS_KEY") && !k.starts_with("AWS_SECRET"))
        .collect();
    let home = std::env::temp_dir().join(unique("empty-home"));
    env.insert("HOME".into(), home.to_string_lossy().into_owned());
    env.insert("AWS_CONFIG_FILE".into(), home.join("config").to_string_lossy().into_owned());
    env.insert("AWS_SHARED_CREDENTIALS_FILE".into(), home.join("credentials").to_string_lossy().into_owned());
    let got = run_with(&env, &["push", "list"]);
    assert!(got.code == 1 && got.stderr.contains("no AWS credentials"), "{}", got.stderr);
    // No region.
    let mut env = stack_env(&stack);
    env.remove("AWS_REGION");
    env.remove("AWS_DEFAULT_REGION");
    env.insert("AWS_CONFIG_FILE".into(), "/nonexistent".into());
    let got = run_with(&env, &["push", "list"]);
    assert!(got.code == 1 && got.stderr.contains("no AWS region"), "{}", got.stderr);
}

/// Every reserved slot of shadow-push busy: Lambda answers the control's Invoke with 429 (TooManyRequestsException,
/// from a proxy in front of the local Lambda). The CLI then writes the abort on the record itself, decided by the
/// same state machine, and the segment running the push stops at its next renewal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_while_shadow_push_is_throttled_is_written_on_the_record_and_stops_the_push() {
    use devstack::fault_proxy::{FaultProxy, Faults, Service};
    let stack = Stack::get();
    let prefix = unique("cli-busy");
    let things: Vec<String> = (0..40).map(|i| format!("{prefix}-{i}")).collect();
    create_things(&stack, &things).await;
    let push_id = unique("cli-busy");
    let request = json!({"pushId": push_id, "desired": {"mode": 1}, "targets": {"things": things},
                         "maxRequestsPerSecond": 2, "skipUnchanged": false});
    let path = write_request(&request);
    let started = run(&stack, &["push", "start", &path.to_string_lossy()]);
    assert_eq!(started.code, 0, "{}", started.stderr);
    let show = || {
        let shown = run(&stack, &["push", "show", &push_id, "--output", "json"]);
        shown.lines().pop().unwrap_or_default()
    };
    // The record counts a segment's updates when it ends: a few seconds into the 20 s push, it is running.
    let began = Instant::now();
    while show()["state"] != "running" && began.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    let lambda = stack.var("AWS_ENDPOINT_URL_LAMBDA");
    let busy = FaultProxy::start(&lambda, Service::Lambda, Faults::throttling(1.0)).await;
    let mut env = stack_env(&stack);
    env.insert("AWS_ENDPOINT_URL_LAMBDA".into(), busy.url.clone());
    env.insert("AWS_MAX_ATTEMPTS".into(), "2".into());
    let asked = Instant::now();
    let aborted = run_with(&env, &["push", "abort", &push_id, "--output", "json"]);
    assert_eq!(aborted.code, 0, "stdout: {}\nstderr: {}", aborted.stdout, aborted.stderr);
    assert!(busy.counts.throttled() >= 1, "the invoke was never throttled");
    assert_eq!(aborted.lines().first().map(|l| l["written"].clone()), Some(json!("record")), "{}", aborted.stdout);
    let mut record = show();
    while record["state"] != "aborted" && asked.elapsed() < Duration::from_secs(15) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        record = show();
    }
    assert_eq!(record["state"], "aborted", "{record}");
    assert!(asked.elapsed() <= Duration::from_secs(10), "stopped {:?} after the abort: {record}", asked.elapsed());
    assert!(record["updated"].as_u64().unwrap_or(40) < 40, "{record}");
}

/// A push table of the test's own, holding `record` (a push record's attributes, `pushId` included).
async fn push_table_with(stack: &Stack, records: &[Value]) -> String {
    let table = unique("cli-push");
    let db = stack.dynamodb();
    tables::ensure_table(&db, &table, &tables::PUSH).await.expect("creating the push table");
    for record in records {
        let mut item: std::collections::HashMap<String, AttributeValue> =
            serde_dynamo::to_item(record).expect("the push record as a DynamoDB item");
        item.insert("pk".into(), AttributeValue::S(record["pushId"].as_str().unwrap_or_default().to_owned()));
        item.insert("sk".into(), AttributeValue::S("push".into()));
        db.put_item().table_name(&table).set_item(Some(item)).send().await.expect("put_item");
    }
    table
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// A paused push, its lease run out long ago (a pause releases it): shown and listed as paused, and watched as
/// paused, exit 0, never as stalled, whatever `--stall-after` says.
#[tokio::test]
async fn a_paused_push_is_shown_listed_and_watched_as_paused_never_stalled() {
    let stack = Stack::get();
    let push_id = unique("cli-paused");
    let now = now_ms();
    let record = json!({"pushId": push_id, "pushList": "all", "shadowName": "cfg", "state": "paused", "phase": 1,
        "complete": false, "targets": 10, "updated": 8, "unchanged": 1, "failed": 1, "startedAt": now - 900_000,
        "leaseUntil": now - 600_000, "segment": 2, "handedOff": 2,
        "request": {"desired": {"mode": 1}, "targets": {"things": (0..40).map(|i| format!("t{i}")).collect::<Vec<_>>()}}});
    let table = push_table_with(&stack, &[record]).await;
    let mut env = stack_env(&stack);
    env.insert("PUSH_TABLE".into(), table);

    for stall_after in ["300", "1"] {
        let watched = run_with(&env, &["push", "watch", &push_id, "--stall-after", stall_after, "--interval", "0.05"]);
        assert_eq!(watched.code, 0, "--stall-after {stall_after}: {}", watched.stderr);
        assert!(watched.stderr.contains("is paused") && watched.stderr.contains("push resume"), "{}", watched.stderr);
        assert!(!watched.stderr.contains("stalled"), "{}", watched.stderr);
        assert!(watched.stdout.contains("paused"), "{}", watched.stdout);
    }
    let watched = run_with(&env, &["push", "watch", &push_id, "--output", "json"]);
    assert_eq!(watched.code, 0, "{}", watched.stderr);
    let summary = watched.lines().pop().unwrap_or_default();
    assert_eq!((summary["kind"].clone(), summary["state"].clone()), (json!("summary"), json!("paused")), "{summary}");
    assert_eq!((summary["stalled"].clone(), summary["complete"].clone()), (Value::Null, json!(false)));

    let shown = run_with(&env, &["push", "show", &push_id]);
    assert_eq!(shown.code, 0, "{}", shown.stderr);
    assert!(shown.stdout.contains("paused") && !shown.stdout.contains("stalled"), "{}", shown.stdout);
    let listed = run_with(&env, &["push", "list", "--since", "1h"]);
    assert_eq!(listed.code, 0, "{}", listed.stderr);
    let row = listed.stdout.lines().find(|l| l.contains(&push_id)).unwrap_or_default();
    assert!(row.contains("paused") && !row.contains("stalled"), "{}", listed.stdout);
}

/// Paused through shadow-push while `push start --wait` watches it: the watch ends, paused, exit 0 (with a stall
/// threshold of 1 s, which a pause's released lease passes at once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_paused_while_start_waits_ends_the_wait_as_paused() {
    let stack = Stack::get();
    let prefix = unique("cli-pause");
    let things: Vec<String> = (0..40).map(|i| format!("{prefix}-{i}")).collect();
    create_things(&stack, &things).await;
    let push_id = unique("cli-pause");
    let request = json!({"pushId": push_id, "desired": {"mode": 2}, "targets": {"things": things},
                         "maxRequestsPerSecond": 2, "skipUnchanged": false});
    let path = write_request(&request).to_string_lossy().into_owned();
    let env = stack_env(&stack);
    let waiting = std::thread::spawn(move || {
        run_with(
            &env,
            &["push", "start", &path, "--wait", "--interval", "0.2", "--stall-after", "1", "--output", "json"],
        )
    });
    let show = || run(&stack, &["push", "show", &push_id, "--output", "json"]).lines().pop().unwrap_or_default();
    let began = Instant::now();
    while show()["state"] != "running" && began.elapsed() < Duration::from_secs(15) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let paused = run(&stack, &["push", "pause", &push_id]);
    assert_eq!(paused.code, 0, "{}", paused.stderr);

    let waited = waiting.join().expect("the waiting CLI's thread");
    assert_eq!(waited.code, 0, "stdout: {}\nstderr: {}", waited.stdout, waited.stderr);
    assert!(waited.stderr.contains("is paused") && !waited.stderr.contains("stalled"), "{}", waited.stderr);
    let summary = waited.lines().pop().unwrap_or_default();
    assert_eq!((summary["kind"].clone(), summary["state"].clone()), (json!("summary"), json!("paused")), "{summary}");
    assert!(summary["done"].as_u64().unwrap_or(40) < 40, "{summary}");
    // Pausing it again asks for what holds already: it is answered as paused, not refused.
    let again = run(&stack, &["push", "pause", &push_id, "--output", "json"]);
    assert_eq!(again.code, 0, "stdout: {}\nstderr: {}", again.stdout, again.stderr);
    assert_eq!(again.lines().pop().unwrap_or_default()["state"], json!("paused"), "{}", again.stdout);
    // Left as found: the push ends here.
    let aborted = run(&stack, &["push", "abort", &push_id, "--no-rollback"]);
    assert_eq!(aborted.code, 0, "{}", aborted.stderr);
}

#[tokio::test]
async fn numeric_options_and_ids_are_checked_before_anything_is_read() {
    let stack = Stack::get();
    let expect = |args: &[&str], text: &str| {
        let got = run(&stack, args);
        assert_eq!(got.code, 2, "{args:?}: {}", got.stderr);
        assert!(got.stderr.contains(text), "{args:?}: {text:?} not in {}", got.stderr);
    };
    for bad in ["nan", "NaN", "inf", "-inf", "-1", "0", "0.001", "61", "1e400", "x"] {
        expect(&["push", "watch", "some-push", "--interval", bad], "--interval");
        expect(&["push", "start", "request.json", "--wait", "--interval", bad], "--interval");
    }
    for bad in ["0", "-5", "1.5", "nan", "604801", "18446744073709551615", "99999999999999999999999"] {
        expect(&["push", "watch", "some-push", "--stall-after", bad], "--stall-after");
    }
    for bad in ["0", "-1", "nan", "99999999999999999999999"] {
        expect(&["push", "list", "--limit", bad], "--limit");
    }
    for bad in ["-1", "2.5", "99999999999999999999999"] {
        expect(&["history", "thing", "--limit", bad], "--limit");
    }

    // Ids: by the project's rules, before any call to DynamoDB.
    for command in ["show", "watch", "pause", "resume", "abort"] {
        expect(&["push", command, ""], "push id \"\" is empty");
        expect(&["push", command, "a b"], "push id \"a b\" contains ' '");
    }
    expect(&["push", "show", &"p".repeat(65)], "at most 64");
    expect(&["history", "thing", "--push", ""], "push id \"\" is empty");
    expect(&["history", ""], "thing name \"\" is empty");
    expect(&["history", "thing", "--shadow", ""], "shadow name \"\" is empty");
    expect(&["history", "thing", "--shadow", "$aws"], "shadow name \"$aws\"");
    expect(&["shadow", "get", ""], "thing name \"\" is empty");
    expect(&["shadow", "get", "thing", "--shadow", "a/b"], "shadow name \"a/b\"");

    // A bare number is not a time unless it is 10 digits of epoch seconds.
    expect(&["history", "thing", "--since", "7"], "\"7\" is ambiguous");
    expect(&["history", "thing", "--until", "123"], "7d");
    expect(&["push", "list", "--since", "30"], "is ambiguous");
    expect(&["history", "thing", "--since", "1764237600000"], "epoch milliseconds");
    let got = run(&stack, &["history", &unique("never"), "--since", "1764237600"]);
    assert_eq!(got.code, 1, "10 digits are epoch seconds: {}", got.stderr);

    // Before any AWS call: with no region and no credentials, bad usage is still bad usage.
    let bare = BTreeMap::from([
        ("HOME".to_owned(), "/nonexistent".to_owned()),
        ("AWS_CONFIG_FILE".to_owned(), "/nonexistent".to_owned()),
    ]);
    for args in [
        &["push", "show", ""][..],
        &["push", "watch", "p", "--interval", "nan"],
        &["history", "bad/thing"],
        &["shadow", "get", "t", "--shadow", "$aws"],
        &["history", "t", "--since", "7"],
    ] {
        let got = run_with(&bare, args);
        assert_eq!(got.code, 2, "{args:?}: {}", got.stderr);
        assert!(got.stderr.contains("invalid value"), "{args:?}: {}", got.stderr);
        assert!(!got.stderr.contains("no AWS region") && !got.stderr.contains("credentials"), "{}", got.stderr);
    }

    // Global options: checked too.
    expect(&["--region", "", "push", "list"], "--region");
    expect(&["--region", "EU WEST", "push", "list"], "not a region name");
    expect(&["--profile", "", "push", "list"], "--profile");
}

/// `push show --conflicts`: every thing a rollback left alone, with the leaves' paths, across Query pages, and
/// not the failures stored beside them.
#[tokio::test]
async fn every_conflict_of_a_rollback_is_shown_with_its_paths() {
    use shadow_core::push::rollout::conflict_message;
    use shadow_core::push::{Failure, JournalRef, PushLists};
    let stack = Stack::get();
    let push_id = unique("cli-conflicts");
    let table = push_table_with(&stack, &[json!({"pushId": push_id, "state": "rolledBack", "complete": false})]).await;
    let store = shadow_aws::DynamoPushStore::new(stack.dynamodb(), table.clone(), None);
    // About 1 KB each: more than one 1 MB page.
    let long = "x".repeat(1000);
    let conflicts: Vec<Failure> = (0..1200)
        .map(|i| Failure {
            thing_name: format!("thing-{i:04}"),
            code: "RollbackConflict".into(),
            message: conflict_message(&[format!("settings.mode{i}"), format!("notes.{long}")]),
        })
        .collect();
    store
        .add_conflicts(JournalRef::new(&push_id, 0), now_ms() / 1000 + 86_400, &conflicts)
        .await
        .expect("storing the rollback conflicts");
    let failure = Failure { thing_name: "broken".into(), code: "ThrottlingException".into(), message: "slow".into() };
    store
        .add_failures(JournalRef::new(&push_id, 0), now_ms() / 1000 + 86_400, &[failure])
        .await
        .expect("storing the failure");
    let mut env = stack_env(&stack);
    env.insert("PUSH_TABLE".into(), table);

    let shown = run_with(&env, &["push", "show", &push_id, "--conflicts", "--output", "json"]);
    assert_eq!(shown.code, 0, "{}", shown.stderr);
    let record = shown.lines().pop().unwrap_or_default();
    let listed = record["conflicts"].as_array().cloned().unwrap_or_default();
    assert_eq!(listed.len(), 1200, "every page read");
    assert_eq!(listed[7]["thingName"], "thing-0007");
    assert_eq!(listed[7]["code"], "RollbackConflict");
    assert_eq!(listed[7]["paths"], json!(["settings.mode7", format!("notes.{long}")]));
    assert!(listed.iter().all(|c| c["thingName"] != "broken"), "failures are not conflicts");
    assert!(record.get("failures").is_none(), "{}", shown.stdout.len());

    let table = run_with(&env, &["push", "show", &push_id, "--conflicts"]);
    assert_eq!(table.code, 0, "{}", table.stderr);
    assert!(table.stdout.contains("thing-1199") && table.stdout.contains("settings.mode1199"), "{}", table.stdout);
    assert!(!table.stdout.contains("broken"));
    // None: said so.
    let clean = unique("cli-no-conflicts");
    let mut env = stack_env(&stack);
    env.insert("PUSH_TABLE".into(), push_table_with(&stack, &[json!({"pushId": clean, "complete": true})]).await);
    let none = run_with(&env, &["push", "show", &clean, "--conflicts"]);
    assert!(none.code == 0 && none.stdout.contains("no rollback conflicts"), "{}", none.stdout);
    let none = run_with(&env, &["push", "show", &clean, "--conflicts", "--output", "json"]);
    assert_eq!(none.lines().pop().unwrap_or_default()["conflicts"], json!([]));
}

/// `history --push ID` reads the push's own window (its record's start to end) and keeps its events and its
/// rollback's; "more events follow" names the push's next event, not another writer's.
#[tokio::test]
async fn history_of_one_push_reads_only_its_window() {
    let stack = Stack::get();
    let update = devstack::history::update;
    let t0 = 1_795_737_600; // 2026-11-27T00:00:00Z
    let (push, other) = (unique("cli-mine"), unique("cli-other"));
    let by = |mut event: Value, token: &str| {
        event["clientToken"] = json!(token);
        event
    };
    let events = [
        by(update("dev", Some("cfg"), 1, t0, json!({"desired": {"n": 1, "m": 0}})), &other),
        by(update("dev", Some("cfg"), 2, t0 + 1000, json!({"desired": {"n": 2, "m": 1}})), &push),
        update("dev", Some("cfg"), 3, t0 + 1001, json!({"reported": {"n": 2}})),
        by(update("dev", Some("cfg"), 4, t0 + 1002, json!({"desired": {"n": 1}})), &format!("{push}.rollback")),
        by(update("dev", Some("cfg"), 5, t0 + 3000, json!({"desired": {"n": 5}})), &push),
        by(update("dev", Some("cfg"), 6, t0 + 3001, json!({"desired": {"n": 6}})), &other),
    ];
    let history = history_table(&stack, &events).await;
    // The push ran from t0+999 to t0+1010; the event at t0+3000 with its token is outside its record's window.
    let record = json!({"pushId": push, "state": "rolledBack", "startedAt": (t0 + 999) * 1000,
                        "finishedAt": (t0 + 1010) * 1000, "complete": false});
    let pushes = push_table_with(&stack, &[record]).await;
    let mut env = stack_env(&stack);
    env.insert("HISTORY_TABLE".into(), history);
    env.insert("PUSH_TABLE".into(), pushes);
    let shown = |args: &[&str]| {
        let mut all = vec!["history", "dev", "--shadow", "cfg", "--push", &push, "--output", "json"];
        all.extend_from_slice(args);
        let got = run_with(&env, &all);
        let versions: Vec<u64> = got.lines().iter().map(|e| e["version"].as_u64().unwrap_or(0)).collect();
        (got, versions)
    };

    let (got, versions) = shown(&[]);
    assert_eq!(got.code, 0, "{}", got.stderr);
    assert_eq!(versions, [2, 4], "the push's update and its rollback, in its window only");
    // The event before the window was not read: the push's first change has no known earlier value.
    assert_eq!(got.lines()[0]["desired"][1], json!({"path": "n", "op": "set", "to": 2}), "{}", got.stdout);
    assert_eq!(got.lines()[1]["desired"], json!([{"path": "n", "op": "changed", "from": 2, "to": 1}]));

    // The next event shown would be the rollback's (t0+1002), not the device's report (t0+1001).
    let (limited, versions) = shown(&["--limit", "1"]);
    assert_eq!(versions, [2]);
    assert!(limited.stderr.contains("more events follow; the next at 2026-11-27T00:16:42Z"), "{}", limited.stderr);
    let (last, versions) = shown(&["--limit", "2"]);
    assert_eq!(versions, [2, 4]);
    assert!(!last.stderr.contains("more events follow"), "{}", last.stderr);

    // The user's bounds narrow the window; outside it, nothing.
    assert_eq!(shown(&["--since", "2026-11-27T00:16:41Z"]).1, [4]);
    let (outside, versions) = shown(&["--since", "2026-11-27T00:40:00Z"]);
    assert!(versions.is_empty() && outside.code == 1 && outside.stderr.contains("no history"), "{}", outside.stderr);

    // Without its record, the window is not known: the user's --since bounds the read, or it is refused.
    let unknown = unique("cli-expired");
    let mut all = vec!["history", "dev", "--shadow", "cfg", "--push", &unknown];
    let refused = run_with(&env, &all);
    assert!(refused.code == 1 && refused.stderr.contains("give --since"), "{}", refused.stderr);
    all.extend(["--since", "2026-11-27"]);
    let got = run_with(&env, &all);
    assert!(got.code == 1 && got.stderr.contains("no history"), "{}", got.stderr);
}

/// `--region` and `--profile`, as the AWS CLI has them.
#[tokio::test]
async fn region_and_profile_options_override_the_environment() {
    let stack = Stack::get();
    let region = stack.var("AWS_REGION");
    let mut env = stack_env(&stack);
    env.remove("AWS_REGION");
    env.remove("AWS_DEFAULT_REGION");
    env.insert("AWS_CONFIG_FILE".into(), "/nonexistent".into());
    env.insert("AWS_SHARED_CREDENTIALS_FILE".into(), "/nonexistent".into());
    let got = run_with(&env, &["push", "list"]);
    assert!(got.code == 1 && got.stderr.contains("no AWS region") && got.stderr.contains("--region"), "{}", got.stderr);
    let got = run_with(&env, &["--region", &region, "push", "list", "--output", "json"]);
    assert_eq!(got.code, 0, "the region given only by --region: {}", got.stderr);

    // --region wins over AWS_REGION: moto keeps things per region, so another region has no such shadow.
    let thing = unique("cli-region");
    create_things(&stack, std::slice::from_ref(&thing)).await;
    report(&stack, &thing, "cfg", json!({"n": 1})).await;
    let here = run(&stack, &["shadow", "get", &thing, "--shadow", "cfg", "--region", &region]);
    assert_eq!(here.code, 0, "{}", here.stderr);
    let elsewhere = if region == "ap-south-1" { "eu-north-1" } else { "ap-south-1" };
    let there = run(&stack, &["shadow", "get", &thing, "--shadow", "cfg", "--region", elsewhere]);
    assert!(there.code == 1 && there.stderr.contains("does not exist"), "{}", there.stderr);

    // --profile: that profile's credentials, not the environment's.
    let home = std::env::temp_dir().join(unique("cli-profiles"));
    std::fs::create_dir_all(&home).expect("creating the profiles' home");
    let (config, credentials) = (home.join("config"), home.join("credentials"));
    std::fs::write(&config, format!("[profile local]\nregion = {region}\n")).expect("writing the profile's config");
    std::fs::write(
        &credentials,
        format!(
            "[local]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            stack.var("AWS_ACCESS_KEY_ID"),
            stack.var("AWS_SECRET_ACCESS_KEY")
        ),
    )
    .expect("writing the profile's credentials");
    let mut env = stack_env(&stack);
    env.insert("AWS_CONFIG_FILE".into(), config.to_string_lossy().into_owned());
    env.insert("AWS_SHARED_CREDENTIALS_FILE".into(), credentials.to_string_lossy().into_owned());
    let got = run_with(&env, &["--profile", "nosuch", "push", "list"]);
    assert!(
        got.code == 1 && got.stderr.contains("no AWS credentials from profile nosuch") && got.stderr.contains("nosuch"),
        "the environment's keys are not used with --profile: {}",
        got.stderr
    );
    env.retain(|k, _| !k.starts_with("AWS_ACCESS_KEY") && !k.starts_with("AWS_SECRET") && k != "AWS_REGION");
    env.remove("AWS_DEFAULT_REGION");
    let got = run_with(&env, &["--profile", "local", "push", "list", "--output", "json"]);
    assert_eq!(got.code, 0, "credentials and region from the profile: {}", got.stderr);
}

/// `shadow-fleet shadow get .. | head`: a reader that closes the pipe before the CLI writes ends it quietly, as it
/// ends any Unix tool (SIGPIPE), never with a panic on the failed print.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_closes_the_pipe_ends_the_cli_quietly() {
    use std::os::unix::process::ExitStatusExt;
    use std::process::Stdio;
    let stack = Stack::get();
    let thing = unique("cli-pipe");
    create_things(&stack, std::slice::from_ref(&thing)).await;
    report(&stack, &thing, "cfg", json!({"mode": 1, "note": "x".repeat(4000)})).await;
    let args = ["shadow", "get", thing.as_str(), "--shadow", "cfg"];
    let (env, _recording) = devstack::iam::recorded_cli_env(&args, &stack_env(&stack));
    let mut child = std::process::Command::new(devstack::cli::binary())
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(&env)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("shadow-fleet starts");
    // The reader goes away before the CLI has read the shadow, so its first print meets a closed pipe.
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("shadow-fleet ends");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.signal(), Some(13), "ended by SIGPIPE: {:?}, stderr: {stderr}", out.status);
}
