//! A property test of the history fold ([`fold`]) against a reference model of the Device Shadow service, written
//! from AWS's documentation and not from `state.rs`.
//!
//! What the model takes from the AWS IoT Core developer guide (paraphrased):
//! - `device-shadow-document`, "Shadow document examples": an update affects only the fields it names.
//! - `device-shadow-document`, "Empty shadow document properties": `desired` and `reported` may be absent; an update
//!   that sets one of them to `null` removes it; a document may have neither.
//! - `device-shadow-document`, "Array values": an array is a value: an update replaces it whole, never a part of it;
//!   an array may not hold `null`.
//! - `device-shadow-document`, "Delta state", and `device-shadow-mqtt`, "/update/delta": the delta holds each field
//!   of `desired` that `reported` lacks or holds with another value, nested objects compared field by field with the
//!   path to the root kept, arrays compared as values; fields only in `reported` are not in it; it is shown only
//!   when there is a difference.
//! - `device-shadow-document`, "Versioning": every accepted update increments the version by one.
//! - `device-shadow-data-flow`: an update creates the shadow when there is none; a field set to `null` is deleted;
//!   setting `state` to `null` empties the document but does not delete the shadow; DELETE removes the shadow and
//!   its content; a shadow created again within 48 hours of its deletion continues the deleted one's version
//!   numbers, after more than 48 hours the numbering starts over. `device-shadow-mqtt`, "/delete": deleting does
//!   not reset the version to 0.
//!
//! Where the documentation does not say, the model says UNCLEAR and takes the choice `state.rs` documents:
//! 1. whether a section left with no keys (every key removed by `null`) is still shown as `{}`: it is not (an
//!    empty section and an absent one are the same state here);
//! 2. whether a nested object whose keys were all removed by `null`s stays as `{}`: it stays; and a patch object
//!    written over a key that holds no object (absent, a scalar or an array) starts from an empty object, so
//!    `{"a": {"b": null}}` over a missing `a` leaves `"a": {}`;
//! 3. whether an empty object in `desired` is in the delta when `reported` lacks the key: it is (`"a": {}`), since
//!    the field is in `desired` and not in `reported`; two empty objects do not differ;
//! 4. what version the first document after a restart has: the guide says the number "will be 0"; the model reads
//!    that as the counter before the creating update, which is version 1, as for a shadow never seen before;
//! 5. which version a `delete/accepted` message carries (the deleted document's, or the next): the model draws
//!    both; the document created after it follows the deleted document's version either way;
//! 6. numbers are compared by value (30 equals 30.0), inside arrays too.

use std::fmt;

use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{Map, Value, json};

use crate::document::equal;
use crate::history::point::{AtTime, Point, Recorded, Unknown, at_version, fold};
use crate::history::state::ShadowState;
use crate::history::{RecordKind, time_prefix};

type Object = Map<String, Value>;

// ------------------------------------------------------------------------------------------------------------------
// The reference model.

/// A shadow document's two sections. A section with no keys is one the service does not show (UNCLEAR 1).
#[derive(Debug, Clone, Default)]
struct Document {
    desired: Object,
    reported: Object,
}

impl Document {
    /// Applies an accepted update request's `state`.
    fn update(&mut self, request: &Value) {
        let Some(sections) = request.as_object() else {
            // `"state": null`: both sections go; the shadow itself stays.
            *self = Self::default();
            return;
        };
        for (name, patch) in sections {
            let section = match name.as_str() {
                "desired" => &mut self.desired,
                "reported" => &mut self.reported,
                _ => continue,
            };
            match patch {
                Value::Null => section.clear(),
                Value::Object(fields) => write_fields(section, fields),
                other => unreachable!("the service refuses a section that is {other}"),
            }
        }
    }

    /// The delta between the sections.
    fn delta(&self) -> Object {
        delta_of(&self.desired, &self.reported)
    }

    /// The `state` a GetThingShadow shows: each section that holds keys, and the delta when there is one.
    fn to_json(&self) -> Value {
        let delta = self.delta();
        let shown = [("desired", &self.desired), ("reported", &self.reported), ("delta", &delta)];
        Value::Object(
            shown
                .into_iter()
                .filter(|(_, section)| !section.is_empty())
                .map(|(name, section)| (name.to_owned(), Value::Object(section.clone())))
                .collect(),
        )
    }

    /// `current.state` of an `update/documents` message: the sections that hold keys.
    fn snapshot(&self) -> Value {
        let mut state = self.to_json();
        if let Value::Object(sections) = &mut state {
            sections.remove("delta");
        }
        state
    }

    /// The same document as a [`ShadowState`], for [`ShadowState::same_as`].
    fn as_state(&self) -> ShadowState {
        let shown = |section: &Object| (!section.is_empty()).then(|| section.clone());
        ShadowState { desired: shown(&self.desired), reported: shown(&self.reported) }
    }
}

/// Writes a patch's fields into `target`, one by one.
fn write_fields(target: &mut Object, patch: &Object) {
    for (key, value) in patch {
        let old = target.remove(key);
        if let Some(new) = written(old, value) {
            target.insert(key.clone(), new);
        }
    }
}

/// What a key holds once `patch` is written over `old` (`None`: the key is gone).
fn written(old: Option<Value>, patch: &Value) -> Option<Value> {
    match patch {
        // A `null` removes the key, and with it the whole subtree the key held.
        Value::Null => None,
        // An object is written field by field into the object the key holds; into an empty one when the key holds
        // none. An object left without keys stays `{}` (UNCLEAR 2).
        Value::Object(fields) => {
            let mut inner = match old {
                Some(Value::Object(inner)) => inner,
                _ => Object::new(),
            };
            write_fields(&mut inner, fields);
            Some(Value::Object(inner))
        }
        // A scalar or an array replaces the value whole.
        whole => Some(whole.clone()),
    }
}

/// Every field of `desired` that `reported` does not hold with the same value; for objects on both sides, the
/// fields that differ, below the same path.
fn delta_of(desired: &Object, reported: &Object) -> Object {
    let mut delta = Object::new();
    for (key, want) in desired {
        let differs = match (want, reported.get(key)) {
            (Value::Object(want), Some(Value::Object(have))) => {
                let inner = delta_of(want, have);
                (!inner.is_empty()).then_some(Value::Object(inner))
            }
            (want, Some(have)) if same_value(want, have) => None,
            // Absent from reported, or another value (UNCLEAR 3 for an empty object).
            (want, _) => Some(want.clone()),
        };
        if let Some(differs) = differs {
            delta.insert(key.clone(), differs);
        }
    }
    delta
}

/// JSON equality with numbers compared by value (UNCLEAR 6). The generated numbers are small integers, exact as
/// doubles.
fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        (Value::Array(a), Value::Array(b)) => a.len() == b.len() && a.iter().zip(b).all(|(a, b)| same_value(a, b)),
        (Value::Object(a), Value::Object(b)) => {
            a.len() == b.len() && a.iter().all(|(key, v)| b.get(key).is_some_and(|w| same_value(v, w)))
        }
        _ => a == b,
    }
}

/// What happens to the shadow.
#[derive(Clone)]
enum Op {
    /// An accepted update request's `state`; `snapshot`: the recorder also got its `update/documents` message.
    Update { state: Value, snapshot: bool },
    /// A delete (refused when there is no shadow); `carries_next`: the `delete/accepted` message carries the next
    /// version rather than the deleted document's (UNCLEAR 5).
    Delete { carries_next: bool },
    /// The shadow is deleted, if there is one, and more than 48 hours pass: the next document is version 1.
    Restart,
}

impl fmt::Debug for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Update { state, snapshot: false } => write!(f, "update {state}"),
            Self::Update { state, snapshot: true } => write!(f, "update {state} +snapshot"),
            Self::Delete { carries_next: false } => write!(f, "delete"),
            Self::Delete { carries_next: true } => write!(f, "delete (carrying the next version)"),
            Self::Restart => write!(f, "delete, 48 h pass"),
        }
    }
}

/// The document of one version, as the model knows it, and where its items are.
#[derive(Debug)]
struct Known {
    version: u64,
    timestamp: u64,
    document: Document,
    /// `items[..end]`: the items recorded up to and including this version's.
    end: usize,
    /// Whether `items[end - 1]` is this version's own snapshot.
    own_snapshot: bool,
    /// The newest checkpoint at or before this version: a snapshot, a deletion or a creation.
    checkpoint: usize,
}

/// The service and the recorder: what the shadow is, and the history items written, oldest first (the table's
/// sort-key order: time, then version, an update before its snapshot).
struct Run {
    document: Option<Document>,
    /// The newest version (the deleted document's while there is none); 0 when the numbering starts over.
    version: u64,
    now: u64,
    items: Vec<Recorded>,
    checkpoint: Option<usize>,
    known: Vec<Known>,
}

const FORTY_EIGHT_HOURS: u64 = 48 * 3600;

/// One history item, read back as the history store returns it (the attributes of docs/records.md).
fn item(
    kind: RecordKind,
    version: u64,
    timestamp: u64,
    state: Option<Value>,
    previous: Option<(u64, Value)>,
) -> Recorded {
    let sk = format!("{}{version:020}#{}-{}", time_prefix(timestamp), kind.rank(), kind.as_str());
    let mut attributes = json!({"kind": kind.as_str(), "version": version, "timestamp": timestamp, "sk": sk});
    if let Some(state) = state {
        attributes["state"] = state;
    }
    if let Some((version, state)) = previous {
        attributes["previousVersion"] = json!(version);
        attributes["previousState"] = state;
    }
    Recorded::from_item(&attributes).expect("a well-formed item")
}

impl Run {
    fn new() -> Self {
        Self { document: None, version: 0, now: 1_700_000_000, items: Vec::new(), checkpoint: None, known: Vec::new() }
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::Update { state, snapshot } => self.update(state, *snapshot),
            Op::Delete { carries_next } => self.delete(*carries_next),
            Op::Restart => {
                self.delete(false);
                self.now += FORTY_EIGHT_HOURS + 1;
                self.version = 0;
            }
        }
    }

    fn update(&mut self, state: &Value, snapshot: bool) {
        let before = self.document.clone();
        let mut document = before.clone().unwrap_or_default();
        document.update(state);
        self.version += 1;
        self.now += 1;
        if self.version == 1 {
            // A creation: the document starts from nothing with this update.
            self.checkpoint = Some(self.items.len());
        }
        self.items.push(item(RecordKind::Update, self.version, self.now, Some(state.clone()), None));
        if snapshot {
            let previous = before.as_ref().map(|before| (self.version - 1, before.snapshot()));
            self.checkpoint = Some(self.items.len());
            self.items.push(item(RecordKind::Snapshot, self.version, self.now, Some(document.snapshot()), previous));
        }
        self.known.push(Known {
            version: self.version,
            timestamp: self.now,
            document: document.clone(),
            end: self.items.len(),
            own_snapshot: snapshot,
            checkpoint: self.checkpoint.expect("every life starts with a creation or follows a deletion"),
        });
        self.document = Some(document);
    }

    fn delete(&mut self, carries_next: bool) {
        if self.document.take().is_none() {
            return;
        }
        self.now += 1;
        let version = if carries_next { self.version + 1 } else { self.version };
        self.checkpoint = Some(self.items.len());
        self.items.push(item(RecordKind::Delete, version, self.now, None, None));
    }
}

// ------------------------------------------------------------------------------------------------------------------
// The property.

fn fail(message: String) -> TestCaseError {
    TestCaseError::fail(message)
}

/// `found` is the document of `known`.
fn expect_document(found: Result<Point, Unknown>, known: &Known, read: &str) -> Result<(), TestCaseError> {
    let v = known.version;
    let point = found.map_err(|e| fail(format!("version {v}, {read}: no document: {e}")))?;
    prop_assert_eq!(point.version, v, "{}", read);
    prop_assert_eq!(point.timestamp, Some(known.timestamp), "version {}, {}", v, read);
    let (got, want) = (point.state.to_json(), known.document.to_json());
    prop_assert!(
        point.state.same_as(&known.document.as_state()),
        "version {v}, {read}: folded {got}, the model holds {want}"
    );
    let delta = |state: &Value| state.get("delta").cloned().unwrap_or(Value::Null);
    prop_assert!(
        equal(&delta(&got), &delta(&want)),
        "version {v}, {read}: delta {}, the model's {}",
        delta(&got),
        delta(&want)
    );
    prop_assert!(equal(&got, &want), "version {v}, {read}: folded {got}, the model holds {want}");
    Ok(())
}

fn check(ops: &[Op], picks: &[(Index, Index)]) -> Result<(), TestCaseError> {
    let mut run = Run::new();
    for op in ops {
        run.apply(op);
    }
    let keys: Vec<String> =
        run.items.iter().map(|r| format!("{}{:020}#{}", time_prefix(r.timestamp), r.version, r.kind.rank())).collect();
    prop_assert!(keys.is_sorted(), "the model recorded items out of the table's order: {keys:?}");
    let newest_first: Vec<Recorded> = run.items.iter().rev().cloned().collect();
    let n = newest_first.len();
    // `items[from..end]`, newest first, as a reader walking back from `items[end - 1]` gets them.
    let between = |from: usize, end: usize| &newest_first[n - end..n - from];

    for known in &run.known {
        let v = known.version;
        let all = between(0, known.end);
        expect_document(fold(all, all.len()), known, "the whole history")?;
        if known.own_snapshot {
            // The same version read from its update alone.
            let update = &all[1..];
            expect_document(fold(update, update.len()), known, "the history up to the update, without its snapshot")?;
        }
        let nearest = between(known.checkpoint, known.end);
        expect_document(fold(nearest, nearest.len()), known, "the history from the nearest checkpoint")?;
        // Without its nearest checkpoint a fold has nothing to start from: it must say so, never guess.
        let short = between(known.checkpoint + 1, known.end);
        match fold(short, short.len()) {
            Err(Unknown::NoHistory) if short.is_empty() => {}
            Err(Unknown::NoCheckpoint { .. }) if !short.is_empty() => {}
            other => {
                return Err(fail(format!(
                    "version {v}: without its nearest checkpoint ({} items left) the fold gave {other:?}",
                    short.len()
                )));
            }
        }
    }

    // Any snapshot at or before a version is a place to start from: the history before it is not needed.
    let snapshots: Vec<usize> = (0..run.items.len()).filter(|&i| run.items[i].kind == RecordKind::Snapshot).collect();
    for (target, start) in picks {
        if run.known.is_empty() {
            break;
        }
        let known = &run.known[target.index(run.known.len())];
        let candidates: Vec<usize> = snapshots.iter().copied().filter(|&s| s < known.end).collect();
        if candidates.is_empty() {
            continue;
        }
        let from = candidates[start.index(candidates.len())];
        let read = between(from, known.end);
        let what = format!("the history from the snapshot of version {} (item {from})", run.items[from].version);
        expect_document(fold(read, read.len()), known, &what)?;
    }

    // One item read by version: a snapshot is the document, an update needs a fold, a deletion is no document.
    for (i, recorded) in run.items.iter().enumerate() {
        match (recorded.kind, at_version(recorded.version, Some(recorded), 0)) {
            (RecordKind::Snapshot, Ok(AtTime::Known(point))) => {
                let known = run.known.iter().find(|k| k.end == i + 1).expect("a snapshot ends its version's items");
                expect_document(Ok(point), known, "its snapshot alone")?;
            }
            (RecordKind::Update, Ok(AtTime::Fold)) => {}
            (RecordKind::Delete, Err(Unknown::Deleted { at, version }))
                if at == recorded.timestamp && version == recorded.version => {}
            (kind, other) => {
                return Err(fail(format!("item {i} ({kind:?} {}): at_version gave {other:?}", recorded.version)));
            }
        }
    }
    Ok(())
}

// ------------------------------------------------------------------------------------------------------------------
// The strategies.

/// Few keys, so that updates meet the keys earlier ones wrote.
const KEYS: &[&str] = &["a", "b", "c"];
/// Objects below a section, at most.
const MAX_DEPTH: usize = 3;

fn key() -> impl Strategy<Value = String> {
    prop::sample::select(KEYS).prop_map(str::to_owned)
}

/// A number, written as an integer or as a float of the same value (30 and 30.0); few values, so that they meet.
fn number() -> impl Strategy<Value = Value> {
    (prop_oneof![-1i64..=2, Just(30)], any::<bool>())
        .prop_map(|(n, float)| if float { json!(n as f64) } else { json!(n) })
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => number(),
        1 => any::<bool>().prop_map(Value::Bool),
        1 => prop::sample::select(&["x", "y"][..]).prop_map(|s| json!(s)),
    ]
}

/// An array: a value, replaced whole. Never with a `null` in it: the service refuses those.
fn array() -> impl Strategy<Value = Value> {
    let element = prop_oneof![
        3 => scalar(),
        1 => (key(), scalar()).prop_map(|(k, v)| Value::Object(Object::from_iter([(k, v)]))),
    ];
    prop::collection::vec(element, 0..=3).prop_map(Value::Array)
}

/// What a patch writes at a key `depth` objects below its section (1: a field of the section).
fn patch_value(depth: usize) -> BoxedStrategy<Value> {
    let leaf = prop_oneof![4 => scalar(), 1 => array(), 2 => Just(Value::Null)];
    if depth >= MAX_DEPTH {
        return leaf.boxed();
    }
    prop_oneof![
        5 => leaf,
        2 => patch_object(depth + 1).prop_map(Value::Object),
        // An object of nulls: removes those keys from the object below the key.
        1 => prop::collection::btree_set(key(), 1..=2)
            .prop_map(|keys| Value::Object(keys.into_iter().map(|k| (k, Value::Null)).collect())),
    ]
    .boxed()
}

fn patch_object(depth: usize) -> BoxedStrategy<Object> {
    prop::collection::btree_map(key(), patch_value(depth), 0..=3)
        .prop_map(|fields| fields.into_iter().collect())
        .boxed()
}

/// One section of a request: absent (untouched), `null` (removed) or an object merged in.
fn section() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        2 => Just(None),
        1 => Just(Some(Value::Null)),
        6 => patch_object(1).prop_map(|fields| Some(Value::Object(fields))),
    ]
}

/// A request's `state`: `null`, or `desired` and/or `reported`.
fn request_state() -> impl Strategy<Value = Value> {
    prop_oneof![
        1 => Just(Value::Null),
        15 => (section(), section()).prop_map(|(desired, reported)| {
            let sections = [("desired", desired), ("reported", reported)];
            Value::Object(sections.into_iter().filter_map(|(name, s)| Some((name.to_owned(), s?))).collect())
        }),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        14 => (request_state(), prop::bool::weighted(0.3)).prop_map(|(state, snapshot)| Op::Update { state, snapshot }),
        1 => any::<bool>().prop_map(|carries_next| Op::Delete { carries_next }),
        1 => Just(Op::Restart),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, failure_persistence: None, ..ProptestConfig::default() })]

    /// Every version's document, folded from any checkpoint at or before it, is the model's.
    #[test]
    fn the_fold_agrees_with_the_shadow_service_model(
        ops in prop::collection::vec(op(), 1..40),
        picks in prop::collection::vec(any::<(Index, Index)>(), 0..6),
    ) {
        check(&ops, &picks)?;
    }
}

/// The model against the guide's own examples (and the choices it makes where the guide is silent).
#[test]
fn the_model_follows_the_guides_examples() {
    let run = |requests: &[Value]| {
        let mut document = Document::default();
        for request in requests {
            document.update(request);
        }
        document.to_json()
    };
    // Delta state: fields only in reported are not in the delta; nested differences keep their path.
    assert_eq!(
        run(&[json!({"desired": {"color": "RED", "state": "STOP"}, "reported": {"color": "GREEN", "engine": "ON"}})]),
        json!({"desired": {"color": "RED", "state": "STOP"}, "reported": {"color": "GREEN", "engine": "ON"},
               "delta": {"color": "RED", "state": "STOP"}})
    );
    let lights = |g: i64| json!({"lights": {"color": {"r": 255, "g": g, "b": 255}}});
    let nested = run(&[json!({"desired": lights(255), "reported": lights(0)})]);
    assert_eq!(nested["delta"], json!({"lights": {"color": {"g": 255}}}));
    // Arrays are replaced whole; a `null` field is deleted; `"desired": null` removes the section.
    let colors = run(&[
        json!({"desired": {"colors": ["RED", "GREEN", "BLUE"], "engine": "ON"}}),
        json!({"desired": {"colors": ["RED"], "engine": null}}),
    ]);
    assert_eq!(colors["desired"], json!({"colors": ["RED"]}));
    let removed = run(&[json!({"desired": {"a": 1}}), json!({"reported": {"color": "red"}, "desired": null})]);
    assert_eq!(removed, json!({"reported": {"color": "red"}}));
    // `"state": null` empties the document; numbers by value; UNCLEAR 1-3.
    assert_eq!(run(&[json!({"desired": {"a": 1}, "reported": {"b": 2}}), Value::Null]), json!({}));
    assert_eq!(run(&[json!({"desired": {"t": 30}, "reported": {"t": 30.0}})]).get("delta"), None);
    assert_eq!(run(&[json!({"desired": {"a": 1}}), json!({"desired": {"a": null}})]), json!({}));
    assert_eq!(run(&[json!({"desired": {"b": {"c": null}}})]), json!({"desired": {"b": {}}, "delta": {"b": {}}}));
}
