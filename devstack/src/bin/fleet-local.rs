//! Sets up and drives the local stack, with names from the environment (as `.local/stack.env` gives them):
//! `fleet-local setup` creates the tables and the queue that the functions use; `fleet-local demo` runs the story;
//! `fleet-local fleet` creates the demo's fleet and keeps it (the README's quick start pushes to it).

use shadow_aws::tables;

#[tokio::main]
async fn main() {
    let command = std::env::args().nth(1).unwrap_or_default();
    let result = match command.as_str() {
        "setup" => setup().await,
        "demo" => demo().await,
        "fleet" => fleet().await,
        _ => Err("usage: fleet-local setup|demo|fleet".to_owned()),
    };
    if let Err(e) = result {
        eprintln!("fleet-local: {e}");
        std::process::exit(1);
    }
}

async fn setup() -> Result<(), String> {
    let sdk = shadow_aws::sdk::load().await;
    let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
    for spec in tables::ALL {
        let name = std::env::var(spec.env_var).map_err(|_| format!("{} is not set", spec.env_var))?;
        tables::ensure_table(&dynamodb, &name, &spec).await.map_err(|e| format!("table {name}: {e}"))?;
    }
    if let Ok(url) = std::env::var("PUSH_QUEUE_URL") {
        let name = url.rsplit('/').next().unwrap_or_default().to_owned();
        aws_sdk_sqs::Client::new(&sdk)
            .create_queue()
            .queue_name(&name)
            .send()
            .await
            .map_err(|e| format!("queue {name}: {e}"))?;
    }
    Ok(())
}

/// The end-to-end story on the local stack (see `devstack::demo`).
async fn demo() -> Result<(), String> {
    println!("shadow-fleet demo on the local stack");
    devstack::demo::run(&devstack::Stack::get()).await.map(|_| ())
}

/// The demo's fleet, kept: thing group `prod` (and its child `prod-line2`), `Test-Device` among 50 things.
async fn fleet() -> Result<(), String> {
    devstack::demo::create_fleet(&devstack::Stack::get()).await?;
    println!(
        "fleet: 50 things (Test-Device, demo-device-01..49); 30 in thing group prod (10 via its child prod-line2)"
    );
    Ok(())
}
