//! Lambda, the service, around a local function: what AWS does with its invocations that the Runtime API alone
//! does not show. Asynchronous invocation with Lambda's two retries after a failure (a function error, a crash, a
//! timeout), then the on-failure destination (an SQS queue) if the function has one; no retry of a synchronous
//! invocation's error (its caller has it); the SQS event source mapping (receive with a visibility timeout, invoke with the batch, delete what
//! succeeded, so a message whose invocation died comes back); and a schedule. Delays are scaled down for tests.

use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::lambda::{Function, InvokeError};

/// Lambda's timings, scaled.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// The function's timeout.
    pub timeout: Duration,
    /// The async retries' delays (Lambda: about 1 and 2 minutes).
    pub retries: [Duration; 2],
    /// The queue's visibility timeout (the template: 6 x the function's timeout).
    pub visibility: Duration,
    /// How often the schedule fires (the template's sweeper: every minute).
    pub schedule_every: Duration,
    /// How long the queue's poller waits after an empty receive (short polls, see `drain_queue`).
    pub poll_every: Duration,
}

impl Timing {
    /// Lambda's timings scaled down about 30 times, the tests' clock: 3-second invocations, async retries after 2
    /// and 4 s (Lambda: about 1 and 2 minutes), a visibility timeout of 3 x the function's timeout, the schedule
    /// every second (the template's sweeper: every minute), an empty queue polled again after 100 ms.
    pub const SCALED: Timing = Timing {
        timeout: Duration::from_secs(3),
        retries: [Duration::from_secs(2), Duration::from_secs(4)],
        visibility: Duration::from_secs(9),
        schedule_every: Duration::from_secs(1),
        poll_every: Duration::from_millis(100),
    };
}

/// One invocation as the service saw it.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub source: &'static str,
    pub answer: Result<Value, InvokeError>,
}

/// How many invocations [`LambdaService::invocations`] keeps (a long-running service forgets older ones).
const KEPT_INVOCATIONS: usize = 10_000;

pub struct LambdaService<F> {
    pub function: F,
    pub sqs: aws_sdk_sqs::Client,
    pub queue_url: String,
    pub timing: Timing,
    /// The on-failure destination of asynchronous invocations (the template's `EventInvokeConfig`), a queue URL.
    pub on_failure: Option<String>,
    invocations: Mutex<Vec<Invocation>>,
}

/// An SQS message as the event source mapping passes it to the function.
pub fn sqs_record(message: &aws_sdk_sqs::types::Message) -> Value {
    json!({
        "messageId": message.message_id, "receiptHandle": message.receipt_handle, "body": message.body,
        "attributes": {}, "messageAttributes": {}, "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:ap-northeast-1:123456789012:push", "awsRegion": "ap-northeast-1"
    })
}

impl<F: Function> LambdaService<F> {
    pub fn new(function: F, sqs: aws_sdk_sqs::Client, queue_url: &str, timing: Timing) -> Self {
        Self {
            function,
            sqs,
            queue_url: queue_url.to_owned(),
            timing,
            on_failure: None,
            invocations: Mutex::new(Vec::new()),
        }
    }

    /// Sends asynchronous invocations that failed every attempt to the queue `queue_url`, as Lambda's on-failure
    /// destination does.
    pub fn with_on_failure(mut self, queue_url: Option<String>) -> Self {
        self.on_failure = queue_url;
        self
    }

    pub fn invocations(&self) -> Vec<Invocation> {
        self.invocations.lock().map(|i| i.clone()).unwrap_or_default()
    }

    async fn invoke(&self, source: &'static str, event: &Value) -> Result<Value, InvokeError> {
        let answer = self.function.invoke(event, self.timing.timeout).await;
        if let Ok(mut log) = self.invocations.lock() {
            if log.len() >= KEPT_INVOCATIONS {
                log.drain(..KEPT_INVOCATIONS / 2);
            }
            log.push(Invocation { source, answer: answer.clone() });
        }
        if let Err(e) = &answer {
            tracing::warn!(source, error = %e, "invocation failed");
        }
        answer
    }

    /// `InvocationType: RequestResponse`: one invocation, and its answer.
    pub async fn invoke_sync(&self, event: &Value) -> Result<Value, InvokeError> {
        self.invoke("sync", event).await
    }

    /// `InvocationType: Event`: the event, then up to two retries when the invocation fails, then the on-failure
    /// destination.
    pub async fn invoke_async(&self, event: &Value) {
        let mut answer = self.invoke("async", event).await;
        for delay in self.timing.retries {
            if answer.is_ok() {
                return;
            }
            tokio::time::sleep(delay).await;
            answer = self.invoke("async retry", event).await;
        }
        let (Err(error), Some(destination)) = (answer, &self.on_failure) else { return };
        // The invocation record Lambda sends to an SQS destination (the parts a reader of PushDlq uses).
        let response = match &error {
            InvokeError::Function { error_type, message } => json!({"errorType": error_type, "errorMessage": message}),
            other => json!({"errorType": "Runtime.Error", "errorMessage": other.to_string()}),
        };
        let record = json!({
            "version": "1.0",
            "requestContext": {"condition": "RetriesExhausted", "approximateInvokeCount": 1 + self.timing.retries.len()},
            "requestPayload": event,
            "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
            "responsePayload": response,
        });
        let sent = self.sqs.send_message().queue_url(destination).message_body(record.to_string()).send().await;
        if let Err(e) = sent {
            tracing::warn!(destination, error = ?e, "on-failure destination not reached");
        }
    }

    /// The event source mapping (batch size 1, ReportBatchItemFailures), until `until` (or for ever).
    pub async fn drain_queue(&self, until: Option<Instant>) {
        while until.is_none_or(|until| Instant::now() < until) {
            let received = self
                .sqs
                .receive_message()
                .queue_url(&self.queue_url)
                .max_number_of_messages(1)
                .visibility_timeout(i32::try_from(self.timing.visibility.as_secs()).unwrap_or(1).max(1))
                .send()
                .await;
            // Short polls: moto serves a long poll by holding the queue, which would stall the function's own
            // SendMessage to it (AWS's long polls do not).
            let Ok(received) = received else {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            };
            if received.messages.as_ref().is_none_or(|m| m.is_empty()) {
                tokio::time::sleep(self.timing.poll_every).await;
            }
            for message in received.messages.unwrap_or_default() {
                let answer = self.invoke("queue", &json!({"Records": [sqs_record(&message)]})).await;
                let failed = match &answer {
                    Ok(response) => response["batchItemFailures"].as_array().is_some_and(|f| !f.is_empty()),
                    Err(_) => true,
                };
                // Deleted only on success; otherwise it becomes visible again after the visibility timeout.
                if !failed && let Some(handle) = &message.receipt_handle {
                    let _ = self.sqs.delete_message().queue_url(&self.queue_url).receipt_handle(handle).send().await;
                }
            }
        }
    }

    /// The schedule: `event` every `schedule_every`, until `until` (or for ever).
    pub async fn schedule(&self, event: &Value, until: Option<Instant>) {
        while until.is_none_or(|until| Instant::now() < until) {
            tokio::time::sleep(self.timing.schedule_every).await;
            let _ = self.invoke("schedule", event).await;
        }
    }

    /// Invokes `event` asynchronously and runs the queue and the `scheduled` event beside it, until `done` says so
    /// or `limit` passes; `true` when done.
    pub async fn run_until<D, Fut>(&self, event: &Value, scheduled: &Value, limit: Duration, done: D) -> bool
    where
        D: Fn() -> Fut,
        Fut: Future<Output = bool>,
    {
        let until = Instant::now() + limit;
        let watch = async {
            loop {
                if done().await {
                    return true;
                }
                if Instant::now() >= until {
                    return false;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        };
        let service = async {
            tokio::join!(
                self.invoke_async(event),
                self.drain_queue(Some(until)),
                self.schedule(scheduled, Some(until))
            );
        };
        tokio::select! {
            finished = watch => finished,
            () = service => done().await,
        }
    }
}
