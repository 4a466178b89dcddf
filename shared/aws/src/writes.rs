//! The DynamoDB writes every store, the bench and the test support make the same way: a put that keeps the item
//! already there, and batches sent again until DynamoDB has processed all of them.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::{
    Client,
    types::{AttributeValue, PutRequest, WriteRequest},
};
use shadow_core::push::journal::units_of;
use shadow_core::service::{FaultKind, ServiceError};

use crate::sdk::{ConditionalWrite, service_error};
use crate::tables::{PARTITION_KEY, item_size};

/// BatchWriteItem's limit of requests in one call.
pub const BATCH_LIMIT: usize = 25;
/// Times unprocessed requests are sent again before giving up.
const BATCH_RETRIES: u32 = 10;

/// Puts `item` into `table` unless an item with its key is there already: whether it was written. A redelivery or
/// a retry then never changes what the first write stored.
pub async fn put_if_absent(
    client: &Client,
    table: &str,
    item: HashMap<String, AttributeValue>,
) -> Result<bool, ServiceError> {
    client
        .put_item()
        .table_name(table)
        .set_item(Some(item))
        .condition_expression("attribute_not_exists(#pk)")
        .expression_attribute_names("#pk", PARTITION_KEY)
        .send()
        .await
        .condition_held("PutItem")
}

/// A put of `item`, for [`batch_write`].
pub fn put_request(item: HashMap<String, AttributeValue>) -> Result<WriteRequest, ServiceError> {
    let put = PutRequest::builder()
        .set_item(Some(item))
        .build()
        .map_err(|e| ServiceError::new("BatchWriteItem", FaultKind::Rejected, None, e))?;
    Ok(WriteRequest::builder().put_request(put).build())
}

/// Makes `requests` on `table` with BatchWriteItem, [`BATCH_LIMIT`] a call, one call after the other. DynamoDB
/// leaves requests unprocessed under load: they are sent again, with backoff, until none is left; when some are
/// still left after `BATCH_RETRIES` such calls, the write fails as throttled.
pub async fn batch_write(client: &Client, table: &str, requests: Vec<WriteRequest>) -> Result<(), ServiceError> {
    let mut requests = requests.into_iter().peekable();
    while requests.peek().is_some() {
        let batch: Vec<WriteRequest> = requests.by_ref().take(BATCH_LIMIT).collect();
        let mut pending = HashMap::from([(table.to_owned(), batch)]);
        for attempt in 0u32.. {
            let written = client
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
            if attempt >= BATCH_RETRIES {
                return Err(ServiceError::new(
                    "BatchWriteItem",
                    FaultKind::Throttled,
                    Some("UnprocessedItems".into()),
                    format!("items still unprocessed after {BATCH_RETRIES} retries"),
                ));
            }
            tokio::time::sleep(Duration::from_millis(50 << attempt.min(6))).await;
        }
    }
    Ok(())
}

/// The write units a put of `item` takes: its size rounded up to 1 KB, at least 1.
pub fn write_units(item: &HashMap<String, AttributeValue>) -> u32 {
    units_of(item_size(item))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_item_is_sized_as_dynamodb_sizes_it() {
        let s = |v: &str| AttributeValue::S(v.to_owned());
        let inner = HashMap::from([
            ("k".to_owned(), s("abc")),
            ("l".to_owned(), AttributeValue::L(vec![AttributeValue::Null(true), s("é")])),
        ]);
        let item = HashMap::from([
            ("pk".to_owned(), s("push-1#3")),
            ("n".to_owned(), AttributeValue::N("-12345".into())),
            ("ok".to_owned(), AttributeValue::Bool(true)),
            ("m".to_owned(), AttributeValue::M(inner)),
        ]);
        // pk 2+8, n 1 + (5 significant digits: 3, +1, +1 for the sign), ok 2+1,
        // m 1 + 3 + k (1+1+3) + l (1+1 + 3 + (1+1) + (1+2)).
        assert_eq!(item_size(&item), 10 + 6 + 3 + (1 + 3 + 5 + 10));
        assert_eq!(write_units(&HashMap::new()), 1);
        assert_eq!(write_units(&HashMap::from([("pk".to_owned(), s(&"x".repeat(1022)))])), 1);
        assert_eq!(write_units(&HashMap::from([("pk".to_owned(), s(&"x".repeat(1023)))])), 2);
    }
}
