//! An operator's pause, resume or abort, and the wait for a running segment to carry it out.

use shadow_core::push::machine::{self, Action};
use shadow_core::push::quota::Senders;
use shadow_core::push::{HandOff, Journal, PushStore, PushSummary, Registry, Shadows, StoredPush};
use tokio::time::Instant;

use super::error::refusal;
use super::execute::Carrying;
use super::start::Defined;
use super::{PushError, Services};
use crate::config::Config;

impl<S: Shadows, R: Registry, P: PushStore + Journal + Senders, H: HandOff> Services<S, R, P, H> {
    /// An operator's pause, resume or abort. A pause or abort is left on the record; a push that no live segment
    /// holds has it carried out at once, a running segment notices it within 5 s (at its next renewal), lets its
    /// things in flight finish and records. The answer polls the record for that, as the state machine says
    /// ([`machine::CONTROL_WAIT_MS`]).
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
        let effects = self.step(config, &record, plan, machine::Event::Control(action))?;
        let carrying = Carrying { record, defined: &defined, claim: None };
        let record = self.carry(config, carrying, effects, deadline).await?.record;
        self.summary(&record, plan, deadline).await
    }
}
