//! `shadow-fleet`: the operator's command line. Start, watch and steer pushes; read a shadow's history and its
//! current document. Exit codes: 0 success, 1 a failure to look at, 2 bad usage.

mod checks;
mod diff;
mod dlq;
mod drift;
mod error;
mod history;
mod locate;
mod output;
mod point;
mod progress;
mod push;
mod shadow;
mod view;
mod when;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, SdkConfig};
use aws_credential_types::provider::ProvideCredentials;
use clap::{Parser, Subcommand};

use error::CliError;
use locate::Locations;
use output::Format;

#[derive(Debug, Parser)]
#[command(
    name = "shadow-fleet",
    version,
    about = "Start, watch and steer shadow pushes; read shadow history",
    after_help = "Tables and functions come from --stack NAME (a deployed stack's outputs) or, without it, from \
                  HISTORY_TABLE, PUSH_TABLE and PUSH_FUNCTION_NAME. Credentials and region: the standard AWS chain, \
                  or --profile and --region as for the AWS CLI."
)]
struct Cli {
    /// Output for people (table) or for scripts (json: one object per line).
    #[arg(long, global = true, value_enum, default_value_t = Format::Table)]
    output: Format,
    /// Read table and function names from this deployed CloudFormation stack's outputs.
    #[arg(long, global = true, value_name = "NAME")]
    stack: Option<String>,
    /// Use this profile of the AWS config and credentials files, over AWS_PROFILE and any credentials in the
    /// environment (as the AWS CLI's --profile).
    #[arg(long, global = true, value_name = "NAME", value_parser = checks::profile)]
    profile: Option<String>,
    /// The AWS region, over AWS_REGION, AWS_DEFAULT_REGION and the profile's (as the AWS CLI's --region).
    #[arg(long, global = true, value_name = "NAME", value_parser = checks::region)]
    region: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Pushes: start, watch, show, list, pause, resume, abort.
    Push {
        #[command(subcommand)]
        command: push::PushCommand,
    },
    /// One shadow's history, oldest first, with what each event changed.
    History(history::HistoryArgs),
    /// Which things' reported state does not hold their desired state, key by key, and since when. Read-only.
    Drift(drift::DriftArgs),
    /// Shadow documents.
    Shadow {
        #[command(subcommand)]
        command: shadow::ShadowCommand,
    },
    /// The messages a function's dead-letter and on-failure queues keep: why each failed, and their replay.
    Dlq {
        #[command(subcommand)]
        command: dlq::DlqCommand,
    },
}

/// What every command works with.
pub struct Context {
    pub config: SdkConfig,
    pub locations: Locations,
    pub format: Format,
}

impl Context {
    pub fn dynamodb(&self) -> aws_sdk_dynamodb::Client {
        aws_sdk_dynamodb::Client::new(&self.config)
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

pub fn now_secs() -> u64 {
    now_ms() / 1000
}

/// The standard AWS chain (environment, profile, SSO, container and instance roles), with the SDK's own retries:
/// a person waits anyway. `--profile` takes the credentials from that profile only (not the environment's) and
/// its region unless the environment or `--region` gives one; `--region` is the region. Region and credentials are
/// checked first, so their absence is said plainly.
async fn sdk_config(profile: Option<&str>, region: Option<&str>) -> Result<SdkConfig, CliError> {
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).timeout_config(call_timeouts(CALL_WITHIN));
    if let Some(profile) = profile {
        let credentials = aws_config::profile::ProfileFileCredentialsProvider::builder().profile_name(profile).build();
        loader = loader.profile_name(profile).credentials_provider(credentials);
    }
    if let Some(region) = region {
        loader = loader.region(aws_config::Region::new(region.to_owned()));
    }
    let config = loader.load().await;
    if config.region().is_none() {
        let profile = profile.map(|p| format!(" (profile {p} has none)")).unwrap_or_default();
        return Err(CliError::Failure(format!(
            "no AWS region{profile}: pass --region, set AWS_REGION (or AWS_DEFAULT_REGION), or a region in your AWS \
             profile"
        )));
    }
    let Some(credentials) = config.credentials_provider() else {
        return Err(CliError::Failure("no AWS credentials provider is configured".into()));
    };
    if let Err(e) = credentials.provide_credentials().await {
        let causes = error::causes(&e);
        return Err(CliError::Failure(match profile {
            Some(profile) => format!(
                "no AWS credentials from profile {profile}: {causes}; check the name (`aws configure list-profiles`) \
                 and the profile in ~/.aws/config and ~/.aws/credentials (or AWS_CONFIG_FILE, \
                 AWS_SHARED_CREDENTIALS_FILE)"
            ),
            None => format!(
                "no AWS credentials: {causes}; configure them as for the AWS CLI (--profile, AWS_PROFILE, `aws \
                 configure`, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)"
            ),
        }));
    }
    Ok(config)
}

/// How long one AWS call may take, its SDK retries included; an attempt gets a third of it. A person waits on every
/// call, and an endpoint that does not answer must end in an error that says so, not a hung terminal.
pub const CALL_WITHIN: Duration = Duration::from_secs(60);

/// How long `push start`, `push pause|resume|abort` and a replay of a history event wait for the function's answer:
/// shadow-push answers a start within PUSH_ANSWER_MS (20 s by default) and a control within its 8 s wait, plus a
/// cold start and the record's write.
pub const INVOKE_WITHIN: Duration = Duration::from_secs(45);

/// Connect in 5 s; each attempt at most a third of `within`; all attempts together `within`.
pub fn call_timeouts(within: Duration) -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(5))
        .operation_attempt_timeout(within / 3)
        .operation_timeout(within)
        .build()
}

/// The same for a synchronous Lambda invocation that may take `within`: an attempt may take all of it, so one that
/// times out is not tried again (a throttled one still is, within the same bound).
pub fn invoke_timeouts(within: Duration) -> aws_sdk_lambda::config::Builder {
    aws_sdk_lambda::config::Builder::default().timeout_config(
        TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(5))
            .operation_attempt_timeout(within)
            .operation_timeout(within)
            .build(),
    )
}

async fn run(cli: Cli) -> Result<i32, CliError> {
    let config = sdk_config(cli.profile.as_deref(), cli.region.as_deref()).await?;
    let locations = match &cli.stack {
        Some(name) => Locations::from_stack(&config, name).await?,
        None => Locations::from_env(),
    };
    let ctx = Context { config, locations, format: cli.output };
    match cli.command {
        Command::Push { command } => push::run(&ctx, command).await,
        Command::History(args) => history::run(&ctx, args).await,
        Command::Shadow { command } => shadow::run(&ctx, command).await,
        Command::Drift(args) => drift::run(&ctx, args).await,
        Command::Dlq { command } => dlq::run(&ctx, command).await,
    }
}

/// A reader that stops early (`shadow-fleet history .. | head`) ends the process quietly, as it ends every Unix
/// tool, instead of a failed print. Rust ignores SIGPIPE, so that every write to a closed pipe is an error, and
/// `println!` panics on it.
fn die_quietly_on_a_closed_pipe() {
    #[cfg(unix)]
    // SAFETY: restoring a signal's default disposition at startup, before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() {
    die_quietly_on_a_closed_pipe();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
    let code = match runtime {
        Ok(runtime) => match runtime.block_on(run(cli)) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("error: {}", e.report());
                e.exit_code()
            }
        },
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            1
        }
    };
    std::process::exit(code);
}
