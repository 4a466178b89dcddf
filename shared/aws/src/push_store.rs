//! The push table: one record item per push, and one item per failed thing. Layout in the README ("Push records").

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use aws_sdk_dynamodb::{
    Client,
    types::{AttributeValue, PutRequest, ReturnValue, WriteRequest},
};
use shadow_core::push::{Claim, Failure, PushRecord, PushStore, SegmentOutcome, lifecycle};
use shadow_core::store::{FaultKind, ServiceError};

use crate::sdk::service_error;
use crate::tables;

/// The sort key of a push's record item.
pub const RECORD: &str = "push";
/// The sort-key prefix of a push's failure items (`failure#<thingName>`).
pub const FAILURE_PREFIX: &str = "failure#";
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
                    "complete = :false AND attribute_not_exists(stalled) AND #segment = :prev AND handedOff = :prev",
                )
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

    async fn renew(&self, push_id: &str, segment: u64, owner: &str, lease_until_ms: u64) -> Result<bool, ServiceError> {
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
            .send()
            .await;
        match renewed {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(Self::is_conditional_failure) => Ok(false),
            Err(e) => Err(service_error("UpdateItem", e)),
        }
    }

    async fn finish_segment(
        &self,
        push_id: &str,
        segment: u64,
        owner: &str,
        outcome: &SegmentOutcome,
        finished_at_ms: Option<u64>,
        lease_until_ms: u64,
    ) -> Result<Option<PushRecord>, ServiceError> {
        let cursor = serde_dynamo::to_attribute_value(&outcome.cursor).map_err(|e| unrepresentable("UpdateItem", e))?;
        let finished =
            serde_dynamo::to_attribute_value(finished_at_ms).map_err(|e| unrepresentable("UpdateItem", e))?;
        let complete = outcome.cursor.is_none();
        // A complete push leaves the sweeper's index; an open one stays in it, due at `lease_until_ms`.
        let open = if complete { " REMOVE #open" } else { "" };
        let update = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(push_id, RECORD)))
            .update_expression(format!(
                "ADD targets :t, updated :u, unchanged :c, failed :f, requests :r, throttled :h \
                 SET handedOff = :m, #cursor = :cursor, complete = :done, finishedAt = :finished, leaseUntil = :lease{open}"
            ))
            .condition_expression("#owner = :owner AND #segment = :m AND handedOff = :prev")
            .expression_attribute_names("#segment", "segment")
            .expression_attribute_names("#cursor", "cursor")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_values(":t", n(outcome.targets))
            .expression_attribute_values(":u", n(outcome.updated))
            .expression_attribute_values(":c", n(outcome.unchanged))
            .expression_attribute_values(":f", n(outcome.failed))
            .expression_attribute_values(":r", n(outcome.requests))
            .expression_attribute_values(":h", n(outcome.throttled))
            .expression_attribute_values(":m", n(segment))
            .expression_attribute_values(":prev", n(segment.saturating_sub(1)))
            .expression_attribute_values(":owner", s(owner))
            .expression_attribute_values(":cursor", cursor)
            .expression_attribute_values(":done", AttributeValue::Bool(complete))
            .expression_attribute_values(":finished", finished)
            .expression_attribute_values(":lease", n(lease_until_ms))
            .return_values(ReturnValue::AllNew);
        let update = if complete { update.expression_attribute_names("#open", OPEN_ATTRIBUTE) } else { update };
        let updated = match update.send().await {
            Ok(updated) => updated,
            Err(e) if e.as_service_error().is_some_and(Self::is_conditional_failure) => return Ok(None),
            Err(e) => return Err(service_error("UpdateItem", e)),
        };
        let item = updated.attributes.ok_or_else(|| {
            ServiceError::new("UpdateItem", FaultKind::Transient, None, "UpdateItem returned no attributes")
        })?;
        serde_dynamo::from_item(item).map(Some).map_err(|e| unrepresentable("UpdateItem", e))
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
        // Failures expire with their push record.
        let expires_at = self.expires_at(started_at_ms);
        let mut seen = HashSet::new();
        let unique: Vec<&Failure> = failures.iter().filter(|f| seen.insert(f.thing_name.as_str())).collect();
        for chunk in unique.chunks(BATCH) {
            let mut requests = Vec::with_capacity(chunk.len());
            for failure in chunk {
                let mut item: HashMap<String, AttributeValue> =
                    serde_dynamo::to_item(failure).map_err(|e| unrepresentable("BatchWriteItem", e))?;
                item.extend(Self::key(push_id, &format!("{FAILURE_PREFIX}{}", failure.thing_name)));
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

    async fn failures(&self, push_id: &str, limit: usize) -> Result<Vec<Failure>, ServiceError> {
        let mut failures = Vec::new();
        let mut pages = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :p AND begins_with(sk, :f)")
            .expression_attribute_values(":p", s(push_id))
            .expression_attribute_values(":f", s(FAILURE_PREFIX))
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
