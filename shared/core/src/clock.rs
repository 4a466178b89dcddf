//! The wall clock the push's records are written in (epoch milliseconds): the system's, or a simulated one that
//! follows tokio's clock from a chosen epoch, so that a simulation on tokio's paused time sees leases run out.

use tokio::time::Instant;

/// Epoch milliseconds now.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// `None`: the system's clock. `Some((epoch_ms, at))`: `epoch_ms` at tokio's instant `at`.
    simulated: Option<(u64, Instant)>,
}

impl Clock {
    /// The system's clock.
    pub fn system() -> Self {
        Self { simulated: None }
    }

    /// A clock that reads `epoch_ms` now and follows tokio's clock (paused and advanced in a simulation).
    pub fn simulated(epoch_ms: u64) -> Self {
        Self { simulated: Some((epoch_ms, Instant::now())) }
    }

    pub fn now_ms(&self) -> u64 {
        match self.simulated {
            None => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            Some((epoch_ms, at)) => epoch_ms + u64::try_from(at.elapsed().as_millis()).unwrap_or(u64::MAX),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_simulated_clock_follows_tokio_time() {
        let clock = Clock::simulated(1_000);
        tokio::time::advance(std::time::Duration::from_millis(2_500)).await;
        assert_eq!(clock.now_ms(), 3_500);
        assert!(Clock::system().now_ms() > 1_700_000_000_000);
    }
}
