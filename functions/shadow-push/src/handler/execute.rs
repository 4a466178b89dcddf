//! The effect executor: carries out what the state machine calls for (claims, walks, conditional writes,
//! hand-offs, stalls), feeding each result back to it.

use std::collections::VecDeque;

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
    /// One step of the state machine, at the function's lease timing.
    pub(super) fn step(
        &self,
        config: &Config,
        record: &PushRecord,
        plan: &PushPlan,
        event: machine::Event<'_>,
    ) -> Result<Vec<Effect>, PushError> {
        machine::step(record, plan, event, self.now_ms(), lease_timing(config)).map_err(refusal)
    }

    /// Carries out `effects` in order, feeding each result back to the state machine, until it reports. A
    /// conditional write whose condition fails drops the effects after it: the push moved on elsewhere.
    pub(super) async fn carry(
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
                    if !self.with_retries(deadline, || self.store.claim(&push_id, &claim, self.now_ms())).await? {
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
                    let Some(outcome) = self.run_segment(config, &at, work, &claim, claimed_at, deadline).await? else {
                        // The claim was lost: whoever holds the push now redoes this segment from its cursor;
                        // recording it would count it twice.
                        return self.load_record(&push_id, deadline).await;
                    };
                    let walked = match &outcome {
                        SegmentRunOutcome::Push(out) => machine::Walked::Push(out),
                        SegmentRunOutcome::Judge(out) => machine::Walked::Judge(out),
                        SegmentRunOutcome::Rollback(out) => machine::Walked::Rollback(out),
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
                    self.extend_retention(config, &mut at.record, deadline).await;
                    kept_here = true;
                    self.log_totals(&at.record, at.defined.plan.dry_run);
                    self.step(config, &at.record, &at.defined.plan, machine::Event::Recorded)?
                }
                Effect::CarryOut { control, next } => {
                    let now = self.now_ms();
                    if !self.with_retries(deadline, || self.store.apply_control(&next, control, now)).await? {
                        tracing::info!(push = %push_id, ?control, outcome = "duplicate", "control carried out elsewhere");
                        return self.load_record(&push_id, deadline).await;
                    }
                    tracing::info!(push = %push_id, ?control, state = ?next.status.state, "operator control carried out");
                    at.record = *next;
                    self.extend_retention(config, &mut at.record, deadline).await;
                    kept_here = true;
                    Vec::new()
                }
                Effect::RequestControl(control) => {
                    if !self.with_retries(deadline, || self.store.request_control(&push_id, control)).await? {
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
                    if !self.with_retries(deadline, || self.store.resume(&push_id, to, lease_until)).await? {
                        return self.load_record(&push_id, deadline).await;
                    }
                    tracing::info!(push = %push_id, state = ?to, "push resumed");
                    // Paused is not final: kept as an open push.
                    self.extend_retention(config, &mut at.record, deadline).await;
                    kept_here = true;
                    Vec::new()
                }
                Effect::HandOff { segment, delay_s } => {
                    if let Err(e) =
                        self.with_retries(deadline, || self.hand_off.hand_off(&push_id, segment, delay_s)).await
                    {
                        // The push is released: Lambda's retry of this invocation, or the sweeper after the grace,
                        // wakes it.
                        tracing::warn!(push = %push_id, segment, error = ?e, "hand-off not sent; the sweeper will wake the push");
                    }
                    Vec::new()
                }
                Effect::Unstall(next) => {
                    if !self.with_retries(deadline, || self.store.unstall(&next)).await? {
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
                    if unfollowed && !kept_here && self.retention_walk_to(&at.record).is_some() {
                        self.extend_retention(config, &mut at.record, deadline).await;
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

    /// Writes the record a segment ends with (released). `None`: the claim was lost before it could be written.
    async fn write_segment(
        &self,
        next: &PushRecord,
        claim: &Claim,
        deadline: Instant,
    ) -> Result<Option<PushRecord>, PushError> {
        let push_id = &next.push_id;
        let segment = next.holder.segment;
        if let Some(totals) = self.with_retries(deadline, || self.store.finish_segment(next, &claim.owner)).await? {
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

pub(super) fn lease_timing(config: &Config) -> LeaseTiming {
    LeaseTiming { lease_ms: config.lease_ms, hand_off_grace_ms: config.hand_off_grace_ms }
}
