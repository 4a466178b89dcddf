//! A shadow's document at a version or a moment, from what the history recorded: exact, or a refusal that says
//! what is not known. Never a guess.
//!
//! What makes a bounded read exact (docs/records.md, "Reading a shadow at a point"):
//! - every `update/documents` event is recorded as a snapshot that holds the service's own document after the
//!   change (`state`) and before it (`previousState`);
//! - the newest snapshot (or deletion) of each shadow is also kept, without expiry, as the shadow's head;
//! - so the document at a moment `t` is the last live item at or before `t`; or, when every item before `t` has
//!   expired, the `previousState` of the first item after `t`; or, when nothing came after `t`, the head.
//!
//! Items recorded from `update/accepted` (a rule on that topic, or history from before snapshots) carry only the
//! change: they are folded forward from the nearest snapshot, deletion or creation before them ([`fold`]).

use serde_json::Value;

use crate::history::RecordKind;
use crate::history::state::ShadowState;

/// One history item, as a reader gets it back.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    pub kind: RecordKind,
    pub version: u64,
    /// Epoch seconds.
    pub timestamp: u64,
    /// A snapshot's document after the change; an update's change.
    pub state: Option<Value>,
    /// A snapshot's document before the change, when the message carried one.
    pub previous_state: Option<Value>,
    pub previous_version: Option<u64>,
    pub client_token: Option<String>,
    pub metadata: Option<Value>,
    pub expires_at: Option<u64>,
    /// The item's sort key, where the reader gave it.
    pub sk: Option<String>,
}

impl Recorded {
    /// From an item as the history store returns it (the attributes of docs/records.md), or why it cannot be read.
    pub fn from_item(item: &Value) -> Result<Self, String> {
        let number = |name: &str| item.get(name).and_then(Value::as_u64);
        let kind = match item.get("kind").and_then(Value::as_str) {
            Some("update") => RecordKind::Update,
            Some("snapshot") => RecordKind::Snapshot,
            Some("delete") => RecordKind::Delete,
            other => return Err(format!("an item has kind {other:?}, not update, snapshot or delete")),
        };
        let present = |name: &str| item.get(name).filter(|v| !v.is_null()).cloned();
        Ok(Self {
            kind,
            version: number("version").ok_or("an item has no version")?,
            timestamp: number("timestamp").ok_or("an item has no timestamp")?,
            state: item.get("state").cloned(),
            previous_state: present("previousState"),
            previous_version: number("previousVersion"),
            client_token: item.get("clientToken").and_then(Value::as_str).map(str::to_owned),
            metadata: present("metadata"),
            expires_at: number("expiresAt"),
            // A head names the event it copies: a walk back from it starts there.
            sk: item.get("eventSk").or(item.get("sk")).and_then(Value::as_str).map(str::to_owned),
        })
    }

    /// How long this item's history is kept (seconds), when it expires at all.
    pub fn retention(&self) -> Option<u64> {
        self.expires_at.map(|e| e.saturating_sub(self.timestamp))
    }
}

/// The document at a point.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub state: ShadowState,
    pub version: u64,
    /// When this version was written (epoch seconds), when the history still knows it.
    pub timestamp: Option<u64>,
    /// Who wrote this version: its clientToken (a push id for shadow-push's updates).
    pub client_token: Option<String>,
    pub metadata: Option<Value>,
    /// The sort key of the item this version was read from (the event's, for a head): where a walk back from this
    /// point starts. `None` when the version is known only as another item's previous document.
    pub sk: Option<String>,
}

impl Point {
    fn of(record: &Recorded) -> Self {
        Self {
            state: ShadowState::from_snapshot(record.state.as_ref()),
            version: record.version,
            timestamp: Some(record.timestamp),
            client_token: record.client_token.clone(),
            metadata: record.metadata.clone(),
            sk: record.sk.clone(),
        }
    }
}

/// Why there is no document to give.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unknown {
    #[error("the history holds no event of this shadow")]
    NoHistory,
    #[error("the shadow did not exist then: it was created at {first_at} (version {first_version})")]
    BeforeCreation { first_at: u64, first_version: u64 },
    #[error("the shadow was deleted then (deleted at {at}, version {version})")]
    Deleted { at: u64, version: u64 },
    #[error("that is before the retained history begins: it is known from {known_from}")]
    BeforeRetention { known_from: u64 },
    #[error("versions {first}..={last} are missing from the history, so the document then is not known")]
    Gap { first: u64, last: u64 },
    #[error("version {version} was never recorded")]
    NeverRecorded { version: u64 },
    #[error("version {version} is past the retention (it expired at {expired_at})")]
    Expired { version: u64, expired_at: u64 },
    /// Only changes were recorded before this point, back to where the read stopped: a fold needs more history
    /// than a bounded read gives.
    #[error(
        "only changes (update/accepted) were recorded back to version {oldest_read}, and no snapshot, deletion or creation within the {limit} events read before it"
    )]
    NoCheckpoint { oldest_read: u64, limit: usize },
}

/// Whether `record` is live at `now`: DynamoDB deletes expired items only within about two days, so readers
/// filter them (`attribute_not_exists(expiresAt) OR expiresAt > :now`).
pub fn live(record: &Recorded, now: u64) -> bool {
    record.expires_at.is_none_or(|e| e > now)
}

/// What a bounded read at moment `t` found: `before`, the last item at or before `t`; `after`, the first item after
/// `t` (not the head); `head`, the shadow's newest snapshot or deletion. Expired or not: [`at_time`] leaves out
/// what has expired.
#[derive(Debug, Clone, Default)]
pub struct AroundTime {
    pub before: Option<Recorded>,
    pub after: Option<Recorded>,
    pub head: Option<Recorded>,
}

/// What to do with a read at a moment.
#[derive(Debug, Clone, PartialEq)]
pub enum AtTime {
    Known(Point),
    /// `before` is a change (update/accepted): fold it, from the nearest checkpoint at or before it.
    Fold,
}

/// The document at the end of second `t` (the last version whose timestamp is at or before it), or why not.
pub fn at_time(t: u64, read: &AroundTime, now: u64) -> Result<AtTime, Unknown> {
    let head = read.head.as_ref().filter(|h| live(h, now));
    // The first item after t has expired: so has everything before it, and t is before the retained history.
    if let Some(after) = read.after.as_ref().filter(|a| !live(a, now)) {
        let known_from = after.retention().map_or(now, |r| now.saturating_sub(r));
        return Err(Unknown::BeforeRetention { known_from });
    }
    let read = AroundTime {
        before: read.before.clone().filter(|b| live(b, now)),
        after: read.after.clone(),
        head: head.cloned(),
    };
    if let Some(head) = &read.head
        && head.timestamp <= t
    {
        return match head.kind {
            RecordKind::Delete => Err(Unknown::Deleted { at: head.timestamp, version: head.version }),
            _ => Ok(AtTime::Known(Point::of(head))),
        };
    }
    let after = read.after.as_ref();
    if let Some(before) = &read.before {
        if let Some(after) = after
            && let Some((first, last)) = missing_between(before, after)
        {
            return Err(Unknown::Gap { first, last });
        }
        return match before.kind {
            RecordKind::Snapshot => Ok(AtTime::Known(Point::of(before))),
            RecordKind::Delete => Err(Unknown::Deleted { at: before.timestamp, version: before.version }),
            RecordKind::Update => Ok(AtTime::Fold),
        };
    }
    // Nothing live at or before t: expired, or never there.
    let retention_cut = |record: &Recorded| record.retention().map(|r| now.saturating_sub(r)).filter(|from| t < *from);
    let Some(after) = after.or(read.head.as_ref()) else {
        return Err(Unknown::NoHistory);
    };
    if let Some(known_from) = retention_cut(after) {
        return Err(Unknown::BeforeRetention { known_from });
    }
    match (after.kind, &after.previous_state, after.previous_version) {
        (RecordKind::Snapshot, Some(previous), Some(version)) => {
            // The version before `after` is not live at or before t. Had it been recorded after t, it would be
            // live and `after` itself; so it was recorded at or before t and has expired, or never recorded.
            if after.retention().is_none() {
                return Err(Unknown::Gap { first: version, last: version });
            }
            Ok(AtTime::Known(Point {
                state: ShadowState::from_snapshot(Some(previous)),
                version,
                timestamp: None,
                client_token: None,
                metadata: None,
                sk: None,
            }))
        }
        (RecordKind::Snapshot, None, _) => {
            Err(Unknown::BeforeCreation { first_at: after.timestamp, first_version: after.version })
        }
        (RecordKind::Update, _, _) if after.version == 1 => {
            Err(Unknown::BeforeCreation { first_at: after.timestamp, first_version: after.version })
        }
        _ => Err(Unknown::Gap { first: after.version.saturating_sub(1), last: after.version.saturating_sub(1) }),
    }
}

/// The versions missing between two neighbouring items of one shadow's life, if any. A new life (the version
/// numbering restarts after a shadow was deleted for 48 hours) has nothing missing.
fn missing_between(before: &Recorded, after: &Recorded) -> Option<(u64, u64)> {
    if after.version <= before.version {
        return None;
    }
    // A snapshot names the version it replaced; a change or a deletion follows the version before it (a
    // deletion may carry the deleted document's version or the next one).
    let expected_before = match after.kind {
        RecordKind::Snapshot => after.previous_version.unwrap_or(after.version - 1),
        RecordKind::Update => after.version - 1,
        RecordKind::Delete => after.version.saturating_sub(1).max(before.version),
    };
    (expected_before > before.version).then_some((before.version + 1, expected_before))
}

/// The document after version `version`, from the item recorded with that version (the newest life's), or why
/// not.
pub fn at_version(version: u64, found: Option<&Recorded>, now: u64) -> Result<AtTime, Unknown> {
    let Some(found) = found else {
        return Err(Unknown::NeverRecorded { version });
    };
    if !live(found, now) {
        return Err(Unknown::Expired { version, expired_at: found.expires_at.unwrap_or_default() });
    }
    match found.kind {
        RecordKind::Snapshot => Ok(AtTime::Known(Point::of(found))),
        RecordKind::Delete => Err(Unknown::Deleted { at: found.timestamp, version: found.version }),
        RecordKind::Update => Ok(AtTime::Fold),
    }
}

/// Folds changes forward: `older` holds the items before and including the target, newest first, as a reader
/// walks back from it. The walk stops at the first snapshot or deletion (a checkpoint), or at a creation (an
/// update of version 1). Versions must follow one another without a gap.
pub fn fold(older: &[Recorded], limit: usize) -> Result<Point, Unknown> {
    let Some(target) = older.first() else {
        return Err(Unknown::NoHistory);
    };
    if target.kind == RecordKind::Delete {
        return Err(Unknown::Deleted { at: target.timestamp, version: target.version });
    }
    for (i, record) in older.iter().enumerate() {
        if let Some(newer) = i.checked_sub(1).and_then(|n| older.get(n)) {
            // After a deletion the next document starts afresh, whatever its version.
            let follows = newer.version == record.version + 1 || record.kind == RecordKind::Delete;
            if !follows {
                return Err(Unknown::Gap { first: record.version + 1, last: newer.version.saturating_sub(1) });
            }
        }
        let (mut state, changes) = match record.kind {
            RecordKind::Snapshot => (ShadowState::from_snapshot(record.state.as_ref()), &older[..i]),
            RecordKind::Delete => (ShadowState::default(), &older[..i]),
            // A creation: the document starts from nothing, with this update.
            RecordKind::Update if record.version == 1 => (ShadowState::default(), &older[..=i]),
            RecordKind::Update => continue,
        };
        for change in changes.iter().rev().filter_map(|r| r.state.as_ref()) {
            state.apply_update(change);
        }
        let mut point = Point::of(target);
        point.state = state;
        return Ok(point);
    }
    let oldest_read = older.last().map_or(target.version, |r| r.version);
    Err(Unknown::NoCheckpoint { oldest_read, limit })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const DAY: u64 = 86_400;

    fn snapshot(version: u64, timestamp: u64, state: Value, previous: Option<Value>) -> Recorded {
        Recorded {
            kind: RecordKind::Snapshot,
            version,
            timestamp,
            state: Some(state),
            previous_version: previous.as_ref().map(|_| version - 1),
            previous_state: previous,
            client_token: None,
            metadata: None,
            expires_at: Some(timestamp + 30 * DAY),
            sk: None,
        }
    }

    fn update(version: u64, timestamp: u64, change: Value) -> Recorded {
        Recorded {
            kind: RecordKind::Update,
            version,
            timestamp,
            state: Some(change),
            previous_state: None,
            previous_version: None,
            client_token: None,
            metadata: None,
            expires_at: None,
            sk: None,
        }
    }

    fn known(answer: Result<AtTime, Unknown>) -> Value {
        match answer {
            Ok(AtTime::Known(point)) => json!({"v": point.version, "state": point.state.to_json()}),
            other => panic!("expected a document, got {other:?}"),
        }
    }

    #[test]
    fn the_last_item_at_or_before_the_time() {
        let s1 = snapshot(1, 100, json!({"desired": {"a": 1}}), None);
        let s2 = snapshot(2, 200, json!({"desired": {"a": 2}}), Some(json!({"desired": {"a": 1}})));
        let read = AroundTime { before: Some(s1.clone()), after: Some(s2.clone()), head: Some(s2.clone()) };
        assert_eq!(known(at_time(150, &read, 300)), json!({"v": 1, "state": {"desired": {"a": 1}, "delta": {"a": 1}}}));
        let read = AroundTime { before: Some(s1), after: None, head: Some(s2) };
        assert_eq!(known(at_time(250, &read, 300))["v"], 2);
    }

    #[test]
    fn before_creation_and_during_a_deletion() {
        let s1 = snapshot(1, 100, json!({"desired": {"a": 1}}), None);
        let read = AroundTime { before: None, after: Some(s1.clone()), head: Some(s1.clone()) };
        assert_eq!(at_time(50, &read, 300), Err(Unknown::BeforeCreation { first_at: 100, first_version: 1 }));
        let mut delete = s1.clone();
        delete.kind = RecordKind::Delete;
        delete.timestamp = 200;
        delete.state = None;
        let read = AroundTime { before: Some(delete.clone()), after: None, head: Some(delete) };
        assert_eq!(at_time(250, &read, 300), Err(Unknown::Deleted { at: 200, version: 1 }));
    }

    #[test]
    fn a_quiet_shadow_is_known_from_the_next_items_previous_document() {
        // Version 5 at day 1, quiet, version 6 at day 90; now day 100, retention 30 days: item 5 has expired.
        let s6 = snapshot(6, 90 * DAY, json!({"desired": {"a": 6}}), Some(json!({"desired": {"a": 5}})));
        let read = AroundTime { before: None, after: Some(s6.clone()), head: Some(s6) };
        assert_eq!(known(at_time(80 * DAY, &read, 100 * DAY))["v"], 5);
        assert_eq!(at_time(60 * DAY, &read, 100 * DAY), Err(Unknown::BeforeRetention { known_from: 70 * DAY }));
    }

    #[test]
    fn a_missing_version_is_a_gap_not_a_guess() {
        let s1 = snapshot(1, 100, json!({"desired": {"a": 1}}), None);
        let s4 = snapshot(4, 400, json!({"desired": {"a": 4}}), Some(json!({"desired": {"a": 3}})));
        let read = AroundTime { before: Some(s1), after: Some(s4.clone()), head: Some(s4) };
        assert_eq!(at_time(150, &read, 500), Err(Unknown::Gap { first: 2, last: 3 }));
    }

    #[test]
    fn changes_fold_from_the_nearest_checkpoint() {
        let older = vec![
            update(4, 40, json!({"desired": {"b": null}})),
            update(3, 30, json!({"desired": {"b": 2, "c": {"d": 1}}})),
            snapshot(2, 20, json!({"desired": {"a": 1, "b": 1}}), None),
            update(1, 10, json!({"desired": {"z": 1}})),
        ];
        let point = fold(&older, 10).expect("a fold");
        assert_eq!(point.version, 4);
        assert_eq!(point.state.to_json()["desired"], json!({"a": 1, "c": {"d": 1}}));
        let created = vec![update(2, 20, json!({"desired": {"b": 1}})), update(1, 10, json!({"desired": {"a": 1}}))];
        assert_eq!(fold(&created, 10).expect("a fold").state.to_json()["desired"], json!({"a": 1, "b": 1}));
        let gap = vec![update(5, 50, json!({})), update(3, 30, json!({}))];
        assert_eq!(fold(&gap, 10), Err(Unknown::Gap { first: 4, last: 4 }));
        let none = vec![update(5, 50, json!({})), update(4, 40, json!({}))];
        assert_eq!(fold(&none, 2), Err(Unknown::NoCheckpoint { oldest_read: 4, limit: 2 }));
    }
}
