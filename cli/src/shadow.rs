//! `shadow-fleet shadow get THING [--shadow NAME]`: the current document (GetThingShadow), like the seed's
//! get_shadow.py.

use aws_sdk_iotdataplane::primitives::Blob;
use clap::Subcommand;
use serde_json::{Map, Value};
use shadow_aws::DataPlaneShadows;
use shadow_core::{ShadowName, ThingName};

use crate::checks;
use crate::error::CliError;
use crate::output::{self, Format};
use crate::progress::compact;
use crate::{Context, when};

#[derive(Debug, Subcommand)]
pub enum ShadowCommand {
    /// The shadow's current document.
    Get {
        #[arg(value_parser = checks::thing_name)]
        thing: String,
        /// A named shadow; without it, the classic shadow.
        #[arg(long, value_name = "NAME", value_parser = checks::shadow_name)]
        shadow: Option<String>,
    },
}

pub async fn run(ctx: &Context, command: ShadowCommand) -> Result<i32, CliError> {
    let ShadowCommand::Get { thing, shadow } = command;
    let thing_name =
        ThingName::parse(thing.as_str()).map_err(|e| CliError::Usage(format!("thing name {thing:?} {e}")))?;
    let shadow_name = shadow
        .as_deref()
        .map(ShadowName::parse_user)
        .transpose()
        .map_err(|e| CliError::Usage(format!("shadow name {:?} {e}", shadow.as_deref().unwrap_or_default())))?;
    let which = match &shadow_name {
        Some(s) => format!("shadow {s} of thing {thing_name}"),
        None => format!("the classic shadow of thing {thing_name}"),
    };
    let iot = aws_sdk_iot::Client::new(&ctx.config);
    let endpoint = std::env::var("IOT_DATA_ENDPOINT").ok();
    let shadows = DataPlaneShadows::connect(&ctx.config, endpoint.as_deref(), &iot)
        .await
        .map_err(CliError::service("finding the account's IoT data endpoint"))?;
    let got = shadows
        .client()
        .get_thing_shadow()
        .thing_name(thing_name.as_str())
        .set_shadow_name(shadow_name.as_ref().map(|s| s.to_string()))
        .send()
        .await;
    let got = match got {
        Ok(got) => got,
        Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_not_found_exception()) => {
            return Err(CliError::Failure(format!("{which} does not exist (no such thing, or no such shadow)")));
        }
        Err(e) => return Err(CliError::sdk(format!("reading {which}"))(e)),
    };
    let payload = got.payload.as_ref().map(Blob::as_ref).unwrap_or_default();
    let document: Value = serde_json::from_slice(payload)
        .map_err(|e| CliError::Failure(format!("{which} is not a JSON document: {e}")))?;
    match ctx.format {
        Format::Json => output::json_line(&document),
        Format::Table => {
            let version = document.get("version").map(compact).unwrap_or_default();
            let time = document.get("timestamp").and_then(Value::as_u64).map(when::format_seconds).unwrap_or_default();
            println!("{which}: version {version}, {time}");
            let state = document.get("state");
            let section = |name: &str| {
                let mut leaves = Vec::new();
                if let Some(Value::Object(map)) = state.and_then(|s| s.get(name)) {
                    flatten(map, "", &mut leaves);
                }
                leaves
            };
            let (desired, reported) = (section("desired"), section("reported"));
            let mut keys: Vec<&String> = desired.iter().chain(&reported).map(|(k, _)| k).collect();
            keys.sort();
            keys.dedup();
            let mut rows = output::table(&["key", "desired", "reported", ""]);
            for key in keys {
                let find = |leaves: &[(String, Value)]| leaves.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
                let (d, r) = (find(&desired), find(&reported));
                let pending = matches!((&d, &r), (Some(d), r) if Some(d) != r.as_ref());
                rows.add_row(vec![
                    key.clone(),
                    d.as_ref().map(|v| v.to_string()).unwrap_or_default(),
                    r.as_ref().map(|v| v.to_string()).unwrap_or_default(),
                    if pending { "delta".into() } else { String::new() },
                ]);
            }
            println!("{rows}");
        }
    }
    Ok(0)
}

fn flatten(map: &Map<String, Value>, prefix: &str, out: &mut Vec<(String, Value)>) {
    for (key, value) in map {
        let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
        match value {
            Value::Object(inner) if !inner.is_empty() => flatten(inner, &path, out),
            other => out.push((path, other.clone())),
        }
    }
}
