//! One invocation: a new push (direct or scheduled), a start that answers at once (`startPush`: the CLI's), a
//! wake-up of one (a hand-off message, Lambda's retry of the first invocation), or the sweeper's round.
//!
//! The handler decides nothing about what a push does next: it feeds the pure state machine
//! (`shadow_core::push::machine::step`) an event with the record as it stands, carries out the effects it returns
//! (claims, walks, conditional writes, hand-offs), and feeds their results back. Every arrival for an existing push
//! starts the same way, with `Event::Woken`; a claim is conditional, so a duplicate, late or lost message is
//! harmless, and any arrival resumes a push whose last holder died.

use std::collections::VecDeque;
use std::future::Future;
use std::time::Duration;

use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use lambda_runtime::{Diagnostic, LambdaEvent};
use serde::Deserialize;
use serde_json::{Value, json};
use shadow_aws::Continuation;
use shadow_core::clock::Clock;
use shadow_core::push::lifecycle::{self, LeaseTiming, Work};
use shadow_core::push::machine::{self, Action, Effect};
use shadow_core::push::quota::{self, Quota, Rates, Sender, Senders, Share};
use shadow_core::push::retention::Kept;
use shadow_core::push::rollout::OnAbort;
use shadow_core::push::{
    Claim, HandOff, Journal, JudgeOrRollback, Pace, PushDefinition, PushPlan, PushRecord, PushRequestError, PushStore,
    PushSummary, Registry, Segment, SegmentOutcome, SegmentStart, Shadows, Source, StoredPush, check_sources, journal,
    run_journal_segment, run_phase_segment, sources_for, validate_request,
};
use shadow_core::retry::{Backoff, GaveUp, Retryable, retry_until};
use shadow_core::store::ServiceError;
use shadow_runtime::event::Payload;
use shadow_runtime::metrics::{Counters, Emitter, push};
use tokio::time::Instant;

use crate::config::Config;

/// Failures listed in a response; the record keeps them all.
const RESPONSE_FAILURES: usize = 100;
const NO_DEADLINE: Duration = Duration::from_secs(900);
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// Stale pushes one sweep wakes at most.
const SWEEP_LIMIT: usize = 100;
/// How long a pause or abort waits for a running segment to carry it out before answering.
const CONTROL_WAIT: Duration = Duration::from_secs(8);

pub struct Services<S, R, P, H> {
    pub shadows: S,
    pub registry: R,
    pub store: P,
    pub hand_off: H,
    /// The wall clock records are written in: the system's, or a simulation's.
    pub clock: Clock,
}

#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("{0}")]
    InvalidRequest(#[from] PushRequestError),
    #[error("invalid event: {0}")]
    InvalidEvent(String),
    #[error("push {0} has no record")]
    UnknownPush(String),
    /// A target source that cannot be walked (a thing group that does not exist, a query the index refuses).
    #[error("{0}")]
    UnknownTargets(String),
    #[error("push record")]
    Store(#[source] GaveUp<ServiceError>),
    #[error("resolving targets")]
    Targets(#[source] GaveUp<ServiceError>),
    /// A synchronous start that reached its answer bound (`PUSH_ANSWER_MS`) waiting on `what`.
    #[error("no answer within {within_s} s: still waiting for {what}; nothing was started")]
    NotAnswered {
        what: &'static str,
        within_s: u64,
        #[source]
        last: GaveUp<ServiceError>,
    },
    #[error("could not serialize {0}")]
    Serialize(&'static str, #[source] serde_json::Error),
}

impl Retryable for PushError {
    fn is_retryable(&self) -> bool {
        match self {
            Self::InvalidRequest(_)
            | Self::InvalidEvent(_)
            | Self::UnknownPush(_)
            | Self::UnknownTargets(_)
            | Self::Serialize(..) => false,
            Self::NotAnswered { .. } => true,
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
            PushError::InvalidEvent(_) => "InvalidEvent",
            PushError::UnknownPush(_) => "UnknownPush",
            PushError::UnknownTargets(_) => "UnknownTargets",
            PushError::Store(_) => "Store",
            PushError::Targets(_) => "Targets",
            PushError::NotAnswered { .. } => "NotAnswered",
            PushError::Serialize(..) => "Serialize",
        };
        shadow_runtime::error::diagnostic(kind, &error)
    }
}

/// What an invocation carries.
#[derive(Debug)]
enum Event {
    /// Hand-off messages from the push queue, through the event source mapping.
    Queue(SqsEvent),
    /// A hand-off message invoked directly.
    Wake(Continuation),
    /// The sweeper's schedule: wake every push whose lease ran out.
    Sweep,
    /// EventBridge Scheduler's run of the scheduled push: `scheduledRun` is `<aws.scheduler.scheduled-time>`, the
    /// same for every retry of one run.
    Scheduled { run: String, request: Value },
    /// An operator's pause, resume or abort of a push.
    Control { push_id: String, action: Action },
    /// A push request.
    Push(Value),
    /// A push request that wants its answer at once (`{"startPush": request}`, invoked synchronously by the CLI):
    /// validated, its sources checked, its record created, its first segment handed to the queue.
    StartPush(Value),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ControlMessage {
    pause_push: Option<String>,
    resume_push: Option<String>,
    abort_push: Option<String>,
    rollback: Option<bool>,
}

impl ControlMessage {
    fn parse(payload: Value) -> Result<(String, Action), PushError> {
        let refused =
            |field: &str, reason: String| PushError::InvalidRequest(PushRequestError(vec![(field.into(), reason)]));
        let message: ControlMessage = serde_path_to_error::deserialize(payload).map_err(|e| {
            let path = e.path().to_string();
            refused(if path == "." { "request" } else { &path }, e.into_inner().to_string())
        })?;
        let given =
            [&message.pause_push, &message.resume_push, &message.abort_push].iter().filter(|f| f.is_some()).count();
        if given > 1 {
            return Err(refused("request", "give one of pausePush, resumePush, abortPush".into()));
        }
        if message.rollback.is_some() && message.abort_push.is_none() {
            return Err(refused("rollback", "goes only with abortPush".into()));
        }
        let (field, id, action) = match (message.pause_push, message.resume_push, message.abort_push) {
            (Some(id), _, _) => ("pausePush", id, Action::Pause),
            (_, Some(id), _) => ("resumePush", id, Action::Resume),
            (_, _, Some(id)) => ("abortPush", id, Action::Abort { rollback: message.rollback }),
            _ => return Err(refused("request", "give one of pausePush, resumePush, abortPush".into())),
        };
        if id.trim().is_empty() {
            return Err(refused(field, "is empty: give the push id".into()));
        }
        Ok((id, action))
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ScheduledRun {
    scheduled_run: String,
    request: Value,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct StartRequest {
    start_push: Value,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SweepRequest {
    #[allow(dead_code)]
    sweep_pushes: Value,
}

impl Event {
    fn parse(payload: Value) -> Result<Self, PushError> {
        let invalid = |what: &str, e: serde_json::Error| PushError::InvalidEvent(format!("{what}: {e}"));
        let has = |key: &str| payload.get(key).is_some();
        if payload.get("Records").is_some_and(Value::is_array) {
            return serde_json::from_value(payload).map(Self::Queue).map_err(|e| invalid("SQS event", e));
        }
        if has("continuePush") {
            return serde_json::from_value(payload).map(Self::Wake).map_err(|e| invalid("continuePush", e));
        }
        if has("sweepPushes") {
            return serde_json::from_value::<SweepRequest>(payload)
                .map(|_| Self::Sweep)
                .map_err(|e| invalid("sweepPushes", e));
        }
        if has("pausePush") || has("resumePush") || has("abortPush") {
            let (push_id, action) = ControlMessage::parse(payload)?;
            return Ok(Self::Control { push_id, action });
        }
        if has("startPush") {
            return serde_json::from_value::<StartRequest>(payload)
                .map(|s| Self::StartPush(s.start_push))
                .map_err(|e| invalid("startPush", e));
        }
        if has("scheduledRun") {
            return serde_json::from_value::<ScheduledRun>(payload)
                .map(|s| Self::Scheduled { run: s.scheduled_run, request: s.request })
                .map_err(|e| invalid("scheduledRun", e));
        }
        Ok(Self::Push(payload))
    }
}

impl<S: Shadows, R: Registry, P: PushStore + Journal + Senders, H: HandOff> Services<S, R, P, H> {
    fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    pub async fn handle(&self, config: &Config, event: LambdaEvent<Payload>) -> Result<Value, PushError> {
        let deadline = shadow_runtime::deadline::deadline(&event.context, NO_DEADLINE);
        let payload = event.payload.json().map_err(|e| PushError::InvalidEvent(e.to_string()))?;
        match Event::parse(payload)? {
            Event::Queue(batch) => {
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
            Event::Wake(c) => to_json("the push summary", &self.wake(config, &c.continue_push, deadline).await?),
            Event::Sweep => self.sweep(config, deadline).await,
            Event::Scheduled { run, request } => {
                let request = scheduled_request(request, &run)?;
                to_json("the push summary", &self.start(config, &request, Begin::Here, deadline).await?)
            }
            Event::Push(request) => {
                to_json("the push summary", &self.start(config, &request, Begin::Here, deadline).await?)
            }
            Event::StartPush(request) => {
                to_json("the push summary", &self.start(config, &request, Begin::Queued, deadline).await?)
            }
            Event::Control { push_id, action } => {
                to_json("the push summary", &self.control(config, &push_id, action, deadline).await?)
            }
        }
    }

    async fn persist<T, F: Future<Output = Result<T, ServiceError>>>(
        &self,
        deadline: Instant,
        op: impl FnMut() -> F,
    ) -> Result<T, PushError> {
        retry_until(deadline, Duration::ZERO, Backoff::default(), op, |_| {}).await.map_err(PushError::Store)
    }

    /// The push's definition and record.
    async fn load(&self, push_id: &str, deadline: Instant) -> Result<StoredPush, PushError> {
        self.persist(deadline, || self.store.load(push_id))
            .await?
            .ok_or_else(|| PushError::UnknownPush(push_id.to_owned()))
    }

    /// The push's record alone: an arrival that holds the definition already rereads only what changes.
    async fn load_record(&self, push_id: &str, deadline: Instant) -> Result<PushRecord, PushError> {
        self.persist(deadline, || self.store.load_record(push_id))
            .await?
            .ok_or_else(|| PushError::UnknownPush(push_id.to_owned()))
    }

    async fn start(
        &self,
        config: &Config,
        request: &Value,
        begin: Begin,
        deadline: Instant,
    ) -> Result<PushSummary, PushError> {
        let plan = validate_request(request, config.max_tps, None).inspect_err(|e| {
            tracing::warn!(outcome = "rejected", error = %e, "push request refused");
        })?;
        let digest = lifecycle::plan_digest(&plan);
        // Someone waits on a queued start's answer (the CLI): what comes before the record is written waits for the
        // registry and the store at most PUSH_ANSWER_MS, then says what it was waiting for. Nothing is written by
        // then, so the same request again starts afresh.
        let answer_by = match begin {
            Begin::Queued => deadline.min(Instant::now() + Duration::from_millis(config.answer_within_ms)),
            Begin::Here => deadline,
        };
        let waited = |what: &'static str, wrap: fn(GaveUp<ServiceError>) -> PushError| {
            move |last: GaveUp<ServiceError>| match (&last, begin) {
                (GaveUp::OutOfTime { .. }, Begin::Queued) => {
                    tracing::warn!(waiting_for = what, error = %last, "start not answered within PUSH_ANSWER_MS");
                    PushError::NotAnswered { what, within_s: config.answer_within_ms.div_ceil(1000), last }
                }
                _ => wrap(last),
            }
        };
        // A push id used before: a retry of that push (Lambda's async retry, a caller's retry, a scheduled run).
        if request.get("pushId").is_some()
            && let Some(existing) =
                retry_until(answer_by, Duration::ZERO, Backoff::default(), || self.store.load(&plan.push_id), |_| {})
                    .await
                    .map_err(waited("the push table (reading the push id)", PushError::Store))?
        {
            return self.retried(config, existing, &digest, begin, deadline).await;
        }
        let unwalkable =
            retry_until(answer_by, Duration::ZERO, Backoff::default(), || check_sources(&plan, &self.registry), |_| {})
                .await
                .map_err(waited("the registry (checking the target sources)", PushError::Targets))?;
        if let Some(why) = unwalkable {
            tracing::warn!(push = %plan.push_id, outcome = "rejected", reason = %why, "push targets cannot be walked");
            return Err(PushError::UnknownTargets(why));
        }
        let sources =
            retry_until(answer_by, Duration::ZERO, Backoff::default(), || sources_for(&plan, &self.registry), |_| {})
                .await
                .map_err(waited("the registry (listing the target sources)", PushError::Targets))?;
        // The lease the record will hold is counted from here, before the write: the segment's own view of it may
        // end earlier than the stored one, never later.
        let asked = Instant::now();
        let started_at = self.now_ms();
        let owner = shadow_core::chance::token();
        let lease_until = started_at + config.lease_ms;
        let request = to_json("the push plan", &plan)?;
        let definition = lifecycle::definition(&plan, request, digest.clone(), sources);
        let mut record = match begin {
            Begin::Here => lifecycle::new_record(&plan, owner.clone(), started_at, lease_until),
            Begin::Queued => lifecycle::queued_record(&plan, started_at, timing(config)),
        };
        // Decided once: every segment, reader and rollback of the push finds its journal in these shards.
        record.journal_shards = journal::shards_for(&plan, config.partition_wps);
        if let Some(retention) = self.store.retention_s() {
            record.kept = Kept::at_creation(started_at, retention);
        }
        if self.persist(deadline, || self.store.create(&definition, &record)).await? {
            tracing::info!(push = %plan.push_id, sources = definition.sources.len(), dry_run = plan.dry_run, ?begin, "push started");
            let defined = Defined { plan, sources: definition.sources };
            return match begin {
                Begin::Here => {
                    let claim = Claim { segment: 1, owner, lease_until_ms: lease_until, takeover: false };
                    self.run(config, &defined, record, claim, asked, deadline).await
                }
                Begin::Queued => self.wake_record(config, &defined, record, machine::Event::Asked, deadline).await,
            };
        }
        // Another invocation created it a moment ago (a duplicate delivery of this request).
        let existing = self.load(&plan.push_id, deadline).await?;
        self.retried(config, existing, &digest, begin, deadline).await
    }

    /// The same push id again: the same request resumes or reports the recorded push; another request is refused.
    async fn retried(
        &self,
        config: &Config,
        existing: StoredPush,
        digest: &str,
        begin: Begin,
        deadline: Instant,
    ) -> Result<PushSummary, PushError> {
        let StoredPush { definition, record } = existing;
        if !definition.plan_digest.is_empty() && definition.plan_digest != digest {
            tracing::warn!(push = %record.push_id, outcome = "rejected", "push id reused with another request");
            return Err(PushError::InvalidRequest(PushRequestError(vec![(
                "pushId".into(),
                format!(
                    "{} names a push made with another request (started at {} ms); choose a new pushId, or send \
                     the same request to resume or report that push",
                    record.push_id, record.status.started_at
                ),
            )])));
        }
        tracing::info!(push = %record.push_id, "push id known: resuming or reporting it");
        self.wake_record(config, &Defined::of(definition)?, record, begin.arrival(), deadline).await
    }

    async fn wake(&self, config: &Config, push_id: &str, deadline: Instant) -> Result<PushSummary, PushError> {
        let StoredPush { definition, record } = self.load(push_id, deadline).await?;
        self.wake_record(config, &Defined::of(definition)?, record, machine::Event::Woken, deadline).await
    }

    /// Carries out what the state machine calls for on an arrival: runs the push's next segment if it has one free
    /// to claim, carries out a control nobody holds, else reports the push as it stands.
    async fn wake_record(
        &self,
        config: &Config,
        defined: &Defined,
        record: PushRecord,
        arrival: machine::Event<'static>,
        deadline: Instant,
    ) -> Result<PushSummary, PushError> {
        let effects = self.step(config, &record, &defined.plan, arrival)?;
        let record = self.carry(config, Carrying { record, defined, claim: None }, effects, deadline).await?;
        self.summary(&record, &defined.plan, deadline).await
    }

    /// Runs the first segment of a push just created (the creation is its claim).
    async fn run(
        &self,
        config: &Config,
        defined: &Defined,
        record: PushRecord,
        claim: Claim,
        claimed_at: Instant,
        deadline: Instant,
    ) -> Result<PushSummary, PushError> {
        let event = machine::Event::Claimed { segment: claim.segment, takeover: claim.takeover };
        let effects = self.step(config, &record, &defined.plan, event)?;
        let carrying = Carrying { record, defined, claim: Some((claim, claimed_at)) };
        let record = self.carry(config, carrying, effects, deadline).await?;
        self.summary(&record, &defined.plan, deadline).await
    }

    /// One step of the state machine, at the function's lease timing.
    fn step(
        &self,
        config: &Config,
        record: &PushRecord,
        plan: &PushPlan,
        event: machine::Event<'_>,
    ) -> Result<Vec<Effect>, PushError> {
        machine::step(record, plan, event, self.now_ms(), timing(config)).map_err(refusal)
    }

    /// Carries out `effects` in order, feeding each result back to the state machine, until it reports. A
    /// conditional write whose condition fails drops the effects after it: the push moved on elsewhere.
    async fn carry(
        &self,
        config: &Config,
        mut at: Carrying<'_>,
        effects: Vec<Effect>,
        deadline: Instant,
    ) -> Result<PushRecord, PushError> {
        let mut queue: VecDeque<Effect> = effects.into();
        let push_id = at.record.push_id.clone();
        // Whether this invocation has walked the push's retention already (then it has no time left for it).
        let mut kept_here = false;
        while let Some(effect) = queue.pop_front() {
            let next = match effect {
                Effect::Claim { segment, takeover } => {
                    let asked = Instant::now();
                    let claim = Claim {
                        segment,
                        owner: shadow_core::chance::token(),
                        lease_until_ms: self.now_ms() + config.lease_ms,
                        takeover,
                    };
                    if !self.persist(deadline, || self.store.claim(&push_id, &claim, self.now_ms())).await? {
                        tracing::info!(push = %push_id, segment, outcome = "duplicate", "segment claimed by another invocation");
                        return self.load_record(&push_id, deadline).await;
                    }
                    if takeover {
                        tracing::warn!(push = %push_id, segment, outcome = "takeover", "segment taken over from a holder that died");
                    } else {
                        tracing::info!(push = %push_id, segment, "push continued");
                    }
                    at.record.holder.segment = segment;
                    at.claim = Some((claim, asked));
                    self.step(config, &at.record, &at.defined.plan, machine::Event::Claimed { segment, takeover })?
                }
                Effect::Walk(work) => {
                    let Some((claim, claimed_at)) = at.claim.clone() else {
                        return Err(PushError::InvalidEvent(format!("push {push_id}: a walk without a claim")));
                    };
                    let Some(outcome) = self.walk(config, &at, work, &claim, claimed_at, deadline).await? else {
                        // The claim was lost: whoever holds the push now redoes this segment from its cursor;
                        // recording it would count it twice.
                        return self.load_record(&push_id, deadline).await;
                    };
                    let walked = match &outcome {
                        Outcome::Push(out) => machine::Walked::Push(out),
                        Outcome::Judge(out) => machine::Walked::Judge(out),
                        Outcome::Rollback(out) => machine::Walked::Rollback(out),
                    };
                    let event = machine::Event::Ended { segment: claim.segment, takeover: claim.takeover, walked };
                    self.step(config, &at.record, &at.defined.plan, event)?
                }
                Effect::Record(next) => {
                    let Some((claim, _)) = at.claim.as_ref() else {
                        return Err(PushError::InvalidEvent(format!("push {push_id}: a record without a claim")));
                    };
                    if next.status.state != at.record.status.state || next.status.phase != at.record.status.phase {
                        tracing::info!(
                            push = %push_id,
                            segment = next.holder.segment,
                            from = ?at.record.status.state,
                            to = ?next.status.state,
                            phase = next.status.phase,
                            abort_reason = next.status.abort_reason.as_deref().unwrap_or("-"),
                            "push state"
                        );
                    }
                    let Some(totals) = self.write_segment(&next, claim, deadline).await? else {
                        return self.load_record(&push_id, deadline).await;
                    };
                    at.record = totals;
                    at.claim = None;
                    // Released: a long walk of the push's items holds no lease (a new phase, a bake and an end are
                    // all segment ends).
                    self.keep(config, &mut at.record, deadline).await;
                    kept_here = true;
                    self.log_totals(&at.record, at.defined.plan.dry_run);
                    self.step(config, &at.record, &at.defined.plan, machine::Event::Recorded)?
                }
                Effect::CarryOut { control, next } => {
                    let now = self.now_ms();
                    if !self.persist(deadline, || self.store.apply_control(&next, control, now)).await? {
                        tracing::info!(push = %push_id, ?control, outcome = "duplicate", "control carried out elsewhere");
                        return self.load_record(&push_id, deadline).await;
                    }
                    tracing::info!(push = %push_id, ?control, state = ?next.status.state, "operator control carried out");
                    at.record = *next;
                    self.keep(config, &mut at.record, deadline).await;
                    kept_here = true;
                    Vec::new()
                }
                Effect::RequestControl(control) => {
                    if !self.persist(deadline, || self.store.request_control(&push_id, control)).await? {
                        let current = self.load_record(&push_id, deadline).await?;
                        if current.status.control != Some(control) {
                            return Err(refusal(machine::Refusal {
                                field: control.field(),
                                reason: format!(
                                    "push {push_id} is {:?} and cannot take it now (another control is pending, or \
                                     it moved on)",
                                    current.status.state
                                ),
                            }));
                        }
                    }
                    tracing::info!(push = %push_id, ?control, "operator control requested");
                    Vec::new()
                }
                Effect::Resume { to, lease_until } => {
                    if !self.persist(deadline, || self.store.resume(&push_id, to, lease_until)).await? {
                        return self.load_record(&push_id, deadline).await;
                    }
                    tracing::info!(push = %push_id, state = ?to, "push resumed");
                    // Paused is not final: kept as an open push.
                    self.keep(config, &mut at.record, deadline).await;
                    kept_here = true;
                    Vec::new()
                }
                Effect::HandOff { segment, delay_s } => {
                    if let Err(e) = self.persist(deadline, || self.hand_off.hand_off(&push_id, segment, delay_s)).await
                    {
                        // The push is released: Lambda's retry of this invocation, or the sweeper after the grace,
                        // wakes it.
                        tracing::warn!(push = %push_id, segment, error = ?e, "hand-off not sent; the sweeper will wake the push");
                    }
                    Vec::new()
                }
                Effect::Unstall(next) => {
                    if !self.persist(deadline, || self.store.unstall(&next)).await? {
                        return self.load_record(&push_id, deadline).await;
                    }
                    tracing::info!(push = %push_id, segment = next.holder.segment, "stalled push resumed");
                    at.record = *next;
                    Vec::new()
                }
                Effect::Stall(reason) => {
                    self.stall(&push_id, at.record.holder.segment, &reason, deadline).await?;
                    Vec::new()
                }
                Effect::Report(report) => {
                    // An arrival at a push no segment follows finishes a retention walk left under way on it.
                    let unfollowed =
                        matches!(report, machine::Report::Final | machine::Report::Paused | machine::Report::Stalled);
                    if unfollowed && !kept_here && self.walking(&at.record).is_some() {
                        self.keep(config, &mut at.record, deadline).await;
                    }
                    tracing::info!(push = %push_id, ?report, state = ?at.record.status.state, "push reported");
                    return self.load_record(&push_id, deadline).await;
                }
            };
            for effect in next.into_iter().rev() {
                queue.push_front(effect);
            }
        }
        self.load_record(&push_id, deadline).await
    }

    /// Walks one claimed segment from the record's cursor (pushing a phase, judging it, or rolling back), renewing
    /// its claim as it goes; records its failures and conflicts. `None`: the claim was lost.
    async fn walk(
        &self,
        config: &Config,
        at: &Carrying<'_>,
        work: Work,
        claim: &Claim,
        claimed_at: Instant,
        deadline: Instant,
    ) -> Result<Option<Outcome>, PushError> {
        let (record, plan) = (&at.record, &at.defined.plan);
        let push_id = record.push_id.clone();
        let segment = claim.segment;
        let timing = timing(config);
        let remaining = deadline.saturating_duration_since(Instant::now());
        let hand_off_margin = (remaining / 5).clamp(Duration::from_millis(500), Duration::from_secs(20));
        let reserve = (remaining / 10).clamp(Duration::from_millis(300), Duration::from_secs(5));
        let lease_ms = Duration::from_millis(timing.lease_ms);
        let read_rate = scaled(config.read_tps, plan.max_requests_per_second, config.max_tps);
        let pace = Pace::new(plan.max_requests_per_second, config.concurrency, deadline, hand_off_margin, reserve)
            .with_read_rate(read_rate)
            .with_lease(claimed_at + lease_ms, lease_ms / 3);
        let cursor = record.status.cursor.clone().unwrap_or_default();
        // Taking over from a holder that died, or after one: every thing walked is checked before it is updated.
        let uncertain = claim.takeover || record.status.recheck;
        // The account's quotas are shared with the other pushes sending now: this segment's share, from the board.
        let quota = Quota::new(config.max_tps, config.read_tps, config.headroom_percent);
        let caps = Rates::of(plan, &work, read_rate);
        let mut sender = Sender {
            push_id: push_id.clone(),
            owner: claim.owner.clone(),
            until_ms: claim.lease_until_ms,
            caps,
            // All it may take, until it has taken its share: a push that reads the board meanwhile counts it so.
            pace: quota.provisional(caps),
        };
        let provisional_until = self.now_ms() + timing.renew_every_ms();
        let mut share = match self.first_share(quota, &mut sender, provisional_until).await {
            Some(share) => share,
            None => quota::share(quota, &push_id, sender.caps, &[], self.now_ms()),
        };
        // What the next announcement says it sends (already announced when the board was read).
        sender.pace = share.pace(sender.caps);
        pace.set_rates(share.updates, share.reads);
        pace.stagger();
        log_share(&push_id, segment, &share);
        let sends = sender.caps.sends();
        let started = std::time::Instant::now();
        let mut last_log = started;
        let store_throttled = self.store.throttled();
        let segment_run = async {
            let context = Segment {
                plan,
                sources: &at.defined.sources,
                shadows: &self.shadows,
                registry: &self.registry,
                journal: &self.store,
                journal_shards: record.journal_shards,
                pace: &pace,
            };
            match work {
                Work::Push { phase } => {
                    let start = SegmentStart {
                        cursor,
                        written_since: record.status.started_at / 1000,
                        takeover: uncertain,
                        phase,
                        expires_at: self.expires_at(record),
                    };
                    let progress = |progress: &SegmentOutcome| {
                        if last_log.elapsed() >= PROGRESS_EVERY {
                            last_log = std::time::Instant::now();
                            let done = progress.updated + progress.unchanged + progress.failed;
                            let (update_share, read_share) = pace.rates();
                            tracing::info!(
                                push = %push_id,
                                segment,
                                phase = record.status.phase,
                                done = record.status.counts.targets + done,
                                total = record.status.counts.targets + progress.targets,
                                rate = format!("{:.1}", done as f64 / started.elapsed().as_secs_f64().max(0.001)),
                                update_share = format!("{update_share:.1}"),
                                read_share = format!("{read_share:.1}"),
                                "push progress"
                            );
                        }
                    };
                    let out = run_phase_segment(&context, start, progress).await;
                    Outcome::Push(out)
                }
                Work::Judge { phase } => Outcome::Judge(
                    run_journal_segment(&context, JudgeOrRollback::Judge { phase }, cursor, uncertain).await,
                ),
                Work::Rollback | Work::Bake { .. } => {
                    Outcome::Rollback(run_journal_segment(&context, JudgeOrRollback::Rollback, cursor, uncertain).await)
                }
            }
        };
        let heartbeat = async {
            let every = Duration::from_millis(timing.renew_every_ms());
            // The board is read more often than the lease is renewed: a push that starts beside this one is seen
            // within BOARD_LOOK_EVERY, which bounds how long the account is asked for more than its quota.
            let look = every.min(BOARD_LOOK_EVERY);
            let mut next_renewal = Instant::now() + every;
            // Just started, it looks more often: a push that starts a moment after this one took its share sees this
            // one at once, but this one sees it only at its next look.
            let early_until = (Instant::now() + look).min(next_renewal);
            while sends && Instant::now() + EARLY_LOOK_EVERY < early_until {
                tokio::time::sleep(EARLY_LOOK_EVERY).await;
                if let Some(next) = self.look_at_board(quota, &mut sender).await
                    && next != share
                {
                    share = next;
                    pace.set_rates(share.updates, share.reads);
                    log_share(&push_id, segment, &share);
                }
            }
            // Renewals keep their cadence: the board's requests after one do not push the next one back.
            let mut ticks = tokio::time::interval_at(Instant::now() + look, look);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let asked = Instant::now();
                if asked + look / 2 < next_renewal {
                    if sends
                        && let Some(next) = self.look_at_board(quota, &mut sender).await
                        && next != share
                    {
                        share = next;
                        pace.set_rates(share.updates, share.reads);
                        log_share(&push_id, segment, &share);
                    }
                    continue;
                }
                next_renewal += every;
                match self.store.renew(&push_id, segment, &claim.owner, self.now_ms() + timing.lease_ms).await {
                    Ok(Some(control)) => {
                        pace.lease().extend(asked + lease_ms);
                        if let Some(control) = control
                            && !pace.lease().is_halted()
                        {
                            tracing::info!(push = %push_id, segment, ?control, "operator control: stopping the segment");
                            pace.lease().halt();
                        }
                        // Pushes that started or ended since: the share follows at every renewal.
                        sender.until_ms = self.now_ms() + timing.lease_ms;
                        if let Some(next) = self.share_out(quota, &mut sender).await
                            && next != share
                        {
                            share = next;
                            pace.set_rates(share.updates, share.reads);
                            log_share(&push_id, segment, &share);
                        }
                    }
                    Ok(None) => {
                        tracing::error!(push = %push_id, segment, "claim lost to another invocation; stopping");
                        pace.lease().lose();
                        return;
                    }
                    // The lease is not extended: if renewals keep failing, the segment stops before it runs out.
                    Err(e) => tracing::warn!(push = %push_id, segment, error = %e, "lease renewal failed"),
                }
            }
        };
        tokio::pin!(segment_run);
        let mut outcome = tokio::select! {
            outcome = &mut segment_run => outcome,
            // The claim was lost: the engine stops starting requests at once; let those in flight end.
            () = heartbeat => segment_run.await,
        };
        if sends && let Err(e) = self.store.withdraw(&push_id, &claim.owner).await {
            // Its entry counts until its lease runs out; the others get its share back then.
            tracing::warn!(push = %push_id, segment, error = %e, "could not leave the board of senders");
        }
        if pace.lease().is_lost() {
            return Ok(None);
        }
        let mut counters = Counters::new(Emitter::Push, &push::SEGMENT);
        let at = record.journal();
        let expires_at = self.expires_at(record);
        match &outcome {
            Outcome::Push(out) => {
                self.persist(deadline, || self.store.add_failures(at, expires_at, &out.failures)).await?;
                counters.add(push::UPDATED, out.updated);
                counters.add(push::UNCHANGED, out.unchanged);
                counters.add(push::FAILED, out.failed);
                counters.add(push::THROTTLED, out.throttled);
            }
            Outcome::Judge(out) => {
                counters.add(push::CONVERGED, out.converged);
                counters.add(push::PENDING, out.pending);
                counters.add(push::THROTTLED, out.throttled);
            }
            Outcome::Rollback(out) => {
                self.persist(deadline, || self.store.add_conflicts(at, expires_at, &out.conflicts)).await?;
                self.persist(deadline, || self.store.add_failures(at, expires_at, &out.failures)).await?;
                counters.add(push::THROTTLED, out.throttled);
            }
        }
        // DynamoDB's refusals while the segment ran (its journal writes and reads, failures, renewals): retried,
        // and counted apart from the shadow requests' 429s.
        let store_throttled = self.store.throttled().saturating_sub(store_throttled);
        match &mut outcome {
            Outcome::Push(out) => out.store_throttled = store_throttled,
            Outcome::Judge(out) | Outcome::Rollback(out) => out.store_throttled = store_throttled,
        }
        if store_throttled > 0 {
            tracing::warn!(push = %push_id, segment, store_throttled, "DynamoDB throttled requests of the segment");
        }
        counters.add(push::STORE_THROTTLED, store_throttled);
        counters.emit();
        Ok(Some(outcome))
    }

    /// Puts the segment's entry on the board; a failure leaves the others sharing without it until the next renewal.
    async fn announce(&self, sender: &Sender) {
        if let Err(e) = self.store.announce(sender).await {
            tracing::warn!(push = %sender.push_id, error = %e, "could not announce the push on the board of senders");
        }
    }

    /// Puts this segment on the board of senders (or refreshes its entry, with the lease it holds now), reads its
    /// share of the quotas from the live entries, and announces the new rates at once when they changed. `None` when
    /// the board cannot be read: the pace stays as it is.
    async fn share_out(&self, quota: Quota, sender: &mut Sender) -> Option<Share> {
        if !sender.caps.sends() {
            return None;
        }
        self.announce(sender).await;
        self.look_at_board(quota, sender).await
    }

    /// A segment's first share. Its entry goes on the board with provisional rates (all it may take) and a short
    /// lease (`provisional_until`: a holder that dies now holds them no longer than a renewal's interval), then the
    /// board is read twice, one round trip apart: a push that announced itself while the first read was on its way is
    /// seen by the second, so pushes that start within a round trip of each other all see each other. The share is
    /// taken from the second read and announced with the holder's lease. `None` when the board cannot be read (the
    /// entry keeps its provisional rates until it lapses or the next renewal announces again).
    async fn first_share(&self, quota: Quota, sender: &mut Sender, provisional_until: u64) -> Option<Share> {
        if !sender.caps.sends() {
            return None;
        }
        let lease_until = sender.until_ms;
        sender.until_ms = lease_until.min(provisional_until);
        self.announce(sender).await;
        let first = self.store.senders().await;
        let board = match (first, self.store.senders().await) {
            (_, Ok(board)) | (Ok(board), Err(_)) => board,
            (Err(_), Err(e)) => {
                tracing::warn!(push = %sender.push_id, error = %e, "could not read the board of senders");
                return None;
            }
        };
        let share = quota::share(quota, &sender.push_id, sender.caps, &board, self.now_ms());
        sender.pace = share.pace(sender.caps);
        sender.until_ms = lease_until;
        self.announce(sender).await;
        Some(share)
    }

    /// Reads the board and takes this segment's share, announcing its new rates when they changed (its entry's lease
    /// is left as the last renewal wrote it). `None` when the board cannot be read: the pace stays as it is.
    async fn look_at_board(&self, quota: Quota, sender: &mut Sender) -> Option<Share> {
        let board = match self.store.senders().await {
            Ok(board) => board,
            Err(e) => {
                tracing::warn!(push = %sender.push_id, error = %e, "could not read the board of senders; pace kept");
                return None;
            }
        };
        let share = quota::share(quota, &sender.push_id, sender.caps, &board, self.now_ms());
        let pace = share.pace(sender.caps);
        if pace != sender.pace {
            sender.pace = pace;
            self.announce(sender).await;
        }
        Some(share)
    }

    /// Keeps the push's items (record, plan, journal) at least the retention past now, when it is short of that or
    /// an extension stopped or died midway ([`shadow_core::push::retention`]): after each segment's record and each
    /// pause, resume or abort, once written; and on an arrival at a push no segment follows (ended, paused,
    /// stalled) that has a walk under way.
    /// The walk stops before the invocation's deadline, leaving time for what follows it (the hand-off, the answer),
    /// and leaves where it got beside the record: the next transition resumes it, and a push no segment follows is
    /// woken (a hand-off message) to resume it.
    /// Not extended (the store failing past the deadline): the push goes on, and its next transition tries again,
    /// finishing a walk left marked on the record first.
    async fn keep(&self, config: &Config, record: &mut PushRecord, deadline: Instant) {
        let open = !record.status.state.is_final();
        let now_s = self.now_ms() / 1000;
        let kept_back = after_walk(deadline.saturating_duration_since(Instant::now()));
        let stop_at = deadline.checked_sub(kept_back).unwrap_or_else(Instant::now);
        let current: &PushRecord = record;
        let kept = self
            .persist(deadline, || {
                let within = Some(stop_at.saturating_duration_since(Instant::now()));
                self.store.keep_within(current, now_s, open, config.partition_wps, within)
            })
            .await;
        match kept {
            Ok(kept) => record.kept = kept,
            Err(e) => {
                tracing::warn!(push = %record.push_id, error = ?e, outcome = "not_extended", "push retention not extended; the next transition retries");
                return;
            }
        }
        let state = record.status.state;
        let followed =
            !state.is_final() && state != shadow_core::push::PushState::Paused && record.holder.stalled.is_none();
        let Some(to) = self.walking(record).filter(|_| !followed) else { return };
        let (push_id, segment) = (record.push_id.as_str(), record.holder.segment);
        match self.persist(deadline, || self.hand_off.hand_off(push_id, segment, 0)).await {
            Ok(()) => tracing::info!(push = %push_id, keeping_to = to, "push woken to resume its retention walk"),
            Err(e) => {
                tracing::warn!(push = %push_id, keeping_to = to, error = ?e, outcome = "not_extended", "push retention walk stopped and not handed on; the next arrival resumes it");
            }
        }
    }

    /// The target of a retention walk under way on `record` (stopped, or died), if any.
    fn walking(&self, record: &PushRecord) -> Option<u64> {
        self.store.retention_s().and_then(|r| record.kept.walking(record.status.started_at, r))
    }

    /// Refuses what needs the push's items whole (a resume, a rollback) once they were kept until a moment past:
    /// DynamoDB may have deleted some of them already.
    fn refuse_lapsed(&self, record: &PushRecord, plan: &PushPlan, action: Action) -> Result<(), PushError> {
        let needs_items = match action {
            Action::Resume => true,
            Action::Abort { rollback } => {
                rollback.unwrap_or(plan.rollout.as_ref().is_some_and(|r| r.on_abort == OnAbort::Rollback))
            }
            Action::Pause => false,
        };
        let Some(retention) = self.store.retention_s().filter(|_| needs_items) else { return Ok(()) };
        let Some(until) = record.kept.lapsed(record.status.started_at, retention, self.now_ms() / 1000) else {
            return Ok(());
        };
        Err(refusal(machine::Refusal {
            field: action.field(),
            reason: format!(
                "push {} was left {:?} past its retention: its items (record, plan, journal) were kept until {until} (epoch s) and DynamoDB may have deleted some of them since; it cannot {}. Start a new push",
                record.push_id,
                record.status.state,
                if action == Action::Resume { "resume" } else { "roll back" }
            ),
        }))
    }

    /// The `expiresAt` of the push's items written now (0 when the store keeps them for ever).
    fn expires_at(&self, record: &PushRecord) -> u64 {
        self.store.retention_s().map_or(0, |r| record.kept.expires_at(record.status.started_at, r))
    }

    /// Writes the record a segment ends with (released). `None`: the claim was lost before it could be written.
    async fn write_segment(
        &self,
        next: &PushRecord,
        claim: &Claim,
        deadline: Instant,
    ) -> Result<Option<PushRecord>, PushError> {
        let push_id = &next.push_id;
        let segment = next.holder.segment;
        if let Some(totals) = self.persist(deadline, || self.store.finish_segment(next, &claim.owner)).await? {
            return Ok(Some(totals));
        }
        // The condition failed: either an earlier attempt of this very write succeeded and its answer was lost (the
        // record then shows this segment released by this owner), or the claim was lost.
        let current = self.load_record(push_id, deadline).await?;
        if current.holder.owner != claim.owner || current.holder.handed_off < segment {
            tracing::error!(push = %push_id, segment, "claim lost before the segment was recorded");
            return Ok(None);
        }
        Ok(Some(current))
    }

    fn log_totals(&self, totals: &PushRecord, dry_run: bool) {
        tracing::info!(
            push = %totals.push_id,
            segment = totals.holder.segment,
            state = ?totals.status.state,
            phase = totals.status.phase,
            targets = totals.status.counts.targets,
            updated = totals.status.counts.updated,
            unchanged = totals.status.counts.unchanged,
            failed = totals.status.counts.failed,
            throttled = totals.status.counts.throttled,
            complete = totals.status.complete,
            dry_run,
            "push summary"
        );
    }

    /// An operator's pause, resume or abort. A pause or abort is left on the record; a push that no live segment
    /// holds has it carried out at once, a running segment notices it within 5 s (at its next renewal), lets its
    /// things in flight finish and records. The answer waits a few seconds for that.
    async fn control(
        &self,
        config: &Config,
        push_id: &str,
        action: Action,
        deadline: Instant,
    ) -> Result<PushSummary, PushError> {
        let Some(StoredPush { definition, record }) = self.persist(deadline, || self.store.load(push_id)).await? else {
            return Err(refusal(machine::Refusal {
                field: action.field(),
                reason: format!("names no push: {push_id:?} has no record"),
            }));
        };
        let defined = Defined::of(definition)?;
        let plan = &defined.plan;
        self.refuse_lapsed(&record, plan, action)?;
        let effects = self.step(config, &record, plan, machine::Event::Control(action))?;
        let requested = effects.iter().any(|e| matches!(e, Effect::RequestControl(_)));
        let mut record =
            self.carry(config, Carrying { record, defined: &defined, claim: None }, effects, deadline).await?;
        let waited = Instant::now();
        if requested {
            loop {
                let effects = self.step(config, &record, plan, machine::Event::Polled)?;
                if waited.elapsed() >= CONTROL_WAIT {
                    break;
                }
                if effects == [Effect::Report(machine::Report::ControlPending)] {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    record = self.load_record(push_id, deadline).await?;
                    continue;
                }
                let carrying = Carrying { record, defined: &defined, claim: None };
                record = self.carry(config, carrying, effects, deadline).await?;
                if record.status.control.is_none() || record.status.state.is_final() {
                    break;
                }
            }
        }
        self.summary(&record, plan, deadline).await
    }

    /// Marks a push that cannot go on as stalled: it leaves the sweeper's index, and the `stalled` metric alarms.
    async fn stall(&self, push_id: &str, segment: u64, reason: &str, deadline: Instant) -> Result<(), PushError> {
        self.persist(deadline, || self.store.stall(push_id, segment, reason)).await?;
        let mut counters = Counters::new(Emitter::Push, &[push::STALLED]);
        counters.add(push::STALLED, 1);
        counters.emit();
        tracing::error!(push = %push_id, reason = %reason, outcome = "stalled", "push stalled");
        Ok(())
    }

    /// Wakes every push whose lease ran out: a segment that died, or a hand-off that was never picked up.
    async fn sweep(&self, config: &Config, deadline: Instant) -> Result<Value, PushError> {
        let now = self.now_ms();
        let stale = self.persist(deadline, || self.store.stale(now, SWEEP_LIMIT)).await?;
        let mut woken = Vec::new();
        for push_id in stale {
            let Some(StoredPush { definition, record }) = self.persist(deadline, || self.store.load(&push_id)).await?
            else {
                continue;
            };
            let defined = Defined::of(definition)?;
            let effects = self.step(config, &record, &defined.plan, machine::Event::Swept)?;
            if let Some(Effect::HandOff { segment, .. }) = effects.first() {
                tracing::warn!(push = %push_id, segment, outcome = "woken", "stale push woken");
                woken.push(push_id.clone());
            }
            self.carry(config, Carrying { record, defined: &defined, claim: None }, effects, deadline).await?;
        }
        let mut counters = Counters::new(Emitter::Push, &[push::WOKEN]);
        counters.add(push::WOKEN, woken.len() as u64);
        counters.emit();
        Ok(json!({"woken": woken}))
    }

    async fn summary(&self, record: &PushRecord, plan: &PushPlan, deadline: Instant) -> Result<PushSummary, PushError> {
        let rollback_failed = record.status.rollback.as_ref().is_some_and(|r| r.failed > 0);
        let failures = if record.status.counts.failed > 0 || rollback_failed {
            self.persist(deadline, || self.store.failures(record.journal(), RESPONSE_FAILURES)).await?
        } else {
            Vec::new()
        };
        let conflicts = if record.status.rollback.as_ref().is_some_and(|r| r.conflicts > 0) {
            self.persist(deadline, || self.store.conflicts(record.journal(), RESPONSE_FAILURES)).await?
        } else {
            Vec::new()
        };
        Ok(record.summary(plan, failures, conflicts, RESPONSE_FAILURES, self.now_ms()))
    }
}

/// The scheduled push request with a push id of its own for this run: `<pushId or "scheduled">-<run>`, so that every
/// retry of one run is the same push and the next run is a new one.
fn scheduled_request(mut request: Value, run: &str) -> Result<Value, PushError> {
    let Some(fields) = request.as_object_mut() else {
        return Err(PushError::InvalidRequest(PushRequestError(vec![(
            "request".into(),
            "must be a JSON object".into(),
        )])));
    };
    let prefix = match fields.get("pushId") {
        None => "scheduled".to_owned(),
        Some(Value::String(p)) => p.clone(),
        Some(other) => {
            return Err(PushError::InvalidRequest(PushRequestError(vec![(
                "pushId".into(),
                format!("must be a string, found {other}"),
            )])));
        }
    };
    let run: String = run.chars().filter(|c| c.is_ascii_alphanumeric() || "-_.:".contains(*c)).collect();
    if run.is_empty() {
        return Err(PushError::InvalidEvent("scheduledRun is empty: expected <aws.scheduler.scheduled-time>".into()));
    }
    fields.insert("pushId".into(), Value::String(format!("{prefix}-{run}")));
    Ok(request)
}

/// Where a new push's first segment runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Begin {
    /// In this invocation (a request invoked asynchronously: nobody waits on the answer).
    Here,
    /// From the queue: this invocation answers once the push is recorded (`startPush`, invoked synchronously).
    Queued,
}

impl Begin {
    /// The state machine's event for an arrival of a push request whose push is recorded already.
    fn arrival(self) -> machine::Event<'static> {
        match self {
            Self::Here => machine::Event::Woken,
            Self::Queued => machine::Event::Asked,
        }
    }
}

/// What a segment did.
enum Outcome {
    Push(SegmentOutcome),
    Judge(shadow_core::push::JournalOutcome),
    Rollback(shadow_core::push::JournalOutcome),
}

/// The push's share of the account's quotas: one line when it starts and whenever it changes.
/// How often a sending segment reads the board of senders between its lease renewals: one consistent Query of a
/// partition of a few hundred bytes (1 read unit), twice a second per running push.
const BOARD_LOOK_EVERY: Duration = Duration::from_millis(500);

/// How often a segment reads the board in its first [`BOARD_LOOK_EVERY`]: pushes often start together (a schedule,
/// an operator's several starts), and one that took its share alone sees the others within this.
const EARLY_LOOK_EVERY: Duration = Duration::from_millis(100);

fn log_share(push_id: &str, segment: u64, share: &Share) {
    tracing::info!(
        push = %push_id,
        segment,
        update_share = format!("{:.1}", share.updates),
        read_share = format!("{:.1}", share.reads),
        senders = share.senders,
        "quota share"
    );
}

/// The time kept back from a retention walk for what follows it in the invocation (the hand-off and the answer), of
/// the `remaining` time: a tenth, at least 500 ms and at most 5 s.
fn after_walk(remaining: Duration) -> Duration {
    (remaining / 10).clamp(Duration::from_millis(500), Duration::from_secs(5))
}

/// Reads go at the share of their own quota that the push's update rate is of the update quota.
fn scaled(read_tps: u32, rate: u32, max_tps: u32) -> u32 {
    ((u64::from(read_tps) * u64::from(rate)).div_ceil(u64::from(max_tps.max(1)))).max(1) as u32
}

fn to_json(what: &'static str, value: &impl serde::Serialize) -> Result<Value, PushError> {
    serde_json::to_value(value).map_err(|e| PushError::Serialize(what, e))
}

/// What a push is, as an arrival works from it: its plan and the sources it walks. Read once per arrival; the
/// record is reread alone.
struct Defined {
    plan: PushPlan,
    sources: Vec<Source>,
}

impl Defined {
    /// The plan a push was started with, from its definition.
    fn of(definition: PushDefinition) -> Result<Self, PushError> {
        Ok(Self { plan: definition.plan().map_err(PushError::InvalidEvent)?, sources: definition.sources })
    }
}

/// Where an arrival stands while it carries out effects: the record as last read or written, what the push is, and
/// the claim it holds (with when it was asked for).
struct Carrying<'a> {
    record: PushRecord,
    defined: &'a Defined,
    claim: Option<(Claim, Instant)>,
}

fn timing(config: &Config) -> LeaseTiming {
    LeaseTiming { lease_ms: config.lease_ms, hand_off_grace_ms: config.hand_off_grace_ms }
}

fn refusal(refused: machine::Refusal) -> PushError {
    PushError::InvalidRequest(PushRequestError(vec![(refused.field.into(), refused.reason)]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retention_walk_leaves_time_for_what_follows_it() {
        let ms = Duration::from_millis;
        // (time left, kept back): a tenth, at least 500 ms (a 3 s invocation's segment end), at most 5 s.
        for (left, kept) in [(ms(600), ms(500)), (ms(3000), ms(500)), (ms(20_000), ms(2000)), (ms(900_000), ms(5000))] {
            assert_eq!(after_walk(left), kept, "{left:?} left");
        }
    }

    #[test]
    fn events_are_told_apart() {
        assert!(matches!(Event::parse(json!({"Records": []})), Ok(Event::Queue(_))));
        assert!(matches!(Event::parse(json!({"continuePush": "p", "segment": 2})), Ok(Event::Wake(_))));
        assert!(matches!(Event::parse(json!({"sweepPushes": true})), Ok(Event::Sweep)));
        assert!(matches!(
            Event::parse(json!({"scheduledRun": "2026-11-27T03:00:00Z", "request": {}})),
            Ok(Event::Scheduled { .. })
        ));
        assert!(matches!(Event::parse(json!({"desired": {}})), Ok(Event::Push(_))));
        assert!(matches!(Event::parse(json!({"startPush": {"desired": {}}})), Ok(Event::StartPush(_))));
        let bad = Event::parse(json!({"startPush": {}, "colour": 1})).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(bad.contains("startPush") && bad.contains("colour"), "{bad}");
        let bad = Event::parse(json!({"continuePush": 5})).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(bad.contains("continuePush"), "{bad}");
    }

    #[test]
    fn a_scheduled_run_gets_a_stable_push_id() {
        let request = json!({"desired": {"a": 1}, "targets": {"things": ["t"]}});
        let one = scheduled_request(request.clone(), "2026-11-27T03:00:00Z").ok();
        let again = scheduled_request(request.clone(), "2026-11-27T03:00:00Z").ok();
        let next = scheduled_request(request, "2026-11-28T03:00:00Z").ok();
        assert_eq!(one.as_ref().map(|r| r["pushId"].clone()), Some(json!("scheduled-2026-11-27T03:00:00Z")));
        assert_eq!(one, again);
        assert_ne!(one, next);
        let named = scheduled_request(json!({"pushId": "nightly"}), "2026-11-27T03:00:00Z").ok();
        assert_eq!(named.map(|r| r["pushId"].clone()), Some(json!("nightly-2026-11-27T03:00:00Z")));
        assert!(scheduled_request(json!([1]), "t").is_err());
    }

    #[test]
    fn control_messages_are_validated() {
        let parsed = |v: Value| Event::parse(v).map_err(|e| e.to_string());
        assert!(matches!(parsed(json!({"pausePush": "p"})), Ok(Event::Control { action: Action::Pause, .. })));
        assert!(matches!(parsed(json!({"resumePush": "p"})), Ok(Event::Control { action: Action::Resume, .. })));
        assert!(matches!(
            parsed(json!({"abortPush": "p", "rollback": true})),
            Ok(Event::Control { action: Action::Abort { rollback: Some(true) }, .. })
        ));
        for (bad, field) in [
            (json!({"pausePush": "p", "rollback": true}), "rollback"),
            (json!({"pausePush": "p", "abortPush": "p"}), "request"),
            (json!({"pausePush": 5}), "pausePush"),
            (json!({"abortPush": ""}), "abortPush"),
            (json!({"abortPush": "p", "colour": 1}), "colour"),
        ] {
            let error = parsed(bad.clone()).err().unwrap_or_default();
            assert!(error.contains(&format!("`{field}`")), "{bad}: {error}");
        }
    }

    /// Every sample in events/push/ is a valid event, and every push request in it a valid request as the function
    /// takes it when invoked directly (`cargo lambda invoke --data-file`, `aws lambda invoke`): with its own
    /// `pushId`, or a scheduled run's.
    #[test]
    fn the_samples_are_valid() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../events/push");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            let value: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{:?}: {e}", entry.path()));
            match Event::parse(value) {
                Ok(Event::Push(request) | Event::StartPush(request)) => {
                    if let Err(e) = validate_request(&request, 400, None) {
                        panic!("{:?}: {e}", entry.path());
                    }
                }
                Ok(Event::Scheduled { run, request }) => {
                    let request =
                        scheduled_request(request, &run).unwrap_or_else(|e| panic!("{:?}: {e}", entry.path()));
                    if let Err(e) = validate_request(&request, 400, None) {
                        panic!("{:?}: {e}", entry.path());
                    }
                }
                Ok(_) => {}
                Err(e) => panic!("{:?}: {e}", entry.path()),
            }
            seen += 1;
        }
        assert!(seen >= 9, "{seen} samples in {dir:?}");
    }
}
