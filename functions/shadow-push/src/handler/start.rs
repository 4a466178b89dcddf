//! A new push (run here, or queued with an answer at once), the same push id again, and the arrivals that wake a
//! recorded push.

use std::time::Duration;

use serde_json::Value;
use shadow_core::push::lifecycle;
use shadow_core::push::machine;
use shadow_core::push::quota::Senders;
use shadow_core::push::retention::Kept;
use shadow_core::push::{
    Claim, HandOff, Journal, PushDefinition, PushPlan, PushRecord, PushRequestError, PushStore, PushSummary, Registry,
    Shadows, Source, StoredPush, check_sources, journal, sources_for, validate_request,
};
use shadow_core::retry::{Backoff, GaveUp, retry_until};
use shadow_core::service::ServiceError;
use tokio::time::Instant;

use super::execute::{Carrying, lease_timing};
use super::{PushError, Services, to_json};
use crate::config::Config;

impl<S: Shadows, R: Registry, P: PushStore + Journal + Senders, H: HandOff> Services<S, R, P, H> {
    pub(super) async fn start(
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
            Begin::Queued => lifecycle::queued_record(&plan, started_at, lease_timing(config)),
        };
        // Decided once: every segment, reader and rollback of the push finds its journal in these shards.
        record.journal_shards = journal::shards_for(&plan, config.partition_wps);
        if let Some(retention) = self.store.retention_s() {
            record.kept = Kept::at_creation(started_at, retention);
        }
        if self.with_retries(deadline, || self.store.create(&definition, &record)).await? {
            tracing::info!(push = %plan.push_id, sources = definition.sources.len(), dry_run = plan.dry_run, ?begin, "push started");
            let defined = Defined { plan, sources: definition.sources };
            return match begin {
                Begin::Here => {
                    let claim = Claim { segment: 1, owner, lease_until_ms: lease_until, takeover: false };
                    self.run_first_segment(config, &defined, record, claim, asked, deadline).await
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

    pub(super) async fn wake(
        &self,
        config: &Config,
        push_id: &str,
        deadline: Instant,
    ) -> Result<PushSummary, PushError> {
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
        let record = self.carry(config, Carrying { record, defined, claim: None }, effects, deadline).await?.record;
        self.summary(&record, &defined.plan, deadline).await
    }

    /// Runs the first segment of a push just created (the creation is its claim).
    async fn run_first_segment(
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
        let record = self.carry(config, carrying, effects, deadline).await?.record;
        self.summary(&record, &defined.plan, deadline).await
    }
}

/// Where a new push's first segment runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Begin {
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

/// What a push is, as an arrival works from it: its plan and the sources it walks. Read once per arrival; the
/// record is reread alone.
pub(super) struct Defined {
    pub(super) plan: PushPlan,
    pub(super) sources: Vec<Source>,
}

impl Defined {
    /// The plan a push was started with, from its definition.
    pub(super) fn of(definition: PushDefinition) -> Result<Self, PushError> {
        Ok(Self { plan: definition.plan().map_err(PushError::InvalidEvent)?, sources: definition.sources })
    }
}
