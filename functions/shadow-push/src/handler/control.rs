//! An operator's pause, resume or abort, and the wait for a running segment to carry it out.

use std::time::Duration;

use shadow_core::push::machine::{self, Action, Effect};
use shadow_core::push::quota::Senders;
use shadow_core::push::{HandOff, Journal, PushStore, PushSummary, Registry, Shadows, StoredPush};
use tokio::time::Instant;

use super::error::refusal;
use super::execute::Carrying;
use super::start::Defined;
use super::{PushError, Services};
use crate::config::Config;

/// How long a pause or abort waits for a running segment to carry it out before answering.
const CONTROL_WAIT: Duration = Duration::from_secs(8);

impl<S: Shadows, R: Registry, P: PushStore + Journal + Senders, H: HandOff> Services<S, R, P, H> {
    /// An operator's pause, resume or abort. A pause or abort is left on the record; a push that no live segment
    /// holds has it carried out at once, a running segment notices it within 5 s (at its next renewal), lets its
    /// things in flight finish and records. The answer waits a few seconds for that.
    pub(super) async fn control(
        &self,
        config: &Config,
        push_id: &str,
        action: Action,
        deadline: Instant,
    ) -> Result<PushSummary, PushError> {
        let Some(StoredPush { definition, record }) = self.with_retries(deadline, || self.store.load(push_id)).await?
        else {
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
}
