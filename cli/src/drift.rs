//! `shadow-fleet drift`: which things' `reported` does not hold their `desired`, key by key, and since when.
//! Read-only. Targets: a thing group's members (with `--recursive`, its child groups' too), a fleet-index query, or
//! listed things.
//!
//! Two paths (docs/cli.md, "Drift"): when the fleet index holds the shadow, a search for `hasDelta:true` among the
//! targets finds the candidates and only they are read; otherwise every target is read (GetThingShadow, paced at
//! `--max-tps`). Each thing behind has its history read newest first (the history table), to say since when.

use std::collections::HashSet;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::{ArgGroup, Args};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{Value, json};
use shadow_aws::{DataPlaneShadows, DynamoHistoryStore, IotRegistry};
use shadow_core::drift::{
    IndexConfig, KeyBehind, Pacer, Since, SinceSearch, Tally, ThingDrift, behind, delta_query, group_query, parse_rate,
};
use shadow_core::history::point::Unknown;
use shadow_core::push::{Registry, Shadows};
use shadow_core::service::{FaultKind, ServiceError};
use shadow_core::{ShadowName, ShadowRef, ThingGroupName, ThingName};

use crate::error::CliError;
use crate::output::{self, Format};
use crate::{Context, now_secs, when};

/// GetThingShadow requests a second by default: a small share of the account's quota (400/s in some regions),
/// which pushes share.
pub const DEFAULT_MAX_TPS: &str = "10";

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("targets").required(true).args(["things", "group", "query"])))]
pub struct DriftArgs {
    /// Things to check.
    #[arg(value_name = "THING")]
    things: Vec<String>,
    /// The direct members of this thing group.
    #[arg(long, value_name = "NAME")]
    group: Option<String>,
    /// With --group: the members of its child groups too, at any depth (each thing once).
    #[arg(long)]
    recursive: bool,
    /// The things a fleet-index query finds (SearchIndex on AWS_Things), e.g. `attributes.site:tokyo`.
    #[arg(long, value_name = "QUERY")]
    query: Option<String>,
    /// A named shadow; without it, the classic shadow.
    #[arg(long, value_name = "NAME")]
    shadow: Option<String>,
    /// GetThingShadow requests a second at most (the account's quota is shared with pushes).
    #[arg(long, value_name = "N", default_value = DEFAULT_MAX_TPS, value_parser = parse_rate, allow_negative_numbers = true)]
    max_tps: f64,
    /// Read every target even when the fleet index holds the shadow (the index lags shadow updates).
    #[arg(long)]
    walk: bool,
    /// History events read per thing behind, newest first, to find since when (0: none).
    #[arg(long, default_value_t = 200, value_name = "N")]
    history_events: usize,
    /// The fleet as of then: each target's shadow at the end of this time, from the history table (no shadow
    /// reads; --max-tps paces the history reads). Same forms as `history --since`. The targets are the group's or
    /// the query's things now.
    #[arg(long, value_name = "TIME", value_parser = crate::checks::time)]
    at: Option<u64>,
}

/// Which way the targets were read, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Path {
    /// The index holds the shadow: only the things it finds with a delta are read. Per group (or the query): the
    /// query that selects the targets, and the one that finds those with a delta.
    Index {
        queries: Vec<(String, String)>,
    },
    Walk {
        reason: String,
    },
}

impl Path {
    fn name(&self) -> &'static str {
        match self {
            Self::Index { .. } => "index",
            Self::Walk { .. } => "walk",
        }
    }

    fn describe(&self) -> String {
        match self {
            Self::Index { queries } => {
                let first = queries.first().map(|(_, c)| c.as_str()).unwrap_or_default();
                let more = match queries.len() {
                    0 | 1 => String::new(),
                    n => format!(" and the same for {} child groups", n - 1),
                };
                format!("fleet index: reading only the things found by `{first}`{more}")
            }
            Self::Walk { reason } => format!("walk: reading every target's shadow ({reason})"),
        }
    }
}

enum Targets {
    Things(Vec<ThingName>),
    /// The group, then (with --recursive) every group below it.
    Groups(Vec<ThingGroupName>),
    Query(String),
}

/// One thing's result as shown.
struct Checked {
    thing: String,
    drift: Result<ThingDrift, ServiceError>,
    /// Per key behind, in the order of the keys: since when, and who wrote the value (the write's clientToken).
    since: Vec<(Since, Option<String>)>,
}

/// History items read per Query when looking for since when.
const HISTORY_PAGE: usize = 25;

pub async fn run(ctx: &Context, args: DriftArgs) -> Result<i32, CliError> {
    let targets = targets(&args)?;
    let shadow_name =
        args.shadow.as_deref().map(ShadowName::parse_user).transpose().map_err(|e| {
            CliError::Usage(format!("shadow name {:?} {e}", args.shadow.as_deref().unwrap_or_default()))
        })?;
    let shadow_label = shadow_name.as_ref().map_or_else(|| "the classic shadow".to_owned(), |s| format!("shadow {s}"));

    let iot = aws_sdk_iot::Client::new(&ctx.config);
    let registry = IotRegistry::new(iot.clone());
    let targets = with_children(targets, args.recursive, &registry).await?;
    let endpoint = std::env::var("IOT_DATA_ENDPOINT").ok();
    let shadows = DataPlaneShadows::connect(&ctx.config, endpoint.as_deref(), &iot)
        .await
        .map_err(CliError::service("finding the account's IoT data endpoint"))?;
    let history = match ctx.locations.history_table.clone() {
        Some(table) => Some(DynamoHistoryStore::new(ctx.dynamodb(), table)),
        None => {
            eprintln!(
                "note: no history table in {} (--stack NAME or HISTORY_TABLE): since when is not shown",
                ctx.locations.origin
            );
            None
        }
    };

    if args.at.is_some() && history.is_none() {
        return Err(CliError::Usage(format!(
            "--at reads the shadows as they were from the history table, and {} names none (--stack NAME or \
             HISTORY_TABLE)",
            ctx.locations.origin
        )));
    }
    let path = match args.at {
        // The fleet index holds only the shadows now.
        Some(at) => Path::Walk {
            reason: format!("--at {}: every target's shadow as of then, from the history", when::format_seconds(at)),
        },
        None => choose_path(&iot, &targets, shadow_name.as_ref(), args.walk).await,
    };
    eprintln!("drift of {shadow_label}: {}", path.describe());

    let bar = if std::io::stderr().is_terminal() {
        ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr())
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:20} {pos}/{len} read · {per_sec} · {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );

    let checker = Checker {
        shadows: &shadows,
        shadow: shadow_name.as_ref(),
        history: history.as_ref(),
        history_events: args.history_events,
        pacer: Mutex::new(Pacer::new(args.max_tps)),
        history_failed: AtomicBool::new(false),
        at: args.at,
    };
    // Enough requests in flight to reach the rate when a read takes up to 200 ms.
    let in_flight = ((args.max_tps * 0.2).ceil() as usize).clamp(1, 32);
    let mut report = Report::new(ctx.format, shadow_name.as_ref().map(ToString::to_string));
    let mut targets_counted: Option<u64> = None;

    match (&path, &targets) {
        (Path::Walk { .. }, Targets::Things(things)) => {
            let mut seen = HashSet::new();
            let things: Vec<ThingName> =
                things.iter().filter(|t| seen.insert(t.as_str().to_owned())).cloned().collect();
            bar.set_length(things.len() as u64);
            check_all(&checker, things, in_flight, &bar, &mut report).await;
        }
        (Path::Walk { .. }, Targets::Groups(groups)) => {
            let mut seen = HashSet::new();
            for group in groups {
                let mut token: Option<String> = None;
                loop {
                    let page = registry
                        .things_in_group(group, token.as_deref())
                        .await
                        .map_err(CliError::service(format!("listing the things in thing group {group}")))?;
                    let things = names(page.things, &mut seen);
                    bar.inc_length(things.len() as u64);
                    check_all(&checker, things, in_flight, &bar, &mut report).await;
                    match page.next {
                        Some(next) => token = Some(next),
                        None => break,
                    }
                }
            }
        }
        (Path::Walk { .. }, Targets::Query(query)) => {
            let mut seen = HashSet::new();
            let mut token: Option<String> = None;
            loop {
                let page = registry
                    .search(query, token.as_deref())
                    .await
                    .map_err(CliError::service(format!("searching the fleet index for `{query}`")))?;
                let things = names(page.things, &mut seen);
                bar.inc_length(things.len() as u64);
                check_all(&checker, things, in_flight, &bar, &mut report).await;
                match page.next {
                    Some(next) => token = Some(next),
                    None => break,
                }
            }
        }
        (Path::Index { queries }, _) => {
            // The targets are counted from the index (SearchIndex pages, not shadow reads).
            let mut targets_seen = HashSet::new();
            for (selection, _) in queries {
                let mut token: Option<String> = None;
                loop {
                    let page = registry
                        .search(selection, token.as_deref())
                        .await
                        .map_err(CliError::service(format!("searching the fleet index for `{selection}`")))?;
                    names(page.things, &mut targets_seen);
                    match page.next {
                        Some(next) => token = Some(next),
                        None => break,
                    }
                }
            }
            targets_counted = Some(targets_seen.len() as u64);
            let mut seen = HashSet::new();
            for (_, candidates) in queries {
                let mut token: Option<String> = None;
                loop {
                    let page = registry
                        .search(candidates, token.as_deref())
                        .await
                        .map_err(CliError::service(format!("searching the fleet index for `{candidates}`")))?;
                    let things = names(page.things, &mut seen);
                    bar.inc_length(things.len() as u64);
                    check_all(&checker, things, in_flight, &bar, &mut report).await;
                    match page.next {
                        Some(next) => token = Some(next),
                        None => break,
                    }
                }
            }
        }
    }
    bar.finish_and_clear();
    Ok(report.finish(&path, targets_counted))
}

/// The targets as given; a recursive group's children are listed later, by [`with_children`].
fn targets(args: &DriftArgs) -> Result<Targets, CliError> {
    if args.recursive && args.group.is_none() {
        return Err(CliError::Usage("--recursive goes with --group (a thing group and its child groups)".into()));
    }
    if let Some(group) = &args.group {
        let group = ThingGroupName::parse(group.as_str())
            .map_err(|e| CliError::Usage(format!("thing group name {group:?} {e}")))?;
        return Ok(Targets::Groups(vec![group]));
    }
    if let Some(query) = &args.query {
        if query.trim().is_empty() {
            return Err(CliError::Usage(
                "--query is empty: give a fleet-index query such as attributes.site:tokyo".into(),
            ));
        }
        return Ok(Targets::Query(query.trim().to_owned()));
    }
    let things = args
        .things
        .iter()
        .map(|t| ThingName::parse(t.as_str()).map_err(|e| CliError::Usage(format!("thing name {t:?} {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Targets::Things(things))
}

/// With --recursive, the group's children at any depth (ListThingGroups), after it.
async fn with_children(targets: Targets, recursive: bool, registry: &IotRegistry) -> Result<Targets, CliError> {
    match targets {
        Targets::Groups(mut groups) if recursive => {
            if let Some(group) = groups.first().cloned() {
                let children = registry
                    .child_groups(&group)
                    .await
                    .map_err(CliError::service(format!("listing the child groups of thing group {group}")))?;
                groups.extend(children);
            }
            Ok(Targets::Groups(groups))
        }
        other => Ok(other),
    }
}

/// Valid thing names not seen before, in page order. A name the registry gives that is not a valid thing name is
/// skipped (it could not have a shadow).
fn names(page: Vec<String>, seen: &mut HashSet<String>) -> Vec<ThingName> {
    page.into_iter().filter(|t| seen.insert(t.clone())).filter_map(|t| ThingName::parse(t).ok()).collect()
}

/// The index path when the index holds the shadow and the targets are a group or a query; else the walk.
async fn choose_path(iot: &aws_sdk_iot::Client, targets: &Targets, shadow: Option<&ShadowName>, walk: bool) -> Path {
    let selections = match targets {
        Targets::Things(_) => return Path::Walk { reason: "listed things are read directly".into() },
        Targets::Groups(groups) => groups.iter().map(|g| group_query(g.as_str())).collect(),
        Targets::Query(query) => vec![query.clone()],
    };
    if walk {
        return Path::Walk { reason: "--walk".into() };
    }
    let shadow = shadow.map(ToString::to_string);
    match iot.get_indexing_configuration().send().await {
        Ok(answer) => {
            let config = answer.thing_indexing_configuration.map(|c| IndexConfig {
                thing_indexing_mode: c.thing_indexing_mode.as_str().to_owned(),
                named_shadow_indexing_mode: c
                    .named_shadow_indexing_mode
                    .as_ref()
                    .map(|m| m.as_str().to_owned())
                    .unwrap_or_default(),
                named_shadow_names: c.filter.and_then(|f| f.named_shadow_names).unwrap_or_default(),
            });
            let config = config.unwrap_or_default();
            if config.holds(shadow.as_deref()) {
                let queries = selections
                    .into_iter()
                    .map(|s| {
                        let candidates = delta_query(&s, shadow.as_deref());
                        (s, candidates)
                    })
                    .collect();
                Path::Index { queries }
            } else {
                Path::Walk {
                    reason: format!("the fleet index does not hold the shadow: {}", config.why_not(shadow.as_deref())),
                }
            }
        }
        Err(e) => {
            let e = CliError::sdk("reading the fleet-indexing configuration")(e);
            Path::Walk { reason: e.report() }
        }
    }
}

struct Checker<'a> {
    shadows: &'a DataPlaneShadows,
    shadow: Option<&'a ShadowName>,
    history: Option<&'a DynamoHistoryStore>,
    history_events: usize,
    pacer: Mutex<Pacer>,
    /// A history that cannot be read is said once, not for every thing.
    history_failed: AtomicBool,
    /// `--at`: the shadows as of this time, from the history.
    at: Option<u64>,
}

impl Checker<'_> {
    async fn check(&self, thing: ThingName) -> Checked {
        let at = self.pacer.lock().unwrap_or_else(|e| e.into_inner()).take(tokio::time::Instant::now().into_std());
        tokio::time::sleep_until(at.into()).await;
        if let (Some(t), Some(store)) = (self.at, self.history) {
            return self.check_then(store, thing, t).await;
        }
        let read = self.shadows.desired(&thing, self.shadow).await;
        let drift = read.map(|state| match state {
            None => ThingDrift::NoShadow,
            Some(state) => {
                let keys = behind(&state.state, &state.reported);
                if keys.is_empty() { ThingDrift::InSync } else { ThingDrift::Behind(keys) }
            }
        });
        let since = match &drift {
            Ok(ThingDrift::Behind(keys)) => self.since(&thing, keys).await,
            _ => Vec::new(),
        };
        Checked { thing: thing.to_string(), drift, since }
    }

    /// `--at`: the thing's shadow at the end of `t`, from the history; since when, from the events before it.
    async fn check_then(&self, store: &DynamoHistoryStore, thing: ThingName, t: u64) -> Checked {
        let shadow = ShadowRef { thing: thing.clone(), shadow: self.shadow.cloned() };
        let which = format!("{thing}");
        let read = crate::point::read_or_unknown(store, &shadow, crate::point::At::Time(t), &which).await;
        let unreadable =
            |message: String| ServiceError::new("Query", FaultKind::Rejected, Some("NotKnown".into()), message);
        let (drift, point) = match read {
            Ok(Ok((point, _))) => {
                let section =
                    |s: Option<&serde_json::Map<String, Value>>| s.cloned().map_or(Value::Null, Value::Object);
                let keys = behind(&section(point.state.desired.as_ref()), &section(point.state.reported.as_ref()));
                let drift = if keys.is_empty() { ThingDrift::InSync } else { ThingDrift::Behind(keys) };
                (Ok(drift), Some(point))
            }
            Ok(Err(Unknown::BeforeCreation { .. } | Unknown::Deleted { .. } | Unknown::NoHistory)) => {
                (Ok(ThingDrift::NoShadow), None)
            }
            Ok(Err(unknown)) => (Err(unreadable(crate::point::explain(&unknown))), None),
            Err(e) => (Err(unreadable(e.report())), None),
        };
        let since = match (&drift, &point) {
            (Ok(ThingDrift::Behind(keys)), Some(point)) => {
                let mut search = SinceSearch::new(keys);
                if let Some(sk) = &point.sk
                    && self.history_events > 0
                {
                    let limit = i32::try_from(self.history_events).unwrap_or(i32::MAX);
                    if let Ok(events) = store.back_from(&shadow, sk, limit).await {
                        for event in &events {
                            search.older(event);
                            if search.done() {
                                break;
                            }
                        }
                    }
                }
                search.give_up();
                keys.iter().map(|k| (search.since(k), search.written_by(k).map(str::to_owned))).collect()
            }
            _ => Vec::new(),
        };
        Checked { thing: thing.to_string(), drift, since }
    }

    /// Since when each key has been behind, from the history read newest first; unknown for all when the history
    /// cannot be read (said once on stderr, the drift itself still shown).
    async fn since(&self, thing: &ThingName, keys: &[KeyBehind]) -> Vec<(Since, Option<String>)> {
        let mut search = SinceSearch::new(keys);
        if let Some(store) = self.history {
            let shadow = ShadowRef { thing: thing.clone(), shadow: self.shadow.cloned() };
            let mut read = 0usize;
            let mut start = None;
            while !search.done() && read < self.history_events {
                let want = (self.history_events - read).min(HISTORY_PAGE);
                let page = match store.newest_first(&shadow, start.take(), i32::try_from(want).unwrap_or(1)).await {
                    Ok(page) => page,
                    Err(e) => {
                        if !self.history_failed.swap(true, Ordering::Relaxed) {
                            let e = CliError::service(format!("reading the history of {thing}"))(e);
                            eprintln!(
                                "warning: {} (since when is unknown where the history cannot be read)",
                                e.report()
                            );
                        }
                        break;
                    }
                };
                for event in page.events.iter().take(want) {
                    search.older(event);
                    read += 1;
                    if search.done() {
                        break;
                    }
                }
                match page.next {
                    Some(next) => start = Some(next),
                    None => break,
                }
            }
        }
        search.give_up();
        keys.iter().map(|k| (search.since(k), search.written_by(k).map(str::to_owned))).collect()
    }
}

async fn check_all(
    checker: &Checker<'_>,
    things: Vec<ThingName>,
    in_flight: usize,
    bar: &ProgressBar,
    report: &mut Report,
) {
    let mut results = futures::stream::iter(things).map(|t| checker.check(t)).buffered(in_flight);
    while let Some(checked) = results.next().await {
        bar.inc(1);
        report.add(checked);
        bar.set_message(format!("{} drifting · {} failed", report.tally.drifting, report.failed.len()));
    }
}

/// What is shown: JSON lines as things are read, or a table at the end.
struct Report {
    format: Format,
    shadow: Option<String>,
    tally: Tally,
    /// Things whose shadow could not be read, with why.
    failed: Vec<(String, String)>,
    no_shadow: Vec<String>,
    rows: Vec<[String; 5]>,
    now: u64,
}

fn since_text(since: Since, by: Option<&str>, now: u64) -> String {
    match since {
        Since::At(t) => {
            let by = by.map(|b| format!(" by {b}")).unwrap_or_default();
            format!("{} ({} ago){by}", when::format_seconds(t), when::format_duration(now.saturating_sub(t)))
        }
        Since::Unknown => "unknown".into(),
    }
}

fn oldest(since: &[(Since, Option<String>)]) -> Option<u64> {
    since.iter().filter_map(|(s, _)| s.at()).min()
}

impl Report {
    fn new(format: Format, shadow: Option<String>) -> Self {
        Self {
            format,
            shadow,
            tally: Tally::default(),
            failed: Vec::new(),
            no_shadow: Vec::new(),
            rows: Vec::new(),
            now: now_secs(),
        }
    }

    fn add(&mut self, checked: Checked) {
        let drift = match checked.drift {
            Ok(drift) => drift,
            Err(e) => {
                let message = CliError::service(format!("reading the shadow of {}", checked.thing))(e).report();
                if self.format == Format::Json {
                    output::json_line(&json!({"kind": "failed", "thing": checked.thing, "error": message}));
                }
                self.failed.push((checked.thing, message));
                return;
            }
        };
        self.tally.add(&drift);
        match &drift {
            ThingDrift::InSync => {}
            ThingDrift::NoShadow => {
                if self.format == Format::Json {
                    output::json_line(&json!({"kind": "noShadow", "thing": checked.thing, "shadow": self.shadow}));
                }
                self.no_shadow.push(checked.thing);
            }
            ThingDrift::Behind(keys) => match self.format {
                Format::Json => {
                    let keys: Vec<Value> = keys
                        .iter()
                        .zip(&checked.since)
                        .map(|(k, (s, by))| {
                            json!({"key": k.dotted(), "desired": k.desired, "reported": k.reported,
                                   "since": s.at().map(when::format_seconds), "sinceTimestamp": s.at(), "by": by})
                        })
                        .collect();
                    let since = oldest(&checked.since);
                    output::json_line(&json!({"kind": "thing", "thing": checked.thing, "shadow": self.shadow,
                        "keys": keys, "since": since.map(when::format_seconds), "sinceTimestamp": since}));
                }
                Format::Table => {
                    for (i, (key, (since, by))) in keys.iter().zip(&checked.since).enumerate() {
                        self.rows.push([
                            if i == 0 { checked.thing.clone() } else { String::new() },
                            key.dotted(),
                            // As JSON, so that "1" and 1 differ.
                            key.desired.to_string(),
                            key.reported.as_ref().map_or_else(|| "(absent)".to_owned(), Value::to_string),
                            since_text(*since, by.as_deref(), self.now),
                        ]);
                    }
                }
            },
        }
    }

    /// Prints the per-key counts and the totals; the exit code: 1 when some shadow could not be read.
    fn finish(self, path: &Path, targets_counted: Option<u64>) -> i32 {
        let tally = &self.tally;
        // On the index path only the candidates are read: the others count as in sync (with or without a shadow).
        let (checked, in_sync, no_shadow) = match targets_counted {
            Some(targets) => {
                let checked = targets.max(tally.checked + self.failed.len() as u64);
                let others = checked - tally.checked - self.failed.len() as u64;
                (checked, tally.in_sync + others, None)
            }
            None => (tally.checked + self.failed.len() as u64, tally.in_sync, Some(tally.no_shadow)),
        };
        let reads = tally.checked + self.failed.len() as u64;
        match self.format {
            Format::Json => {
                for (key, things) in &tally.per_key {
                    output::json_line(&json!({"kind": "key", "key": key, "things": things}));
                }
                output::json_line(&json!({"kind": "totals", "shadow": self.shadow, "path": path.name(),
                    "checked": checked, "inSync": in_sync, "drifting": tally.drifting, "noShadow": no_shadow,
                    "noShadowAmongRead": tally.no_shadow, "failed": self.failed.len(), "shadowReads": reads}));
            }
            Format::Table => {
                if !self.rows.is_empty() {
                    let mut table = output::table(&["thing", "key", "desired", "reported", "since"]);
                    for row in &self.rows {
                        table.add_row(row.to_vec());
                    }
                    println!("{table}");
                }
                if !self.no_shadow.is_empty() {
                    println!("no shadow: {}", self.no_shadow.join(", "));
                }
                if !tally.per_key.is_empty() {
                    let mut table = output::table(&["key", "things behind"]);
                    for (key, things) in &tally.per_key {
                        table.add_row(vec![key.clone(), things.to_string()]);
                    }
                    println!("{table}");
                }
                let no_shadow = no_shadow.map_or_else(|| "not counted (index path)".to_owned(), |n| n.to_string());
                println!(
                    "{}",
                    output::fields(&[
                        ("checked".into(), checked.to_string()),
                        ("in sync".into(), in_sync.to_string()),
                        ("drifting".into(), tally.drifting.to_string()),
                        ("no shadow".into(), no_shadow),
                        ("failed".into(), self.failed.len().to_string()),
                        ("path".into(), path.name().to_owned()),
                        ("shadow reads".into(), reads.to_string()),
                    ])
                );
                for (thing, message) in self.failed.iter().take(20) {
                    eprintln!("failed: {thing}: {message}");
                }
            }
        }
        if self.failed.is_empty() { 0 } else { 1 }
    }
}
