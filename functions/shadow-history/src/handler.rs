//! One invocation: a shadow event straight from the IoT Rule, or an SQS batch of them.

use std::time::Duration;

use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use futures::StreamExt;
use lambda_runtime::{Diagnostic, LambdaEvent};
use serde_json::{Value, json};
use shadow_core::history::{EventError, HistoryRecord, HistoryStore, PutOutcome, record_from_event, store_record};
use shadow_core::retry::{GaveUp, Retryable};
use shadow_core::service::ServiceError;
use shadow_runtime::event::Payload;
use shadow_runtime::metrics::{Counters, Emitter, history};
use tokio::time::Instant;

use crate::config::Config;

/// Time kept back from the deadline to answer Lambda.
const RESERVE: Duration = Duration::from_millis(1500);
/// Used when a local runner gives no deadline.
const NO_DEADLINE: Duration = Duration::from_secs(60);
/// Writes in flight at once for an SQS batch.
const CONCURRENCY: usize = 10;

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("invalid shadow event: {0}")]
    InvalidEvent(#[from] EventError),
    #[error("invalid SQS event: {0}")]
    InvalidBatch(#[source] serde_json::Error),
    #[error("history write failed: {0}")]
    Store(#[source] GaveUp<ServiceError>),
    #[error("could not serialize the batch response: {0}")]
    Response(#[source] serde_json::Error),
}

impl Retryable for HistoryError {
    fn is_retryable(&self) -> bool {
        match self {
            Self::InvalidEvent(_) | Self::InvalidBatch(_) | Self::Response(_) => false,
            Self::Store(GaveUp::OutOfTime { .. }) => true,
            Self::Store(GaveUp::Final(e)) => e.is_retryable(),
        }
    }
}

impl From<HistoryError> for Diagnostic {
    fn from(error: HistoryError) -> Self {
        let kind = match &error {
            HistoryError::InvalidEvent(_) => "InvalidEvent",
            HistoryError::InvalidBatch(_) => "InvalidBatch",
            HistoryError::Store(GaveUp::OutOfTime { .. }) => "OutOfTime",
            HistoryError::Store(GaveUp::Final(_)) => "StoreRejected",
            HistoryError::Response(_) => "Response",
        };
        shadow_runtime::error::diagnostic(kind, &error)
    }
}

pub async fn handle(
    store: &impl HistoryStore,
    config: &Config,
    event: LambdaEvent<Payload>,
) -> Result<Value, HistoryError> {
    let deadline = shadow_runtime::deadline::deadline(&event.context, NO_DEADLINE);
    let mut counters =
        Counters::new(Emitter::History, &[history::WRITTEN, history::DUPLICATE, history::REJECTED, history::FAILED]);
    let result = match event.payload.json() {
        Ok(payload) if is_sqs_batch(&payload) => handle_batch(store, config, payload, deadline, &mut counters).await,
        Ok(payload) => handle_one(store, config, &payload, deadline, &mut counters).await,
        Err(e) => {
            counters.add(history::REJECTED, 1);
            let e = EventError { field: "payload".into(), reason: format!("is not readable JSON: {}", e.reason()) };
            tracing::warn!(outcome = "rejected", field = %e.field, reason = %e.reason, "shadow event rejected");
            Err(HistoryError::InvalidEvent(e))
        }
    };
    counters.emit();
    result
}

fn is_sqs_batch(payload: &Value) -> bool {
    payload.get("Records").is_some_and(Value::is_array)
}

async fn handle_one(
    store: &impl HistoryStore,
    config: &Config,
    payload: &Value,
    deadline: Instant,
    counters: &mut Counters,
) -> Result<Value, HistoryError> {
    let record = record_from_event(payload, &config.record).inspect_err(|e| {
        counters.add(history::REJECTED, 1);
        tracing::warn!(outcome = "rejected", field = %e.field, reason = %e.reason, "shadow event rejected");
    })?;
    match store_record(store, &record, deadline, RESERVE).await {
        Ok(outcome) => {
            log_stored(&record, outcome, counters);
            Ok(json!({
                "thingName": record.shadow.thing,
                "shadowName": record.shadow.shadow_name(),
                "version": record.version,
                "kind": record.kind.as_str(),
                "outcome": outcome.as_str(),
            }))
        }
        Err(e) => {
            log_failed(&record, &e, counters);
            Err(HistoryError::Store(e))
        }
    }
}

/// Every record of the batch is tried; only the ones that failed are reported, so SQS re-delivers just those.
async fn handle_batch(
    store: &impl HistoryStore,
    config: &Config,
    payload: Value,
    deadline: Instant,
    counters: &mut Counters,
) -> Result<Value, HistoryError> {
    let batch: SqsEvent = serde_json::from_value(payload).map_err(HistoryError::InvalidBatch)?;
    let mut failures = Vec::new();
    let mut records = Vec::new();
    for message in batch.records {
        let id = message.message_id.clone().unwrap_or_default();
        let parsed = message
            .body
            .as_deref()
            .ok_or_else(|| EventError { field: "body".into(), reason: "is missing".into() })
            .and_then(|body| {
                serde_json::from_str::<Value>(body)
                    .map_err(|e| EventError { field: "body".into(), reason: format!("is not JSON: {e}") })
            })
            .and_then(|event| record_from_event(&event, &config.record));
        match parsed {
            Ok(record) => records.push((id, record)),
            Err(e) => {
                counters.add(history::REJECTED, 1);
                tracing::warn!(outcome = "rejected", message_id = %id, field = %e.field, reason = %e.reason, "shadow event rejected");
                failures.push(id);
            }
        }
    }
    let results: Vec<_> = futures::stream::iter(records)
        .map(|(id, record)| async move {
            let result = store_record(store, &record, deadline, RESERVE).await;
            (id, record, result)
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    for (id, record, result) in results {
        match result {
            Ok(outcome) => log_stored(&record, outcome, counters),
            Err(e) => {
                log_failed(&record, &e, counters);
                failures.push(id);
            }
        }
    }
    let mut response = SqsBatchResponse::default();
    response.batch_item_failures = failures
        .into_iter()
        .map(|item_identifier| {
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = item_identifier;
            failure
        })
        .collect();
    serde_json::to_value(response).map_err(HistoryError::Response)
}

fn log_stored(record: &HistoryRecord, outcome: PutOutcome, counters: &mut Counters) {
    if outcome == PutOutcome::Written {
        counters.add(history::WRITTEN, 1);
        counters.least(history::NEWEST_EVENT_AGE, age_ms(record.timestamp, now_ms()));
    } else {
        counters.add(history::DUPLICATE, 1);
    }
    tracing::info!(
        thing = %record.shadow.thing,
        shadow = record.shadow.shadow_name(),
        version = record.version,
        kind = record.kind.as_str(),
        outcome = outcome.as_str(),
        "shadow event"
    );
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// How long after the shadow update (`timestamp`, epoch seconds) it was written at `now_ms`; 0 when the clocks
/// disagree the other way.
fn age_ms(timestamp_s: u64, now_ms: u64) -> u64 {
    now_ms.saturating_sub(timestamp_s.saturating_mul(1000))
}

fn log_failed(record: &HistoryRecord, error: &GaveUp<ServiceError>, counters: &mut Counters) {
    counters.add(history::FAILED, 1);
    tracing::error!(
        thing = %record.shadow.thing,
        shadow = record.shadow.shadow_name(),
        version = record.version,
        kind = record.kind.as_str(),
        outcome = "failed",
        retryable = error.is_retryable(),
        error = %error,
        "shadow event not written"
    );
}
