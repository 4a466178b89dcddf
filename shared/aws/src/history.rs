//! The history table in DynamoDB: one conditional put per event, so a redelivery never adds or changes an item.

use std::collections::HashMap;

use aws_sdk_dynamodb::{Client, types::AttributeValue};
use serde_json::Value;
use shadow_core::ShadowRef;
use shadow_core::history::{HistoryRecord, HistoryStore, PARTITION_KEY, PutOutcome, SORT_KEY, partition_key};
use shadow_core::store::{FaultKind, ServiceError};

use crate::sdk::service_error;

#[derive(Debug, Clone)]
pub struct DynamoHistoryStore {
    client: Client,
    table: String,
}

impl DynamoHistoryStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into() }
    }

    pub fn from_sdk(config: &aws_config::SdkConfig, table: impl Into<String>) -> Self {
        Self::new(Client::new(config), table)
    }

    /// Every recorded event of one shadow, oldest first, as JSON objects with the documented attributes.
    pub async fn events(&self, shadow: &ShadowRef) -> Result<Vec<Value>, ServiceError> {
        let mut events = Vec::new();
        let mut pages = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("#pk = :pk")
            .expression_attribute_names("#pk", PARTITION_KEY)
            .expression_attribute_values(":pk", AttributeValue::S(partition_key(shadow)))
            .consistent_read(true)
            .into_paginator()
            .items()
            .send();
        while let Some(item) = pages.next().await {
            let mut item = item.map_err(|e| service_error("Query", e))?;
            item.remove(PARTITION_KEY);
            item.remove(SORT_KEY);
            let event: Value = serde_dynamo::from_item(item)
                .map_err(|e| ServiceError::new("Query", FaultKind::Rejected, Some("UnreadableItem".into()), e))?;
            events.push(event);
        }
        Ok(events)
    }
}

/// The item for `record`: the attributes documented in the README.
pub fn item(record: &HistoryRecord) -> Result<HashMap<String, AttributeValue>, serde_dynamo::Error> {
    let mut item = HashMap::from([
        (PARTITION_KEY.to_owned(), AttributeValue::S(record.partition_key())),
        (SORT_KEY.to_owned(), AttributeValue::S(record.sort_key())),
        ("thingName".to_owned(), AttributeValue::S(record.shadow.thing.to_string())),
        ("shadowName".to_owned(), AttributeValue::S(record.shadow.shadow_name().to_owned())),
        ("version".to_owned(), AttributeValue::N(record.version.to_string())),
        ("timestamp".to_owned(), AttributeValue::N(record.timestamp.to_string())),
        ("kind".to_owned(), AttributeValue::S(record.kind.as_str().to_owned())),
    ]);
    let mut number = |name: &str, value: Option<u64>| {
        if let Some(value) = value {
            item.insert(name.to_owned(), AttributeValue::N(value.to_string()));
        }
    };
    number("receivedAt", record.received_at);
    number("expiresAt", record.expires_at);
    number("previousVersion", record.previous_version);
    if let Some(token) = &record.client_token {
        item.insert("clientToken".to_owned(), AttributeValue::S(token.clone()));
    }
    if let Some(state) = &record.state {
        item.insert("state".to_owned(), serde_dynamo::to_attribute_value(state)?);
    }
    if let Some(metadata) = &record.metadata {
        item.insert("metadata".to_owned(), serde_dynamo::to_attribute_value(metadata)?);
    }
    Ok(item)
}

impl HistoryStore for DynamoHistoryStore {
    async fn put_new(&self, record: &HistoryRecord) -> Result<PutOutcome, ServiceError> {
        let item = item(record)
            .map_err(|e| ServiceError::new("PutItem", FaultKind::Rejected, Some("UnrepresentableState".into()), e))?;
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", PARTITION_KEY)
            .send()
            .await;
        match put {
            Ok(_) => Ok(PutOutcome::Written),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => {
                Ok(PutOutcome::Duplicate)
            }
            Err(e) => Err(service_error("PutItem", e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use shadow_core::history::{RecordOptions, record_from_event};

    #[test]
    fn item_keeps_nulls_and_exact_numbers() {
        let record = record_from_event(
            &json!({"state": {"desired": {"gone": null, "f": 0.1, "big": 12345678901234567890u64, "neg": -3, "e": {}, "a": [1, "x"]}},
                    "version": 1, "timestamp": 5, "topic": "$aws/things/d/shadow/update/accepted"}),
            &RecordOptions { retention_days: Some(1), store_metadata: false },
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let item = item(&record).unwrap_or_else(|e| panic!("{e}"));
        let Some(AttributeValue::M(state)) = item.get("state") else { panic!("state is not a map: {item:?}") };
        let Some(AttributeValue::M(desired)) = state.get("desired") else { panic!("desired is not a map") };
        assert_eq!(desired.get("gone"), Some(&AttributeValue::Null(true)));
        assert_eq!(desired.get("f"), Some(&AttributeValue::N("0.1".into())));
        assert_eq!(desired.get("big"), Some(&AttributeValue::N("12345678901234567890".into())));
        assert_eq!(desired.get("neg"), Some(&AttributeValue::N("-3".into())));
        assert_eq!(desired.get("e"), Some(&AttributeValue::M(HashMap::new())));
        assert!(matches!(desired.get("a"), Some(AttributeValue::L(l)) if l.len() == 2));
        assert_eq!(item.get("expiresAt"), Some(&AttributeValue::N("86405".into())));
        assert_eq!(item.get("shadowName"), Some(&AttributeValue::S(String::new())));
        assert!(!item.contains_key("clientToken"));
    }
}
