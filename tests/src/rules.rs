//! A local stand-in for the IoT rules engine. moto has no MQTT broker, so nothing publishes `update/accepted`:
//! this proxy sits in front of moto's data plane, and for every accepted `UpdateThingShadow` it builds the event the
//! rule `SELECT *, topic() AS topic, timestamp() AS receivedAt` would deliver (the accepted document, the request's
//! `clientToken`, the topic and the receive time) and hands it to a channel, as the rule's Lambda action would.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, Response, StatusCode, body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

pub struct RulesEngine {
    pub url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RulesEngine {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Route {
    upstream: String,
    client: Client<HttpConnector, Full<Bytes>>,
    events: mpsc::UnboundedSender<Value>,
}

impl RulesEngine {
    /// Proxies to the data plane at `upstream`; accepted updates arrive on the returned receiver.
    pub async fn start(upstream: &str) -> (Self, mpsc::UnboundedReceiver<Value>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("bind: {e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("local_addr: {e}"));
        let (events, receiver) = mpsc::unbounded_channel();
        let route = Arc::new(Route {
            upstream: upstream.trim_end_matches('/').to_owned(),
            client: Client::builder(TokioExecutor::new()).build_http(),
            events,
        });
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let route = route.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| handle(route.clone(), req));
                    let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                });
            }
        });
        (Self { url: format!("http://{addr}"), task }, receiver)
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

async fn handle(route: Arc<Route>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let topic = (parts.method == Method::POST).then(|| accepted_topic(parts.uri.path(), parts.uri.query())).flatten();
    let client_token = serde_json::from_slice::<Value>(&body).ok().and_then(|b| b.get("clientToken").cloned());
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut forward = Request::builder().method(parts.method.clone()).uri(format!("{}{path}", route.upstream));
    for (name, value) in &parts.headers {
        forward = forward.header(name, value);
    }
    let Ok(forward) = forward.body(Full::new(body)) else {
        return Ok(Response::new(Full::new(Bytes::from_static(b"bad request"))));
    };
    let response = match route.client.request(forward).await {
        Ok(response) => response,
        Err(e) => {
            let mut r = Response::new(Full::new(Bytes::from(format!("rules stand-in: upstream failed: {e}"))));
            *r.status_mut() = StatusCode::BAD_GATEWAY;
            return Ok(r);
        }
    };
    let (parts, body) = response.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    if let (Some(topic), true) = (topic, parts.status.is_success())
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
    Ok(Response::from_parts(parts, Full::new(body)))
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
