//! A push's life across invocations, as pure decisions.
//!
//! A push is a chain of segments, each run by one invocation that claims it on the push record with a lease it
//! renews while it runs. Whatever wakes a push (its first invocation, Lambda's retry of it, a hand-off message, a
//! duplicate of one, the sweeper) asks [`next_step`] what to do with the record as it finds it, so every arrival
//! is safe at any time: the conditional claim lets exactly one of them run the next segment.

use std::fmt::Write as _;

use sha2::{Digest, Sha256};

use super::{PushPlan, PushRecord};

/// A segment whose holder died this many times in a row is not taken over again: the push is marked stalled.
pub const MAX_TAKEOVERS: u32 = 3;

/// What an arrival does with a push record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Claim `segment` and run it; `takeover` when its last holder died.
    Run {
        segment: u64,
        takeover: bool,
    },
    /// A live segment holds the push until `lease_until` (epoch ms): nothing to do.
    Running {
        lease_until: u64,
    },
    Complete,
    /// The push cannot go on: why.
    Stalled(String),
}

/// What to do with `record` at `now_ms`.
pub fn next_step(record: &PushRecord, now_ms: u64) -> Step {
    if record.complete {
        return Step::Complete;
    }
    if let Some(reason) = &record.stalled {
        return Step::Stalled(reason.clone());
    }
    if record.segment == record.handed_off {
        // Released: the next segment is free to claim, whoever arrives first.
        return Step::Run { segment: record.segment + 1, takeover: false };
    }
    if record.segment == record.handed_off + 1 {
        if record.lease_until >= now_ms {
            return Step::Running { lease_until: record.lease_until };
        }
        if record.takeovers >= MAX_TAKEOVERS {
            return Step::Stalled(format!(
                "segment {} died {} times (out of memory, a crash, or a timeout)",
                record.segment,
                record.takeovers + 1
            ));
        }
        return Step::Run { segment: record.segment, takeover: true };
    }
    Step::Stalled(format!("inconsistent record: segment {} after {}", record.segment, record.handed_off))
}

/// A digest of the validated plan (hex SHA-256 of its JSON), stable across processes and releases.
pub fn plan_digest(plan: &PushPlan) -> String {
    // Struct fields serialize in declaration order and JSON objects as sorted maps: the text is canonical.
    let text = serde_json::to_string(plan).unwrap_or_default();
    Sha256::digest(text.as_bytes()).iter().fold(String::with_capacity(64), |mut hex, byte| {
        let _ = write!(hex, "{byte:02x}");
        hex
    })
}

/// How long claims last, how often they are renewed, and how long a released push waits for its next segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTiming {
    pub lease_ms: u64,
    pub hand_off_grace_ms: u64,
}

impl LeaseTiming {
    /// Renew three times per lease, so that one slow or failed renewal does not lose the claim.
    pub fn renew_every_ms(&self) -> u64 {
        (self.lease_ms / 3).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::push::validate_request;
    use serde_json::{Value, json};

    fn record(segment: u64, handed_off: u64, lease_until: u64, takeovers: u32, complete: bool) -> PushRecord {
        PushRecord {
            push_id: "p".into(),
            shadow_name: None,
            dry_run: false,
            request: Value::Null,
            plan_digest: String::new(),
            sources: Vec::new(),
            segment,
            handed_off,
            owner: "o".into(),
            lease_until,
            segment_started_at: 0,
            takeovers,
            stalled: None,
            cursor: None,
            targets: 0,
            updated: 0,
            unchanged: 0,
            failed: 0,
            requests: 0,
            throttled: 0,
            complete,
            started_at: 0,
            finished_at: None,
        }
    }

    #[test]
    fn every_state_a_push_can_be_found_in() {
        let now = 10_000;
        let cases = [
            // (segment, handed_off, lease_until, takeovers, complete) -> step
            ((1, 0, now + 1, 0, false), Step::Running { lease_until: now + 1 }),
            ((1, 0, now, 0, false), Step::Running { lease_until: now }),
            ((1, 0, now - 1, 0, false), Step::Run { segment: 1, takeover: true }),
            ((4, 3, now - 1, 2, false), Step::Run { segment: 4, takeover: true }),
            ((1, 1, now + 60_000, 0, false), Step::Run { segment: 2, takeover: false }),
            ((1, 1, now - 1, 0, false), Step::Run { segment: 2, takeover: false }),
            ((3, 3, 0, 0, true), Step::Complete),
            ((3, 2, now + 1, 0, true), Step::Complete),
        ];
        for ((segment, handed_off, lease, takeovers, complete), step) in cases {
            let r = record(segment, handed_off, lease, takeovers, complete);
            assert_eq!(next_step(&r, now), step, "{segment}/{handed_off}/{lease}/{takeovers}/{complete}");
        }
        let dying = record(4, 3, now - 1, MAX_TAKEOVERS, false);
        assert!(matches!(next_step(&dying, now), Step::Stalled(reason) if reason.contains("segment 4 died")));
        assert!(matches!(next_step(&record(5, 2, 0, 0, false), now), Step::Stalled(_)));
        let mut stalled = record(1, 1, 0, 0, false);
        stalled.stalled = Some("why".into());
        assert_eq!(next_step(&stalled, now), Step::Stalled("why".into()));
    }

    #[test]
    fn the_digest_tells_requests_apart() {
        let plan = |desired: Value| {
            validate_request(&json!({"pushId": "p1", "desired": desired, "targets": {"things": ["a"]}}), 400, || {
                "unused".into()
            })
            .unwrap_or_else(|e| panic!("{e}"))
        };
        let a = plan_digest(&plan(json!({"mode": 1, "temp": 2})));
        assert_eq!(a.len(), 64);
        assert_eq!(a, plan_digest(&plan(json!({"temp": 2, "mode": 1}))), "key order does not matter");
        assert_ne!(a, plan_digest(&plan(json!({"mode": 2, "temp": 2}))));
    }

    #[test]
    fn renewals_come_three_times_a_lease() {
        assert_eq!(LeaseTiming { lease_ms: 30_000, hand_off_grace_ms: 60_000 }.renew_every_ms(), 10_000);
    }
}
