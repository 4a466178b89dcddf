//! `make demo`: the seed article's story on the local stack, end to end.
//!
//! 1. a fleet of 50 things, 30 of them in a thing group (20 directly, 10 in a child group);
//! 2. shadow-push, run by the local Runtime API, pushes the seed's desired settings to the group;
//! 3. each device does what the seed's `subscribe.py` device does: reads its delta and reports the new state;
//! 4. every accepted update (the push's and the devices') goes to shadow-history as the IoT Rule would deliver it,
//!    through the rules-engine stand-in ([`crate::rules`]);
//! 5. the push's summary and one device's history are printed.
//!
//! Everything it creates (things, groups, shadows, its own tables and queue) is deleted again at the end.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aws_smithy_types::Blob;
use serde_json::{Value, json};
use shadow_aws::tables;

use crate::lambda::LocalLambda;
use crate::rules::RulesEngine;
use crate::stack::{Stack, repo_root, unique};

const FLEET: usize = 50;
const SHADOW: &str = "test1";

/// What the demo showed, for its test.
#[derive(Debug)]
pub struct DemoReport {
    pub summary: Value,
    pub device: String,
    pub history: Vec<Value>,
    pub delivered: u64,
}

pub async fn run(stack: &Stack) -> Result<DemoReport, String> {
    let run = unique("demo");
    let names = Names { run: run.clone() };
    let result = story(stack, &names).await;
    cleanup(stack, &names).await;
    result
}

struct Names {
    run: String,
}

impl Names {
    fn thing(&self, i: usize) -> String {
        format!("{}-device-{i:02}", self.run)
    }
    fn group(&self) -> String {
        format!("{}-prod", self.run)
    }
    fn child_group(&self) -> String {
        format!("{}-prod-line2", self.run)
    }
    fn history_table(&self) -> String {
        format!("{}-history", self.run)
    }
    fn push_table(&self) -> String {
        format!("{}-push", self.run)
    }
}

async fn story(stack: &Stack, names: &Names) -> Result<DemoReport, String> {
    let dynamodb = stack.dynamodb();
    tables::ensure_table(&dynamodb, &names.history_table(), &tables::HISTORY).await.map_err(|e| e.to_string())?;
    tables::ensure_table(&dynamodb, &names.push_table(), &tables::PUSH).await.map_err(|e| e.to_string())?;
    let queue_url = stack
        .sqs()
        .create_queue()
        .queue_name(&names.run)
        .send()
        .await
        .map_err(|e| format!("create_queue: {e}"))?
        .queue_url
        .unwrap_or_default();

    // 1. The fleet.
    let iot = stack.iot();
    for i in 0..FLEET {
        iot.create_thing().thing_name(names.thing(i)).send().await.map_err(|e| format!("create_thing: {e}"))?;
    }
    iot.create_thing_group().thing_group_name(names.group()).send().await.map_err(|e| format!("group: {e}"))?;
    iot.create_thing_group()
        .thing_group_name(names.child_group())
        .parent_group_name(names.group())
        .send()
        .await
        .map_err(|e| format!("child group: {e}"))?;
    for i in 0..30 {
        let group = if i < 20 { names.group() } else { names.child_group() };
        iot.add_thing_to_thing_group()
            .thing_group_name(group)
            .thing_name(names.thing(i))
            .send()
            .await
            .map_err(|e| format!("add_thing_to_thing_group: {e}"))?;
    }
    println!(
        "1. fleet: {FLEET} things; 30 in thing group {} (20 directly, 10 in its child {})",
        names.group(),
        names.child_group()
    );

    // The rules-engine stand-in in front of the data plane, delivering to shadow-history.
    let (rules, mut accepted) = RulesEngine::start(&stack.var("AWS_ENDPOINT_URL_IOT_DATA_PLANE")).await;
    let mut env: Vec<(String, String)> = stack.env.clone().into_iter().collect();
    env.push(("HISTORY_TABLE".into(), names.history_table()));
    let history = Arc::new(LocalLambda::start("shadow-history", &env).await);
    let delivered = Arc::new(AtomicU64::new(0));
    let written = Arc::new(AtomicU64::new(0));
    let deliveries = {
        let (history, delivered, written) = (history.clone(), delivered.clone(), written.clone());
        tokio::spawn(async move {
            while let Some(event) = accepted.recv().await {
                if let Ok(answer) = history.invoke(&event, Duration::from_secs(30)).await
                    && answer["outcome"] == "written"
                {
                    written.fetch_add(1, Ordering::Relaxed);
                }
                delivered.fetch_add(1, Ordering::Relaxed);
            }
        })
    };

    // 2. The push.
    env.retain(|(k, _)| k != "AWS_ENDPOINT_URL_IOT_DATA_PLANE");
    env.extend([
        ("AWS_ENDPOINT_URL_IOT_DATA_PLANE".to_owned(), rules.url.clone()),
        ("PUSH_TABLE".to_owned(), names.push_table()),
        ("PUSH_QUEUE_URL".to_owned(), queue_url),
    ]);
    let push = LocalLambda::start("shadow-push", &env).await;
    let path = repo_root().join("events/push/seed-settings-to-group.json");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut request: Value = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    request["pushId"] = json!(format!("seed-{}", &names.run[names.run.len() - 8..]));
    request["targets"]["thingGroup"] = json!(names.group());
    let summary = push.invoke(&request, Duration::from_secs(60)).await.map_err(|e| format!("shadow-push: {e}"))?;
    push.stop().await;
    println!("2. shadow-push (events/push/seed-settings-to-group.json, for {}):", names.group());
    println!("   {summary}");

    // 3. The devices: read the delta, report it (the seed's subscribe.py, without MQTT).
    let data = stack.iot_data_at(&rules.url);
    let mut reported = 0;
    for i in 0..FLEET {
        let thing = names.thing(i);
        let Ok(got) = data.get_thing_shadow().thing_name(&thing).shadow_name(SHADOW).send().await else { continue };
        let doc: Value = serde_json::from_slice(got.payload().map(Blob::as_ref).unwrap_or_default())
            .map_err(|e| format!("shadow document of {thing}: {e}"))?;
        let Some(delta) = doc["state"].get("delta").filter(|d| d.is_object()) else { continue };
        let report = json!({"state": {"reported": delta}, "clientToken": format!("device-{i:02}")});
        data.update_thing_shadow()
            .thing_name(&thing)
            .shadow_name(SHADOW)
            .payload(Blob::new(report.to_string()))
            .send()
            .await
            .map_err(|e| format!("report {thing}: {e}"))?;
        reported += 1;
    }
    println!("3. devices: {reported} read their delta on {SHADOW} and reported the new state");

    // 4. Wait for the stand-in's deliveries.
    let expected = summary["updated"].as_u64().unwrap_or(0) + reported;
    for _ in 0..300 {
        if delivered.load(Ordering::Relaxed) >= expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    deliveries.abort();
    history.stop().await;
    let delivered = delivered.load(Ordering::Relaxed);
    println!(
        "4. rules stand-in: {delivered} update/accepted events delivered to shadow-history, {} written",
        written.load(Ordering::Relaxed)
    );

    // 5. One device's history.
    let device = names.thing(0);
    let store = shadow_aws::DynamoHistoryStore::new(dynamodb, names.history_table());
    let shadow = shadow_core::ShadowRef {
        thing: shadow_core::ThingName::parse(device.as_str()).map_err(|e| e.to_string())?,
        shadow: Some(shadow_core::ShadowName::parse(SHADOW).map_err(|e| e.to_string())?),
    };
    let events = store.events(&shadow).await.map_err(|e| e.to_string())?;
    println!("5. history of {device}/{SHADOW}:");
    for event in &events {
        let state = &event["state"];
        let (section, value) = if state["desired"].is_object() {
            ("desired", &state["desired"])
        } else {
            ("reported", &state["reported"])
        };
        println!(
            "   version {} at {}  {section:<8} {value}  (clientToken {})",
            event["version"],
            event["timestamp"],
            event["clientToken"].as_str().unwrap_or("-")
        );
    }
    Ok(DemoReport { summary, device, history: events, delivered })
}

async fn cleanup(stack: &Stack, names: &Names) {
    let (iot, data, dynamodb) = (stack.iot(), stack.iot_data(), stack.dynamodb());
    for i in 0..FLEET {
        let _ = data.delete_thing_shadow().thing_name(names.thing(i)).shadow_name(SHADOW).send().await;
        let _ = iot.delete_thing().thing_name(names.thing(i)).send().await;
    }
    let _ = iot.delete_thing_group().thing_group_name(names.child_group()).send().await;
    let _ = iot.delete_thing_group().thing_group_name(names.group()).send().await;
    for table in [names.history_table(), names.push_table()] {
        let _ = dynamodb.delete_table().table_name(table).send().await;
    }
    if let Ok(url) = stack.sqs().get_queue_url().queue_name(&names.run).send().await {
        let _ = stack.sqs().delete_queue().set_queue_url(url.queue_url).send().await;
    }
}
