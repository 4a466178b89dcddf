//! The invocation's deadline as a monotonic instant, for retry loops and hand-offs.

use std::time::{Duration, SystemTime};

use lambda_runtime::Context;
use tokio::time::Instant;

/// When Lambda will stop this invocation. A context without a usable deadline (some local runners) gets `fallback`.
pub fn deadline(context: &Context, fallback: Duration) -> Instant {
    let now = Instant::now();
    match context.deadline().duration_since(SystemTime::now()) {
        Ok(left) if context.deadline > 0 => now + left,
        _ if context.deadline > 0 => now,
        _ => now + fallback,
    }
}
