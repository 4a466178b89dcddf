//! shadow-push: pushes desired settings to a fleet through the IoT data plane.

use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::{Value, json};
use shadow_runtime::config::{Env, Settings};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shadow_runtime::telemetry::init();
    let table = Env.required("PUSH_TABLE")?;
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| {
        let table = table.clone();
        async move { Ok::<_, lambda_runtime::Error>(json!({"table": table, "received": event.payload})) }
    }))
    .await
}
