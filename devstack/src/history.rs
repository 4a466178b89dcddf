//! Helpers for the shadow-history tests: a history table of the test's own, the function started against it,
//! events in the shape the IoT Rule delivers them, and SQS batches of them.

use std::time::Duration;

use serde_json::{Value, json};
use shadow_aws::{DynamoHistoryStore, tables};
use shadow_core::ShadowRef;

use crate::lambda::LocalLambda;
use crate::stack::{Stack, repo_root, unique};

/// A sample event from `events/history/`.
pub fn sample(name: &str) -> Value {
    let path = repo_root().join("events/history").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Now, in epoch seconds.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// An `update/accepted` event as the rule delivers it.
pub fn update(thing: &str, shadow: Option<&str>, version: u64, timestamp: u64, state: Value) -> Value {
    let topic = match shadow {
        Some(s) => format!("$aws/things/{thing}/shadow/name/{s}/update/accepted"),
        None => format!("$aws/things/{thing}/shadow/update/accepted"),
    };
    json!({"state": state, "metadata": {}, "version": version, "timestamp": timestamp, "topic": topic,
           "receivedAt": timestamp * 1000 + 5})
}

/// A `delete/accepted` event.
pub fn delete(thing: &str, shadow: &str, version: u64, timestamp: u64) -> Value {
    json!({"version": version, "timestamp": timestamp,
           "topic": format!("$aws/things/{thing}/shadow/name/{shadow}/delete/accepted")})
}

/// An SQS event whose bodies are `bodies` (already serialized), with message ids `m0`, `m1`, ...
pub fn sqs_batch(bodies: &[String]) -> Value {
    let records: Vec<Value> = bodies
        .iter()
        .enumerate()
        .map(|(i, body)| {
            json!({"messageId": format!("m{i}"), "receiptHandle": format!("rh{i}"), "body": body,
                   "attributes": {"ApproximateReceiveCount": "1"}, "messageAttributes": {},
                   "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:ap-northeast-1:123456789012:ingest",
                   "awsRegion": "ap-northeast-1"})
        })
        .collect();
    json!({"Records": records})
}

/// The `itemIdentifier`s of an SQS batch response.
pub fn batch_failures(response: &Value) -> Vec<String> {
    response["batchItemFailures"]
        .as_array()
        .map(|f| f.iter().filter_map(|x| x["itemIdentifier"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

pub struct HistoryFixture {
    pub stack: Stack,
    pub table: String,
    pub store: DynamoHistoryStore,
}

impl HistoryFixture {
    /// A fresh history table of this test's own.
    pub async fn new() -> Self {
        let stack = Stack::get();
        let table = unique("history");
        tables::ensure_table(&stack.dynamodb(), &table, &tables::HISTORY).await.expect("creating the history table");
        let store = DynamoHistoryStore::new(stack.dynamodb(), &table);
        Self { stack, table, store }
    }

    /// shadow-history, on this fixture's table, with `extra` settings over the stack's. Retention is off unless a
    /// test sets it: DynamoDB Local's TTL really deletes expired items, and most tests replay old events.
    pub async fn function(&self, extra: &[(&str, &str)]) -> LocalLambda {
        let mut env: Vec<(String, String)> = self.stack.env.clone().into_iter().collect();
        env.retain(|(k, _)| k != "HISTORY_RETENTION_DAYS" && k != "HISTORY_STORE_METADATA");
        env.push(("HISTORY_TABLE".into(), self.table.clone()));
        env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        LocalLambda::start("shadow-history", &env).await
    }

    pub async fn events(&self, thing: &str, shadow: Option<&str>) -> Vec<Value> {
        let shadow = ShadowRef {
            thing: shadow_core::ThingName::parse(thing).expect("the thing's name"),
            shadow: shadow.map(|s| shadow_core::ShadowName::parse(s).expect("the shadow's name")),
        };
        self.store.events(&shadow).await.expect("reading the shadow's history")
    }

    /// How many event items the table holds (each shadow's head aside).
    pub async fn count(&self) -> i32 {
        let mut total = 0;
        let mut pages = self
            .stack
            .dynamodb()
            .scan()
            .table_name(&self.table)
            .filter_expression("#sk < :end")
            .expression_attribute_names("#sk", tables::SORT_KEY)
            .expression_attribute_values(
                ":end",
                aws_sdk_dynamodb::types::AttributeValue::S(shadow_aws::history::EVENTS_END.into()),
            )
            .consistent_read(true)
            .select(aws_sdk_dynamodb::types::Select::Count)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            total += page.expect("scan").count();
        }
        total
    }
}

pub const INVOKE_TIMEOUT: Duration = Duration::from_secs(30);
