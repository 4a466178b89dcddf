//! The sweeper's round: wakes every push whose lease ran out.

use serde_json::{Value, json};
use shadow_core::push::machine;
use shadow_core::push::quota::Senders;
use shadow_core::push::{HandOff, Journal, PushStore, Registry, Shadows, StoredPush};
use shadow_runtime::metrics::{Counters, Emitter, push};
use tokio::time::Instant;

use super::execute::Carrying;
use super::start::Defined;
use super::{PushError, Services};
use crate::config::Config;

/// Stale pushes one sweep wakes at most.
const SWEEP_LIMIT: usize = 100;

impl<S: Shadows, R: Registry, P: PushStore + Journal + Senders, H: HandOff> Services<S, R, P, H> {
    /// Wakes every push whose lease ran out: a segment that died, or a hand-off that was never picked up.
    pub(super) async fn sweep(&self, config: &Config, deadline: Instant) -> Result<Value, PushError> {
        let now = self.now_ms();
        let stale = self.with_retries(deadline, || self.store.stale(now, SWEEP_LIMIT)).await?;
        let mut woken = Vec::new();
        for push_id in stale {
            let Some(StoredPush { definition, record }) =
                self.with_retries(deadline, || self.store.load(&push_id)).await?
            else {
                continue;
            };
            let defined = Defined::of(definition)?;
            let effects = self.step(config, &record, &defined.plan, machine::Event::Swept)?;
            let carried =
                self.carry(config, Carrying { record, defined: &defined, claim: None }, effects, deadline).await?;
            if carried.woke {
                woken.push(push_id.clone());
            }
        }
        let mut counters = Counters::new(Emitter::Push, &[push::WOKEN]);
        counters.add(push::WOKEN, woken.len() as u64);
        counters.emit();
        Ok(json!({"woken": woken}))
    }
}
