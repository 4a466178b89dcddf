//! A local Lambda service: the Invoke API (`POST /2015-03-31/functions/{FunctionName}/invocations`) in front of
//! the real function binaries, each run under its own Runtime API ([`crate::lambda::LocalLambda`]), with what
//! Lambda does around them ([`crate::service::LambdaService`]): asynchronous invocations retried twice, an SQS
//! queue drained into a function as an event source mapping drains it, and a schedule.
//!
//! `make stack-up` runs it as the `local-lambda` binary (the `AWS_ENDPOINT_URL_LAMBDA` of `.local/stack.env`); tests
//! start their own with scaled-down timings. The AWS SDK for Rust and the AWS CLI talk to it unchanged.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::http::request::Parts;
use hyper::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::{Mutex, Semaphore};
use tokio::task::JoinHandle;

use crate::http::{Reply, Server, reply, serve_at};
use crate::lambda::{Answer, Function, InvokeError, LocalLambda};
use crate::service::{LambdaService, Timing};

/// The account the local ARNs name (moto's default account).
const ACCOUNT: &str = "123456789012";

/// One function as the local service deploys it.
#[derive(Debug, Clone)]
pub struct FunctionSpec {
    /// Its name in the Invoke API.
    pub name: String,
    /// The binary that implements it (a `bootstrap`).
    pub binary: PathBuf,
    /// Its environment (table names, queue URL, endpoints), as the template sets it on AWS.
    pub env: Vec<(String, String)>,
    /// Its timeout, async retry delays, and (for a queue it drains) the visibility timeout and schedule period.
    pub timing: Timing,
    /// How many execution environments may run at once (Lambda's reserved concurrency, scaled down).
    pub concurrency: usize,
    /// Where asynchronous invocations that failed every attempt go (an SQS queue URL), if anywhere.
    pub on_failure: Option<String>,
}

/// A function's execution environments: one process each, started when every other one is busy, up to
/// `concurrency`; an invocation beyond that waits for a free one (Lambda would throttle it).
pub struct FunctionPool {
    spec: FunctionSpec,
    idle: Mutex<Vec<Arc<LocalLambda>>>,
    started: Mutex<Vec<Arc<LocalLambda>>>,
    slots: Semaphore,
}

impl FunctionPool {
    pub fn new(spec: FunctionSpec) -> Self {
        let slots = Semaphore::new(spec.concurrency.max(1));
        Self { spec, idle: Mutex::new(Vec::new()), started: Mutex::new(Vec::new()), slots }
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// Execution environments started so far (a crashed or timed-out one is restarted in place).
    pub async fn environments(&self) -> usize {
        self.started.lock().await.len()
    }

    async fn take(&self) -> Arc<LocalLambda> {
        if let Some(environment) = self.idle.lock().await.pop() {
            return environment;
        }
        tracing::info!(function = %self.spec.name, "starting an execution environment");
        let environment =
            Arc::new(LocalLambda::start_binary(self.spec.binary.clone(), &self.spec.name, &self.spec.env).await);
        self.started.lock().await.push(environment.clone());
        environment
    }

    /// Stops every process.
    pub async fn stop(&self) {
        self.idle.lock().await.clear();
        for environment in self.started.lock().await.drain(..) {
            environment.stop().await;
        }
    }
}

impl Function for FunctionPool {
    async fn invoke(&self, payload: &Value, timeout: Duration) -> Answer {
        let Ok(_slot) = self.slots.acquire().await else {
            return Err(InvokeError::Exited("the function was stopped".into()));
        };
        let environment = self.take().await;
        let answer = environment.invoke(payload, timeout).await;
        self.idle.lock().await.push(environment);
        answer
    }
}

/// A queue drained into a function, as an event source mapping with batch size 1 and `ReportBatchItemFailures`.
#[derive(Debug, Clone)]
pub struct QueueMapping {
    pub function: String,
    pub queue_url: String,
}

/// An event sent to a function every `timing.schedule_every` of that function (EventBridge Scheduler).
#[derive(Debug, Clone)]
pub struct Schedule {
    pub function: String,
    pub event: Value,
}

/// What the local service runs.
pub struct Deployment {
    pub functions: Vec<FunctionSpec>,
    pub queues: Vec<QueueMapping>,
    pub schedules: Vec<Schedule>,
    /// For the queues.
    pub sqs: aws_sdk_sqs::Client,
    /// The region the ARNs name.
    pub region: String,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("{kind} names function {function}, which is not deployed")]
    UnknownFunction { kind: &'static str, function: String },
    #[error("function {function}: {} is not built (cargo build -p {function})", binary.display())]
    NotBuilt { function: String, binary: PathBuf },
}

type Deployed = Arc<LambdaService<Arc<FunctionPool>>>;

struct Routes {
    functions: HashMap<String, Deployed>,
    region: String,
}

/// The running local Lambda service. Dropping it stops the Invoke API, the queue and schedule loops; [`stop`]
/// also ends the function processes.
///
/// [`stop`]: LocalLambdaService::stop
pub struct LocalLambdaService {
    pub url: String,
    pub addr: SocketAddr,
    routes: Arc<Routes>,
    loops: Vec<JoinHandle<()>>,
    _server: Server,
}

impl LocalLambdaService {
    /// Serves the Invoke API on `addr` (port 0: any free port) and starts the queue and schedule loops. Function
    /// processes start on their first invocation.
    pub async fn start(addr: SocketAddr, deployment: Deployment) -> Result<Self, StartError> {
        let mut functions = HashMap::new();
        for spec in deployment.functions {
            if !spec.binary.exists() {
                return Err(StartError::NotBuilt { function: spec.name, binary: spec.binary });
            }
            let (name, timing, on_failure) = (spec.name.clone(), spec.timing, spec.on_failure.clone());
            let pool = Arc::new(FunctionPool::new(spec));
            let queue_url = deployment.queues.iter().find(|q| q.function == name).map(|q| q.queue_url.clone());
            let service = LambdaService::new(pool, deployment.sqs.clone(), &queue_url.unwrap_or_default(), timing)
                .with_on_failure(on_failure);
            functions.insert(name, Arc::new(service));
        }
        let deployed = |kind: &'static str, function: &str| {
            functions.get(function).cloned().ok_or(StartError::UnknownFunction { kind, function: function.to_owned() })
        };
        let mut loops = Vec::new();
        for queue in &deployment.queues {
            let service = deployed("a queue mapping", &queue.function)?;
            tracing::info!(queue = %queue.queue_url, function = %queue.function, "draining the queue");
            loops.push(tokio::spawn(async move { service.drain_queue(None).await }));
        }
        for schedule in deployment.schedules {
            let service = deployed("a schedule", &schedule.function)?;
            tracing::info!(function = %schedule.function, every = ?service.timing.schedule_every, "schedule");
            loops.push(tokio::spawn(async move { service.schedule(&schedule.event, None).await }));
        }
        let routes = Arc::new(Routes { functions, region: deployment.region });
        let server = {
            let routes = routes.clone();
            serve_at(addr, move |parts, body| route(routes.clone(), parts, body))
                .await
                .map_err(|source| StartError::Listen { addr, source })?
        };
        Ok(Self { url: server.url(), addr: server.addr, routes, loops, _server: server })
    }

    /// The function `name`'s service (its invocations so far, its pool).
    pub fn function(&self, name: &str) -> Option<&LambdaService<Arc<FunctionPool>>> {
        self.routes.functions.get(name).map(AsRef::as_ref)
    }

    /// Stops the loops and every function process.
    pub async fn stop(&self) {
        for task in &self.loops {
            task.abort();
        }
        for service in self.routes.functions.values() {
            service.function.stop().await;
        }
    }
}

impl Drop for LocalLambdaService {
    fn drop(&mut self) {
        for task in &self.loops {
            task.abort();
        }
    }
}

/// How the caller asked to invoke (`X-Amz-Invocation-Type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InvocationType {
    RequestResponse,
    Event,
    DryRun,
}

impl InvocationType {
    fn parse(header: Option<&str>) -> Option<Self> {
        match header {
            None | Some("RequestResponse") => Some(Self::RequestResponse),
            Some("Event") => Some(Self::Event),
            Some("DryRun") => Some(Self::DryRun),
            Some(_) => None,
        }
    }
}

/// `my-function`, `my-function:$LATEST`, `123456789012:function:my-function`, or a function ARN, perhaps
/// percent-encoded; with the `Qualifier` query parameter, if any. `None` names a version or alias other than
/// `$LATEST` (none exists locally).
fn function_name(segment: &str, query: Option<&str>) -> Option<String> {
    let decoded = percent_decode(segment);
    let name = decoded.rsplit_once(":function:").map_or(decoded.as_str(), |(_, name)| name);
    let (name, qualifier) = match name.split_once(':') {
        Some((name, qualifier)) => (name, Some(qualifier.to_owned())),
        None => (name, None),
    };
    let query_qualifier =
        query.and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("Qualifier="))).map(percent_decode);
    match qualifier.or(query_qualifier) {
        Some(q) if q != "$LATEST" => None,
        _ => Some(name.to_owned()),
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// An error the way Lambda's REST API answers one: the type in `X-Amzn-ErrorType`, a JSON body with `message`.
fn api_error(status: StatusCode, error_type: &str, message: &str) -> Reply {
    let body = json!({"Type": "User", "message": message}).to_string();
    with_headers(reply(status, body), &[("x-amzn-errortype", error_type), ("content-type", "application/json")])
}

fn with_headers(mut reply: Reply, headers: &[(&'static str, &str)]) -> Reply {
    for (name, value) in headers {
        if let Ok(value) = value.parse() {
            reply.headers_mut().insert(*name, value);
        }
    }
    reply
}

/// The answer of a synchronous invocation: the function's JSON, or its error with `X-Amz-Function-Error`.
fn invocation_reply(answer: Answer, request_id: &str, timeout: Duration) -> Reply {
    let (body, function_error) = match answer {
        Ok(response) => (response.to_string(), None),
        Err(InvokeError::Function { error_type, message }) => {
            (json!({"errorType": error_type, "errorMessage": message}).to_string(), Some("Unhandled"))
        }
        Err(InvokeError::TimedOut(_)) => {
            let message =
                format!("RequestId: {request_id} Error: Task timed out after {:.2} seconds", timeout.as_secs_f64());
            (json!({"errorType": "Sandbox.Timedout", "errorMessage": message}).to_string(), Some("Unhandled"))
        }
        Err(InvokeError::Exited(why)) => {
            let message = format!("RequestId: {request_id} Error: Runtime exited: {why}");
            (json!({"errorType": "Runtime.ExitError", "errorMessage": message}).to_string(), Some("Unhandled"))
        }
    };
    let mut headers = vec![
        ("content-type", "application/json"),
        ("x-amzn-requestid", request_id),
        ("x-amz-executed-version", "$LATEST"),
    ];
    if let Some(kind) = function_error {
        headers.push(("x-amz-function-error", kind));
    }
    with_headers(reply(StatusCode::OK, body), &headers)
}

async fn route(routes: Arc<Routes>, parts: Parts, body: Bytes) -> Reply {
    let segments: Vec<&str> = parts.uri.path().trim_start_matches('/').split('/').collect();
    let ["2015-03-31", "functions", function, "invocations"] = segments.as_slice() else {
        return api_error(
            StatusCode::NOT_FOUND,
            "UnknownOperationException",
            &format!("the local Lambda serves only Invoke, not {} {}", parts.method, parts.uri.path()),
        );
    };
    if parts.method != Method::POST {
        return api_error(StatusCode::METHOD_NOT_ALLOWED, "UnknownOperationException", "Invoke is a POST");
    }
    let request_id = uuid::Uuid::new_v4().to_string();
    let arn = |name: &str| format!("arn:aws:lambda:{}:{ACCOUNT}:function:{name}", routes.region);
    let Some(name) = function_name(function, parts.uri.query()) else {
        return api_error(
            StatusCode::NOT_FOUND,
            "ResourceNotFoundException",
            &format!("Function not found: {}", arn(&percent_decode(function))),
        );
    };
    let Some(service) = routes.functions.get(&name).cloned() else {
        return api_error(
            StatusCode::NOT_FOUND,
            "ResourceNotFoundException",
            &format!("Function not found: {}", arn(&name)),
        );
    };
    let header = parts.headers.get("x-amz-invocation-type").and_then(|v| v.to_str().ok());
    let Some(kind) = InvocationType::parse(header) else {
        return api_error(
            StatusCode::BAD_REQUEST,
            "InvalidParameterValueException",
            &format!("Unsupported invocation type {}", header.unwrap_or_default()),
        );
    };
    // No payload is an empty object, as with the AWS CLI without --payload.
    let payload =
        if body.iter().all(u8::is_ascii_whitespace) { Ok(json!({})) } else { serde_json::from_slice::<Value>(&body) };
    let payload = match payload {
        Ok(payload) => payload,
        Err(e) => {
            return api_error(
                StatusCode::BAD_REQUEST,
                "InvalidRequestContentException",
                &format!("Could not parse request body into json: {e}"),
            );
        }
    };
    tracing::info!(function = %name, invocation = ?kind, request_id, "invoke");
    match kind {
        InvocationType::DryRun => {
            with_headers(reply(StatusCode::NO_CONTENT, Bytes::new()), &[("x-amzn-requestid", &request_id)])
        }
        InvocationType::Event => {
            // Queued, then run with Lambda's retries; the caller only learns it was accepted.
            tokio::spawn(async move { service.invoke_async(&payload).await });
            with_headers(reply(StatusCode::ACCEPTED, Bytes::new()), &[("x-amzn-requestid", &request_id)])
        }
        InvocationType::RequestResponse => {
            // In a task of its own: a caller that hangs up does not cut the invocation short, as on Lambda.
            let timeout = service.timing.timeout;
            let task = tokio::spawn(async move { service.invoke_sync(&payload).await });
            let answer = task.await.unwrap_or_else(|e| Err(InvokeError::Exited(e.to_string())));
            if let Err(e) = &answer {
                tracing::info!(function = %name, request_id, error = %e, "function error");
            }
            invocation_reply(answer, &request_id, timeout)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_names_as_the_invoke_api_takes_them() {
        let cases = [
            ("shadow-push", None, Some("shadow-push")),
            ("shadow-push%3A%24LATEST", None, Some("shadow-push")),
            ("shadow-push:$LATEST", None, Some("shadow-push")),
            ("shadow-push", Some("Qualifier=%24LATEST"), Some("shadow-push")),
            ("shadow-push", Some("Qualifier=live"), None),
            ("shadow-push:3", None, None),
            ("arn%3Aaws%3Alambda%3Aap-northeast-1%3A123456789012%3Afunction%3Ashadow-push", None, Some("shadow-push")),
            ("arn:aws:lambda:ap-northeast-1:123456789012:function:shadow-push:$LATEST", None, Some("shadow-push")),
            ("123456789012:function:shadow-history", None, Some("shadow-history")),
        ];
        for (segment, query, want) in cases {
            assert_eq!(function_name(segment, query).as_deref(), want, "{segment} {query:?}");
        }
    }

    #[test]
    fn invocation_types() {
        assert_eq!(InvocationType::parse(None), Some(InvocationType::RequestResponse));
        assert_eq!(InvocationType::parse(Some("Event")), Some(InvocationType::Event));
        assert_eq!(InvocationType::parse(Some("DryRun")), Some(InvocationType::DryRun));
        assert_eq!(InvocationType::parse(Some("event")), None);
    }

    #[test]
    fn a_function_error_is_unhandled_with_its_type() {
        let error = InvokeError::Function { error_type: "Final.InvalidEvent".into(), message: "topic: missing".into() };
        let reply = invocation_reply(Err(error), "id", Duration::from_secs(3));
        assert_eq!(reply.status(), StatusCode::OK);
        assert_eq!(reply.headers().get("x-amz-function-error").and_then(|v| v.to_str().ok()), Some("Unhandled"));
        let ok = invocation_reply(Ok(json!({"a": 1})), "id", Duration::from_secs(3));
        assert!(ok.headers().get("x-amz-function-error").is_none());
    }
}
