//! `shadow-fleet drift`, the built binary, against the local stack: a fleet where some devices are behind, walked
//! by group and by listed things, with since when read from history (written straight into a table of the test's
//! own, and recorded by shadow-history from writes through the data plane); the fleet-index path where moto can
//! serve it; bad input.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_iot::types::{IndexingFilter, NamedShadowIndexingMode, ThingIndexingConfiguration, ThingIndexingMode};
use aws_smithy_types::Blob;
use devstack::cli::{history_when, run_with, stack_env};
use devstack::history::{now_secs, update};
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

async fn create_group(stack: &Stack, group: &str, members: &[String]) {
    let iot = stack.iot();
    iot.create_thing_group().thing_group_name(group).send().await.expect("create_thing_group");
    for thing in members {
        iot.add_thing_to_thing_group()
            .thing_group_name(group)
            .thing_name(thing)
            .send()
            .await
            .expect("add_thing_to_thing_group");
    }
}

/// Writes `state` (desired and/or reported) to a shadow through the data plane the stack serves.
async fn write(stack: &Stack, thing: &str, shadow: Option<&str>, state: Value) {
    stack
        .iot_data()
        .update_thing_shadow()
        .thing_name(thing)
        .set_shadow_name(shadow.map(str::to_owned))
        .payload(Blob::new(json!({"state": state}).to_string()))
        .send()
        .await
        .expect("update_thing_shadow");
}

/// A history table of the test's own, with events written straight into it at chosen times.
async fn history_table(stack: &Stack, events: &[Value]) -> String {
    let table = unique("drift-history");
    tables::ensure_table(&stack.dynamodb(), &table, &tables::HISTORY).await.expect("creating the history table");
    for event in events {
        let record = record_from_event(event, &RecordOptions::default()).expect("the shadow event as a history record");
        let item = shadow_aws::history::item(&record).expect("the history record as a DynamoDB item");
        stack.dynamodb().put_item().table_name(&table).set_item(Some(item)).send().await.expect("put_item");
    }
    table
}

fn thing_line<'a>(lines: &'a [Value], thing: &str) -> &'a Value {
    lines.iter().find(|l| l["thing"] == thing).unwrap_or_else(|| panic!("no line for {thing}: {lines:#?}"))
}

/// A fleet under one group, on named shadow `cfg`: two in sync (one of them behind on its classic shadow only),
/// two behind on `settings.mode`, one behind on `url`, one without the shadow.
struct Fleet {
    group: String,
    sync: String,
    one: String,
    two: String,
    three: String,
    none: String,
    classic: String,
}

async fn fleet(stack: &Stack) -> Fleet {
    let p = unique("drift");
    let name = |s: &str| format!("{p}-{s}");
    let fleet = Fleet {
        group: name("group"),
        sync: name("sync"),
        one: name("one"),
        two: name("two"),
        three: name("three"),
        none: name("none"),
        classic: name("classic"),
    };
    let all = [&fleet.sync, &fleet.one, &fleet.two, &fleet.three, &fleet.none, &fleet.classic].map(String::clone);
    create_things(stack, &all).await;
    create_group(stack, &fleet.group, &all).await;
    let cfg = Some("cfg");
    write(stack, &fleet.sync, cfg, json!({"desired": {"mode": 1}, "reported": {"mode": 1.0}})).await;
    write(stack, &fleet.one, cfg, json!({"desired": {"settings": {"mode": 3, "temp": 20}}})).await;
    write(stack, &fleet.one, cfg, json!({"reported": {"settings": {"mode": 2, "temp": 20}}})).await;
    write(
        stack,
        &fleet.two,
        cfg,
        json!({"desired": {"settings": {"mode": 3}, "url": "b"},
                                         "reported": {"settings": {"mode": 3}, "url": "a"}}),
    )
    .await;
    write(stack, &fleet.three, cfg, json!({"desired": {"settings": {"mode": 3}}})).await;
    write(stack, &fleet.classic, cfg, json!({"desired": {"fw": "1.2"}, "reported": {"fw": "1.2", "up": 5}})).await;
    write(stack, &fleet.classic, None, json!({"desired": {"fw": "2.0"}, "reported": {"fw": "1.9"}})).await;
    fleet
}

#[tokio::test]
async fn a_group_walked_shows_the_things_behind_their_keys_counts_and_since_when() {
    let stack = Stack::get();
    let f = fleet(&stack).await;
    // History at chosen times, agreeing with the shadows: `one` had mode 1, then 3 at t0+100; `two` got url "b" at
    // t0+200; `three` has no history (since when unknown).
    let t0 = 1_795_000_000;
    let mut pushed = update(&f.one, Some("cfg"), 2, t0 + 100, json!({"desired": {"settings": {"mode": 3}}}));
    pushed["clientToken"] = json!("push-7");
    let table = history_table(
        &stack,
        &[
            update(&f.one, Some("cfg"), 1, t0, json!({"desired": {"settings": {"mode": 1, "temp": 20}}})),
            pushed,
            update(&f.one, Some("cfg"), 3, t0 + 150, json!({"reported": {"settings": {"mode": 2, "temp": 20}}})),
            update(&f.two, Some("cfg"), 1, t0 + 200, json!({"desired": {"url": "b", "settings": {"mode": 3}}})),
            update(&f.two, Some("cfg"), 2, t0 + 250, json!({"reported": {"url": "a", "settings": {"mode": 3}}})),
        ],
    )
    .await;
    let mut env = stack_env(&stack);
    env.insert("HISTORY_TABLE".into(), table);

    let got = run_with(&env, &["drift", "--group", &f.group, "--shadow", "cfg", "--walk", "--output", "json"]);
    assert_eq!(got.code, 0, "stdout: {}\nstderr: {}", got.stdout, got.stderr);
    assert!(got.stderr.contains("walk: reading every target's shadow (--walk)"), "{}", got.stderr);
    let things = got.kind("thing");
    let names: Vec<&str> = things.iter().filter_map(|l| l["thing"].as_str()).collect();
    assert_eq!(names.len(), 3, "{names:?}");
    for behind in [&f.one, &f.two, &f.three] {
        assert!(names.contains(&behind.as_str()), "{behind} missing from {names:?}");
    }

    let one = thing_line(&things, &f.one);
    assert_eq!(
        one["keys"],
        json!([{"key": "settings.mode", "desired": 3, "reported": 2, "since": "2026-11-18T11:08:20Z",
                "sinceTimestamp": t0 + 100, "by": "push-7"}]),
        "{one}"
    );
    assert_eq!(one["sinceTimestamp"], t0 + 100);
    assert_eq!(one["shadow"], "cfg");
    let two = thing_line(&things, &f.two);
    assert_eq!(
        two["keys"],
        json!([{"key": "url", "desired": "b", "reported": "a", "since": "2026-11-18T11:10:00Z",
                                    "sinceTimestamp": t0 + 200, "by": null}])
    );
    let three = thing_line(&things, &f.three);
    assert_eq!(
        three["keys"],
        json!([{"key": "settings.mode", "desired": 3, "reported": null, "since": null,
                                      "sinceTimestamp": null, "by": null}])
    );

    let no_shadow = got.kind("noShadow");
    assert_eq!(no_shadow.len(), 1, "{no_shadow:?}");
    assert_eq!(no_shadow[0]["thing"], f.none.as_str());
    let counts: BTreeMap<String, u64> = got
        .kind("key")
        .iter()
        .map(|l| (l["key"].as_str().unwrap_or_default().to_owned(), l["things"].as_u64().unwrap_or(0)))
        .collect();
    assert_eq!(counts, BTreeMap::from([("settings.mode".into(), 2), ("url".into(), 1)]));
    let totals = got.kind("totals").pop().unwrap_or_default();
    assert_eq!(
        (&totals["checked"], &totals["inSync"], &totals["drifting"], &totals["noShadow"], &totals["failed"]),
        (&json!(6), &json!(2), &json!(3), &json!(1), &json!(0)),
        "{totals}"
    );
    assert_eq!((&totals["path"], &totals["shadowReads"]), (&json!("walk"), &json!(6)));

    // The table, for people: one row per key behind, the counts per key, the totals.
    let table = run_with(&env, &["drift", "--group", &f.group, "--shadow", "cfg", "--walk", "--max-tps", "50"]);
    assert_eq!(table.code, 0, "{}", table.stderr);
    for text in [
        f.one.as_str(),
        f.two.as_str(),
        f.three.as_str(),
        "settings.mode",
        "(absent)",
        "\"b\"",
        "2026-11-18T11:08:20Z",
        "ago) by push-7",
        "unknown",
        "things behind",
        "drifting",
        "no shadow",
    ] {
        assert!(table.stdout.contains(text), "{text} missing from:\n{}", table.stdout);
    }
    assert!(!table.stdout.contains(&f.sync), "an in-sync thing is not listed:\n{}", table.stdout);
    assert!(table.stdout.contains(&format!("no shadow: {}", f.none)), "{}", table.stdout);

    // The same fleet found by a fleet-index query (SearchIndex; moto serves `thingGroupNames:`), walked.
    let query = format!("thingGroupNames:{}", f.group);
    let queried = run_with(&env, &["drift", "--query", &query, "--shadow", "cfg", "--walk", "--output", "json"]);
    assert_eq!(queried.code, 0, "{}", queried.stderr);
    let totals = queried.kind("totals").pop().unwrap_or_default();
    assert_eq!(
        (&totals["checked"], &totals["drifting"], &totals["noShadow"]),
        (&json!(6), &json!(3), &json!(1)),
        "{totals}"
    );

    // A history table that cannot be read: the drift is still shown, since when unknown, the failure said once.
    let mut unreadable = env.clone();
    unreadable.insert("HISTORY_TABLE".into(), unique("drift-no-such-table"));
    let blind = run_with(&unreadable, &["drift", "--group", &f.group, "--shadow", "cfg", "--walk", "--output", "json"]);
    assert_eq!(blind.code, 0, "{}", blind.stderr);
    assert_eq!(blind.stderr.matches("warning: reading the history of").count(), 1, "{}", blind.stderr);
    let things = blind.kind("thing");
    assert_eq!(things.len(), 3, "{}", blind.stdout);
    assert!(things.iter().all(|t| t["since"].is_null()), "{}", blind.stdout);

    // --recursive: a child group's members too, each thing once (one of the parent's things is in the child too).
    let child_group = format!("{}-child", f.group);
    let child = format!("{}-child", f.group);
    create_things(&stack, std::slice::from_ref(&child)).await;
    stack
        .iot()
        .create_thing_group()
        .thing_group_name(&child_group)
        .parent_group_name(&f.group)
        .send()
        .await
        .expect("create_thing_group (the child group)");
    for thing in [&child, &f.one] {
        stack
            .iot()
            .add_thing_to_thing_group()
            .thing_group_name(&child_group)
            .thing_name(thing)
            .send()
            .await
            .expect("add_thing_to_thing_group (the child group)");
    }
    write(&stack, &child, Some("cfg"), json!({"desired": {"url": "c"}})).await;
    let args = ["drift", "--group", &f.group, "--shadow", "cfg", "--walk", "--output", "json"];
    let recursive = run_with(&env, &[&args[..], &["--recursive"]].concat());
    assert_eq!(recursive.code, 0, "{}", recursive.stderr);
    let totals = recursive.kind("totals").pop().unwrap_or_default();
    assert_eq!((&totals["checked"], &totals["drifting"]), (&json!(7), &json!(4)), "{}", recursive.stdout);
    assert!(recursive.kind("key").contains(&json!({"kind": "key", "key": "url", "things": 2})), "{}", recursive.stdout);
    let direct = run_with(&env, &args);
    assert_eq!(
        direct.kind("totals").pop().unwrap_or_default()["checked"],
        6,
        "the child group's own things are not direct members"
    );

    // The classic shadow is another shadow: listed things, walked whatever the index holds.
    let classic = run_with(&env, &["drift", &f.classic, &f.sync, &f.classic, "--output", "json"]);
    assert_eq!(classic.code, 0, "{}", classic.stderr);
    assert!(classic.stderr.contains("listed things are read directly"), "{}", classic.stderr);
    let things = classic.kind("thing");
    assert_eq!(things.len(), 1, "{}", classic.stdout);
    assert_eq!(things[0]["keys"][0]["key"], "fw");
    assert_eq!((&things[0]["keys"][0]["desired"], &things[0]["keys"][0]["reported"]), (&json!("2.0"), &json!("1.9")));
    assert_eq!(things[0]["shadow"], Value::Null);
    let totals = classic.kind("totals").pop().unwrap_or_default();
    assert_eq!(
        (&totals["checked"], &totals["drifting"], &totals["noShadow"]),
        (&json!(2), &json!(1), &json!(1)),
        "{totals}"
    );
}

#[tokio::test]
async fn since_when_comes_from_the_history_shadow_history_recorded() {
    let stack = Stack::get();
    let env = stack_env(&stack);
    let thing = unique("drift-recorded");
    create_things(&stack, std::slice::from_ref(&thing)).await;
    write(&stack, &thing, Some("cfg"), json!({"desired": {"mode": 1}, "reported": {"mode": 1}})).await;
    assert_eq!(history_when(&env, &thing, 1).len(), 1);
    // Second-resolution timestamps: the new desired value is written in a later second than the first write.
    std::thread::sleep(Duration::from_millis(1100));
    let before = now_secs();
    write(&stack, &thing, Some("cfg"), json!({"desired": {"mode": 2}})).await;
    let after = now_secs();
    assert_eq!(history_when(&env, &thing, 2).len(), 2);
    // A later report of another key does not move the time the device has been behind on `mode`.
    std::thread::sleep(Duration::from_millis(1100));
    write(&stack, &thing, Some("cfg"), json!({"reported": {"other": true}})).await;
    assert_eq!(history_when(&env, &thing, 3).len(), 3);

    let got = run_with(&env, &["drift", &thing, "--shadow", "cfg", "--output", "json"]);
    assert_eq!(got.code, 0, "{}", got.stderr);
    let line = got.kind("thing").pop().unwrap_or_default();
    assert_eq!((&line["keys"][0]["key"], &line["keys"][0]["desired"]), (&json!("mode"), &json!(2)), "{line}");
    let since = line["keys"][0]["sinceTimestamp"].as_u64().unwrap_or(0);
    assert!((before..=after).contains(&since), "since {since} not within the write ({before}..={after}): {line}");

    // --history-events 0: nothing read, since when unknown.
    let unread = run_with(&env, &["drift", &thing, "--shadow", "cfg", "--history-events", "0", "--output", "json"]);
    assert_eq!(unread.kind("thing").pop().unwrap_or_default()["keys"][0]["sinceTimestamp"], Value::Null);
    // No history table configured: the drift is still shown, and the note says why since when is not.
    let mut without = env.clone();
    without.remove("HISTORY_TABLE");
    let bare = run_with(&without, &["drift", &thing, "--shadow", "cfg", "--output", "json"]);
    assert_eq!(bare.code, 0, "{}", bare.stderr);
    assert!(bare.stderr.contains("no history table") && bare.stderr.contains("HISTORY_TABLE"), "{}", bare.stderr);
    let line = bare.kind("thing").pop().unwrap_or_default();
    assert_eq!((&line["keys"][0]["key"], &line["keys"][0]["since"]), (&json!("mode"), &Value::Null), "{line}");
}

async fn set_indexing(stack: &Stack, mode: ThingIndexingMode, named: &[&str]) {
    let mut config = ThingIndexingConfiguration::builder().thing_indexing_mode(mode);
    if !named.is_empty() {
        config = config.named_shadow_indexing_mode(NamedShadowIndexingMode::On).filter(
            IndexingFilter::builder()
                .set_named_shadow_names(Some(named.iter().map(|n| (*n).to_owned()).collect()))
                .build(),
        );
    } else {
        config = config.named_shadow_indexing_mode(NamedShadowIndexingMode::Off);
    }
    let config = config.build().expect("building the indexing configuration");
    stack
        .iot()
        .update_indexing_configuration()
        .thing_indexing_configuration(config)
        .send()
        .await
        .expect("update_indexing_configuration");
}

/// The only test here that changes the account's (moto's) indexing configuration; the others pass `--walk` or list
/// things, so they read the same way whatever it says.
#[tokio::test]
async fn the_fleet_index_is_used_when_it_holds_the_shadow() {
    let stack = Stack::get();
    let env = stack_env(&stack);
    let f = fleet(&stack).await;
    let drift = |shadow: Option<&str>| {
        let mut args = vec!["drift", "--group", f.group.as_str(), "--output", "json"];
        if let Some(shadow) = shadow {
            args.extend(["--shadow", shadow]);
        }
        run_with(&env, &args)
    };

    set_indexing(&stack, ThingIndexingMode::Registry, &[]).await;
    let walked = drift(Some("cfg"));
    assert_eq!(walked.code, 0, "{}", walked.stderr);
    assert!(walked.stderr.contains("does not hold the shadow: named shadow indexing is off"), "{}", walked.stderr);
    assert_eq!(walked.kind("totals").pop().unwrap_or_default()["drifting"], 3);
    let classic = drift(None);
    assert!(classic.stderr.contains("REGISTRY, not REGISTRY_AND_SHADOW"), "{}", classic.stderr);

    set_indexing(&stack, ThingIndexingMode::RegistryAndShadow, &["other"]).await;
    let other = drift(Some("cfg"));
    assert!(other.stderr.contains("cfg is not among the indexed named shadows"), "{}", other.stderr);

    set_indexing(&stack, ThingIndexingMode::RegistryAndShadow, &["cfg"]).await;
    let indexed = drift(Some("cfg"));
    set_indexing(&stack, ThingIndexingMode::Off, &[]).await;
    assert_eq!(indexed.code, 0, "{}", indexed.stderr);
    let query = format!("(thingGroupNames:{}) AND shadow.name.cfg.hasDelta:true", f.group);
    assert!(
        indexed.stderr.contains(&format!("fleet index: reading only the things found by `{query}`")),
        "{}",
        indexed.stderr
    );
    let totals = indexed.kind("totals").pop().unwrap_or_default();
    // The targets are counted from the index (moto serves `thingGroupNames:`); moto does not evaluate shadow fields
    // in a query, so it finds no candidate and nothing is read (on AWS: the three things behind).
    assert_eq!(
        (&totals["path"], &totals["checked"], &totals["noShadow"]),
        (&json!("index"), &json!(6), &Value::Null),
        "{totals}"
    );
    assert_eq!(totals["shadowReads"], 0, "{totals}");
}

#[test]
fn bad_input_is_refused_with_exit_2() {
    let stack = Stack::get();
    let env = stack_env(&stack);
    let cases: [(&[&str], &str); 12] = [
        (&["drift", "t1", "--recursive"], "--group"),
        (&["drift", "t1", "--max-tps", "0"], "positive"),
        (&["drift", "t1", "--max-tps", "-1"], "positive"),
        (&["drift", "t1", "--max-tps", "NaN"], "finite"),
        (&["drift", "t1", "--max-tps", "inf"], "finite"),
        (&["drift", "t1", "--max-tps", "fast"], "not a number"),
        (&["drift"], "required"),
        (&["drift", "--group", "g", "--query", "thingName:x"], "cannot be used with"),
        (&["drift", "t1", "--group", "g"], "cannot be used with"),
        (&["drift", "bad/name"], "thing name \"bad/name\""),
        (&["drift", "t1", "--shadow", "$reserved"], "shadow name \"$reserved\""),
        (&["drift", "--query", " "], "--query is empty"),
    ];
    for (args, text) in cases {
        let got = run_with(&env, args);
        assert_eq!(got.code, 2, "{args:?}: {}", got.stderr);
        assert!(got.stderr.contains(text), "{args:?}: {text} missing from {}", got.stderr);
        assert!(got.stdout.is_empty(), "{args:?}: {}", got.stdout);
    }
}

#[tokio::test]
async fn a_shadow_that_cannot_be_read_is_named_and_the_exit_is_1() {
    let stack = Stack::get();
    let mut env = stack_env(&stack);
    // Nothing listens there: every GetThingShadow fails (after the SDK's own retries).
    env.insert("AWS_ENDPOINT_URL_IOT_DATA_PLANE".into(), "http://127.0.0.1:9".into());
    let thing = unique("drift-unread");
    let got = run_with(&env, &["drift", &thing, "--output", "json"]);
    assert_eq!(got.code, 1, "{}\n{}", got.stdout, got.stderr);
    let failed = got.kind("failed");
    assert_eq!(failed.len(), 1, "{}", got.stdout);
    assert_eq!(failed[0]["thing"], thing.as_str());
    assert!(failed[0]["error"].as_str().is_some_and(|e| e.contains(&format!("reading the shadow of {thing}"))));
    let totals = got.kind("totals").pop().unwrap_or_default();
    assert_eq!((&totals["checked"], &totals["failed"], &totals["drifting"]), (&json!(1), &json!(1), &json!(0)));

    let table = run_with(&env, &["drift", &thing]);
    assert_eq!(table.code, 1);
    assert!(table.stderr.contains(&format!("failed: {thing}: reading the shadow of {thing}")), "{}", table.stderr);
}
