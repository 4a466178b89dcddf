//! cargo-lambda's dev loop (`cargo lambda watch`, `cargo lambda invoke shadow-history --data-file ...`) with the
//! cargo-lambda that `make tools` pins (`.tools/venv/bin/cargo-lambda`), against the local stack.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Stdio;
use std::time::{Duration, Instant};

use devstack::lambda::binary;
use devstack::stack::repo_root;
use devstack::{Stack, unique};
use serde_json::Value;
use shadow_aws::tables;
use tokio::process::Command;

/// What `cargo lambda watch` serves: the binary targets (`kind: ["bin"]`) of the workspace's packages, by binary name
/// (it stops with "the project doesn't include any binary packages" when there are none, and `cargo lambda invoke
/// NAME` runs the binary NAME). Each function must be one.
#[test]
fn each_function_is_a_binary_target_of_its_own_name() {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = std::process::Command::new(cargo)
        .args(["metadata", "--no-deps", "--format-version", "1"])
        .current_dir(repo_root())
        .output()
        .expect("running cargo metadata");
    assert!(output.status.success(), "cargo metadata: {}", String::from_utf8_lossy(&output.stderr));
    let metadata: Value = serde_json::from_slice(&output.stdout).expect("cargo metadata's JSON");
    let packages = metadata["packages"].as_array().cloned().unwrap_or_default();
    for function in ["shadow-history", "shadow-push"] {
        let package = packages.iter().find(|p| p["name"] == function);
        let targets = package.and_then(|p| p["targets"].as_array()).cloned().unwrap_or_default();
        let binary = targets.iter().any(|t| t["name"] == function && t["kind"] == serde_json::json!(["bin"]));
        assert!(binary, "{function} has no binary target named {function}: {targets:?}");
    }
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().map(|a| a.port()).expect("the free port's number")
}

/// `cargo lambda watch` runs the function under its Runtime API emulator, which sends every event with the same
/// `Lambda-Runtime-Deadline-Ms: 600000` (ten minutes after the epoch, not ten minutes from now). The function must
/// still do its work: before that was handled, every invocation failed with `Retryable.OutOfTime`.
#[tokio::test]
async fn cargo_lambda_watch_and_invoke_run_shadow_history_against_the_stack() {
    let stack = Stack::get();
    let cargo_lambda = repo_root().join(".tools/venv/bin/cargo-lambda");
    assert!(cargo_lambda.exists(), "{} is missing: run `make tools`", cargo_lambda.display());
    let table = unique("watch-history");
    tables::ensure_table(&stack.dynamodb(), &table, &tables::HISTORY).await.expect("creating the history table");
    let port = free_port();

    // watch's Runtime API only (`--only-lambda-apis`): the function is the binary cargo built, started here, so the
    // test needs no second cargo build while `cargo test` holds the build directory.
    let mut watch = Command::new(&cargo_lambda)
        .args(["lambda", "watch", "--only-lambda-apis", "-A", "127.0.0.1", "-P", &port.to_string()])
        .current_dir(repo_root())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("cargo lambda watch");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let until = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        let exited = watch.try_wait().ok().flatten();
        assert!(exited.is_none() && Instant::now() < until, "cargo lambda watch did not start: {exited:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let mut env = stack.env.clone();
    env.insert("HISTORY_TABLE".into(), table.clone());
    let _function = Command::new(binary("shadow-history"))
        .envs(env)
        .env("AWS_LAMBDA_RUNTIME_API", format!("http://127.0.0.1:{port}/.rt/shadow-history"))
        // What watch itself sets when it starts the function (without --only-lambda-apis).
        .env("AWS_LAMBDA_FUNCTION_NAME", "shadow-history")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "4096")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawning shadow-history");

    let event = repo_root().join("events/history/update-accepted-named.json");
    let invoke = Command::new(&cargo_lambda)
        .args(["lambda", "invoke", "shadow-history", "-A", "127.0.0.1", "-P", &port.to_string(), "--data-file"])
        .arg(&event)
        .current_dir(repo_root())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(60), invoke)
        .await
        .expect("cargo lambda invoke did not answer within 60 s")
        .expect("cargo lambda invoke");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "cargo lambda invoke failed: {stdout} {stderr}");
    let answer: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(answer["outcome"], "written", "{answer}");
    assert_eq!((answer["thingName"].as_str(), answer["shadowName"].as_str()), (Some("Test-Device"), Some("test1")));
    let _ = stack.dynamodb().delete_table().table_name(table).send().await;
}
