//! `make demo`: the seed article's story on the local stack, told with the commands a user would type.
//!
//! 1. a fleet of 50 things, 30 of them in the thing group `prod` (20 directly, among them `Test-Device`, and 10 in
//!    its child group `prod-line2`), created in the local registry;
//! 2. `shadow-fleet push start events/push/seed-settings-to-group.json --wait`: the CLI invokes shadow-push through
//!    the stack's local Lambda and watches the push to its end;
//! 3. each device does what the seed's scripts do, over MQTT with its own certificate from the stack's CA: gets its
//!    shadow, reads the delta and reports the new state on its `update` topic; the Device Shadow service's stand-in
//!    carries it out and hands every accepted update to shadow-history (as the IoT Rule);
//! 4. `shadow-fleet history Test-Device --shadow test1` and `shadow-fleet shadow get Test-Device --shadow test1`.
//!
//! Everything it creates (things, groups, shadows, the push's record, the fleet's history items) is deleted again
//! at the end, and before it starts, in case an earlier run was interrupted.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use aws_sdk_dynamodb::types::{AttributeValue, DeleteRequest, WriteRequest};
use serde_json::{Value, json};

use crate::stack::{Stack, repo_root};

const FLEET: usize = 50;
const SHADOW: &str = "test1";
/// The seed's request: `events/push/seed-settings-to-group.json`.
const REQUEST: &str = "events/push/seed-settings-to-group.json";
const PUSH_ID: &str = "seed-2026-11";
const GROUP: &str = "prod";
const CHILD_GROUP: &str = "prod-line2";
pub const DEVICE: &str = "Test-Device";

/// What the demo showed, for its test.
#[derive(Debug)]
pub struct DemoReport {
    /// `shadow-fleet push show seed-2026-11 --output json`.
    pub summary: Value,
    pub device: String,
    /// `shadow-fleet history Test-Device --shadow test1 --output json`.
    pub history: Vec<Value>,
    /// History events recorded for the fleet's shadows.
    pub delivered: u64,
    /// `shadow-fleet shadow get Test-Device --shadow test1 --output json`.
    pub document: Value,
}

fn thing(i: usize) -> String {
    if i == 0 { DEVICE.to_owned() } else { format!("demo-device-{i:02}") }
}

/// `target/<profile>/shadow-fleet`, next to the running binary.
fn cli_binary() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut dir = exe.parent().map(PathBuf::from).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join("shadow-fleet");
    if path.exists() {
        Ok(path)
    } else {
        Err(format!("{} is not built: cargo build -p shadow-fleet-cli", path.display()))
    }
}

/// Runs `shadow-fleet ARGS` as a user would, showing the command and its output; returns its exit code.
fn shadow_fleet(stack: &Stack, args: &[&str]) -> Result<i32, String> {
    println!("\n$ shadow-fleet {}", args.join(" "));
    let status = Command::new(cli_binary()?)
        .args(args)
        .envs(&stack.env)
        .current_dir(repo_root())
        .status()
        .map_err(|e| format!("shadow-fleet: {e}"))?;
    Ok(status.code().unwrap_or(-1))
}

/// Runs `shadow-fleet ARGS --output json` quietly, for the demo's report: its JSON lines.
fn shadow_fleet_json(stack: &Stack, args: &[&str]) -> Result<Vec<Value>, String> {
    let out = Command::new(cli_binary()?)
        .args(args)
        .args(["--output", "json"])
        .envs(&stack.env)
        .current_dir(repo_root())
        .output()
        .map_err(|e| format!("shadow-fleet: {e}"))?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).map_err(|e| format!("shadow-fleet {args:?} printed {l:?}: {e}")))
        .collect()
}

pub async fn run(stack: &Stack) -> Result<DemoReport, String> {
    cleanup(stack).await;
    let result = story(stack).await;
    cleanup(stack).await;
    result
}

/// Device `i` over MQTT: gets its shadow, and when it has a delta reports it and waits for `update/accepted`;
/// `false` when it has no shadow (not in the group) or nothing to do.
async fn device_reports(
    endpoint: &crate::mqtt_device::Endpoint,
    ca: &crate::mqtt_ca::LocalCa,
    i: usize,
) -> Result<bool, String> {
    use crate::mqtt_device::{Device, Incoming};
    let name = thing(i);
    let topic = |suffix: &str| format!("$aws/things/{name}/shadow/name/{SHADOW}/{suffix}");
    let credentials = ca.issue_thing(&name).map_err(|e| format!("{name}'s certificate: {e}"))?;
    let (mut device, _) =
        Device::connect(&name, endpoint, &credentials, true).await.map_err(|e| format!("{name} connecting: {e}"))?;
    let (got, refused, accepted) = (topic("get/accepted"), topic("get/rejected"), topic("update/accepted"));
    device.subscribe(&[got.clone(), refused.clone(), accepted.clone()]).await.map_err(|e| format!("{name}: {e}"))?;
    let token = format!("device-{i:02}");
    device.publish(&topic("get"), json!({"clientToken": token}).to_string()).await.map_err(|e| e.to_string())?;
    let delta = loop {
        match device.next(Duration::from_secs(15)).await {
            Some(Incoming::Message { topic, payload }) if topic == got => break payload["state"].get("delta").cloned(),
            Some(Incoming::Message { topic, .. }) if topic == refused => break None,
            Some(_) => {}
            None => return Err(format!("{name}: no answer to its get")),
        }
    };
    let Some(delta) = delta.filter(Value::is_object) else {
        device.disconnect().await;
        return Ok(false);
    };
    let report = json!({"state": {"reported": delta}, "clientToken": token});
    device.publish(&topic("update"), report.to_string()).await.map_err(|e| e.to_string())?;
    let answer =
        device.next_on(&accepted, Duration::from_secs(15)).await.map_err(|e| format!("{name}'s report: {e}"))?;
    device.disconnect().await;
    Ok(answer["clientToken"] == json!(token))
}

/// The demo's fleet: `FLEET` things, 30 of them in the thing group `prod` (20 directly, with `Test-Device`; 10 in
/// its child `prod-line2`). What exists already is kept, so that it can be made again over a fleet left from before
/// (`fleet-local fleet`, for the README's quick start after `make demo` deleted its own).
pub async fn create_fleet(stack: &Stack) -> Result<(), String> {
    use aws_sdk_iot::error::ProvideErrorMetadata;
    let iot = stack.iot();
    let exists = |code: Option<&str>| code == Some("ResourceAlreadyExistsException");
    for i in 0..FLEET {
        if let Err(e) = iot.create_thing().thing_name(thing(i)).send().await
            && !exists(e.code())
        {
            return Err(format!("create_thing: {e}"));
        }
    }
    for (group, parent) in [(GROUP, None), (CHILD_GROUP, Some(GROUP))] {
        let create = iot.create_thing_group().thing_group_name(group).set_parent_group_name(parent.map(str::to_owned));
        if let Err(e) = create.send().await
            && !exists(e.code())
        {
            return Err(format!("thing group {group}: {e}"));
        }
    }
    for i in 0..30 {
        let group = if i < 20 { GROUP } else { CHILD_GROUP };
        iot.add_thing_to_thing_group()
            .thing_group_name(group)
            .thing_name(thing(i))
            .send()
            .await
            .map_err(|e| format!("add_thing_to_thing_group: {e}"))?;
    }
    Ok(())
}

async fn story(stack: &Stack) -> Result<DemoReport, String> {
    // 1. The fleet.
    create_fleet(stack).await?;
    println!(
        "1. fleet: {FLEET} things; 30 in thing group {GROUP} (20 directly, with {DEVICE}; 10 in its child {CHILD_GROUP})"
    );

    // 2. The push, with the CLI, through the local Lambda.
    println!("2. push the seed's settings to the group, and watch it to its end:");
    let code = shadow_fleet(stack, &["push", "start", REQUEST, "--wait"])?;
    if code != 0 {
        return Err(format!("shadow-fleet push start --wait ended with exit code {code}"));
    }
    let summary = shadow_fleet_json(stack, &["push", "show", PUSH_ID])?.pop().unwrap_or_default();

    // 3. The devices, over MQTT: get the shadow, report its delta (the seed's publish.py and subscribe.py).
    let (endpoint, ca) = crate::mqtt_device::Endpoint::of(stack).map_err(|e| e.to_string())?;
    let answers = futures::future::join_all((0..FLEET).map(|i| device_reports(&endpoint, &ca, i))).await;
    let reported =
        answers.into_iter().collect::<Result<Vec<bool>, String>>()?.into_iter().filter(|r| *r).count() as u64;
    println!(
        "\n3. devices: {FLEET} connected over MQTT (TLS, each with its own certificate); {reported} got their delta \
         on {SHADOW} and reported the new state"
    );

    // shadow-history records asynchronously (the rules stand-in invokes it as the IoT Rule does): wait for it.
    let expected = summary["updated"].as_u64().unwrap_or(0) + reported;
    let mut delivered = 0;
    for _ in 0..300 {
        delivered = recorded_events(stack).await?;
        if delivered >= expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("   shadow-history recorded {delivered} events of the fleet's {SHADOW} shadows");

    // 4. What the device was told, by whom, and what it reported; and its document now.
    println!("4. the device's history and its shadow:");
    shadow_fleet(stack, &["history", DEVICE, "--shadow", SHADOW])?;
    shadow_fleet(stack, &["shadow", "get", DEVICE, "--shadow", SHADOW])?;
    let history = shadow_fleet_json(stack, &["history", DEVICE, "--shadow", SHADOW])?;
    let document = shadow_fleet_json(stack, &["shadow", "get", DEVICE, "--shadow", SHADOW])?.pop().unwrap_or_default();
    Ok(DemoReport { summary, device: DEVICE.to_owned(), history, delivered, document })
}

fn history_key(i: usize) -> String {
    format!("{}#{SHADOW}", thing(i))
}

/// The keys of `table`'s items in partition `pk`.
async fn keys(stack: &Stack, table: &str, pk: &str) -> Result<Vec<HashMap<String, AttributeValue>>, String> {
    let mut pages = stack
        .dynamodb()
        .query()
        .table_name(table)
        .key_condition_expression("#pk = :pk")
        .expression_attribute_names("#pk", shadow_aws::tables::PARTITION_KEY)
        .expression_attribute_names("#sk", shadow_aws::tables::SORT_KEY)
        .expression_attribute_values(":pk", AttributeValue::S(pk.to_owned()))
        .projection_expression("#pk, #sk")
        .into_paginator()
        .items()
        .send();
    let mut keys = Vec::new();
    while let Some(item) = pages.next().await {
        keys.push(item.map_err(|e| format!("query {table}: {e}"))?);
    }
    Ok(keys)
}

async fn recorded_events(stack: &Stack) -> Result<u64, String> {
    let table = stack.var("HISTORY_TABLE");
    let mut n = 0;
    for i in 0..FLEET {
        // Events only: each shadow's head (`~head`) sorts after them.
        let events = keys(stack, &table, &history_key(i)).await?.into_iter().filter(|k| {
            matches!(k.get(shadow_aws::tables::SORT_KEY), Some(AttributeValue::S(sk)) if sk.as_str() < shadow_aws::history::EVENTS_END)
        });
        n += events.count() as u64;
    }
    Ok(n)
}

async fn delete_partition(stack: &Stack, table: &str, pk: &str) {
    let Ok(keys) = keys(stack, table, pk).await else { return };
    let deletes: Vec<WriteRequest> = keys
        .into_iter()
        .filter_map(|key| DeleteRequest::builder().set_key(Some(key)).build().ok())
        .map(|d| WriteRequest::builder().delete_request(d).build())
        .collect();
    let _ = shadow_aws::writes::batch_write(&stack.dynamodb(), table, deletes).await;
}

async fn cleanup(stack: &Stack) {
    let (iot, data) = (stack.iot(), stack.iot_data());
    for i in 0..FLEET {
        let _ = data.delete_thing_shadow().thing_name(thing(i)).shadow_name(SHADOW).send().await;
        let _ = iot.delete_thing().thing_name(thing(i)).send().await;
    }
    let _ = iot.delete_thing_group().thing_group_name(CHILD_GROUP).send().await;
    let _ = iot.delete_thing_group().thing_group_name(GROUP).send().await;
    // The push's record and failures, and the fleet's history, so that the next run starts afresh.
    if let (Some(push_table), Some(history_table)) = (stack.env.get("PUSH_TABLE"), stack.env.get("HISTORY_TABLE")) {
        // Its journal's shards first, while the record still says how many.
        let shards = crate::push::journal_shards(stack, push_table, PUSH_ID).await;
        let journal = shadow_core::push::JournalRef::new(PUSH_ID, shards);
        for shard in journal.shards().into_iter().flatten() {
            delete_partition(stack, push_table, &shadow_aws::push_store::journal_partition(journal, Some(shard))).await;
        }
        delete_partition(stack, push_table, PUSH_ID).await;
        for i in 0..FLEET {
            delete_partition(stack, history_table, &history_key(i)).await;
        }
    }
}
