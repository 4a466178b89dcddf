//! A registry stand-in in front of moto's IoT endpoint that pages `ListThingsInThingGroup` as AWS does and lets its
//! page tokens expire. moto answers every member of a group in one page, with no `nextToken`, so a push on the local
//! stack never keeps a token across segments; AWS pages by at most 250 and documents no lifetime for its tokens. The
//! front asks moto for the whole list, answers pages of at most `page` things (fewer when `maxResults` says so),
//! and refuses a token older than `lifetime`, or one it never issued, with `InvalidRequestException` (HTTP 400, the
//! only client error ListThingsInThingGroup documents besides throttling). Every other request passes unchanged.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::http::request::Parts;
use hyper::{Method, Response, StatusCode, Uri};
use serde_json::{Value, json};

use crate::http::{Reply, Server, Upstream, serve};

/// What the front did so far.
#[derive(Debug, Default)]
pub struct TokenCounts {
    issued: AtomicU64,
    refused: AtomicU64,
}

impl TokenCounts {
    /// Page tokens handed out.
    pub fn issued(&self) -> u64 {
        self.issued.load(Ordering::Relaxed)
    }

    /// Page tokens refused (expired or never issued).
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

struct Front {
    upstream: Upstream,
    page: usize,
    lifetime: Duration,
    started: Instant,
    counts: Arc<TokenCounts>,
}

/// The front: its URL (the IoT endpoint to give callers) and its counts.
pub struct RegistryFront {
    pub url: String,
    pub counts: Arc<TokenCounts>,
    _server: Server,
}

impl RegistryFront {
    /// Listens on a free loopback port in front of `upstream` (moto, `http://127.0.0.1:port`): pages of at most
    /// `page` things, tokens good for `lifetime`.
    pub async fn start(upstream: &str, page: usize, lifetime: Duration) -> Self {
        let counts = Arc::new(TokenCounts::default());
        let front = Arc::new(Front {
            upstream: Upstream::new(upstream),
            page: page.max(1),
            lifetime,
            started: Instant::now(),
            counts: counts.clone(),
        });
        let server = serve(move |parts, body| handle(front.clone(), parts, body)).await;
        Self { url: server.url(), counts, _server: server }
    }
}

/// `GET /thing-groups/{name}/things` is ListThingsInThingGroup.
fn lists_group(method: &Method, path: &str) -> bool {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    *method == Method::GET && matches!(parts.as_slice(), ["thing-groups", name, "things"] if !name.is_empty())
}

/// A token: where the next page starts, and when it was issued (ms since the front started).
fn token(offset: usize, issued_ms: u128) -> String {
    format!("page-{offset}-{issued_ms}")
}

fn read_token(token: &str) -> Option<(usize, u128)> {
    let rest = token.strip_prefix("page-")?;
    let (offset, issued) = rest.split_once('-')?;
    Some((offset.parse().ok()?, issued.parse().ok()?))
}

fn invalid_token(token: &str) -> Reply {
    let body = json!({"message": format!("The nextToken {token} is invalid or has expired.")}).to_string();
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = StatusCode::BAD_REQUEST;
    let headers = response.headers_mut();
    headers.insert("content-type", hyper::header::HeaderValue::from_static("application/json"));
    headers.insert("x-amzn-errortype", hyper::header::HeaderValue::from_static("InvalidRequestException"));
    if let Ok(id) = uuid::Uuid::new_v4().to_string().parse() {
        headers.insert("x-amzn-requestid", id);
    }
    response
}

async fn handle(front: Arc<Front>, parts: Parts, body: Bytes) -> Reply {
    if !lists_group(&parts.method, parts.uri.path()) {
        let (answer, body) = front.upstream.forward(&parts, body).await;
        return Response::from_parts(answer, Full::new(body));
    }
    // Its parameters need no decoding: a group name, a number, a boolean, and the front's own tokens (a token in
    // another shape is refused anyway).
    let query: Vec<(String, String)> = parts
        .uri
        .query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|pair| pair.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect();
    let param = |name: &str| query.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let now_ms = front.started.elapsed().as_millis();
    let offset = match param("nextToken") {
        None => 0,
        Some(t) => match read_token(&t) {
            Some((offset, issued)) if now_ms.saturating_sub(issued) <= front.lifetime.as_millis() => offset,
            _ => {
                front.counts.refused.fetch_add(1, Ordering::Relaxed);
                return invalid_token(&t);
            }
        },
    };
    let page = param("maxResults").and_then(|m| m.parse::<usize>().ok()).unwrap_or(front.page).clamp(1, front.page);
    // The whole list from moto, then this page of it.
    let rest: Vec<(String, String)> =
        query.iter().filter(|(k, _)| k != "nextToken" && k != "maxResults").cloned().collect();
    let mut whole = parts.clone();
    let encoded = rest.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&");
    let path_and_query =
        if encoded.is_empty() { parts.uri.path().to_owned() } else { format!("{}?{encoded}", parts.uri.path()) };
    whole.uri = path_and_query.parse::<Uri>().unwrap_or_else(|_| parts.uri.clone());
    let (answer, body) = front.upstream.forward(&whole, body).await;
    if !answer.status.is_success() {
        return Response::from_parts(answer, Full::new(body));
    }
    let listed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let things: Vec<Value> = listed["things"].as_array().cloned().unwrap_or_default();
    let end = (offset + page).min(things.len());
    let next = (end < things.len()).then(|| {
        front.counts.issued.fetch_add(1, Ordering::Relaxed);
        token(end, now_ms)
    });
    let body = json!({"things": things.get(offset.min(end)..end).unwrap_or_default(), "nextToken": next}).to_string();
    let mut answer = answer;
    answer.headers.remove(hyper::header::CONTENT_LENGTH);
    Response::from_parts(answer, Full::new(Bytes::from(body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_listings_are_told_apart_and_tokens_read_back() {
        assert!(lists_group(&Method::GET, "/thing-groups/prod/things"));
        assert!(!lists_group(&Method::GET, "/thing-groups/prod"));
        assert!(!lists_group(&Method::POST, "/thing-groups/prod/things"));
        assert!(!lists_group(&Method::GET, "/thing-groups//things"));
        assert_eq!(read_token(&token(250, 1234)), Some((250, 1234)));
        assert_eq!(read_token("somebody-else's"), None);
    }
}
