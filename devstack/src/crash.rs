//! Killing a function process at a chosen step, as AWS can: out of memory, a panic (`panic = "abort"`), the host
//! going away. A proxy in front of one of the function's endpoints counts the requests of one kind and, on the
//! n-th, SIGKILLs the function process, before the request reaches the service or after it took effect (its
//! answer then never arrives).

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::http::request::Parts;
use hyper::{Response, StatusCode};

use crate::http::{Reply, Server, Upstream, reply, serve};

/// Which requests a crash point counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// GetThingShadow or UpdateThingShadow (IoT data plane).
    ShadowRequest,
    /// The UpdateItem that records a segment and releases the push (DynamoDB).
    RecordSegment,
    /// The TransactWriteItems that creates a push: its plan item and its record item (DynamoDB).
    CreatePush,
    /// The hand-off message (SQS SendMessage).
    HandOff,
    /// A rollback's shadow update (its clientToken ends in `.rollback`).
    RollbackUpdate,
    /// A rollout's journal write: a thing's previous values (DynamoDB PutItem of a `previous#` item).
    JournalWrite,
    /// An operator's control carried out on the record (DynamoDB UpdateItem conditional on the control).
    ApplyControl,
    /// A paused push resumed (DynamoDB UpdateItem conditional on `paused`).
    Resume,
    /// The record's retention mark, before its items are walked (DynamoDB UpdateItem setting `keepingTo`).
    KeepMark,
    /// Where a retention walk got, saved on the push's `kept` item (DynamoDB UpdateItem setting its `after`): every
    /// 10 s of a walk, and when it stops short of the deadline.
    KeepThrough,
    /// The record's mark that a retention walk is done (DynamoDB UpdateItem setting `keptUntil`).
    KeptMark,
    /// An entry put on the board of senders (DynamoDB PutItem in the `#senders` partition): the first is a
    /// segment's provisional announcement.
    Announce,
}

impl Step {
    /// The stack setting of the endpoint its requests go to.
    pub fn endpoint_var(self) -> &'static str {
        match self {
            Self::ShadowRequest | Self::RollbackUpdate => "AWS_ENDPOINT_URL_IOT_DATA_PLANE",
            Self::HandOff => "AWS_ENDPOINT_URL_SQS",
            Self::RecordSegment
            | Self::CreatePush
            | Self::JournalWrite
            | Self::ApplyControl
            | Self::Resume
            | Self::KeepMark
            | Self::KeepThrough
            | Self::KeptMark
            | Self::Announce => "AWS_ENDPOINT_URL_DYNAMODB",
        }
    }

    fn matches(self, parts: &Parts, body: &[u8]) -> bool {
        let target = parts.headers.get("x-amz-target").and_then(|t| t.to_str().ok()).unwrap_or_default();
        match self {
            Self::ShadowRequest => {
                let path = parts.uri.path();
                path.starts_with("/things/") && path.contains("/shadow")
            }
            Self::RecordSegment => {
                target.ends_with(".UpdateItem") && String::from_utf8_lossy(body).contains("SET handedOff")
            }
            Self::CreatePush => target.ends_with(".TransactWriteItems"),
            Self::RollbackUpdate => {
                parts.uri.path().starts_with("/things/") && String::from_utf8_lossy(body).contains(".rollback\"")
            }
            Self::JournalWrite => target.ends_with(".PutItem") && String::from_utf8_lossy(body).contains("previous#"),
            Self::ApplyControl => {
                target.ends_with(".UpdateItem") && String::from_utf8_lossy(body).contains("control = :c AND")
            }
            Self::Resume => {
                target.ends_with(".UpdateItem") && String::from_utf8_lossy(body).contains("#state = :paused")
            }
            Self::KeepMark => {
                target.ends_with(".UpdateItem") && String::from_utf8_lossy(body).contains("SET keepingTo")
            }
            Self::KeepThrough => {
                target.ends_with(".UpdateItem") && String::from_utf8_lossy(body).contains("SET #to = :to, #after")
            }
            Self::KeptMark => {
                target.ends_with(".UpdateItem") && String::from_utf8_lossy(body).contains("SET keptUntil")
            }
            Self::Announce => target.ends_with(".PutItem") && String::from_utf8_lossy(body).contains("\"#senders\""),
            Self::HandOff => {
                target.ends_with(".SendMessage") || String::from_utf8_lossy(body).contains("Action=SendMessage")
            }
        }
    }
}

/// The n-th request of `step` (1-based) kills the process: after it reached the service (`delivered`), or before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrashPoint {
    pub step: Step,
    pub nth: usize,
    pub delivered: bool,
    /// Kill again at every later request of the step (a push that dies whenever it runs).
    pub repeat: bool,
}

struct Route {
    upstream: Upstream,
    point: CrashPoint,
    seen: AtomicUsize,
    pid: Arc<Mutex<Arc<AtomicU32>>>,
    fired: Arc<AtomicBool>,
}

/// A proxy that kills the function at its crash point once, and forwards everything else unchanged.
pub struct CrashProxy {
    pub url: String,
    pid: Arc<Mutex<Arc<AtomicU32>>>,
    fired: Arc<AtomicBool>,
    _server: Server,
}

impl CrashProxy {
    pub async fn start(upstream: &str, point: CrashPoint) -> Self {
        let pid = Arc::new(Mutex::new(Arc::new(AtomicU32::new(0))));
        let fired = Arc::new(AtomicBool::new(false));
        let route = Arc::new(Route {
            upstream: Upstream::new(upstream),
            point,
            seen: AtomicUsize::new(0),
            pid: pid.clone(),
            fired: fired.clone(),
        });
        let server = serve(move |parts, body| handle(route.clone(), parts, body)).await;
        Self { url: server.url(), pid, fired, _server: server }
    }

    /// The process to kill: the function's, kept current across its restarts (`LocalLambda::pid_handle`).
    pub fn watch(&self, pid: Arc<AtomicU32>) {
        *self.pid.lock().unwrap_or_else(|e| e.into_inner()) = pid;
    }

    /// Whether the crash point was reached (a test whose crash never happened proves nothing).
    pub fn fired(&self) -> bool {
        self.fired.load(Ordering::SeqCst)
    }
}

async fn kill(pid: &Mutex<Arc<AtomicU32>>) {
    let pid = pid.lock().unwrap_or_else(|e| e.into_inner()).load(Ordering::SeqCst);
    if pid != 0 {
        let _ = tokio::process::Command::new("kill").arg("-9").arg(pid.to_string()).status().await;
    }
}

async fn handle(route: Arc<Route>, parts: Parts, body: Bytes) -> Reply {
    let crash = route.point.step.matches(&parts, &body) && {
        let n = route.seen.fetch_add(1, Ordering::SeqCst) + 1;
        let first = n == route.point.nth && !route.fired.swap(true, Ordering::SeqCst);
        first || (route.point.repeat && n > route.point.nth)
    };
    if crash && !route.point.delivered {
        kill(&route.pid).await;
        return reply(StatusCode::BAD_GATEWAY, "killed before the request was sent");
    }
    let (answer, body) = route.upstream.forward(&parts, body).await;
    if crash {
        kill(&route.pid).await;
    }
    Response::from_parts(answer, Full::new(body))
}
