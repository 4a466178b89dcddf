//! A local stand-in for the IoT rules engine and for the Device Shadow service's MQTT side. moto serves shadows over
//! HTTP only: this component owns every change of a shadow, whether it comes over HTTP (a proxy in front of moto's
//! data plane) or over MQTT (the shadow topics on the local broker), carries it out on moto's shadows, publishes on
//! the broker what AWS publishes, and hands a channel what the template's rules
//! `SELECT *, topic() AS topic, timestamp() AS receivedAt` would deliver, as their Lambda action would:
//!
//! - for every accepted update (`POST /things/<thing>/shadow[?name=<shadow>]`, or a message on `.../update`):
//!   `update/accepted` (the request's state), `update/documents` (the whole document before the update as
//!   `previous`, left out when the shadow did not exist or had been deleted, and after it as `current`, each as
//!   `state` with `desired` / `reported`, `metadata` and `version`; moto's `timestamp`, the request's `clientToken`)
//!   and, when the update set `desired` and it differs from `reported`, `update/delta`. The rules' event is the
//!   `update/documents` message with the topic and the receive time;
//! - for every accepted delete (`DELETE` of the same path, or `.../delete`): `delete/accepted` (moto's `version`
//!   and `timestamp`), and the same message to the rules;
//! - over MQTT only, as AWS does: `get/accepted`, and `rejected` for a refused request, with AWS's codes.
//!
//! Why one component rather than a rules stand-in subscribed to the broker: every change then passes one per-shadow
//! lock, so what is published on the broker and what the rules get are the same message, in the shadow's order, and
//! the rules' events do not depend on a broker connection that could drop messages while it reconnects.
//!
//! Every other HTTP request, and a refused update or delete, passes through without an event. The documents are
//! moto's own, read with `GetThingShadow`: per shadow, a lock is held around reading the document before, the update
//! and reading the document after, so two updates of one shadow cannot interleave. The last document read is kept,
//! and serves as the next update's `previous` when moto numbers that update one version above it (then no other
//! write came between); a `previous` is never sent unless it is the document at the version below `current`'s.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::Full;
use hyper::http::request::Parts;
use hyper::{Method, Request, Response, StatusCode};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS, SubscribeFilter, TlsConfiguration, Transport};
use serde_json::{Map, Value};
use tokio::sync::mpsc;

use crate::http::{Reply, Server, Upstream, serve, serve_at};
use crate::shadow_mqtt::{self, Operation, Rejection};

pub struct RulesEngine {
    pub url: String,
    _server: Server,
    broker_link: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for RulesEngine {
    fn drop(&mut self) {
        if let Some(link) = &self.broker_link {
            link.abort();
        }
    }
}

/// Where the Device Shadow service meets the devices: the broker, and the service's own client certificate.
#[derive(Debug, Clone)]
pub struct BrokerLink {
    pub host: String,
    pub port: u16,
    /// PEM: the CA the broker's certificate is checked against, the service's certificate and its key.
    pub ca: String,
    pub certificate: String,
    pub private_key: String,
    /// The region moto keeps the shadows in (the data plane's requests name it).
    pub region: String,
}

/// A thing and its shadow's name (`None`: the classic shadow).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ShadowKey {
    pub thing: String,
    pub name: Option<String>,
}

impl ShadowKey {
    /// The shadow's MQTT topic ending in `suffix` (`update/documents`, `delete/accepted`).
    pub fn topic(&self, suffix: &str) -> String {
        match &self.name {
            Some(name) => format!("$aws/things/{}/shadow/name/{name}/{suffix}", self.thing),
            None => format!("$aws/things/{}/shadow/{suffix}", self.thing),
        }
    }

    /// The name AWS's messages give the shadow: the thing's, or `thing~shadow`.
    pub fn display_name(&self) -> String {
        match &self.name {
            Some(name) => format!("{}~{name}", self.thing),
            None => self.thing.clone(),
        }
    }

    /// The data plane's path and query for this shadow.
    fn path(&self) -> String {
        match &self.name {
            Some(name) => format!("/things/{}/shadow?name={name}", self.thing),
            None => format!("/things/{}/shadow", self.thing),
        }
    }
}

/// Per shadow: its lock, guarding the last document read of it (`None`: not known).
type Known = Arc<tokio::sync::Mutex<Option<Value>>>;

/// A shadow's MQTT requests, carried out one after the other in the order the broker delivered them.
type Requests = mpsc::UnboundedSender<(Operation, Bytes)>;

struct Route {
    upstream: Upstream,
    events: mpsc::UnboundedSender<Value>,
    shadows: Mutex<HashMap<ShadowKey, Known>>,
    /// The broker, when the stack has one: every accepted change is published there.
    broker: Option<AsyncClient>,
    region: String,
    requests: Mutex<HashMap<ShadowKey, Requests>>,
}

impl Route {
    fn new(upstream: &str, events: mpsc::UnboundedSender<Value>, broker: Option<AsyncClient>, region: String) -> Self {
        Self {
            upstream: Upstream::new(upstream),
            events,
            shadows: Mutex::default(),
            broker,
            region,
            requests: Mutex::default(),
        }
    }

    /// Publishes `message` on `topic` at QoS 1, as the Device Shadow service does; nothing without a broker.
    async fn publish(&self, topic: String, message: Value) {
        let Some(broker) = &self.broker else { return };
        if let Err(e) = broker.publish(topic.clone(), QoS::AtLeastOnce, false, message.to_string()).await {
            tracing::warn!(%topic, error = %e, "could not publish");
        }
    }

    /// A data-plane request for `shadow`, as the SDK would send it to moto (which reads the service and the region
    /// from the signature's scope, and checks no signature).
    fn request(&self, method: Method, shadow: &ShadowKey) -> Option<Parts> {
        let scope = format!("testing/20240101/{}/iotdata/aws4_request", self.region);
        let request = Request::builder()
            .method(method)
            .uri(shadow.path())
            .header("authorization", format!("AWS4-HMAC-SHA256 Credential={scope}, SignedHeaders=host, Signature=0"))
            .header("content-type", "application/json")
            .body(())
            .ok()?;
        Some(request.into_parts().0)
    }

    /// The shadow's lock and last known document. Entries stay: removing one while a request waits on it would let
    /// the next request take a second lock for the same shadow.
    fn known(&self, shadow: &ShadowKey) -> Known {
        let mut shadows = self.shadows.lock().unwrap_or_else(|e| e.into_inner());
        shadows.entry(shadow.clone()).or_default().clone()
    }

    /// The shadow's document now, read with the request's path and signature: `Ok(None)` when moto has no such
    /// shadow (never created, or deleted), `Err` when it could not be read.
    async fn read(&self, parts: &Parts) -> Result<Option<Value>, String> {
        let (answer, body) = self.upstream.get(parts).await;
        match answer.status {
            StatusCode::NOT_FOUND => Ok(None),
            status if status.is_success() => match serde_json::from_slice::<Value>(&body) {
                Ok(document @ Value::Object(_)) => Ok(Some(document)),
                _ => Err(format!("GetThingShadow answered {status} with no JSON object")),
            },
            status => Err(format!("GetThingShadow answered {status}: {}", String::from_utf8_lossy(&body))),
        }
    }
}

impl RulesEngine {
    /// Proxies to the data plane at `upstream`; the rules' events arrive on the returned receiver.
    pub async fn start(upstream: &str) -> (Self, mpsc::UnboundedReceiver<Value>) {
        let (events, receiver) = mpsc::unbounded_channel();
        let route = Arc::new(Route::new(upstream, events, None, String::new()));
        let server = serve(move |parts, body| handle(route.clone(), parts, body)).await;
        (Self { url: server.url(), _server: server, broker_link: None }, receiver)
    }

    /// As [`RulesEngine::start`], on a fixed address (the long-running local stack's data-plane endpoint), and, with
    /// a broker, the Device Shadow service's MQTT topics on it.
    pub async fn start_at(
        addr: SocketAddr,
        upstream: &str,
        broker: Option<BrokerLink>,
    ) -> std::io::Result<(Self, mpsc::UnboundedReceiver<Value>)> {
        let (events, receiver) = mpsc::unbounded_channel();
        let (client, eventloop, region) = match broker {
            Some(link) => {
                let (client, eventloop) = connect_service(&link);
                (Some(client), Some(eventloop), link.region)
            }
            None => (None, None, String::new()),
        };
        let route = Arc::new(Route::new(upstream, events, client, region));
        let broker_link = eventloop.map(|eventloop| tokio::spawn(serve_broker(route.clone(), eventloop)));
        let server = serve_at(addr, move |parts, body| handle(route.clone(), parts, body)).await?;
        Ok((Self { url: server.url(), _server: server, broker_link }, receiver))
    }
}

/// The service's client of the broker. Large packets: a `documents` message holds two documents of up to 8 KB each.
fn connect_service(link: &BrokerLink) -> (AsyncClient, EventLoop) {
    let mut options = MqttOptions::new(crate::mqtt_ca::SERVICE_IDENTITY, &link.host, link.port);
    options.set_keep_alive(std::time::Duration::from_secs(30));
    options.set_max_packet_size(1 << 20, 1 << 20);
    options.set_inflight(200);
    options.set_transport(Transport::Tls(TlsConfiguration::Simple {
        ca: link.ca.clone().into_bytes(),
        alpn: None,
        client_auth: Some((link.certificate.clone().into_bytes(), link.private_key.clone().into_bytes())),
    }));
    AsyncClient::new(options, 10_000)
}

/// Polls the service's connection: (re)subscribes to the request topics on every connect, and hands each request to
/// its shadow's queue. rumqttc reconnects on the next poll after an error.
async fn serve_broker(route: Arc<Route>, mut eventloop: EventLoop) {
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                tracing::info!("the Device Shadow service is connected to the broker");
                let filters =
                    shadow_mqtt::REQUEST_FILTERS.map(|f| SubscribeFilter::new(f.to_owned(), QoS::AtLeastOnce));
                if let Some(Err(e)) = route.broker.as_ref().map(|client| client.try_subscribe_many(filters)) {
                    tracing::warn!(error = %e, "could not subscribe to the shadow topics");
                }
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                let Some((shadow, operation)) = shadow_mqtt::request_of(&publish.topic) else { continue };
                route.enqueue(shadow, operation, publish.payload);
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "the broker connection failed; reconnecting");
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
        }
    }
}

impl Route {
    /// Queues a request behind the shadow's earlier ones; the shadow's worker starts with its first request.
    fn enqueue(self: &Arc<Self>, shadow: ShadowKey, operation: Operation, payload: Bytes) {
        let mut requests = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        let queue = requests.entry(shadow.clone()).or_insert_with(|| {
            let (queue, mut next) = mpsc::unbounded_channel();
            let route = self.clone();
            tokio::spawn(async move {
                while let Some((operation, payload)) = next.recv().await {
                    mqtt_request(&route, &shadow, operation, payload).await;
                }
            });
            queue
        });
        let _ = queue.send((operation, payload));
    }
}

/// `%XX` escapes decoded; `None` when they do not make UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            decoded.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            decoded.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(decoded).ok()
}

/// `/things/<thing>/shadow` (+ `?name=<shadow>`) -> the shadow it names.
fn shadow_of(path: &str, query: Option<&str>) -> Option<ShadowKey> {
    let thing = path.strip_prefix("/things/")?.strip_suffix("/shadow")?;
    if thing.is_empty() || thing.contains('/') {
        return None;
    }
    let name = match query.and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("name="))) {
        Some(name) => Some(percent_decode(name)?),
        None => None,
    };
    Some(ShadowKey { thing: percent_decode(thing)?, name })
}

/// A shadow document as `update/documents` carries it: `state` with `desired` and `reported` only (GetThingShadow's
/// `delta` dropped; an absent section stays absent), `metadata` likewise, and `version`.
fn document(shadow: &Value) -> Value {
    let sections = |field: &str| -> Map<String, Value> {
        let Some(Value::Object(all)) = shadow.get(field) else { return Map::new() };
        all.iter()
            .filter(|(k, _)| matches!(k.as_str(), "desired" | "reported"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    let mut document = Map::new();
    document.insert("state".into(), Value::Object(sections("state")));
    document.insert("metadata".into(), Value::Object(sections("metadata")));
    document.insert("version".into(), shadow.get("version").cloned().unwrap_or(Value::Null));
    Value::Object(document)
}

/// The document before an update that moto numbered `version`: `before` if it is the one at `version - 1`, else
/// nothing (the shadow did not exist, or what was known of it is not the document the update replaced).
fn previous_of(before: Option<Value>, version: u64) -> Option<Value> {
    before.filter(|doc| doc.get("version").and_then(Value::as_u64).is_some_and(|v| v.checked_add(1) == Some(version)))
}

/// The `update/documents` event of one update: documents before (if any) and after, as GetThingShadow gave them.
fn documents_event(
    previous: Option<&Value>,
    current: &Value,
    timestamp: Value,
    client_token: Option<Value>,
    topic: String,
    received_at: u64,
) -> Value {
    let mut event = Map::new();
    if let Some(previous) = previous {
        event.insert("previous".into(), document(previous));
    }
    event.insert("current".into(), document(current));
    event.insert("timestamp".into(), timestamp);
    if let Some(token) = client_token {
        event.insert("clientToken".into(), token);
    }
    event.insert("topic".into(), Value::String(topic));
    event.insert("receivedAt".into(), Value::from(received_at));
    Value::Object(event)
}

/// The `delete/accepted` event of one delete, from moto's answer (`{"version": N, "timestamp": S}`).
fn deleted_event(answer: &Value, client_token: Option<Value>, topic: String, received_at: u64) -> Value {
    let mut event = Map::new();
    for field in ["version", "timestamp"] {
        event.insert(field.into(), answer.get(field).cloned().unwrap_or(Value::Null));
    }
    if let Some(token) = client_token {
        event.insert("clientToken".into(), token);
    }
    event.insert("topic".into(), Value::String(topic));
    event.insert("receivedAt".into(), Value::from(received_at));
    Value::Object(event)
}

/// The request's `clientToken`, which AWS echoes in the messages (moto's answers do not).
fn client_token(body: &[u8]) -> Option<Value> {
    serde_json::from_slice::<Value>(body).ok()?.get("clientToken").filter(|t| !t.is_null()).cloned()
}

fn now_millis() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

async fn handle(route: Arc<Route>, parts: Parts, body: Bytes) -> Reply {
    let shadow = shadow_of(parts.uri.path(), parts.uri.query());
    let change = match (&parts.method, shadow) {
        (&Method::POST, Some(shadow)) => Some((true, shadow)),
        (&Method::DELETE, Some(shadow)) => Some((false, shadow)),
        _ => None,
    };
    let Some((is_update, shadow)) = change else {
        // A read of a shadow waits for the changes it arrived after, as the shadow service orders one shadow's
        // requests: a change sent before it (perhaps by a caller that went away) is never read around.
        let _order = match (&parts.method, shadow_of(parts.uri.path(), parts.uri.query())) {
            (&Method::GET, Some(shadow)) => Some(route.known(&shadow).lock_owned().await),
            _ => None,
        };
        let (answer, body) = route.upstream.forward(&parts, body).await;
        return Response::from_parts(answer, Full::new(body));
    };
    // In a task of its own: a caller that goes away (a Lambda timed out mid-request) must not cut a change that
    // moto may already have made off from its messages and its rules' event.
    let task = tokio::spawn(async move {
        if is_update {
            update(&route, &shadow, &parts, body).await
        } else {
            delete(&route, &shadow, &parts, body).await
        }
    });
    match task.await {
        Ok((answer, body)) => Response::from_parts(answer, Full::new(body)),
        Err(e) => crate::http::reply(StatusCode::INTERNAL_SERVER_ERROR, format!("the stand-in failed: {e}")),
    }
}

/// Forwards an update under the shadow's lock; when moto accepts it, publishes `update/accepted`,
/// `update/documents` and `update/delta` and sends the rules their `update/documents` event.
async fn update(
    route: &Route,
    shadow: &ShadowKey,
    parts: &Parts,
    request: Bytes,
) -> (hyper::http::response::Parts, Bytes) {
    let known = route.known(shadow);
    let mut known = known.lock().await;
    let token = client_token(&request);
    let requested_state =
        serde_json::from_slice::<Value>(&request).ok().and_then(|r| r.get("state").cloned()).unwrap_or(Value::Null);
    let before = match known.take() {
        Some(document) => Some(document),
        None => route.read(parts).await.unwrap_or_else(|e| {
            tracing::warn!(?shadow, error = %e, "could not read the shadow before its update: no `previous`");
            None
        }),
    };
    let (answer, body) = route.upstream.forward(parts, request).await;
    if !answer.status.is_success() {
        // moto refused it and changed nothing; what was known still holds (a version check guards it anyway).
        *known = before;
        return (answer, body);
    }
    let accepted = serde_json::from_slice::<Value>(&body).unwrap_or_default();
    let Some(version) = accepted.get("version").and_then(Value::as_u64) else {
        tracing::warn!(?shadow, answer = %String::from_utf8_lossy(&body), "an accepted update without a version: no event");
        return (answer, body);
    };
    let current = match route.read(parts).await {
        Ok(Some(current)) if current.get("version").and_then(Value::as_u64) == Some(version) => current,
        read => {
            // Not readable, or another writer (past this proxy) came between: the document at `version` is gone.
            tracing::warn!(?shadow, version, ?read, "could not read the document the update made: no event");
            return (answer, body);
        }
    };
    let previous = previous_of(before, version);
    let timestamp = accepted.get("timestamp").or_else(|| current.get("timestamp")).cloned().unwrap_or(Value::Null);
    let token_text = token.as_ref().and_then(Value::as_str).map(str::to_owned);
    let event = documents_event(
        previous.as_ref(),
        &current,
        timestamp.clone(),
        token,
        shadow.topic("update/documents"),
        now_millis(),
    );
    if route.broker.is_some() {
        let accepted_message =
            shadow_mqtt::update_accepted(&requested_state, version, &timestamp, token_text.as_deref());
        route.publish(shadow.topic("update/accepted"), accepted_message).await;
        route.publish(shadow.topic("update/documents"), published(&event)).await;
        if shadow_mqtt::sets_desired(&requested_state)
            && let Some(delta) = shadow_mqtt::delta(&current, &timestamp)
        {
            route.publish(shadow.topic("update/delta"), delta).await;
        }
    }
    let _ = route.events.send(event);
    *known = Some(current);
    (answer, body)
}

/// The message as the broker carries it: the rules' event without what the rule's SQL added.
fn published(event: &Value) -> Value {
    let mut message = event.as_object().cloned().unwrap_or_default();
    message.remove("topic");
    message.remove("receivedAt");
    Value::Object(message)
}

/// Forwards a delete under the shadow's lock; when moto accepts it, publishes `delete/accepted` and sends it to the
/// rules.
async fn delete(
    route: &Route,
    shadow: &ShadowKey,
    parts: &Parts,
    request: Bytes,
) -> (hyper::http::response::Parts, Bytes) {
    let known = route.known(shadow);
    let mut known = known.lock().await;
    let token = client_token(&request);
    let (answer, body) = route.upstream.forward(parts, request).await;
    *known = None;
    if answer.status.is_success() {
        let deleted = serde_json::from_slice::<Value>(&body).unwrap_or_default();
        let event = deleted_event(&deleted, token, shadow.topic("delete/accepted"), now_millis());
        route.publish(shadow.topic("delete/accepted"), published(&event)).await;
        let _ = route.events.send(event);
    }
    (answer, body)
}

fn now_seconds() -> u64 {
    now_millis() / 1000
}

/// One request a device published on the shadow's `get`, `update` or `delete` topic, carried out on moto's shadow
/// and answered on `accepted` or `rejected`.
async fn mqtt_request(route: &Route, shadow: &ShadowKey, operation: Operation, payload: Bytes) {
    let token = shadow_mqtt::client_token_of(&payload);
    let rejected_topic = shadow.topic(&format!("{}/rejected", operation.as_str()));
    let reject = |rejection: Rejection| {
        let message = shadow_mqtt::rejected(&rejection, now_seconds(), token.as_deref());
        tracing::info!(thing = %shadow.thing, shadow = ?shadow.name, operation = operation.as_str(), code = rejection.code, "rejected");
        route.publish(rejected_topic.clone(), message)
    };
    let method = match operation {
        Operation::Get => Method::GET,
        Operation::Update => Method::POST,
        Operation::Delete => Method::DELETE,
    };
    let Some(parts) = route.request(method, shadow) else {
        return reject(Rejection::new(500, "Internal service failure")).await;
    };
    match operation {
        Operation::Get => {
            let (answer, body) = route.upstream.get(&parts).await;
            match serde_json::from_slice::<Value>(&body) {
                Ok(document) if answer.status.is_success() => {
                    let message = shadow_mqtt::get_accepted(&document, token.as_deref());
                    route.publish(shadow.topic("get/accepted"), message).await;
                }
                _ => reject(Rejection::from_upstream(answer.status.as_u16(), &body, shadow)).await,
            }
        }
        Operation::Update => {
            if let Err(rejection) = shadow_mqtt::check_update(&payload) {
                return reject(rejection).await;
            }
            let (answer, body) = update(route, shadow, &parts, payload).await;
            if !answer.status.is_success() {
                reject(Rejection::from_upstream(answer.status.as_u16(), &body, shadow)).await;
            }
        }
        Operation::Delete => {
            let (answer, body) = delete(route, shadow, &parts, payload).await;
            if !answer.status.is_success() {
                reject(Rejection::from_upstream(answer.status.as_u16(), &body, shadow)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn key(thing: &str, name: Option<&str>) -> ShadowKey {
        ShadowKey { thing: thing.into(), name: name.map(str::to_owned) }
    }

    #[test]
    fn topics_of_shadow_requests() {
        let named = shadow_of("/things/Test-Device/shadow", Some("name=test1"));
        assert_eq!(named, Some(key("Test-Device", Some("test1"))));
        let named = named.unwrap_or_else(|| key("", None));
        assert_eq!(named.topic("update/documents"), "$aws/things/Test-Device/shadow/name/test1/update/documents");
        assert_eq!(named.topic("delete/accepted"), "$aws/things/Test-Device/shadow/name/test1/delete/accepted");
        let classic = shadow_of("/things/d/shadow", None);
        assert_eq!(classic, Some(key("d", None)));
        let classic = classic.unwrap_or_else(|| key("", Some("")));
        assert_eq!(classic.topic("update/documents"), "$aws/things/d/shadow/update/documents");
        assert_eq!(classic.topic("delete/accepted"), "$aws/things/d/shadow/delete/accepted");
        // The SDK escapes `:` in the query.
        assert_eq!(shadow_of("/things/d:1/shadow", Some("name=a%3Ab")), Some(key("d:1", Some("a:b"))));
        assert_eq!(shadow_of("/api/things/shadow/ListNamedShadowsForThing/d", None), None);
        assert_eq!(shadow_of("/things//shadow", None), None);
        assert_eq!(shadow_of("/things/d/shadow", Some("name=%ZZ")), None);
    }

    #[test]
    fn a_document_keeps_desired_and_reported_and_drops_delta() {
        let got = json!({
            "state": {"desired": {"a": 1, "b": 2}, "reported": {"a": 1}, "delta": {"b": 2}},
            "metadata": {"desired": {"a": {"timestamp": 5}, "b": {"timestamp": 5}}, "reported": {"a": {"timestamp": 5}}},
            "timestamp": 5,
            "version": 3
        });
        assert_eq!(
            document(&got),
            json!({
                "state": {"desired": {"a": 1, "b": 2}, "reported": {"a": 1}},
                "metadata": {"desired": {"a": {"timestamp": 5}, "b": {"timestamp": 5}}, "reported": {"a": {"timestamp": 5}}},
                "version": 3
            })
        );
        // An absent section stays absent; moto's empty document (after `"state": null`) stays empty.
        let only_desired = json!({"state": {"desired": {"x": 1}, "delta": {"x": 1}},
                                  "metadata": {"desired": {"x": {"timestamp": 6}}}, "timestamp": 6, "version": 1});
        assert_eq!(
            document(&only_desired),
            json!({"state": {"desired": {"x": 1}}, "metadata": {"desired": {"x": {"timestamp": 6}}}, "version": 1})
        );
        let empty = json!({"state": {}, "metadata": {}, "timestamp": 7, "version": 4});
        assert_eq!(document(&empty), json!({"state": {}, "metadata": {}, "version": 4}));
    }

    #[test]
    fn previous_is_only_the_document_one_version_below() {
        let at = |version: u64| json!({"state": {"desired": {"v": version}}, "metadata": {}, "version": version});
        assert_eq!(previous_of(Some(at(4)), 5), Some(at(4)));
        assert_eq!(previous_of(Some(at(3)), 5), None, "a write came between");
        assert_eq!(previous_of(Some(at(5)), 5), None);
        assert_eq!(previous_of(Some(at(9)), 1), None, "the shadow was created anew");
        assert_eq!(previous_of(None, 1), None);
        assert_eq!(previous_of(Some(json!({"state": {}})), 1), None, "no version, no previous");
    }

    #[test]
    fn documents_event_as_the_rule_delivers_it() {
        let before = json!({"state": {"desired": {"a": 1}, "delta": {"a": 1}},
                            "metadata": {"desired": {"a": {"timestamp": 10}}}, "timestamp": 10, "version": 1});
        let after = json!({"state": {"desired": {"a": 1}, "reported": {"a": 1}},
                           "metadata": {"desired": {"a": {"timestamp": 11}}, "reported": {"a": {"timestamp": 11}}},
                           "timestamp": 11, "version": 2});
        let topic = key("Test-Device", Some("test1")).topic("update/documents");
        let event = documents_event(Some(&before), &after, json!(11), Some(json!("fw-1")), topic.clone(), 11_007);
        assert_eq!(
            event,
            json!({
                "previous": {"state": {"desired": {"a": 1}}, "metadata": {"desired": {"a": {"timestamp": 10}}}, "version": 1},
                "current": {"state": {"desired": {"a": 1}, "reported": {"a": 1}},
                            "metadata": {"desired": {"a": {"timestamp": 11}}, "reported": {"a": {"timestamp": 11}}},
                            "version": 2},
                "timestamp": 11,
                "clientToken": "fw-1",
                "topic": "$aws/things/Test-Device/shadow/name/test1/update/documents",
                "receivedAt": 11_007
            })
        );
        // shadow-history reads it as a snapshot replacing version 1.
        let record = shadow_core::history::record_from_event(&event, &Default::default()).expect("a valid event");
        assert_eq!(
            (record.kind, record.version, record.previous_version),
            (shadow_core::history::RecordKind::Snapshot, 2, Some(1))
        );

        // A new shadow: no `previous`, and no `clientToken` when the request had none.
        let first = documents_event(None, &before, json!(10), None, topic, 10_001);
        assert_eq!(first.get("previous"), None);
        assert_eq!(first.get("clientToken"), None);
        assert_eq!(first["current"]["state"], json!({"desired": {"a": 1}}));
    }

    #[test]
    fn delete_event_from_motos_answer() {
        let topic = key("d", None).topic("delete/accepted");
        let event = deleted_event(&json!({"timestamp": 20, "version": 4}), None, topic, 20_003);
        assert_eq!(
            event,
            json!({"version": 4, "timestamp": 20, "topic": "$aws/things/d/shadow/delete/accepted", "receivedAt": 20_003})
        );
        let record = shadow_core::history::record_from_event(&event, &Default::default()).expect("a valid event");
        assert_eq!((record.kind, record.version), (shadow_core::history::RecordKind::Delete, 4));
    }

    #[test]
    fn the_client_token_comes_from_the_request() {
        assert_eq!(client_token(br#"{"state": {}, "clientToken": "t"}"#), Some(json!("t")));
        assert_eq!(client_token(br#"{"state": {}, "clientToken": null}"#), None);
        assert_eq!(client_token(br#"{"state": {}}"#), None);
        assert_eq!(client_token(b""), None);
    }
}
