//! Counting what DynamoDB refuses for throughput, on every request of a client: answers
//! `ProvisionedThroughputExceededException`, `ThrottlingException` or `RequestLimitExceeded`, and the items a
//! BatchWriteItem leaves unprocessed. Retries (ours: the SDK's are off) hide them otherwise; a push counts them in
//! its record and its metrics.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use aws_sdk_dynamodb::config::{
    ConfigBag, Intercept, RuntimeComponents, interceptors::AfterDeserializationInterceptorContextRef,
};
use aws_smithy_runtime_api::box_error::BoxError;
use serde::Deserialize;

/// The error codes DynamoDB answers a request with when a partition, a table or the account is over its throughput.
const THROTTLING: &[&str] = &["ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded"];

/// A count of throttled DynamoDB requests, shared by the client it is installed on and whoever reads it.
#[derive(Debug, Clone, Default)]
pub struct ThrottleCount(Arc<AtomicU64>);

impl ThrottleCount {
    /// Requests (and batch items) refused for throughput so far.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    /// The client as it was configured, with this count installed.
    pub fn install(&self, client: &aws_sdk_dynamodb::Client) -> aws_sdk_dynamodb::Client {
        aws_sdk_dynamodb::Client::from_conf(client.config().to_builder().interceptor(self.clone()).build())
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(rename = "__type")]
    kind: Option<String>,
}

#[derive(Deserialize)]
struct BatchBody {
    #[serde(rename = "UnprocessedItems", default)]
    unprocessed: std::collections::HashMap<String, Vec<serde_json::Value>>,
}

/// What one DynamoDB answer (its status and its body) counts as throttled: 1 for a throttling error, the number of
/// unprocessed items for a BatchWriteItem that left some, else 0.
pub fn throttled_in(status: u16, body: &[u8]) -> u64 {
    if status >= 400 {
        // `__type` is `<namespace>#<code>`, or the code alone.
        let code = serde_json::from_slice::<ErrorBody>(body).ok().and_then(|b| b.kind).unwrap_or_default();
        let code = code.rsplit('#').next().unwrap_or_default();
        return u64::from(THROTTLING.contains(&code));
    }
    // Only BatchWriteItem answers carry this key; other answers are not parsed.
    if !body.windows(16).any(|w| w == b"UnprocessedItems") {
        return 0;
    }
    serde_json::from_slice::<BatchBody>(body).map_or(0, |b| b.unprocessed.values().map(|v| v.len() as u64).sum())
}

impl Intercept for ThrottleCount {
    fn name(&self) -> &'static str {
        "ThrottleCount"
    }

    fn read_after_deserialization(
        &self,
        context: &AfterDeserializationInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let response = context.response();
        if let Some(body) = response.body().bytes() {
            let throttled = throttled_in(response.status().as_u16(), body);
            if throttled > 0 {
                self.0.fetch_add(throttled, Ordering::Relaxed);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_answers_and_unprocessed_items_count() {
        let partition = br#"{"__type":"com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException","message":"The level of configured provisioned throughput for the table was exceeded."}"#;
        assert_eq!(throttled_in(400, partition), 1);
        let throttling = br#"{"__type":"com.amazonaws.dynamodb.v20120810#ThrottlingException","message":"Rate of requests exceeds the allowed throughput."}"#;
        assert_eq!(throttled_in(400, throttling), 1);
        assert_eq!(throttled_in(400, br#"{"__type":"RequestLimitExceeded"}"#), 1);
        let condition = br#"{"__type":"com.amazonaws.dynamodb.v20120810#ConditionalCheckFailedException","message":"The conditional request failed"}"#;
        assert_eq!(throttled_in(400, condition), 0);
        assert_eq!(throttled_in(500, br#"{"__type":"com.amazonaws.dynamodb.v20120810#InternalServerError"}"#), 0);
        assert_eq!(throttled_in(400, b"not json"), 0);
        let batch = br#"{"UnprocessedItems":{"t":[{"PutRequest":{"Item":{}}},{"PutRequest":{"Item":{}}}]}}"#;
        assert_eq!(throttled_in(200, batch), 2);
        assert_eq!(throttled_in(200, br#"{"UnprocessedItems":{}}"#), 0);
        assert_eq!(throttled_in(200, br#"{"Items":[{"thingName":{"S":"UnprocessedItems"}}]}"#), 0);
    }
}
