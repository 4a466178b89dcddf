//! The push queue in memory (the `HandOff` port): a message is delivered after its delay plus a random extra, now
//! and then twice; the world takes due messages off it and invokes the function with them, and puts a message back
//! (after its visibility timeout) when the invocation failed or died.

use std::sync::{Arc, Mutex};

use shadow_core::push::HandOff;
use shadow_core::service::{FaultKind, ServiceError};

use crate::dice::Dice;
use crate::trace::{Trace, invocation};

/// One hand-off message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub id: u64,
    pub push_id: String,
    pub segment: u64,
    /// When it is delivered (ms since the world began).
    pub due_ms: u64,
    /// How many times it was delivered before.
    pub received: u32,
}

impl Message {
    /// The SQS event the event source mapping invokes the function with.
    pub fn event(&self) -> serde_json::Value {
        let body = serde_json::json!({"continuePush": self.push_id, "segment": self.segment}).to_string();
        serde_json::json!({"Records": [{"messageId": format!("m{}", self.id), "body": body, "eventSource": "aws:sqs"}]})
    }
}

#[derive(Default)]
struct State {
    waiting: Vec<Message>,
    sent: u64,
    /// Every call to send, refused or not.
    asked: u64,
}

#[derive(Clone)]
pub struct SimQueue {
    state: Arc<Mutex<State>>,
    dice: Dice,
    trace: Trace,
    /// Percent of messages delivered twice.
    duplicate_percent: u64,
    /// Percent of sends that fail (the handler then leaves the push to the sweeper).
    fail_percent: u64,
}

impl SimQueue {
    pub fn new(dice: Dice, trace: Trace, duplicate_percent: u64, fail_percent: u64) -> Self {
        Self { state: Arc::default(), dice, trace, duplicate_percent, fail_percent }
    }

    /// Takes every message due by now, in the order they fall due.
    pub fn due(&self) -> Vec<Message> {
        let now = self.trace.now();
        let Ok(mut s) = self.state.lock() else { return Vec::new() };
        let (mut due, waiting): (Vec<_>, Vec<_>) = s.waiting.drain(..).partition(|m| m.due_ms <= now);
        s.waiting = waiting;
        due.sort_by_key(|m| (m.due_ms, m.id));
        due
    }

    /// Puts a delivered message back, visible again after `after_ms`.
    pub fn redeliver(&self, mut message: Message, after_ms: u64) {
        message.due_ms = self.trace.now() + after_ms;
        message.received += 1;
        if let Ok(mut s) = self.state.lock() {
            s.waiting.push(message);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.state.lock().map(|s| s.waiting.is_empty()).unwrap_or(true)
    }

    fn send(&self, push_id: &str, segment: u64, due_ms: u64) -> u64 {
        let Ok(mut s) = self.state.lock() else { return 0 };
        s.sent += 1;
        let id = s.sent;
        s.waiting.push(Message { id, push_id: push_id.to_owned(), segment, due_ms, received: 0 });
        id
    }
}

impl HandOff for SimQueue {
    async fn hand_off(&self, push_id: &str, segment: u64, delay_s: u32) -> Result<(), ServiceError> {
        let key = format!("queue:{push_id}:{segment}");
        let n = self
            .state
            .lock()
            .map(|mut s| {
                s.asked += 1;
                s.asked * 3
            })
            .unwrap_or(0);
        if self.dice.chance(&key, n, self.fail_percent) {
            self.trace
                .line(format!("queue: hand-off of {push_id} segment {segment} refused (invocation {})", invocation()));
            return Err(ServiceError::new("SendMessage", FaultKind::Transient, None, "the simulated queue failed"));
        }
        let now = self.trace.now();
        let due = now + u64::from(delay_s) * 1000 + self.dice.between(&key, n, 10, 1_500);
        let id = self.send(push_id, segment, due);
        self.trace.line(format!(
            "queue: {push_id} segment {segment} handed off as m{id}, due at {due} ms (invocation {})",
            invocation()
        ));
        if self.dice.chance(&key, n + 1, self.duplicate_percent) {
            // Half the duplicates arrive together with the first delivery (two pollers took it at once).
            let spread = if self.dice.chance(&key, n + 3, 50) { 20 } else { 3_000 };
            let again = due + self.dice.between(&key, n + 2, 0, spread);
            let twin = self.send(push_id, segment, again);
            self.trace.line(format!("queue: m{id} also delivered as m{twin}, at {again} ms"));
        }
        Ok(())
    }
}
