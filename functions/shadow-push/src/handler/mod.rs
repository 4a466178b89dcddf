//! One invocation: a new push (direct or scheduled), a start that answers at once (`startPush`: the CLI's), a
//! wake-up of one (a hand-off message, Lambda's retry of the first invocation), or the sweeper's round.
//!
//! The handler decides nothing about what a push does next: it feeds the pure state machine
//! (`shadow_core::push::machine::step`) an event with the record as it stands, carries out the effects it returns
//! (claims, walks, conditional writes, hand-offs), and feeds their results back. Every arrival for an existing push
//! starts the same way, with `Event::Woken`; a claim is conditional, so a duplicate, late or lost message is
//! harmless, and any arrival resumes a push whose last holder died.

mod board;
mod control;
mod error;
mod execute;
mod invocation;
mod renewal;
mod retention;
mod segment;
mod start;
mod summary;
mod sweep;

use std::future::Future;
use std::time::Duration;

use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse};
use lambda_runtime::LambdaEvent;
use serde_json::Value;
use shadow_aws::Continuation;
use shadow_core::clock::Clock;
use shadow_core::push::quota::Senders;
use shadow_core::push::{HandOff, Journal, PushRecord, PushStore, Registry, Shadows, StoredPush};
use shadow_core::retry::{Backoff, Retryable, retry_until};
use shadow_core::service::ServiceError;
use shadow_runtime::event::Payload;
use tokio::time::Instant;

use crate::config::Config;
pub use error::PushError;
use invocation::{Invocation, scheduled_request};
use start::Begin;

const NO_DEADLINE: Duration = Duration::from_secs(900);

pub struct Services<S, R, P, H> {
    pub shadows: S,
    pub registry: R,
    pub store: P,
    pub hand_off: H,
    /// The wall clock records are written in: the system's, or a simulation's.
    pub clock: Clock,
}

impl<S: Shadows, R: Registry, P: PushStore + Journal + Senders, H: HandOff> Services<S, R, P, H> {
    fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    pub async fn handle(&self, config: &Config, event: LambdaEvent<Payload>) -> Result<Value, PushError> {
        let deadline = shadow_runtime::deadline::deadline(&event.context, NO_DEADLINE);
        let payload = event.payload.json().map_err(|e| PushError::InvalidEvent(e.to_string()))?;
        match Invocation::parse(payload)? {
            Invocation::Queue(batch) => {
                let mut response = SqsBatchResponse::default();
                for message in batch.records {
                    let id = message.message_id.clone().unwrap_or_default();
                    let result = match serde_json::from_str::<Continuation>(message.body.as_deref().unwrap_or_default())
                    {
                        Ok(c) => self.wake(config, &c.continue_push, deadline).await.map(|_| ()),
                        Err(e) => Err(PushError::InvalidEvent(format!("hand-off message: {e}"))),
                    };
                    if let Err(e) = result {
                        tracing::error!(message_id = %id, retryable = e.is_retryable(), error = %e, "hand-off failed");
                        // Reported either way: a message that keeps failing ends in PushDlq (redrive), where its
                        // alarm shows it, rather than vanishing.
                        let mut failure = BatchItemFailure::default();
                        failure.item_identifier = id;
                        response.batch_item_failures.push(failure);
                    }
                }
                to_json("the batch response", &response)
            }
            Invocation::Wake(c) => to_json("the push summary", &self.wake(config, &c.continue_push, deadline).await?),
            Invocation::Sweep => self.sweep(config, deadline).await,
            Invocation::Scheduled { run, request } => {
                let request = scheduled_request(request, &run)?;
                to_json("the push summary", &self.start(config, &request, Begin::Here, deadline).await?)
            }
            Invocation::Push(request) => {
                to_json("the push summary", &self.start(config, &request, Begin::Here, deadline).await?)
            }
            Invocation::StartPush(request) => {
                to_json("the push summary", &self.start(config, &request, Begin::Queued, deadline).await?)
            }
            Invocation::Control { push_id, action } => {
                to_json("the push summary", &self.control(config, &push_id, action, deadline).await?)
            }
        }
    }

    /// Any call that fails with a [`ServiceError`] (the store's reads and writes, loads included; a hand-off), retried
    /// while it is worth it and time is left before `deadline`; given up, a [`PushError::Store`].
    async fn with_retries<T, F: Future<Output = Result<T, ServiceError>>>(
        &self,
        deadline: Instant,
        op: impl FnMut() -> F,
    ) -> Result<T, PushError> {
        retry_until(deadline, Duration::ZERO, Backoff::default(), op, |_| {}).await.map_err(PushError::Store)
    }

    /// The push's definition and record.
    async fn load(&self, push_id: &str, deadline: Instant) -> Result<StoredPush, PushError> {
        self.with_retries(deadline, || self.store.load(push_id))
            .await?
            .ok_or_else(|| PushError::UnknownPush(push_id.to_owned()))
    }

    /// The push's record alone: an arrival that holds the definition already rereads only what changes.
    async fn load_record(&self, push_id: &str, deadline: Instant) -> Result<PushRecord, PushError> {
        self.with_retries(deadline, || self.store.load_record(push_id))
            .await?
            .ok_or_else(|| PushError::UnknownPush(push_id.to_owned()))
    }
}

fn to_json(what: &'static str, value: &impl serde::Serialize) -> Result<Value, PushError> {
    serde_json::to_value(value).map_err(|e| PushError::Serialize(what, e))
}
