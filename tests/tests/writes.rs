//! The DynamoDB writes every store makes the same way (`shadow_aws::writes`, `shadow_aws::sdk::ConditionalWrite`),
//! against DynamoDB Local.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use aws_sdk_dynamodb::types::{AttributeValue, DeleteRequest, WriteRequest};
use devstack::http::{Upstream, reply, serve};
use devstack::{Stack, unique};
use hyper::StatusCode;
use serde_json::{Value, json};
use shadow_aws::sdk::ConditionalWrite;
use shadow_aws::{tables, writes};
use shadow_core::service::FaultKind;

async fn table(stack: &Stack, name: &str) -> String {
    let table = unique(name);
    tables::ensure_table(&stack.dynamodb(), &table, &tables::PUSH).await.unwrap_or_else(|e| panic!("{e}"));
    table
}

fn item(pk: &str, sk: &str, value: &str) -> std::collections::HashMap<String, AttributeValue> {
    let mut item = tables::key(pk, sk);
    item.insert("value".into(), AttributeValue::S(value.into()));
    item
}

/// The `value` of every item in partition `pk`, in sort-key order.
async fn values(stack: &Stack, table: &str, pk: &str) -> Vec<String> {
    let mut pages = stack
        .dynamodb()
        .query()
        .table_name(table)
        .key_condition_expression("#pk = :pk")
        .expression_attribute_names("#pk", tables::PARTITION_KEY)
        .expression_attribute_values(":pk", AttributeValue::S(pk.into()))
        .consistent_read(true)
        .into_paginator()
        .items()
        .send();
    let mut values = Vec::new();
    while let Some(item) = pages.next().await {
        let item = item.unwrap_or_else(|e| panic!("query: {e:?}"));
        values.push(item.get("value").and_then(|v| v.as_s().ok()).cloned().unwrap_or_default());
    }
    values
}

#[tokio::test]
async fn put_if_absent_writes_once_and_keeps_the_first_item() {
    let stack = &Stack::get();
    let (db, table) = (stack.dynamodb(), table(stack, "writes-put").await);
    let first = writes::put_if_absent(&db, &table, item("p", "s", "first")).await.unwrap_or_else(|e| panic!("{e}"));
    let again = writes::put_if_absent(&db, &table, item("p", "s", "second")).await.unwrap_or_else(|e| panic!("{e}"));
    // Another sort key in the same partition is another item.
    let other = writes::put_if_absent(&db, &table, item("p", "t", "third")).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((first, again, other), (true, false, true));
    assert_eq!(values(stack, &table, "p").await, ["first", "third"]);

    let missing = writes::put_if_absent(&db, &unique("no-such-table"), item("p", "s", "x")).await;
    let err = missing.err().unwrap_or_else(|| panic!("a put into a missing table succeeded"));
    assert_eq!((err.kind, err.code.as_deref()), (FaultKind::Rejected, Some("ResourceNotFoundException")));
}

#[tokio::test]
async fn a_conditional_update_says_whether_its_condition_held() {
    let stack = &Stack::get();
    let (db, table) = (stack.dynamodb(), table(stack, "writes-update").await);
    writes::put_if_absent(&db, &table, item("p", "s", "a")).await.unwrap_or_else(|e| panic!("{e}"));
    let update = |from: &str, to: &str| {
        db.update_item()
            .table_name(&table)
            .set_key(Some(tables::key("p", "s")))
            .update_expression("SET #v = :to")
            .condition_expression("#v = :from")
            .expression_attribute_names("#v", "value")
            .expression_attribute_values(":from", AttributeValue::S(from.into()))
            .expression_attribute_values(":to", AttributeValue::S(to.into()))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::UpdatedNew)
            .send()
    };
    let held = update("a", "b").await.unless_condition_failed("UpdateItem").unwrap_or_else(|e| panic!("{e}"));
    let written = held.and_then(|out| out.attributes).and_then(|mut a| a.remove("value"));
    assert_eq!(written, Some(AttributeValue::S("b".into())));
    assert!(!update("a", "c").await.condition_held("UpdateItem").unwrap_or_else(|e| panic!("{e}")));
    assert!(update("b", "c").await.condition_held("UpdateItem").unwrap_or_else(|e| panic!("{e}")));
    assert_eq!(values(stack, &table, "p").await, ["c"]);

    // An invalid expression is an error, not a failed condition.
    let invalid = db
        .update_item()
        .table_name(&table)
        .set_key(Some(tables::key("p", "s")))
        .update_expression("SET #v = :to")
        .condition_expression("#v = ")
        .expression_attribute_names("#v", "value")
        .expression_attribute_values(":to", AttributeValue::S("d".into()))
        .send()
        .await
        .condition_held("UpdateItem");
    let err = invalid.err().unwrap_or_else(|| panic!("an invalid condition was taken"));
    assert_eq!((err.operation, err.kind), ("UpdateItem", FaultKind::Rejected));
}

#[tokio::test]
async fn batch_write_makes_every_request_in_calls_of_25() {
    let stack = &Stack::get();
    let (db, table) = (stack.dynamodb(), table(stack, "writes-batch").await);
    let puts: Vec<WriteRequest> = (0..60)
        .map(|i| writes::put_request(item("p", &format!("{i:03}"), &i.to_string())).unwrap_or_else(|e| panic!("{e}")))
        .collect();
    writes::batch_write(&db, &table, puts).await.unwrap_or_else(|e| panic!("{e}"));
    let expected: Vec<String> = (0..60).map(|i| i.to_string()).collect();
    assert_eq!(values(stack, &table, "p").await, expected);

    let deletes: Vec<WriteRequest> = (0..30)
        .map(|i| {
            let delete = DeleteRequest::builder().set_key(Some(tables::key("p", &format!("{i:03}")))).build();
            WriteRequest::builder().delete_request(delete.unwrap_or_else(|e| panic!("{e}"))).build()
        })
        .collect();
    writes::batch_write(&db, &table, deletes).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(values(stack, &table, "p").await, expected[30..]);
    writes::batch_write(&db, &table, Vec::new()).await.unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test]
async fn batch_write_sends_unprocessed_items_again() {
    let stack = &Stack::get();
    let table = table(stack, "writes-unprocessed").await;
    // In front of DynamoDB Local: the first two BatchWriteItem calls process nothing and say so, as DynamoDB does
    // under load; every other request goes through.
    let upstream = Arc::new(Upstream::new(&stack.var("AWS_ENDPOINT_URL_DYNAMODB")));
    let calls = Arc::new(AtomicUsize::new(0));
    let server = {
        let (upstream, calls) = (upstream.clone(), calls.clone());
        serve(move |parts, body| {
            let (upstream, calls) = (upstream.clone(), calls.clone());
            async move {
                let target = parts.headers.get("x-amz-target").and_then(|t| t.to_str().ok()).unwrap_or_default();
                if target.ends_with(".BatchWriteItem") && calls.fetch_add(1, Ordering::SeqCst) < 2 {
                    let request: Value = serde_json::from_slice(&body).unwrap_or_default();
                    let mut answer =
                        reply(StatusCode::OK, json!({"UnprocessedItems": request["RequestItems"]}).to_string());
                    answer
                        .headers_mut()
                        .insert("content-type", hyper::header::HeaderValue::from_static("application/x-amz-json-1.0"));
                    return answer;
                }
                let (answer, body) = upstream.forward(&parts, body).await;
                hyper::Response::from_parts(answer, http_body_util::Full::new(body))
            }
        })
        .await
    };
    let db = stack.dynamodb_at(&server.url());
    let puts: Vec<WriteRequest> = (0..30)
        .map(|i| writes::put_request(item("p", &format!("{i:03}"), &i.to_string())).unwrap_or_else(|e| panic!("{e}")))
        .collect();
    writes::batch_write(&db, &table, puts).await.unwrap_or_else(|e| panic!("{e}"));
    // 25 requests refused twice, then written; then the other 5.
    assert_eq!(calls.load(Ordering::SeqCst), 4);
    assert_eq!(values(stack, &table, "p").await.len(), 30);
}
