//! An account-wide quota in front of the IoT data plane: moto enforces none, AWS one per shadow API and account.
//! Every caller's `UpdateThingShadow` requests share one token bucket of `updates` per second, and `GetThingShadow`
//! requests one of `reads` per second; a request that finds its bucket empty is answered 429 `ThrottlingException`
//! as AWS answers it (see [`crate::fault_proxy::throttling_response`]) and never reaches moto. Other requests pass.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::Full;
use hyper::http::request::Parts;
use hyper::{Method, Response};

use crate::fault_proxy::{Service, throttling_response};
use crate::http::{Reply, Server, Upstream, serve};

/// A token bucket: `rate` tokens a second, at most `capacity` saved up; it starts full.
#[derive(Debug)]
struct Bucket {
    rate: f64,
    capacity: f64,
    state: Mutex<(f64, Instant)>,
}

impl Bucket {
    fn new(rate: f64, capacity: f64) -> Self {
        Self { rate, capacity, state: Mutex::new((capacity, Instant::now())) }
    }

    /// Takes a token if there is one.
    fn admit(&self) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let (tokens, last) = *state;
        let tokens = (tokens + now.duration_since(last).as_secs_f64() * self.rate).min(self.capacity);
        let (tokens, admitted) = if tokens >= 1.0 { (tokens - 1.0, true) } else { (tokens, false) };
        *state = (tokens, now);
        admitted
    }
}

/// What one shadow API's bucket did so far.
#[derive(Debug, Default)]
pub struct Admissions {
    admitted: AtomicU64,
    refused: AtomicU64,
}

impl Admissions {
    pub fn admitted(&self) -> u64 {
        self.admitted.load(Ordering::Relaxed)
    }

    /// Answered 429.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// The share of requests answered 429 (0 when none came).
    pub fn refused_share(&self) -> f64 {
        let (admitted, refused) = (self.admitted(), self.refused());
        if admitted + refused == 0 { 0.0 } else { refused as f64 / (admitted + refused) as f64 }
    }
}

/// The account's quotas, per second: `UpdateThingShadow` and `GetThingShadow`, each with the burst it allows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quotas {
    pub updates: f64,
    pub reads: f64,
    /// How many requests a bucket saves up, as seconds of its rate (at least one request).
    pub burst_s: f64,
}

impl Quotas {
    /// `updates` and `reads` per second, with a tenth of a second's burst.
    pub fn new(updates: f64, reads: f64) -> Self {
        Self { updates, reads, burst_s: 0.1 }
    }
}

/// The shadow API a request calls, when it is one the quotas limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Api {
    Update,
    Get,
}

/// `POST /things/{thing}/shadow` is UpdateThingShadow, `GET` the same path GetThingShadow (the IoT data plane's
/// restJson1 routes; a named shadow adds `?name=`).
fn api(method: &Method, path: &str) -> Option<Api> {
    let path = path.split('?').next().unwrap_or(path);
    let mut parts = path.trim_start_matches('/').split('/');
    let shadow = matches!((parts.next(), parts.next(), parts.next(), parts.next()), (Some("things"), Some(t), Some("shadow"), None) if !t.is_empty());
    match *method {
        Method::POST if shadow => Some(Api::Update),
        Method::GET if shadow => Some(Api::Get),
        _ => None,
    }
}

struct Front {
    upstream: Upstream,
    updates: Bucket,
    reads: Bucket,
    counts: Arc<FrontCounts>,
}

/// What the front did so far, per API.
#[derive(Debug, Default)]
pub struct FrontCounts {
    pub updates: Admissions,
    pub reads: Admissions,
}

impl FrontCounts {
    /// Shadow requests (updates and reads) answered 429, as a share of all shadow requests.
    pub fn refused_share(&self) -> f64 {
        let refused = self.updates.refused() + self.reads.refused();
        let all = refused + self.updates.admitted() + self.reads.admitted();
        if all == 0 { 0.0 } else { refused as f64 / all as f64 }
    }
}

/// The quota front: its URL (the data plane endpoint to give callers) and its counts.
pub struct QuotaFront {
    pub url: String,
    pub counts: Arc<FrontCounts>,
    _server: Server,
}

impl QuotaFront {
    /// Listens on a free loopback port in front of `upstream` (the data plane, `http://127.0.0.1:port`).
    pub async fn start(upstream: &str, quotas: Quotas) -> Self {
        let counts = Arc::new(FrontCounts::default());
        let bucket = |rate: f64| Bucket::new(rate, (rate * quotas.burst_s).max(1.0));
        let front = Arc::new(Front {
            upstream: Upstream::new(upstream),
            updates: bucket(quotas.updates),
            reads: bucket(quotas.reads),
            counts: counts.clone(),
        });
        let server = serve(move |parts, body| handle(front.clone(), parts, body)).await;
        Self { url: server.url(), counts, _server: server }
    }
}

async fn handle(front: Arc<Front>, parts: Parts, body: Bytes) -> Reply {
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let limited = match api(&parts.method, path) {
        Some(Api::Update) => Some((&front.updates, &front.counts.updates)),
        Some(Api::Get) => Some((&front.reads, &front.counts.reads)),
        None => None,
    };
    if let Some((bucket, counts)) = limited {
        if !bucket.admit() {
            counts.refused.fetch_add(1, Ordering::Relaxed);
            return throttling_response(Service::IotDataPlane);
        }
        counts.admitted.fetch_add(1, Ordering::Relaxed);
    }
    let (answer, body) = front.upstream.forward(&parts, body).await;
    Response::from_parts(answer, Full::new(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shadow_apis_are_told_apart() {
        assert_eq!(api(&Method::POST, "/things/t-1/shadow"), Some(Api::Update));
        assert_eq!(api(&Method::POST, "/things/t-1/shadow?name=config"), Some(Api::Update));
        assert_eq!(api(&Method::GET, "/things/t-1/shadow?name=config"), Some(Api::Get));
        assert_eq!(api(&Method::DELETE, "/things/t-1/shadow"), None);
        assert_eq!(api(&Method::GET, "/api/things/shadow/ListNamedShadowsForThing/t-1"), None);
        assert_eq!(api(&Method::POST, "/topics/a%2Fb"), None);
        assert_eq!(api(&Method::POST, "/things//shadow"), None);
    }

    #[test]
    fn a_bucket_admits_its_burst_then_its_rate() {
        let bucket = Bucket::new(100.0, 10.0);
        let at_once = (0..50).filter(|_| bucket.admit()).count();
        assert!((10..=11).contains(&at_once), "{at_once} admitted at once from a bucket of 10");
        std::thread::sleep(std::time::Duration::from_millis(200));
        // 0.2 s at 100/s refills the 10 it holds at most.
        let later = (0..50).filter(|_| bucket.admit()).count();
        assert!((10..=11).contains(&later), "{later} admitted after 0.2 s");
    }
}
