//! Running the built `shadow-fleet` CLI from the tests: with only the environment a test gives it (nothing inherited
//! but PATH), its AWS calls recorded for the IAM tier when `FLEET_IAM_RECORD` is set ([`crate::iam::recorded_cli_env`]),
//! and never a panic.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{Stack, unique};

/// `target/<profile>/shadow-fleet`, next to the running test's own binary.
pub fn binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let mut dir = exe.parent().map(PathBuf::from).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join("shadow-fleet");
    assert!(path.exists(), "{} is not built: run `cargo build -p shadow-fleet-cli` (make test does)", path.display());
    path
}

/// What one run of the CLI left: its exit code, its output and how long it took.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub took: Duration,
}

impl Run {
    /// Every stdout line as JSON (`--output json`).
    pub fn lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not one JSON object per line ({e}): {l}")))
            .collect()
    }

    /// The JSON lines whose `kind` is `kind`.
    pub fn kind(&self, kind: &str) -> Vec<Value> {
        self.lines().into_iter().filter(|l| l["kind"] == kind).collect()
    }
}

/// Runs the CLI with only `env` (nothing inherited but PATH): the stack's settings, or less. Its AWS endpoints go
/// through the IAM recording proxies when the test process has `FLEET_IAM_RECORD`; a panic fails the test.
pub fn run_with(env: &BTreeMap<String, String>, args: &[&str]) -> Run {
    let (env, _recording) = crate::iam::recorded_cli_env(args, env);
    let started = Instant::now();
    let Output { status, stdout, stderr } = std::process::Command::new(binary())
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(&env)
        .output()
        .expect("running shadow-fleet");
    let run = Run {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
        took: started.elapsed(),
    };
    assert!(
        !run.stderr.contains("panicked") && !run.stderr.contains("RUST_BACKTRACE"),
        "shadow-fleet {args:?} panicked: {}",
        run.stderr
    );
    run
}

/// The stack's settings as the CLI's whole environment, without the functions' log filter.
pub fn stack_env(stack: &Stack) -> BTreeMap<String, String> {
    let mut env = stack.env.clone();
    env.remove("RUST_LOG");
    env
}

/// Runs the CLI on the stack's settings.
pub fn run(stack: &Stack, args: &[&str]) -> Run {
    run_with(&stack_env(stack), args)
}

/// A push request in a file of its own, for `push start FILE`.
pub fn write_request(request: &Value) -> PathBuf {
    let path = std::env::temp_dir().join(format!("{}.json", unique("cli-request")));
    std::fs::write(&path, request.to_string()).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    path
}

/// A CloudFormation stack in moto, with `parameters` (key, value), through its query API (moto checks no
/// signature): what `--stack NAME` reads its outputs and parameters from.
pub fn create_stack(stack: &Stack, name: &str, template: &Value, parameters: &[(&str, &str)]) {
    let region = stack.var("AWS_REGION");
    let mut command = std::process::Command::new("curl");
    command
        .args(["-s", "-X", "POST", &stack.var("AWS_ENDPOINT_URL_IOT")])
        .args(["-H", &format!("Authorization: AWS4-HMAC-SHA256 Credential=testing/20260101/{region}/cloudformation/aws4_request, SignedHeaders=host, Signature=x")])
        .args(["-d", "Action=CreateStack", "-d", "Version=2010-05-15", "-d", &format!("StackName={name}")])
        .args(["--data-urlencode", &format!("TemplateBody={template}")]);
    for (i, (key, value)) in parameters.iter().enumerate() {
        command.args(["-d", &format!("Parameters.member.{}.ParameterKey={key}", i + 1)]);
        command.args(["-d", &format!("Parameters.member.{}.ParameterValue={value}", i + 1)]);
    }
    let out = command.output().expect("curl");
    let answer = String::from_utf8_lossy(&out.stdout);
    assert!(answer.contains("<StackId>"), "CreateStack {name}: {answer}");
}

/// Waits (up to 30 s) until `shadow-fleet history` shows `n` events of the thing's shadow `cfg` (shadow-history
/// records what the data plane accepts, through the rules stand-in, as AWS's rule would), and returns what it shows.
pub fn history_when(env: &BTreeMap<String, String>, thing: &str, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = run_with(env, &["history", thing, "--shadow", "cfg", "--output", "json", "--limit", "0"]);
        let lines = if got.code == 0 { got.lines() } else { Vec::new() };
        if lines.len() >= n || Instant::now() > deadline {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}
