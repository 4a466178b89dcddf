//! One invocation: a new push (direct or scheduled), or the continuation of one (from the push queue).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use lambda_runtime::{Diagnostic, LambdaEvent};
use serde_json::Value;
use shadow_aws::Continuation;
use shadow_core::push::{
    Cursor, HandOff, Pace, PushPlan, PushRecord, PushRequestError, PushStore, PushSummary, Registry, SegmentOutcome,
    Shadows, run_segment, sources_for, validate_request,
};
use shadow_core::retry::{Backoff, GaveUp, Retryable, retry_until};
use shadow_core::store::ServiceError;
use shadow_runtime::metrics::Counters;
use tokio::time::Instant;

use crate::config::Config;

/// Failures listed in a response; the record keeps them all.
const RESPONSE_FAILURES: usize = 100;
const NO_DEADLINE: Duration = Duration::from_secs(900);
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

pub struct Services<S, R, P, H> {
    pub shadows: S,
    pub registry: R,
    pub store: P,
    pub hand_off: H,
}

#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("{0}")]
    InvalidRequest(#[from] PushRequestError),
    #[error("invalid continuation: {0}")]
    InvalidContinuation(String),
    #[error("push {0} has no record")]
    UnknownPush(String),
    #[error("push record: {0}")]
    Store(#[source] GaveUp<ServiceError>),
    #[error("resolving targets: {0}")]
    Targets(#[source] GaveUp<ServiceError>),
    #[error("could not serialize {0}: {1}")]
    Serialize(&'static str, #[source] serde_json::Error),
}

impl Retryable for PushError {
    fn is_retryable(&self) -> bool {
        match self {
            Self::InvalidRequest(_) | Self::InvalidContinuation(_) | Self::UnknownPush(_) | Self::Serialize(..) => {
                false
            }
            Self::Store(e) | Self::Targets(e) => match e {
                GaveUp::OutOfTime { .. } => true,
                GaveUp::Final(e) => e.is_retryable(),
            },
        }
    }
}

impl From<PushError> for Diagnostic {
    fn from(error: PushError) -> Self {
        let kind = match &error {
            PushError::InvalidRequest(_) => "InvalidRequest",
            PushError::InvalidContinuation(_) => "InvalidContinuation",
            PushError::UnknownPush(_) => "UnknownPush",
            PushError::Store(_) => "Store",
            PushError::Targets(_) => "Targets",
            PushError::Serialize(..) => "Serialize",
        };
        shadow_runtime::error::diagnostic(kind, &error)
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The invocation's deadline as epoch milliseconds (the lease a segment holds).
fn deadline_ms(deadline: Instant) -> u64 {
    now_ms() + deadline.saturating_duration_since(Instant::now()).as_millis() as u64
}

pub async fn handle<S, R, P, H>(
    services: &Services<S, R, P, H>,
    config: &Config,
    event: LambdaEvent<Value>,
) -> Result<Value, PushError>
where
    S: Shadows,
    R: Registry,
    P: PushStore,
    H: HandOff,
{
    let deadline = shadow_runtime::deadline::deadline(&event.context, NO_DEADLINE);
    let payload = event.payload;
    if payload.get("Records").is_some_and(Value::is_array) {
        let batch: SqsEvent =
            serde_json::from_value(payload).map_err(|e| PushError::InvalidContinuation(e.to_string()))?;
        let mut response = SqsBatchResponse::default();
        for message in batch.records {
            let id = message.message_id.clone().unwrap_or_default();
            let result = match serde_json::from_str::<Continuation>(message.body.as_deref().unwrap_or_default()) {
                Ok(c) => continue_push(services, config, &c, deadline).await.map(|_| ()),
                Err(e) => Err(PushError::InvalidContinuation(e.to_string())),
            };
            if let Err(e) = result {
                tracing::error!(message_id = %id, retryable = e.is_retryable(), error = %e, "continuation failed");
                let mut failure = BatchItemFailure::default();
                failure.item_identifier = id;
                response.batch_item_failures.push(failure);
            }
        }
        return to_json("the batch response", &response);
    }
    if payload.get("continuePush").is_some() {
        let continuation: Continuation =
            serde_json::from_value(payload).map_err(|e| PushError::InvalidContinuation(e.to_string()))?;
        let summary = continue_push(services, config, &continuation, deadline).await?;
        return to_json("the push summary", &summary);
    }
    let summary = start_push(services, config, &payload, deadline).await?;
    to_json("the push summary", &summary)
}

fn to_json(what: &'static str, value: &impl serde::Serialize) -> Result<Value, PushError> {
    serde_json::to_value(value).map_err(|e| PushError::Serialize(what, e))
}

/// The record of `push_id`, which must exist.
async fn load_record<P: PushStore>(store: &P, push_id: &str, deadline: Instant) -> Result<PushRecord, PushError> {
    persist(deadline, || store.load(push_id)).await?.ok_or_else(|| PushError::UnknownPush(push_id.to_owned()))
}

async fn persist<T, F: Future<Output = Result<T, ServiceError>>>(
    deadline: Instant,
    op: impl FnMut() -> F,
) -> Result<T, PushError> {
    retry_until(deadline, Duration::ZERO, Backoff::default(), op, |_| {}).await.map_err(PushError::Store)
}

async fn start_push<S: Shadows, R: Registry, P: PushStore, H: HandOff>(
    services: &Services<S, R, P, H>,
    config: &Config,
    request: &Value,
    deadline: Instant,
) -> Result<PushSummary, PushError> {
    let plan = validate_request(request, config.max_tps, || format!("push-{}", uuid_like())).inspect_err(|e| {
        tracing::warn!(outcome = "rejected", error = %e, "push request refused");
    })?;
    let sources =
        retry_until(deadline, Duration::ZERO, Backoff::default(), || sources_for(&plan, &services.registry), |_| {})
            .await
            .map_err(PushError::Targets)?;
    let started_at = now_ms();
    let record = PushRecord {
        push_id: plan.push_id.clone(),
        shadow_name: plan.shadow_name.as_ref().map(|s| s.to_string()),
        dry_run: plan.dry_run,
        request: to_json("the push plan", &plan)?,
        sources,
        segment: 1,
        handed_off: 0,
        cursor: Some(Cursor::default()),
        targets: 0,
        updated: 0,
        unchanged: 0,
        failed: 0,
        requests: 0,
        throttled: 0,
        complete: false,
        started_at,
        finished_at: None,
    };
    let lease = deadline_ms(deadline);
    // The record holds segment 1's lease for this invocation, so a retried invocation can tell it is still running.
    let created = persist(deadline, || services.store.create(&record, lease)).await?;
    if created {
        tracing::info!(push = %plan.push_id, sources = record.sources.len(), dry_run = plan.dry_run, "push started");
        return run(services, config, &plan, record, 1, deadline).await;
    }
    // The push id was used before: this is a retry of the same request. Resume if its segment was abandoned,
    // else report where it stands; never push twice.
    let existing = load_record(&services.store, &plan.push_id, deadline).await?;
    resume_or_report(services, config, existing, plan, deadline).await
}

async fn resume_or_report<S: Shadows, R: Registry, P: PushStore, H: HandOff>(
    services: &Services<S, R, P, H>,
    config: &Config,
    record: PushRecord,
    plan: PushPlan,
    deadline: Instant,
) -> Result<PushSummary, PushError> {
    let segment = record.segment;
    if !record.complete
        && record.handed_off + 1 == segment
        && persist(deadline, || services.store.claim(&record.push_id, segment, deadline_ms(deadline), now_ms())).await?
    {
        tracing::info!(push = %record.push_id, segment, "resuming an abandoned segment");
        return run(services, config, &plan, record, segment, deadline).await;
    }
    tracing::info!(push = %record.push_id, complete = record.complete, "push already known; not pushed again");
    summary(services, &record, deadline).await
}

async fn continue_push<S: Shadows, R: Registry, P: PushStore, H: HandOff>(
    services: &Services<S, R, P, H>,
    config: &Config,
    continuation: &Continuation,
    deadline: Instant,
) -> Result<PushSummary, PushError> {
    let push_id = continuation.continue_push.as_str();
    let record = load_record(&services.store, push_id, deadline).await?;
    let plan: PushPlan = serde_json::from_value(record.request.clone())
        .map_err(|e| PushError::InvalidContinuation(format!("push {push_id} has an unreadable plan: {e}")))?;
    let segment = continuation.segment;
    let claimed = persist(deadline, || services.store.claim(push_id, segment, deadline_ms(deadline), now_ms())).await?;
    if !claimed {
        tracing::info!(push = push_id, segment, outcome = "duplicate", "segment already claimed; message ignored");
        return summary(services, &record, deadline).await;
    }
    tracing::info!(push = push_id, segment, "push continued");
    run(services, config, &plan, record, segment, deadline).await
}

/// Runs one segment from the record's cursor, records it, and hands the rest on when time ran out.
async fn run<S: Shadows, R: Registry, P: PushStore, H: HandOff>(
    services: &Services<S, R, P, H>,
    config: &Config,
    plan: &PushPlan,
    record: PushRecord,
    segment: u64,
    deadline: Instant,
) -> Result<PushSummary, PushError> {
    let remaining = deadline.saturating_duration_since(Instant::now());
    let hand_off_margin = (remaining / 5).clamp(Duration::from_millis(500), Duration::from_secs(20));
    let reserve = (remaining / 10).clamp(Duration::from_millis(300), Duration::from_secs(5));
    let pace = Pace::new(plan.max_requests_per_second, config.concurrency, deadline, hand_off_margin, reserve);
    let started = std::time::Instant::now();
    let mut last_log = started;
    let outcome = run_segment(
        plan,
        &record.sources,
        record.cursor.clone().unwrap_or_default(),
        &services.shadows,
        &services.registry,
        &pace,
        |progress: &SegmentOutcome| {
            if last_log.elapsed() >= PROGRESS_EVERY {
                last_log = std::time::Instant::now();
                let done = progress.updated + progress.unchanged + progress.failed;
                tracing::info!(
                    push = %plan.push_id,
                    segment,
                    done = record.targets + done,
                    total = record.targets + progress.targets,
                    rate = format!("{:.1}", done as f64 / started.elapsed().as_secs_f64().max(0.001)),
                    "push progress"
                );
            }
        },
    )
    .await;
    persist(deadline, || services.store.add_failures(&plan.push_id, &outcome.failures)).await?;
    let complete = outcome.cursor.is_none();
    let finished_at = complete.then(now_ms);
    let totals =
        persist(deadline, || services.store.finish_segment(&plan.push_id, segment, &outcome, finished_at)).await?;
    if !complete {
        persist(deadline, || services.hand_off.hand_off(&plan.push_id, segment + 1)).await?;
    }
    let mut counters = Counters::new(&["updated", "unchanged", "failed", "throttled"]);
    counters.add("updated", outcome.updated);
    counters.add("unchanged", outcome.unchanged);
    counters.add("failed", outcome.failed);
    counters.add("throttled", outcome.throttled);
    counters.emit("shadow-push");
    tracing::info!(
        push = %plan.push_id,
        segment,
        targets = totals.targets,
        updated = totals.updated,
        unchanged = totals.unchanged,
        failed = totals.failed,
        throttled = totals.throttled,
        complete,
        dry_run = plan.dry_run,
        "push summary"
    );
    summary(services, &totals, deadline).await
}

async fn summary<S, R, P: PushStore, H>(
    services: &Services<S, R, P, H>,
    record: &PushRecord,
    deadline: Instant,
) -> Result<PushSummary, PushError> {
    let failures = if record.failed > 0 {
        persist(deadline, || services.store.failures(&record.push_id, RESPONSE_FAILURES)).await?
    } else {
        Vec::new()
    };
    Ok(record.summary(failures, RESPONSE_FAILURES, now_ms()))
}

/// A fresh push id: time-ordered, with 64 random bits.
fn uuid_like() -> String {
    format!("{:x}-{:016x}", now_ms(), rand::random::<u64>())
}
