//! The DynamoDB tables shadow-fleet uses. `template.yaml` declares the same tables for AWS; a test in `tests/`
//! fails when the two drift apart, and the local stack creates its tables from these definitions.

use std::collections::HashMap;

use aws_sdk_dynamodb::{
    Client,
    types::{
        AttributeDefinition, AttributeValue, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
        ProjectionType, ScalarAttributeType, TimeToLiveSpecification,
    },
};
use shadow_core::service::{FaultKind, ServiceError};

use crate::sdk::service_error;

/// The partition key of every shadow-fleet table (a string): one partition per thing and shadow in the history
/// table, one per push in the push table.
pub const PARTITION_KEY: &str = "pk";
/// The sort key of every shadow-fleet table (a string): chronological and unique per distinct event in the history
/// table; the record, failures, conflicts and journal of a push in the push table.
pub const SORT_KEY: &str = "sk";
/// The TTL attribute of every shadow-fleet table, in epoch seconds.
pub const TTL_ATTRIBUTE: &str = "expiresAt";

/// The key of one item of a shadow-fleet table.
pub fn key(partition: &str, sort: &str) -> HashMap<String, AttributeValue> {
    HashMap::from([
        (PARTITION_KEY.to_owned(), AttributeValue::S(partition.to_owned())),
        (SORT_KEY.to_owned(), AttributeValue::S(sort.to_owned())),
    ])
}

/// DynamoDB's largest item: 400 KB, attribute names and values together.
pub const MAX_ITEM_BYTES: usize = 400 * 1024;

/// An item's size as DynamoDB counts it for its 400 KB limit and its write and read units: each attribute's name
/// and value; a string or binary its bytes, a number about one byte per two significant digits plus one, a boolean
/// or null one byte, a list or map 3 bytes plus one per element (a map's element with its name).
pub fn item_size(item: &HashMap<String, AttributeValue>) -> usize {
    item.iter().map(|(name, value)| name.len() + value_size(value)).sum()
}

fn value_size(value: &AttributeValue) -> usize {
    match value {
        AttributeValue::S(s) => s.len(),
        AttributeValue::N(n) => number_size(n),
        AttributeValue::B(b) => b.as_ref().len(),
        AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
        AttributeValue::L(items) => 3 + items.iter().map(|v| value_size(v) + 1).sum::<usize>(),
        AttributeValue::M(map) => 3 + map.iter().map(|(k, v)| k.len() + value_size(v) + 1).sum::<usize>(),
        AttributeValue::Ss(items) => items.iter().map(String::len).sum(),
        AttributeValue::Ns(items) => items.iter().map(|n| number_size(n)).sum(),
        AttributeValue::Bs(items) => items.iter().map(|b| b.as_ref().len()).sum(),
        _ => 0,
    }
}

fn number_size(number: &str) -> usize {
    let mantissa = number.split(['e', 'E']).next().unwrap_or_default();
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let significant = digits.trim_start_matches('0').trim_end_matches('0').len().max(1);
    significant.div_ceil(2) + 1 + usize::from(number.starts_with('-'))
}

/// A sparse global secondary index: only items that have its partition key are in it. Keys only are projected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexSpec {
    pub name: &'static str,
    /// A string attribute.
    pub partition_key: &'static str,
    /// A number attribute.
    pub sort_key: &'static str,
}

/// The push table's index of pushes that are not complete, by `leaseUntil`: the sweeper finds the stale ones.
pub const OPEN_PUSHES_INDEX: &str = "open-pushes";
pub const OPEN_PUSHES_KEY: &str = "openPush";

/// The push table's index of every push record by `startedAt`, for listing recent pushes newest first (the CLI's
/// `push list`). One constant partition: a push table gets a few records a day, far below a partition's 1000
/// writes/s, and one Query with `ScanIndexForward=false` then reads any time range in order. Keys only: the record's
/// counts change with every segment and its lease with every renewal; projecting them would write the index each
/// time. The lister reads the records it shows with BatchGetItem.
pub const RECENT_PUSHES_INDEX: &str = "recent-pushes";
pub const RECENT_PUSHES_KEY: &str = "pushList";
/// The one value of [`RECENT_PUSHES_KEY`], on every push record.
pub const RECENT_PUSHES_PARTITION: &str = "all";

/// One table: its key schema (both keys strings), its TTL attribute and its indexes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableSpec {
    /// The environment variable that names the table for the functions.
    pub env_var: &'static str,
    /// The table's logical id in `template.yaml`.
    pub logical_id: &'static str,
    pub partition_key: &'static str,
    pub sort_key: &'static str,
    pub ttl_attribute: &'static str,
    pub indexes: &'static [IndexSpec],
}

/// shadow-history's table: one partition per thing and shadow, one item per distinct event, and the shadow's head.
/// Its index finds an event by version (`shadow get --version`): the head keeps its version as `latestVersion`,
/// so only events are in it.
pub const HISTORY: TableSpec = TableSpec {
    env_var: "HISTORY_TABLE",
    logical_id: "HistoryTable",
    partition_key: PARTITION_KEY,
    sort_key: SORT_KEY,
    ttl_attribute: TTL_ATTRIBUTE,
    indexes: &[IndexSpec { name: crate::history::VERSION_INDEX, partition_key: PARTITION_KEY, sort_key: "version" }],
};

/// shadow-push's table: one partition per push (its record, its failures, its hand-off chunks).
pub const PUSH: TableSpec = TableSpec {
    env_var: "PUSH_TABLE",
    logical_id: "PushTable",
    partition_key: PARTITION_KEY,
    sort_key: SORT_KEY,
    ttl_attribute: TTL_ATTRIBUTE,
    indexes: &[
        IndexSpec { name: OPEN_PUSHES_INDEX, partition_key: OPEN_PUSHES_KEY, sort_key: "leaseUntil" },
        IndexSpec { name: RECENT_PUSHES_INDEX, partition_key: RECENT_PUSHES_KEY, sort_key: "startedAt" },
    ],
};

pub const ALL: [TableSpec; 2] = [HISTORY, PUSH];

/// A request the SDK's builder refused (a missing required field): repeating it cannot help.
fn invalid(operation: &'static str, e: aws_sdk_dynamodb::error::BuildError) -> ServiceError {
    ServiceError::new(operation, FaultKind::Rejected, None, e)
}

/// Creates `name` with `spec`'s schema (on-demand) and TTL; a table that already exists is left as it is.
pub async fn ensure_table(client: &Client, name: &str, spec: &TableSpec) -> Result<(), ServiceError> {
    let key = |attr: &str, key_type| {
        KeySchemaElement::builder()
            .attribute_name(attr)
            .key_type(key_type)
            .build()
            .map_err(|e| invalid("CreateTable", e))
    };
    let attr = |attr: &str, kind: ScalarAttributeType| {
        AttributeDefinition::builder()
            .attribute_name(attr)
            .attribute_type(kind)
            .build()
            .map_err(|e| invalid("CreateTable", e))
    };
    let mut create = client
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(key(spec.partition_key, KeyType::Hash)?)
        .key_schema(key(spec.sort_key, KeyType::Range)?)
        .attribute_definitions(attr(spec.partition_key, ScalarAttributeType::S)?)
        .attribute_definitions(attr(spec.sort_key, ScalarAttributeType::S)?);
    for index in spec.indexes {
        let gsi = GlobalSecondaryIndex::builder()
            .index_name(index.name)
            .key_schema(key(index.partition_key, KeyType::Hash)?)
            .key_schema(key(index.sort_key, KeyType::Range)?)
            .projection(Projection::builder().projection_type(ProjectionType::KeysOnly).build())
            .build()
            .map_err(|e| invalid("CreateTable", e))?;
        create = create.global_secondary_indexes(gsi);
        // An index may share the table's partition key, which is defined once.
        if index.partition_key != spec.partition_key {
            create = create.attribute_definitions(attr(index.partition_key, ScalarAttributeType::S)?);
        }
        create = create.attribute_definitions(attr(index.sort_key, ScalarAttributeType::N)?);
    }
    let created = create.send().await;
    match created {
        Ok(_) => {}
        Err(e) if e.as_service_error().is_some_and(|e| e.is_resource_in_use_exception()) => {
            return Ok(());
        }
        Err(e) => return Err(service_error("CreateTable", e)),
    }
    let ttl = TimeToLiveSpecification::builder()
        .attribute_name(spec.ttl_attribute)
        .enabled(true)
        .build()
        .map_err(|e| invalid("UpdateTimeToLive", e))?;
    client
        .update_time_to_live()
        .table_name(name)
        .time_to_live_specification(ttl)
        .send()
        .await
        .map_err(|e| service_error("UpdateTimeToLive", e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn item_sizes_count_names_and_values_as_dynamodb_does() {
        let item = HashMap::from([
            ("pk".to_owned(), AttributeValue::S("push-1".into())),
            ("n".to_owned(), AttributeValue::N("12345".into())),
            ("ok".to_owned(), AttributeValue::Bool(true)),
            ("l".to_owned(), AttributeValue::L(vec![AttributeValue::S("ab".into()), AttributeValue::N("0".into())])),
            ("m".to_owned(), AttributeValue::M(HashMap::from([("k".to_owned(), AttributeValue::S("v".into()))]))),
        ]);
        // pk 2+6, n 1+(3+1), ok 2+1, l 1+3+(2+1)+(2+1), m 1+3+(1+1+1)
        assert_eq!(item_size(&item), 8 + 5 + 3 + 10 + 7);
        assert_eq!((number_size("1000"), number_size("-0.0012"), number_size("1.5e10")), (2, 3, 2));
    }
}
