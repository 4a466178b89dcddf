//! Reading the push table for people (the `shadow-fleet` CLI): a record as JSON (its record and plan items
//! together), so that fields a newer shadow-push writes show without a change here; every failure and every rollback
//! conflict, page by page from every shard of the push's journal; recent pushes from the `recent-pushes` index.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::{
    Client,
    types::{AttributeValue, KeysAndAttributes},
};
use futures::future::try_join_all;
use serde_json::Value;
use shadow_core::push::{Failure, JournalRef};
use shadow_core::service::{FaultKind, ServiceError};

use crate::push_store::{CONFLICT_PREFIX, FAILURE_PREFIX, PLAN, RECORD, journal_partition, plan_key, record_key};
use crate::sdk::service_error;
use crate::tables::{PARTITION_KEY, RECENT_PUSHES_INDEX, RECENT_PUSHES_KEY, RECENT_PUSHES_PARTITION, SORT_KEY};

/// BatchGetItem's limit.
const BATCH_GET: usize = 100;

/// Where a Query stopped: its `LastEvaluatedKey`.
pub type PageKey = HashMap<String, AttributeValue>;

#[derive(Debug, Clone)]
pub struct DynamoPushReader {
    client: Client,
    table: String,
}

fn unreadable(operation: &'static str, e: serde_dynamo::Error) -> ServiceError {
    ServiceError::new(operation, FaultKind::Rejected, Some("UnreadableItem".into()), e)
}

/// A record with its plan's attributes beside its own (the record's win: there are none in common but `pushId`).
fn with_plan(mut record: Value, plan: Option<Value>) -> Value {
    if let (Some(fields), Some(Value::Object(plan))) = (record.as_object_mut(), plan) {
        for (key, value) in plan {
            fields.entry(key).or_insert(value);
        }
    }
    record
}

/// An item as JSON, without the table's keys.
fn to_json(operation: &'static str, mut item: PageKey) -> Result<Value, ServiceError> {
    item.remove(PARTITION_KEY);
    item.remove(SORT_KEY);
    serde_dynamo::from_item(item).map_err(|e| unreadable(operation, e))
}

impl DynamoPushReader {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into() }
    }

    /// The push as stored: its record item's attributes, with its plan item's (`shadowName`, `dryRun`, `request`,
    /// `planDigest`, `sources`) beside them; `Ok(None)` for an unknown push id. A record written before the plan had an
    /// item of its own holds them itself.
    pub async fn record(&self, push_id: &str) -> Result<Option<Value>, ServiceError> {
        let get = |key: PageKey| {
            self.client.get_item().table_name(&self.table).set_key(Some(key)).consistent_read(true).send()
        };
        let (record, plan) = tokio::try_join!(
            async { get(record_key(push_id)).await.map_err(|e| service_error("GetItem", e)) },
            async { get(plan_key(push_id)).await.map_err(|e| service_error("GetItem", e)) },
        )?;
        let Some(record) = record.item else { return Ok(None) };
        Ok(Some(with_plan(to_json("GetItem", record)?, plan.item.map(|p| to_json("GetItem", p)).transpose()?)))
    }

    /// One page of the failures in one shard of the push's journal (`None`: an unsharded one), from `start` (the
    /// previous page's key); the key of the next page, if any.
    pub async fn failures_page(
        &self,
        at: JournalRef<'_>,
        shard: Option<u32>,
        start: Option<PageKey>,
    ) -> Result<(Vec<Failure>, Option<PageKey>), ServiceError> {
        self.listed_page(&journal_partition(at, shard), FAILURE_PREFIX, start).await
    }

    /// Every failure of the push, from every shard (read at once), each followed to its end; in thing order.
    pub async fn failures(&self, at: JournalRef<'_>) -> Result<Vec<Failure>, ServiceError> {
        self.listed(at, FAILURE_PREFIX).await
    }

    /// Every thing a rollback of the push left alone (`conflict#` items: code `RollbackConflict`, the leaves in the
    /// message), from every shard; in thing order.
    pub async fn conflicts(&self, at: JournalRef<'_>) -> Result<Vec<Failure>, ServiceError> {
        self.listed(at, CONFLICT_PREFIX).await
    }

    async fn listed_page(
        &self,
        partition: &str,
        prefix: &str,
        start: Option<PageKey>,
    ) -> Result<(Vec<Failure>, Option<PageKey>), ServiceError> {
        let page = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("#pk = :p AND begins_with(#sk, :f)")
            .expression_attribute_names("#pk", PARTITION_KEY)
            .expression_attribute_names("#sk", SORT_KEY)
            .expression_attribute_values(":p", AttributeValue::S(partition.to_owned()))
            .expression_attribute_values(":f", AttributeValue::S(prefix.to_owned()))
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(|e| service_error("Query", e))?;
        let failures = page
            .items
            .unwrap_or_default()
            .into_iter()
            .map(|item| serde_dynamo::from_item(item).map_err(|e| unreadable("Query", e)))
            .collect::<Result<Vec<Failure>, _>>()?;
        Ok((failures, page.last_evaluated_key.filter(|k| !k.is_empty())))
    }

    async fn listed(&self, at: JournalRef<'_>, prefix: &str) -> Result<Vec<Failure>, ServiceError> {
        let reads = at.shards().into_iter().map(|shard| self.listed_in(journal_partition(at, shard), prefix));
        let mut all: Vec<Failure> = try_join_all(reads).await?.into_iter().flatten().collect();
        all.sort_by(|a, b| a.thing_name.cmp(&b.thing_name));
        Ok(all)
    }

    /// Everything under `prefix` in one partition, following `LastEvaluatedKey` to the end.
    async fn listed_in(&self, partition: String, prefix: &str) -> Result<Vec<Failure>, ServiceError> {
        let mut all = Vec::new();
        let mut start = None;
        loop {
            let (page, next) = self.listed_page(&partition, prefix, start).await?;
            all.extend(page);
            match next {
                Some(next) => start = Some(next),
                None => return Ok(all),
            }
        }
    }

    /// How many shards the journal of the push whose record is `record` (as [`Self::record`] reads it) spans: its
    /// `journalShards`, 0 when absent (a push recorded before journals were sharded).
    pub fn journal_shards(record: &Value) -> u32 {
        record.get("journalShards").and_then(Value::as_u64).map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX))
    }

    /// The records of pushes started at or after `since_ms`, newest first, at most `limit`.
    pub async fn recent(&self, since_ms: u64, limit: usize) -> Result<Vec<Value>, ServiceError> {
        self.recent_where(since_ms, limit, |_| true).await
    }

    /// The records of pushes started at or after `since_ms` that `keep` takes, newest first, at most `limit`: the
    /// index is read a page at a time, and each page's records are read and kept or left before the next page
    /// (`push list --state`: the table's few pushes a day, read whole when asked about every push it holds).
    pub async fn recent_where(
        &self,
        since_ms: u64,
        limit: usize,
        keep: impl Fn(&Value) -> bool,
    ) -> Result<Vec<Value>, ServiceError> {
        let mut kept = Vec::new();
        let mut start = None;
        while kept.len() < limit {
            let wanted = limit - kept.len();
            let (ids, next) = self.recent_ids(since_ms, wanted, start).await?;
            kept.extend(self.records(&ids).await?.into_iter().filter(|r| keep(r)));
            match next {
                Some(next) => start = Some(next),
                None => break,
            }
        }
        kept.truncate(limit);
        Ok(kept)
    }

    /// Up to `limit` push ids from the `recent-pushes` index, newest first, from `start`; where the next page starts.
    async fn recent_ids(
        &self,
        since_ms: u64,
        limit: usize,
        start: Option<PageKey>,
    ) -> Result<(Vec<String>, Option<PageKey>), ServiceError> {
        let mut ids = Vec::new();
        let mut start = start;
        while ids.len() < limit {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(RECENT_PUSHES_INDEX)
                .key_condition_expression("#list = :all AND startedAt >= :since")
                .expression_attribute_names("#list", RECENT_PUSHES_KEY)
                .expression_attribute_values(":all", AttributeValue::S(RECENT_PUSHES_PARTITION.to_owned()))
                .expression_attribute_values(":since", AttributeValue::N(since_ms.to_string()))
                .scan_index_forward(false)
                .limit(i32::try_from(limit - ids.len()).unwrap_or(i32::MAX))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| service_error("Query", e))?;
            ids.extend(page.items.unwrap_or_default().into_iter().filter_map(
                |mut item| match item.remove(PARTITION_KEY) {
                    Some(AttributeValue::S(id)) => Some(id),
                    _ => None,
                },
            ));
            match page.last_evaluated_key.filter(|k| !k.is_empty()) {
                Some(next) => start = Some(next),
                None => return Ok((ids, None)),
            }
        }
        Ok((ids, start))
    }

    /// The records (each with its plan's attributes) of `ids`, in that order; a record that expired is left out.
    async fn records(&self, ids: &[String]) -> Result<Vec<Value>, ServiceError> {
        let (mut records, mut plans): (HashMap<String, Value>, HashMap<String, Value>) = Default::default();
        // Each push's record item and plan item.
        for chunk in ids.chunks(BATCH_GET / 2) {
            let mut keys = KeysAndAttributes::builder()
                .set_keys(Some(chunk.iter().flat_map(|id| [record_key(id), plan_key(id)]).collect()))
                .build()
                .map_err(|e| ServiceError::new("BatchGetItem", FaultKind::Rejected, None, e))?;
            // UnprocessedKeys come back under load: ask for them again, with backoff.
            for attempt in 0u32.. {
                let got = self
                    .client
                    .batch_get_item()
                    .request_items(&self.table, keys)
                    .send()
                    .await
                    .map_err(|e| service_error("BatchGetItem", e))?;
                for item in got.responses.and_then(|mut r| r.remove(&self.table)).unwrap_or_default() {
                    let kind = item.get(SORT_KEY).and_then(|k| k.as_s().ok()).cloned().unwrap_or_default();
                    let found = to_json("BatchGetItem", item)?;
                    let Some(id) = found.get("pushId").and_then(Value::as_str).map(str::to_owned) else { continue };
                    match kind.as_str() {
                        RECORD => records.insert(id, found),
                        PLAN => plans.insert(id, found),
                        _ => None,
                    };
                }
                match got.unprocessed_keys.and_then(|mut u| u.remove(&self.table)) {
                    Some(rest) if !rest.keys().is_empty() && attempt < 10 => {
                        keys = rest;
                        tokio::time::sleep(Duration::from_millis(50 << attempt.min(6))).await;
                    }
                    Some(rest) if !rest.keys().is_empty() => {
                        return Err(ServiceError::new(
                            "BatchGetItem",
                            FaultKind::Throttled,
                            Some("UnprocessedKeys".into()),
                            "keys still unprocessed after 10 attempts",
                        ));
                    }
                    _ => break,
                }
            }
        }
        // In the index's order; a record that expired since the index was read is left out.
        Ok(ids.iter().filter_map(|id| records.remove(id).map(|r| with_plan(r, plans.remove(id)))).collect())
    }
}
