//! Handing the rest of a push to the next invocation: a message on the push queue, consumed by shadow-push itself.

use aws_sdk_sqs::Client;
use serde::{Deserialize, Serialize};
use shadow_core::push::HandOff;
use shadow_core::service::ServiceError;

use crate::sdk::service_error;

/// The body of a hand-off message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Continuation {
    pub continue_push: String,
    pub segment: u64,
}

#[derive(Debug, Clone)]
pub struct SqsHandOff {
    client: Client,
    queue_url: String,
}

impl SqsHandOff {
    pub fn new(client: Client, queue_url: impl Into<String>) -> Self {
        Self { client, queue_url: queue_url.into() }
    }
}

impl HandOff for SqsHandOff {
    async fn hand_off(&self, push_id: &str, segment: u64, delay_s: u32) -> Result<(), ServiceError> {
        let body = serde_json::json!({"continuePush": push_id, "segment": segment}).to_string();
        self.client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(body)
            // A bake's wait: SQS holds the message, nothing runs (at most 900 s; longer bakes chain).
            .delay_seconds(delay_s.min(900) as i32)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| service_error("SendMessage", e))
    }
}
