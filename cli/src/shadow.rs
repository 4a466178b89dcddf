//! `shadow-fleet shadow get THING [--shadow NAME] [--version N | --at TIME]`: the current document
//! (GetThingShadow, like the seed's get_shadow.py), or the document as it was, from the history table.
//! `shadow-fleet shadow diff THING --from T|vN [--to T|vN]`: what changed between two points, leaf by leaf.

use aws_sdk_iotdataplane::primitives::Blob;
use clap::Subcommand;
use serde_json::{Map, Value};
use shadow_aws::DataPlaneShadows;
use shadow_core::{ShadowName, ThingName};

use shadow_aws::DynamoHistoryStore;
use shadow_core::ShadowRef;
use shadow_core::history::state::leaf_changes;

use crate::checks;
use crate::error::CliError;
use crate::output::{self, Format};
use crate::point::{self, At};
use crate::progress::compact;
use crate::{Context, now_secs, when};

#[derive(Debug, Subcommand)]
pub enum ShadowCommand {
    /// The shadow's current document, or (--version, --at) the document as it was, from the history.
    Get {
        #[arg(value_parser = checks::thing_name)]
        thing: String,
        /// A named shadow; without it, the classic shadow.
        #[arg(long, value_name = "NAME", value_parser = checks::shadow_name)]
        shadow: Option<String>,
        /// The document after this version, from the history.
        #[arg(long, value_name = "N", conflicts_with = "at")]
        version: Option<u64>,
        /// The document at the end of this time (the last version at or before it), from the history: an age
        /// (90m, 7d), an RFC 3339 time, a date, or epoch seconds, as --since takes.
        #[arg(long, value_name = "TIME", value_parser = checks::time)]
        at: Option<u64>,
    },
    /// What changed between two points of the shadow's history, leaf by leaf: the value before and after, and
    /// when, in which version and by whom it last changed.
    Diff {
        #[arg(value_parser = checks::thing_name)]
        thing: String,
        /// A named shadow; without it, the classic shadow.
        #[arg(long, value_name = "NAME", value_parser = checks::shadow_name)]
        shadow: Option<String>,
        /// From this point: a time (as --at takes) or a version (v12).
        #[arg(long, value_name = "T|vN", value_parser = point_arg)]
        from: At,
        /// To this point (default: now).
        #[arg(long, value_name = "T|vN", value_parser = point_arg)]
        to: Option<At>,
    },
}

/// `v12` is a version; anything else a time.
fn point_arg(text: &str) -> Result<At, String> {
    if let Some(n) = text.strip_prefix('v')
        && !n.is_empty()
        && n.bytes().all(|b| b.is_ascii_digit())
    {
        return n.parse().map(At::Version).map_err(|e| format!("version {n:?}: {e}"));
    }
    checks::time(text).map(At::Time)
}

fn shadow_ref(thing: &str, shadow: Option<&str>) -> Result<(ShadowRef, String), CliError> {
    let thing_name = ThingName::parse(thing).map_err(|e| CliError::Usage(format!("thing name {thing:?} {e}")))?;
    let shadow_name = shadow
        .map(ShadowName::parse_user)
        .transpose()
        .map_err(|e| CliError::Usage(format!("shadow name {:?} {e}", shadow.unwrap_or_default())))?;
    let which = match &shadow_name {
        Some(s) => format!("shadow {s} of thing {thing_name}"),
        None => format!("the classic shadow of thing {thing_name}"),
    };
    Ok((ShadowRef { thing: thing_name, shadow: shadow_name }, which))
}

pub async fn run(ctx: &Context, command: ShadowCommand) -> Result<i32, CliError> {
    let (thing, shadow) = match command {
        ShadowCommand::Diff { thing, shadow, from, to } => return diff(ctx, &thing, shadow.as_deref(), from, to).await,
        ShadowCommand::Get { thing, shadow, version, at } => {
            let at = version.map(At::Version).or(at.map(At::Time));
            if let Some(at) = at {
                return get_at(ctx, &thing, shadow.as_deref(), at).await;
            }
            (thing, shadow)
        }
    };
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

/// A value for a table cell: JSON, or empty when absent.
fn cell(value: Option<&Value>) -> String {
    value.map(Value::to_string).unwrap_or_default()
}

fn who(writer: Option<&point::Writer>, oldest: Option<u64>) -> String {
    match (writer, oldest) {
        (Some(w), _) => format!("{} (v{})", w.client_token.as_deref().unwrap_or("-"), w.version),
        (None, Some(oldest)) => format!("before v{oldest}"),
        (None, None) => "unknown".into(),
    }
}

async fn get_at(ctx: &Context, thing: &str, shadow: Option<&str>, at: At) -> Result<i32, CliError> {
    let (shadow, which) = shadow_ref(thing, shadow)?;
    let table = ctx.locations.history_table()?;
    let store = DynamoHistoryStore::new(ctx.dynamodb(), table);
    let (point, _cost) = point::read(&store, &shadow, at, &which).await?;
    let mut leaves: Vec<(&'static str, String)> = Vec::new();
    for section in shadow_core::history::state::SECTIONS {
        leaves.extend(point.state.leaves(section).into_iter().map(|(p, _)| (section, p)));
    }
    match ctx.format {
        Format::Json => {
            // GetThingShadow's shape, and where the history got it.
            let mut document = serde_json::json!({"state": point.state.to_json(), "version": point.version});
            if let Some(timestamp) = point.timestamp {
                document["timestamp"] = timestamp.into();
            }
            if let Some(metadata) = &point.metadata {
                document["metadata"] = metadata.clone();
            }
            if let Some(token) = &point.client_token {
                document["clientToken"] = token.clone().into();
            }
            output::json_line(&document);
        }
        Format::Table => {
            let (writers, oldest) = point::writers(&store, &shadow, &point, &leaves).await?;
            let time = point.timestamp.map(when::format_seconds).unwrap_or_else(|| "time not retained".into());
            println!("{which} at {}: version {}, written {time}", at.describe(), point.version);
            let (desired, reported) = (point.state.leaves("desired"), point.state.leaves("reported"));
            let mut keys: Vec<&String> = desired.iter().chain(&reported).map(|(k, _)| k).collect();
            keys.sort();
            keys.dedup();
            let mut rows =
                output::table(&["key", "desired", "reported", "", "desired written by", "reported written by"]);
            let find =
                |leaves: &[(String, Value)], key: &str| leaves.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
            let writer = |section: &str, key: &str| {
                leaves.iter().position(|(s, p)| *s == section && p == key).map(|i| who(writers[i].as_ref(), oldest))
            };
            for key in keys {
                let (d, r) = (find(&desired, key), find(&reported, key));
                let pending =
                    matches!((&d, &r), (Some(d), r) if r.as_ref().is_none_or(|r| !shadow_core::document::equal(d, r)));
                rows.add_row(vec![
                    key.clone(),
                    cell(d.as_ref()),
                    cell(r.as_ref()),
                    if pending { "delta".into() } else { String::new() },
                    writer("desired", key).unwrap_or_default(),
                    writer("reported", key).unwrap_or_default(),
                ]);
            }
            println!("{rows}");
        }
    }
    Ok(0)
}

/// Items read back from the later point to attribute each changed leaf.
const DIFF_LIMIT: i32 = 1000;

async fn diff(ctx: &Context, thing: &str, shadow: Option<&str>, from: At, to: Option<At>) -> Result<i32, CliError> {
    let (shadow, which) = shadow_ref(thing, shadow)?;
    let table = ctx.locations.history_table()?;
    let store = DynamoHistoryStore::new(ctx.dynamodb(), table);
    let to = to.unwrap_or(At::Time(now_secs()));
    let (before, _) = point::read(&store, &shadow, from, &which).await?;
    let (after, _) = point::read(&store, &shadow, to, &which).await?;
    if before.version > after.version && before.timestamp >= after.timestamp {
        return Err(CliError::Usage(format!(
            "--from ({}, version {}) is after --to ({}, version {})",
            from.describe(),
            before.version,
            to.describe(),
            after.version
        )));
    }
    let changes = leaf_changes(Some(&before.state), Some(&after.state));
    let walked = point::changes_between(&store, &shadow, &before, &after, DIFF_LIMIT).await?;
    let last_change = |section: &str, path: &str| {
        walked.iter().find_map(|(record, leaves)| {
            leaves
                .iter()
                .any(|c| c.section == section && shadow_core::history::state::touches(path, &c.path))
                .then_some(record)
        })
    };
    if ctx.format == Format::Table {
        println!(
            "{which}: version {} ({}) to version {} ({}): {} value(s) changed",
            before.version,
            from.describe(),
            after.version,
            to.describe(),
            changes.len()
        );
    }
    let mut rows = output::table(&["path", "before", "after", "changed at", "version", "by"]);
    for change in &changes {
        let record = last_change(change.section, &change.path);
        let path = format!("{}.{}", change.section, change.path);
        match ctx.format {
            Format::Json => output::json_line(&serde_json::json!({
                "path": path,
                "before": change.before,
                "after": change.after,
                "changedAt": record.map(|r| when::format_seconds(r.timestamp)),
                "version": record.map(|r| r.version),
                "by": record.and_then(|r| r.client_token.clone()),
            })),
            Format::Table => {
                rows.add_row(vec![
                    path,
                    change.before.as_ref().map_or_else(|| "(absent)".into(), Value::to_string),
                    change.after.as_ref().map_or_else(|| "(absent)".into(), Value::to_string),
                    record.map(|r| when::format_seconds(r.timestamp)).unwrap_or_else(|| "unknown".into()),
                    record.map(|r| r.version.to_string()).unwrap_or_default(),
                    record.map(|r| r.client_token.clone().unwrap_or_else(|| "-".into())).unwrap_or_default(),
                ]);
            }
        }
    }
    if ctx.format == Format::Table && !changes.is_empty() {
        println!("{rows}");
    }
    Ok(0)
}
