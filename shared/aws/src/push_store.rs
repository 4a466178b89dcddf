//! The push table: one record item per push, and one item per failed thing. Layout in the README ("Push records").

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use aws_sdk_dynamodb::{
    Client,
    types::{AttributeValue, PutRequest, ReturnValue, WriteRequest},
};
use shadow_core::push::{
    Claim, Control, Failure, Journal, JournalPage, Previous, PushRecord, PushState, PushStore, lifecycle,
};
use shadow_core::store::{FaultKind, ServiceError};

use crate::sdk::service_error;
use crate::tables;

/// The sort key of a push's record item.
pub const RECORD: &str = "push";
/// The sort-key prefix of a push's failure items (`failure#<thingName>`).
pub const FAILURE_PREFIX: &str = "failure#";
/// The sort-key prefix of the things a rollback left alone (`conflict#<thingName>`).
pub const CONFLICT_PREFIX: &str = "conflict#";
/// A rollout's recorded previous values: `previous#<phase:03>#<thing>`.
const PREVIOUS_PREFIX: &str = "previous#";
/// Journal entries per page read.
const JOURNAL_PAGE: i32 = 100;
/// Present (with the value [`OPEN`]) on the record of a push that is not complete nor stalled: the key of the
/// sparse index the sweeper queries, sorted by `leaseUntil`.
const OPEN_ATTRIBUTE: &str = tables::OPEN_PUSHES_KEY;
const OPEN: &str = "open";
/// BatchWriteItem's limit.
const BATCH: usize = 25;

#[derive(Debug, Clone)]
pub struct DynamoPushStore {
    client: Client,
    table: String,
    /// Records and failures expire this many days after the push started.
    retention_days: Option<u32>,
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

fn state_name(state: PushState) -> String {
    serde_json::to_value(state).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

/// An update's parts: `SET` clauses, `REMOVE`d names, and the placeholders' names and values.
type UpdateParts = (Vec<String>, Vec<String>, HashMap<String, String>, HashMap<String, AttributeValue>);

/// `SET` of every field a segment or a control writes, `REMOVE` of those it clears: placeholders `#f<i>`, `:f<i>`.
fn progress_update(next: &PushRecord, operation: &'static str) -> Result<UpdateParts, ServiceError> {
    let mut fields: Vec<(&str, Option<AttributeValue>)> = vec![
        ("targets", Some(n(next.targets))),
        ("updated", Some(n(next.updated))),
        ("unchanged", Some(n(next.unchanged))),
        ("failed", Some(n(next.failed))),
        ("requests", Some(n(next.requests))),
        ("throttled", Some(n(next.throttled))),
        ("cursor", Some(attribute(operation, &next.cursor)?)),
        ("complete", Some(AttributeValue::Bool(next.complete))),
        ("finishedAt", Some(attribute(operation, next.finished_at)?)),
        ("leaseUntil", Some(n(next.lease_until))),
        ("state", Some(s(&state_name(next.state)))),
        ("phase", Some(n(u64::from(next.phase)))),
        ("recheck", Some(AttributeValue::Bool(next.recheck))),
        ("bakeUntil", next.bake_until.map(n)),
        ("abortReason", next.abort_reason.as_deref().map(s)),
        ("rollback", next.rollback.as_ref().map(|r| attribute(operation, r)).transpose()?),
    ];
    if !next.phases.is_empty() {
        fields.push(("phases", Some(attribute(operation, &next.phases)?)));
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
    pub fn new(client: Client, table: impl Into<String>, retention_days: Option<u32>) -> Self {
        Self { client, table: table.into(), retention_days }
    }

    fn expires_at(&self, started_at_ms: u64) -> Option<AttributeValue> {
        self.retention_days.map(|days| n(started_at_ms / 1000 + u64::from(days) * 86_400))
    }

    fn key(push_id: &str, sk: &str) -> HashMap<String, AttributeValue> {
        HashMap::from([("pk".to_owned(), s(push_id)), ("sk".to_owned(), s(sk))])
    }

    fn is_conditional_failure<E: aws_smithy_types::error::metadata::ProvideErrorMetadata>(e: &E) -> bool {
        e.code() == Some("ConditionalCheckFailedException")
    }
}

impl PushStore for DynamoPushStore {
    async fn create(&self, record: &PushRecord) -> Result<bool, ServiceError> {
        let mut item: HashMap<String, AttributeValue> =
            serde_dynamo::to_item(record).map_err(|e| unrepresentable("PutItem", e))?;
        item.extend(Self::key(&record.push_id, RECORD));
        if !record.complete {
            item.insert(OPEN_ATTRIBUTE.into(), s(OPEN));
        }
        // Every record is in the index of recent pushes, by startedAt.
        item.insert(tables::RECENT_PUSHES_KEY.into(), s(tables::RECENT_PUSHES_PARTITION));
        if let Some(expires) = self.expires_at(record.started_at) {
            item.insert(tables::TTL_ATTRIBUTE.into(), expires);
        }
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        match put {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => Ok(false),
            Err(e) => Err(service_error("PutItem", e)),
        }
    }

    async fn load(&self, push_id: &str) -> Result<Option<PushRecord>, ServiceError> {
        let got = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(push_id, RECORD)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| service_error("GetItem", e))?;
        got.item.map(|item| serde_dynamo::from_item(item).map_err(|e| unrepresentable("GetItem", e))).transpose()
    }

    async fn claim(&self, push_id: &str, claim: &Claim, now_ms: u64) -> Result<bool, ServiceError> {
        let update = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(push_id, RECORD)))
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
                .expression_attribute_values(":running", s("running"))
                .expression_attribute_values(":baking", s("baking"))
                .expression_attribute_values(":rollingBack", s("rollingBack"))
                .expression_attribute_names("#owner", "owner")
                .expression_attribute_values(":now", n(now_ms))
                .expression_attribute_values(":zero", n(0))
        };
        match update.send().await {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(Self::is_conditional_failure) => Ok(false),
            Err(e) => Err(service_error("UpdateItem", e)),
        }
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
            .set_key(Some(Self::key(push_id, RECORD)))
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
            .await;
        match renewed {
            Ok(out) => {
                let control = out
                    .attributes
                    .and_then(|mut a| a.remove("control"))
                    .and_then(|c| serde_dynamo::from_attribute_value::<_, Control>(c).ok());
                Ok(Some(control))
            }
            Err(e) if e.as_service_error().is_some_and(Self::is_conditional_failure) => Ok(None),
            Err(e) => Err(service_error("UpdateItem", e)),
        }
    }

    async fn finish_segment(&self, next: &PushRecord, owner: &str) -> Result<Option<PushRecord>, ServiceError> {
        let (set, mut remove, mut names, mut values) = progress_update(next, "UpdateItem")?;
        // A finished or paused push leaves the sweeper's index; an open one stays in it, due at `leaseUntil`.
        if !stays_open(next.state) {
            remove.push("#open".into());
            names.insert("#open".into(), OPEN_ATTRIBUTE.into());
        }
        names.extend([("#owner".into(), "owner".into()), ("#segment".into(), "segment".into())]);
        values.extend([
            (":owner".into(), s(owner)),
            (":handed".into(), n(next.handed_off)),
            (":m".into(), n(next.segment)),
            (":prev".into(), n(next.segment.saturating_sub(1))),
        ]);
        let remove = if remove.is_empty() { String::new() } else { format!(" REMOVE {}", remove.join(", ")) };
        let updated = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(&next.push_id, RECORD)))
            // `SET handedOff` first: the crash tier recognises this write by it.
            .update_expression(format!("SET handedOff = :handed, {}{remove}", set.join(", ")))
            .condition_expression("#owner = :owner AND #segment = :m AND handedOff = :prev")
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        let updated = match updated {
            Ok(updated) => updated,
            Err(e) if e.as_service_error().is_some_and(Self::is_conditional_failure) => return Ok(None),
            Err(e) => return Err(service_error("UpdateItem", e)),
        };
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
        let written = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(push_id, RECORD)))
            .update_expression("SET control = :c")
            .condition_expression(condition)
            .expression_attribute_names("#state", "state")
            .set_expression_attribute_values({
                let mut values = HashMap::from([
                    (":c".to_owned(), attribute("UpdateItem", control)?),
                    (":false".to_owned(), AttributeValue::Bool(false)),
                    (":running".to_owned(), s("running")),
                    (":baking".to_owned(), s("baking")),
                ]);
                if control == Control::Pause {
                    values.insert(":rolling".into(), s("rollingBack"));
                } else {
                    values.insert(":paused".into(), s("paused"));
                }
                if control == Control::AbortRollback {
                    values.insert(":aborted".into(), s("aborted"));
                }
                Some(values)
            })
            .send()
            .await;
        match written {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(Self::is_conditional_failure) => Ok(false),
            Err(e) => Err(service_error("UpdateItem", e)),
        }
    }

    async fn apply_control(&self, next: &PushRecord, control: Control, now_ms: u64) -> Result<bool, ServiceError> {
        let (mut set, mut remove, mut names, mut values) = progress_update(next, "UpdateItem")?;
        remove.push("control".into());
        names.insert("#open".into(), OPEN_ATTRIBUTE.into());
        if stays_open(next.state) {
            // Back in the sweeper's index: a rollback after a stop left it.
            set.push("#open = :open".into());
            values.insert(":open".into(), s(OPEN));
        } else {
            remove.push("#open".into());
        }
        if next.stalled.is_none() {
            remove.push("stalled".into());
        }
        set.push("takeovers = :takeovers".into());
        values.insert(":takeovers".into(), n(u64::from(next.takeovers)));
        names.insert("#segment".into(), "segment".into());
        values.extend([
            (":c".into(), attribute("UpdateItem", control)?),
            (":handed".into(), n(next.handed_off)),
            (":m".into(), n(next.segment)),
            (":prev".into(), n(next.segment.saturating_sub(1))),
            (":now".into(), n(now_ms)),
        ]);
        let applied = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(&next.push_id, RECORD)))
            .update_expression(format!("SET handedOff = :handed, {} REMOVE {}", set.join(", "), remove.join(", ")))
            .condition_expression(
                "control = :c AND #segment = :m AND (handedOff = :m OR (handedOff = :prev AND leaseUntil < :now))",
            )
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .send()
            .await;
        match applied {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(Self::is_conditional_failure) => Ok(false),
            Err(e) => Err(service_error("UpdateItem", e)),
        }
    }

    async fn resume(&self, push_id: &str, state: PushState, lease_until_ms: u64) -> Result<bool, ServiceError> {
        let resumed = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(push_id, RECORD)))
            .update_expression("SET #state = :s, leaseUntil = :lease, #open = :open")
            .condition_expression("#state = :paused AND attribute_not_exists(control)")
            .expression_attribute_names("#state", "state")
            .expression_attribute_names("#open", OPEN_ATTRIBUTE)
            .expression_attribute_values(":s", s(&state_name(state)))
            .expression_attribute_values(":paused", s("paused"))
            .expression_attribute_values(":lease", n(lease_until_ms))
            .expression_attribute_values(":open", s(OPEN))
            .send()
            .await;
        match resumed {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(Self::is_conditional_failure) => Ok(false),
            Err(e) => Err(service_error("UpdateItem", e)),
        }
    }

    async fn unstall(&self, next: &PushRecord) -> Result<bool, ServiceError> {
        let written = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(&next.push_id, RECORD)))
            .update_expression(
                "SET handedOff = :m, takeovers = :zero, recheck = :true, leaseUntil = :lease, #open = :open \
                 REMOVE stalled",
            )
            .condition_expression("attribute_exists(stalled) AND #segment = :m")
            .expression_attribute_names("#segment", "segment")
            .expression_attribute_names("#open", OPEN_ATTRIBUTE)
            .expression_attribute_values(":m", n(next.segment))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":true", AttributeValue::Bool(true))
            .expression_attribute_values(":lease", n(next.lease_until))
            .expression_attribute_values(":open", s(OPEN))
            .send()
            .await;
        match written {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(Self::is_conditional_failure) => Ok(false),
            Err(e) => Err(service_error("UpdateItem", e)),
        }
    }

    async fn stall(&self, push_id: &str, segment: u64, reason: &str) -> Result<(), ServiceError> {
        let stalled = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(push_id, RECORD)))
            .update_expression("SET stalled = :reason REMOVE #open")
            .condition_expression("complete = :false AND #segment = :m")
            .expression_attribute_names("#segment", "segment")
            .expression_attribute_names("#open", OPEN_ATTRIBUTE)
            .expression_attribute_values(":reason", s(reason))
            .expression_attribute_values(":m", n(segment))
            .expression_attribute_values(":false", AttributeValue::Bool(false))
            .send()
            .await;
        match stalled {
            Ok(_) => Ok(()),
            // Someone else moved the push on meanwhile: it is not stalled after all.
            Err(e) if e.as_service_error().is_some_and(Self::is_conditional_failure) => Ok(()),
            Err(e) => Err(service_error("UpdateItem", e)),
        }
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

    async fn add_failures(&self, push_id: &str, started_at_ms: u64, failures: &[Failure]) -> Result<(), ServiceError> {
        self.add_listed(push_id, started_at_ms, failures, FAILURE_PREFIX).await
    }

    async fn failures(&self, push_id: &str, limit: usize) -> Result<Vec<Failure>, ServiceError> {
        self.listed(push_id, limit, FAILURE_PREFIX).await
    }

    async fn add_conflicts(
        &self,
        push_id: &str,
        started_at_ms: u64,
        conflicts: &[Failure],
    ) -> Result<(), ServiceError> {
        self.add_listed(push_id, started_at_ms, conflicts, CONFLICT_PREFIX).await
    }

    async fn conflicts(&self, push_id: &str, limit: usize) -> Result<Vec<Failure>, ServiceError> {
        self.listed(push_id, limit, CONFLICT_PREFIX).await
    }
}

impl DynamoPushStore {
    /// Writes listed things (failures, conflicts) under `prefix`, once each.
    async fn add_listed(
        &self,
        push_id: &str,
        started_at_ms: u64,
        failures: &[Failure],
        prefix: &str,
    ) -> Result<(), ServiceError> {
        // Failures expire with their push record.
        let expires_at = self.expires_at(started_at_ms);
        let mut seen = HashSet::new();
        let unique: Vec<&Failure> = failures.iter().filter(|f| seen.insert(f.thing_name.as_str())).collect();
        for chunk in unique.chunks(BATCH) {
            let mut requests = Vec::with_capacity(chunk.len());
            for failure in chunk {
                let mut item: HashMap<String, AttributeValue> =
                    serde_dynamo::to_item(failure).map_err(|e| unrepresentable("BatchWriteItem", e))?;
                item.extend(Self::key(push_id, &format!("{prefix}{}", failure.thing_name)));
                if let Some(expires) = expires_at.clone() {
                    item.insert(tables::TTL_ATTRIBUTE.into(), expires);
                }
                let put = PutRequest::builder()
                    .set_item(Some(item))
                    .build()
                    .map_err(|e| ServiceError::new("BatchWriteItem", FaultKind::Rejected, None, e))?;
                requests.push(WriteRequest::builder().put_request(put).build());
            }
            let mut pending = HashMap::from([(self.table.clone(), requests)]);
            // UnprocessedItems come back under load: send them again, with backoff.
            for attempt in 0u32.. {
                let written = self
                    .client
                    .batch_write_item()
                    .set_request_items(Some(pending))
                    .send()
                    .await
                    .map_err(|e| service_error("BatchWriteItem", e))?;
                pending = written.unprocessed_items.unwrap_or_default();
                pending.retain(|_, requests| !requests.is_empty());
                if pending.is_empty() {
                    break;
                }
                if attempt >= 10 {
                    return Err(ServiceError::new(
                        "BatchWriteItem",
                        FaultKind::Throttled,
                        Some("UnprocessedItems".into()),
                        "items still unprocessed after 10 attempts",
                    ));
                }
                tokio::time::sleep(Duration::from_millis(50 << attempt.min(6))).await;
            }
        }
        Ok(())
    }

    async fn listed(&self, push_id: &str, limit: usize, prefix: &str) -> Result<Vec<Failure>, ServiceError> {
        let mut failures = Vec::new();
        let mut pages = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :p AND begins_with(sk, :f)")
            .expression_attribute_values(":p", s(push_id))
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
fn previous_entry(item: &HashMap<String, AttributeValue>) -> Option<Previous> {
    let text = |k: &str| item.get(k).and_then(|v| v.as_s().ok());
    Some(Previous {
        thing_name: text("thingName")?.clone(),
        phase: item.get("phase").and_then(|v| v.as_n().ok()).and_then(|p| p.parse().ok())?,
        values: serde_json::from_str(text("values")?).ok()?,
    })
}

impl Journal for DynamoPushStore {
    async fn record_previous(&self, push_id: &str, started_at_ms: u64, entry: &Previous) -> Result<(), ServiceError> {
        let mut item = Self::key(push_id, &format!("{PREVIOUS_PREFIX}{}", entry.key()));
        item.insert("thingName".into(), s(&entry.thing_name));
        item.insert("phase".into(), n(u64::from(entry.phase)));
        item.insert("values".into(), s(&entry.values.to_string()));
        if let Some(expires) = self.expires_at(started_at_ms) {
            item.insert(tables::TTL_ATTRIBUTE.into(), expires);
        }
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        match put {
            // Recorded already (a retry of this thing): the first reading is what the thing held before the push.
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => Ok(()),
            Err(e) => Err(service_error("PutItem", e)),
        }
    }

    async fn previous_page(
        &self,
        push_id: &str,
        phase: Option<u32>,
        after: Option<&str>,
    ) -> Result<JournalPage, ServiceError> {
        let prefix = match phase {
            Some(p) => format!("{PREVIOUS_PREFIX}{p:03}#"),
            None => PREVIOUS_PREFIX.to_owned(),
        };
        let start = after.map(|a| Self::key(push_id, &format!("{PREVIOUS_PREFIX}{a}")));
        let page = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :p AND begins_with(sk, :prefix)")
            .expression_attribute_values(":p", s(push_id))
            .expression_attribute_values(":prefix", s(&prefix))
            .set_exclusive_start_key(start)
            .consistent_read(true)
            .limit(JOURNAL_PAGE)
            .send()
            .await
            .map_err(|e| service_error("Query", e))?;
        let entries: Vec<Previous> = page.items().iter().filter_map(previous_entry).collect();
        let next = page
            .last_evaluated_key()
            .and_then(|k| k.get(tables::SORT_KEY))
            .and_then(|v| v.as_s().ok())
            .and_then(|sk| sk.strip_prefix(PREVIOUS_PREFIX))
            .map(str::to_owned);
        Ok(JournalPage { entries, next })
    }

    async fn previous(&self, push_id: &str, key: &str) -> Result<Option<Previous>, ServiceError> {
        let got = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(push_id, &format!("{PREVIOUS_PREFIX}{key}"))))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| service_error("GetItem", e))?;
        Ok(got.item.as_ref().and_then(previous_entry))
    }
}
