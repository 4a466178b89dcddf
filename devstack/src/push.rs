//! Helpers for the shadow-push tests: a fleet of the test's own in moto, a push table and queue of its own, and
//! the function started against them.

use std::time::Duration;

use aws_smithy_types::Blob;
use serde_json::{Value, json};
use shadow_aws::tables;

use crate::lambda::{InvokeError, LocalLambda};
use crate::stack::{Stack, repo_root, unique};

/// A request from `events/push/`.
/// A sample request from `events/push`, with a push id of its own when it has none (as the CLI gives it one).
pub fn request(name: &str) -> Value {
    let path = repo_root().join("events/push").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut request: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    if let Some(fields) = request.as_object_mut().filter(|r| r.contains_key("desired")) {
        fields.entry("pushId").or_insert_with(|| Value::String(unique("sample")));
    }
    request
}

/// How a simulated device answers a delta on its classic shadow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    /// Applies it and reports it (the seed's subscribe.py).
    Healthy,
    /// Never answers.
    Silent,
    /// Refuses it: puts its own `reported` value back in `desired` (or removes the key it never had), and keeps
    /// reporting its own value.
    Refusing,
    /// Applies it, reports it, then clears `desired`.
    Clearing,
}

pub struct PushFixture {
    pub stack: Stack,
    pub table: String,
    pub queue_url: String,
    /// Every thing and group of this test starts with it.
    pub prefix: String,
}

impl PushFixture {
    pub async fn new() -> Self {
        let stack = Stack::get();
        let table = unique("push");
        tables::ensure_table(&stack.dynamodb(), &table, &tables::PUSH).await.expect("creating the push table");
        let queue_url = stack
            .sqs()
            .create_queue()
            .queue_name(unique("push"))
            .send()
            .await
            .expect("create_queue")
            .queue_url
            .unwrap_or_default();
        Self { stack, table, queue_url, prefix: unique("fleet") }
    }

    pub fn thing(&self, i: usize) -> String {
        format!("{}-{i}", self.prefix)
    }

    pub fn group(&self, name: &str) -> String {
        format!("{}-{name}", self.prefix)
    }

    /// Registers things `range` in moto, with attribute `site`.
    pub async fn create_things(&self, range: std::ops::Range<usize>, site: &str) {
        let iot = self.stack.iot();
        for i in range {
            let attributes = aws_sdk_iot::types::AttributePayload::builder().attributes("site", site).build();
            iot.create_thing()
                .thing_name(self.thing(i))
                .attribute_payload(attributes)
                .send()
                .await
                .expect("create_thing");
        }
    }

    pub async fn create_group(&self, name: &str, parent: Option<&str>, members: impl IntoIterator<Item = usize>) {
        let iot = self.stack.iot();
        iot.create_thing_group()
            .thing_group_name(self.group(name))
            .set_parent_group_name(parent.map(|p| self.group(p)))
            .send()
            .await
            .expect("create_thing_group");
        self.join_group(name, members).await;
    }

    /// Adds things `members` to the existing group `name` (things that join the targets mid-push).
    pub async fn join_group(&self, name: &str, members: impl IntoIterator<Item = usize>) {
        let iot = self.stack.iot();
        for i in members {
            iot.add_thing_to_thing_group()
                .thing_group_name(self.group(name))
                .thing_name(self.thing(i))
                .send()
                .await
                .expect("add_thing_to_thing_group");
        }
    }

    /// shadow-push on this fixture's table and queue, with `extra` settings over the stack's.
    pub async fn function(&self, extra: &[(&str, &str)]) -> LocalLambda {
        let mut env: Vec<(String, String)> = self.stack.env.clone().into_iter().collect();
        env.push(("PUSH_TABLE".into(), self.table.clone()));
        env.push(("PUSH_QUEUE_URL".into(), self.queue_url.clone()));
        env.push(("PUSH_MAX_TPS".into(), "2000".into()));
        env.push(("PUSH_CONCURRENCY".into(), "32".into()));
        env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        // FUNCTION_RUST_LOG=debug shows the function's decisions (with SHOW_FUNCTION_LOGS=1).
        if let Ok(filter) = std::env::var("FUNCTION_RUST_LOG") {
            env.push(("RUST_LOG".into(), filter));
        }
        LocalLambda::start("shadow-push", &env).await
    }

    /// The shadow document of `thing` (`None` when it has none). moto's threaded server sometimes answers 500 when
    /// requests overlap: those are retried.
    pub async fn shadow(&self, thing: &str, shadow: Option<&str>) -> Option<Value> {
        let client = self.stack.iot_data();
        for _ in 0..5 {
            let got =
                client.get_thing_shadow().thing_name(thing).set_shadow_name(shadow.map(str::to_owned)).send().await;
            match got {
                Ok(got) => return serde_json::from_slice(got.payload().map(Blob::as_ref).unwrap_or_default()).ok(),
                Err(e) if e.as_service_error().is_some_and(|e| e.is_resource_not_found_exception()) => return None,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        None
    }

    /// Sets a shadow's desired state directly (a push from elsewhere).
    pub async fn set_desired(&self, thing: &str, shadow: Option<&str>, desired: Value) {
        self.stack
            .iot_data()
            .update_thing_shadow()
            .thing_name(thing)
            .set_shadow_name(shadow.map(str::to_owned))
            .payload(Blob::new(json!({"state": {"desired": desired}}).to_string()))
            .send()
            .await
            .expect("update_thing_shadow");
    }

    /// A device's report: `reported` on its shadow (retrying moto's own 500s).
    pub async fn report(&self, thing: &str, shadow: Option<&str>, reported: &Value) -> bool {
        let client = self.stack.iot_data();
        let payload = json!({"state": {"reported": reported}, "clientToken": "device"}).to_string();
        for _ in 0..5 {
            let sent = client
                .update_thing_shadow()
                .thing_name(thing)
                .set_shadow_name(shadow.map(str::to_owned))
                .payload(Blob::new(payload.clone()))
                .send()
                .await;
            if sent.is_ok() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// Simulated devices (the seed's subscribe.py, without MQTT): each of `things` that has a delta reports it,
    /// round after round, until the task is dropped.
    pub async fn devices(&self, things: Vec<String>) {
        self.fleet_of(things.into_iter().map(|t| (t, Device::Healthy)).collect()).await;
    }

    /// Simulated devices of each kind ([`Device`]), round after round, until the task is dropped.
    pub async fn fleet_of(&self, devices: Vec<(String, Device)>) {
        use futures::StreamExt;
        loop {
            futures::stream::iter(&devices)
                .for_each_concurrent(8, |(thing, device)| async move {
                    let Some(doc) = self.shadow(thing, None).await else { return };
                    let Some(delta) = doc["state"].get("delta").and_then(Value::as_object) else { return };
                    match device {
                        Device::Healthy => {
                            self.report(thing, None, &Value::Object(delta.clone())).await;
                        }
                        Device::Silent => {}
                        Device::Refusing => {
                            // Its own value back in `desired`, for each key the delta names; it keeps reporting it.
                            let own: serde_json::Map<String, Value> = delta
                                .keys()
                                .map(|k| (k.clone(), doc["state"]["reported"].get(k).cloned().unwrap_or(Value::Null)))
                                .collect();
                            self.set_desired(thing, None, Value::Object(own)).await;
                        }
                        Device::Clearing => {
                            if self.report(thing, None, &Value::Object(delta.clone())).await {
                                // AWS clears all of `desired` with `"desired": null`; moto takes only key by key.
                                let cleared = delta.keys().map(|k| (k.clone(), Value::Null)).collect();
                                self.set_desired(thing, None, Value::Object(cleared)).await;
                            }
                        }
                    }
                })
                .await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Receives the hand-off messages on the queue as the SQS event source would pass them, and deletes them.
    pub async fn take_continuations(&self) -> Vec<Value> {
        let sqs = self.stack.sqs();
        let received = sqs
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .expect("receive_message");
        let mut records = Vec::new();
        for message in received.messages.unwrap_or_default() {
            if let Some(handle) = &message.receipt_handle {
                sqs.delete_message()
                    .queue_url(&self.queue_url)
                    .receipt_handle(handle)
                    .send()
                    .await
                    .expect("delete_message");
            }
            records.push(crate::service::sqs_record(&message));
        }
        records
    }

    /// The push's record item, as stored.
    pub async fn record(&self, push_id: &str) -> Option<Value> {
        let got = self
            .stack
            .dynamodb()
            .get_item()
            .table_name(&self.table)
            .set_key(Some(shadow_aws::push_store::record_key(push_id)))
            .consistent_read(true)
            .send()
            .await
            .expect("get_item");
        got.item.map(|item| serde_dynamo::from_item(item).expect("reading the push record"))
    }
}

pub async fn push(function: &LocalLambda, request: &Value) -> Result<Value, InvokeError> {
    function.invoke(request, Duration::from_secs(60)).await
}

/// How many shards the journal of push `push_id` in `table` spans (its record's `journalShards`; 0 when the record
/// has none, or is gone).
pub async fn journal_shards(stack: &Stack, table: &str, push_id: &str) -> u32 {
    let got = stack
        .dynamodb()
        .get_item()
        .table_name(table)
        .set_key(Some(shadow_aws::push_store::record_key(push_id)))
        .consistent_read(true)
        .send()
        .await;
    got.ok()
        .and_then(|g| g.item)
        .and_then(|i| i.get("journalShards").and_then(|n| n.as_n().ok()).and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}
