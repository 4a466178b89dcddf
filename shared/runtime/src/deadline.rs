//! The invocation's deadline as a monotonic instant, for retry loops and hand-offs.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lambda_runtime::Context;
use tokio::time::Instant;

/// Lambda's longest timeout. A deadline further in the past than this cannot be the wall-clock deadline of an
/// invocation being delivered now: cargo-lambda's `watch` (1.9) sends `Lambda-Runtime-Deadline-Ms: 600000`, a
/// constant (ten minutes after the epoch), with every event.
const LONGEST_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// When Lambda will stop this invocation. A context without a usable deadline (none, or one that cannot be a
/// wall-clock deadline, as from some local runners) gets `fallback`; a deadline that has just passed leaves no time.
pub fn deadline(context: &Context, fallback: Duration) -> Instant {
    deadline_at(context.deadline, SystemTime::now(), Instant::now(), fallback)
}

fn deadline_at(deadline_ms: u64, wall: SystemTime, now: Instant, fallback: Duration) -> Instant {
    if deadline_ms == 0 {
        return now + fallback;
    }
    match (UNIX_EPOCH + Duration::from_millis(deadline_ms)).duration_since(wall) {
        Ok(left) => now + left,
        Err(passed) if passed.duration() > LONGEST_TIMEOUT => now + fallback,
        Err(_) => now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FALLBACK: Duration = Duration::from_secs(60);

    fn left(deadline_ms: u64, wall_ms: u64) -> Duration {
        let now = Instant::now();
        deadline_at(deadline_ms, UNIX_EPOCH + Duration::from_millis(wall_ms), now, FALLBACK) - now
    }

    #[test]
    fn deadlines_from_the_runtime_api() {
        let wall = 1_764_210_000_000;
        assert_eq!(left(wall + 3_000, wall), Duration::from_secs(3), "Lambda's: epoch ms in the future");
        assert_eq!(left(wall - 500, wall), Duration::ZERO, "just passed: no time left");
        assert_eq!(left(wall - 14 * 60_000, wall), Duration::ZERO, "passed within the longest timeout");
        assert_eq!(left(0, wall), FALLBACK, "none");
        assert_eq!(left(600_000, wall), FALLBACK, "cargo lambda watch's constant");
        assert_eq!(left(wall - 16 * 60_000, wall), FALLBACK, "longer ago than any invocation can last");
    }
}
