//! Sets up and drives the local stack, with names from the environment (as `.local/stack.env` gives them):
//! `fleet-local setup` creates the tables, the queue that the functions use and the MQTT broker's CA;
//! `fleet-local demo` runs the story; `fleet-local fleet` creates the demo's fleet and keeps it (the README's quick
//! start pushes to it); `fleet-local cert THING --out DIR` writes a device certificate for THING as AWS hands one out;
//! `fleet-local devices (--group NAME | THING...) [--shadow NAME] --kind KIND [--count N] [--report-after S]` runs
//! simulated devices over MQTT until interrupted.

use std::path::PathBuf;
use std::time::Duration;

use devstack::mqtt_ca::LocalCa;
use shadow_aws::tables;

const USAGE: &str = "usage: fleet-local setup|demo|fleet|cert THING --out DIR|devices (--group NAME | THING...) \
                     [--shadow NAME] --kind healthy|silent|refusing|clearing|partial|late [--count N] [--report-after S]";

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("setup") => setup().await,
        Some("demo") => demo().await,
        Some("fleet") => fleet().await,
        Some("cert") => cert(&args[1..]),
        Some("devices") => devices(&args[1..]).await,
        _ => Err(USAGE.to_owned()),
    };
    if let Err(e) = result {
        eprintln!("fleet-local: {e}");
        std::process::exit(1);
    }
}

/// The stack's MQTT directory (`LOCAL_MQTT_DIR`): from the environment, else from the stack's settings file.
fn mqtt_dir() -> Result<PathBuf, String> {
    if let Ok(dir) = std::env::var("LOCAL_MQTT_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let path = devstack::stack::stack_env_path();
    let settings = devstack::stack::read_env(&path).map_err(|e| e.to_string())?;
    settings.get("LOCAL_MQTT_DIR").map(PathBuf::from).ok_or_else(|| {
        format!("{} has no LOCAL_MQTT_DIR: restart the stack with `make stack-down stack-up`", path.display())
    })
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
    if let Ok(dir) = std::env::var("LOCAL_MQTT_DIR") {
        LocalCa::open_or_create(&PathBuf::from(&dir)).map_err(|e| format!("the local CA in {dir}: {}", chain(&e)))?;
    }
    Ok(())
}

fn chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    message
}

/// `cert THING --out DIR`: certificate.pem.crt, private.pem.key and AmazonRootCA1.pem (the local CA) in DIR.
fn cert(args: &[String]) -> Result<(), String> {
    let (thing, out) = match args {
        [thing, flag, out] if flag == "--out" => (thing, out),
        [flag, out, thing] if flag == "--out" => (thing, out),
        _ => return Err(USAGE.to_owned()),
    };
    let dir = mqtt_dir()?;
    let ca = LocalCa::open(&dir).map_err(|e| format!("the local CA in {}: {}", dir.display(), chain(&e)))?;
    let paths = ca.write_thing(thing, &PathBuf::from(out)).map_err(|e| chain(&e))?;
    for path in paths {
        println!("{}", path.display());
    }
    Ok(())
}

/// `devices`: one simulated device per thing (of the group, or named), each with its own certificate, until
/// interrupted. `--count N` keeps the first N things; `--report-after S` delays every answer (a late device's
/// default is 30 s).
async fn devices(args: &[String]) -> Result<(), String> {
    use devstack::mqtt_fleet::{Fleet, Kind};
    let (mut group, mut things, mut shadow, mut kind, mut count, mut report_after) =
        (None, Vec::new(), None, None, None, None);
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().cloned().ok_or(format!("{name} needs a value\n{USAGE}"));
        match arg.as_str() {
            "--group" => group = Some(value("--group")?),
            "--shadow" => shadow = Some(value("--shadow")?),
            "--kind" => kind = Some(value("--kind")?.parse::<Kind>()?),
            "--count" => count = Some(value("--count")?.parse::<usize>().map_err(|e| format!("--count: {e}"))?),
            "--report-after" => {
                let seconds = value("--report-after")?.parse::<f64>().map_err(|e| format!("--report-after: {e}"))?;
                report_after = Some(Duration::try_from_secs_f64(seconds).map_err(|e| format!("--report-after: {e}"))?);
            }
            flag if flag.starts_with("--") => return Err(format!("{flag} is not an option\n{USAGE}")),
            thing => things.push(thing.to_owned()),
        }
    }
    let kind = kind.ok_or(format!("--kind is required\n{USAGE}"))?;
    let stack = devstack::Stack::get();
    match (&group, things.is_empty()) {
        (Some(group), true) => {
            let listed = stack
                .iot()
                .list_things_in_thing_group()
                .thing_group_name(group)
                .recursive(true)
                .into_paginator()
                .items()
                .send()
                .collect::<Result<Vec<String>, _>>()
                .await
                .map_err(|e| {
                    format!("the things of {group}: {}", aws_smithy_types::error::display::DisplayErrorContext(&e))
                })?;
            things = listed;
        }
        (None, false) => {}
        _ => return Err(format!("either --group NAME or THING...\n{USAGE}")),
    }
    if let Some(count) = count {
        things.truncate(count);
    }
    let (endpoint, ca) = devstack::mqtt_device::Endpoint::of(&stack).map_err(|e| e.to_string())?;
    let devices: Vec<(String, Kind)> = things.into_iter().map(|t| (t, kind)).collect();
    let fleet = Fleet::start(
        &ca,
        &endpoint,
        &devices,
        shadow.as_deref(),
        report_after.unwrap_or_default(),
        report_after.unwrap_or(Duration::from_secs(30)),
    )
    .map_err(|e| chain(&e))?;
    println!("{} {kind:?} devices on {}:{} (Ctrl-C stops them)", devices.len(), endpoint.host, endpoint.port);
    tokio::select! {
        result = fleet.wait() => result.map_err(|e| e.to_string()),
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
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
