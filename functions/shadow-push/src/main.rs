//! shadow-push: pushes desired settings to a fleet through the IoT data plane, paced under the account's quota,
//! handing long pushes on to itself through its queue.

use lambda_runtime::{LambdaEvent, service_fn};
use shadow_aws::{DataPlaneShadows, DynamoPushStore, IotRegistry, SqsHandOff};
use shadow_push::{config, handler};
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
    let sdk = shadow_aws::sdk::load().await;
    let iot = aws_sdk_iot::Client::new(&sdk);
    let services = handler::Services {
        shadows: DataPlaneShadows::connect(&sdk, config.data_endpoint.as_deref(), &iot).await?,
        registry: IotRegistry::new(iot),
        store: DynamoPushStore::new(aws_sdk_dynamodb::Client::new(&sdk), &config.table, config.retention_days)
            .with_partition_pacing(shadow_core::push::journal::pacing_units(config.partition_wps)),
        hand_off: SqsHandOff::new(aws_sdk_sqs::Client::new(&sdk), &config.queue_url),
        clock: shadow_core::clock::Clock::system(),
    };
    lambda_runtime::run(service_fn(|event: LambdaEvent<Payload>| services.handle(&config, event))).await
}
