//! What happened in a world, in order, with simulated times: printed with a failing seed, compared between two runs
//! of one seed. Every part of the world writes to the same trace; each invocation's writes carry its number (a
//! task-local), so that a write can be traced to the invocation that made it.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use shadow_core::clock::Clock;

tokio::task_local! {
    /// The invocation a task runs (0: the world itself, a device, an operator).
    pub static INVOCATION: u64;
}

/// The invocation the current task runs, 0 outside any.
pub fn invocation() -> u64 {
    INVOCATION.try_with(|i| *i).unwrap_or(0)
}

/// The world's trace: one line per event, with the simulated time (ms since the world began).
#[derive(Clone)]
pub struct Trace {
    lines: Arc<Mutex<Vec<(u64, String)>>>,
    clock: Clock,
    epoch_ms: u64,
}

impl Trace {
    pub fn new(clock: Clock, epoch_ms: u64) -> Self {
        Self { lines: Arc::default(), clock, epoch_ms }
    }

    /// Simulated ms since the world began.
    pub fn now(&self) -> u64 {
        self.clock.now_ms().saturating_sub(self.epoch_ms)
    }

    /// Epoch ms now, on the world's clock.
    pub fn epoch_now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    pub fn line(&self, text: impl Into<String>) {
        let at = self.now();
        if let Ok(mut lines) = self.lines.lock() {
            lines.push((at, text.into()));
        }
    }

    /// The whole trace, one event a line: `  12.345 s  what`.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Ok(lines) = self.lines.lock() {
            for (at, text) in lines.iter() {
                let _ = writeln!(out, "{:>4}.{:03} s  {text}", at / 1000, at % 1000);
            }
        }
        out
    }

    pub fn len(&self) -> usize {
        self.lines.lock().map(|l| l.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
