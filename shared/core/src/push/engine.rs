//! A segment of a push's walk: where it starts and what it reports. The walks themselves are the phase walk
//! ([`super::phase`]), the judge-or-rollback walk over the journal ([`super::journal_walk`]), one thing's protocol
//! ([`super::thing`]) and the pacing of every request ([`super::pace`]).

use super::pace::Pace;
use super::rollout::RollbackCounts;
use super::{Cursor, Failure, Journal, JournalEntry, JournalPage, JournalRef, PushPlan, Source};
use crate::service::ServiceError;

/// What a segment works with, whichever walk it runs: the push's plan and its targets' sources, the services it
/// calls, where the push's journal is, and the pace every request keeps.
pub struct Segment<'a, S, R, J> {
    pub plan: &'a PushPlan,
    /// The targets' sources, as resolved for the push (a phase walk's; a walk over the journal reads the journal).
    pub sources: &'a [Source],
    pub shadows: &'a S,
    /// The registry the sources are listed from (a phase walk's).
    pub registry: &'a R,
    /// Where a rollout's previous values are recorded and read back.
    pub journal: &'a J,
    /// How many shards the push's journal is spread over (the record's `journalShards`).
    pub journal_shards: u32,
    pub pace: &'a Pace,
}

impl<S, R, J> Segment<'_, S, R, J> {
    /// Where the push's journal entries are.
    pub(super) fn journal_at(&self) -> JournalRef<'_> {
        JournalRef::new(&self.plan.push_id, self.journal_shards)
    }
}

/// What happened to one thing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ThingOutcome {
    Updated,
    Unchanged,
    /// A dry run found that the thing would be updated.
    WouldUpdate,
    Failed(Failure),
    /// Out of time (or lease) while the thing was being pushed: the next segment does it again.
    Unfinished,
    /// A rollout's thing of an earlier band that an earlier phase took on already: not counted again.
    TakenEarlier,
    /// A thing met again after a refused page token that holds the pushed values: walked before (or holding them
    /// already when it joined), not counted again.
    MetAgain,
}

/// The counts of one segment, and where the next one starts (`cursor: None` when the push is complete).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SegmentOutcome {
    /// Distinct things this segment took on (things redone from an earlier segment are not counted again).
    pub targets: u64,
    /// Updated, or in a dry run: would be updated.
    pub updated: u64,
    pub unchanged: u64,
    pub failed: u64,
    pub requests: u64,
    pub throttled: u64,
    /// DynamoDB requests refused for throughput while the segment ran (counted by the store, not the engine).
    pub store_throttled: u64,
    pub failures: Vec<Failure>,
    pub cursor: Option<Cursor>,
}

/// Where a segment starts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SegmentStart {
    pub cursor: Cursor,
    /// When the push started (epoch seconds). A thing whose outcome is uncertain (one to redo, whose last request
    /// may have reached the shadow; or any thing of a segment taken over from a holder that died) is read first:
    /// when its shadow holds the pushed values, written since then, this push updated it, and it is counted as
    /// updated without a second update.
    pub written_since: u64,
    /// This segment takes over one whose holder died: every thing it walks is uncertain.
    pub takeover: bool,
    /// A rollout's phase (0-based): the things of its band are pushed, and each thing's previous values are
    /// recorded before it is updated. A thing of an earlier band that no earlier phase took on (it joined the
    /// targets since) is pushed too, and judged with this phase.
    pub phase: Option<usize>,
    /// When recorded previous values expire (epoch s): with the push's other items.
    pub expires_at: u64,
}

/// A journal for pushes without a rollout: nothing is recorded, nothing read back.
pub struct NoJournal;

impl Journal for NoJournal {
    async fn record_previous(&self, _: JournalRef<'_>, _: u64, _: &JournalEntry) -> Result<(), ServiceError> {
        Ok(())
    }
    async fn previous_page(
        &self,
        _: JournalRef<'_>,
        _: Option<u32>,
        _: Option<&str>,
    ) -> Result<JournalPage, ServiceError> {
        Ok(JournalPage::default())
    }
    async fn previous(&self, _: JournalRef<'_>, _: &str) -> Result<Option<JournalEntry>, ServiceError> {
        Ok(None)
    }
}

/// The counts of a judging or rollback segment, and where the next one starts (`None`: the walk is done).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JournalOutcome {
    pub converged: u64,
    pub pending: u64,
    /// Judging: recorded things whose `reported` does not hold the pushed values and whose `desired` no longer does
    /// either (the device or another writer put its own back, or the update failed), or whose shadow is gone.
    pub refused: u64,
    /// Judging: journal entries whose thing name cannot be read: not judged.
    pub not_judged: u64,
    pub rollback: RollbackCounts,
    /// Rollback: things changed since by someone else, left alone; and things that could not be put back.
    pub conflicts: Vec<Failure>,
    pub failures: Vec<Failure>,
    pub requests: u64,
    pub throttled: u64,
    /// DynamoDB requests refused for throughput while the segment ran (counted by the store, not the engine).
    pub store_throttled: u64,
    pub cursor: Option<Cursor>,
}
