use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;

use super::*;
use crate::names::ShadowName;
use crate::push::fakes::*;
use crate::push::{Cursor, DesiredState, Pace, SegmentStart};

/// Taking over a dead segment: the things it updated are recognised by their write time and not updated again.
#[tokio::test(start_paused = true)]
async fn a_takeover_recognises_what_the_dead_segment_did() {
    let shadows = FakeShadows::default();
    let mut registry = registry();
    registry.groups.insert("prod".into(), names("g", 10));
    let plan = request(json!({"skipUnchanged": false, "targets": {"thingGroup": "prod"}}));
    // Before the push: g9 already held the value (written at t=100); the dead segment (started t=1000)
    // updated g0..g3 at t=1000.
    shadows.clock_s.store(100, Ordering::Relaxed);
    shadows.set("g9", json!({"settings": {"mode": 1}}));
    shadows.clock_s.store(1000, Ordering::Relaxed);
    for i in 0..4 {
        shadows.set(&format!("g{i}"), json!({"settings": {"mode": 1}}));
    }
    let pace = Pace::new(1000, 8, Instant::now() + Duration::from_secs(30), Duration::from_millis(200), Duration::ZERO);
    let start =
        SegmentStart { cursor: Cursor::default(), written_since: 1000, takeover: true, ..SegmentStart::default() };
    let out = run_with(&plan, &shadows, &registry, &pace, start).await;
    assert_eq!((out.targets, out.updated, out.unchanged), (10, 10, 0), "{out:?}");
    let updates = shadows.updates();
    let mut updated: Vec<&String> = updates.keys().collect();
    updated.sort();
    assert_eq!(updated, ["g4", "g5", "g6", "g7", "g8", "g9"], "g0..g3 were done; g9 is updated (skipUnchanged false)");
}

/// Things handed back unfinished may have been updated (their last request was cut off): the next segment
/// recognises those, even without skipUnchanged, and updates only the others.
#[tokio::test(start_paused = true)]
async fn things_to_redo_are_checked_before_they_are_updated_again() {
    let shadows = FakeShadows::default();
    let registry = registry();
    let plan = request(json!({"skipUnchanged": false, "targets": {"things": ["a", "b"]}}));
    shadows.clock_s.store(1000, Ordering::Relaxed);
    shadows.set("a", json!({"settings": {"mode": 1}}));
    let pace = Pace::new(1000, 8, Instant::now() + Duration::from_secs(30), Duration::from_millis(200), Duration::ZERO);
    let cursor = Cursor { source: 1, redo: vec!["a".into(), "b".into()], ..Cursor::default() };
    let out = run_with(
        &plan,
        &shadows,
        &registry,
        &pace,
        SegmentStart { cursor, written_since: 1000, takeover: false, ..SegmentStart::default() },
    )
    .await;
    assert_eq!((out.updated, out.cursor.clone()), (2, None), "{out:?}");
    assert_eq!(shadows.updates().keys().collect::<Vec<_>>(), ["b"]);
}

/// An uncertain thing's earlier update lands between the read and the new update: the new one is refused at
/// the version read (409), the thing is read again and recognised, and it is updated once.
#[tokio::test(start_paused = true)]
async fn a_late_update_is_not_applied_twice() {
    struct Late {
        inner: FakeShadows,
        reads: AtomicU64,
    }
    impl Shadows for Late {
        async fn desired(
            &self,
            thing: &ThingName,
            shadow: Option<&ShadowName>,
        ) -> Result<Option<DesiredState>, ServiceError> {
            let read = self.inner.desired(thing, shadow).await;
            // Right after the first read, the update an earlier segment sent lands.
            if self.reads.fetch_add(1, Ordering::SeqCst) == 0 {
                self.inner.set(thing.as_str(), json!({"settings": {"mode": 1}}));
            }
            read
        }
        async fn update(&self, thing: &ThingName, shadow: Option<&ShadowName>, doc: &str) -> Result<(), ServiceError> {
            self.inner.update(thing, shadow, doc).await
        }
    }
    let shadows = Late { inner: FakeShadows::default(), reads: AtomicU64::new(0) };
    shadows.inner.clock_s.store(1000, Ordering::Relaxed);
    shadows.inner.set("a", json!({"settings": {"mode": 0}}));
    let registry = registry();
    let plan = request(json!({"skipUnchanged": false, "targets": {"things": ["a"]}}));
    let pace = Pace::new(1000, 8, Instant::now() + Duration::from_secs(30), Duration::from_millis(200), Duration::ZERO);
    let cursor = Cursor { source: 1, redo: vec!["a".into()], ..Cursor::default() };
    let out = run_with(
        &plan,
        &shadows,
        &registry,
        &pace,
        SegmentStart { cursor, written_since: 1000, takeover: false, ..SegmentStart::default() },
    )
    .await;
    assert_eq!((out.updated, out.failed), (1, 0), "{out:?}");
    assert!(shadows.inner.updates().is_empty(), "updated again: {:?}", shadows.inner.updates());
}

/// An update applied but answered with a 500 (or cut off by a timeout): the thing is read again, recognised as
/// updated by this push, and not updated a second time. A 429 is retried as it is.
#[tokio::test(start_paused = true)]
async fn an_update_whose_answer_was_lost_is_not_sent_again() {
    struct Lossy {
        inner: FakeShadows,
        updates: AtomicU64,
    }
    impl Shadows for Lossy {
        async fn desired(
            &self,
            thing: &ThingName,
            shadow: Option<&ShadowName>,
        ) -> Result<Option<DesiredState>, ServiceError> {
            self.inner.desired(thing, shadow).await
        }
        async fn update(&self, thing: &ThingName, shadow: Option<&ShadowName>, doc: &str) -> Result<(), ServiceError> {
            self.inner.update(thing, shadow, doc).await?;
            // The first update is applied, and its answer lost.
            if self.updates.fetch_add(1, Ordering::SeqCst) == 0 {
                return Err(ServiceError::new("X", FaultKind::Transient, Some("InternalFailure".into()), "lost"));
            }
            Ok(())
        }
    }
    let shadows = Lossy { inner: FakeShadows::default(), updates: AtomicU64::new(0) };
    shadows.inner.clock_s.store(1000, Ordering::Relaxed);
    let registry = registry();
    let plan = request(json!({"skipUnchanged": false, "targets": {"things": ["a"]}}));
    let pace = Pace::new(1000, 8, Instant::now() + Duration::from_secs(30), Duration::from_millis(200), Duration::ZERO);
    let start =
        SegmentStart { cursor: Cursor::default(), written_since: 1000, takeover: false, ..SegmentStart::default() };
    let out = run_with(&plan, &shadows, &registry, &pace, start).await;
    assert_eq!((out.updated, out.failed), (1, 0), "{out:?}");
    assert_eq!(shadows.inner.updates().get("a"), Some(&1), "sent again");
}
