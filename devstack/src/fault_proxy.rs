//! A fault-injecting HTTP proxy for the emulators: it answers a chosen share of requests with the service's own
//! throttling or server error (status, headers and body as AWS sends them, so the SDK classifies them as it would
//! in AWS), delays requests, and forwards the rest unchanged.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::http::request::Parts;
use hyper::{Response, StatusCode};
use rand::Rng;

use crate::http::{Reply, Server, Upstream, serve};

/// Which service's error shapes to answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// awsJson1.0: HTTP 400 with `__type` ThrottlingException; 500 InternalServerError.
    DynamoDb,
    /// restJson1: HTTP 429 ThrottlingException; 503 ServiceUnavailableException; 500 InternalFailureException.
    IotDataPlane,
    /// Lambda's Invoke: HTTP 429 TooManyRequestsException (reserved concurrency reached); 503 and 500
    /// ServiceException.
    Lambda,
}

/// What share of requests gets which fault. Shares are fractions of all requests, drawn independently per request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Faults {
    pub throttle: f64,
    pub unavailable: f64,
    pub internal: f64,
    /// Added before every forwarded request.
    pub delay: Duration,
}

impl Faults {
    pub fn throttling(share: f64) -> Self {
        Self { throttle: share, ..Self::none() }
    }

    pub fn none() -> Self {
        Self { throttle: 0.0, unavailable: 0.0, internal: 0.0, delay: Duration::ZERO }
    }
}

/// What the proxy did so far.
#[derive(Debug, Default)]
pub struct Counts {
    pub forwarded: AtomicU64,
    pub throttled: AtomicU64,
    pub unavailable: AtomicU64,
    pub internal: AtomicU64,
}

impl Counts {
    pub fn forwarded(&self) -> u64 {
        self.forwarded.load(Ordering::Relaxed)
    }
    pub fn throttled(&self) -> u64 {
        self.throttled.load(Ordering::Relaxed)
    }
    pub fn server_errors(&self) -> u64 {
        self.unavailable.load(Ordering::Relaxed) + self.internal.load(Ordering::Relaxed)
    }
}

pub struct FaultProxy {
    pub url: String,
    pub counts: Arc<Counts>,
    _server: Server,
}

struct Route {
    upstream: Upstream,
    service: Service,
    faults: Faults,
    counts: Arc<Counts>,
}

impl FaultProxy {
    /// Listens on a free loopback port and forwards to `upstream` (`http://127.0.0.1:port`).
    pub async fn start(upstream: &str, service: Service, faults: Faults) -> Self {
        let counts = Arc::new(Counts::default());
        let route = Arc::new(Route { upstream: Upstream::new(upstream), service, faults, counts: counts.clone() });
        let server = serve(move |parts, body| handle(route.clone(), parts, body)).await;
        Self { url: server.url(), counts, _server: server }
    }
}

enum Fault {
    Throttle,
    Unavailable,
    Internal,
}

fn draw(faults: &Faults) -> Option<Fault> {
    let x: f64 = rand::rng().random();
    if x < faults.throttle {
        Some(Fault::Throttle)
    } else if x < faults.throttle + faults.unavailable {
        Some(Fault::Unavailable)
    } else if x < faults.throttle + faults.unavailable + faults.internal {
        Some(Fault::Internal)
    } else {
        None
    }
}

/// The service's own throttling answer (status, headers and body as AWS sends them).
pub fn throttling_response(service: Service) -> Reply {
    fault_response(service, &Fault::Throttle)
}

/// The service's own answer for `fault`.
fn fault_response(service: Service, fault: &Fault) -> Reply {
    let request_id = uuid::Uuid::new_v4().to_string();
    let (status, content_type, error_type, body) = match (service, fault) {
        (Service::DynamoDb, Fault::Throttle) => (
            StatusCode::BAD_REQUEST,
            "application/x-amz-json-1.0",
            None,
            r#"{"__type":"com.amazonaws.dynamodb.v20120810#ThrottlingException","message":"Rate of requests exceeds the allowed throughput."}"#,
        ),
        (Service::DynamoDb, Fault::Unavailable) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "application/x-amz-json-1.0",
            None,
            r#"{"__type":"com.amazon.coral.availability#ServiceUnavailableException","message":"Service Unavailable"}"#,
        ),
        (Service::DynamoDb, Fault::Internal) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "application/x-amz-json-1.0",
            None,
            r#"{"__type":"com.amazonaws.dynamodb.v20120810#InternalServerError","message":"Internal server error"}"#,
        ),
        (Service::IotDataPlane, Fault::Throttle) => (
            StatusCode::TOO_MANY_REQUESTS,
            "application/json",
            Some("ThrottlingException"),
            r#"{"message":"Rate exceeded"}"#,
        ),
        (Service::IotDataPlane, Fault::Unavailable) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "application/json",
            Some("ServiceUnavailableException"),
            r#"{"message":"Service Unavailable"}"#,
        ),
        (Service::IotDataPlane, Fault::Internal) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "application/json",
            Some("InternalFailureException"),
            r#"{"message":"Internal Failure"}"#,
        ),
        (Service::Lambda, Fault::Throttle) => (
            StatusCode::TOO_MANY_REQUESTS,
            "application/json",
            Some("TooManyRequestsException"),
            r#"{"Reason":"ReservedFunctionConcurrentInvocationLimitExceeded","Type":"User","message":"Rate Exceeded."}"#,
        ),
        (Service::Lambda, Fault::Unavailable) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "application/json",
            Some("ServiceException"),
            r#"{"Type":"Service","message":"Service Unavailable"}"#,
        ),
        (Service::Lambda, Fault::Internal) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "application/json",
            Some("ServiceException"),
            r#"{"Type":"Service","message":"Internal Failure"}"#,
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert("content-type", hyper::header::HeaderValue::from_static(content_type));
    if let Ok(id) = request_id.parse() {
        headers.insert("x-amzn-requestid", id);
    }
    if let Some(error_type) = error_type {
        headers.insert("x-amzn-errortype", hyper::header::HeaderValue::from_static(error_type));
    }
    response
}

async fn handle(route: Arc<Route>, parts: Parts, body: Bytes) -> Reply {
    if let Some(fault) = draw(&route.faults) {
        let counter = match fault {
            Fault::Throttle => &route.counts.throttled,
            Fault::Unavailable => &route.counts.unavailable,
            Fault::Internal => &route.counts.internal,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        return fault_response(route.service, &fault);
    }
    if !route.faults.delay.is_zero() {
        tokio::time::sleep(route.faults.delay).await;
    }
    let (answer, body) = route.upstream.forward(&parts, body).await;
    if answer.status != StatusCode::BAD_GATEWAY {
        route.counts.forwarded.fetch_add(1, Ordering::Relaxed);
    }
    Response::from_parts(answer, Full::new(body))
}
