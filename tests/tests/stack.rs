//! The local stack answers through the Rust SDK: DynamoDB Local and moto's IoT registry and data plane.

use aws_sdk_dynamodb::types::AttributeValue;
use aws_smithy_types::Blob;
use devstack::{Stack, unique};
use serde_json::{Value, json};
use shadow_aws::tables;

#[tokio::test]
async fn dynamodb_local_writes_and_reads_an_item() {
    let stack = Stack::get();
    let db = stack.dynamodb();
    let table = unique("items");
    tables::ensure_table(&db, &table, &tables::HISTORY).await.expect("creating the history table");
    db.put_item()
        .table_name(&table)
        .item("pk", AttributeValue::S("Test-Device#test1".into()))
        .item("sk", AttributeValue::S("0000000001#1".into()))
        .item("temp", AttributeValue::N("20".into()))
        .send()
        .await
        .expect("put_item");
    let got = db
        .get_item()
        .table_name(&table)
        .key("pk", AttributeValue::S("Test-Device#test1".into()))
        .key("sk", AttributeValue::S("0000000001#1".into()))
        .consistent_read(true)
        .send()
        .await
        .expect("get_item");
    assert_eq!(got.item().and_then(|i| i.get("temp")), Some(&AttributeValue::N("20".into())));
    let ttl = db.describe_time_to_live().table_name(&table).send().await.expect("describe_time_to_live");
    assert_eq!(ttl.time_to_live_description().and_then(|d| d.attribute_name()), Some("expiresAt"));
}

#[tokio::test]
async fn the_stack_tables_exist() {
    let stack = Stack::get();
    let db = stack.dynamodb();
    for spec in tables::ALL {
        let name = stack.var(spec.env_var);
        let table = db.describe_table().table_name(&name).send().await.unwrap_or_else(|e| panic!("{name}: {e:?}"));
        let keys: Vec<_> = table
            .table()
            .map(|t| t.key_schema().iter().map(|k| k.attribute_name().to_owned()).collect())
            .unwrap_or_default();
        assert_eq!(keys, [spec.partition_key, spec.sort_key], "{name}");
    }
}

#[tokio::test]
async fn moto_updates_and_reads_a_named_shadow() {
    let stack = Stack::get();
    let thing = unique("Test-Device");
    stack.iot().create_thing().thing_name(&thing).send().await.expect("create_thing");
    let data = stack.iot_data();
    let desired = json!({"state": {"desired": {"settings": {"mode": 1, "temp": 20}, "firmware_url": "https://s3.com/firmware.bin"}}});
    let updated = data
        .update_thing_shadow()
        .thing_name(&thing)
        .shadow_name("test1")
        .payload(Blob::new(desired.to_string()))
        .send()
        .await
        .expect("update_thing_shadow");
    let accepted: Value = serde_json::from_slice(updated.payload().map(Blob::as_ref).unwrap_or_default())
        .expect("the update's answer as JSON");
    assert_eq!(accepted["version"], 1);
    let got = data.get_thing_shadow().thing_name(&thing).shadow_name("test1").send().await.expect("get_thing_shadow");
    let doc: Value =
        serde_json::from_slice(got.payload().map(Blob::as_ref).unwrap_or_default()).expect("the get's answer as JSON");
    assert_eq!(doc["state"]["desired"]["settings"], json!({"mode": 1, "temp": 20}));
    assert_eq!(doc["state"]["delta"]["firmware_url"], "https://s3.com/firmware.bin");
    // The classic shadow of the same thing is separate.
    let classic = data.get_thing_shadow().thing_name(&thing).send().await;
    assert!(classic.is_err(), "the classic shadow was never written");
}
