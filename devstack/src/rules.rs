//! A local stand-in for the IoT rules engine. moto has no MQTT broker, so nothing publishes `update/accepted`:
//! this proxy sits in front of moto's data plane, and for every accepted `UpdateThingShadow` it builds the event the
//! rule `SELECT *, topic() AS topic, timestamp() AS receivedAt` would deliver (the accepted document, the request's
//! `clientToken`, the topic and the receive time) and hands it to a channel, as the rule's Lambda action would.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::Full;
use hyper::http::request::Parts;
use hyper::{Method, Response};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::http::{Reply, Server, Upstream, serve, serve_at};

pub struct RulesEngine {
    pub url: String,
    _server: Server,
}

struct Route {
    upstream: Upstream,
    events: mpsc::UnboundedSender<Value>,
}

impl RulesEngine {
    /// Proxies to the data plane at `upstream`; accepted updates arrive on the returned receiver.
    pub async fn start(upstream: &str) -> (Self, mpsc::UnboundedReceiver<Value>) {
        let (events, receiver) = mpsc::unbounded_channel();
        let route = Arc::new(Route { upstream: Upstream::new(upstream), events });
        let server = serve(move |parts, body| handle(route.clone(), parts, body)).await;
        (Self { url: server.url(), _server: server }, receiver)
    }

    /// As [`RulesEngine::start`], on a fixed address (the long-running local stack's data-plane endpoint).
    pub async fn start_at(addr: SocketAddr, upstream: &str) -> std::io::Result<(Self, mpsc::UnboundedReceiver<Value>)> {
        let (events, receiver) = mpsc::unbounded_channel();
        let route = Arc::new(Route { upstream: Upstream::new(upstream), events });
        let server = serve_at(addr, move |parts, body| handle(route.clone(), parts, body)).await?;
        Ok((Self { url: server.url(), _server: server }, receiver))
    }
}

/// `/things/<thing>/shadow` (+ `?name=<shadow>`) -> the `update/accepted` topic.
fn accepted_topic(path: &str, query: Option<&str>) -> Option<String> {
    let thing = path.strip_prefix("/things/")?.strip_suffix("/shadow")?;
    let shadow = query.and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("name=")));
    Some(match shadow {
        Some(name) => format!("$aws/things/{thing}/shadow/name/{name}/update/accepted"),
        None => format!("$aws/things/{thing}/shadow/update/accepted"),
    })
}

async fn handle(route: Arc<Route>, parts: Parts, body: Bytes) -> Reply {
    let topic = (parts.method == Method::POST).then(|| accepted_topic(parts.uri.path(), parts.uri.query())).flatten();
    let client_token = serde_json::from_slice::<Value>(&body).ok().and_then(|b| b.get("clientToken").cloned());
    let (answer, body) = route.upstream.forward(&parts, body).await;
    if let (Some(topic), true) = (topic, answer.status.is_success())
        && let Ok(Value::Object(mut accepted)) = serde_json::from_slice::<Value>(&body)
    {
        // AWS echoes the request's clientToken in update/accepted; moto's answer does not.
        if let Some(token) = client_token {
            accepted.entry("clientToken").or_insert(token);
        }
        accepted.insert("topic".into(), Value::String(topic));
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        accepted.insert("receivedAt".into(), Value::from(now));
        let _ = route.events.send(Value::Object(accepted));
    }
    Response::from_parts(answer, Full::new(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_of_update_requests() {
        assert_eq!(
            accepted_topic("/things/Test-Device/shadow", Some("name=test1")).as_deref(),
            Some("$aws/things/Test-Device/shadow/name/test1/update/accepted")
        );
        assert_eq!(accepted_topic("/things/d/shadow", None).as_deref(), Some("$aws/things/d/shadow/update/accepted"));
        assert_eq!(accepted_topic("/api/things/shadow/ListNamedShadowsForThing/d", None), None);
    }
}
