//! A shadow as it was, end to end: a random sequence of updates and a deletion through the data plane the stack
//! serves, recorded by shadow-history through the rules stand-in (update/documents and delete/accepted, as the
//! template's rules route them), then `shadow-fleet shadow get --version N` for every version held against what
//! GetThingShadow answered at that version, `--at` at chosen times, before the shadow existed and while it was
//! deleted, and `shadow diff`.

use std::time::Duration;

use aws_smithy_types::Blob;
use devstack::cli::run;
use devstack::{Stack, unique};
use rand::{Rng, SeedableRng};
use serde_json::{Map, Value, json};
use shadow_aws::DynamoHistoryStore;
use shadow_core::document::equal;
use shadow_core::{ShadowName, ShadowRef, ThingName};

const SHADOW: &str = "cfg";

fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A random update: desired and/or reported, nested objects, nulls that delete a key or a subtree, arrays,
/// numbers as integers and as floats of the same value. No `null` inside an object the update sets: moto keeps such
/// a null in the document where AWS removes it (the core's property test holds nested nulls against AWS's rules).
fn random_state(rng: &mut impl Rng) -> Value {
    let value = |rng: &mut rand::rngs::StdRng| -> Value {
        match rng.random_range(0..7) {
            0 => Value::Null,
            1 => json!(rng.random_range(0..5)),
            2 => json!(f64::from(rng.random_range(0..5))),
            3 => json!([rng.random_range(0..3), "x"]),
            4 => json!({"mode": rng.random_range(0..3), "temp": rng.random_range(0..3)}),
            5 => json!({"mode": f64::from(rng.random_range(0..3))}),
            _ => json!(format!("s{}", rng.random_range(0..3))),
        }
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(rng.random());
    let section = |rng: &mut rand::rngs::StdRng| {
        let mut map = Map::new();
        for _ in 0..rng.random_range(1..4) {
            let key = ["a", "b", "settings"][rng.random_range(0..3)];
            map.insert(key.to_owned(), value(rng));
        }
        Value::Object(map)
    };
    match rng.random_range(0..3) {
        0 => json!({"desired": section(&mut rng)}),
        1 => json!({"reported": section(&mut rng)}),
        _ => json!({"desired": section(&mut rng), "reported": section(&mut rng)}),
    }
}

/// `desired` and `reported` of a GetThingShadow answer (delta is derived; compared separately).
fn sections(document: &Value) -> Value {
    let state = &document["state"];
    let mut out = Map::new();
    for name in ["desired", "reported"] {
        if let Some(section) = state.get(name).filter(|s| s.as_object().is_some_and(|m| !m.is_empty())) {
            out.insert(name.to_owned(), section.clone());
        }
    }
    Value::Object(out)
}

/// moto puts `{}` in `delta` for a nested object whose values reported all holds (it compares the objects whole
/// first), and sometimes a `null` (which no shadow can hold); AWS documents delta as the keys that differ. Empty
/// objects and nulls are dropped on both sides before comparing.
fn without_empty_objects(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let kept: Map<String, Value> = map
                .into_iter()
                .map(|(k, v)| (k, without_empty_objects(v)))
                .filter(|(_, v)| !v.is_null() && !v.as_object().is_some_and(Map::is_empty))
                .collect();
            if kept.is_empty() { Value::Null } else { Value::Object(kept) }
        }
        other => other,
    }
}

async fn get(stack: &Stack, thing: &str) -> Option<Value> {
    let got = stack.iot_data().get_thing_shadow().thing_name(thing).shadow_name(SHADOW).send().await.ok()?;
    serde_json::from_slice(got.payload.as_ref().map(|b| b.as_ref()).unwrap_or_default()).ok()
}

async fn update(stack: &Stack, thing: &str, state: &Value) {
    stack
        .iot_data()
        .update_thing_shadow()
        .thing_name(thing)
        .shadow_name(SHADOW)
        .payload(Blob::new(json!({"state": state, "clientToken": "test-writer"}).to_string()))
        .send()
        .await
        .expect("update_thing_shadow");
}

/// Waits (at most 60 s) until the history holds `events` items of the shadow.
async fn recorded(stack: &Stack, thing: &str, events: usize) {
    let store = DynamoHistoryStore::new(stack.dynamodb(), stack.var("HISTORY_TABLE"));
    let shadow = ShadowRef {
        thing: ThingName::parse(thing).expect("the thing's name"),
        shadow: Some(ShadowName::parse(SHADOW).expect("the shadow's name")),
    };
    for _ in 0..600 {
        if store.events(&shadow).await.map(|e| e.len()).unwrap_or(0) >= events {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("shadow-history did not record {events} events of {thing} within 60 s");
}

/// Sleeps into the next second, so that what follows has a later timestamp than what came before.
async fn next_second() {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    tokio::time::sleep(Duration::from_millis(1_050 - u64::from(now.subsec_millis()))).await;
}

#[tokio::test]
async fn every_version_and_chosen_times_read_back_as_the_service_held_them() {
    let stack = Stack::get();
    let thing = unique("points");
    stack.iot().create_thing().thing_name(&thing).send().await.expect("create_thing");
    let seed: u64 = rand::rng().random();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let before_creation = now_secs();
    next_second().await;

    // (version, the document GetThingShadow answered after it)
    let mut held: Vec<(u64, Value)> = Vec::new();
    let mut at_times: Vec<(u64, Value)> = Vec::new();
    let mut events = 0;
    for round in 0..3 {
        for _ in 0..8 {
            update(&stack, &thing, &random_state(&mut rng)).await;
            events += 1;
            let document = get(&stack, &thing).await.expect("the shadow after an update");
            held.push((document["version"].as_u64().expect("a version"), document));
        }
        // The last document of this second is the answer for the whole second.
        let (_, last) = held.last().cloned().expect("a version");
        next_second().await;
        at_times.push((now_secs() - 1, last));
        if round == 1 {
            break;
        }
    }
    // A deletion that lasts a second, then the shadow again.
    stack.iot_data().delete_thing_shadow().thing_name(&thing).shadow_name(SHADOW).send().await.expect("delete");
    events += 1;
    next_second().await;
    let while_deleted = now_secs();
    next_second().await;
    for _ in 0..5 {
        update(&stack, &thing, &random_state(&mut rng)).await;
        events += 1;
        let document = get(&stack, &thing).await.expect("the shadow after an update");
        held.push((document["version"].as_u64().expect("a version"), document));
    }
    recorded(&stack, &thing, events).await;

    for (version, document) in &held {
        let v = version.to_string();
        let got = run(&stack, &["shadow", "get", &thing, "--shadow", SHADOW, "--version", &v, "--output", "json"]);
        assert_eq!(got.code, 0, "seed {seed}, version {v}: {}", got.stderr);
        let line = got.lines().pop().unwrap_or_default();
        assert!(
            equal(&sections(&line), &sections(document)),
            "seed {seed}, version {v}:\n  history: {}\n  service: {}",
            sections(&line),
            sections(document)
        );
        assert_eq!(line["version"], *version, "seed {seed}");
        let delta = without_empty_objects(document["state"].get("delta").cloned().unwrap_or(Value::Null));
        let got_delta = without_empty_objects(line["state"].get("delta").cloned().unwrap_or(Value::Null));
        assert!(equal(&delta, &got_delta), "seed {seed}, version {v}: delta {got_delta} but the service's {delta}");
    }

    for (t, document) in &at_times {
        let at = t.to_string();
        let got = run(&stack, &["shadow", "get", &thing, "--shadow", SHADOW, "--at", &at, "--output", "json"]);
        assert_eq!(got.code, 0, "seed {seed}, at {at}: {}", got.stderr);
        let line = got.lines().pop().unwrap_or_default();
        assert!(equal(&sections(&line), &sections(document)), "seed {seed}, at {at}: {line} but {document}");
    }

    let early = before_creation.to_string();
    let got = run(&stack, &["shadow", "get", &thing, "--shadow", SHADOW, "--at", &early]);
    assert_eq!(got.code, 1, "before the shadow existed: {}", got.stdout);
    assert!(got.stderr.contains("did not exist"), "{}", got.stderr);
    assert!(got.stdout.is_empty(), "never a document: {}", got.stdout);

    let deleted = while_deleted.to_string();
    let got = run(&stack, &["shadow", "get", &thing, "--shadow", SHADOW, "--at", &deleted]);
    assert_eq!(got.code, 1, "while deleted: {}", got.stdout);
    assert!(got.stderr.contains("deleted"), "{}", got.stderr);

    let never = (held.iter().map(|(v, _)| *v).max().unwrap_or(0) + 100).to_string();
    let got = run(&stack, &["shadow", "get", &thing, "--shadow", SHADOW, "--version", &never]);
    assert_eq!(got.code, 1);
    assert!(got.stderr.contains("never recorded"), "{}", got.stderr);

    // What changed from the first version to now, leaf by leaf: each row's "after" is the current document's.
    let first = format!("v{}", held[0].0);
    let diff = run(&stack, &["shadow", "diff", &thing, "--shadow", SHADOW, "--from", &first, "--output", "json"]);
    assert_eq!(diff.code, 0, "{}", diff.stderr);
    let current = sections(&held.last().expect("a version").1);
    for row in diff.lines() {
        let path = row["path"].as_str().unwrap_or_default();
        let mut node = &current;
        for key in path.split('.') {
            node = node.get(key).unwrap_or(&Value::Null);
        }
        // An absent leaf: gone, or now an object (its leaves are rows of their own).
        let held = if row["after"].is_null() { node.is_null() || node.is_object() } else { equal(node, &row["after"]) };
        assert!(held, "seed {seed}: {path} is {node} now, diff says {}", row["after"]);
        if !row["after"].is_null() {
            assert_eq!(row["by"], "test-writer", "{row}");
        }
    }
}

async fn set(stack: &Stack, thing: &str, state: Value, token: &str) {
    stack
        .iot_data()
        .update_thing_shadow()
        .thing_name(thing)
        .shadow_name(SHADOW)
        .payload(Blob::new(json!({"state": state, "clientToken": token}).to_string()))
        .send()
        .await
        .expect("update_thing_shadow");
}

/// The things behind at `at` (epoch seconds), as `drift --at` says them: thing → its keys behind; and the things
/// without a shadow then.
fn drift_at(stack: &Stack, things: &[&str], at: u64) -> (std::collections::BTreeMap<String, Vec<String>>, Vec<String>) {
    let at = at.to_string();
    let mut args = vec!["drift", "--shadow", SHADOW, "--at", &at, "--output", "json"];
    args.extend(things);
    let got = run(stack, &args);
    assert_eq!(got.code, 0, "drift --at {at}: {}", got.stderr);
    let mut behind = std::collections::BTreeMap::new();
    let mut none = Vec::new();
    for line in got.lines() {
        let thing = line["thing"].as_str().unwrap_or_default().to_owned();
        match line["kind"].as_str() {
            Some("thing") => {
                let keys = line["keys"].as_array().cloned().unwrap_or_default();
                behind.insert(thing, keys.iter().map(|k| k["key"].as_str().unwrap_or_default().to_owned()).collect());
            }
            Some("noShadow") => none.push(thing),
            _ => {}
        }
    }
    (behind, none)
}

#[tokio::test]
async fn drift_at_a_time_is_the_fleet_as_the_history_knew_it_then() {
    let stack = Stack::get();
    let (a, b, c) = (unique("then-a"), unique("then-b"), unique("then-c"));
    for thing in [&a, &b, &c] {
        stack.iot().create_thing().thing_name(thing).send().await.expect("create_thing");
    }
    // Second 1: a and b are told mode 1. Second 2: a reports it. Second 3: a is told mode 2, c appears.
    set(&stack, &a, json!({"desired": {"mode": 1}}), "push-1").await;
    set(&stack, &b, json!({"desired": {"mode": 1}}), "push-1").await;
    next_second().await;
    let told = now_secs() - 1;
    set(&stack, &a, json!({"reported": {"mode": 1.0}}), "device").await;
    next_second().await;
    let reported = now_secs() - 1;
    set(&stack, &a, json!({"desired": {"mode": 2}}), "push-2").await;
    set(&stack, &c, json!({"desired": {"mode": 2}, "reported": {"mode": 2}}), "push-2").await;
    for (thing, events) in [(&a, 3), (&b, 1), (&c, 1)] {
        recorded(&stack, thing, events).await;
    }
    let things = [a.as_str(), b.as_str(), c.as_str()];

    let (behind, none) = drift_at(&stack, &things, told);
    assert_eq!(behind.get(&a), Some(&vec!["mode".to_owned()]), "{behind:?}");
    assert_eq!(behind.get(&b), Some(&vec!["mode".to_owned()]), "{behind:?}");
    assert_eq!(none, vec![c.clone()], "c had no shadow then");

    let (behind, none) = drift_at(&stack, &things, reported);
    assert!(!behind.contains_key(&a), "a reported mode 1 (as 1.0) by then: {behind:?}");
    assert!(behind.contains_key(&b), "{behind:?}");
    assert_eq!(none, vec![c.clone()]);

    let (behind, none) = drift_at(&stack, &things, now_secs() + 1);
    assert!(behind.contains_key(&a) && behind.contains_key(&b) && !behind.contains_key(&c), "{behind:?}");
    assert!(none.is_empty(), "{none:?}");
}

/// An `update/documents` event as the rule delivers it.
fn documents(thing: &str, version: u64, timestamp: u64, previous: Option<Value>, current: Value) -> Value {
    let mut event = json!({
        "current": {"state": current, "metadata": {}, "version": version},
        "timestamp": timestamp, "clientToken": format!("push-{version}"),
        "topic": format!("$aws/things/{thing}/shadow/name/{SHADOW}/update/documents"),
    });
    if let Some(previous) = previous {
        event["previous"] = json!({"state": previous, "metadata": {}, "version": version - 1});
    }
    event
}

#[tokio::test]
async fn expired_items_are_never_read_even_before_dynamodb_deletes_them() {
    let fixture = devstack::history::HistoryFixture::new().await;
    // DynamoDB deletes expired items only within about two days: keep them here, as DynamoDB may.
    let off = aws_sdk_dynamodb::types::TimeToLiveSpecification::builder()
        .attribute_name("expiresAt")
        .enabled(false)
        .build()
        .expect("a TTL specification");
    fixture
        .stack
        .dynamodb()
        .update_time_to_live()
        .table_name(&fixture.table)
        .time_to_live_specification(off)
        .send()
        .await
        .expect("turning TTL off");
    let history = fixture.function(&[("HISTORY_RETENTION_DAYS", "30")]).await;
    let thing = unique("expired");
    let day = 86_400;
    let now = now_secs();
    let (t1, t2, t3) = (now - 40 * day, now - 35 * day, now - 10 * day);
    let mode = |m: u64| json!({"desired": {"mode": m}});
    for event in [
        documents(&thing, 1, t1, None, mode(1)),
        documents(&thing, 2, t2, Some(mode(1)), mode(2)),
        documents(&thing, 3, t3, Some(mode(2)), mode(3)),
    ] {
        history.invoke(&event, devstack::history::INVOKE_TIMEOUT).await.expect("invoking shadow-history");
    }
    assert_eq!(fixture.count().await, 3, "the expired items are still in the table");
    let mut env = devstack::cli::stack_env(&fixture.stack);
    env.insert("HISTORY_TABLE".into(), fixture.table.clone());
    let cli = |args: &[&str]| devstack::cli::run_with(&env, args);

    let listed = cli(&["history", &thing, "--shadow", SHADOW, "--output", "json"]);
    assert_eq!(listed.code, 0, "{}", listed.stderr);
    let versions: Vec<u64> = listed.lines().iter().filter_map(|e| e["version"].as_u64()).collect();
    assert_eq!(versions, [3], "history shows only what the retention keeps: {}", listed.stdout);

    // 20 days ago: inside the retention; every item before it has expired, the next one holds the document.
    let at = (now - 20 * day).to_string();
    let got = cli(&["shadow", "get", &thing, "--shadow", SHADOW, "--at", &at, "--output", "json"]);
    assert_eq!(got.code, 0, "{}", got.stderr);
    assert_eq!(got.lines()[0]["state"]["desired"], json!({"mode": 2}), "{}", got.stdout);

    // 33 days ago: before the retained history, although an expired item of that time is still in the table.
    let at = (now - 33 * day).to_string();
    let got = cli(&["shadow", "get", &thing, "--shadow", SHADOW, "--at", &at]);
    assert_eq!(got.code, 1, "never the expired document: {}", got.stdout);
    assert!(got.stderr.contains("before the retained history"), "{}", got.stderr);

    let got = cli(&["shadow", "get", &thing, "--shadow", SHADOW, "--version", "2"]);
    assert_eq!(got.code, 1, "never the expired document: {}", got.stdout);
    assert!(got.stderr.contains("past the history's retention"), "{}", got.stderr);
}

#[tokio::test]
async fn history_of_one_path_shows_only_the_events_that_touched_it() {
    let stack = Stack::get();
    let thing = unique("path");
    stack.iot().create_thing().thing_name(&thing).send().await.expect("create_thing");
    set(&stack, &thing, json!({"desired": {"settings": {"mode": 1, "temp": 20}, "url": "a"}}), "push-1").await;
    set(&stack, &thing, json!({"desired": {"url": "b"}}), "push-2").await;
    set(&stack, &thing, json!({"desired": {"settings": {"temp": 21}}}), "push-3").await;
    set(&stack, &thing, json!({"reported": {"settings": {"mode": 1}}}), "device").await;
    set(&stack, &thing, json!({"desired": {"settings": null}}), "push-4").await;
    recorded(&stack, &thing, 5).await;
    let got = run(&stack, &["history", &thing, "--shadow", SHADOW, "--path", "settings.mode", "--output", "json"]);
    assert_eq!(got.code, 0, "{}", got.stderr);
    let seen: Vec<(String, Value, Value)> = got
        .lines()
        .iter()
        .map(|e| {
            (e["clientToken"].as_str().unwrap_or_default().to_owned(), e["desired"].clone(), e["reported"].clone())
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            ("push-1".to_owned(), json!([{"path": "settings.mode", "op": "added", "to": 1}]), json!([])),
            ("device".to_owned(), json!([]), json!([{"path": "settings.mode", "op": "added", "to": 1}])),
            ("push-4".to_owned(), json!([{"path": "settings.mode", "op": "removed", "from": 1}]), json!([])),
        ],
        "{}",
        got.stdout
    );
    let bad = run(&stack, &["history", &thing, "--path", "settings..mode"]);
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    assert!(bad.stderr.contains("settings..mode"), "{}", bad.stderr);
}

/// shadow-history dies right after it wrote an event's item, before the head: Lambda's retry finds the item (a
/// duplicate) and moves the head then, so the shadow now is known from the head.
#[tokio::test]
async fn killed_between_the_event_and_the_head_the_retry_moves_the_head() {
    let fixture = devstack::history::HistoryFixture::new().await;
    let history = fixture.function(&[]).await;
    let thing = unique("head");
    let now = now_secs();
    let event = documents(&thing, 1, now - 60, None, json!({"desired": {"mode": 1}}));
    let record = shadow_core::history::record_from_event(&event, &Default::default()).expect("a record");
    let item = shadow_aws::history::item(&record).expect("the event's item");
    // The first attempt's only write: the event's item (as the function's first PutItem makes it).
    let written = shadow_aws::writes::put_if_absent(&fixture.stack.dynamodb(), &fixture.table, item).await;
    assert!(written.expect("writing the item"));
    let shadow = ShadowRef {
        thing: ThingName::parse(thing.as_str()).expect("the thing's name"),
        shadow: Some(ShadowName::parse(SHADOW).expect("the shadow's name")),
    };
    assert!(fixture.store.head(&shadow).await.expect("reading the head").is_none(), "no head before the retry");

    let answer = history.invoke(&event, devstack::history::INVOKE_TIMEOUT).await.expect("the retry");
    assert_eq!(answer["outcome"], "duplicate", "{answer}");
    let head = fixture.store.head(&shadow).await.expect("reading the head").expect("the retry wrote the head");
    assert_eq!((head["version"].clone(), head["state"]["desired"].clone()), (json!(1), json!({"mode": 1})));
    assert_eq!(fixture.count().await, 1, "still one event");
}
