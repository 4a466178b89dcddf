//! The local stack's Lambda (`make stack-up` starts it, `make stack-down` stops it):
//!
//! - the Lambda Invoke API for shadow-history and shadow-push (the debug binaries next to this one), each run
//!   under a local Runtime API with the settings of the stack's file, their timeouts as in `template.yaml`, async
//!   invocations retried twice (after 1 and 2 minutes);
//! - the hand-off queue (`PUSH_QUEUE_URL`) drained into shadow-push as the event source mapping drains it, and the
//!   sweeper's schedule (`{"sweepPushes": true}` every minute);
//! - the rules-engine stand-in in front of moto's data plane: every accepted shadow update is invoked on
//!   shadow-history asynchronously through this Invoke API, as the IoT rule's Lambda action does;
//! - the Device Shadow service's MQTT topics on the stack's broker (`IOT_MQTT_ENDPOINT`, `IOT_MQTT_PORT`, with the
//!   service's certificate from `LOCAL_MQTT_DIR`), on the same shadows and through the same stand-in.
//!
//! `local-lambda SETTINGS_FILE` (the stack's `.local/stack.env`: the functions' environment, and
//! `HISTORY_FUNCTION_NAME`, `PUSH_FUNCTION_NAME`, `PUSH_QUEUE_URL`). Where it listens: `LOCAL_LAMBDA_ADDR` (the
//! Invoke API), `LOCAL_RULES_ADDR` (the data-plane endpoint with the rules), `LOCAL_RULES_UPSTREAM` (moto). Logs
//! go to standard error, `LOCAL_LAMBDA_LOG` filters them (default `info`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use aws_smithy_types::Blob;
use devstack::lambda::binary_path;
use devstack::local_lambda::{Deployment, FunctionSpec, LocalLambdaService, QueueMapping, Schedule, StartError};
use devstack::mqtt_ca::{CaError, LocalCa};
use devstack::rules::{BrokerLink, RulesEngine};
use devstack::service::Timing;
use devstack::stack::{StackDown, read_env};
use serde_json::json;
use tokio::signal::unix::{SignalKind, signal};

/// Lambda's async retries: about 1 and 2 minutes after a failure.
const RETRIES: [Duration; 2] = [Duration::from_secs(60), Duration::from_secs(120)];

/// shadow-history as `template.yaml` deploys it: 30 s.
const HISTORY: Timing = Timing {
    timeout: Duration::from_secs(30),
    retries: RETRIES,
    visibility: Duration::from_secs(180),
    schedule_every: Duration::from_secs(60),
    poll_every: Duration::from_secs(1),
};

/// shadow-push as `template.yaml` deploys it: 900 s, the hand-off queue's visibility timeout 5400 s, the sweeper
/// every minute.
const PUSH: Timing = Timing {
    timeout: Duration::from_secs(900),
    retries: RETRIES,
    visibility: Duration::from_secs(5400),
    schedule_every: Duration::from_secs(60),
    poll_every: Duration::from_secs(1),
};

#[derive(Debug, thiserror::Error)]
enum Error {
    #[error("usage: local-lambda SETTINGS_FILE (the stack's .local/stack.env)")]
    Usage,
    #[error(transparent)]
    Settings(#[from] StackDown),
    #[error("{0} is not set")]
    Missing(&'static str),
    #[error("{name} is not an address: {value}")]
    Address { name: &'static str, value: String },
    #[error(transparent)]
    Start(#[from] StartError),
    #[error("the rules stand-in cannot listen on {addr}")]
    Rules {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the local CA in LOCAL_MQTT_DIR")]
    Ca(#[from] CaError),
    #[error("waiting for a signal")]
    Signal(#[source] std::io::Error),
}

#[tokio::main]
async fn main() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("LOCAL_LAMBDA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    if let Err(e) = run().await {
        let mut message = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(cause) = source {
            message.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        eprintln!("local-lambda: {message}");
        std::process::exit(1);
    }
}

fn address(name: &'static str) -> Result<SocketAddr, Error> {
    let value = std::env::var(name).map_err(|_| Error::Missing(name))?;
    value.parse().map_err(|_| Error::Address { name, value })
}

async fn run() -> Result<(), Error> {
    let path = std::env::args().nth(1).map(PathBuf::from).ok_or(Error::Usage)?;
    let settings = read_env(&path)?;
    let setting = |name: &'static str| settings.get(name).cloned().ok_or(Error::Missing(name));
    let (history, push, queue_url) =
        (setting("HISTORY_FUNCTION_NAME")?, setting("PUSH_FUNCTION_NAME")?, setting("PUSH_QUEUE_URL")?);
    let lambda_addr = address("LOCAL_LAMBDA_ADDR")?;
    let rules_addr = address("LOCAL_RULES_ADDR")?;
    let upstream = std::env::var("LOCAL_RULES_UPSTREAM").map_err(|_| Error::Missing("LOCAL_RULES_UPSTREAM"))?;

    let env: Vec<(String, String)> = settings.clone().into_iter().collect();
    let function = |name: &str, binary: &str, timing: Timing, concurrency: usize| FunctionSpec {
        name: name.to_owned(),
        binary: binary_path(binary),
        env: env.clone(),
        timing,
        concurrency,
        on_failure: None,
    };
    let sdk = shadow_aws::sdk::load().await;
    let deployment = Deployment {
        functions: vec![function(&history, "shadow-history", HISTORY, 4), function(&push, "shadow-push", PUSH, 2)],
        queues: vec![QueueMapping { function: push.clone(), queue_url }],
        schedules: vec![Schedule { function: push.clone(), event: json!({"sweepPushes": true}) }],
        sqs: aws_sdk_sqs::Client::new(&sdk),
        region: settings.get("AWS_REGION").cloned().unwrap_or_else(|| "ap-northeast-1".into()),
    };
    let service = LocalLambdaService::start(lambda_addr, deployment).await?;
    let region = settings.get("AWS_REGION").cloned().unwrap_or_else(|| "ap-northeast-1".into());
    let broker =
        match (settings.get("IOT_MQTT_ENDPOINT"), settings.get("IOT_MQTT_PORT"), settings.get("LOCAL_MQTT_DIR")) {
            (Some(host), Some(port), Some(dir)) => {
                let port = port.parse().map_err(|_| Error::Address { name: "IOT_MQTT_PORT", value: port.clone() })?;
                let ca = LocalCa::open(std::path::Path::new(dir))?;
                let service = ca.service()?;
                Some(BrokerLink {
                    host: host.clone(),
                    port,
                    ca: ca.certificate().to_owned(),
                    certificate: service.certificate,
                    private_key: service.private_key,
                    region: region.clone(),
                })
            }
            _ => None,
        };
    let (rules, mut accepted) = RulesEngine::start_at(rules_addr, &upstream, broker)
        .await
        .map_err(|source| Error::Rules { addr: rules_addr, source })?;

    // The rule's Lambda action: an asynchronous Invoke of shadow-history, through the Invoke API like any caller.
    let lambda = aws_sdk_lambda::Client::from_conf(
        aws_sdk_lambda::config::Builder::from(&sdk).endpoint_url(&service.url).build(),
    );
    let deliveries = tokio::spawn(async move {
        while let Some(event) = accepted.recv().await {
            let topic = event["topic"].as_str().unwrap_or_default().to_owned();
            let sent = lambda
                .invoke()
                .function_name(&history)
                .invocation_type(aws_sdk_lambda::types::InvocationType::Event)
                .payload(Blob::new(event.to_string()))
                .send()
                .await;
            match sent {
                Ok(_) => tracing::debug!(%topic, "rule delivered the event"),
                // On AWS the rule's ErrorAction would get it.
                Err(e) => {
                    tracing::warn!(%topic, error = %aws_smithy_types::error::display::DisplayErrorContext(&e), "rule could not invoke shadow-history")
                }
            }
        }
    });
    tracing::info!(lambda = %service.url, rules = %rules.url, %upstream, "local Lambda ready");

    let mut terminate = signal(SignalKind::terminate()).map_err(Error::Signal)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(Error::Signal)?;
    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
    tracing::info!("stopping");
    deliveries.abort();
    service.stop().await;
    Ok(())
}
