//! shadow-push end to end: the real binary under a local Runtime API, against moto (registry, data plane, SQS) and
//! DynamoDB Local, with requests from `events/push/`.

use std::time::Duration;

use devstack::fault_proxy::{FaultProxy, Faults, Service};
use devstack::push::{PushFixture, push, request};
use devstack::unique;
use serde_json::{Value, json};

fn version(doc: &Option<Value>) -> Option<u64> {
    doc.as_ref().and_then(|d| d["version"].as_u64())
}

#[tokio::test]
async fn list_group_recursive_and_query_are_united_without_duplicates() {
    let fx = PushFixture::new().await;
    let site = unique("site");
    fx.create_things(0..5, "osaka").await;
    fx.create_things(5..12, &site).await;
    fx.create_group("prod", None, 0..4).await;
    fx.create_group("line-a", Some("prod"), 2..7).await;
    fx.create_group("line-a1", Some("line-a"), [7]).await;
    let function = fx.function(&[]).await;

    let mut req = request("union-of-targets.json");
    req["targets"] = json!({
        "things": [fx.thing(0), fx.thing(11), fx.thing(0)],
        "thingGroup": fx.group("prod"), "recursive": true,
        "query": format!("attributes.site:{site}"),
    });
    let summary = push(&function, &req).await.expect("invoking shadow-push");
    // list 0, 11 | prod 0..3 | line-a 2..6 | line-a1 7 | query 5..11  => 0..=11
    assert_eq!(summary["targets"], 12, "{summary}");
    assert_eq!(summary["updated"], 12, "{summary}");
    assert_eq!(summary["failed"], 0, "{summary}");
    assert_eq!(summary["complete"], true);
    for i in 0..12 {
        let doc = fx.shadow(&fx.thing(i), Some("config")).await;
        assert_eq!(version(&doc), Some(1), "{} updated exactly once", fx.thing(i));
        assert_eq!(
            doc.as_ref().map(|d| d["state"]["desired"]["settings"].clone()),
            Some(json!({"mode": 2, "temp": 22}))
        );
    }
    let push_id = summary["pushId"].as_str().unwrap_or_default();
    let record = fx.record(push_id).await.unwrap_or_else(|| panic!("no record for {push_id}"));
    assert_eq!((record["updated"].clone(), record["complete"].clone()), (json!(12), json!(true)));
}

#[tokio::test]
async fn a_second_identical_push_updates_nothing() {
    let fx = PushFixture::new().await;
    fx.create_things(0..6, "x").await;
    fx.create_group("prod", None, 0..6).await;
    // One thing already holds the settings (and more): it is never touched.
    fx.set_desired(
        &fx.thing(5),
        Some("test1"),
        json!({"settings": {"mode": 1.0, "temp": 20, "fan": "auto"}, "firmware_url": "https://s3.com/firmware.bin"}),
    )
    .await;
    let function = fx.function(&[]).await;
    let mut req = request("seed-settings-to-group.json");
    req["pushId"] = json!(unique("seed"));
    req["targets"]["thingGroup"] = json!(fx.group("prod"));

    let first = push(&function, &req).await.expect("invoking shadow-push");
    assert_eq!((first["updated"].clone(), first["unchanged"].clone()), (json!(5), json!(1)), "{first}");
    let versions: Vec<Option<u64>> = futures::future::join_all((0..6).map(|i| {
        let fx = &fx;
        async move { version(&fx.shadow(&fx.thing(i), Some("test1")).await) }
    }))
    .await;
    assert_eq!(versions, [Some(1), Some(1), Some(1), Some(1), Some(1), Some(1)]);

    req["pushId"] = json!(unique("seed-again"));
    let second = push(&function, &req).await.expect("invoking shadow-push a second time");
    assert_eq!((second["updated"].clone(), second["unchanged"].clone()), (json!(0), json!(6)), "{second}");
    let after: Vec<Option<u64>> = futures::future::join_all((0..6).map(|i| {
        let fx = &fx;
        async move { version(&fx.shadow(&fx.thing(i), Some("test1")).await) }
    }))
    .await;
    assert_eq!(after, versions, "no version was bumped");

    // The same push id again is a retry of that push: it reports and pushes nothing.
    let retried = push(&function, &req).await.expect("invoking shadow-push again (the retry)");
    assert_eq!(retried["pushId"], req["pushId"]);
    assert_eq!(retried["unchanged"], 6);
}

#[tokio::test]
async fn dry_run_writes_nothing_and_reports_what_would_change() {
    let fx = PushFixture::new().await;
    let site = unique("site");
    fx.create_things(0..4, &site).await;
    fx.set_desired(&fx.thing(0), None, json!({"firmware_url": "https://s3.com/firmware-2.bin"})).await;
    let function = fx.function(&[]).await;
    let mut req = request("dry-run.json");
    req["targets"]["query"] = json!(format!("attributes.site:{site}"));
    let summary = push(&function, &req).await.expect("invoking shadow-push");
    assert_eq!(summary["dryRun"], true);
    assert_eq!((summary["updated"].clone(), summary["unchanged"].clone()), (json!(3), json!(1)), "{summary}");
    assert_eq!(version(&fx.shadow(&fx.thing(0), None).await), Some(1));
    for i in 1..4 {
        assert_eq!(fx.shadow(&fx.thing(i), None).await, None, "dry run created a shadow");
    }
}

#[tokio::test]
async fn an_unknown_thing_fails_alone() {
    let fx = PushFixture::new().await;
    fx.create_things(0..3, "x").await;
    let function = fx.function(&[]).await;
    let ghost = fx.thing(99);
    let req = json!({"pushId": unique("ghost"), "desired": {"mode": 1},
                     "targets": {"things": [fx.thing(0), ghost, fx.thing(1), fx.thing(2)]}});
    let summary = push(&function, &req).await.expect("invoking shadow-push");
    assert_eq!((summary["updated"].clone(), summary["failed"].clone()), (json!(3), json!(1)), "{summary}");
    assert_eq!(summary["failures"][0]["thingName"], ghost.as_str());
    assert_eq!(summary["failures"][0]["code"], "ResourceNotFoundException");
    assert_eq!(summary["complete"], true);
}

#[tokio::test]
async fn five_hundred_things_through_throttling_and_unavailability() {
    let fx = PushFixture::new().await;
    fx.create_things(0..500, "load").await;
    let proxy = FaultProxy::start(
        &fx.stack.var("AWS_ENDPOINT_URL_IOT_DATA_PLANE"),
        Service::IotDataPlane,
        Faults { throttle: 0.30, unavailable: 0.05, ..Faults::none() },
    )
    .await;
    let function = fx.function(&[("AWS_ENDPOINT_URL_IOT_DATA_PLANE", proxy.url.as_str())]).await;
    let things: Vec<String> = (0..500).map(|i| fx.thing(i)).collect();
    let req = json!({"pushId": unique("throttled"), "desired": {"settings": {"mode": 3}}, "targets": {"things": things},
                     "skipUnchanged": false});
    let summary = function.invoke(&req, Duration::from_secs(120)).await.expect("invoking shadow-push");
    assert_eq!((summary["updated"].clone(), summary["failed"].clone()), (json!(500), json!(0)), "{summary}");
    assert!(summary["throttled"].as_u64().unwrap_or(0) > 50, "{summary}");
    assert!(proxy.counts.throttled() > 50 && proxy.counts.server_errors() > 5);
    for i in (0..500).step_by(50) {
        assert_eq!(version(&fx.shadow(&fx.thing(i), None).await), Some(1));
    }
}

#[tokio::test]
async fn a_push_longer_than_its_invocation_is_handed_off_and_updates_each_thing_once() {
    let fx = PushFixture::new().await;
    fx.create_things(0..120, "long").await;
    fx.create_group("prod", None, 0..120).await;
    // 40 requests/s: 120 things need 3 s, each invocation gets 2.5 s.
    let function = fx.function(&[]).await;
    let push_id = unique("long");
    let req = json!({"pushId": push_id, "desired": {"settings": {"mode": 4}}, "targets": {"thingGroup": fx.group("prod")},
                     "skipUnchanged": false, "maxRequestsPerSecond": 40});
    let first = function.invoke(&req, Duration::from_millis(2500)).await.expect("invoking shadow-push");
    assert_eq!(first["complete"], false, "{first}");
    let mut invocations = 1;
    let mut duplicates_sent = false;
    loop {
        let mut records = fx.take_continuations().await;
        if records.is_empty() {
            break;
        }
        if !duplicates_sent {
            // SQS delivers at least once: the same hand-off twice must not push twice.
            records.push(records[0].clone());
            duplicates_sent = true;
        }
        for record in records {
            let answer = function
                .invoke(&json!({"Records": [record]}), Duration::from_millis(2500))
                .await
                .expect("invoking shadow-push with one SQS record");
            assert_eq!(answer["batchItemFailures"], json!([]), "{answer}");
            invocations += 1;
        }
        assert!(invocations < 40, "the push does not finish");
    }
    assert!(invocations >= 3, "{invocations} invocations");
    let record = fx.record(&push_id).await.expect("no record");
    assert_eq!(record["complete"], true, "{record}");
    assert_eq!(
        (record["targets"].clone(), record["updated"].clone(), record["failed"].clone()),
        (json!(120), json!(120), json!(0)),
        "{record}"
    );
    for i in 0..120 {
        assert_eq!(version(&fx.shadow(&fx.thing(i), None).await), Some(1), "{} updated exactly once", fx.thing(i));
    }
}

#[tokio::test]
async fn bad_requests_are_refused_before_any_shadow_request() {
    let fx = PushFixture::new().await;
    fx.create_things(0..1, "x").await;
    let proxy =
        FaultProxy::start(&fx.stack.var("AWS_ENDPOINT_URL_IOT_DATA_PLANE"), Service::IotDataPlane, Faults::none())
            .await;
    let function = fx.function(&[("AWS_ENDPOINT_URL_IOT_DATA_PLANE", proxy.url.as_str())]).await;
    let good = request("seed-settings-to-group.json");
    let with = |path: &[&str], value: Value| {
        let mut r = good.clone();
        let mut at = &mut r;
        for key in &path[..path.len() - 1] {
            at = &mut at[*key];
        }
        at[path[path.len() - 1]] = value;
        r
    };
    let cases = [
        (json!("push everything"), "request"),
        (with(&["colour"], json!("red")), "colour"),
        (with(&["desired"], json!([1, 2])), "desired"),
        (with(&["desired"], json!({"list": [1, null]})), "desired.list[1]"),
        (with(&["desired"], json!({"a": {"b": {"c": {"d": {"e": {"f": {"g": 1}}}}}}})), "desired.a.b.c.d.e.f"),
        (with(&["desired"], json!({"blob": "x".repeat(8300)})), "desired"),
        (with(&["pushId"], json!("p".repeat(65))), "pushId"),
        (with(&["shadowName"], json!("bad/shadow")), "shadowName"),
        (with(&["targets"], json!({"things": [fx.thing(0), "no spaces allowed"]})), "targets.things[1]"),
        (with(&["targets"], json!({"thingGroup": "bad#group"})), "targets.thingGroup"),
        (with(&["targets"], json!({})), "targets"),
        (with(&["maxRequestsPerSecond"], json!(1_000_000)), "maxRequestsPerSecond"),
    ];
    for (req, field) in cases {
        let err = push(&function, &req).await.err().unwrap_or_else(|| panic!("{req} was accepted"));
        assert_eq!(err.error_type(), Some("Final.InvalidRequest"), "{err}");
        assert!(err.to_string().contains(&format!("`{field}`")), "{err} should name {field}");
    }
    assert_eq!(proxy.counts.forwarded() + proxy.counts.throttled(), 0, "a shadow request was sent");
    let items = fx.stack.dynamodb().scan().table_name(&fx.table).send().await.map(|s| s.count()).unwrap_or(-1);
    assert_eq!(items, 0, "a refused request leaves no record");
}
