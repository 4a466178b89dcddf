//! shadow-history end to end: the real binary under a local Runtime API, writing to DynamoDB Local.

use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use devstack::fault_proxy::{FaultProxy, Faults, Service};
use devstack::history::{HistoryFixture, INVOKE_TIMEOUT, batch_failures, delete, now_secs, sample, sqs_batch, update};
use devstack::unique;
use rand::seq::SliceRandom;
use serde_json::{Value, json};

fn versions(events: &[Value]) -> Vec<(u64, String)> {
    events
        .iter()
        .map(|e| (e["version"].as_u64().unwrap_or(u64::MAX), e["kind"].as_str().unwrap_or_default().to_owned()))
        .collect()
}

#[tokio::test]
async fn every_event_three_times_shuffled_gives_one_item_each_in_order() {
    let fixture = HistoryFixture::new().await;
    let history = fixture.function(&[]).await;
    let thing = unique("dev");
    let mut events: Vec<Value> = (1..=20)
        .map(|v| update(&thing, Some("config"), v, 1_764_210_000 + v / 3, json!({"desired": {"step": v}})))
        .collect();
    // The samples of events/ (each a different kind and shape), recorded under their own thing.
    let samples = [
        "update-accepted-named.json",
        "update-accepted-classic.json",
        "update-documents.json",
        "delete-accepted.json",
        "update-accepted-thing-name.json",
    ];
    events.extend(samples.iter().map(|name| sample(name)));
    let mut deliveries: Vec<&Value> = events.iter().chain(&events).chain(&events).collect();
    deliveries.shuffle(&mut rand::rng());

    let mut outcomes = std::collections::BTreeMap::<String, usize>::new();
    for event in deliveries {
        let answer = history.invoke(event, INVOKE_TIMEOUT).await.unwrap_or_else(|e| panic!("{event}: {e}"));
        *outcomes.entry(answer["outcome"].as_str().unwrap_or("?").to_owned()).or_default() += 1;
    }
    assert_eq!(outcomes.get("written"), Some(&events.len()), "{outcomes:?}");
    assert_eq!(outcomes.get("duplicate"), Some(&(2 * events.len())), "{outcomes:?}");
    assert_eq!(fixture.count().await, events.len() as i32);

    let recorded = fixture.events(&thing, Some("config")).await;
    let want: Vec<(u64, String)> = (1..=20).map(|v| (v, "update".to_owned())).collect();
    assert_eq!(versions(&recorded), want, "chronological order");

    let test1 = fixture.events("Test-Device", Some("test1")).await;
    let want = [(1, "update"), (2, "snapshot"), (3, "delete"), (4, "update")].map(|(v, k)| (v, k.to_owned()));
    assert_eq!(versions(&test1), want);
    assert_eq!(test1[1]["previousVersion"], 1);
    assert_eq!(test1[1]["clientToken"], "fw-2026-11");
    assert!(test1[2].get("state").is_none(), "a tombstone has no state");
    let classic = fixture.events("Test-Device", None).await;
    assert_eq!(versions(&classic), [(12, "update".to_owned())]);
    assert_eq!(classic[0]["shadowName"], "");
}

#[tokio::test]
async fn a_version_reset_after_deletion_is_a_new_event() {
    let fixture = HistoryFixture::new().await;
    let history = fixture.function(&[]).await;
    let thing = unique("reset");
    let t0 = 1_764_000_000;
    let later = t0 + 49 * 3600;
    let events = [
        update(&thing, Some("cfg"), 1, t0, json!({"desired": {"a": 1}})),
        update(&thing, Some("cfg"), 2, t0 + 1, json!({"desired": {"a": 2}})),
        delete(&thing, "cfg", 2, t0 + 2),
        // Recreated more than 48 h after the delete: numbering starts again.
        update(&thing, Some("cfg"), 1, later, json!({"desired": {"a": 10}})),
        update(&thing, Some("cfg"), 2, later + 1, json!({"desired": {"a": 20}})),
    ];
    // Delivered newest first, then again in order: the table must not depend on the order.
    for event in events.iter().rev().chain(events.iter()) {
        history.invoke(event, INVOKE_TIMEOUT).await.expect("invoking shadow-history");
    }
    let recorded = fixture.events(&thing, Some("cfg")).await;
    let got: Vec<(u64, u64, Value)> = recorded
        .iter()
        .map(|e| {
            (
                e["timestamp"].as_u64().unwrap_or(0),
                e["version"].as_u64().unwrap_or(0),
                e["state"]["desired"]["a"].clone(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (t0, 1, json!(1)),
            (t0 + 1, 2, json!(2)),
            (t0 + 2, 2, Value::Null),
            (later, 1, json!(10)),
            (later + 1, 2, json!(20)),
        ]
    );
}

#[tokio::test]
async fn nulls_floats_big_integers_and_unicode_round_trip() {
    let fixture = HistoryFixture::new().await;
    let history = fixture.function(&[("HISTORY_RETENTION_DAYS", "7"), ("HISTORY_STORE_METADATA", "true")]).await;
    let thing = unique("values");
    let state = json!({
        "desired": {
            "removed": null,
            "ratio": 0.1,
            "negative": -2.5e-7,
            "big": 12345678901234567890u64,
            "min": -9223372036854775808i64,
            "zero": 0,
            "flag": false,
            "text": "",
            "温度": "二十度 🌡",
            "empty": {},
            "list": [1, "two", {"three": [3.5]}, []],
            "l1": {"l2": {"l3": {"l4": {"l5": {"l6": "deep"}}}}}
        },
        "reported": null
    });
    // A recent event: with retention on, DynamoDB Local's TTL would delete an old one before it is read back.
    let now = now_secs();
    let mut event = update(&thing, Some("cfg"), 7, now, state.clone());
    event["metadata"] = json!({"desired": {"ratio": {"timestamp": now}}});
    event["clientToken"] = json!("ü-token");
    history.invoke(&event, INVOKE_TIMEOUT).await.expect("invoking shadow-history");

    let recorded = fixture.events(&thing, Some("cfg")).await;
    assert_eq!(recorded.len(), 1);
    let item = &recorded[0];
    assert_eq!(item["state"], state, "state round-trips exactly");
    assert_eq!(item["state"]["desired"]["ratio"].to_string(), "0.1");
    assert_eq!(item["state"]["desired"]["big"].to_string(), "12345678901234567890");
    // DynamoDB keeps a number's value, not its spelling: 3.0 comes back as 3 (docs/records.md, "History items").
    let mut trailing_zero = update(&thing, Some("zeros"), 1, now, json!({"desired": {"n": 3.0}}));
    trailing_zero["clientToken"] = json!("z");
    history.invoke(&trailing_zero, INVOKE_TIMEOUT).await.expect("invoking shadow-history with the trailing-zero event");
    let zeros = fixture.events(&thing, Some("zeros")).await;
    assert_eq!(zeros[0]["state"]["desired"]["n"].as_f64(), Some(3.0));
    assert_eq!(item["metadata"], event["metadata"]);
    assert_eq!(item["clientToken"], "ü-token");
    assert_eq!(item["receivedAt"], event["receivedAt"]);
    assert_eq!(item["timestamp"], now);
    assert_eq!(item["expiresAt"], now + 7 * 86_400, "epoch seconds, from the event's timestamp");
    assert_eq!(item["thingName"], thing.as_str());
    assert_eq!(item["shadowName"], "cfg");
    assert_eq!(item["kind"], "update");
}

#[tokio::test]
async fn an_sqs_batch_with_two_malformed_records_writes_the_other_eight() {
    let fixture = HistoryFixture::new().await;
    let history = fixture.function(&[]).await;
    let thing = unique("batch");
    let mut bodies: Vec<String> = (1..=8)
        .map(|v| update(&thing, None, v, 1_764_210_000 + v, json!({"reported": {"n": v}})).to_string())
        .collect();
    bodies.insert(3, "{not json".to_owned());
    bodies.insert(7, json!({"state": {}, "version": 1, "timestamp": 1, "topic": "sensors/x"}).to_string());
    let answer =
        history.invoke(&sqs_batch(&bodies), INVOKE_TIMEOUT).await.expect("invoking shadow-history with an SQS batch");
    let mut failures = batch_failures(&answer);
    failures.sort();
    assert_eq!(failures, ["m3", "m7"]);
    assert_eq!(fixture.events(&thing, None).await.len(), 8);
    assert_eq!(fixture.count().await, 8);

    // The sample batch from events/ is accepted whole.
    let answer = history
        .invoke(&sample("sqs-batch.json"), INVOKE_TIMEOUT)
        .await
        .expect("invoking shadow-history with sqs-batch.json");
    assert!(batch_failures(&answer).is_empty(), "{answer}");
}

/// An event serde_json cannot read (nested past its 128 levels) fails in no runtime code: the handler refuses it as
/// `Final.InvalidEvent`, which Lambda does not retry and the DLQ's alarm explains, and writes nothing.
#[tokio::test]
async fn an_event_too_deep_to_read_is_a_final_invalid_event() {
    let fixture = HistoryFixture::new().await;
    let history = fixture.function(&[]).await;
    let mut deep = json!(1);
    for _ in 0..200 {
        deep = json!([deep]);
    }
    let event = update(&unique("deep"), None, 1, now_secs(), json!({"desired": {"deep": deep}}));
    let err = history.invoke(&event, INVOKE_TIMEOUT).await.expect_err("a 200-deep event was accepted");
    assert_eq!(err.error_type(), Some("Final.InvalidEvent"), "{err}");
    assert!(err.to_string().contains("`payload` is not readable JSON: recursion limit exceeded"), "{err}");
    assert_eq!(fixture.count().await, 0);
}

#[tokio::test]
async fn malformed_events_are_final_errors_that_write_nothing() {
    let fixture = HistoryFixture::new().await;
    let history = fixture.function(&[]).await;
    let cases = [
        (json!([1, 2, 3]), "event"),
        (sample("invalid-no-topic.json"), "topic"),
        (
            json!({"state": {}, "version": "7", "timestamp": 1, "topic": "$aws/things/d/shadow/update/accepted"}),
            "version",
        ),
        (json!({"state": 5, "version": 7, "timestamp": 1, "topic": "$aws/things/d/shadow/update/accepted"}), "state"),
        (json!({"state": {}, "version": 7, "timestamp": 1, "thingName": "bad name"}), "thingName"),
    ];
    for (event, field) in cases {
        let err = history.invoke(&event, INVOKE_TIMEOUT).await.err().unwrap_or_else(|| panic!("{event} was accepted"));
        assert_eq!(err.error_type(), Some("Final.InvalidEvent"), "{event}: {err}");
        assert!(err.to_string().contains(&format!("`{field}`")), "{event}: {err} should name {field}");
    }
    assert_eq!(fixture.count().await, 0);
}

#[tokio::test]
async fn a_thousand_events_through_30_percent_throttling_give_a_thousand_items() {
    let fixture = HistoryFixture::new().await;
    let proxy =
        FaultProxy::start(&fixture.stack.var("AWS_ENDPOINT_URL_DYNAMODB"), Service::DynamoDb, Faults::throttling(0.3))
            .await;
    let history = fixture.function(&[("AWS_ENDPOINT_URL_DYNAMODB", proxy.url.as_str())]).await;
    let prefix = unique("load");
    let bodies: Vec<String> = (0..1000u64)
        .map(|i| {
            update(
                &format!("{prefix}-{}", i % 50),
                Some("cfg"),
                i / 50 + 1,
                1_764_210_000 + i,
                json!({"desired": {"i": i}}),
            )
            .to_string()
        })
        .collect();
    let mut failed = Vec::new();
    for (n, chunk) in bodies.chunks(10).enumerate() {
        let answer =
            history.invoke(&sqs_batch(chunk), INVOKE_TIMEOUT).await.expect("invoking shadow-history with an SQS batch");
        failed.extend(batch_failures(&answer).into_iter().map(|id| format!("batch {n} {id}")));
    }
    assert!(failed.is_empty(), "records handed back: {failed:?}");
    let mut missing = Vec::new();
    for t in 0..50 {
        let recorded = fixture.events(&format!("{prefix}-{t}"), Some("cfg")).await;
        if recorded.len() != 20 {
            missing.push(format!("{prefix}-{t}: {} of 20: {:?}", recorded.len(), versions(&recorded)));
        }
    }
    assert!(missing.is_empty(), "{missing:#?}");
    assert_eq!(fixture.count().await, 1000);
    assert!(proxy.counts.throttled() > 100, "the proxy throttled only {} requests", proxy.counts.throttled());
}

#[tokio::test]
async fn out_of_time_is_a_retryable_error_and_nothing_is_lost() {
    let fixture = HistoryFixture::new().await;
    let proxy =
        FaultProxy::start(&fixture.stack.var("AWS_ENDPOINT_URL_DYNAMODB"), Service::DynamoDb, Faults::throttling(1.0))
            .await;
    let throttled = fixture.function(&[("AWS_ENDPOINT_URL_DYNAMODB", proxy.url.as_str())]).await;
    let thing = unique("late");
    let event = update(&thing, Some("cfg"), 1, 1_764_210_000, json!({"desired": {"a": 1}}));
    let err = throttled.invoke(&event, Duration::from_secs(4)).await.err();
    assert_eq!(err.as_ref().and_then(|e| e.error_type()), Some("Retryable.OutOfTime"), "{err:?}");

    let batch = sqs_batch(&[event.to_string(), update(&thing, Some("cfg"), 2, 1_764_210_001, json!({})).to_string()]);
    let answer = throttled.invoke(&batch, Duration::from_secs(4)).await.expect("invoking the throttled shadow-history");
    let mut failures = batch_failures(&answer);
    failures.sort();
    assert_eq!(failures, ["m0", "m1"], "unwritten records go back to the queue");
    assert_eq!(fixture.count().await, 0);

    // Lambda's retry (or SQS's redelivery) on a healthy table records them.
    let healthy = fixture.function(&[]).await;
    healthy.invoke(&event, INVOKE_TIMEOUT).await.expect("invoking the healthy shadow-history");
    let answer =
        healthy.invoke(&batch, INVOKE_TIMEOUT).await.expect("invoking the healthy shadow-history with the batch");
    assert!(batch_failures(&answer).is_empty());
    assert_eq!(fixture.count().await, 2);
}

#[tokio::test]
async fn events_without_a_topic_are_refused_rather_than_misrecorded() {
    let fixture = HistoryFixture::new().await;
    let history = fixture.function(&[]).await;
    // topic(6) of a classic topic is `accepted`; a payload without state that is no delete/accepted.
    let refused = [
        (sample("update-accepted-classic-topic6.json"), "shadowName"),
        (sample("invalid-no-state-thing-name.json"), "state"),
        (sample("invalid-update-rejected-thing-name.json"), "state"),
    ];
    for (event, field) in &refused {
        let err = history.invoke(event, INVOKE_TIMEOUT).await.err().unwrap_or_else(|| panic!("{event} was accepted"));
        assert_eq!(err.error_type(), Some("Final.InvalidEvent"), "{event}: {err}");
        assert!(err.to_string().contains(&format!("`{field}`")), "{event}: {err} should name {field}");
    }
    assert_eq!(fixture.count().await, 0, "nothing written");

    // In an SQS batch only the refused records come back; the good ones are written.
    let thing = unique("shape");
    let mut no_state = update(&thing, Some("cfg"), 2, 1_764_210_002, json!({}));
    if let Some(fields) = no_state.as_object_mut() {
        fields.remove("state");
    }
    let bodies = [
        update(&thing, Some("cfg"), 1, 1_764_210_001, json!({"desired": {"a": 1}})),
        no_state,
        sample("invalid-no-state-thing-name.json"),
        sample("update-accepted-classic-topic6.json"),
        sample("update-accepted-classic-thing-name.json"),
        sample("delete-accepted-thing-name.json"),
    ]
    .map(|event| event.to_string());
    let answer =
        history.invoke(&sqs_batch(&bodies), INVOKE_TIMEOUT).await.expect("invoking shadow-history with an SQS batch");
    let mut failures = batch_failures(&answer);
    failures.sort();
    assert_eq!(failures, ["m1", "m2", "m3"], "{answer}");
    assert_eq!(versions(&fixture.events(&thing, Some("cfg")).await), [(1, "update".to_owned())]);
    assert_eq!(versions(&fixture.events("Test-Device", None).await), [(13, "update".to_owned())], "the classic shadow");
    assert_eq!(versions(&fixture.events("Test-Device", Some("test1")).await), [(5, "delete".to_owned())]);
    assert!(fixture.events("Test-Device", Some("accepted")).await.is_empty());
    assert_eq!(fixture.count().await, 3);
}

#[tokio::test]
async fn numbers_dynamodb_cannot_hold_are_stored_as_their_text_and_read_back() {
    let fixture = HistoryFixture::new().await;
    let history = fixture.function(&[("HISTORY_STORE_METADATA", "true")]).await;
    let thing = unique("range");
    let desired = json!({
        "huge": 1e200,
        "negative": -1e200,
        "tiny": 1e-200,
        "nested": {"list": [1e200, 5, {"deep": -1e-200}]},
        "largest": 9.99999999999999e125,
        "small": 1e-129,
        "tooLarge": 1e126,
        "tooSmall": -1e-131,
        "ordinary": 0.1
    });
    let mut event =
        update(&thing, Some("cfg"), 1, 1_764_210_000, json!({"desired": desired, "reported": {"t": 1e300}}));
    event["metadata"] = json!({"desired": {"huge": {"timestamp": 1_764_210_000}}});
    let answer = history.invoke(&event, INVOKE_TIMEOUT).await.expect("invoking shadow-history");
    assert_eq!(answer["outcome"], "written", "{answer}");

    // The table holds each such number as a one-key map with its JSON text; numbers in range stay numbers.
    let raw = fixture
        .stack
        .dynamodb()
        .query()
        .table_name(&fixture.table)
        .key_condition_expression("pk = :pk")
        .expression_attribute_values(":pk", AttributeValue::S(format!("{thing}#cfg")))
        .send()
        .await
        .expect("query");
    let items = raw.items();
    assert_eq!(items.len(), 1);
    let Some(AttributeValue::M(state)) = items[0].get("state") else { panic!("no state map: {items:?}") };
    let Some(AttributeValue::M(stored)) = state.get("desired") else { panic!("no desired map: {state:?}") };
    let marker = |text: &str| AttributeValue::M([("$number".to_owned(), AttributeValue::S(text.to_owned()))].into());
    assert_eq!(stored.get("huge"), Some(&marker("1e+200")));
    assert_eq!(stored.get("negative"), Some(&marker("-1e+200")));
    assert_eq!(stored.get("tiny"), Some(&marker("1e-200")));
    assert_eq!(stored.get("tooLarge"), Some(&marker("1e+126")));
    // The function reads the event with serde_json, whose default parser may miss a double by one ulp at such
    // exponents (-1e-131 reads as -1.0000000000000001e-131): the marker holds the number as the function read it.
    let as_read: Value = serde_json::from_str(&event.to_string()).expect("reading the event back as JSON");
    let too_small = as_read["state"]["desired"]["tooSmall"].to_string();
    assert_eq!(stored.get("tooSmall"), Some(&marker(&too_small)));
    assert!(matches!(stored.get("largest"), Some(AttributeValue::N(_))), "{stored:?}");
    assert!(matches!(stored.get("small"), Some(AttributeValue::N(_))), "{stored:?}");
    assert_eq!(stored.get("ordinary"), Some(&AttributeValue::N("0.1".into())));

    // The history's reader turns them back into the numbers the event carried.
    let recorded = fixture.events(&thing, Some("cfg")).await;
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0]["state"]["desired"], as_read["state"]["desired"]);
    for key in ["huge", "negative", "tiny", "tooLarge", "largest"] {
        assert_eq!(recorded[0]["state"]["desired"][key], desired[key], "{key}");
    }
    assert_eq!(recorded[0]["state"]["reported"]["t"], json!(1e300));
    assert_eq!(recorded[0]["metadata"], event["metadata"]);
}
