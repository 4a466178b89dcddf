use std::sync::Mutex;
use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;

use super::*;
use crate::push::fakes::*;
use crate::push::{Pace, Segment, validate_request};

/// A rollback over a journal read in pages, with empty pages between, and segments too short for it: every
/// thing is put back, once.
#[tokio::test(start_paused = true)]
async fn a_journal_walk_goes_on_past_empty_pages_and_across_hand_offs() {
    let request = json!({"pushId": "back", "desired": {"settings": {"mode": 1}}, "targets": {"thingGroup": "prod"},
                         "rollout": {"phases": [{"percent": 50}, {"percent": 100}]}});
    let plan = validate_request(&request, 100_000, None).expect("a valid request");
    let shadows = FakeShadows { delay: Duration::from_millis(100), ..Default::default() };
    let journal = FakeJournal(Mutex::default(), 3);
    let fleet = names("t", 14);
    for (i, name) in fleet.iter().enumerate() {
        shadows.set(name, json!({"settings": {"mode": 1}}));
        let entry = JournalEntry {
            thing_name: name.clone(),
            phase: 1 + (i % 2) as u32,
            values: json!({"settings": {"mode": null}}),
        };
        journal.record_previous(JournalRef::new("back", 1), 0, &entry).await.expect("recording the previous values");
    }
    let (mut cursor, mut segments, mut restored, mut judged) = (Some(Cursor::default()), 0, 0, 0);
    // Judging phase 1 first, in one segment: its 7 things, every page read.
    let pace =
        Pace::new(100_000, 4, Instant::now() + Duration::from_secs(30), Duration::from_millis(200), Duration::ZERO);
    let judge = run_journal_segment(
        &Segment {
            plan: &plan,
            sources: &[],
            shadows: &shadows,
            registry: &(),
            journal: &journal,
            journal_shards: 1,
            pace: &pace,
        },
        JudgeOrRollback::Judge { phase: 1 },
        Cursor::default(),
        false,
    )
    .await;
    judged += judge.pending;
    assert_eq!((judged, &judge.cursor), (7, &None), "{judge:?}");
    while let Some(at) = cursor {
        segments += 1;
        let deadline = Instant::now() + Duration::from_millis(600);
        let pace = Pace::new(100_000, 2, deadline, Duration::from_millis(200), Duration::from_millis(50));
        let out = run_journal_segment(
            &Segment {
                plan: &plan,
                sources: &[],
                shadows: &shadows,
                registry: &(),
                journal: &journal,
                journal_shards: 1,
                pace: &pace,
            },
            JudgeOrRollback::Rollback,
            at,
            false,
        )
        .await;
        assert!(out.failures.is_empty() && out.conflicts.is_empty(), "{out:?}");
        restored += out.rollback.restored;
        cursor = out.cursor;
        assert!(segments < 50, "no progress");
    }
    assert!(segments >= 3, "the budget should force hand-offs ({segments})");
    assert_eq!(restored, 14);
    let updates = shadows.updates();
    assert_eq!(updates.len(), 14, "{updates:?}");
    assert!(updates.values().all(|n| *n == 1), "put back twice: {updates:?}");
}

/// A rollback over a journal of 5 shards, in segments too short for it: every thing of every shard is put back
/// once, and judging counts every thing of its phase.
#[tokio::test(start_paused = true)]
async fn a_journal_walk_sees_every_shard_across_hand_offs() {
    let request = json!({"pushId": "sharded", "desired": {"settings": {"mode": 1}},
                         "targets": {"thingGroup": "prod"},
                         "rollout": {"phases": [{"percent": 50}, {"percent": 100}]}});
    let plan = validate_request(&request, 100_000, None).expect("a valid request");
    let shadows = FakeShadows { delay: Duration::from_millis(100), ..Default::default() };
    let journal = ShardedJournal::new(5);
    let at = JournalRef::new("sharded", 5);
    let fleet = names("t", 40);
    for (i, name) in fleet.iter().enumerate() {
        shadows.set(name, json!({"settings": {"mode": 1}}));
        let entry =
            JournalEntry { thing_name: name.clone(), phase: 1 + (i % 2) as u32, values: json!({"settings": null}) };
        journal.record_previous(at, 0, &entry).await.expect("recording the previous values");
    }
    let used = journal.0.lock().map(|s| s.iter().filter(|shard| !shard.is_empty()).count()).unwrap_or(0);
    assert_eq!(used, 5, "40 things spread over every shard");
    let pace =
        Pace::new(100_000, 4, Instant::now() + Duration::from_secs(30), Duration::from_millis(200), Duration::ZERO);
    let judge = run_journal_segment(
        &Segment {
            plan: &plan,
            sources: &[],
            shadows: &shadows,
            registry: &(),
            journal: &journal,
            journal_shards: 5,
            pace: &pace,
        },
        JudgeOrRollback::Judge { phase: 2 },
        Cursor::default(),
        false,
    )
    .await;
    assert_eq!((judge.pending, &judge.cursor), (20, &None), "{judge:?}");
    let (mut cursor, mut segments, mut restored) = (Some(Cursor::default()), 0, 0);
    while let Some(from) = cursor {
        segments += 1;
        let deadline = Instant::now() + Duration::from_millis(700);
        let pace = Pace::new(100_000, 2, deadline, Duration::from_millis(200), Duration::from_millis(50));
        let out = run_journal_segment(
            &Segment {
                plan: &plan,
                sources: &[],
                shadows: &shadows,
                registry: &(),
                journal: &journal,
                journal_shards: 5,
                pace: &pace,
            },
            JudgeOrRollback::Rollback,
            from,
            false,
        )
        .await;
        assert!(out.failures.is_empty() && out.conflicts.is_empty(), "{out:?}");
        restored += out.rollback.restored;
        cursor = out.cursor;
        assert!(segments < 100, "no progress");
    }
    assert!(segments >= 3, "the budget should force hand-offs ({segments})");
    assert_eq!(restored, 40);
    let updates = shadows.updates();
    assert_eq!(updates.len(), 40, "{updates:?}");
    assert!(updates.values().all(|n| *n == 1), "put back twice: {updates:?}");
}
