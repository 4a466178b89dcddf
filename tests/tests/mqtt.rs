//! The local stack's MQTT side: mosquitto over TLS with client certificates from the stack's CA, and the Device
//! Shadow service's topics on the same shadows that the HTTP data plane serves (moto, through the rules stand-in).
//! What AWS documents (developerguide `device-shadow-mqtt`, `device-shadow-error-messages`), tested here: a
//! certificate from another CA is refused; `accepted` echoes `clientToken` and carries the request's state;
//! `rejected` carries 400, 404, 409 and 413; an update that sets `desired` publishes `update/delta` and
//! `update/documents`, however it came (an HTTP push reaches the device); a device's update is visible over HTTP and
//! recorded by shadow-history; a persistent session gets the QoS 1 delta published while it was away.

use std::time::{Duration, Instant};

use devstack::mqtt_ca::LocalCa;
use devstack::mqtt_device::{Device, DeviceError, Endpoint};
use devstack::{Stack, unique};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(15);

struct Fixture {
    stack: Stack,
    endpoint: Endpoint,
    ca: LocalCa,
}

impl Fixture {
    fn new() -> Self {
        let stack = Stack::get();
        let (endpoint, ca) = Endpoint::of(&stack).unwrap_or_else(|e| panic!("{e}"));
        Self { stack, endpoint, ca }
    }

    /// A thing in the registry (moto serves shadows of registered things only).
    async fn thing(&self, prefix: &str) -> String {
        let thing = unique(prefix);
        self.stack.iot().create_thing().thing_name(&thing).send().await.expect("create_thing");
        thing
    }

    async fn device(&self, thing: &str, clean_session: bool) -> (Device, bool) {
        let credentials = self.ca.issue_thing(thing).expect("a certificate");
        Device::connect(thing, &self.endpoint, &credentials, clean_session)
            .await
            .unwrap_or_else(|e| panic!("{thing} connecting: {e}"))
    }

    async fn http_update(&self, thing: &str, shadow: Option<&str>, payload: Value) -> Value {
        let answer = self
            .stack
            .iot_data()
            .update_thing_shadow()
            .thing_name(thing)
            .set_shadow_name(shadow.map(str::to_owned))
            .payload(aws_smithy_types::Blob::new(payload.to_string()))
            .send()
            .await
            .expect("UpdateThingShadow");
        answer.payload().and_then(|p| serde_json::from_slice(p.as_ref()).ok()).unwrap_or(Value::Null)
    }

    async fn http_get(&self, thing: &str, shadow: Option<&str>) -> Value {
        let answer = self
            .stack
            .iot_data()
            .get_thing_shadow()
            .thing_name(thing)
            .set_shadow_name(shadow.map(str::to_owned))
            .send()
            .await
            .expect("GetThingShadow");
        answer.payload().and_then(|p| serde_json::from_slice(p.as_ref()).ok()).unwrap_or(Value::Null)
    }
}

fn topic(thing: &str, shadow: Option<&str>, suffix: &str) -> String {
    match shadow {
        Some(name) => format!("$aws/things/{thing}/shadow/name/{name}/{suffix}"),
        None => format!("$aws/things/{thing}/shadow/{suffix}"),
    }
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused_and_one_from_the_stacks_ca_connects() {
    let fx = Fixture::new();
    let thing = unique("cert");
    let elsewhere = std::env::temp_dir().join(unique("other-ca"));
    let other_ca = LocalCa::open_or_create(&elsewhere).expect("another CA");
    let foreign = other_ca.issue_thing(&thing).expect("a certificate from another CA");
    let refused = Device::connect(&thing, &fx.endpoint, &foreign, true).await.err();
    assert!(matches!(refused, Some(DeviceError::Refused(_))), "{refused:?}");

    let credentials = fx.ca.issue_thing(&thing).expect("a certificate from the stack's CA");
    let (mut device, _) = Device::connect(&thing, &fx.endpoint, &credentials, true).await.expect("connecting");
    let _ = std::fs::remove_dir_all(elsewhere);

    // The certificate names the thing: it neither changes another thing's shadow nor hears of it (the broker's ACL
    // drops the request, and does not deliver the other thing's messages).
    let other = fx.thing("cert-other").await;
    device
        .subscribe(&[topic(&thing, None, "update/accepted"), topic(&other, None, "update/accepted")])
        .await
        .expect("subscribing");
    let request = json!({"state": {"desired": {"hijacked": true}}});
    device.publish(&topic(&other, None, "update"), request.to_string()).await.expect("publishing");
    fx.http_update(&other, None, json!({"state": {"reported": {"ok": true}}})).await;
    assert_eq!(device.next(Duration::from_millis(800)).await, None, "nothing of the other thing's reaches it");
    let document = fx.http_get(&other, None).await;
    assert_eq!(document["state"], json!({"reported": {"ok": true}}), "{document}");
}

#[tokio::test]
async fn an_http_push_reaches_a_subscribed_device_as_delta_and_documents() {
    let fx = Fixture::new();
    let thing = fx.thing("mqtt-push").await;
    let shadow = Some("config");
    let (mut device, _) = fx.device(&thing, true).await;
    device
        .subscribe(&[topic(&thing, shadow, "update/delta"), topic(&thing, shadow, "update/documents")])
        .await
        .expect("subscribing");

    fx.http_update(&thing, shadow, json!({"state": {"reported": {"fw": "1.0", "mode": 1}}})).await;
    let first = device.next_on(&topic(&thing, shadow, "update/documents"), WAIT).await.expect("documents");
    assert_eq!(first.get("previous"), None, "a new shadow has no previous: {first}");
    assert_eq!(first["current"]["version"], 1);

    fx.http_update(&thing, shadow, json!({"state": {"desired": {"fw": "2.0", "mode": 1}}, "clientToken": "push-1"}))
        .await;
    // The stand-in publishes `documents`, then `delta`.
    let documents = device.next_on(&topic(&thing, shadow, "update/documents"), WAIT).await.expect("documents");
    let delta = device.next_on(&topic(&thing, shadow, "update/delta"), WAIT).await.expect("delta");
    assert_eq!(delta["state"], json!({"fw": "2.0"}), "only what differs from reported: {delta}");
    assert_eq!(delta["version"], 2);
    assert!(delta["metadata"]["fw"]["timestamp"].is_u64(), "{delta}");
    assert_eq!(documents["previous"]["version"], 1, "{documents}");
    assert_eq!(documents["previous"]["state"], json!({"reported": {"fw": "1.0", "mode": 1}}));
    assert_eq!(documents["current"]["version"], 2);
    assert_eq!(
        documents["current"]["state"],
        json!({"desired": {"fw": "2.0", "mode": 1}, "reported": {"fw": "1.0", "mode": 1}})
    );
    assert_eq!(documents["clientToken"], "push-1");
    assert!(documents["timestamp"].is_u64());

    // A report that leaves nothing to do publishes documents but no delta.
    fx.http_update(&thing, shadow, json!({"state": {"reported": {"fw": "2.0"}}})).await;
    let documents = device.next_on(&topic(&thing, shadow, "update/documents"), WAIT).await.expect("documents");
    assert_eq!(documents["current"]["version"], 3);
    let more = device.next(Duration::from_millis(500)).await;
    assert_eq!(more, None, "no delta after a report");
}

#[tokio::test]
async fn a_device_update_is_accepted_visible_over_http_and_recorded_by_shadow_history() {
    let fx = Fixture::new();
    let thing = fx.thing("mqtt-update").await;
    let shadow = Some("test1");
    let (mut device, _) = fx.device(&thing, true).await;
    device
        .subscribe(&[
            topic(&thing, shadow, "update/accepted"),
            topic(&thing, shadow, "get/accepted"),
            topic(&thing, shadow, "delete/accepted"),
        ])
        .await
        .expect("subscribing");
    let token = unique("tok");
    let update = json!({"state": {"reported": {"temp": 21, "fan": {"speed": 2}}}, "clientToken": token});
    device.publish(&topic(&thing, shadow, "update"), update.to_string()).await.expect("publishing");
    let accepted = device.next_on(&topic(&thing, shadow, "update/accepted"), WAIT).await.expect("accepted");
    assert_eq!(accepted["state"], update["state"], "the request's state: {accepted}");
    assert_eq!(accepted["clientToken"], json!(token));
    assert_eq!(accepted["version"], 1);
    assert!(accepted["metadata"]["reported"]["fan"]["speed"]["timestamp"].is_u64(), "{accepted}");

    let over_http = fx.http_get(&thing, shadow).await;
    assert_eq!(over_http["state"]["reported"], json!({"temp": 21, "fan": {"speed": 2}}), "{over_http}");
    assert_eq!(over_http["version"], 1);

    device.publish(&topic(&thing, shadow, "get"), json!({"clientToken": "g-1"}).to_string()).await.expect("get");
    let got = device.next_on(&topic(&thing, shadow, "get/accepted"), WAIT).await.expect("get/accepted");
    assert_eq!(got["state"]["reported"]["temp"], 21, "{got}");
    assert_eq!((got["version"].clone(), got["clientToken"].clone()), (json!(1), json!("g-1")));

    let store = shadow_aws::DynamoHistoryStore::new(fx.stack.dynamodb(), fx.stack.var("HISTORY_TABLE"));
    let reference = shadow_core::ShadowRef {
        thing: shadow_core::ThingName::parse(thing.as_str()).expect("the thing's name"),
        shadow: Some(shadow_core::ShadowName::parse("test1").expect("the shadow's name")),
    };
    let until = Instant::now() + Duration::from_secs(20);
    let events = loop {
        let events = store.events(&reference).await.expect("history");
        if !events.is_empty() || Instant::now() > until {
            break events;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(events.len(), 1, "history of {thing}: {events:?}");
    assert_eq!(events[0]["version"], 1, "{}", events[0]);
    assert_eq!(events[0]["clientToken"], json!(token), "{}", events[0]);

    device.publish(&topic(&thing, shadow, "delete"), json!({"clientToken": "d-1"}).to_string()).await.expect("delete");
    let deleted = device.next_on(&topic(&thing, shadow, "delete/accepted"), WAIT).await.expect("delete/accepted");
    assert_eq!(deleted["clientToken"], "d-1", "{deleted}");
    assert!(deleted["version"].is_u64() && deleted["timestamp"].is_u64(), "{deleted}");
}

#[tokio::test]
async fn refused_requests_are_rejected_with_awss_codes() {
    let fx = Fixture::new();
    let thing = fx.thing("mqtt-rejected").await;
    let (mut device, _) = fx.device(&thing, true).await;
    let rejected = topic(&thing, None, "update/rejected");
    device
        .subscribe(&[rejected.clone(), topic(&thing, None, "get/rejected"), topic(&thing, None, "update/accepted")])
        .await
        .expect("subscribing");
    let update = topic(&thing, None, "update");

    device.publish(&topic(&thing, None, "get"), json!({"clientToken": "g"}).to_string()).await.expect("get");
    let missing = device.next_on(&topic(&thing, None, "get/rejected"), WAIT).await.expect("get/rejected");
    assert_eq!((missing["code"].clone(), missing["clientToken"].clone()), (json!(404), json!("g")), "{missing}");

    device.publish(&update, "{\"state\": {\"desired\": ").await.expect("publishing");
    let bad = device.next_on(&rejected, WAIT).await.expect("rejected");
    assert_eq!((bad["code"].clone(), bad["message"].clone()), (json!(400), json!("Invalid JSON")), "{bad}");
    assert!(bad["timestamp"].is_u64());

    device.publish(&update, json!({"desired": {"a": 1}, "clientToken": "m"}).to_string()).await.expect("publishing");
    let no_state = device.next_on(&rejected, WAIT).await.expect("rejected");
    assert_eq!(
        (no_state["code"].clone(), no_state["message"].clone(), no_state["clientToken"].clone()),
        (json!(400), json!("Missing required node: state"), json!("m"))
    );

    let big = json!({"state": {"desired": {"blob": "x".repeat(9000)}}, "clientToken": "big"});
    device.publish(&update, big.to_string()).await.expect("publishing");
    let too_large = device.next_on(&rejected, WAIT).await.expect("rejected");
    assert_eq!((too_large["code"].clone(), too_large["clientToken"].clone()), (json!(413), json!("big")));

    device.publish(&update, json!({"state": {"desired": {"a": 1}}}).to_string()).await.expect("publishing");
    let accepted = device.next_on(&topic(&thing, None, "update/accepted"), WAIT).await.expect("accepted");
    assert_eq!(accepted["version"], 1);
    let stale = json!({"state": {"desired": {"a": 2}}, "version": 7, "clientToken": "v"});
    device.publish(&update, stale.to_string()).await.expect("publishing");
    let conflict = device.next_on(&rejected, WAIT).await.expect("rejected");
    assert_eq!(
        (conflict["code"].clone(), conflict["message"].clone(), conflict["clientToken"].clone()),
        (json!(409), json!("Version conflict"), json!("v"))
    );
    assert_eq!(fx.http_get(&thing, None).await["state"]["desired"], json!({"a": 1}), "refused updates change nothing");
}

#[tokio::test]
async fn a_persistent_session_gets_the_delta_sent_while_it_was_away() {
    let fx = Fixture::new();
    let thing = fx.thing("mqtt-session").await;
    let shadow = Some("config");
    let delta_topic = topic(&thing, shadow, "update/delta");
    let (mut device, _) = fx.device(&thing, false).await;
    device.subscribe(std::slice::from_ref(&delta_topic)).await.expect("subscribing");
    device.disconnect().await;

    fx.http_update(&thing, shadow, json!({"state": {"desired": {"interval": 30}}})).await;

    let (mut device, session_present) = fx.device(&thing, false).await;
    assert!(session_present, "the broker kept the session");
    let delta = device.next_on(&delta_topic, WAIT).await.expect("the delta published while away");
    assert_eq!(delta["state"], json!({"interval": 30}), "{delta}");
    // The device applies it and reports; its delta is then gone.
    device
        .publish(&topic(&thing, shadow, "update"), json!({"state": {"reported": {"interval": 30}}}).to_string())
        .await
        .expect("reporting");
    let until = Instant::now() + WAIT;
    loop {
        let document = fx.http_get(&thing, shadow).await;
        if document["state"].get("delta").is_none() && document["version"] == 2 {
            break;
        }
        assert!(Instant::now() < until, "the report did not land: {document}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Clean up the session the broker keeps for this thing.
    device.disconnect().await;
    let _ = fx.device(&thing, true).await;
}
