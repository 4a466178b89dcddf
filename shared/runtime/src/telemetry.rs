//! Structured JSON logs on stdout, one line per decision; Lambda's JSON log format keeps them as they are.

use tracing_subscriber::EnvFilter;

/// Installs the JSON subscriber. The level comes from `RUST_LOG`, else Lambda's `AWS_LAMBDA_LOG_LEVEL`, else info.
pub fn init() {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .or_else(|| std::env::var("AWS_LAMBDA_LOG_LEVEL").ok().map(|l| l.to_lowercase()))
        .and_then(|spec| EnvFilter::try_new(spec).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    // A second init (tests) keeps the first subscriber.
    let _ = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_target(false)
        .with_env_filter(filter)
        .try_init();
}
