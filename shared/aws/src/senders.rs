//! The board of pushes that send shadow requests now, in the push table: one small item per push in a partition of
//! its own, read whole with a strongly consistent Query. A push reads it when it claims a segment and at every
//! renewal to learn its share of the account's quotas (`shadow_core::push::quota`).
//!
//! Why not the `open-pushes` index: it also holds pushes released and waiting for their next segment (their
//! `leaseUntil` is the hand-off grace) and baking ones, it projects keys only (no caps), and a global secondary index
//! is only eventually consistent. The board holds only segments that are walking, with their lease, caps and owner.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use shadow_core::push::quota::{Rates, Sender, Senders};
use shadow_core::service::ServiceError;

use crate::push_store::DynamoPushStore;
use crate::sdk::{ConditionalWrite, service_error};
use crate::tables;

/// The partition of the board. `#` is in no push id, so no push's items share it.
pub const SENDERS_PARTITION: &str = "#senders";
/// A board entry expires (TTL) this long after its lease: only entries of holders that died linger that long.
const ENTRY_TTL_S: u64 = 86_400;

fn n(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn number<T: std::str::FromStr>(item: &HashMap<String, AttributeValue>, name: &str) -> Option<T> {
    item.get(name).and_then(|v| v.as_n().ok()).and_then(|v| v.parse().ok())
}

/// A board entry read back; `None` for an item that is not one (it is then ignored).
fn sender(item: &HashMap<String, AttributeValue>) -> Option<Sender> {
    let text = |name: &str| item.get(name).and_then(|v| v.as_s().ok()).cloned();
    Some(Sender {
        push_id: text(tables::SORT_KEY)?,
        owner: text("owner")?,
        until_ms: number(item, "untilMs")?,
        caps: Rates { updates: number(item, "updates")?, reads: number(item, "reads")? },
        pace: Rates { updates: number(item, "paceUpdates")?, reads: number(item, "paceReads")? },
    })
}

impl Senders for DynamoPushStore {
    async fn announce(&self, sender: &Sender) -> Result<(), ServiceError> {
        let mut item = tables::key(SENDERS_PARTITION, &sender.push_id);
        item.insert("owner".into(), AttributeValue::S(sender.owner.clone()));
        item.insert("untilMs".into(), n(sender.until_ms));
        item.insert("updates".into(), n(sender.caps.updates));
        item.insert("reads".into(), n(sender.caps.reads));
        item.insert("paceUpdates".into(), n(sender.pace.updates));
        item.insert("paceReads".into(), n(sender.pace.reads));
        item.insert(tables::TTL_ATTRIBUTE.into(), n(sender.until_ms / 1000 + ENTRY_TTL_S));
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|e| service_error("PutItem", e))?;
        Ok(())
    }

    async fn senders(&self) -> Result<Vec<Sender>, ServiceError> {
        let mut pages = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("#pk = :p")
            .expression_attribute_names("#pk", tables::PARTITION_KEY)
            .expression_attribute_values(":p", AttributeValue::S(SENDERS_PARTITION.into()))
            .consistent_read(true)
            .into_paginator()
            .items()
            .send();
        let mut senders = Vec::new();
        while let Some(item) = pages.next().await {
            let item = item.map_err(|e| service_error("Query", e))?;
            match sender(&item) {
                Some(entry) => senders.push(entry),
                // Not counted: the push that wrote it paces as if alone until it writes a whole entry again.
                None => tracing::warn!(
                    entry = ?item.get(tables::SORT_KEY).and_then(|v| v.as_s().ok()),
                    "an entry on the board of senders lacks a field or holds a wrong type; it is not counted"
                ),
            }
        }
        Ok(senders)
    }

    async fn withdraw(&self, push_id: &str, owner: &str) -> Result<(), ServiceError> {
        // Another holder's entry (a takeover announced since) stays.
        self.client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(tables::key(SENDERS_PARTITION, push_id)))
            .condition_expression("#owner = :owner")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_values(":owner", AttributeValue::S(owner.into()))
            .send()
            .await
            .condition_held("DeleteItem")?;
        Ok(())
    }
}
