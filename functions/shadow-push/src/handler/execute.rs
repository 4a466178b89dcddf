//! The effect executor: carries out what the state machine calls for (claims, walks, conditional writes,
//! hand-offs, stalls), feeding each result back to it.

use std::collections::VecDeque;
use std::time::Duration;

use shadow_core::push::lifecycle::LeaseTiming;
use shadow_core::push::machine::{self, Effect};
use shadow_core::push::quota::Senders;
use shadow_core::push::{Claim, HandOff, Journal, PushPlan, PushRecord, PushStore, Registry, Shadows};
use shadow_runtime::metrics::{Counters, Emitter, push};
use tokio::time::Instant;

use super::error::refusal;
use super::segment::SegmentRunOutcome;
use super::start::Defined;
use super::{PushError, Services};
use crate::config::Config;

impl<S: Shadows, R: Registry, P: PushStore + Journal + Senders, H: HandOff> Services<S, R, P, H> {
    /// One step of the state machine, at the function's lease timing and the store's retention.
    pub(super) fn step(
        &self,
        config: &Config,
        record: &PushRecord,
        plan: &PushPlan,
        event: machine::Event<'_>,
    ) -> Result<Vec<Effect>, PushError> {
        let at = machine::Context {
            now_ms: self.now_ms(),
            timing: lease_timing(config),
            retention_s: self.store.retention_s(),
        };
        machine::step(record, plan, event, at).map_err(refusal)
    }

    /// Carries out `effects` in order, feeding each result back to the state machine, until it reports. A
    /// conditional write whose condition fails drops the effects after it: the push moved on elsewhere (a record
    /// write or a control request then feeds the record as it stands back to the machine). The loop branches on
    /// effects and on what the services answered, never on the record's state: that is the machine's.
    pub(super) async fn carry(
        &self,
        config: &Config,
        mut at: Carrying<'_>,
        effects: Vec<Effect>,
        deadline: Instant,
    ) -> Result<Carried, PushError> {
        let mut queue: VecDeque<Effect> = effects.into();
        let push_id = at.record.push_id.clone();
        let mut woke = false;
        // When the first poll of a control request's answer began.
        let mut polling_since: Option<Instant> = None;
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
                    if !self.with_retries(deadline, || self.store.claim(&push_id, &claim, self.now_ms())).await? {
                        tracing::info!(push = %push_id, segment, outcome = "duplicate", "segment claimed by another invocation");
                        break;
                    }
                    if takeover {
                        tracing::warn!(push = %push_id, segment, outcome = "takeover", "segment taken over from a holder that died");
                    } else {
                        tracing::info!(push = %push_id, segment, "push continued");
                    }
                    at.claim = Some((claim, asked));
                    self.step(config, &at.record, &at.defined.plan, machine::Event::Claimed { segment, takeover })?
                }
                Effect::Run { run, uncertain } => {
                    let Some((claim, claimed_at)) = at.claim.clone() else {
                        return Err(PushError::InvalidEvent(format!("push {push_id}: a run without a claim")));
                    };
                    let Some(outcome) =
                        self.run_segment(config, &at, (run, uncertain), (&claim, claimed_at), deadline).await?
                    else {
                        // The claim was lost: whoever holds the push now redoes this segment from its cursor;
                        // recording it would count it twice.
                        break;
                    };
                    let ran = match &outcome {
                        SegmentRunOutcome::Push(out) => machine::Ran::Push(out),
                        SegmentRunOutcome::Judge(out) => machine::Ran::Judge(out),
                        SegmentRunOutcome::Rollback(out) => machine::Ran::Rollback(out),
                    };
                    let event = machine::Event::Ended { segment: claim.segment, takeover: claim.takeover, ran };
                    self.step(config, &at.record, &at.defined.plan, event)?
                }
                Effect::Record(next) => {
                    let Some((claim, _)) = at.claim.take() else {
                        return Err(PushError::InvalidEvent(format!("push {push_id}: a record without a claim")));
                    };
                    tracing::info!(
                        push = %push_id,
                        segment = next.holder.segment,
                        from = ?at.record.status.state,
                        to = ?next.status.state,
                        phase = next.status.phase,
                        abort_reason = next.status.abort_reason.as_deref().unwrap_or("-"),
                        "push state"
                    );
                    let written =
                        self.with_retries(deadline, || self.store.finish_segment(&next, &claim.owner)).await?;
                    let event = match written {
                        Some(totals) => {
                            at.record = totals;
                            self.log_totals(&at.record, at.defined.plan.dry_run);
                            machine::Event::Recorded
                        }
                        // The condition failed: an earlier attempt of this very write took effect and its answer was
                        // lost, or the claim was lost. The record as it stands tells which.
                        None => {
                            at.record = self.load_record(&push_id, deadline).await?;
                            machine::Event::NotRecorded { segment: next.holder.segment, owner: &claim.owner }
                        }
                    };
                    self.step(config, &at.record, &at.defined.plan, event)?
                }
                Effect::CarryOut { control, next } => {
                    let now = self.now_ms();
                    if !self.with_retries(deadline, || self.store.apply_control(&next, control, now)).await? {
                        tracing::info!(push = %push_id, ?control, outcome = "duplicate", "control carried out elsewhere");
                        break;
                    }
                    tracing::info!(push = %push_id, ?control, state = ?next.status.state, "operator control carried out");
                    at.record = *next;
                    Vec::new()
                }
                Effect::RequestControl(control) => {
                    if self.with_retries(deadline, || self.store.request_control(&push_id, control)).await? {
                        tracing::info!(push = %push_id, ?control, "operator control requested");
                        Vec::new()
                    } else {
                        at.record = self.load_record(&push_id, deadline).await?;
                        let event = machine::Event::NotRequested(control);
                        self.step(config, &at.record, &at.defined.plan, event)?
                    }
                }
                Effect::Resume { to, lease_until } => {
                    if !self.with_retries(deadline, || self.store.resume(&push_id, to, lease_until)).await? {
                        break;
                    }
                    tracing::info!(push = %push_id, state = ?to, "push resumed");
                    Vec::new()
                }
                Effect::HandOff { segment, delay_s } => {
                    self.send_hand_off(&push_id, segment, delay_s, deadline).await;
                    Vec::new()
                }
                Effect::Wake { segment } => {
                    tracing::warn!(push = %push_id, segment, outcome = "woken", "push woken through the queue");
                    self.send_hand_off(&push_id, segment, 0, deadline).await;
                    woke = true;
                    Vec::new()
                }
                Effect::Extend { open } => match self.extend_retention(config, &at.record, open, deadline).await {
                    Some(kept) => {
                        at.record.kept = kept;
                        self.step(config, &at.record, &at.defined.plan, machine::Event::Extended)?
                    }
                    None => Vec::new(),
                },
                Effect::Poll { after_ms } => {
                    let since = *polling_since.get_or_insert_with(Instant::now);
                    tokio::time::sleep(Duration::from_millis(after_ms)).await;
                    at.record = self.load_record(&push_id, deadline).await?;
                    let waited_ms = u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX);
                    self.step(config, &at.record, &at.defined.plan, machine::Event::Polled { waited_ms })?
                }
                Effect::Unstall(next) => {
                    if !self.with_retries(deadline, || self.store.unstall(&next)).await? {
                        break;
                    }
                    tracing::info!(push = %push_id, segment = next.holder.segment, "stalled push resumed");
                    at.record = *next;
                    Vec::new()
                }
                Effect::Stall { segment, reason } => {
                    self.stall(&push_id, segment, &reason, deadline).await?;
                    Vec::new()
                }
                Effect::Report(report) => {
                    tracing::info!(push = %push_id, ?report, state = ?at.record.status.state, "push reported");
                    break;
                }
            };
            for effect in next.into_iter().rev() {
                queue.push_front(effect);
            }
        }
        Ok(Carried { record: self.load_record(&push_id, deadline).await?, woke })
    }

    /// Sends the message that wakes `segment` after `delay_s`. Not sent (the queue failing past the deadline): the
    /// push is released, and Lambda's retry of this invocation, or the sweeper after the grace, wakes it.
    async fn send_hand_off(&self, push_id: &str, segment: u64, delay_s: u32, deadline: Instant) {
        if let Err(e) = self.with_retries(deadline, || self.hand_off.hand_off(push_id, segment, delay_s)).await {
            tracing::warn!(push = %push_id, segment, error = ?e, "hand-off not sent; the sweeper will wake the push");
        }
    }

    /// Marks a push that cannot go on as stalled: it leaves the sweeper's index, and the `stalled` metric alarms.
    async fn stall(&self, push_id: &str, segment: u64, reason: &str, deadline: Instant) -> Result<(), PushError> {
        self.with_retries(deadline, || self.store.stall(push_id, segment, reason)).await?;
        let mut counters = Counters::new(Emitter::Push, &[push::STALLED]);
        counters.add(push::STALLED, 1);
        counters.emit();
        tracing::error!(push = %push_id, reason = %reason, outcome = "stalled", "push stalled");
        Ok(())
    }
}

/// Where an arrival stands while it carries out effects: the record as last read or written, what the push is, and
/// the claim it holds (with when it was asked for).
pub(super) struct Carrying<'a> {
    pub(super) record: PushRecord,
    pub(super) defined: &'a Defined,
    pub(super) claim: Option<(Claim, Instant)>,
}

/// What carrying effects out left: the record as it stands after them, and whether a wake-up was sent.
pub(super) struct Carried {
    pub(super) record: PushRecord,
    pub(super) woke: bool,
}

pub(super) fn lease_timing(config: &Config) -> LeaseTiming {
    LeaseTiming { lease_ms: config.lease_ms, hand_off_grace_ms: config.hand_off_grace_ms }
}
