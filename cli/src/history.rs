//! `shadow-fleet history THING`: one shadow's events, oldest first, each with what it changed in `desired` and
//! `reported`. Reads the history table page by page on its key (docs/records.md, "History items"): `--since` and
//! `--until` are a key condition on the sort key, so a long history costs only the pages shown. `--push ID` reads only the push's
//! time window, from its record (its start to its end), and shows the events whose `clientToken` is the push's.

use clap::Args;
use serde_json::{Value, json};
use shadow_aws::{DynamoHistoryStore, DynamoPushReader};
use shadow_core::push::rollout::ROLLBACK_SUFFIX;
use shadow_core::{ShadowName, ShadowRef, ThingName};

use crate::checks;
use crate::diff::{Before, Change, Replay};
use crate::error::CliError;
use crate::output::{self, Format};
use crate::{Context, now_secs, when};

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// The thing's name.
    #[arg(value_parser = checks::thing_name)]
    thing: String,
    /// A named shadow; without it, the classic shadow.
    #[arg(long, value_name = "NAME", value_parser = checks::shadow_name)]
    shadow: Option<String>,
    /// Events at or after (an age such as 7d or 90m, an RFC 3339 time, a date, epoch seconds of 10 digits).
    #[arg(long, value_name = "T", value_parser = checks::time)]
    since: Option<u64>,
    /// Events at or before (same forms as --since).
    #[arg(long, value_name = "T", value_parser = checks::time)]
    until: Option<u64>,
    /// Only the events of this push and of its rollback (clientToken ID or ID.rollback); reads only the push's
    /// time window, from its record in the push table.
    #[arg(long = "push", value_name = "ID", value_parser = checks::push_id)]
    push_id: Option<String>,
    /// Only the events that touched this path (dotted from desired's or reported's root, `settings.mode`) or
    /// anything under it, with that leaf's values.
    #[arg(long, value_name = "PATH", value_parser = checks::leaf_path)]
    path: Option<String>,
    /// Show at most this many events (0: all).
    #[arg(long, default_value = "100", value_name = "N", value_parser = checks::count_or_zero, allow_hyphen_values = true)]
    limit: usize,
}

/// Events read per Query when the limit does not say fewer.
const PAGE: usize = 500;
/// How far a push's window reaches past its record's start and end, in seconds: an event's time is AWS IoT's clock,
/// the record's is shadow-push's.
const PUSH_WINDOW_MARGIN_S: u64 = 60;

/// The time window (epoch seconds) that holds every event of push `push_id`: its record's `startedAt` to its
/// `finishedAt` (now, while it runs), widened by [`PUSH_WINDOW_MARGIN_S`]. Without a record (expired, or another
/// table), only the user's own bounds can say where to read: `--since` is then required.
async fn push_window(ctx: &Context, push_id: &str, since: Option<u64>) -> Result<(u64, u64), CliError> {
    let table = ctx.locations.push_table()?;
    let reader = DynamoPushReader::new(ctx.dynamodb(), table.clone());
    let record =
        reader.record(push_id).await.map_err(CliError::service(format!("reading push {push_id} in table {table}")))?;
    let Some(record) = record else {
        return match since {
            Some(since) => Ok((since, now_secs())),
            None => Err(CliError::Failure(format!(
                "no push {push_id} in table {table} (its record may have expired), so its time is not known: give \
                 --since (and --until) around it, and --push keeps its events"
            ))),
        };
    };
    let ms = |key: &str| record.get(key).and_then(Value::as_u64);
    let started = ms("startedAt").unwrap_or(0) / 1000;
    let finished = ms("finishedAt").map_or_else(now_secs, |f| f / 1000);
    Ok((started.saturating_sub(PUSH_WINDOW_MARGIN_S), finished.saturating_add(PUSH_WINDOW_MARGIN_S)))
}

fn shadow_ref(args: &HistoryArgs) -> Result<ShadowRef, CliError> {
    let thing = ThingName::parse(args.thing.as_str())
        .map_err(|e| CliError::Usage(format!("thing name {:?} {e}", args.thing)))?;
    let shadow =
        args.shadow.as_deref().map(ShadowName::parse_user).transpose().map_err(|e| {
            CliError::Usage(format!("shadow name {:?} {e}", args.shadow.as_deref().unwrap_or_default()))
        })?;
    Ok(ShadowRef { thing, shadow })
}

/// One event as shown: when, which version, what kind, who, and its changes.
fn event_json(event: &Value, desired: &[Change], reported: &[Change]) -> Value {
    let timestamp = event.get("timestamp").and_then(Value::as_u64).unwrap_or(0);
    json!({
        "time": when::format_seconds(timestamp),
        "timestamp": timestamp,
        "version": event.get("version"),
        "kind": event.get("kind"),
        "clientToken": event.get("clientToken"),
        "desired": desired.iter().map(Change::to_json).collect::<Vec<_>>(),
        "reported": reported.iter().map(Change::to_json).collect::<Vec<_>>(),
    })
}

/// The changes that touched `path` or anything under it. A change of an object above it (replaced or removed whole)
/// is narrowed to the leaf: its value there before and after.
fn narrow(changes: Vec<Change>, path: &str) -> Vec<Change> {
    let below = |value: &serde_json::Value, rest: &str| rest.split('.').try_fold(value, |v, key| v.get(key)).cloned();
    changes
        .into_iter()
        .filter_map(|c| {
            let rest = if c.path.is_empty() { Some(path) } else { path.strip_prefix(&format!("{}.", c.path)) };
            match rest {
                // The change is above the path: the leaf's own values.
                Some(rest) => {
                    let from = match &c.from {
                        Before::Was(v) => below(v, rest).map_or(Before::Absent, Before::Was),
                        other => other.clone(),
                    };
                    let to = c.to.as_ref().and_then(|v| below(v, rest));
                    let unchanged = matches!((&from, &to), (Before::Absent, None))
                        || matches!((&from, &to), (Before::Was(a), Some(b)) if a == b);
                    (!unchanged).then(|| Change { path: path.to_owned(), from, to })
                }
                None => shadow_core::history::state::touches(&c.path, path).then_some(c),
            }
        })
        .collect()
}

fn changes_text(changes: &[Change]) -> String {
    changes.iter().map(Change::to_text).collect::<Vec<_>>().join("\n")
}

pub async fn run(ctx: &Context, args: HistoryArgs) -> Result<i32, CliError> {
    let shadow = shadow_ref(&args)?;
    let (mut since, mut until) = (args.since, args.until);
    if let (Some(since), Some(until)) = (since, until)
        && since > until
    {
        return Err(CliError::Usage(format!(
            "--since ({}) is after --until ({})",
            when::format_seconds(since),
            when::format_seconds(until)
        )));
    }
    // --push: the read is bounded by the push's window (and the user's bounds within it); the client token then
    // keeps the push's own events among the others of that window.
    let tokens = args.push_id.as_ref().map(|id| [id.clone(), format!("{id}{ROLLBACK_SUFFIX}")]);
    if let Some(push_id) = &args.push_id {
        let (start, end) = push_window(ctx, push_id, since).await?;
        since = Some(since.map_or(start, |s| s.max(start)));
        until = Some(until.map_or(end, |u| u.min(end)));
    }
    let table = ctx.locations.history_table()?;
    let store = DynamoHistoryStore::new(ctx.dynamodb(), table.clone());
    let limit = if args.limit == 0 { usize::MAX } else { args.limit };
    let shown_name =
        format!("{}{}", shadow.thing, args.shadow.as_deref().map(|s| format!(" --shadow {s}")).unwrap_or_default());

    let mut replay = Replay::default();
    let mut rows = output::table(&["time", "version", "kind", "who", "desired", "reported"]);
    let mut shown = 0usize;
    let mut more_from: Option<u64> = None;
    let mut start = None;
    'pages: loop {
        if let (Some(since), Some(until)) = (since, until)
            && since > until
        {
            break; // --since/--until outside the push's window: nothing to read
        }
        // Without --push every event read is shown: read one more than the limit, to know whether more follow.
        let want = if args.push_id.is_some() { PAGE } else { (limit - shown).saturating_add(1).min(PAGE) };
        let page = store
            .page(&shadow, since, until, start.take(), i32::try_from(want).unwrap_or(i32::MAX))
            .await
            .map_err(CliError::service(format!("reading the history of {shown_name} in table {table}")))?;
        for event in &page.events {
            let token = event.get("clientToken").and_then(Value::as_str);
            if tokens.as_ref().is_some_and(|t| !t.iter().any(|t| token == Some(t.as_str()))) {
                // Not the push's: replayed (later events are diffed against it), not shown.
                let kind = event.get("kind").and_then(Value::as_str).unwrap_or("update");
                replay.know_before(event);
                replay.apply(kind, event.get("state"));
                continue;
            }
            // "More events follow" names the next event shown, so with --push the next of the push's own.
            if shown == limit {
                more_from = event.get("timestamp").and_then(Value::as_u64);
                break 'pages;
            }
            let kind = event.get("kind").and_then(Value::as_str).unwrap_or("update");
            replay.know_before(event);
            let mut changes = replay.apply(kind, event.get("state"));
            if let Some(path) = &args.path {
                changes.desired = narrow(std::mem::take(&mut changes.desired), path);
                changes.reported = narrow(std::mem::take(&mut changes.reported), path);
                if changes.desired.is_empty() && changes.reported.is_empty() && kind != "delete" {
                    continue;
                }
            }
            shown += 1;
            let line = event_json(event, &changes.desired, &changes.reported);
            match ctx.format {
                Format::Json => output::json_line(&line),
                Format::Table => {
                    let who = token.unwrap_or("-").to_owned();
                    let (desired, reported) = if kind == "delete" {
                        ("shadow deleted".to_owned(), String::new())
                    } else {
                        (changes_text(&changes.desired), changes_text(&changes.reported))
                    };
                    rows.add_row(vec![
                        line["time"].as_str().unwrap_or_default().to_owned(),
                        line["version"].to_string(),
                        kind.to_owned(),
                        who,
                        desired,
                        reported,
                    ]);
                }
            }
        }
        match page.next {
            Some(next) => start = Some(next),
            None => break,
        }
    }
    if shown == 0 {
        eprintln!(
            "no history for {shown_name}{} in table {table}",
            if since.is_some() || until.is_some() || args.push_id.is_some() || args.path.is_some() {
                " in this range (or touching --path)"
            } else {
                ""
            }
        );
        return Ok(1);
    }
    if ctx.format == Format::Table {
        println!("{rows}");
    }
    if let Some(next) = more_from {
        eprintln!(
            "more events follow; the next at {}: --since {} (or --limit 0 for all)",
            when::format_seconds(next),
            when::format_seconds(next)
        );
    }
    Ok(0)
}
