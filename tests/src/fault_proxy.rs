//! A fault-injecting HTTP proxy for the emulators: it answers a chosen share of requests with the service's own
//! throttling or server error (status, headers and body as AWS sends them, so the SDK classifies them as it would
//! in AWS), delays requests, and forwards the rest unchanged.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode, body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rand::Rng;
use tokio::net::TcpListener;

/// Which service's error shapes to answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// awsJson1.0: HTTP 400 with `__type` ThrottlingException; 500 InternalServerError.
    DynamoDb,
    /// restJson1: HTTP 429 ThrottlingException; 503 ServiceUnavailableException; 500 InternalFailureException.
    IotDataPlane,
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
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Route {
    upstream: String,
    service: Service,
    faults: Faults,
    counts: Arc<Counts>,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl FaultProxy {
    /// Listens on a free loopback port and forwards to `upstream` (`http://127.0.0.1:port`).
    pub async fn start(upstream: &str, service: Service, faults: Faults) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("bind: {e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("local_addr: {e}"));
        let counts = Arc::new(Counts::default());
        let route = Arc::new(Route {
            upstream: upstream.trim_end_matches('/').to_owned(),
            service,
            faults,
            counts: counts.clone(),
            client: Client::builder(TokioExecutor::new()).build_http(),
        });
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let route = route.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| handle(route.clone(), req));
                    let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                });
            }
        });
        Self { url: format!("http://{addr}"), counts, task }
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

/// The service's own answer for `fault`.
fn fault_response(service: Service, fault: &Fault) -> Response<Full<Bytes>> {
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

async fn handle(route: Arc<Route>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    if let Some(fault) = draw(&route.faults) {
        let counter = match fault {
            Fault::Throttle => &route.counts.throttled,
            Fault::Unavailable => &route.counts.unavailable,
            Fault::Internal => &route.counts.internal,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        return Ok(fault_response(route.service, &fault));
    }
    if !route.faults.delay.is_zero() {
        tokio::time::sleep(route.faults.delay).await;
    }
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let uri = format!("{}{}", route.upstream, path);
    let mut forward = Request::builder().method(parts.method).uri(uri);
    for (name, value) in &parts.headers {
        forward = forward.header(name, value);
    }
    let Ok(forward) = forward.body(Full::new(body)) else {
        return Ok(plain(StatusCode::BAD_GATEWAY, "fault proxy: bad request"));
    };
    match route.client.request(forward).await {
        Ok(response) => {
            route.counts.forwarded.fetch_add(1, Ordering::Relaxed);
            let (parts, body) = response.into_parts();
            let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            Ok(Response::from_parts(parts, Full::new(body)))
        }
        Err(e) => Ok(plain(StatusCode::BAD_GATEWAY, format!("fault proxy: upstream failed: {e}"))),
    }
}

fn plain(status: StatusCode, text: impl Into<String>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(text.into())));
    *response.status_mut() = status;
    response
}
