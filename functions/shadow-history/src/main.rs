//! shadow-history: records every shadow change that an IoT Rule (directly, or through SQS) hands it.

mod config;
mod handler;

use lambda_runtime::{LambdaEvent, service_fn};
use shadow_aws::DynamoHistoryStore;
use shadow_runtime::event::Payload;

// mimalloc, not glibc's malloc: allocation took about a quarter of the CPU per pushed thing (docs/benchmarks.md,
// "Where the CPU goes").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

// One thread: a function on Lambda gets a share of a core by its memory, and a second worker thread only adds wake-ups
// between threads (futexes, work stealing) that the same share pays for (docs/benchmarks.md, "Where the CPU goes").
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    shadow_runtime::telemetry::init();
    let config = config::Config::from_settings(&shadow_runtime::config::Env)?;
    let store = DynamoHistoryStore::from_sdk(&shadow_aws::sdk::load().await, &config.table);
    lambda_runtime::run(service_fn(|event: LambdaEvent<Payload>| handler::handle(&store, &config, event))).await
}
