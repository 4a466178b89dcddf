//! A witness in front of the push store: every store call passes through to the store unchanged, and every write
//! that took effect is noted with the invocation that made it (claims, renewals, releases, controls, resumes,
//! stalls), for the invariants to read; a write whose answer was lost (an injected timeout) is noted too, from the
//! store's own log of writes that took effect.

use std::sync::{Arc, Mutex};

use shadow_core::push::quota::{Sender, Senders};
use shadow_core::push::retention::Kept;
use shadow_core::push::{
    Claim, Control, Failure, Journal, JournalEntry, JournalPage, JournalRef, PushDefinition, PushLists, PushRecord,
    PushRecords, PushState, PushStore, Retention, StoredPush,
};
use shadow_core::service::ServiceError;

use crate::store::{MemoryStore, Op};
use crate::trace::{Trace, invocation};

/// What the witness asks of the store beyond its ports: a push's record now, read outside any invocation (no fault
/// injected, nothing logged), and whether a write took effect although its caller got an error.
pub trait Peek {
    fn peek(&self, push_id: &str) -> Option<PushRecord>;
    /// How many writes took effect so far.
    fn effects(&self) -> usize;
    /// Whether a write `op` of `push_id` took effect after the first `since`.
    fn took_effect(&self, since: usize, op: Op, push_id: &str) -> bool;
}

impl Peek for MemoryStore {
    fn peek(&self, push_id: &str) -> Option<PushRecord> {
        MemoryStore::peek(self, push_id)
    }

    fn effects(&self) -> usize {
        self.writes().len()
    }

    fn took_effect(&self, since: usize, op: Op, push_id: &str) -> bool {
        self.writes().iter().skip(since).any(|w| w.op == op && w.push_id == push_id)
    }
}

/// A store write that took effect.
#[derive(Debug, Clone, PartialEq)]
pub enum Noted {
    /// A push created with its first segment claimed (or queued, `owner` empty).
    Created {
        push_id: String,
        owner: String,
        lease_until_ms: u64,
        state: PushState,
    },
    Claimed {
        push_id: String,
        segment: u64,
        owner: String,
        lease_until_ms: u64,
        takeover: bool,
    },
    Renewed {
        push_id: String,
        owner: String,
        lease_until_ms: u64,
        control: Option<Control>,
    },
    /// A segment recorded and released.
    Released {
        push_id: String,
        owner: String,
        segment: u64,
        state: PushState,
        recheck: bool,
        /// The source the next segment starts from (`None`: the first, at the start of a phase).
        next_source: Option<usize>,
    },
    ControlRequested {
        push_id: String,
        control: Control,
    },
    ControlApplied {
        push_id: String,
        control: Control,
        state: PushState,
    },
    Resumed {
        push_id: String,
        state: PushState,
    },
    Stalled {
        push_id: String,
        segment: u64,
    },
    Unstalled {
        push_id: String,
        state: PushState,
    },
    /// A journal entry recorded: what a thing held before the push updated it.
    Journaled {
        push_id: String,
        thing: String,
    },
}

impl Noted {
    pub fn push_id(&self) -> &str {
        match self {
            Noted::Created { push_id, .. }
            | Noted::Claimed { push_id, .. }
            | Noted::Renewed { push_id, .. }
            | Noted::Released { push_id, .. }
            | Noted::ControlRequested { push_id, .. }
            | Noted::ControlApplied { push_id, .. }
            | Noted::Resumed { push_id, .. }
            | Noted::Stalled { push_id, .. }
            | Noted::Unstalled { push_id, .. }
            | Noted::Journaled { push_id, .. } => push_id,
        }
    }

    /// The push's state after this write, when the write sets it.
    pub fn state(&self) -> Option<PushState> {
        match self {
            Noted::Created { state, .. }
            | Noted::Released { state, .. }
            | Noted::ControlApplied { state, .. }
            | Noted::Resumed { state, .. }
            | Noted::Unstalled { state, .. } => Some(*state),
            _ => None,
        }
    }
}

/// One noted write: when (ms since the world began, and epoch ms), by which invocation.
#[derive(Debug, Clone, PartialEq)]
pub struct Note {
    pub at_ms: u64,
    pub epoch_ms: u64,
    pub invocation: u64,
    pub what: Noted,
}

/// The store, witnessed.
pub struct Witness<P> {
    pub store: P,
    notes: Arc<Mutex<Vec<Note>>>,
    trace: Trace,
}

impl<P: Peek> Witness<P> {
    /// Whether a call answered `result` took effect: `ok` says it from the answer; after an error, the store's log.
    fn took<T>(
        &self,
        result: &Result<T, ServiceError>,
        ok: impl FnOnce(&T) -> bool,
        since: usize,
        op: Op,
        push_id: &str,
    ) -> bool {
        match result {
            Ok(v) => ok(v),
            Err(_) => self.store.took_effect(since, op, push_id),
        }
    }

    pub fn new(store: P, trace: Trace) -> Self {
        Self { store, notes: Arc::default(), trace }
    }

    /// A handle on the notes, to read while the world runs.
    pub fn notes(&self) -> Arc<Mutex<Vec<Note>>> {
        self.notes.clone()
    }

    fn note_if(&self, took: bool, what: impl FnOnce() -> Noted) {
        if took {
            self.note(what());
        }
    }

    fn note(&self, what: Noted) {
        let note =
            Note { at_ms: self.trace.now(), epoch_ms: self.trace.epoch_now_ms(), invocation: invocation(), what };
        self.trace.line(format!("store: {:?} (invocation {})", note.what, note.invocation));
        if let Ok(mut notes) = self.notes.lock() {
            notes.push(note);
        }
    }
}

impl<P: PushStore + Peek + Send> PushRecords for Witness<P> {
    async fn create(&self, definition: &PushDefinition, record: &PushRecord) -> Result<bool, ServiceError> {
        let since = self.store.effects();
        let created = self.store.create(definition, record).await;
        self.note_if(self.took(&created, |c| *c, since, Op::Create, &record.push_id), || Noted::Created {
            push_id: record.push_id.clone(),
            owner: record.holder.owner.clone(),
            lease_until_ms: record.holder.lease_until,
            state: record.status.state,
        });
        created
    }

    async fn load(&self, push_id: &str) -> Result<Option<StoredPush>, ServiceError> {
        self.store.load(push_id).await
    }

    async fn load_record(&self, push_id: &str) -> Result<Option<PushRecord>, ServiceError> {
        self.store.load_record(push_id).await
    }

    async fn claim(&self, push_id: &str, claim: &Claim, now_ms: u64) -> Result<bool, ServiceError> {
        let since = self.store.effects();
        let claimed = self.store.claim(push_id, claim, now_ms).await;
        self.note_if(self.took(&claimed, |c| *c, since, Op::Claim, push_id), || Noted::Claimed {
            push_id: push_id.to_owned(),
            segment: claim.segment,
            owner: claim.owner.clone(),
            lease_until_ms: claim.lease_until_ms,
            takeover: claim.takeover,
        });
        claimed
    }

    async fn renew(
        &self,
        push_id: &str,
        segment: u64,
        owner: &str,
        lease_until_ms: u64,
    ) -> Result<Option<Option<Control>>, ServiceError> {
        let since = self.store.effects();
        let renewed = self.store.renew(push_id, segment, owner, lease_until_ms).await;
        self.note_if(self.took(&renewed, Option::is_some, since, Op::Renew, push_id), || Noted::Renewed {
            push_id: push_id.to_owned(),
            owner: owner.to_owned(),
            lease_until_ms,
            control: renewed.as_ref().ok().copied().flatten().flatten(),
        });
        renewed
    }

    async fn finish_segment(&self, next: &PushRecord, owner: &str) -> Result<Option<PushRecord>, ServiceError> {
        let since = self.store.effects();
        let written = self.store.finish_segment(next, owner).await;
        let took = self.took(&written, Option::is_some, since, Op::FinishSegment, &next.push_id);
        let record = written.as_ref().ok().cloned().flatten().unwrap_or_else(|| next.clone());
        self.note_if(took, || Noted::Released {
            push_id: next.push_id.clone(),
            owner: owner.to_owned(),
            segment: next.holder.segment,
            state: record.status.state,
            recheck: record.status.recheck,
            next_source: record.status.cursor.as_ref().map(|c| c.source),
        });
        written
    }

    async fn request_control(&self, push_id: &str, control: Control) -> Result<bool, ServiceError> {
        let since = self.store.effects();
        let requested = self.store.request_control(push_id, control).await;
        self.note_if(self.took(&requested, |r| *r, since, Op::RequestControl, push_id), || Noted::ControlRequested {
            push_id: push_id.to_owned(),
            control,
        });
        requested
    }

    async fn apply_control(&self, next: &PushRecord, control: Control, now_ms: u64) -> Result<bool, ServiceError> {
        let since = self.store.effects();
        let applied = self.store.apply_control(next, control, now_ms).await;
        self.note_if(self.took(&applied, |a| *a, since, Op::ApplyControl, &next.push_id), || Noted::ControlApplied {
            push_id: next.push_id.clone(),
            control,
            state: next.status.state,
        });
        applied
    }

    async fn resume(&self, push_id: &str, state: PushState, lease_until_ms: u64) -> Result<bool, ServiceError> {
        let since = self.store.effects();
        let resumed = self.store.resume(push_id, state, lease_until_ms).await;
        self.note_if(self.took(&resumed, |r| *r, since, Op::Resume, push_id), || Noted::Resumed {
            push_id: push_id.to_owned(),
            state,
        });
        resumed
    }

    async fn stall(&self, push_id: &str, segment: u64, reason: &str) -> Result<(), ServiceError> {
        let since = self.store.effects();
        let stalled = self.store.stall(push_id, segment, reason).await;
        self.note_if(self.took(&stalled, |()| true, since, Op::Stall, push_id), || Noted::Stalled {
            push_id: push_id.to_owned(),
            segment,
        });
        stalled
    }

    async fn unstall(&self, next: &PushRecord) -> Result<bool, ServiceError> {
        let since = self.store.effects();
        let unstalled = self.store.unstall(next).await;
        self.note_if(self.took(&unstalled, |u| *u, since, Op::Unstall, &next.push_id), || Noted::Unstalled {
            push_id: next.push_id.clone(),
            state: next.status.state,
        });
        unstalled
    }

    async fn stale(&self, now_ms: u64, limit: usize) -> Result<Vec<String>, ServiceError> {
        self.store.stale(now_ms, limit).await
    }

    fn throttled(&self) -> u64 {
        self.store.throttled()
    }
}

impl<P: PushStore + Peek + Send> PushLists for Witness<P> {
    async fn add_failures(
        &self,
        at: JournalRef<'_>,
        expires_at: u64,
        failures: &[Failure],
    ) -> Result<(), ServiceError> {
        self.store.add_failures(at, expires_at, failures).await
    }

    async fn failures(&self, at: JournalRef<'_>, limit: usize) -> Result<Vec<Failure>, ServiceError> {
        self.store.failures(at, limit).await
    }

    async fn add_conflicts(
        &self,
        at: JournalRef<'_>,
        expires_at: u64,
        conflicts: &[Failure],
    ) -> Result<(), ServiceError> {
        self.store.add_conflicts(at, expires_at, conflicts).await
    }

    async fn conflicts(&self, at: JournalRef<'_>, limit: usize) -> Result<Vec<Failure>, ServiceError> {
        self.store.conflicts(at, limit).await
    }
}

impl<P: PushStore + Peek + Send> Retention for Witness<P> {
    fn retention_s(&self) -> Option<u64> {
        self.store.retention_s()
    }

    async fn extend_within(
        &self,
        record: &PushRecord,
        now_s: u64,
        open: bool,
        partition_wps: u32,
        within: Option<std::time::Duration>,
    ) -> Result<Kept, ServiceError> {
        self.store.extend_within(record, now_s, open, partition_wps, within).await
    }

    async fn extend(
        &self,
        record: &PushRecord,
        now_s: u64,
        open: bool,
        partition_wps: u32,
    ) -> Result<Kept, ServiceError> {
        self.store.extend(record, now_s, open, partition_wps).await
    }
}

impl<P: Journal + Peek + Send> Journal for Witness<P> {
    async fn record_previous(
        &self,
        at: JournalRef<'_>,
        expires_at: u64,
        entry: &JournalEntry,
    ) -> Result<(), ServiceError> {
        let since = self.store.effects();
        let recorded = self.store.record_previous(at, expires_at, entry).await;
        self.note_if(self.took(&recorded, |_| true, since, Op::RecordPrevious, at.push_id), || Noted::Journaled {
            push_id: at.push_id.to_owned(),
            thing: entry.thing_name.clone(),
        });
        recorded
    }

    async fn previous_page(
        &self,
        at: JournalRef<'_>,
        phase: Option<u32>,
        after: Option<&str>,
    ) -> Result<JournalPage, ServiceError> {
        self.store.previous_page(at, phase, after).await
    }

    async fn previous(&self, at: JournalRef<'_>, key: &str) -> Result<Option<JournalEntry>, ServiceError> {
        self.store.previous(at, key).await
    }
}

impl<P: Senders + Peek + Send> Senders for Witness<P> {
    async fn announce(&self, sender: &Sender) -> Result<(), ServiceError> {
        self.store.announce(sender).await
    }

    async fn senders(&self) -> Result<Vec<Sender>, ServiceError> {
        self.store.senders().await
    }

    async fn withdraw(&self, push_id: &str, owner: &str) -> Result<(), ServiceError> {
        self.store.withdraw(push_id, owner).await
    }
}
