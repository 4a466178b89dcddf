//! A Lambda Runtime API stand-in: runs a real function binary as Lambda would (the binary polls
//! `/2018-06-01/runtime/invocation/next` and posts its answer), so tests and benchmarks can invoke it with chosen
//! deadlines and see the function's answer or its error type.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hyper::http::request::Parts;
use hyper::{Method, StatusCode};
use serde_json::Value;
use tokio::process::{Child, Command};
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::http::{Reply, Server, reply, serve};

/// What an invocation came back with, other than a response.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InvokeError {
    /// The function reported an error (`errorType`, `errorMessage`).
    #[error("function error {error_type}: {message}")]
    Function { error_type: String, message: String },
    /// The function did not answer before the deadline plus a grace period.
    #[error("the function did not answer within {0:?}")]
    TimedOut(Duration),
    /// The process is gone (a start-up failure, a crash).
    #[error("the function process exited: {0}")]
    Exited(String),
}

impl InvokeError {
    pub fn error_type(&self) -> Option<&str> {
        match self {
            Self::Function { error_type, .. } => Some(error_type),
            _ => None,
        }
    }
}

/// What one invocation came back with.
pub type Answer = Result<Value, InvokeError>;

/// Something that runs a function's invocations: one execution environment ([`LocalLambda`]) or several
/// ([`crate::local_lambda::FunctionPool`]). [`crate::service::LambdaService`] plays Lambda around either.
pub trait Function: Send + Sync {
    /// Invokes with `payload`, giving the function `timeout` (its deadline).
    fn invoke(&self, payload: &Value, timeout: Duration) -> impl Future<Output = Answer> + Send;
}

impl Function for LocalLambda {
    fn invoke(&self, payload: &Value, timeout: Duration) -> impl Future<Output = Answer> + Send {
        LocalLambda::invoke(self, payload, timeout)
    }
}

impl<T: Function> Function for &T {
    fn invoke(&self, payload: &Value, timeout: Duration) -> impl Future<Output = Answer> + Send {
        T::invoke(self, payload, timeout)
    }
}

impl<T: Function> Function for Arc<T> {
    fn invoke(&self, payload: &Value, timeout: Duration) -> impl Future<Output = Answer> + Send {
        T::invoke(self, payload, timeout)
    }
}

struct Pending {
    id: String,
    payload: Bytes,
    deadline_ms: u128,
    reply: oneshot::Sender<Answer>,
}

#[derive(Default)]
struct Shared {
    waiting: std::sync::Mutex<HashMap<String, oneshot::Sender<Answer>>>,
    first_poll: std::sync::Mutex<Option<Instant>>,
    init_error: std::sync::Mutex<Option<String>>,
}

/// A running function binary behind its own Runtime API.
pub struct LocalLambda {
    queue: mpsc::Sender<Pending>,
    shared: Arc<Shared>,
    child: Mutex<Child>,
    started: Instant,
    pub addr: SocketAddr,
    _server: Server,
    /// With `FLEET_IAM_RECORD` set, the recording proxies in front of the function's AWS endpoints.
    _iam: Option<crate::iam::Recording>,
    /// How to start the process again after it died.
    spec: Respawn,
    pid: Arc<AtomicU32>,
    turn: Mutex<()>,
    logs: Option<FunctionLogs>,
}

/// A command's program, arguments and environment, to start it again.
struct Respawn {
    program: std::ffi::OsString,
    args: Vec<std::ffi::OsString>,
    env: Vec<(std::ffi::OsString, std::ffi::OsString)>,
}

impl Respawn {
    fn of(command: &Command) -> Self {
        let std = command.as_std();
        Self {
            program: std.get_program().to_owned(),
            args: std.get_args().map(ToOwned::to_owned).collect(),
            env: std.get_envs().filter_map(|(k, v)| Some((k.to_owned(), v?.to_owned()))).collect(),
        }
    }

    fn command(&self) -> Command {
        let mut command = Command::new(&self.program);
        command.args(&self.args).envs(self.env.iter().map(|(k, v)| (k, v)));
        command
    }
}

fn spawn(mut command: Command, capture: Option<&FunctionLogs>) -> Child {
    let program = command.as_std().get_program().to_string_lossy().into_owned();
    let show = std::env::var_os("SHOW_FUNCTION_LOGS").is_some();
    let stdout = match (capture, show) {
        (Some(_), _) => Stdio::piped(),
        (None, true) => Stdio::inherit(),
        (None, false) => Stdio::null(),
    };
    let mut child = command
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {program}: {e}"));
    if let (Some(logs), Some(stdout)) = (capture, child.stdout.take()) {
        logs.read(stdout, show);
    }
    child
}

/// Every line a function process wrote on stdout (its JSON logs and metric lines, what Lambda sends to CloudWatch
/// Logs), across restarts, when it was started with [`LocalLambda::start_capturing`].
#[derive(Clone, Default)]
pub struct FunctionLogs(Arc<std::sync::Mutex<Vec<String>>>);

impl FunctionLogs {
    fn read(&self, stdout: tokio::process::ChildStdout, show: bool) {
        use tokio::io::AsyncBufReadExt;
        let lines = self.0.clone();
        tokio::spawn(async move {
            let mut reader = tokio::io::BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if show {
                    println!("{line}");
                }
                lines.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            }
        });
    }

    /// The lines so far.
    pub fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// How many lines so far: a mark to take the lines after with [`FunctionLogs::since`].
    pub fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The lines after `mark`, once no new line has come for `quiet` (the process has flushed what it wrote).
    pub async fn since(&self, mark: usize, quiet: Duration) -> Vec<String> {
        let mut seen = self.len();
        loop {
            tokio::time::sleep(quiet).await;
            let now = self.len();
            if now == seen {
                break;
            }
            seen = now;
        }
        self.lines().split_off(mark.min(seen))
    }
}

/// The path of a workspace binary built next to the running test or tool (`target/<profile>/<name>`), or in
/// `FLEET_FUNCTION_BIN_DIR` when that is set (to run the tests against another build of the functions).
pub fn binary(name: &str) -> PathBuf {
    let path = binary_path(name);
    assert!(path.exists(), "{} is not built: run `cargo build -p {name}` (make test does)", path.display());
    path
}

/// Where [`binary`] looks for `name`, whether it is there or not.
pub fn binary_path(name: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("FLEET_FUNCTION_BIN_DIR") {
        return PathBuf::from(dir).join(name);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let mut dir = exe.parent().map(PathBuf::from).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir.join(name)
}

impl LocalLambda {
    /// Starts the Runtime API and the binary `name` (from this workspace's target directory) with `env`.
    pub async fn start(name: &str, env: &[(String, String)]) -> Self {
        Self::start_binary(binary(name), name, env).await
    }

    pub async fn start_binary(path: PathBuf, name: &str, env: &[(String, String)]) -> Self {
        Self::start_command(Command::new(path), name, env).await
    }

    /// As [`LocalLambda::start`], keeping every line the function writes on stdout ([`LocalLambda::logs`]).
    pub async fn start_capturing(name: &str, env: &[(String, String)]) -> Self {
        Self::start_with(Command::new(binary(name)), name, env, Some(FunctionLogs::default())).await
    }

    /// As [`LocalLambda::start_capturing`], with a command of the caller's (one that starts the binary inside a CPU
    /// cap, say).
    pub async fn start_command_capturing(command: Command, name: &str, env: &[(String, String)]) -> Self {
        Self::start_with(command, name, env, Some(FunctionLogs::default())).await
    }

    /// What the function wrote on stdout, when started with [`LocalLambda::start_capturing`].
    pub fn logs(&self) -> Option<&FunctionLogs> {
        self.logs.as_ref()
    }

    /// Starts any runtime client (a Python handler under `awslambdaric`, say) against its own Runtime API.
    pub async fn start_command(command: Command, name: &str, env: &[(String, String)]) -> Self {
        Self::start_with(command, name, env, None).await
    }

    async fn start_with(
        mut command: Command,
        name: &str,
        env: &[(String, String)],
        logs: Option<FunctionLogs>,
    ) -> Self {
        let (env, iam) = crate::iam::recorded_env(name, env).await;
        let (queue, receiver) = mpsc::channel::<Pending>(1024);
        let receiver = Arc::new(Mutex::new(receiver));
        let shared = Arc::new(Shared::default());
        let server = {
            let shared = shared.clone();
            serve(move |parts, body| route(parts, body, receiver.clone(), shared.clone())).await
        };
        let addr = server.addr;

        let started = Instant::now();
        command
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("AWS_LAMBDA_RUNTIME_API", addr.to_string())
            .env("AWS_LAMBDA_FUNCTION_NAME", name)
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_LOG_STREAM_NAME", "local")
            .env("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{name}"));
        let spec = Respawn::of(&command);
        let child = spawn(command, logs.as_ref());
        let pid = Arc::new(AtomicU32::new(child.id().unwrap_or(0)));
        Self {
            queue,
            shared,
            child: Mutex::new(child),
            started,
            addr,
            _server: server,
            _iam: iam,
            spec,
            pid,
            turn: Mutex::new(()),
            logs,
        }
    }

    /// The process's id, kept current across restarts: a crash proxy kills whatever runs now.
    pub fn pid_handle(&self) -> Arc<AtomicU32> {
        self.pid.clone()
    }

    /// Kills the process at once (SIGKILL), as an out-of-memory kill or a panic with `panic = "abort"` would end it.
    /// The next invocation starts a new process, as Lambda starts a new execution environment.
    pub async fn kill(&self) {
        let mut child = self.child.lock().await;
        let _ = child.start_kill();
        let _ = child.wait().await;
    }

    /// A new process in place of a dead one (Lambda's new execution environment), keeping the Runtime API.
    async fn ensure_running(&self) {
        let mut child = self.child.lock().await;
        if matches!(child.try_wait(), Ok(None)) {
            return;
        }
        *child = spawn(self.spec.command(), self.logs.as_ref());
        self.pid.store(child.id().unwrap_or(0), Ordering::SeqCst);
    }

    /// Time from spawning the process to its first poll for an event (its cold start), once it has polled.
    pub fn init_duration(&self) -> Option<Duration> {
        let first = *self.shared.first_poll.lock().unwrap_or_else(|e| e.into_inner());
        first.map(|t| t.duration_since(self.started))
    }

    /// Waits until the function polls for its first event.
    pub async fn wait_ready(&self, within: Duration) -> Result<Duration, InvokeError> {
        let until = Instant::now() + within;
        loop {
            if let Some(d) = self.init_duration() {
                return Ok(d);
            }
            self.check_alive().await?;
            if Instant::now() > until {
                return Err(InvokeError::TimedOut(within));
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.try_lock().ok().and_then(|c| c.id())
    }

    /// The process's peak resident set (VmHWM), in bytes.
    pub fn peak_rss(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    }

    /// CPU time (user + system) the process has used so far.
    pub fn cpu_time(&self) -> Option<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()?)).ok()?;
        // Fields after the command name (which may hold spaces) start after the last ')'.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        // Linux reports these in USER_HZ, 100 on every architecture Lambda runs.
        Some(Duration::from_millis(ticks * 10))
    }

    async fn check_alive(&self) -> Result<(), InvokeError> {
        let mut child = self.child.lock().await;
        match child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => {
                let init = self.shared.init_error.lock().unwrap_or_else(|e| e.into_inner()).clone();
                Err(InvokeError::Exited(init.map_or_else(|| status.to_string(), |e| format!("{status}: {e}"))))
            }
            Err(e) => Err(InvokeError::Exited(e.to_string())),
        }
    }

    /// Invokes the function with `payload`, giving it `timeout` as Lambda would (its deadline header). As Lambda
    /// does, a process that has not answered by the deadline is stopped (killed) there, and a dead process is
    /// replaced by a new one for the next invocation.
    pub async fn invoke(&self, payload: &Value, timeout: Duration) -> Answer {
        self.invoke_as(&uuid::Uuid::new_v4().to_string(), payload, timeout).await
    }

    /// As [`LocalLambda::invoke`], with the request id `id` (Lambda's `Lambda-Runtime-Aws-Request-Id`).
    pub async fn invoke_as(&self, id: &str, payload: &Value, timeout: Duration) -> Answer {
        // One execution environment runs one invocation at a time; the deadline starts when it is handed over.
        let _turn = self.turn.lock().await;
        self.ensure_running().await;
        let (reply, answer) = oneshot::channel();
        let id = id.to_owned();
        let deadline_ms =
            SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis()) + timeout.as_millis();
        let payload = Bytes::from(serde_json::to_vec(payload).unwrap_or_default());
        if self.queue.send(Pending { id, payload, deadline_ms, reply }).await.is_err() {
            return Err(InvokeError::Exited("runtime API stopped".into()));
        }
        let wait = async {
            tokio::pin!(answer);
            loop {
                tokio::select! {
                    result = &mut answer => return result.unwrap_or_else(|_| Err(InvokeError::Exited("no answer".into()))),
                    _ = tokio::time::sleep(Duration::from_millis(100)) => self.check_alive().await?,
                }
            }
        };
        // Lambda's own timing is not exact either: allow 50 ms for the answer to travel.
        let limit = timeout + Duration::from_millis(50);
        match tokio::time::timeout(limit, wait).await {
            Ok(answer) => answer,
            Err(_) => {
                self.kill().await;
                Err(InvokeError::TimedOut(timeout))
            }
        }
    }

    /// Stops the process.
    pub async fn stop(&self) {
        let mut child = self.child.lock().await;
        let _ = child.kill().await;
    }
}

async fn route(parts: Parts, body: Bytes, queue: Arc<Mutex<mpsc::Receiver<Pending>>>, shared: Arc<Shared>) -> Reply {
    let segments: Vec<&str> = parts.uri.path().trim_start_matches('/').split('/').collect();
    match (parts.method.clone(), segments.as_slice()) {
        (Method::GET, ["2018-06-01", "runtime", "invocation", "next"]) => {
            shared.first_poll.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert_with(Instant::now);
            let next = queue.lock().await.recv().await;
            match next {
                // The function is being torn down: leave its poll unanswered until the process is killed.
                None => std::future::pending().await,
                Some(p) => {
                    shared.waiting.lock().unwrap_or_else(|e| e.into_inner()).insert(p.id.clone(), p.reply);
                    let mut r = reply(StatusCode::OK, p.payload);
                    let headers = r.headers_mut();
                    let pairs = [
                        ("lambda-runtime-aws-request-id", p.id.clone()),
                        ("lambda-runtime-deadline-ms", p.deadline_ms.to_string()),
                        (
                            "lambda-runtime-invoked-function-arn",
                            "arn:aws:lambda:ap-northeast-1:123456789012:function:local".to_owned(),
                        ),
                        ("lambda-runtime-trace-id", format!("Root=1-00000000-{}", &p.id[..24.min(p.id.len())])),
                        ("content-type", "application/json".to_owned()),
                    ];
                    for (name, value) in pairs {
                        if let Ok(value) = value.parse() {
                            headers.insert(name, value);
                        }
                    }
                    r
                }
            }
        }
        (Method::POST, ["2018-06-01", "runtime", "invocation", id, outcome]) => {
            let sender = shared.waiting.lock().unwrap_or_else(|e| e.into_inner()).remove(*id);
            let answer = match *outcome {
                "response" => serde_json::from_slice(&body).map_err(|e| InvokeError::Function {
                    error_type: "InvalidResponse".into(),
                    message: e.to_string(),
                }),
                _ => {
                    let err: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    Err(InvokeError::Function {
                        error_type: err["errorType"].as_str().unwrap_or("Unknown").to_owned(),
                        message: err["errorMessage"].as_str().unwrap_or_default().to_owned(),
                    })
                }
            };
            if let Some(sender) = sender {
                let _ = sender.send(answer);
            }
            reply(StatusCode::ACCEPTED, "{}")
        }
        (Method::POST, ["2018-06-01", "runtime", "init", "error"]) => {
            *shared.init_error.lock().unwrap_or_else(|e| e.into_inner()) =
                Some(String::from_utf8_lossy(&body).into_owned());
            reply(StatusCode::ACCEPTED, "{}")
        }
        _ => reply(StatusCode::NOT_FOUND, "unknown runtime API path"),
    }
}
