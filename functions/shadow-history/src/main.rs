//! shadow-history: records every shadow change that an IoT Rule (directly, or through SQS) hands it.

mod config;
mod handler;

use lambda_runtime::{LambdaEvent, service_fn};
use shadow_aws::DynamoHistoryStore;
use shadow_runtime::event::Payload;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shadow_runtime::telemetry::init();
    let config = config::Config::from_settings(&shadow_runtime::config::Env)?;
    let store = DynamoHistoryStore::from_sdk(&shadow_aws::sdk::load().await, &config.table);
    lambda_runtime::run(service_fn(|event: LambdaEvent<Payload>| handler::handle(&store, &config, event))).await
}
