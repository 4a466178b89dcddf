//! The front page's quick start works as written: the `sh` block of README.md's "Quick start" that drives the CLI
//! is read from the README itself, and its `fleet-local` and `shadow-fleet` lines are run in order, as a user's
//! shell runs them, on the local stack with its settings and the built binaries on PATH. Each must exit 0, on a
//! fresh stack and again on the same stack.
//!
//! The block's first two lines (`make stack-up && . .local/stack.env` and `cargo build ... && export PATH=...`) are
//! what `make test` has done before any test runs: start the stack, build every binary. They are not run here; the
//! test only checks that the build line builds the binaries the later lines call.
//!
//! The quick start uses fixed names (group `prod`, `Test-Device`, the pushIds of events/push/*.json) that
//! tests/tests/demo.rs creates and deletes too: .config/nextest.toml never runs the two at once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_sdk_dynamodb::types::{AttributeValue, DeleteRequest, WriteRequest};
use devstack::Stack;

/// The binaries the quick start's lines may call, and the package `make test` builds each from.
const COMMANDS: [&str; 2] = ["fleet-local", "shadow-fleet"];
/// Long enough for a push watched to its end on a loaded machine; a hung command fails the test, naming itself.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(300);

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The lines of the quick start's CLI block: the `sh` block under "## Quick start" that calls `shadow-fleet`.
fn quick_start_block(readme: &str) -> Result<Vec<String>, String> {
    let section = readme
        .split("\n## ")
        .find(|s| s.starts_with("Quick start\n"))
        .ok_or("README.md has no \"## Quick start\" section")?;
    let mut blocks: Vec<Vec<String>> = Vec::new();
    let mut current: Option<Vec<String>> = None;
    for line in section.lines() {
        match (&mut current, line.trim()) {
            (None, "```sh") => current = Some(Vec::new()),
            (Some(_), "```") => blocks.extend(current.take()),
            (Some(block), l) if !l.is_empty() => block.push(l.to_owned()),
            _ => {}
        }
    }
    blocks
        .into_iter()
        .find(|b| b.iter().any(|l| l.starts_with("shadow-fleet ")))
        .ok_or_else(|| "the Quick start has no ```sh block with shadow-fleet commands".to_owned())
}

/// Splits the block into its set-up lines (the stack, the build) and the commands to run; anything else is an error
/// naming the line, since this test would not know how to run it.
fn commands(block: &[String]) -> Result<(&str, Vec<&str>), String> {
    let [stack, build, rest @ ..] = block else { return Err(format!("the block is too short: {block:?}")) };
    if !stack.starts_with("make stack-up") {
        return Err(format!("the block's first line is not `make stack-up ...`: {stack}"));
    }
    if !build.starts_with("cargo build ") {
        return Err(format!("the block's second line is not `cargo build ...`: {build}"));
    }
    let mut run = Vec::new();
    for line in rest {
        if !COMMANDS.iter().any(|c| line.starts_with(&format!("{c} "))) {
            return Err(format!("a quick-start line that is not {COMMANDS:?}: {line}"));
        }
        run.push(line.as_str());
    }
    Ok((build.as_str(), run))
}

/// The `-p PACKAGE` arguments of the build line.
fn packages(build: &str) -> Vec<&str> {
    let words: Vec<&str> = build.split_whitespace().take_while(|w| *w != "&&").collect();
    words.windows(2).filter(|w| w[0] == "-p" || w[0] == "--package").map(|w| w[1]).collect()
}

/// The build line builds every binary the commands call: each is a bin target of one of its packages
/// (`cargo metadata`, no build).
fn check_build_line(root: &Path, build: &str) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let out = std::process::Command::new(cargo)
        .args(["metadata", "--no-deps", "--format-version", "1", "--offline"])
        .current_dir(root)
        .output()
        .unwrap_or_else(|e| panic!("cargo metadata: {e}"));
    assert!(out.status.success(), "cargo metadata: {}", String::from_utf8_lossy(&out.stderr));
    let metadata: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("cargo metadata's JSON: {e}"));
    let built = packages(build);
    let packages = metadata["packages"].as_array().cloned().unwrap_or_default();
    for name in &built {
        assert!(
            packages.iter().any(|p| p["name"] == *name),
            "the quick start builds package {name}, which does not exist"
        );
    }
    for command in COMMANDS {
        let builds_it = packages.iter().filter(|p| built.iter().any(|b| p["name"] == *b)).any(|p| {
            p["targets"].as_array().is_some_and(|targets| {
                targets
                    .iter()
                    .any(|t| t["name"] == command && t["kind"].as_array().is_some_and(|k| k.contains(&"bin".into())))
            })
        });
        assert!(
            builds_it,
            "the quick start's build line ({build}) does not build `{command}`, which its commands call"
        );
    }
}

/// The directory the built binaries are in: the running test's own target directory (`target/debug`).
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    for command in COMMANDS {
        assert!(
            dir.join(command).exists(),
            "{} is not built: run `cargo build --workspace --bins` (make test does)",
            dir.join(command).display()
        );
    }
    dir
}

/// What a line left: exit code and output.
struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs one line as the user's shell does (`sh -c`, comments and all), from the repository's root, with the
/// stack's settings as the whole environment (as `set -a; . .local/stack.env` gives them) and the built binaries
/// first on PATH.
async fn run_line(line: &str, env: &BTreeMap<String, String>, bin_dir: &Path) -> Ran {
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let mut command = tokio::process::Command::new("sh");
    command.args(["-c", line]).current_dir(repo_root()).env_clear().envs(env).env("PATH", path).kill_on_drop(true);
    if let Ok(home) = std::env::var("HOME") {
        command.env("HOME", home);
    }
    let output = tokio::time::timeout(COMMAND_TIMEOUT, command.output())
        .await
        .unwrap_or_else(|_| panic!("`{line}` did not end within {COMMAND_TIMEOUT:?}"))
        .unwrap_or_else(|e| panic!("`{line}`: {e}"));
    Ran {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn must_succeed(line: &str, ran: &Ran) {
    assert!(
        ran.code == Some(0),
        "the quick start's `{line}` exited {:?}\n--- stdout\n{}\n--- stderr\n{}",
        ran.code,
        ran.stdout,
        ran.stderr
    );
}

/// The pushIds of the requests the block's `push start FILE` lines send.
fn started_pushes(lines: &[&str]) -> Vec<String> {
    lines
        .iter()
        .filter_map(|line| line.strip_prefix("shadow-fleet push start "))
        .filter_map(|args| args.split_whitespace().next())
        .map(|file| {
            let path = repo_root().join(file);
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let request: serde_json::Value =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            request["pushId"].as_str().unwrap_or_else(|| panic!("{} has no pushId", path.display())).to_owned()
        })
        .collect()
}

/// Deletes a push's record and its items (failures, rollout journal, conflicts, in every shard of its journal).
async fn delete_push(stack: &Stack, push_id: &str) {
    let table = stack.var("PUSH_TABLE");
    let dynamodb = stack.dynamodb();
    let shards = devstack::push::journal_shards(stack, &table, push_id).await;
    let journal = shadow_core::push::JournalRef::new(push_id, shards);
    let mut partitions = vec![push_id.to_owned()];
    partitions.extend(
        journal.shards().into_iter().flatten().map(|n| shadow_aws::push_store::journal_partition(journal, Some(n))),
    );
    let mut keys = Vec::new();
    for partition in partitions {
        let mut pages = dynamodb
            .query()
            .table_name(&table)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", AttributeValue::S(partition))
            .projection_expression("pk, sk")
            .into_paginator()
            .items()
            .send();
        while let Some(item) = pages.next().await {
            keys.push(item.unwrap_or_else(|e| panic!("query {table} for {push_id}: {e}")));
        }
    }
    for key in keys {
        let delete = DeleteRequest::builder().set_key(Some(key)).build().unwrap_or_else(|e| panic!("{e}"));
        let request = WriteRequest::builder().delete_request(delete).build();
        dynamodb
            .batch_write_item()
            .request_items(&table, vec![request])
            .send()
            .await
            .unwrap_or_else(|e| panic!("deleting {push_id}'s items: {e}"));
    }
}

#[test]
fn the_block_is_found_and_split() {
    let readme = "# x\n\n## Quick start\n\n```sh\nmake demo\n```\n\n```sh\nmake stack-up && x\ncargo build -p a -p b --bins && y\n\
                  fleet-local fleet   # the fleet\nshadow-fleet push list\n```\n\n## Next\n\n```sh\nshadow-fleet history\n```\n";
    let block = quick_start_block(readme).unwrap_or_else(|e| panic!("{e}"));
    let (build, run) = commands(&block).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(packages(build), ["a", "b"]);
    assert_eq!(run, ["fleet-local fleet   # the fleet", "shadow-fleet push list"]);
    let unknown = ["make stack-up".to_owned(), "cargo build x".to_owned(), "aws iot list-things".to_owned()];
    assert!(commands(&unknown).is_err_and(|e| e.contains("aws iot list-things")));
}

#[tokio::test]
async fn the_quick_start_runs_as_written_and_again() {
    let stack = Stack::get();
    let root = repo_root();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap_or_else(|e| panic!("README.md: {e}"));
    let block = quick_start_block(&readme).unwrap_or_else(|e| panic!("{e}"));
    let (build, lines) = commands(&block).unwrap_or_else(|e| panic!("{e}"));
    check_build_line(&root, build);
    let bin_dir = bin_dir();
    let mut env = stack.env.clone();
    env.remove("RUST_LOG");

    // Each run starts from the pushes' absence, whatever an earlier run or the demo left: the block's last line
    // pauses the rollout it started, and shadow-push refuses to pause a push that is paused already (exit 1).
    for push_id in started_pushes(&lines) {
        delete_push(&stack, &push_id).await;
    }
    for line in &lines {
        must_succeed(line, &run_line(line, &env, &bin_dir).await);
    }

    // A user who runs the starts again gets the same pushes back, not new ones: the same pushId with the same
    // request exits 0 and says so.
    for line in lines.iter().filter(|l| l.starts_with("shadow-fleet push start ")) {
        let ran = run_line(line, &env, &bin_dir).await;
        must_succeed(line, &ran);
        assert!(
            ran.stderr.contains("was started before with this same request"),
            "`{line}` again did not report the existing push:\n{}\n{}",
            ran.stdout,
            ran.stderr
        );
    }
}
