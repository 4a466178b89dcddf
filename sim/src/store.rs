//! The push table in memory: every port of the push store (records, journal and lists, retention, the board of
//! senders) with DynamoDB's conditional writes, as `shadow_aws::DynamoPushStore` makes them on the push table.
//!
//! The table is one ordered map of items by partition and sort key, laid out as the push table is (docs/records.md,
//! "Push records"): a push's record (`push`), plan (`plan`) and retention walk position (`kept`) in its partition,
//! its journal entries (`previous#<phase:03>#<thing>`), failures (`failure#<thing>`) and conflicts
//! (`conflict#<thing>`) in its shards' partitions (`<pushId>#<n>`, or its own when unsharded). Each write checks the
//! condition its DynamoDB expression states, and writes what its update expression writes, no more.
//! `tests/tests/store_conformance.rs` runs one script of conditional writes against both stores and holds them to
//! the same outcomes.
//!
//! Deterministic: ordered maps, no wall clock (times come in as arguments; a retention walk is paced on tokio's
//! clock, which a simulation pauses). A [`MemoryStore`] is a handle: its clones share one table, so concurrent
//! invocations see each other's writes. Faults are injected per call ([`MemoryStore::set_faults`]), before the write
//! or after it took effect (its answer lost), and every write that took effect is logged ([`MemoryStore::writes`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use shadow_core::push::journal::{ShardPage, merge_pages, per_shard_limit};
use shadow_core::push::quota::{Sender, Senders};
use shadow_core::push::retention::{self, Kept, Through, Walk, WalkSteps};
use shadow_core::push::{
    Claim, Control, Failure, Journal, JournalEntry, JournalPage, JournalRef, PushDefinition, PushLists, PushRecord,
    PushRecords, PushState, Retention, StoredPush, lifecycle,
};
use shadow_core::service::{FaultKind, ServiceError};
use tokio::time::Instant;

/// The sort key of a push's record.
const RECORD: &str = "push";
/// The sort key of a push's plan.
const PLAN: &str = "plan";
/// The sort key of where a push's retention walk got.
const KEPT: &str = "kept";
const PREVIOUS_PREFIX: &str = "previous#";
const FAILURE_PREFIX: &str = "failure#";
const CONFLICT_PREFIX: &str = "conflict#";
/// Journal entries per page read (from all shards together), as DynamoDB's store reads them.
const JOURNAL_PAGE: u32 = 100;
/// BatchWriteItem's limit of requests in one call: failures and conflicts are written in batches of this many.
const BATCH_LIMIT: usize = 25;
/// DynamoDB's item size limit, which a push's plan must fit.
const MAX_ITEM_BYTES: usize = 400 * 1024;
/// How often a retention walk saves where it got, beside when it stops.
const THROUGH_EVERY: Duration = Duration::from_secs(10);

/// One call the store answers: what a fault is injected into, and what the log of writes names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Op {
    Create,
    Load,
    LoadRecord,
    Claim,
    Renew,
    FinishSegment,
    RequestControl,
    ApplyControl,
    Resume,
    Stall,
    Unstall,
    Stale,
    /// One batch (up to 25) of failures.
    AddFailures,
    Failures,
    /// One batch (up to 25) of conflicts.
    AddConflicts,
    Conflicts,
    RecordPrevious,
    PreviousPage,
    Previous,
    /// A retention walk's first write: the record's `keepingTo`.
    MarkKeeping,
    /// A retention walk reads where an earlier walk got.
    KeptThrough,
    /// A retention walk rewrites one item's `expiresAt`.
    ExtendItem,
    /// A retention walk saves where it got.
    SaveThrough,
    /// A retention walk's last write: the record's `keptUntil`.
    MarkKept,
    Announce,
    Senders,
    Withdraw,
}

impl Op {
    /// Whether the call writes (a [`Fault::Lost`] on it leaves the write made); reads answer or fail.
    pub fn writes(self) -> bool {
        !matches!(
            self,
            Self::Load
                | Self::LoadRecord
                | Self::Stale
                | Self::Failures
                | Self::Conflicts
                | Self::PreviousPage
                | Self::Previous
                | Self::KeptThrough
                | Self::Senders
        )
    }

    /// The DynamoDB operation `DynamoPushStore` makes for it: the [`ServiceError::operation`] of its faults.
    pub fn operation(self) -> &'static str {
        match self {
            Self::Create => "TransactWriteItems",
            Self::Load | Self::LoadRecord | Self::Previous | Self::KeptThrough => "GetItem",
            Self::Stale | Self::Failures | Self::Conflicts | Self::PreviousPage | Self::Senders => "Query",
            Self::AddFailures | Self::AddConflicts => "BatchWriteItem",
            Self::RecordPrevious | Self::Announce => "PutItem",
            Self::Withdraw => "DeleteItem",
            Self::Claim
            | Self::Renew
            | Self::FinishSegment
            | Self::RequestControl
            | Self::ApplyControl
            | Self::Resume
            | Self::Stall
            | Self::Unstall
            | Self::MarkKeeping
            | Self::ExtendItem
            | Self::SaveThrough
            | Self::MarkKept => "UpdateItem",
        }
    }
}

/// A fault injected into one call.
#[derive(Debug)]
pub enum Fault {
    /// The call fails before it reaches the table (throttled, refused, the connection down): nothing is written.
    Refused(ServiceError),
    /// The write takes effect, then its answer is lost (a timeout, a dropped connection): the caller gets the error.
    /// On a read, the same as [`Fault::Refused`].
    Lost(ServiceError),
}

impl Fault {
    /// DynamoDB's `ProvisionedThroughputExceededException` (after the SDK's own retries), nothing written.
    pub fn throttled(op: Op) -> Self {
        Self::Refused(ServiceError::new(
            op.operation(),
            FaultKind::Throttled,
            Some("ProvisionedThroughputExceededException".into()),
            format!("{op:?}: the request rate for the table exceeds its throughput (injected)"),
        ))
    }

    /// A timeout after the write took effect: its answer lost.
    pub fn timed_out(op: Op) -> Self {
        Self::Lost(ServiceError::new(
            op.operation(),
            FaultKind::Transient,
            None,
            format!("{op:?}: timed out after the write took effect (injected)"),
        ))
    }

    fn error(&self) -> &ServiceError {
        match self {
            Self::Refused(e) | Self::Lost(e) => e,
        }
    }
}

/// Decides, per call, whether to inject a fault.
pub type Faults = Box<dyn FnMut(Op) -> Option<Fault> + Send>;

/// One write that took effect (its answer may still have been lost).
#[derive(Debug, Clone, PartialEq)]
pub struct Write {
    pub op: Op,
    pub push_id: String,
    /// The claim token the write was made under (claim, renew, finish_segment) or the board entry's.
    pub owner: Option<String>,
    /// The segment the write was made for (claim, renew, finish_segment, apply_control, stall, unstall).
    pub segment: Option<u64>,
    /// The things written (a journal entry's, failures', conflicts').
    pub things: Vec<String>,
    /// The push's record after the write, when the write touched it.
    pub record: Option<PushRecord>,
}

/// A push's record item: the record, and the attributes of the item beside it.
#[derive(Debug, Clone)]
struct RecordItem {
    record: PushRecord,
    /// In the sweeper's index (`openPush`).
    open: bool,
}

/// What an item holds.
#[derive(Debug, Clone)]
enum Body {
    Record(Box<RecordItem>),
    Plan(Box<PushDefinition>),
    Kept(Through),
    Previous(JournalEntry),
    Listed(Failure),
}

#[derive(Debug, Clone)]
struct Item {
    body: Body,
    /// `expiresAt` (epoch s), when the store keeps pushes for a time.
    expires_at: Option<u64>,
}

/// An item's key: partition, sort key.
type Key = (String, String);

fn key(partition: &str, sort: &str) -> Key {
    (partition.to_owned(), sort.to_owned())
}

/// The partition of one shard of a push's journal.
fn journal_partition(at: JournalRef<'_>, shard: Option<u32>) -> String {
    match shard {
        Some(n) => format!("{}#{n}", at.push_id),
        None => at.push_id.to_owned(),
    }
}

fn thing_partition(at: JournalRef<'_>, thing: &str) -> String {
    journal_partition(at, at.shard_of(thing))
}

/// Whether a push in `state` stays in the sweeper's index.
fn stays_open(state: PushState) -> bool {
    !(state.is_final() || state == PushState::Paused)
}

/// The fields a segment's record or a carried-out control writes (`progress_update` in the DynamoDB store): the
/// counts, cursor, state, phase, lease and what goes with them; `phases` only when `next` has some.
fn write_progress(record: &mut PushRecord, next: &PushRecord) {
    let (to, from) = (&mut record.status, &next.status);
    to.counts = from.counts.clone();
    to.cursor = from.cursor.clone();
    to.complete = from.complete;
    to.finished_at = from.finished_at;
    to.state = from.state;
    to.phase = from.phase;
    to.recheck = from.recheck;
    to.bake_until = from.bake_until;
    to.abort_reason = from.abort_reason.clone();
    to.rollback = from.rollback.clone();
    if !from.phases.is_empty() {
        to.phases = from.phases.clone();
    }
    record.holder.lease_until = next.holder.lease_until;
}

#[derive(Default)]
struct Table {
    items: BTreeMap<Key, Item>,
    /// The board of senders, by push id.
    board: BTreeMap<String, Sender>,
    writes: Vec<Write>,
    faults: Option<Faults>,
    /// Injected faults of kind [`FaultKind::Throttled`]: what [`PushRecords::throttled`] counts.
    throttled: u64,
}

impl Table {
    fn record(&self, push_id: &str) -> Option<&RecordItem> {
        match self.items.get(&key(push_id, RECORD)).map(|i| &i.body) {
            Some(Body::Record(item)) => Some(item),
            _ => None,
        }
    }

    fn record_mut(&mut self, push_id: &str) -> Option<&mut RecordItem> {
        match self.items.get_mut(&key(push_id, RECORD)).map(|i| &mut i.body) {
            Some(Body::Record(item)) => Some(item),
            _ => None,
        }
    }

    /// The fault the call meets, if any (a throttling one counted).
    fn fault(&mut self, op: Op) -> Option<Fault> {
        let fault = self.faults.as_mut().and_then(|decide| decide(op))?;
        if fault.error().kind == FaultKind::Throttled {
            self.throttled += 1;
        }
        Some(fault)
    }

    fn log(&mut self, op: Op, push_id: &str, owner: Option<&str>, segment: Option<u64>, things: Vec<String>) {
        let record = self.record(push_id).map(|item| item.record.clone());
        self.writes.push(Write {
            op,
            push_id: push_id.to_owned(),
            owner: owner.map(str::to_owned),
            segment,
            things,
            record,
        });
    }
}

/// The push table in memory. Clones share one table.
#[derive(Clone, Default)]
pub struct MemoryStore {
    table: Arc<Mutex<Table>>,
    /// A push's items are kept at least this long (seconds) past its last transition; `None`: never expire.
    retention_s: Option<u64>,
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let table = self.lock();
        f.debug_struct("MemoryStore")
            .field("items", &table.items.len())
            .field("board", &table.board.len())
            .field("writes", &table.writes.len())
            .field("retention_s", &self.retention_s)
            .finish()
    }
}

/// The outcome of a write the fault injector let through: what the write answers, or the lost answer's error.
fn answer<T>(fault: Option<Fault>, value: T) -> Result<T, ServiceError> {
    match fault {
        Some(Fault::Lost(e)) => Err(e),
        _ => Ok(value),
    }
}

impl MemoryStore {
    /// An empty table whose items never expire.
    pub fn new() -> Self {
        Self::default()
    }

    /// The same store keeping pushes `seconds` past their last transition (items carry `expiresAt`).
    pub fn with_retention_seconds(mut self, seconds: u64) -> Self {
        self.retention_s = Some(seconds);
        self
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// From now on, `faults` decides for every call whether it fails, and how ([`Fault`]).
    pub fn set_faults(&self, faults: Faults) {
        self.lock().faults = Some(faults);
    }

    /// No more injected faults.
    pub fn clear_faults(&self) {
        self.lock().faults = None;
    }

    /// Every write that took effect so far, in order.
    pub fn writes(&self) -> Vec<Write> {
        self.lock().writes.clone()
    }

    /// A push's record as stored, without a fault or a log entry: for a simulation's checks.
    pub fn peek(&self, push_id: &str) -> Option<PushRecord> {
        self.lock().record(push_id).map(|item| item.record.clone())
    }

    /// The `expiresAt` of every item of a push (its own partition's and its shards'), by partition and sort key.
    pub fn expiries(&self, at: JournalRef<'_>) -> BTreeMap<(String, String), Option<u64>> {
        let mut partitions: BTreeSet<String> = at.shards().into_iter().map(|s| journal_partition(at, s)).collect();
        partitions.insert(at.push_id.to_owned());
        let table = self.lock();
        table
            .items
            .iter()
            .filter(|((p, _), _)| partitions.contains(p))
            .map(|(k, i)| (k.clone(), i.expires_at))
            .collect()
    }

    /// Runs the fault injector for a read: `Err` when it fails.
    fn read<T>(&self, op: Op, read: impl FnOnce(&Table) -> Result<T, ServiceError>) -> Result<T, ServiceError> {
        let mut table = self.lock();
        if let Some(fault) = table.fault(op) {
            let (Fault::Refused(e) | Fault::Lost(e)) = fault;
            return Err(e);
        }
        read(&table)
    }

    /// A conditional write on a push's record: `write` checks its condition on the record and writes it, returning
    /// `None` when the condition failed. Logged when it took effect.
    fn update<T>(
        &self,
        op: Op,
        push_id: &str,
        (owner, segment): (Option<&str>, Option<u64>),
        write: impl FnOnce(&mut RecordItem) -> Option<T>,
    ) -> Result<Option<T>, ServiceError> {
        let mut table = self.lock();
        let fault = table.fault(op);
        if let Some(Fault::Refused(e)) = fault {
            return Err(e);
        }
        // A missing record fails every condition: no write creates one.
        let written = table.record_mut(push_id).and_then(write);
        if written.is_some() {
            table.log(op, push_id, owner, segment, Vec::new());
        }
        answer(fault, written)
    }

    /// Writes failures or conflicts under `prefix`, once each, each in its thing's shard: put (replacing an item
    /// written before), in batches of [`BATCH_LIMIT`], each batch a call of its own. Not paced per partition (no
    /// partition here has a write limit).
    fn add_listed(
        &self,
        op: Op,
        at: JournalRef<'_>,
        expires_at: u64,
        listed: &[Failure],
        prefix: &str,
    ) -> Result<(), ServiceError> {
        let expires_at = self.retention_s.map(|_| expires_at);
        let mut seen = BTreeSet::new();
        let unique: Vec<&Failure> = listed.iter().filter(|f| seen.insert(f.thing_name.as_str())).collect();
        for batch in unique.chunks(BATCH_LIMIT) {
            let mut table = self.lock();
            let fault = table.fault(op);
            if let Some(Fault::Refused(e)) = fault {
                return Err(e);
            }
            for failure in batch {
                let item = Item { body: Body::Listed((*failure).clone()), expires_at };
                let k = key(&thing_partition(at, &failure.thing_name), &format!("{prefix}{}", failure.thing_name));
                table.items.insert(k, item);
            }
            let things = batch.iter().map(|f| f.thing_name.clone()).collect();
            table.log(op, at.push_id, None, None, things);
            answer(fault, ())?;
        }
        Ok(())
    }

    /// Up to `limit` failures or conflicts under `prefix`, from every shard, in thing order.
    fn listed(&self, op: Op, at: JournalRef<'_>, limit: usize, prefix: &str) -> Result<Vec<Failure>, ServiceError> {
        self.read(op, |table| {
            let mut all = Vec::new();
            for shard in at.shards() {
                let partition = journal_partition(at, shard);
                let items = table
                    .items
                    .range(key(&partition, prefix)..)
                    .take_while(|((p, sk), _)| *p == partition && sk.starts_with(prefix));
                all.extend(
                    items
                        .filter_map(|(_, item)| match &item.body {
                            Body::Listed(f) => Some(f.clone()),
                            _ => None,
                        })
                        .take(limit),
                );
            }
            all.sort_by(|a, b| a.thing_name.cmp(&b.thing_name));
            all.truncate(limit);
            Ok(all)
        })
    }

    /// One shard's page of the journal: up to `limit` entries under `prefix` after the key `after`, and the key it
    /// stopped at when it read `limit` (as DynamoDB's `LastEvaluatedKey`, given whenever a Query stops at its limit).
    fn previous_in(table: &Table, partition: &str, prefix: &str, after: Option<&str>, limit: u32) -> ShardPage {
        let start = match after {
            Some(a) => Bound::Excluded(key(partition, &format!("{PREVIOUS_PREFIX}{a}"))),
            None => Bound::Included(key(partition, prefix)),
        };
        let entries: Vec<JournalEntry> = table
            .items
            .range((start, Bound::Unbounded))
            .take_while(|((p, _), _)| p == partition)
            .filter(|((_, sk), _)| sk.starts_with(prefix))
            .filter_map(|(_, item)| match &item.body {
                Body::Previous(p) => Some(p.clone()),
                _ => None,
            })
            .take(limit as usize)
            .collect();
        let last = (entries.len() == limit as usize).then(|| entries.last().map(JournalEntry::key)).flatten();
        ShardPage { entries, last }
    }
}

impl PushRecords for MemoryStore {
    async fn create(&self, definition: &PushDefinition, record: &PushRecord) -> Result<bool, ServiceError> {
        let push_id = record.push_id.as_str();
        let size = serde_json::to_vec(definition).map(|v| v.len()).unwrap_or(usize::MAX);
        if size > MAX_ITEM_BYTES {
            return Err(ServiceError::new(
                Op::Create.operation(),
                FaultKind::Rejected,
                Some("ItemTooLarge".into()),
                format!(
                    "push {push_id}'s plan item would be {size} bytes, over DynamoDB's item limit of \
                     {MAX_ITEM_BYTES} bytes (its request's desired document and targets, and its {} resolved sources)",
                    definition.sources.len()
                ),
            ));
        }
        let expires_at = self.retention_s.map(|r| record.kept.expires_at(record.status.started_at, r));
        let mut table = self.lock();
        let fault = table.fault(Op::Create);
        if let Some(Fault::Refused(e)) = fault {
            return Err(e);
        }
        // Both or neither.
        let (plan, hot) = (key(push_id, PLAN), key(push_id, RECORD));
        if table.items.contains_key(&plan) || table.items.contains_key(&hot) {
            return answer(fault, false);
        }
        table.items.insert(plan, Item { body: Body::Plan(Box::new(definition.clone())), expires_at });
        let item = RecordItem { record: record.clone(), open: !record.status.complete };
        table.items.insert(hot, Item { body: Body::Record(Box::new(item)), expires_at });
        let (owner, segment) = (record.holder.owner.as_str(), record.holder.segment);
        table.log(Op::Create, push_id, Some(owner), Some(segment), Vec::new());
        answer(fault, true)
    }

    async fn load(&self, push_id: &str) -> Result<Option<StoredPush>, ServiceError> {
        self.read(Op::Load, |table| {
            let Some(item) = table.record(push_id) else { return Ok(None) };
            let Some(Body::Plan(definition)) = table.items.get(&key(push_id, PLAN)).map(|i| &i.body) else {
                return Err(ServiceError::new(
                    Op::Load.operation(),
                    FaultKind::Rejected,
                    Some("MissingPlanItem".into()),
                    format!("push {push_id} has a record item but no plan item (sort key {PLAN:?})"),
                ));
            };
            Ok(Some(StoredPush { definition: (**definition).clone(), record: item.record.clone() }))
        })
    }

    async fn load_record(&self, push_id: &str) -> Result<Option<PushRecord>, ServiceError> {
        self.read(Op::LoadRecord, |table| Ok(table.record(push_id).map(|item| item.record.clone())))
    }

    async fn claim(&self, push_id: &str, claim: &Claim, now_ms: u64) -> Result<bool, ServiceError> {
        let (m, prev) = (claim.segment, claim.segment.saturating_sub(1));
        let written = self.update(Op::Claim, push_id, (Some(&claim.owner), Some(m)), |item| {
            let r = &mut item.record;
            let free = !r.status.complete && r.holder.stalled.is_none() && r.holder.handed_off == prev;
            if claim.takeover {
                // The holder of segment m died: its lease ran out, and it was not taken over too often already.
                let dead = r.holder.segment == m
                    && r.holder.lease_until < now_ms
                    && r.holder.takeovers < lifecycle::MAX_TAKEOVERS;
                (free && dead).then(|| {
                    r.holder.owner.clone_from(&claim.owner);
                    r.holder.lease_until = claim.lease_until_ms;
                    r.holder.takeovers += 1;
                })
            } else {
                // Segment m-1 was released: the next segment is free.
                let walking = matches!(r.status.state, PushState::Running | PushState::Baking | PushState::RollingBack);
                (free && r.holder.segment == prev && walking && r.status.control.is_none()).then(|| {
                    r.holder.segment = m;
                    r.holder.owner.clone_from(&claim.owner);
                    r.holder.lease_until = claim.lease_until_ms;
                    r.holder.segment_started_at = now_ms;
                    r.holder.takeovers = 0;
                })
            }
        })?;
        Ok(written.is_some())
    }

    async fn renew(
        &self,
        push_id: &str,
        segment: u64,
        owner: &str,
        lease_until_ms: u64,
    ) -> Result<Option<Option<Control>>, ServiceError> {
        self.update(Op::Renew, push_id, (Some(owner), Some(segment)), |item| {
            let h = &mut item.record.holder;
            (h.owner == owner && h.segment == segment && h.handed_off == segment.saturating_sub(1)).then(|| {
                h.lease_until = lease_until_ms;
                item.record.status.control
            })
        })
    }

    async fn finish_segment(&self, next: &PushRecord, owner: &str) -> Result<Option<PushRecord>, ServiceError> {
        let m = next.holder.segment;
        self.update(Op::FinishSegment, &next.push_id, (Some(owner), Some(m)), |item| {
            let h = &item.record.holder;
            if !(h.owner == owner && h.segment == m && h.handed_off == m.saturating_sub(1)) {
                return None;
            }
            item.record.holder.handed_off = next.holder.handed_off;
            write_progress(&mut item.record, next);
            // A finished or paused push leaves the sweeper's index; an open one stays as it is.
            if !stays_open(next.status.state) {
                item.open = false;
            }
            Some(item.record.clone())
        })
    }

    async fn request_control(&self, push_id: &str, control: Control) -> Result<bool, ServiceError> {
        use PushState::{Aborted, Baking, Paused, RollingBack, Running};
        let written = self.update(Op::RequestControl, push_id, (None, None), |item| {
            let s = &item.record.status;
            let stalled = item.record.holder.stalled.is_some();
            let allowed = !s.complete
                && match control {
                    // A pause does not replace an abort already asked for.
                    Control::Pause => {
                        !stalled && matches!(s.state, Running | Baking | RollingBack) && s.control.is_none()
                    }
                    Control::Abort => !stalled && matches!(s.state, Running | Baking | Paused),
                    // A rollback is also taken after a stop: aborted without one, or stalled.
                    Control::AbortRollback => matches!(s.state, Running | Baking | Paused | Aborted),
                };
            allowed.then(|| item.record.status.control = Some(control))
        })?;
        Ok(written.is_some())
    }

    async fn apply_control(&self, next: &PushRecord, control: Control, now_ms: u64) -> Result<bool, ServiceError> {
        let m = next.holder.segment;
        let written = self.update(Op::ApplyControl, &next.push_id, (None, Some(m)), |item| {
            let r = &mut item.record;
            let released = r.holder.handed_off == m
                || (r.holder.handed_off == m.saturating_sub(1) && r.holder.lease_until < now_ms);
            if !(r.status.control == Some(control) && r.holder.segment == m && released) {
                return None;
            }
            r.holder.handed_off = next.holder.handed_off;
            write_progress(r, next);
            r.status.control = None;
            if next.holder.stalled.is_none() {
                r.holder.stalled = None;
            }
            r.holder.takeovers = next.holder.takeovers;
            // Back in the sweeper's index when it goes on (a rollback after a stop left it).
            item.open = stays_open(next.status.state);
            Some(())
        })?;
        Ok(written.is_some())
    }

    async fn resume(&self, push_id: &str, state: PushState, lease_until_ms: u64) -> Result<bool, ServiceError> {
        let written = self.update(Op::Resume, push_id, (None, None), |item| {
            let r = &mut item.record;
            (r.status.state == PushState::Paused && r.status.control.is_none()).then(|| {
                r.status.state = state;
                r.holder.lease_until = lease_until_ms;
                item.open = true;
            })
        })?;
        Ok(written.is_some())
    }

    async fn stall(&self, push_id: &str, segment: u64, reason: &str) -> Result<(), ServiceError> {
        // Not stalled when the condition fails: someone else moved the push on meanwhile.
        self.update(Op::Stall, push_id, (None, Some(segment)), |item| {
            let r = &mut item.record;
            (!r.status.complete && r.holder.segment == segment).then(|| {
                r.holder.stalled = Some(reason.to_owned());
                item.open = false;
            })
        })?;
        Ok(())
    }

    async fn unstall(&self, next: &PushRecord) -> Result<bool, ServiceError> {
        let m = next.holder.segment;
        let written = self.update(Op::Unstall, &next.push_id, (None, Some(m)), |item| {
            let r = &mut item.record;
            (r.holder.stalled.is_some() && r.holder.segment == m).then(|| {
                r.holder.handed_off = m;
                r.holder.takeovers = 0;
                r.status.recheck = true;
                r.holder.lease_until = next.holder.lease_until;
                r.holder.stalled = None;
                item.open = true;
            })
        })?;
        Ok(written.is_some())
    }

    async fn stale(&self, now_ms: u64, limit: usize) -> Result<Vec<String>, ServiceError> {
        self.read(Op::Stale, |table| {
            // The sweeper's index: open records by `leaseUntil`.
            let mut due: Vec<(u64, &str)> = table
                .items
                .values()
                .filter_map(|item| match &item.body {
                    Body::Record(r) if r.open && r.record.holder.lease_until < now_ms => {
                        Some((r.record.holder.lease_until, r.record.push_id.as_str()))
                    }
                    _ => None,
                })
                .collect();
            due.sort_unstable();
            Ok(due.into_iter().take(limit).map(|(_, id)| id.to_owned()).collect())
        })
    }

    fn throttled(&self) -> u64 {
        self.lock().throttled
    }
}

impl PushLists for MemoryStore {
    async fn add_failures(
        &self,
        at: JournalRef<'_>,
        expires_at: u64,
        failures: &[Failure],
    ) -> Result<(), ServiceError> {
        self.add_listed(Op::AddFailures, at, expires_at, failures, FAILURE_PREFIX)
    }

    async fn failures(&self, at: JournalRef<'_>, limit: usize) -> Result<Vec<Failure>, ServiceError> {
        self.listed(Op::Failures, at, limit, FAILURE_PREFIX)
    }

    async fn add_conflicts(
        &self,
        at: JournalRef<'_>,
        expires_at: u64,
        conflicts: &[Failure],
    ) -> Result<(), ServiceError> {
        self.add_listed(Op::AddConflicts, at, expires_at, conflicts, CONFLICT_PREFIX)
    }

    async fn conflicts(&self, at: JournalRef<'_>, limit: usize) -> Result<Vec<Failure>, ServiceError> {
        self.listed(Op::Conflicts, at, limit, CONFLICT_PREFIX)
    }
}

impl Retention for MemoryStore {
    fn retention_s(&self) -> Option<u64> {
        self.retention_s
    }

    async fn extend_within(
        &self,
        record: &PushRecord,
        now_s: u64,
        open: bool,
        partition_wps: u32,
        within: Option<Duration>,
    ) -> Result<Kept, ServiceError> {
        retention::extend_within(self, self.retention_s, record, (now_s, open), partition_wps, within).await
    }
}

/// The retention walk's steps, each one conditional write or read as `DynamoPushStore` makes it.
impl WalkSteps for MemoryStore {
    /// `keepingTo = to` (and the record's `expiresAt`), unless a target as late is there already.
    async fn mark_keeping(&self, push_id: &str, to: u64) -> Result<bool, ServiceError> {
        let mut table = self.lock();
        let fault = table.fault(Op::MarkKeeping);
        if let Some(Fault::Refused(e)) = fault {
            return Err(e);
        }
        let Some(item) = table.items.get_mut(&key(push_id, RECORD)) else { return answer(fault, false) };
        let Body::Record(r) = &mut item.body else { return answer(fault, false) };
        if r.record.kept.keeping_to.is_some_and(|k| k >= to) {
            return answer(fault, false);
        }
        r.record.kept.keeping_to = Some(to);
        item.expires_at = Some(to);
        table.log(Op::MarkKeeping, push_id, None, None, Vec::new());
        answer(fault, true)
    }

    /// The walk is done: `keptUntil = to` (and the record's `expiresAt`), `keepingTo` removed, when `keepingTo` is
    /// still `to`; else `keptUntil` raised to `to` if it is below it.
    async fn mark_kept(&self, push_id: &str, to: u64) -> Result<(), ServiceError> {
        let mut table = self.lock();
        let fault = table.fault(Op::MarkKept);
        if let Some(Fault::Refused(e)) = fault {
            return Err(e);
        }
        let mut written = false;
        if let Some(item) = table.items.get_mut(&key(push_id, RECORD))
            && let Body::Record(r) = &mut item.body
        {
            let kept = &mut r.record.kept;
            if kept.keeping_to == Some(to) {
                kept.kept_until = Some(to);
                kept.keeping_to = None;
                item.expires_at = Some(to);
                written = true;
            } else if kept.kept_until.is_none_or(|k| k < to) {
                // A later target is being walked to: the items are kept at least until `to` all the same.
                kept.kept_until = Some(to);
                written = true;
            }
        }
        if written {
            table.log(Op::MarkKept, push_id, None, None, Vec::new());
        }
        answer(fault, ())
    }

    async fn kept_through(&self, push_id: &str) -> Result<Option<Through>, ServiceError> {
        self.read(Op::KeptThrough, |table| {
            Ok(match table.items.get(&key(push_id, KEPT)).map(|i| &i.body) {
                Some(Body::Kept(through)) => Some(through.clone()),
                _ => None,
            })
        })
    }

    /// Saves where a walk got, unless a walk to a later target saved its own already; it expires with the target.
    async fn save_through(&self, push_id: &str, through: &Through) -> Result<bool, ServiceError> {
        let mut table = self.lock();
        let fault = table.fault(Op::SaveThrough);
        if let Some(Fault::Refused(e)) = fault {
            return Err(e);
        }
        let k = key(push_id, KEPT);
        let later = matches!(table.items.get(&k).map(|i| &i.body), Some(Body::Kept(t)) if t.to > through.to);
        if later {
            return answer(fault, false);
        }
        table.items.insert(k, Item { body: Body::Kept(through.clone()), expires_at: Some(through.to) });
        table.log(Op::SaveThrough, push_id, None, None, Vec::new());
        answer(fault, true)
    }

    /// The plan, the walk's own item and every partition of the push's journal, the partitions at once, each from
    /// where the walk got, its writes paced under `wps` write units a second (an item of the journal taking one
    /// unit). Whether every partition was walked to its end.
    async fn rewrite_expiry(&self, record: &PushRecord, walk: &Walk<'_>) -> Result<(u64, bool), ServiceError> {
        let at = record.journal();
        let push = record.push_id.as_str();
        let plan = self.extend_item(push, &key(push, PLAN), walk.to)?;
        self.extend_item(push, &key(push, KEPT), walk.to)?;
        let partitions: Vec<String> = at.shards().into_iter().map(|s| journal_partition(at, s)).collect();
        let walks = partitions.iter().map(|p| self.extend_partition(p, walk));
        let walked = futures::future::try_join_all(walks).await?;
        let rewritten = u64::from(plan) + walked.iter().map(|(n, _)| n).sum::<u64>();
        Ok((rewritten, walked.iter().all(|(_, done)| *done)))
    }
}

impl MemoryStore {
    /// `expiresAt = to` on one item that still exists and expires before `to`; `Ok(false)` when it did not.
    fn extend_item(&self, push_id: &str, k: &Key, to: u64) -> Result<bool, ServiceError> {
        let mut table = self.lock();
        let fault = table.fault(Op::ExtendItem);
        if let Some(Fault::Refused(e)) = fault {
            return Err(e);
        }
        let Some(item) = table.items.get_mut(k) else { return answer(fault, false) };
        if item.expires_at.is_some_and(|e| e >= to) {
            return answer(fault, false);
        }
        item.expires_at = Some(to);
        table.log(Op::ExtendItem, push_id, None, None, vec![k.1.clone()]);
        answer(fault, true)
    }

    /// One partition's items that expire before the walk's target, after where the walk got in it, each extended,
    /// one unit's time apart; where it gets is saved every [`THROUGH_EVERY`]. Stops before a write that would start
    /// past the walk's time: `(rewritten, false)`.
    async fn extend_partition(&self, partition: &str, walk: &Walk<'_>) -> Result<(u64, bool), ServiceError> {
        let (push, to, wps, through) = (walk.push_id, walk.to, walk.wps, &walk.through);
        let mut rewritten = 0;
        let unit = Duration::from_secs(1) / wps.max(1);
        let mut next = Instant::now();
        let mut saved = Instant::now();
        let mut last = through.lock().unwrap_or_else(|e| e.into_inner()).after(partition).map(str::to_owned);
        loop {
            // The next item after `last` that expires before `to` (a missing `expiresAt` is not before it).
            let found = {
                let table = self.lock();
                let start = match &last {
                    Some(sk) => Bound::Excluded(key(partition, sk)),
                    None => Bound::Included(key(partition, "")),
                };
                table
                    .items
                    .range((start, Bound::Unbounded))
                    .take_while(|((p, _), _)| p == partition)
                    .find(|(_, item)| item.expires_at.is_some_and(|e| e < to))
                    .map(|(k, _)| k.clone())
            };
            let Some(k) = found else { return Ok((rewritten, true)) };
            if walk.out_of_time(next.max(Instant::now())) {
                return Ok((rewritten, false));
            }
            tokio::time::sleep_until(next).await;
            next = Instant::now().max(next) + unit;
            rewritten += u64::from(self.extend_item(push, &k, to)?);
            let save = {
                let mut through = through.lock().unwrap_or_else(|e| e.into_inner());
                through.passed(partition, k.1.clone());
                (saved.elapsed() >= THROUGH_EVERY).then(|| through.clone())
            };
            last = Some(k.1);
            if let Some(through) = save {
                self.save_through(push, &through).await?;
                saved = Instant::now();
            }
        }
    }
}

impl Journal for MemoryStore {
    async fn record_previous(
        &self,
        at: JournalRef<'_>,
        expires_at: u64,
        entry: &JournalEntry,
    ) -> Result<(), ServiceError> {
        let k = key(&thing_partition(at, &entry.thing_name), &format!("{PREVIOUS_PREFIX}{}", entry.key()));
        let mut table = self.lock();
        let fault = table.fault(Op::RecordPrevious);
        if let Some(Fault::Refused(e)) = fault {
            return Err(e);
        }
        // Recorded already (a retry of this thing): the first reading is what the thing held before the push.
        if let std::collections::btree_map::Entry::Vacant(vacant) = table.items.entry(k) {
            let expires_at = self.retention_s.map(|_| expires_at);
            vacant.insert(Item { body: Body::Previous(entry.clone()), expires_at });
            table.log(Op::RecordPrevious, at.push_id, None, None, vec![entry.thing_name.clone()]);
        }
        answer(fault, ())
    }

    async fn previous_page(
        &self,
        at: JournalRef<'_>,
        phase: Option<u32>,
        after: Option<&str>,
    ) -> Result<JournalPage, ServiceError> {
        let prefix = match phase {
            Some(p) => format!("{PREVIOUS_PREFIX}{p:03}#"),
            None => PREVIOUS_PREFIX.to_owned(),
        };
        let shards = at.shards();
        let limit = per_shard_limit(JOURNAL_PAGE, shards.len() as u32);
        self.read(Op::PreviousPage, |table| {
            let pages = shards
                .iter()
                .map(|shard| Self::previous_in(table, &journal_partition(at, *shard), &prefix, after, limit))
                .collect();
            Ok(merge_pages(pages))
        })
    }

    async fn previous(&self, at: JournalRef<'_>, key_: &str) -> Result<Option<JournalEntry>, ServiceError> {
        // The key is `<phase:03>#<thing>`: the thing picks the shard.
        let thing = key_.split_once('#').map_or(key_, |(_, thing)| thing);
        let k = key(&thing_partition(at, thing), &format!("{PREVIOUS_PREFIX}{key_}"));
        self.read(Op::Previous, |table| {
            Ok(match table.items.get(&k).map(|i| &i.body) {
                Some(Body::Previous(p)) => Some(p.clone()),
                _ => None,
            })
        })
    }
}

impl Senders for MemoryStore {
    async fn announce(&self, sender: &Sender) -> Result<(), ServiceError> {
        let mut table = self.lock();
        let fault = table.fault(Op::Announce);
        if let Some(Fault::Refused(e)) = fault {
            return Err(e);
        }
        table.board.insert(sender.push_id.clone(), sender.clone());
        table.log(Op::Announce, &sender.push_id, Some(&sender.owner), None, Vec::new());
        answer(fault, ())
    }

    async fn senders(&self) -> Result<Vec<Sender>, ServiceError> {
        self.read(Op::Senders, |table| Ok(table.board.values().cloned().collect()))
    }

    async fn withdraw(&self, push_id: &str, owner: &str) -> Result<(), ServiceError> {
        let mut table = self.lock();
        let fault = table.fault(Op::Withdraw);
        if let Some(Fault::Refused(e)) = fault {
            return Err(e);
        }
        // Another holder's entry (a takeover announced since) stays.
        if table.board.get(push_id).is_some_and(|s| s.owner == owner) {
            table.board.remove(push_id);
            table.log(Op::Withdraw, push_id, Some(owner), None, Vec::new());
        }
        answer(fault, ())
    }
}

#[cfg(test)]
mod tests {
    use shadow_core::push::{Holder, Status};

    use super::*;

    fn definition(push_id: &str) -> PushDefinition {
        PushDefinition {
            push_id: push_id.into(),
            shadow_name: None,
            dry_run: false,
            request: serde_json::json!({"pushId": push_id}),
            plan_digest: "d".into(),
            sources: Vec::new(),
        }
    }

    /// A push's first record: segment 1 claimed by `o1` until `lease`.
    fn record(push_id: &str, lease: u64) -> PushRecord {
        PushRecord {
            push_id: push_id.into(),
            journal_shards: 2,
            status: Status { started_at: 1_000, ..Status::default() },
            holder: Holder { segment: 1, owner: "o1".into(), lease_until: lease, ..Holder::default() },
            kept: Kept::default(),
        }
    }

    fn claim(segment: u64, owner: &str, takeover: bool) -> Claim {
        Claim { segment, owner: owner.into(), lease_until_ms: 50_000, takeover }
    }

    #[tokio::test]
    async fn a_push_is_created_once_and_its_clones_share_the_table() {
        let store = MemoryStore::new();
        let other = store.clone();
        assert!(store.create(&definition("p"), &record("p", 5_000)).await.expect("created"));
        assert!(!other.create(&definition("p"), &record("p", 9_000)).await.expect("answered"), "used before");
        let stored = other.load("p").await.expect("read").expect("there");
        assert_eq!((stored.record.holder.lease_until, stored.definition.push_id.as_str()), (5_000, "p"));
        assert_eq!(store.writes().len(), 1, "one create took effect: {:?}", store.writes());
    }

    #[tokio::test]
    async fn a_takeover_needs_a_lease_run_out_and_fewer_than_max_takeovers() {
        let store = MemoryStore::new();
        store.create(&definition("p"), &record("p", 5_000)).await.expect("created");
        assert!(!store.claim("p", &claim(1, "o2", true), 5_000).await.expect("answered"), "lease holds at 5000");
        for n in 0..lifecycle::MAX_TAKEOVERS {
            let owner = format!("t{n}");
            assert!(store.claim("p", &claim(1, &owner, true), 60_000).await.expect("answered"), "takeover {n}");
        }
        assert!(!store.claim("p", &claim(1, "late", true), 60_000).await.expect("answered"), "past the most");
        assert!(!store.claim("p", &claim(2, "o3", false), 60_000).await.expect("answered"), "1 not released");
        let r = store.peek("p").expect("there");
        assert_eq!((r.holder.owner.as_str(), r.holder.takeovers), ("t2", lifecycle::MAX_TAKEOVERS));
    }

    #[tokio::test]
    async fn a_refused_call_writes_nothing_and_a_lost_answer_writes() {
        let store = MemoryStore::new();
        store.create(&definition("p"), &record("p", 5_000)).await.expect("created");
        store.set_faults(Box::new(|op| (op == Op::Renew).then(|| Fault::throttled(op))));
        let e = store.renew("p", 1, "o1", 8_000).await.expect_err("throttled");
        assert_eq!((e.kind, e.operation), (FaultKind::Throttled, "UpdateItem"));
        assert_eq!((store.peek("p").expect("there").holder.lease_until, store.throttled()), (5_000, 1));
        assert!(Op::Renew.writes() && !Op::LoadRecord.writes());
        store.set_faults(Box::new(|op| (op == Op::Renew).then(|| Fault::timed_out(op))));
        store.renew("p", 1, "o1", 8_000).await.expect_err("its answer lost");
        assert_eq!(store.peek("p").expect("there").holder.lease_until, 8_000, "the write took effect");
        store.clear_faults();
        let renew = store.writes().into_iter().find(|w| w.op == Op::Renew).expect("logged");
        assert_eq!((renew.owner.as_deref(), renew.segment), (Some("o1"), Some(1)));
        assert_eq!(renew.record.map(|r| r.holder.lease_until), Some(8_000));
    }

    /// On tokio's paused clock a walk stopped by its time rewrites exactly the items its pace allows (at 10 a
    /// second, those starting at 0, 100 and 200 ms of 250), and the next call finishes it from there.
    #[tokio::test(start_paused = true)]
    async fn a_retention_walk_stops_where_its_pace_says_and_resumes_there() {
        const R: u64 = 3600;
        let store = MemoryStore::new().with_retention_seconds(R);
        let mut first = record("p", 5_000);
        first.journal_shards = 1;
        store.create(&definition("p"), &first).await.expect("created");
        let until = first.kept.expires_at(first.status.started_at, R);
        for i in 0..20 {
            let entry = JournalEntry { thing_name: format!("t{i:02}"), phase: 1, values: serde_json::json!({"v": i}) };
            store.record_previous(first.journal(), until, &entry).await.expect("recorded");
        }
        let now_s = first.status.started_at / 1000 + 2_000;
        let to = now_s + 2 * R;
        let journal = |store: &MemoryStore| {
            let expiries = store.expiries(first.journal());
            let entries = expiries.iter().filter(|((p, _), _)| p == "p#0");
            entries.filter(|(_, e)| **e == Some(to)).count()
        };
        let kept =
            store.extend_within(&first, now_s, true, 10, Some(Duration::from_millis(250))).await.expect("walked");
        assert_eq!(kept, Kept { kept_until: None, keeping_to: Some(to) });
        assert_eq!(journal(&store), 3, "three entries in 250 ms at 10 a second");
        let marked = store.peek("p").expect("there");
        assert_eq!(marked.kept.keeping_to, Some(to));
        let kept = store.extend_within(&marked, now_s, true, 1000, None).await.expect("walked");
        assert_eq!(kept, Kept { kept_until: Some(to), keeping_to: None });
        assert_eq!(journal(&store), 20, "the rest, resumed");
        assert_eq!(store.peek("p").expect("there").kept, kept);
    }

    #[tokio::test]
    async fn failures_are_kept_once_each_in_their_shards() {
        let store = MemoryStore::new();
        let at = JournalRef::new("p", 4);
        let failure = |t: &str, m: &str| Failure { thing_name: t.into(), code: "c".into(), message: m.into() };
        let failures: Vec<Failure> = (0..30).map(|i| failure(&format!("t{i:02}"), "first")).collect();
        store.add_failures(at, 0, &failures).await.expect("written");
        store.add_failures(at, 0, &[failure("t00", "again"), failure("t00", "third")]).await.expect("written");
        let read = store.failures(at, 100).await.expect("read");
        assert_eq!(read.len(), 30);
        assert_eq!(read[0], failure("t00", "again"), "a put replaces; the first of a call's duplicates is kept");
        assert_eq!(store.failures(at, 3).await.expect("read").len(), 3);
        let batches = store.writes().iter().filter(|w| w.op == Op::AddFailures).count();
        assert_eq!(batches, 3, "30 in two batches of at most 25, then one");
    }
}
