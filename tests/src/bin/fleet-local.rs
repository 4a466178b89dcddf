//! Sets up and drives the local stack, with names from the environment (as `.local/stack.env` gives them):
//! `fleet-local setup` creates the tables and the queue that the functions use; `fleet-local demo` runs the story.

use shadow_aws::tables;

#[tokio::main]
async fn main() {
    let command = std::env::args().nth(1).unwrap_or_default();
    let result = match command.as_str() {
        "setup" => setup().await,
        "demo" => demo().await,
        _ => Err("usage: fleet-local setup|demo".to_owned()),
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

/// Delivers the seed article's update to shadow-history, as the IoT Rule would, twice (a redelivery), and prints
/// what the history holds for that shadow.
async fn demo() -> Result<(), String> {
    use fleet_tests::lambda::LocalLambda;
    use shadow_core::history::record_from_event;
    use std::time::Duration;

    let env: Vec<(String, String)> = std::env::vars().collect();
    let event_path = fleet_tests::stack::repo_root().join("events/history/update-accepted-named.json");
    let text = std::fs::read_to_string(&event_path).map_err(|e| format!("{}: {e}", event_path.display()))?;
    let event: serde_json::Value = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", event_path.display()))?;
    let history = LocalLambda::start("shadow-history", &env).await;
    for delivery in 1..=2 {
        let answer = history.invoke(&event, Duration::from_secs(30)).await.map_err(|e| e.to_string())?;
        println!("delivery {delivery} of {}: {answer}", event_path.display());
    }
    history.stop().await;

    let record = record_from_event(&event, &Default::default()).map_err(|e| e.to_string())?;
    let table = std::env::var("HISTORY_TABLE").map_err(|_| "HISTORY_TABLE is not set".to_owned())?;
    let store = shadow_aws::DynamoHistoryStore::from_sdk(&shadow_aws::sdk::load().await, table);
    let events = store.events(&record.shadow).await.map_err(|e| e.to_string())?;
    println!("history of {} ({} item(s)):", record.shadow, events.len());
    for event in events {
        println!("  {event}");
    }
    Ok(())
}
