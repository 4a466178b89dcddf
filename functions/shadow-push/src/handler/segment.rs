//! The segment runner: one claimed segment walked from the record's cursor (a phase pushed, judged or rolled back)
//! beside its heartbeat, and what it did recorded in the journal and the metrics.

use std::time::Duration;

use shadow_core::push::lifecycle::Run;
use shadow_core::push::quota::{self, Quota, Rates, Sender, Senders};
use shadow_core::push::{
    Claim, HandOff, Journal, JudgeOrRollback, Pace, PushStore, Registry, Segment, SegmentOutcome, SegmentStart,
    Shadows, run_journal_segment, run_phase_segment,
};
use shadow_runtime::metrics::{Counters, Emitter, push};
use tokio::time::Instant;

use super::board::log_share;
use super::execute::{Carrying, lease_timing};
use super::renewal::Renewal;
use super::{PushError, Services};
use crate::config::Config;

const PROGRESS_EVERY: Duration = Duration::from_secs(5);

impl<S: Shadows, R: Registry, P: PushStore + Journal + Senders, H: HandOff> Services<S, R, P, H> {
    /// Walks one claimed segment (`claimed`: the claim, and when it was asked for) from the record's cursor (pushing
    /// a phase, judging it, or rolling back; `uncertain`: after a takeover, every thing walked is checked before it
    /// is updated), renewing its claim as it goes; records its failures and conflicts. `None`: the claim was lost.
    pub(super) async fn run_segment(
        &self,
        config: &Config,
        at: &Carrying<'_>,
        (run, uncertain): (Run, bool),
        (claim, claimed_at): (&Claim, Instant),
        deadline: Instant,
    ) -> Result<Option<SegmentRunOutcome>, PushError> {
        let (record, plan) = (&at.record, &at.defined.plan);
        let push_id = record.push_id.clone();
        let segment = claim.segment;
        let timing = lease_timing(config);
        let remaining = deadline.saturating_duration_since(Instant::now());
        let hand_off_margin = (remaining / 5).clamp(Duration::from_millis(500), Duration::from_secs(20));
        let reserve = (remaining / 10).clamp(Duration::from_millis(300), Duration::from_secs(5));
        let lease_ms = Duration::from_millis(timing.lease_ms);
        let read_rate = scaled(config.read_tps, plan.max_requests_per_second, config.max_tps);
        let pace = Pace::new(plan.max_requests_per_second, config.concurrency, deadline, hand_off_margin, reserve)
            .with_read_rate(read_rate)
            .with_lease(claimed_at + lease_ms, lease_ms / 3);
        // The claim's write, the store's first latency: the reserve for the record write follows it.
        pace.observe(claimed_at.elapsed());
        let cursor = record.status.cursor.clone().unwrap_or_default();
        // The account's quotas are shared with the other pushes sending now: this segment's share, from the board.
        let quota = Quota::new(config.max_tps, config.read_tps, config.headroom_percent);
        let caps = Rates::of(plan, &run, read_rate);
        let mut sender = Sender {
            push_id: push_id.clone(),
            owner: claim.owner.clone(),
            until_ms: claim.lease_until_ms,
            caps,
            // All it may take, until it has taken its share: a push that reads the board meanwhile counts it so.
            pace: quota.provisional(caps),
        };
        let provisional_until = self.now_ms() + timing.renew_every_ms();
        let share = match self.first_share(quota, &mut sender, provisional_until).await {
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
            match run {
                Run::Push { phase } => {
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
                    SegmentRunOutcome::Push(out)
                }
                Run::Judge { phase } => SegmentRunOutcome::Judge(
                    run_journal_segment(&context, JudgeOrRollback::Judge { phase }, cursor, uncertain).await,
                ),
                Run::Rollback => SegmentRunOutcome::Rollback(
                    run_journal_segment(&context, JudgeOrRollback::Rollback, cursor, uncertain).await,
                ),
            }
        };
        let renewal = Renewal {
            push_id: &push_id,
            segment,
            owner: &claim.owner,
            timing,
            quota,
            sends,
            pace: &pace,
            sender,
            share,
        };
        let heartbeat = self.heartbeat(renewal);
        tokio::pin!(segment_run);
        // Biased: polled in this order, not at random, so that a simulation's seed replays the same run.
        let mut outcome = tokio::select! {
            biased;
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
            SegmentRunOutcome::Push(out) => {
                self.with_retries(deadline, || self.store.add_failures(at, expires_at, &out.failures)).await?;
                counters.add(push::UPDATED, out.updated);
                counters.add(push::UNCHANGED, out.unchanged);
                counters.add(push::FAILED, out.failed);
                counters.add(push::THROTTLED, out.throttled);
            }
            SegmentRunOutcome::Judge(out) => {
                counters.add(push::CONVERGED, out.converged);
                counters.add(push::PENDING, out.pending);
                counters.add(push::THROTTLED, out.throttled);
            }
            SegmentRunOutcome::Rollback(out) => {
                self.with_retries(deadline, || self.store.add_conflicts(at, expires_at, &out.conflicts)).await?;
                self.with_retries(deadline, || self.store.add_failures(at, expires_at, &out.failures)).await?;
                counters.add(push::THROTTLED, out.throttled);
            }
        }
        // DynamoDB's refusals while the segment ran (its journal writes and reads, failures, renewals): retried,
        // and counted apart from the shadow requests' 429s.
        let store_throttled = self.store.throttled().saturating_sub(store_throttled);
        match &mut outcome {
            SegmentRunOutcome::Push(out) => out.store_throttled = store_throttled,
            SegmentRunOutcome::Judge(out) | SegmentRunOutcome::Rollback(out) => out.store_throttled = store_throttled,
        }
        if store_throttled > 0 {
            tracing::warn!(push = %push_id, segment, store_throttled, "DynamoDB throttled requests of the segment");
        }
        counters.add(push::STORE_THROTTLED, store_throttled);
        counters.emit();
        Ok(Some(outcome))
    }
}

/// What a segment did.
pub(super) enum SegmentRunOutcome {
    Push(SegmentOutcome),
    Judge(shadow_core::push::JournalOutcome),
    Rollback(shadow_core::push::JournalOutcome),
}

/// Reads go at the share of their own quota that the push's update rate is of the update quota.
fn scaled(read_tps: u32, rate: u32, max_tps: u32) -> u32 {
    ((u64::from(read_tps) * u64::from(rate)).div_ceil(u64::from(max_tps.max(1)))).max(1) as u32
}
