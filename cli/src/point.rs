//! A shadow at a version or a moment, from the history table: bounded reads (docs/records.md, "Reading a shadow
//! at a point"), decided by the core (`shadow_core::history::point`), and who wrote each value last.

use serde_json::Value;
use shadow_aws::DynamoHistoryStore;
use shadow_aws::history::ReadCost;
use shadow_core::ShadowRef;
use shadow_core::history::point::{self, AroundTime, AtTime, Point, Recorded, Unknown};
use shadow_core::history::state::{LeafChange, ShadowState, leaf_changes};

use crate::error::CliError;
use crate::{now_secs, when};

/// A point the user names: `--version N` (or `vN`) or a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum At {
    Version(u64),
    Time(u64),
}

impl At {
    pub fn describe(self) -> String {
        match self {
            Self::Version(v) => format!("version {v}"),
            Self::Time(t) => when::format_seconds(t),
        }
    }
}

/// How many items a fold of recorded changes (update/accepted) reads back at most to find its checkpoint.
pub const FOLD_LIMIT: usize = 200;
/// How many items are read back from a point to say who wrote each value last.
pub const WRITERS_LIMIT: i32 = 50;

fn records(items: &[Value]) -> Result<Vec<Recorded>, CliError> {
    items
        .iter()
        .map(|i| Recorded::from_item(i).map_err(|e| CliError::Failure(format!("unreadable history: {e}"))))
        .collect()
}

/// The document at `at`, or a failure that says what the history does not know.
pub async fn read(
    store: &DynamoHistoryStore,
    shadow: &ShadowRef,
    at: At,
    which: &str,
) -> Result<(Point, ReadCost), CliError> {
    read_or_unknown(store, shadow, at, which)
        .await?
        .map_err(|e| CliError::Failure(format!("{which} at {}: {}", at.describe(), explain(&e))))
}

/// The document at `at`, or what the history does not know (`Err` only when the history cannot be read).
pub async fn read_or_unknown(
    store: &DynamoHistoryStore,
    shadow: &ShadowRef,
    at: At,
    which: &str,
) -> Result<Result<(Point, ReadCost), Unknown>, CliError> {
    let now = now_secs();
    let failed = |e| CliError::service(format!("reading the history of {which}"))(e);
    let (answer, before, mut cost) = match at {
        At::Version(version) => {
            let (found, _earlier, cost) = store.at_version(shadow, version).await.map_err(failed)?;
            let found = found.map(|f| records(&[f])).transpose()?.and_then(|mut r| r.pop());
            (point::at_version(version, found.as_ref(), now), found, cost)
        }
        At::Time(t) => {
            let (items, cost) = store.around(shadow, t).await.map_err(failed)?;
            let mut read = AroundTime::default();
            for (item, record) in items.iter().zip(records(&items)?) {
                match item.get("role").and_then(Value::as_str) {
                    Some("before") => read.before = Some(record),
                    Some("after") => read.after = Some(record),
                    _ => read.head = Some(record),
                }
            }
            (point::at_time(t, &read, now), read.before, cost)
        }
    };
    match answer {
        Err(unknown) => Ok(Err(unknown)),
        Ok(AtTime::Known(point)) => Ok(Ok((point, cost))),
        Ok(AtTime::Fold) => {
            let sk = before.and_then(|b| b.sk).unwrap_or_default();
            let items = store.back_from(shadow, &sk, FOLD_LIMIT as i32).await.map_err(failed)?;
            cost.requests += 1;
            cost.items += items.len() as u32;
            // `back_from` reads live items only: an expired one is a gap the fold says, never a value it uses.
            Ok(point::fold(&records(&items)?, FOLD_LIMIT).map(|point| (point, cost)))
        }
    }
}

/// The refusal in words, with times as RFC 3339.
pub fn explain(unknown: &Unknown) -> String {
    let t = |s: u64| when::format_seconds(s);
    match unknown {
        Unknown::BeforeCreation { first_at, first_version } => {
            format!("the shadow did not exist then (it was created at {}, version {first_version})", t(*first_at))
        }
        Unknown::Deleted { at, version } => {
            format!("the shadow was deleted then (deleted at {}, after version {version})", t(*at))
        }
        Unknown::BeforeRetention { known_from } => {
            format!("that is before the retained history begins: the history is known from {}", t(*known_from))
        }
        Unknown::Expired { version, expired_at } => {
            format!("version {version} is past the history's retention (it expired at {})", t(*expired_at))
        }
        other => other.to_string(),
    }
}

/// Who last wrote one leaf, as far as a bounded walk back saw.
#[derive(Debug, Clone, PartialEq)]
pub struct Writer {
    pub version: u64,
    pub timestamp: u64,
    /// The clientToken (a push id for shadow-push's updates); `None` when the update had none.
    pub client_token: Option<String>,
}

/// Attributes each leaf change of one item: a snapshot compares the documents before and after; a change lists
/// the leaves it set or removed.
fn item_changes(record: &Recorded) -> Vec<LeafChange> {
    match record.kind {
        shadow_core::history::RecordKind::Snapshot => {
            let before = record.previous_state.as_ref().map(|p| ShadowState::from_snapshot(Some(p)));
            let after = ShadowState::from_snapshot(record.state.as_ref());
            leaf_changes(before.as_ref(), Some(&after))
        }
        shadow_core::history::RecordKind::Update => {
            let mut out = Vec::new();
            if let Some(change) = &record.state {
                for section in shadow_core::history::state::SECTIONS {
                    if let Some(Value::Object(map)) = change.get(section) {
                        let mut touched = Vec::new();
                        shadow_core::history::state::flatten(map, "", &mut touched);
                        for (path, value) in touched {
                            return_leaf(section, path, value, &mut out);
                        }
                    }
                }
            }
            out
        }
        shadow_core::history::RecordKind::Delete => Vec::new(),
    }
}

fn return_leaf(section: &'static str, path: String, value: Value, out: &mut Vec<LeafChange>) {
    let after = (!value.is_null()).then_some(value);
    out.push(LeafChange { section, path, before: None, after });
}

/// Who wrote each of `leaves` (section, path) last, at or before `point`, from at most [`WRITERS_LIMIT`] items
/// read back; a leaf not found among them maps to `None` (written before the oldest item read).
pub async fn writers(
    store: &DynamoHistoryStore,
    shadow: &ShadowRef,
    point: &Point,
    leaves: &[(&'static str, String)],
) -> Result<(Vec<Option<Writer>>, Option<u64>), CliError> {
    let mut found: Vec<Option<Writer>> = vec![None; leaves.len()];
    let Some(sk) = &point.sk else {
        return Ok((found, None));
    };
    let items = store
        .back_from(shadow, sk, WRITERS_LIMIT)
        .await
        .map_err(CliError::service("reading who wrote the shadow's values"))?;
    let records = records(&items)?;
    let oldest = records.last().map(|r| r.version);
    for record in &records {
        for change in item_changes(record) {
            for (i, (section, path)) in leaves.iter().enumerate() {
                if found[i].is_none()
                    && change.section == *section
                    && shadow_core::history::state::touches(path, &change.path)
                {
                    found[i] = Some(Writer {
                        version: record.version,
                        timestamp: record.timestamp,
                        client_token: record.client_token.clone(),
                    });
                }
            }
        }
        if found.iter().all(Option::is_some) {
            break;
        }
    }
    Ok((found, oldest))
}

/// The changes of every item in `(from, to]`, newest first, read back from `to` in pages of at most `limit`:
/// for `shadow diff`, to say when, in which version and by whom each leaf last changed.
pub async fn changes_between(
    store: &DynamoHistoryStore,
    shadow: &ShadowRef,
    from: &Point,
    to: &Point,
    limit: i32,
) -> Result<Vec<(Recorded, Vec<LeafChange>)>, CliError> {
    let Some(sk) = &to.sk else {
        return Ok(Vec::new());
    };
    let items = store.back_from(shadow, sk, limit).await.map_err(CliError::service("reading the changes"))?;
    let mut out = Vec::new();
    for record in records(&items)? {
        if from.sk.as_ref().is_some_and(|f| record.sk.as_ref().is_some_and(|s| s <= f)) {
            break;
        }
        let changes = item_changes(&record);
        out.push((record, changes));
    }
    Ok(out)
}
