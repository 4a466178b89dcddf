//! A fast stand-in for the IoT data plane (Get/UpdateThingShadow) and for ListThingsInThingGroup, for push
//! throughput. It answers after a configurable latency, enforces an account-wide token bucket and AWS's limit of
//! 20 requests per second per thing, answers the excess with the data plane's own 429 ThrottlingException, and
//! counts what it accepted.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use devstack::http::{Reply, Server, reply, serve};
use hyper::http::request::Parts;
use hyper::{Method, StatusCode};
use serde_json::{Value, json};

pub const PER_THING_PER_SECOND: u32 = 20;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub requests_per_second: f64,
    /// The bucket's capacity: how many requests may come at once after a quiet spell.
    pub burst: f64,
    pub latency: Duration,
    /// GetThingShadow's own rate (AWS sets each shadow API's quota apart); `None`: reads share the one above.
    pub reads_per_second: Option<f64>,
}

#[derive(Debug, Default)]
pub struct Counts {
    pub accepted: AtomicU64,
    pub throttled: AtomicU64,
    pub updates: AtomicU64,
    /// GetThingShadow requests accepted.
    pub reads: AtomicU64,
    /// ListThingsInThingGroup pages served (registry operations).
    pub listings: AtomicU64,
    /// Accepted shadow requests as AWS meters them: one operation per started KB of the document.
    pub metered: AtomicU64,
}

/// Shadow operations a request or answer of `bytes` is metered as (per started KB, at least one).
fn metered(bytes: usize) -> u64 {
    (bytes as u64).div_ceil(1024).max(1)
}

struct Bucket {
    tokens: f64,
    last: Instant,
}

struct State {
    limits: Limits,
    bucket: Mutex<Bucket>,
    read_bucket: Mutex<Bucket>,
    /// Per thing: the start of its current one-second window and the requests in it.
    per_thing: Mutex<HashMap<String, (Instant, u32)>>,
    /// Per thing: the shadow's version and desired section.
    shadows: Mutex<HashMap<String, (u64, Value)>>,
    group: (String, String, usize),
    counts: Arc<Counts>,
}

pub struct StandIn {
    pub url: String,
    pub counts: Arc<Counts>,
    _server: Server,
}

impl StandIn {
    /// Serves a thing group `group` of `size` things named `<prefix><i:06>`.
    pub async fn start(limits: Limits, group: &str, prefix: &str, size: usize) -> Self {
        let counts = Arc::new(Counts::default());
        let state = Arc::new(State {
            limits,
            bucket: Mutex::new(Bucket { tokens: limits.burst, last: Instant::now() }),
            read_bucket: Mutex::new(Bucket { tokens: limits.burst, last: Instant::now() }),
            per_thing: Mutex::new(HashMap::new()),
            shadows: Mutex::new(HashMap::new()),
            group: (group.to_owned(), prefix.to_owned(), size),
            counts: counts.clone(),
        });
        let server = serve(move |parts, body| handle(state.clone(), parts, body)).await;
        Self { url: server.url(), counts, _server: server }
    }
}

fn json_response(status: StatusCode, body: &Value, error_type: Option<&'static str>) -> Reply {
    let mut response = reply(status, body.to_string());
    let headers = response.headers_mut();
    headers.insert("content-type", hyper::header::HeaderValue::from_static("application/json"));
    if let Some(error_type) = error_type {
        headers.insert("x-amzn-errortype", hyper::header::HeaderValue::from_static(error_type));
    }
    response
}

impl State {
    fn admit(&self, thing: &str, read: bool) -> bool {
        let now = Instant::now();
        {
            let Ok(mut per_thing) = self.per_thing.lock() else { return false };
            let window = per_thing.entry(thing.to_owned()).or_insert((now, 0));
            if now.duration_since(window.0) >= Duration::from_secs(1) {
                *window = (now, 0);
            }
            if window.1 >= PER_THING_PER_SECOND {
                return false;
            }
            window.1 += 1;
        }
        let (bucket, rate) = match self.limits.reads_per_second {
            Some(rate) if read => (&self.read_bucket, rate),
            _ => (&self.bucket, self.limits.requests_per_second),
        };
        let Ok(mut bucket) = bucket.lock() else { return false };
        let refill = now.duration_since(bucket.last).as_secs_f64() * rate;
        bucket.tokens = (bucket.tokens + refill).min(self.limits.burst);
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

async fn handle(state: Arc<State>, parts: Parts, body: Bytes) -> Reply {
    let method = parts.method;
    let path = parts.uri.path();
    let query = parts.uri.query().unwrap_or_default();
    let param = |name: &str| query.split('&').find_map(|kv| kv.strip_prefix(&format!("{name}=")).map(str::to_owned));

    if let Some(group) = path.strip_prefix("/thing-groups/").and_then(|p| p.strip_suffix("/things")) {
        let (name, prefix, size) = &state.group;
        if group != name {
            let body = json!({"message": format!("{group} not found")});
            return json_response(StatusCode::NOT_FOUND, &body, Some("ResourceNotFoundException"));
        }
        let start: usize = param("nextToken").and_then(|t| t.parse().ok()).unwrap_or(0);
        let page: usize = param("maxResults").and_then(|m| m.parse().ok()).unwrap_or(25);
        let end = (start + page).min(*size);
        let things: Vec<String> = (start..end).map(|i| format!("{prefix}{i:06}")).collect();
        let mut body = json!({"things": things});
        if end < *size {
            body["nextToken"] = json!(end.to_string());
        }
        state.counts.listings.fetch_add(1, Ordering::Relaxed);
        return json_response(StatusCode::OK, &body, None);
    }

    let Some(thing) = path.strip_prefix("/things/").and_then(|p| p.strip_suffix("/shadow")) else {
        return json_response(StatusCode::NOT_FOUND, &json!({"message": "unknown path"}), None);
    };
    tokio::time::sleep(state.limits.latency).await;
    if !state.admit(thing, method == Method::GET) {
        state.counts.throttled.fetch_add(1, Ordering::Relaxed);
        return json_response(
            StatusCode::TOO_MANY_REQUESTS,
            &json!({"message": "Rate exceeded"}),
            Some("ThrottlingException"),
        );
    }
    state.counts.accepted.fetch_add(1, Ordering::Relaxed);
    let key = format!("{thing}/{}", param("name").unwrap_or_default());
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    match method {
        Method::GET => {
            state.counts.reads.fetch_add(1, Ordering::Relaxed);
            let shadow = state.shadows.lock().ok().and_then(|s| s.get(&key).cloned());
            match shadow {
                Some((version, desired)) => {
                    let document =
                        json!({"state": {"desired": desired}, "metadata": {}, "version": version, "timestamp": now});
                    state.counts.metered.fetch_add(metered(document.to_string().len()), Ordering::Relaxed);
                    json_response(StatusCode::OK, &document, None)
                }
                None => {
                    state.counts.metered.fetch_add(1, Ordering::Relaxed);
                    json_response(
                        StatusCode::NOT_FOUND,
                        &json!({"message": format!("No shadow exists with name: '{key}'")}),
                        Some("ResourceNotFoundException"),
                    )
                }
            }
        }
        Method::POST => {
            let update: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let desired = update["state"]["desired"].clone();
            let version = {
                let Ok(mut shadows) = state.shadows.lock() else {
                    return json_response(StatusCode::INTERNAL_SERVER_ERROR, &json!({}), None);
                };
                let entry = shadows.entry(key).or_insert((0, json!({})));
                entry.0 += 1;
                entry.1 = desired.clone();
                entry.0
            };
            state.counts.updates.fetch_add(1, Ordering::Relaxed);
            state.counts.metered.fetch_add(metered(body.len()), Ordering::Relaxed);
            let accepted = json!({"state": {"desired": desired}, "metadata": {}, "version": version, "timestamp": now,
                                  "clientToken": update["clientToken"]});
            json_response(StatusCode::OK, &accepted, None)
        }
        _ => json_response(StatusCode::METHOD_NOT_ALLOWED, &json!({"message": "method"}), None),
    }
}
