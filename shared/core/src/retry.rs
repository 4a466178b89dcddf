//! Retry pacing: exponential backoff with full jitter, bounded by the time an invocation has left.

use std::time::Duration;

use rand::Rng;

/// Whether repeating a failed request can help. Every error that crosses a boundary in shadow-fleet knows this.
pub trait Retryable {
    fn is_retryable(&self) -> bool;
}

/// Exponential backoff with full jitter (the AWS Architecture Blog's recommendation): attempt `n` waits a random
/// time in `[0, min(cap, base * 2^n))`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { base: Duration::from_millis(25), cap: Duration::from_secs(5) }
    }
}

impl Backoff {
    /// The longest wait before attempt `attempt` (0-based retry count).
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(30)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// A random wait before retry `attempt`.
    pub fn delay(&self, attempt: u32, rng: &mut impl Rng) -> Duration {
        let ceiling = self.ceiling(attempt).as_micros().max(1) as u64;
        Duration::from_micros(rng.random_range(0..ceiling))
    }

    /// The wait before retry `attempt`, or `None` when it would not leave `reserve` before the deadline.
    pub fn delay_within(
        &self,
        attempt: u32,
        remaining: Duration,
        reserve: Duration,
        rng: &mut impl Rng,
    ) -> Option<Duration> {
        let delay = self.delay(attempt, rng);
        (delay + reserve <= remaining).then_some(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_grows_then_caps() {
        let b = Backoff { base: Duration::from_millis(10), cap: Duration::from_millis(1000) };
        assert_eq!(b.ceiling(0), Duration::from_millis(10));
        assert_eq!(b.ceiling(3), Duration::from_millis(80));
        assert_eq!(b.ceiling(7), Duration::from_millis(1000));
        assert_eq!(b.ceiling(u32::MAX), Duration::from_millis(1000));
    }

    #[test]
    fn delays_stay_under_the_ceiling() {
        let b = Backoff::default();
        let mut rng = rand::rng();
        for attempt in 0..40 {
            assert!(b.delay(attempt, &mut rng) < b.ceiling(attempt));
        }
    }

    #[test]
    fn no_retry_past_the_deadline() {
        let b = Backoff { base: Duration::from_millis(100), cap: Duration::from_secs(1) };
        let mut rng = rand::rng();
        assert_eq!(b.delay_within(0, Duration::from_millis(50), Duration::from_millis(60), &mut rng), None);
        let d = b.delay_within(0, Duration::from_secs(10), Duration::from_millis(60), &mut rng);
        assert!(d.is_some_and(|d| d < Duration::from_millis(100)));
    }
}

/// Why [`retry_until`] gave up.
#[derive(Debug, thiserror::Error)]
pub enum GaveUp<E> {
    /// The error is final: repeating the request cannot help.
    #[error("{0}")]
    Final(E),
    /// The error was passing (or an attempt was cut off), but the deadline left no room for another attempt.
    #[error("out of time after {attempts} attempts{}", last.as_ref().map(|e| format!("; last error: {e}")).unwrap_or_default())]
    OutOfTime { last: Option<E>, attempts: u32 },
}

impl<E> Retryable for GaveUp<E> {
    /// Out of time is worth retrying later (another invocation); a final error is not.
    fn is_retryable(&self) -> bool {
        matches!(self, Self::OutOfTime { .. })
    }
}

/// Runs `op` until it succeeds, fails for good, or another attempt would not end `reserve` before `deadline`.
/// `on_retry` sees every error that is retried (to count throttles, say).
///
/// Each attempt is itself cut off `reserve` before `deadline`: an SDK call may take its whole attempt timeout, and
/// the time kept for record-keeping must not be spent waiting for it. A cut-off attempt may or may not have reached
/// the service; the caller learns it as `OutOfTime`, as if the last attempt had failed.
pub async fn retry_until<T, E, Fut>(
    deadline: tokio::time::Instant,
    reserve: Duration,
    backoff: Backoff,
    mut op: impl FnMut() -> Fut,
    mut on_retry: impl FnMut(&E),
) -> Result<T, GaveUp<E>>
where
    E: Retryable,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut attempt = 0u32;
    let cut_off = deadline.checked_sub(reserve).unwrap_or(deadline);
    loop {
        if tokio::time::Instant::now() >= cut_off {
            return Err(GaveUp::OutOfTime { last: None, attempts: attempt });
        }
        let error = match tokio::time::timeout_at(cut_off, op()).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(e)) if !e.is_retryable() => return Err(GaveUp::Final(e)),
            Ok(Err(e)) => e,
            Err(_) => return Err(GaveUp::OutOfTime { last: None, attempts: attempt + 1 }),
        };
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Some(delay) = crate::chance::with(|rng| backoff.delay_within(attempt, remaining, reserve, rng)) else {
            return Err(GaveUp::OutOfTime { last: Some(error), attempts: attempt + 1 });
        };
        on_retry(&error);
        attempt = attempt.saturating_add(1);
        tokio::time::sleep(delay).await;
    }
}

#[cfg(test)]
mod retry_until_tests {
    use super::*;
    use std::cell::Cell;

    #[derive(Debug, PartialEq)]
    struct Fault(bool);
    impl Retryable for Fault {
        fn is_retryable(&self) -> bool {
            self.0
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retries_passing_faults_until_success() {
        let calls = Cell::new(0);
        let retried = Cell::new(0);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let result = retry_until(
            deadline,
            Duration::from_millis(100),
            Backoff::default(),
            || {
                calls.set(calls.get() + 1);
                let n = calls.get();
                async move { if n < 5 { Err(Fault(true)) } else { Ok(n) } }
            },
            |_| retried.set(retried.get() + 1),
        )
        .await;
        assert_eq!(result.ok(), Some(5));
        assert_eq!(retried.get(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn final_faults_are_not_retried() {
        let calls = Cell::new(0);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let result: Result<(), _> = retry_until(
            deadline,
            Duration::ZERO,
            Backoff::default(),
            || {
                calls.set(calls.get() + 1);
                async { Err(Fault(false)) }
            },
            |_| {},
        )
        .await;
        assert!(matches!(result, Err(GaveUp::Final(Fault(false)))));
        assert_eq!(calls.get(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn stops_before_the_deadline() {
        let start = tokio::time::Instant::now();
        let deadline = start + Duration::from_secs(3);
        let result: Result<(), _> = retry_until(
            deadline,
            Duration::from_millis(500),
            Backoff::default(),
            || async { Err(Fault(true)) },
            |_| {},
        )
        .await;
        let Err(GaveUp::OutOfTime { attempts, .. }) = result else { panic!("expected out of time") };
        assert!(attempts > 3);
        assert!(tokio::time::Instant::now() <= deadline - Duration::from_millis(500));
    }

    #[tokio::test(start_paused = true)]
    async fn an_attempt_that_hangs_is_cut_off_before_the_reserve() {
        let start = tokio::time::Instant::now();
        let deadline = start + Duration::from_secs(3);
        // One attempt that would take 10 s (the SDK's attempt timeout), with 3 s left and 1 s to keep.
        let result: Result<(), GaveUp<Fault>> = retry_until(
            deadline,
            Duration::from_secs(1),
            Backoff::default(),
            || async {
                tokio::time::sleep(Duration::from_secs(10)).await;
                Ok(())
            },
            |_| {},
        )
        .await;
        assert!(matches!(result, Err(GaveUp::OutOfTime { last: None, attempts: 1 })), "{result:?}");
        assert_eq!(tokio::time::Instant::now(), deadline - Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn no_attempt_starts_inside_the_reserve() {
        let calls = Cell::new(0);
        let deadline = tokio::time::Instant::now() + Duration::from_millis(400);
        let result: Result<(), GaveUp<Fault>> = retry_until(
            deadline,
            Duration::from_millis(500),
            Backoff::default(),
            || {
                calls.set(calls.get() + 1);
                async { Ok(()) }
            },
            |_| {},
        )
        .await;
        assert!(matches!(result, Err(GaveUp::OutOfTime { attempts: 0, .. })), "{result:?}");
        assert_eq!(calls.get(), 0);
    }
}
