//! The push table: per push a plan item (written once) and a record item (small, written often); its journal,
//! failures and conflicts spread over the push's shards (`<pushId>#<n>`). Layout in docs/records.md ("Push records").

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_dynamodb::{
    Client,
    error::SdkError,
    operation::transact_write_items::TransactWriteItemsError,
    types::{AttributeValue, Put, ReturnValue, TransactWriteItem},
};
use futures::future::try_join_all;
use shadow_core::push::journal::{PartitionPacer, ShardPage, merge_pages, per_shard_limit};
use shadow_core::push::retention::{self, Kept, Through, Walk, WalkSteps};
use shadow_core::push::{
    Claim, Control, Failure, Journal, JournalEntry, JournalPage, JournalRef, PushDefinition, PushLists, PushRecord,
    PushRecords, PushState, Retention, StoredPush, lifecycle,
};
use shadow_core::service::{FaultKind, ServiceError};
use tokio::time::Instant;

use crate::sdk::{ConditionalWrite, service_error};
use crate::throttles::ThrottleCount;
use crate::{tables, writes};

/// The sort key of a push's record item: where it stands and who holds it (small, written often).
pub const RECORD: &str = "push";
/// The sort key of a push's plan item: what the push is (its validated request and sources, written once).
pub const PLAN: &str = "plan";
/// The sort-key prefix of a push's failure items (`failure#<thingName>`).
pub const FAILURE_PREFIX: &str = "failure#";
/// The sort-key prefix of the things a rollback left alone (`conflict#<thingName>`).
pub const CONFLICT_PREFIX: &str = "conflict#";
/// A rollout's recorded previous values: `previous#<phase:03>#<thing>`.
const PREVIOUS_PREFIX: &str = "previous#";
/// Journal entries per page read (from all shards together).
const JOURNAL_PAGE: u32 = 100;
/// Present (with the value [`OPEN`]) on the record of a push that is not complete nor stalled: the key of the
/// sparse index the sweeper queries, sorted by `leaseUntil`.
const OPEN_ATTRIBUTE: &str = tables::OPEN_PUSHES_KEY;
/// The sort key of the push's item that holds where a retention walk got ([`Through`]): beside the record rather
/// than on it, so that the record's every write stays under 1 KB however many partitions the walk has passed.
pub const KEPT: &str = "kept";
/// How often a retention walk saves where it got, beside when it stops: what a walk killed outright walks again.
const THROUGH_EVERY: Duration = Duration::from_secs(10);
const OPEN: &str = "open";

#[derive(Debug, Clone)]
pub struct DynamoPushStore {
    pub(crate) client: Client,
    pub(crate) table: String,
    /// A push's items are kept at least this long (seconds) past its last transition: `PUSH_RETENTION_DAYS`.
    retention_s: Option<u64>,
    /// Every request of `client` refused for throughput.
    throttled: ThrottleCount,
    /// The journal's, failures' and conflicts' writes, paced in write units per partition (none: unpaced).
    pacer: Option<Arc<Pacing>>,
}

/// A [`PartitionPacer`] on this process's clock.
#[derive(Debug)]
struct Pacing {
    origin: tokio::time::Instant,
    pacer: Mutex<PartitionPacer>,
}

fn unrepresentable(operation: &'static str, e: serde_dynamo::Error) -> ServiceError {
    ServiceError::new(operation, FaultKind::Rejected, Some("UnrepresentableItem".into()), e)
}

fn n(value: u64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_owned())
}

fn attribute(operation: &'static str, value: impl serde::Serialize) -> Result<AttributeValue, ServiceError> {
    serde_dynamo::to_attribute_value(value).map_err(|e| unrepresentable(operation, e))
}

/// An update's parts: `SET` clauses, `REMOVE`d names, and the placeholders' names and values.
type UpdateParts = (Vec<String>, Vec<String>, HashMap<String, String>, HashMap<String, AttributeValue>);

/// `SET` of every field a segment or a control writes, `REMOVE` of those it clears: placeholders `#f<i>`, `:f<i>`.
fn progress_update(next: &PushRecord, operation: &'static str) -> Result<UpdateParts, ServiceError> {
    let mut fields: Vec<(&str, Option<AttributeValue>)> = vec![
        ("targets", Some(n(next.status.counts.targets))),
        ("updated", Some(n(next.status.counts.updated))),
        ("unchanged", Some(n(next.status.counts.unchanged))),
        ("failed", Some(n(next.status.counts.failed))),
        ("requests", Some(n(next.status.counts.requests))),
        ("throttled", Some(n(next.status.counts.throttled))),
        ("storeThrottled", Some(n(next.status.counts.store_throttled))),
        ("cursor", Some(attribute(operation, &next.status.cursor)?)),
        ("complete", Some(AttributeValue::Bool(next.status.complete))),
        ("finishedAt", Some(attribute(operation, next.status.finished_at)?)),
        ("leaseUntil", Some(n(next.holder.lease_until))),
        ("state", Some(s(next.status.state.as_str()))),
        ("phase", Some(n(u64::from(next.status.phase)))),
        ("recheck", Some(AttributeValue::Bool(next.status.recheck))),
        ("bakeUntil", next.status.bake_until.map(n)),
        ("abortReason", next.status.abort_reason.as_deref().map(s)),
        ("rollback", next.status.rollback.as_ref().map(|r| attribute(operation, r)).transpose()?),
    ];
    if !next.status.phases.is_empty() {
        fields.push(("phases", Some(attribute(operation, &next.status.phases)?)));
    }
    let (mut set, mut remove) = (Vec::new(), Vec::new());
    let (mut names, mut values) = (HashMap::new(), HashMap::new());
    for (i, (field, value)) in fields.into_iter().enumerate() {
        names.insert(format!("#f{i}"), field.to_owned());
        match value {
            Some(value) => {
                set.push(format!("#f{i} = :f{i}"));
                values.insert(format!(":f{i}"), value);
            }
            None => remove.push(format!("#f{i}")),
        }
    }
    Ok((set, remove, names, values))
}

/// Whether a push in `state` stays in the sweeper's index.
fn stays_open(state: PushState) -> bool {
    !(state.is_final() || state == PushState::Paused)
}

impl DynamoPushStore {
    /// A store on `client`, with a count of the requests DynamoDB refuses for throughput installed on it.
    pub fn new(client: Client, table: impl Into<String>, retention_days: Option<u32>) -> Self {
        let throttled = ThrottleCount::default();
        let retention_s = retention_days.map(|days| u64::from(days) * 86_400);
        Self { client: throttled.install(&client), table: table.into(), retention_s, throttled, pacer: None }
    }

    /// The same store writing a push's journal entries, failures and conflicts at most `units_per_second` write
    /// units a second to any one partition ([`shadow_core::push::journal::pacing_units`]).
    pub fn with_partition_pacing(mut self, units_per_second: u32) -> Self {
        let pacer = Mutex::new(PartitionPacer::new(units_per_second));
        self.pacer = Some(Arc::new(Pacing { origin: tokio::time::Instant::now(), pacer }));
        self
    }

    /// Waits until every partition of `writes` (partition, write units) has room for them, taking their units.
    async fn pace(&self, writes: impl IntoIterator<Item = (String, u32)>) {
        let Some(pacing) = &self.pacer else { return };
        let now = pacing.origin.elapsed();
        let wait = {
            let mut pacer = pacing.pacer.lock().unwrap_or_else(|e| e.into_inner());
            writes.into_iter().map(|(partition, units)| pacer.take(&partition, units, now)).max().unwrap_or_default()
        };
        if !wait.is_zero() {
            tracing::debug!(wait_ms = wait.as_millis() as u64, "journal write paced");
            tokio::time::sleep(wait).await;
        }
    }

    /// The same store keeping pushes `seconds` (rather than whole days): for a retention in a test's clock.
    pub fn with_retention_seconds(mut self, seconds: u64) -> Self {
        self.retention_s = Some(seconds);
        self
    }

    /// The `expiresAt` of an item written now, when the store keeps pushes for a time.
    fn expires(&self, expires_at: u64) -> Option<AttributeValue> {
        self.retention_s.map(|_| n(expires_at))
    }
}

/// The key of a push's record item.
pub fn record_key(push_id: &str) -> HashMap<String, AttributeValue> {
    tables::key(push_id, RECORD)
}

/// The key of the item holding where a push's retention walk got.
pub fn kept_key(push_id: &str) -> HashMap<String, AttributeValue> {
    tables::key(push_id, KEPT)
}

/// The key of a push's plan item.
pub fn plan_key(push_id: &str) -> HashMap<String, AttributeValue> {
    tables::key(push_id, PLAN)
}

/// The partition key of one shard of a push's journal (`<pushId>#<n>`); the push's own for an unsharded one.
/// Push ids never contain `#`, so no push's shard is another push's partition.
pub fn journal_partition(at: JournalRef<'_>, shard: Option<u32>) -> String {
    match shard {
        Some(n) => format!("{}#{n}", at.push_id),
        None => at.push_id.to_owned(),
    }
}

/// The partition `thing`'s journal entries, failure and conflict go to.
fn thing_partition(at: JournalRef<'_>, thing: &str) -> String {
    journal_partition(at, at.shard_of(thing))
}

type Item = HashMap<String, AttributeValue>;

/// Why DynamoDB cancelled a transaction, when it says.
enum Cancelled {
    /// An item's condition failed: the push exists already.
    Exists,
    /// A conflict with another transaction, or throttling: the same write may pass again.
    Retry(FaultKind, String),
}

fn cancelled_by<R>(e: &SdkError<TransactWriteItemsError, R>) -> Option<Cancelled> {
    let Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) = e.as_service_error() else {
        return None;
    };
    let codes: Vec<&str> =
        cancelled.cancellation_reasons().iter().filter_map(|r| r.code()).filter(|c| *c != "None").collect();
    if codes.iter().any(|c| matches!(*c, "ThrottlingError" | "ProvisionedThroughputExceeded" | "RequestLimitExceeded"))
    {
        let code = codes.iter().find(|c| **c != "ConditionalCheckFailed").unwrap_or(&"ThrottlingError");
        return Some(Cancelled::Retry(FaultKind::Throttled, (*code).to_owned()));
    }
    if codes.contains(&"TransactionConflict") {
        return Some(Cancelled::Retry(FaultKind::Transient, "TransactionConflict".into()));
    }
    (!codes.is_empty() && codes.iter().all(|c| *c == "ConditionalCheckFailed")).then_some(Cancelled::Exists)
}

impl DynamoPushStore {
    /// One item, read strongly consistent.
    async fn get(&self, key: Item) -> Result<Option<Item>, ServiceError> {
        let got = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| service_error("GetItem", e))?;
        Ok(got.item)
    }
}

impl PushRecords for DynamoPushStore {
    async fn create(&self, definition: &PushDefinition, record: &PushRecord) -> Result<bool, ServiceError> {
        let expires = self.retention_s.map(|r| n(record.kept.expires_at(record.status.started_at, r)));
        let mut plan: Item = serde_dynamo::to_item(definition).map_err(|e| unrepresentable("TransactWriteItems", e))?;
        plan.extend(plan_key(&record.push_id));
        let mut hot: Item = serde_dynamo::to_item(record).map_err(|e| unrepresentable("TransactWriteItems", e))?;
        hot.extend(record_key(&record.push_id));
        if !record.status.complete {
            hot.insert(OPEN_ATTRIBUTE.into(), s(OPEN));
        }
        // Every record is in the index of recent pushes, by startedAt.
        hot.insert(tables::RECENT_PUSHES_KEY.into(), s(tables::RECENT_PUSHES_PARTITION));
        if let Some(expires) = expires {
            plan.insert(tables::TTL_ATTRIBUTE.into(), expires.clone());
            hot.insert(tables::TTL_ATTRIBUTE.into(), expires);
        }
        let size = tables::item_size(&plan);
        if size > tables::MAX_ITEM_BYTES {
            return Err(ServiceError::new(
                "TransactWriteItems",
                FaultKind::Rejected,
                Some("ItemTooLarge".into()),
                format!(
                    "push {}'s plan item would be {size} bytes, over DynamoDB's item limit of {} bytes (its \
                     request's desired document and targets, and its {} resolved sources)",
                    record.push_id,
                    tables::MAX_ITEM_BYTES,
                    definition.sources.len()
                ),
            ));
        }
        // Both or neither: a crash cannot leave a plan without its record, nor a record without its plan.
        let put = |item: Item| {
            Put::builder()
                .table_name(&self.table)
                .set_item(Some(item))
                .condition_expression("attribute_not_exists(#pk)")
                .expression_attribute_names("#pk", tables::PARTITION_KEY)
                .build()
                .map(|put| TransactWriteItem::builder().put(put).build())
                .map_err(|e| ServiceError::new("TransactWriteItems", FaultKind::Rejected, None, e))
        };
        let written =
            self.client.transact_write_items().transact_items(put(plan)?).transact_items(put(hot)?).send().await;
        match written {
            Ok(_) => Ok(true),
            Err(e) => match cancelled_by(&e) {
                Some(Cancelled::Exists) => Ok(false),
                Some(Cancelled::Retry(kind, code)) => Err(ServiceError::new("TransactWriteItems", kind, Some(code), e)),
                None => Err(service_error("TransactWriteItems", e)),
            },
        }
    }

    async fn load(&self, push_id: &str) -> Result<Option<StoredPush>, ServiceError> {
        // Two strongly consistent GetItems at once: one round trip, and right for every record (a Query on the
        // partition would also pass over an unsharded journal's items, which sort between `plan` and `push`).
        let (record, plan) = tokio::try_join!(self.get(record_key(push_id)), self.get(plan_key(push_id)))?;
        let Some(record_item) = record else { return Ok(None) };
        let definition = match plan {
            Some(plan) => serde_dynamo::from_item(plan).map_err(|e| unrepresentable("GetItem", e))?,
            // A record written before the plan had an item of its own carries the plan itself.
            None if record_item.contains_key("request") => {
                serde_dynamo::from_item(record_item.clone()).map_err(|e| unrepresentable("GetItem", e))?
            }
            None => {
                return Err(ServiceError::new(
                    "GetItem",
                    FaultKind::Rejected,
                    Some("MissingPlanItem".into()),
                    format!("push {push_id} has a record item but no plan item (sort key {PLAN:?})"),
                ));
            }
        };
        let record = serde_dynamo::from_item(record_item).map_err(|e| unrepresentable("GetItem", e))?;
        Ok(Some(StoredPush { definition, record }))
    }

    async fn load_record(&self, push_id: &str) -> Result<Option<PushRecord>, ServiceError> {
        self.get(record_key(push_id))
            .await?
            .map(|item| serde_dynamo::from_item(item).map_err(|e| unrepresentable("GetItem", e)))
            .transpose()
    }

    async fn claim(&self, push_id: &str, claim: &Claim, now_ms: u64) -> Result<bool, ServiceError> {
        let update = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(record_key(push_id)))
            .expression_attribute_names("#segment", "segment")
            .expression_attribute_values(":m", n(claim.segment))
            .expression_attribute_values(":prev", n(claim.segment.saturating_sub(1)))
            .expression_attribute_values(":owner", s(&claim.owner))
            .expression_attribute_values(":lease", n(claim.lease_until_ms))
            .expression_attribute_values(":false", AttributeValue::Bool(false));
        let update = if claim.takeover {
            // The holder of segment m died: its lease ran out, and it was not taken over too often already.
            update
                .update_expression("SET #owner = :owner, leaseUntil = :lease ADD takeovers :one")
                .condition_expression(
                    "complete = :false AND attribute_not_exists(stalled) AND #segment = :m AND handedOff = :prev \
                     AND leaseUntil < :now AND (attribute_not_exists(takeovers) OR takeovers < :max)",
                )
                .expression_attribute_names("#owner", "owner")
                .expression_attribute_values(":now", n(now_ms))
                .expression_attribute_values(":one", n(1))
                .expression_attribute_values(":max", n(u64::from(lifecycle::MAX_TAKEOVERS)))
        } else {
            // Segment m-1 was released: the next segment is free.
            update
                .update_expression(
                    "SET #segment = :m, #owner = :owner, leaseUntil = :lease, segmentStartedAt = :now, takeovers = :zero",
                )
                .condition_expression(
                    "complete = :false AND attribute_not_exists(stalled) AND #segment = :prev AND handedOff = :prev \
                     AND (attribute_not_exists(#state) OR #state IN (:running, :baking, :rollingBack)) \
                     AND attribute_not_exists(control)",
                )
                .expression_attribute_names("#state", "state")
                .expression_attribute_values(":running", s(PushState::Running.as_str()))
                .expression_attribute_values(":baking", s(PushState::Baking.as_str()))
                .expression_attribute_values(":rollingBack", s(PushState::RollingBack.as_str()))
                .expression_attribute_names("#owner", "owner")
                .expression_attribute_values(":now", n(now_ms))
                .expression_attribute_values(":zero", n(0))
        };
        update.send().await.condition_held("UpdateItem")
    }

    async fn renew(
        &self,
        push_id: &str,
        segment: u64,
        owner: &str,
        lease_until_ms: u64,
    ) -> Result<Option<Option<Control>>, ServiceError> {
        let renewed = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(record_key(push_id)))
            .update_expression("SET leaseUntil = :lease")
            .condition_expression("#owner = :owner AND #segment = :m AND handedOff = :prev")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_names("#segment", "segment")
            .expression_attribute_values(":owner", s(owner))
            .expression_attribute_values(":m", n(segment))
            .expression_attribute_values(":prev", n(segment.saturating_sub(1)))
            .expression_attribute_values(":lease", n(lease_until_ms))
            .return_values(ReturnValue::AllNew)
            .send()
            .await
            .unless_condition_failed("UpdateItem")?;
        Ok(renewed.map(|out| {
            out.attributes
                .and_then(|mut a| a.remove("control"))
                .and_then(|c| serde_dynamo::from_attribute_value::<_, Control>(c).ok())
        }))
    }

    async fn finish_segment(&self, next: &PushRecord, owner: &str) -> Result<Option<PushRecord>, ServiceError> {
        let (set, mut remove, mut names, mut values) = progress_update(next, "UpdateItem")?;
        // A finished or paused push leaves the sweeper's index; an open one stays in it, due at `leaseUntil`.
        if !stays_open(next.status.state) {
            remove.push("#open".into());
            names.insert("#open".into(), OPEN_ATTRIBUTE.into());
        }
        names.extend([("#owner".into(), "owner".into()), ("#segment".into(), "segment".into())]);
        values.extend([
            (":owner".into(), s(owner)),
            (":handed".into(), n(next.holder.handed_off)),
            (":m".into(), n(next.holder.segment)),
            (":prev".into(), n(next.holder.segment.saturating_sub(1))),
        ]);
        let remove = if remove.is_empty() { String::new() } else { format!(" REMOVE {}", remove.join(", ")) };
        let updated = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(record_key(&next.push_id)))
            // `SET handedOff` first: the crash tier recognises this write by it.
            .update_expression(format!("SET handedOff = :handed, {}{remove}", set.join(", ")))
            .condition_expression("#owner = :owner AND #segment = :m AND handedOff = :prev")
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .return_values(ReturnValue::AllNew)
            .send()
            .await
            .unless_condition_failed("UpdateItem")?;
        let Some(updated) = updated else { return Ok(None) };
        let item = updated.attributes.ok_or_else(|| {
            ServiceError::new("UpdateItem", FaultKind::Transient, None, "UpdateItem returned no attributes")
        })?;
        serde_dynamo::from_item(item).map(Some).map_err(|e| unrepresentable("UpdateItem", e))
    }

    async fn request_control(&self, push_id: &str, control: Control) -> Result<bool, ServiceError> {
        let condition = match control {
            // A pause does not replace an abort already asked for.
            Control::Pause => {
                "complete = :false AND attribute_not_exists(stalled) AND #state IN (:running, :baking, :rolling) \
                               AND attribute_not_exists(control)"
            }
            Control::Abort => {
                "complete = :false AND attribute_not_exists(stalled) AND #state IN (:running, :baking, :paused)"
            }
            // A rollback is also taken after a stop: aborted without one, or stalled.
            Control::AbortRollback => "complete = :false AND #state IN (:running, :baking, :paused, :aborted)",
        };
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(record_key(push_id)))
            .update_expression("SET control = :c")
            .condition_expression(condition)
            .expression_attribute_names("#state", "state")
            .set_expression_attribute_values({
                let mut values = HashMap::from([
                    (":c".to_owned(), attribute("UpdateItem", control)?),
                    (":false".to_owned(), AttributeValue::Bool(false)),
                    (":running".to_owned(), s(PushState::Running.as_str())),
                    (":baking".to_owned(), s(PushState::Baking.as_str())),
                ]);
                if control == Control::Pause {
                    values.insert(":rolling".into(), s(PushState::RollingBack.as_str()));
                } else {
                    values.insert(":paused".into(), s(PushState::Paused.as_str()));
                }
                if control == Control::AbortRollback {
                    values.insert(":aborted".into(), s(PushState::Aborted.as_str()));
                }
                Some(values)
            })
            .send()
            .await
            .condition_held("UpdateItem")
    }

    async fn apply_control(&self, next: &PushRecord, control: Control, now_ms: u64) -> Result<bool, ServiceError> {
        let (mut set, mut remove, mut names, mut values) = progress_update(next, "UpdateItem")?;
        remove.push("control".into());
        names.insert("#open".into(), OPEN_ATTRIBUTE.into());
        if stays_open(next.status.state) {
            // Back in the sweeper's index: a rollback after a stop left it.
            set.push("#open = :open".into());
            values.insert(":open".into(), s(OPEN));
        } else {
            remove.push("#open".into());
        }
        if next.holder.stalled.is_none() {
            remove.push("stalled".into());
        }
        set.push("takeovers = :takeovers".into());
        values.insert(":takeovers".into(), n(u64::from(next.holder.takeovers)));
        names.insert("#segment".into(), "segment".into());
        values.extend([
            (":c".into(), attribute("UpdateItem", control)?),
            (":handed".into(), n(next.holder.handed_off)),
            (":m".into(), n(next.holder.segment)),
            (":prev".into(), n(next.holder.segment.saturating_sub(1))),
            (":now".into(), n(now_ms)),
        ]);
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(record_key(&next.push_id)))
            .update_expression(format!("SET handedOff = :handed, {} REMOVE {}", set.join(", "), remove.join(", ")))
            .condition_expression(
                "control = :c AND #segment = :m AND (handedOff = :m OR (handedOff = :prev AND leaseUntil < :now))",
            )
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .send()
            .await
            .condition_held("UpdateItem")
    }

    async fn resume(&self, push_id: &str, state: PushState, lease_until_ms: u64) -> Result<bool, ServiceError> {
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(record_key(push_id)))
            .update_expression("SET #state = :s, leaseUntil = :lease, #open = :open")
            .condition_expression("#state = :paused AND attribute_not_exists(control)")
            .expression_attribute_names("#state", "state")
            .expression_attribute_names("#open", OPEN_ATTRIBUTE)
            .expression_attribute_values(":s", s(state.as_str()))
            .expression_attribute_values(":paused", s(PushState::Paused.as_str()))
            .expression_attribute_values(":lease", n(lease_until_ms))
            .expression_attribute_values(":open", s(OPEN))
            .send()
            .await
            .condition_held("UpdateItem")
    }

    async fn unstall(&self, next: &PushRecord) -> Result<bool, ServiceError> {
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(record_key(&next.push_id)))
            .update_expression(
                "SET handedOff = :m, takeovers = :zero, recheck = :true, leaseUntil = :lease, #open = :open \
                 REMOVE stalled",
            )
            .condition_expression("attribute_exists(stalled) AND #segment = :m")
            .expression_attribute_names("#segment", "segment")
            .expression_attribute_names("#open", OPEN_ATTRIBUTE)
            .expression_attribute_values(":m", n(next.holder.segment))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":true", AttributeValue::Bool(true))
            .expression_attribute_values(":lease", n(next.holder.lease_until))
            .expression_attribute_values(":open", s(OPEN))
            .send()
            .await
            .condition_held("UpdateItem")
    }

    async fn stall(&self, push_id: &str, segment: u64, reason: &str) -> Result<(), ServiceError> {
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(record_key(push_id)))
            .update_expression("SET stalled = :reason REMOVE #open")
            .condition_expression("complete = :false AND #segment = :m")
            .expression_attribute_names("#segment", "segment")
            .expression_attribute_names("#open", OPEN_ATTRIBUTE)
            .expression_attribute_values(":reason", s(reason))
            .expression_attribute_values(":m", n(segment))
            .expression_attribute_values(":false", AttributeValue::Bool(false))
            .send()
            .await
            .condition_held("UpdateItem")?;
        // Not stalled when the condition failed: someone else moved the push on meanwhile.
        Ok(())
    }

    async fn stale(&self, now_ms: u64, limit: usize) -> Result<Vec<String>, ServiceError> {
        let mut ids = Vec::new();
        let mut pages = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(tables::OPEN_PUSHES_INDEX)
            .key_condition_expression("#open = :open AND leaseUntil < :now")
            .expression_attribute_names("#open", OPEN_ATTRIBUTE)
            .expression_attribute_values(":open", s(OPEN))
            .expression_attribute_values(":now", n(now_ms))
            .into_paginator()
            .items()
            .send();
        while ids.len() < limit {
            let Some(item) = pages.next().await else { break };
            let item = item.map_err(|e| service_error("Query", e))?;
            if let Some(AttributeValue::S(id)) = item.get(tables::PARTITION_KEY) {
                ids.push(id.clone());
            }
        }
        Ok(ids)
    }

    fn throttled(&self) -> u64 {
        self.throttled.get()
    }
}

impl PushLists for DynamoPushStore {
    async fn add_failures(
        &self,
        at: JournalRef<'_>,
        expires_at: u64,
        failures: &[Failure],
    ) -> Result<(), ServiceError> {
        self.add_listed(at, expires_at, failures, FAILURE_PREFIX).await
    }

    async fn failures(&self, at: JournalRef<'_>, limit: usize) -> Result<Vec<Failure>, ServiceError> {
        self.listed(at, limit, FAILURE_PREFIX).await
    }

    async fn add_conflicts(
        &self,
        at: JournalRef<'_>,
        expires_at: u64,
        conflicts: &[Failure],
    ) -> Result<(), ServiceError> {
        self.add_listed(at, expires_at, conflicts, CONFLICT_PREFIX).await
    }

    async fn conflicts(&self, at: JournalRef<'_>, limit: usize) -> Result<Vec<Failure>, ServiceError> {
        self.listed(at, limit, CONFLICT_PREFIX).await
    }
}

impl Retention for DynamoPushStore {
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

impl WalkSteps for DynamoPushStore {
    /// Sets the record's `keepingTo` (and its own `expiresAt`) to `to`, unless a later target is there already:
    /// from then on the push's new items are written with `to`. `Ok(false)` when it was not set.
    async fn mark_keeping(&self, push_id: &str, to: u64) -> Result<bool, ServiceError> {
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(record_key(push_id)))
            .update_expression("SET keepingTo = :to, #ttl = :to")
            .condition_expression("attribute_exists(#pk) AND (attribute_not_exists(keepingTo) OR keepingTo < :to)")
            .expression_attribute_names("#pk", tables::PARTITION_KEY)
            .expression_attribute_names("#ttl", tables::TTL_ATTRIBUTE)
            .expression_attribute_values(":to", n(to))
            .send()
            .await
            .condition_held("UpdateItem")
    }

    /// The walk is done: `keptUntil = to`, and `keepingTo` removed unless a later target replaced it meanwhile.
    async fn mark_kept(&self, push_id: &str, to: u64) -> Result<(), ServiceError> {
        let done = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(record_key(push_id)))
            .update_expression("SET keptUntil = :to, #ttl = :to REMOVE keepingTo")
            .condition_expression("keepingTo = :to")
            .expression_attribute_names("#ttl", tables::TTL_ATTRIBUTE)
            .expression_attribute_values(":to", n(to))
            .send()
            .await
            .condition_held("UpdateItem")?;
        if !done {
            // A later target is being walked to: the items are kept at least until `to` all the same.
            self.client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(record_key(push_id)))
                .update_expression("SET keptUntil = :to")
                .condition_expression("attribute_exists(#pk) AND (attribute_not_exists(keptUntil) OR keptUntil < :to)")
                .expression_attribute_names("#pk", tables::PARTITION_KEY)
                .expression_attribute_values(":to", n(to))
                .send()
                .await
                .condition_held("UpdateItem")?;
        }
        Ok(())
    }

    /// Where a walk got, as last saved (`None`: never saved).
    async fn kept_through(&self, push_id: &str) -> Result<Option<Through>, ServiceError> {
        let got = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(kept_key(push_id)))
            .consistent_read(true)
            .projection_expression("#to, #after")
            .expression_attribute_names("#to", "to")
            .expression_attribute_names("#after", "after")
            .send()
            .await
            .map_err(|e| service_error("GetItem", e))?;
        got.item.map(|item| serde_dynamo::from_item(item).map_err(|e| unrepresentable("GetItem", e))).transpose()
    }

    /// Saves where a walk got, unless a walk to a later target saved its own already. The item expires with the
    /// target, as the push's other items.
    async fn save_through(&self, push_id: &str, through: &Through) -> Result<bool, ServiceError> {
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(kept_key(push_id)))
            .update_expression("SET #to = :to, #after = :after, #ttl = :to")
            .condition_expression("attribute_not_exists(#to) OR #to <= :to")
            .expression_attribute_names("#to", "to")
            .expression_attribute_names("#after", "after")
            .expression_attribute_names("#ttl", tables::TTL_ATTRIBUTE)
            .expression_attribute_values(":after", attribute("UpdateItem", &through.after)?)
            .expression_attribute_values(":to", n(through.to))
            .send()
            .await
            .condition_held("UpdateItem")
    }

    /// Rewrites `expiresAt` to the walk's target on the push's plan item and every item of its journal's partitions
    /// that expires before it: the partitions at once, each one's writes paced under `wps` write units a second,
    /// each from where the walk got before. Returns how many items were rewritten, and whether every partition was
    /// walked to its end (not: stopped at the walk's time).
    async fn rewrite_expiry(&self, record: &PushRecord, walk: &Walk<'_>) -> Result<(u64, bool), ServiceError> {
        let at = record.journal();
        let plan = self.extend_item(plan_key(&record.push_id), walk.to);
        // Where an earlier walk got, if saved: kept as long as the rest (in a sharded push's own partition, which
        // no partition's walk passes).
        let kept = self.extend_item(kept_key(&record.push_id), walk.to);
        let walks = at.shards().into_iter().map(|shard| self.extend_partition(journal_partition(at, shard), walk));
        let (plan, _, walked) = tokio::try_join!(plan, kept, try_join_all(walks))?;
        let rewritten = u64::from(plan) + walked.iter().map(|(n, _)| n).sum::<u64>();
        Ok((rewritten, walked.iter().all(|(_, done)| *done)))
    }
}

impl DynamoPushStore {
    /// One partition's items that expire before the walk's target, after where the walk got in it, each extended to
    /// the target, one write after another at most `wps` write units a second (each item's own units, by its size).
    /// Where it gets is saved beside the record every [`THROUGH_EVERY`]. Stops before a write that would start past the
    /// walk's time: `(rewritten, false)`.
    async fn extend_partition(&self, partition: String, walk: &Walk<'_>) -> Result<(u64, bool), ServiceError> {
        let unit = Duration::from_secs(1) / walk.wps.max(1);
        let mut next = Instant::now();
        let mut saved = Instant::now();
        let mut rewritten = 0;
        let after = walk.through.lock().unwrap_or_else(|e| e.into_inner()).after(&partition).map(str::to_owned);
        let mut pages = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("#pk = :p")
            .filter_expression("#ttl < :to")
            .expression_attribute_names("#pk", tables::PARTITION_KEY)
            .expression_attribute_names("#ttl", tables::TTL_ATTRIBUTE)
            .expression_attribute_values(":p", s(&partition))
            .expression_attribute_values(":to", n(walk.to))
            .set_exclusive_start_key(after.map(|sk| tables::key(&partition, &sk)))
            .into_paginator()
            .items()
            .send();
        while let Some(item) = pages.next().await {
            let mut item = item.map_err(|e| service_error("Query", e))?;
            if walk.out_of_time(next.max(Instant::now())) {
                return Ok((rewritten, false));
            }
            // Paced by the units this item's write takes (the items read whole: a Query's read units are counted on
            // the whole items, whatever it projects).
            let units = writes::write_units(&item);
            let key: Item =
                [tables::PARTITION_KEY, tables::SORT_KEY].into_iter().filter_map(|k| item.remove_entry(k)).collect();
            let sort_key = key.get(tables::SORT_KEY).and_then(|v| v.as_s().ok()).cloned().unwrap_or_default();
            tokio::time::sleep_until(next).await;
            next = Instant::now().max(next) + unit * units;
            rewritten += u64::from(self.extend_item(key, walk.to).await?);
            let through = {
                let mut through = walk.through.lock().unwrap_or_else(|e| e.into_inner());
                through.passed(&partition, sort_key);
                (saved.elapsed() >= THROUGH_EVERY).then(|| through.clone())
            };
            if let Some(through) = through {
                self.save_through(walk.push_id, &through).await?;
                saved = Instant::now();
            }
        }
        Ok((rewritten, true))
    }

    /// `expiresAt = to` on one item that still exists and expires before `to`; `Ok(false)` when it did not.
    async fn extend_item(&self, key: Item, to: u64) -> Result<bool, ServiceError> {
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key))
            .update_expression("SET #ttl = :to")
            .condition_expression("attribute_exists(#pk) AND (attribute_not_exists(#ttl) OR #ttl < :to)")
            .expression_attribute_names("#pk", tables::PARTITION_KEY)
            .expression_attribute_names("#ttl", tables::TTL_ATTRIBUTE)
            .expression_attribute_values(":to", n(to))
            .send()
            .await
            .condition_held("UpdateItem")
    }
}

impl DynamoPushStore {
    /// Writes listed things (failures, conflicts) under `prefix`, once each, each in its thing's shard.
    async fn add_listed(
        &self,
        at: JournalRef<'_>,
        expires_at: u64,
        failures: &[Failure],
        prefix: &str,
    ) -> Result<(), ServiceError> {
        // Failures expire with their push's other items.
        let expires_at = self.expires(expires_at);
        let mut seen = HashSet::new();
        let mut requests = Vec::new();
        for failure in failures.iter().filter(|f| seen.insert(f.thing_name.as_str())) {
            let mut item: HashMap<String, AttributeValue> =
                serde_dynamo::to_item(failure).map_err(|e| unrepresentable("BatchWriteItem", e))?;
            let partition = thing_partition(at, &failure.thing_name);
            item.extend(tables::key(&partition, &format!("{prefix}{}", failure.thing_name)));
            if let Some(expires) = expires_at.clone() {
                item.insert(tables::TTL_ATTRIBUTE.into(), expires);
            }
            let units = writes::write_units(&item);
            requests.push(((partition, units), writes::put_request(item)?));
        }
        // One batch at a time, each sent once its partitions have room for its items.
        let mut requests = requests.into_iter().peekable();
        while requests.peek().is_some() {
            let (paced, batch): (Vec<_>, Vec<_>) = requests.by_ref().take(writes::BATCH_LIMIT).unzip();
            self.pace(paced).await;
            writes::batch_write(&self.client, &self.table, batch).await?;
        }
        Ok(())
    }

    /// Up to `limit` listed things under `prefix`: every shard queried at once (up to `limit` each), in thing
    /// order.
    async fn listed(&self, at: JournalRef<'_>, limit: usize, prefix: &str) -> Result<Vec<Failure>, ServiceError> {
        let shards = at.shards();
        let reads = shards.iter().map(|shard| self.listed_in(journal_partition(at, *shard), limit, prefix));
        let mut all: Vec<Failure> = try_join_all(reads).await?.into_iter().flatten().collect();
        all.sort_by(|a, b| a.thing_name.cmp(&b.thing_name));
        all.truncate(limit);
        Ok(all)
    }

    /// Up to `limit` listed things under `prefix` in one partition.
    async fn listed_in(&self, partition: String, limit: usize, prefix: &str) -> Result<Vec<Failure>, ServiceError> {
        let mut failures = Vec::new();
        let mut pages = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("#pk = :p AND begins_with(#sk, :f)")
            .expression_attribute_names("#pk", tables::PARTITION_KEY)
            .expression_attribute_names("#sk", tables::SORT_KEY)
            .expression_attribute_values(":p", s(&partition))
            .expression_attribute_values(":f", s(prefix))
            .into_paginator()
            .items()
            .send();
        while failures.len() < limit {
            let Some(item) = pages.next().await else { break };
            let item = item.map_err(|e| service_error("Query", e))?;
            failures.push(serde_dynamo::from_item(item).map_err(|e| unrepresentable("Query", e))?);
        }
        Ok(failures)
    }
}

/// A recorded entry's item: the values as JSON text, so that every number reads back exactly as the shadow had it.
fn previous_entry(item: &HashMap<String, AttributeValue>) -> Option<JournalEntry> {
    let text = |k: &str| item.get(k).and_then(|v| v.as_s().ok());
    Some(JournalEntry {
        thing_name: text("thingName")?.clone(),
        phase: item.get("phase").and_then(|v| v.as_n().ok()).and_then(|p| p.parse().ok())?,
        values: serde_json::from_str(text("values")?).ok()?,
    })
}

impl DynamoPushStore {
    /// One shard's page of the journal: up to `limit` entries under `prefix` after the key `after`, and the key it
    /// stopped at when it has more.
    async fn previous_in(
        &self,
        partition: String,
        prefix: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<ShardPage, ServiceError> {
        let start = after.map(|a| tables::key(&partition, &format!("{PREVIOUS_PREFIX}{a}")));
        let page = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("#pk = :p AND begins_with(#sk, :prefix)")
            .expression_attribute_names("#pk", tables::PARTITION_KEY)
            .expression_attribute_names("#sk", tables::SORT_KEY)
            .expression_attribute_values(":p", s(&partition))
            .expression_attribute_values(":prefix", s(prefix))
            .set_exclusive_start_key(start)
            .consistent_read(true)
            .limit(i32::try_from(limit).unwrap_or(i32::MAX))
            .send()
            .await
            .map_err(|e| service_error("Query", e))?;
        let entries: Vec<JournalEntry> = page.items().iter().filter_map(previous_entry).collect();
        let last = page
            .last_evaluated_key()
            .and_then(|k| k.get(tables::SORT_KEY))
            .and_then(|v| v.as_s().ok())
            .and_then(|sk| sk.strip_prefix(PREVIOUS_PREFIX))
            .map(str::to_owned);
        Ok(ShardPage { entries, last })
    }
}

impl Journal for DynamoPushStore {
    async fn record_previous(
        &self,
        at: JournalRef<'_>,
        expires_at: u64,
        entry: &JournalEntry,
    ) -> Result<(), ServiceError> {
        let partition = thing_partition(at, &entry.thing_name);
        let mut item = tables::key(&partition, &format!("{PREVIOUS_PREFIX}{}", entry.key()));
        item.insert("thingName".into(), s(&entry.thing_name));
        item.insert("phase".into(), n(u64::from(entry.phase)));
        item.insert("values".into(), s(&entry.values.to_string()));
        if let Some(expires) = self.expires(expires_at) {
            item.insert(tables::TTL_ATTRIBUTE.into(), expires);
        }
        self.pace([(partition, writes::write_units(&item))]).await;
        // Recorded already (a retry of this thing): the first reading is what the thing held before the push.
        writes::put_if_absent(&self.client, &self.table, item).await?;
        Ok(())
    }

    /// Every shard queried at once after the same key, merged ([`merge_pages`]): the next page starts after the
    /// smallest key a shard with more stopped at.
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
        let reads = shards.iter().map(|shard| self.previous_in(journal_partition(at, *shard), &prefix, after, limit));
        Ok(merge_pages(try_join_all(reads).await?))
    }

    async fn previous(&self, at: JournalRef<'_>, key: &str) -> Result<Option<JournalEntry>, ServiceError> {
        // The key is `<phase:03>#<thing>`: the thing picks the shard.
        let thing = key.split_once('#').map_or(key, |(_, thing)| thing);
        let partition = thing_partition(at, thing);
        let got = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(tables::key(&partition, &format!("{PREVIOUS_PREFIX}{key}"))))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| service_error("GetItem", e))?;
        Ok(got.item.as_ref().and_then(previous_entry))
    }
}
