//! `shadow-fleet push ...`: start (Lambda Invoke, synchronous and short: shadow-push records the push and queues its
//! first segment), watch (polls the record), show, list (the `recent-pushes` index), and the control messages
//! (Lambda Invoke, synchronous).

use std::io::Read;
use std::time::Duration;

use aws_sdk_lambda::{primitives::Blob, types::InvocationType};
use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use shadow_aws::DynamoPushReader;
use shadow_core::push::rollout::conflict_paths as conflict_paths_in;
use shadow_core::push::{Failure, JournalRef, PushState, validate_request};

use crate::checks;
use crate::error::CliError;
use crate::output::{self, Format};
use crate::progress::{Progress, compact, record_rows};
use crate::{Context, now_ms, view, when};

#[derive(Debug, Subcommand)]
pub enum PushCommand {
    /// Validate a push request locally (every problem listed, nothing sent), start it, print its push id. The start
    /// answers within seconds: a request shadow-push refuses (a thing group that does not exist, a rate over its
    /// quota, a pushId used by another request) is an error here, exit 1, and nothing was started.
    Start {
        /// The request file (see events/push/), or - for standard input.
        request: String,
        /// Then watch the push to its end (as `push watch`).
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        watch: WatchOptions,
    },
    /// A live progress bar from the push's record, then a summary. Exit 1 when things failed or the push stalled
    /// or was aborted. A paused push ends the watch, exit 0: it waits for `push resume`.
    Watch {
        #[arg(value_parser = checks::push_id)]
        push_id: String,
        #[command(flatten)]
        watch: WatchOptions,
    },
    /// Where the push stands, for an operator: one row per phase with the gate's thresholds, the bake's end, what
    /// happens next (--output json: the whole record); with --failures every failed thing, with --conflicts every
    /// thing a rollback left alone.
    Show {
        #[arg(value_parser = checks::push_id)]
        push_id: String,
        #[arg(long)]
        failures: bool,
        /// Every thing the push's rollback left alone (changed since by another writer), with the leaves' paths.
        #[arg(long)]
        conflicts: bool,
    },
    /// Recent pushes, newest first; with --state, the pushes in that state across the whole table.
    List {
        /// Pushes started since (an age such as 7d or 12h, an RFC 3339 time, a date); default 7d, or with --state
        /// every push the table holds.
        #[arg(long, value_name = "T", value_parser = checks::time)]
        since: Option<u64>,
        /// Only pushes in this state: open (not over: running, baking, paused, rolling back or stalled), paused,
        /// stalled (nothing resumes it), rolling-back.
        #[arg(long, value_enum, value_name = "STATE")]
        state: Option<StateFilter>,
        /// At most this many (at least 1).
        #[arg(long, default_value = "50", value_parser = checks::count, allow_hyphen_values = true)]
        limit: usize,
    },
    /// Pause a rollout (sends {"pausePush": ID} to shadow-push).
    Pause {
        #[arg(value_parser = checks::push_id)]
        push_id: String,
    },
    /// Resume a paused rollout (sends {"resumePush": ID}).
    Resume {
        #[arg(value_parser = checks::push_id)]
        push_id: String,
    },
    /// Abort a push (sends {"abortPush": ID}, with "rollback" only when --rollback or --no-rollback is given:
    /// without either, the push's own rollout.onAbort decides).
    Abort {
        #[arg(value_parser = checks::push_id)]
        push_id: String,
        /// Also set the targets back to what they held before the push.
        #[arg(long, conflicts_with = "no_rollback")]
        rollback: bool,
        /// Keep what was pushed, whatever the rollout's onAbort says.
        #[arg(long)]
        no_rollback: bool,
    },
}

/// The states `push list --state` selects, as an operator asks for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StateFilter {
    /// Not over: running, baking, paused, rolling back, or stalled.
    Open,
    Paused,
    /// Stopped after its segment kept dying: nothing resumes it but an operator.
    Stalled,
    RollingBack,
}

impl StateFilter {
    /// Whether the push whose record (as JSON) is `record` is in this state.
    pub fn holds(self, record: &Value) -> bool {
        let stalled = record.get("stalled").is_some_and(|s| !s.is_null());
        let complete = record.get("complete").and_then(Value::as_bool).unwrap_or(false);
        let state = record.get("state").and_then(|s| serde_json::from_value::<PushState>(s.clone()).ok());
        match self {
            // Records of pushes from before rollouts name no state: `complete` says whether they are over.
            Self::Open => stalled || state.map_or(!complete, |s| !s.is_final()),
            Self::Paused => !stalled && state == Some(PushState::Paused),
            Self::Stalled => stalled,
            Self::RollingBack => state == Some(PushState::RollingBack),
        }
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct WatchOptions {
    /// Seconds between two reads of the record (0.05 to 60).
    #[arg(long, default_value = "1", value_name = "SECONDS", value_parser = checks::interval, allow_hyphen_values = true)]
    interval: Duration,
    /// A running push whose lease ran out this many seconds ago without news is reported as stalled (1 to 604800).
    /// A paused push is never stalled: nothing runs until it is resumed.
    #[arg(long, default_value = "300", value_name = "SECONDS", value_parser = checks::stall_after,
          allow_hyphen_values = true)]
    stall_after: u64,
}

/// How long `push start --wait` waits for the record to appear: shadow-push wrote it before it answered the start.
const APPEAR_AFTER_START: Duration = Duration::from_secs(5);

pub async fn run(ctx: &Context, command: PushCommand) -> Result<i32, CliError> {
    match command {
        PushCommand::Start { request, wait, watch: options } => {
            let push_id = start(ctx, &request).await?;
            if wait { watch(ctx, &push_id, APPEAR_AFTER_START, &options).await } else { Ok(0) }
        }
        PushCommand::Watch { push_id, watch: options } => watch(ctx, &push_id, Duration::ZERO, &options).await,
        PushCommand::Show { push_id, failures, conflicts } => show(ctx, &push_id, failures, conflicts).await,
        PushCommand::List { since, state, limit } => {
            let since = since.unwrap_or_else(|| if state.is_some() { 0 } else { crate::now_secs() - 7 * 86_400 });
            list(ctx, since, state, limit).await
        }
        PushCommand::Pause { push_id } => control(ctx, "pause", json!({"pausePush": push_id})).await,
        PushCommand::Resume { push_id } => control(ctx, "resume", json!({"resumePush": push_id})).await,
        PushCommand::Abort { push_id, rollback, no_rollback } => {
            let mut message = json!({"abortPush": push_id});
            if rollback || no_rollback {
                message["rollback"] = json!(rollback);
            }
            control(ctx, "abort", message).await
        }
    }
}

/// A push id like the one shadow-push gives a request without one: `push-<epoch ms, hex>-<random>`.
fn new_push_id() -> String {
    format!("push-{:x}-{:016x}", now_ms(), rand::random::<u64>())
}

fn read_request(path: &str) -> Result<Value, CliError> {
    let text = if path == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| CliError::Failure(format!("cannot read the request from standard input: {e}")))?;
        text
    } else {
        std::fs::read_to_string(path).map_err(|e| CliError::Failure(format!("cannot read {path}: {e}")))?
    };
    let name = if path == "-" { "standard input" } else { path };
    serde_json::from_str(&text).map_err(|e| CliError::Failure(format!("{name} is not JSON: {e}")))
}

/// Validates the push request, refuses a pushId that names a push made with another request, and starts it with
/// a synchronous invocation that answers once shadow-push has recorded the push and queued its first segment;
/// returns its push id.
async fn start(ctx: &Context, path: &str) -> Result<String, CliError> {
    let mut request = read_request(path)?;
    // The function holds requests to its quota (PUSH_MAX_TPS): the deployed one with --stack (its PushMaxTps
    // parameter), else the environment's, else only the function checks it.
    let env_tps = std::env::var("PUSH_MAX_TPS").ok().and_then(|v| v.parse().ok());
    let known_tps = ctx.locations.push_max_tps.or(env_tps);
    let plan = validate_request(&request, known_tps.unwrap_or(u32::MAX), Some(&new_push_id)).map_err(|e| {
        let problems: Vec<String> = e.0.iter().map(|(field, reason)| format!("  {field}: {reason}")).collect();
        let quota = match ctx.locations.push_max_tps {
            Some(tps) if e.0.iter().any(|(f, _)| f == "maxRequestsPerSecond") => format!(
                "\n(the quota is the deployed one: {}'s parameter {} = {tps})",
                ctx.locations.origin,
                crate::locate::PUSH_MAX_TPS_PARAMETER
            ),
            _ => String::new(),
        };
        CliError::Failure(format!("the request is invalid, nothing was sent:\n{}{quota}", problems.join("\n")))
    })?;
    let chosen = request.get("pushId").is_some();
    let again = if chosen { same_request_again(ctx, &request, &plan, known_tps.is_some()).await? } else { false };
    // The id printed is the one used: a request without one gets it written in.
    if let Some(fields) = request.as_object_mut() {
        fields.entry("pushId").or_insert_with(|| Value::String(plan.push_id.clone()));
    }
    let function = ctx.locations.push_function()?;
    let invoked = aws_sdk_lambda::Client::new(&ctx.config)
        .invoke()
        .function_name(&function)
        .invocation_type(InvocationType::RequestResponse)
        .payload(Blob::new(json!({"startPush": request}).to_string()))
        .customize()
        .config_override(crate::invoke_timeouts(crate::INVOKE_WITHIN))
        .send()
        .await;
    let answer = match invoked {
        Ok(answer) => answer,
        Err(aws_sdk_lambda::error::SdkError::TimeoutError(_)) => {
            return Err(CliError::Failure(format!(
                "shadow-push did not answer within {} s: push {} may or may not have been recorded; see \
                 shadow-fleet push show {}, or run the same command again (with the same pushId it is the same push)",
                crate::INVOKE_WITHIN.as_secs(),
                plan.push_id,
                plan.push_id
            )));
        }
        Err(e) if e.as_service_error().is_some_and(|s| s.is_too_many_requests_exception()) => {
            return Err(CliError::Failure(format!(
                "push {} was not started: shadow-push is at its concurrency limit (segments of other pushes hold \
                 every slot); run the same command again in a moment",
                plan.push_id
            )));
        }
        Err(e) => return Err(lambda_error(&function, e)),
    };
    let payload = answer.payload().map(|p| p.as_ref().to_vec()).unwrap_or_default();
    let body: Value = serde_json::from_slice(&payload)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&payload).into_owned()));
    if let Some(kind) = answer.function_error() {
        return Err(start_refused(&plan.push_id, kind, &body));
    }
    let state = body.get("state").and_then(Value::as_str).unwrap_or("running").to_owned();
    match ctx.format {
        Format::Json => output::json_line(&json!({"pushId": plan.push_id, "statusCode": answer.status_code(),
                                                  "existing": again, "push": body})),
        Format::Table => {
            println!("{}", plan.push_id);
            if again {
                eprintln!(
                    "push {} was started before with this same request ({state}); nothing new was started; watch it: \
                     shadow-fleet push watch {}",
                    plan.push_id, plan.push_id
                );
            } else {
                eprintln!("push {} started; watch it: shadow-fleet push watch {}", plan.push_id, plan.push_id);
            }
        }
    }
    Ok(plan.push_id)
}

/// A pushId the request chose may name a push already: the same request again is that push (`true`: shadow-push
/// reports or resumes it); another request is refused here, before anything is sent, by the comparison shadow-push
/// makes (the digests of the two plans). Without a known push table only shadow-push compares (and refuses within
/// the same synchronous start).
async fn same_request_again(
    ctx: &Context,
    request: &Value,
    plan: &shadow_core::push::PushPlan,
    quota_known: bool,
) -> Result<bool, CliError> {
    use shadow_core::push::PushRecords;
    let Some(table) = ctx.locations.push_table.clone() else { return Ok(false) };
    let store = shadow_aws::DynamoPushStore::new(ctx.dynamodb(), table.clone(), None);
    let existing = store
        .load(&plan.push_id)
        .await
        .map_err(CliError::service(format!("reading push {} in table {table}", plan.push_id)))?;
    let Some(existing) = existing else { return Ok(false) };
    let recorded = existing.definition.plan().map_err(CliError::Failure)?;
    let mut mine = plan.clone();
    // A request without maxRequestsPerSecond gets the function's quota: when this side does not know it, the
    // recorded push's rate stands for it (a quota changed since is caught by shadow-push itself).
    if request.get("maxRequestsPerSecond").is_none() && !quota_known {
        mine.max_requests_per_second = recorded.max_requests_per_second;
    }
    let digest = &existing.definition.plan_digest;
    if digest.is_empty() || *digest == shadow_core::push::lifecycle::plan_digest(&mine) {
        return Ok(true);
    }
    Err(CliError::Failure(format!(
        "pushId {} names a push made with another request (started {}); nothing was sent: choose a new pushId, or \
         send the same request to report or resume that push (shadow-fleet push show {})",
        plan.push_id,
        when::format_ms(existing.record.status.started_at),
        plan.push_id
    )))
}

/// The error of a start that shadow-push answered with a function error: its reason, and whether a retry helps.
fn start_refused(push_id: &str, kind: &str, body: &Value) -> CliError {
    let error_type = body.get("errorType").and_then(Value::as_str).unwrap_or(kind);
    let message = body.get("errorMessage").and_then(Value::as_str).map_or_else(|| compact(body), str::to_owned);
    // shadow-push's requests errors say "invalid push request: `field` reason"; the reason reads better alone.
    let message = message.strip_prefix("invalid push request: ").unwrap_or(&message).to_owned();
    if error_type.starts_with("Final.") {
        CliError::Failure(format!("shadow-push refused push {push_id}, nothing was started: {message}"))
    } else if error_type.starts_with("Retryable.") {
        CliError::Failure(format!(
            "shadow-push could not start push {push_id} ({message}); this can pass: run the same command again \
             (with the same pushId it is the same push)"
        ))
    } else {
        CliError::Failure(format!(
            "shadow-push failed while starting push {push_id} ({error_type}: {message}); see its logs, and \
             shadow-fleet push show {push_id} for whether it was recorded"
        ))
    }
}

fn lambda_error<E>(function: &str, e: aws_sdk_lambda::error::SdkError<E>) -> CliError
where
    E: aws_sdk_lambda::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    if e.as_service_error().and_then(|s| s.code()) == Some("ResourceNotFoundException") {
        return CliError::Failure(format!("function {function} does not exist (PUSH_FUNCTION_NAME or --stack)"));
    }
    CliError::sdk(format!("invoking {function}"))(e)
}

/// A pause or abort while shadow-push is throttled: decided by the same state machine, and written on the record
/// with the same conditional update the function makes. The segment that holds the push sees it at its next renewal
/// (at most 3 s) and stops; a push that no segment holds (baking, or between segments) carries it out at its next
/// arrival, before anything else.
async fn written_directly(ctx: &Context, action: &str, message: &Value) -> Result<i32, CliError> {
    use shadow_core::push::PushRecords;
    use shadow_core::push::lifecycle::LeaseTiming;
    use shadow_core::push::machine::{self, Action, Effect, Event};
    let field = if action == "pause" { "pausePush" } else { "abortPush" };
    let push_id = message[field].as_str().unwrap_or_default();
    let table = ctx.locations.push_table()?;
    let store = shadow_aws::DynamoPushStore::new(ctx.dynamodb(), table.clone(), None);
    let failed = |what: String| CliError::service(what);
    let record = store.load(push_id).await.map_err(failed(format!("reading push {push_id} in table {table}")))?;
    let stored = record.ok_or_else(|| unknown(push_id, &table))?;
    let (plan, record) = (stored.definition.plan().map_err(CliError::Failure)?, stored.record);
    let act = match action {
        "pause" => Action::Pause,
        _ => Action::Abort { rollback: message.get("rollback").and_then(Value::as_bool) },
    };
    // The timing matters only to segments' events, not to a control's.
    let timing = LeaseTiming { lease_ms: 30_000, hand_off_grace_ms: 60_000 };
    // The CLI writes no retention walk: the function refuses what the retention forbids when it carries it out.
    let at = machine::Context { now_ms: now_ms(), timing, retention_s: None };
    let effects = machine::step(&record, &plan, Event::Control(act), at)
        .map_err(|r| CliError::Failure(format!("shadow-push would refuse to {action}: {r}")))?;
    for effect in effects {
        if let Effect::RequestControl(control) = effect {
            let written = store
                .request_control(push_id, control)
                .await
                .map_err(failed(format!("writing the {action} on push {push_id}")))?;
            if !written {
                return Err(CliError::Failure(format!(
                    "push {push_id} cannot take the {action} now (another control is pending, or it moved on)"
                )));
            }
            let note = "shadow-push is at its concurrency limit, so the control was written on the record: the \
                        segment holding the push stops at its next renewal (within 3 s); a push that no segment \
                        holds carries it out at its next wake-up, before anything else";
            match ctx.format {
                Format::Json => output::json_line(&json!({"pushId": push_id, "requested": format!("{control:?}"),
                                                          "written": "record", "note": note})),
                Format::Table => println!("{action} written on push {push_id}'s record.\n{note}"),
            }
        }
    }
    Ok(0)
}

fn reader(ctx: &Context) -> Result<(DynamoPushReader, String), CliError> {
    let table = ctx.locations.push_table()?;
    Ok((DynamoPushReader::new(ctx.dynamodb(), table.clone()), table))
}

async fn record(reader: &DynamoPushReader, table: &str, push_id: &str) -> Result<Option<Value>, CliError> {
    reader.record(push_id).await.map_err(CliError::service(format!("reading push {push_id} in table {table}")))
}

fn unknown(push_id: &str, table: &str) -> CliError {
    CliError::Failure(format!("no push {push_id} in table {table}"))
}

async fn watch(ctx: &Context, push_id: &str, appear: Duration, options: &WatchOptions) -> Result<i32, CliError> {
    let (reader, table) = reader(ctx)?;
    let interval = options.interval;
    let waited_since = tokio::time::Instant::now();
    let mut current = loop {
        if let Some(found) = record(&reader, &table, push_id).await? {
            break found;
        }
        if waited_since.elapsed() >= appear {
            return Err(if appear.is_zero() {
                unknown(push_id, &table)
            } else {
                CliError::Failure(format!(
                    "push {push_id} has no record in table {table} {} s after shadow-push answered that it started \
                     it: is PUSH_TABLE (or --stack) the table that function writes?",
                    appear.as_secs()
                ))
            });
        }
        tokio::time::sleep(interval).await;
    };
    let bar = ProgressBar::new(0);
    let mut last_line = Value::Null;
    let stalled = loop {
        let progress = Progress::from_record(&current, now_ms()).map_err(CliError::Failure)?;
        match ctx.format {
            Format::Json => {
                let line = progress.to_json();
                if line != last_line {
                    let mut shown = line.clone();
                    shown["kind"] = json!("progress");
                    output::json_line(&shown);
                    last_line = line;
                }
            }
            Format::Table => draw(&bar, &progress),
        }
        // Paused: nothing runs until an operator resumes it, however long that takes, so there is nothing to wait for.
        if progress.finished() || progress.paused() {
            break None;
        }
        let lease = current.get("leaseUntil").and_then(Value::as_u64).unwrap_or(u64::MAX);
        if now_ms().saturating_sub(lease) > options.stall_after.saturating_mul(1000) {
            break Some(format!(
                "the push looks stalled: no segment has held it since {} ({} s); shadow-push's sweeper resumes \
                 such pushes every minute on AWS",
                when::format_ms(lease),
                options.stall_after
            ));
        }
        tokio::time::sleep(interval).await;
        current = record(&reader, &table, push_id).await?.ok_or_else(|| unknown(push_id, &table))?;
    };
    bar.finish_and_clear();
    let progress = Progress::from_record(&current, now_ms()).map_err(CliError::Failure)?;
    let failures = if progress.failed() > 0 {
        let at = JournalRef::new(push_id, DynamoPushReader::journal_shards(&current));
        reader.failures(at).await.map_err(CliError::service(format!("reading the failures of push {push_id}")))?
    } else {
        Vec::new()
    };
    match ctx.format {
        Format::Json => {
            let mut summary = progress.to_json();
            summary["kind"] = json!("summary");
            summary["record"] = current.clone();
            summary["failures"] = failures_json(&failures);
            output::json_line(&summary);
        }
        Format::Table => {
            println!("{}", output::fields(&record_rows(&current)));
            if !failures.is_empty() {
                println!("{}", failures_table(&failures, 20));
            }
        }
    }
    if progress.paused() {
        if let Some(failed) = progress.trouble() {
            eprintln!("so far, {failed}");
        }
        eprintln!(
            "push {push_id} is paused: nothing runs until it is resumed (`shadow-fleet push resume {push_id}`), \
             then watch it again"
        );
        return Ok(0);
    }
    match stalled.or_else(|| progress.trouble()) {
        Some(trouble) => {
            eprintln!("{trouble}");
            Ok(1)
        }
        None => Ok(0),
    }
}

fn draw(bar: &ProgressBar, progress: &Progress) {
    let style = match progress.total {
        Some(total) => {
            bar.set_length(total);
            ProgressStyle::with_template("{spinner} {prefix} [{bar:30}] {pos}/{len} things · {msg}")
        }
        None => ProgressStyle::with_template("{spinner} {prefix} {pos} things so far · {msg}"),
    };
    if let Ok(style) = style {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(progress.push_id.clone());
    bar.set_position(progress.done);
    bar.set_message(progress.message());
    bar.tick();
}

fn failures_json(failures: &[Failure]) -> Value {
    Value::Array(
        failures.iter().map(|f| json!({"thingName": f.thing_name, "code": f.code, "message": f.message})).collect(),
    )
}

fn failures_table(failures: &[Failure], cap: usize) -> comfy_table::Table {
    let mut table = output::table(&["failed thing", "code", "message"]);
    for failure in failures.iter().take(cap) {
        table.add_row(vec![failure.thing_name.as_str(), failure.code.as_str(), failure.message.as_str()]);
    }
    if failures.len() > cap {
        table.add_row(vec![format!("… {} more: push show --failures", failures.len() - cap)]);
    }
    table
}

async fn show(ctx: &Context, push_id: &str, with_failures: bool, with_conflicts: bool) -> Result<i32, CliError> {
    let (reader, table) = reader(ctx)?;
    let found = record(&reader, &table, push_id).await?.ok_or_else(|| unknown(push_id, &table))?;
    let at = JournalRef::new(push_id, DynamoPushReader::journal_shards(&found));
    let failures = if with_failures {
        reader.failures(at).await.map_err(CliError::service(format!("reading the failures of push {push_id}")))?
    } else {
        Vec::new()
    };
    let conflicts = if with_conflicts {
        reader.conflicts(at).await.map_err(CliError::service(format!("reading the conflicts of push {push_id}")))?
    } else {
        Vec::new()
    };
    match ctx.format {
        Format::Json => {
            let mut shown = found;
            if with_failures {
                shown["failures"] = failures_json(&failures);
            }
            if with_conflicts {
                shown["conflicts"] = conflicts_json(&conflicts);
            }
            output::json_line(&shown);
        }
        Format::Table => {
            let view = view::describe(&found, now_ms()).map_err(CliError::Failure)?;
            let fields = |rows: &[(String, String)]| {
                let mut table = output::fields(rows);
                // Not a terminal (a pipe, a file): lines a terminal of 120 columns shows whole.
                if table.width().is_none() {
                    table.set_width(120);
                }
                table
            };
            println!("{}", fields(&view.fields));
            if !view.phases.is_empty() {
                let mut phases = output::table(&view::PHASE_COLUMNS);
                for row in view.phases {
                    phases.add_row(row);
                }
                println!("{phases}");
            }
            println!("{}", fields(&view.after));
            if with_failures {
                if failures.is_empty() {
                    println!("no failed things");
                } else {
                    println!("{}", failures_table(&failures, usize::MAX));
                }
            }
            if with_conflicts {
                if conflicts.is_empty() {
                    println!("no rollback conflicts");
                } else {
                    println!("{}", conflicts_table(&conflicts));
                }
            }
        }
    }
    Ok(0)
}

/// A conflict's leaves, from its message; the message itself when it names none (a form this CLI does not know).
fn conflict_paths(conflict: &Failure) -> Vec<String> {
    let paths = conflict_paths_in(&conflict.message);
    if paths.is_empty() { vec![conflict.message.clone()] } else { paths }
}

fn conflicts_json(conflicts: &[Failure]) -> Value {
    Value::Array(
        conflicts
            .iter()
            .map(|c| {
                json!({"thingName": c.thing_name, "code": c.code, "paths": conflict_paths(c), "message": c.message})
            })
            .collect(),
    )
}

fn conflicts_table(conflicts: &[Failure]) -> comfy_table::Table {
    let mut table = output::table(&["thing left alone by the rollback", "changed since by another writer"]);
    for conflict in conflicts {
        table.add_row(vec![conflict.thing_name.clone(), conflict_paths(conflict).join("\n")]);
    }
    table
}

async fn list(ctx: &Context, since: u64, state: Option<StateFilter>, limit: usize) -> Result<i32, CliError> {
    let (reader, table) = reader(ctx)?;
    let records = reader
        .recent_where(since.saturating_mul(1000), limit, |r| state.is_none_or(|s| s.holds(r)))
        .await
        .map_err(CliError::service(format!("listing pushes in table {table}")))?;
    match ctx.format {
        Format::Json => records.iter().for_each(output::json_line),
        Format::Table => {
            if records.is_empty() {
                let which = state
                    .and_then(|s| clap::ValueEnum::to_possible_value(&s))
                    .map(|v| format!(" {}", v.get_name()))
                    .unwrap_or_default();
                if since == 0 {
                    eprintln!("no{which} pushes in table {table}");
                } else {
                    eprintln!("no{which} pushes since {}", when::format_seconds(since));
                }
                return Ok(0);
            }
            let mut shown =
                output::table(&["push id", "started", "shadow", "state", "targets", "updated", "unchanged", "failed"]);
            for r in &records {
                let progress = Progress::from_record(r, now_ms()).map_err(CliError::Failure)?;
                let state = progress.state.map(|s| s.as_str().to_owned()).unwrap_or_else(|| {
                    if progress.stalled.is_some() {
                        "stalled".into()
                    } else if progress.status.complete {
                        "complete".into()
                    } else {
                        "running".into()
                    }
                });
                let get = |k: &str| r.get(k).map(compact).unwrap_or_default();
                let started = r.get("startedAt").and_then(Value::as_u64).map(when::format_ms).unwrap_or_default();
                let shadow = r.get("shadowName").and_then(Value::as_str).unwrap_or("(classic)").to_owned();
                shown.add_row(vec![
                    get("pushId"),
                    started,
                    shadow,
                    state,
                    get("targets"),
                    get("updated"),
                    get("unchanged"),
                    get("failed"),
                ]);
            }
            println!("{shown}");
        }
    }
    Ok(0)
}

/// Sends a control message to shadow-push and prints its answer; a function error is reported, exit 1.
async fn control(ctx: &Context, action: &str, message: Value) -> Result<i32, CliError> {
    let function = ctx.locations.push_function()?;
    let invoked = aws_sdk_lambda::Client::new(&ctx.config)
        .invoke()
        .function_name(&function)
        .invocation_type(InvocationType::RequestResponse)
        .payload(Blob::new(message.to_string()))
        .customize()
        .config_override(crate::invoke_timeouts(crate::INVOKE_WITHIN))
        .send()
        .await;
    let answer = match invoked {
        Ok(answer) => answer,
        // Every reserved slot of shadow-push is busy (segments of long pushes): a pause or abort cannot wait for one.
        Err(e) if action != "resume" && e.as_service_error().is_some_and(|s| s.is_too_many_requests_exception()) => {
            return written_directly(ctx, action, &message).await;
        }
        Err(e) => return Err(lambda_error(&function, e)),
    };
    let payload = answer.payload().map(|p| p.as_ref().to_vec()).unwrap_or_default();
    let body: Value = serde_json::from_slice(&payload)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&payload).into_owned()));
    if let Some(kind) = answer.function_error() {
        let error_type = body.get("errorType").and_then(Value::as_str).unwrap_or(kind);
        let error_message = body.get("errorMessage").and_then(Value::as_str).map(str::to_owned);
        return Err(CliError::Failure(format!(
            "shadow-push refused to {action}: {error_type}: {}",
            error_message.unwrap_or_else(|| compact(&body))
        )));
    }
    match ctx.format {
        Format::Json => output::json_line(&body),
        Format::Table => match &body {
            Value::Object(_) => {
                let rows: Vec<(String, String)> =
                    body.as_object().into_iter().flatten().map(|(k, v)| (k.clone(), compact(v))).collect();
                println!("{}", output::fields(&rows));
            }
            other => println!("{}", compact(other)),
        },
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_state_filter_takes_the_pushes_in_that_state() {
        let record = |extra: Value| {
            let mut r = json!({"pushId": "p", "complete": false});
            if let (Some(r), Some(e)) = (r.as_object_mut(), extra.as_object()) {
                r.extend(e.clone());
            }
            r
        };
        let running = record(json!({"state": "running"}));
        let baking = record(json!({"state": "baking", "complete": true}));
        let paused = record(json!({"state": "paused"}));
        let stalled = record(json!({"state": "running", "stalled": "segment 2 died 3 times"}));
        let rolling_back = record(json!({"state": "rollingBack"}));
        let complete = record(json!({"state": "complete", "complete": true}));
        let aborted = record(json!({"state": "aborted"}));
        let rolled_back = record(json!({"state": "rolledBack", "complete": true}));
        let old_open = record(json!({}));
        let old_done = record(json!({"complete": true}));
        let all = [
            ("running", &running),
            ("baking", &baking),
            ("paused", &paused),
            ("stalled", &stalled),
            ("rollingBack", &rolling_back),
            ("complete", &complete),
            ("aborted", &aborted),
            ("rolledBack", &rolled_back),
            ("no state, not complete", &old_open),
            ("no state, complete", &old_done),
        ];
        let taken = |filter: StateFilter| -> Vec<&str> {
            all.iter().filter(|(_, r)| filter.holds(r)).map(|(name, _)| *name).collect()
        };
        assert_eq!(
            taken(StateFilter::Open),
            ["running", "baking", "paused", "stalled", "rollingBack", "no state, not complete"]
        );
        assert_eq!(taken(StateFilter::Paused), ["paused"]);
        assert_eq!(taken(StateFilter::Stalled), ["stalled"]);
        assert_eq!(taken(StateFilter::RollingBack), ["rollingBack"]);
    }
}
