use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;

use super::*;
use crate::push::fakes::*;
use crate::push::{Pace, PushPlan, Segment, validate_request};

/// A start checks each source with one request, whatever its size (the paging is the segments'); a group that
/// does not exist is refused with a sentence that names it.
#[tokio::test]
async fn sources_are_checked_with_one_request_each() {
    let mut registry = registry();
    registry.groups.insert("huge".into(), names("h", 100_000));
    let plan = |targets: Value| {
        let request = json!({"pushId": "p", "desired": {"a": 1}, "targets": targets});
        validate_request(&request, 400, None).expect("a valid request")
    };
    let checked = crate::push::check_sources(&plan(json!({"thingGroup": "huge", "query": "q"})), &registry).await;
    assert_eq!(checked.ok(), Some(None));
    assert_eq!(registry.calls.load(Ordering::Relaxed), 2, "one page of the group, one of the query");
    let missing = plan(json!({"thingGroup": "nope", "recursive": true}));
    let checked = crate::push::check_sources(&missing, &registry).await;
    assert_eq!(checked.ok(), Some(Some("thing group nope does not exist".to_owned())));
}

/// Runs one phase of a rollout over the group `prod` of `registry` to its end; returns its counts.
async fn run_phase(
    plan: &PushPlan,
    shadows: &FakeShadows,
    registry: &FakeRegistry,
    journal: &FakeJournal,
    phase: usize,
) -> SegmentOutcome {
    let sources = super::super::sources_for(plan, registry).await.expect("resolving the sources");
    let pace = Pace::new(
        100_000,
        8,
        Instant::now() + Duration::from_secs(60),
        Duration::from_millis(200),
        Duration::from_millis(50),
    );
    let start = SegmentStart { phase: Some(phase), ..SegmentStart::default() };
    let out = run_phase_segment(
        &Segment { plan, sources: &sources, shadows, registry, journal, journal_shards: 1, pace: &pace },
        start,
        |_| {},
    )
    .await;
    assert_eq!(out.cursor, None, "one segment is enough: {out:?}");
    out
}

#[tokio::test(start_paused = true)]
async fn things_that_join_after_their_band_walked_are_pushed_in_a_later_phase_once() {
    let request = json!({"pushId": "late", "desired": {"settings": {"mode": 1}}, "targets": {"thingGroup": "prod"},
                         "rollout": {"phases": [{"percent": 30}, {"percent": 60}, {"percent": 100}]}});
    let plan = validate_request(&request, 100_000, None).expect("a valid request");
    let rollout = plan.rollout.clone().expect("a rollout");
    let fleet = names("t", 90);
    let band = |name: &String| rollout.phase_of("late", name);
    let mut registry = registry();
    let (shadows, journal) = (FakeShadows::default(), FakeJournal::default());
    // Phase 1 sees the first 60 things; 30 more join before phase 2, and the last third holds the values already
    // (unchanged, not journaled) before phase 1.
    for name in &fleet[40..60] {
        shadows.set(name, json!({"settings": {"mode": 1}}));
    }
    registry.groups.insert("prod".into(), fleet[..60].to_vec());
    let first = run_phase(&plan, &shadows, &registry, &journal, 0).await;
    registry.groups.insert("prod".into(), fleet.clone());
    let second = run_phase(&plan, &shadows, &registry, &journal, 1).await;
    let third = run_phase(&plan, &shadows, &registry, &journal, 2).await;

    let in_band = |things: &[String], b: usize| things.iter().filter(|t| band(t) == b).count() as u64;
    let late = fleet[60..].iter().filter(|t| band(t) == 0).count() as u64;
    assert!(late > 0, "the draw put no late joiner into band 1");
    assert_eq!(first.targets, in_band(&fleet[..60], 0), "{first:?}");
    assert_eq!(second.targets, in_band(&fleet, 1) + late, "band 2 and the late joiners of band 1: {second:?}");
    assert_eq!(third.targets, in_band(&fleet, 2), "nothing of bands 1 and 2 again: {third:?}");
    assert_eq!(first.targets + second.targets + third.targets, 90);
    let updates = shadows.updates();
    for name in &fleet {
        let expected = u32::from(!fleet[40..60].contains(name));
        assert_eq!(updates.get(name).copied().unwrap_or(0), expected, "{name} (band {})", band(name) + 1);
    }
    let journaled = journal.0.lock().map(|j| j.values().cloned().collect::<Vec<_>>()).unwrap_or_default();
    for entry in journaled.iter().filter(|e| fleet[60..].contains(&e.thing_name) && band(&e.thing_name) == 0) {
        assert_eq!(entry.phase, 2, "a late joiner is judged with the phase that found it: {entry:?}");
    }
    assert_eq!(journaled.len(), 70, "every updated thing journaled once");
}

#[tokio::test(start_paused = true)]
async fn union_without_duplicates_then_nothing_left_to_change() {
    let (shadows, registry) = (FakeShadows::default(), registry());
    let plan = request(json!({}));
    let out = run(&plan, &shadows, &registry, Duration::from_secs(30), Cursor::default()).await;
    // g0 x1 | g0..g9 | g0 g1 c0..c4 | c0..c2 s0..s3  => g0..g9, x1, c0..c4, s0..s3 = 20
    assert_eq!((out.targets, out.updated, out.failed, out.cursor.clone()), (20, 20, 0, None));
    let updates = shadows.updates();
    assert_eq!(updates.len(), 20);
    assert!(updates.values().all(|n| *n == 1), "{updates:?}");

    let again = run(&plan, &shadows, &registry, Duration::from_secs(30), Cursor::default()).await;
    assert_eq!((again.targets, again.updated, again.unchanged), (20, 0, 20));
    assert!(shadows.updates().values().all(|n| *n == 1));
}

#[tokio::test(start_paused = true)]
async fn dry_run_writes_nothing() {
    let (shadows, registry) = (FakeShadows::default(), registry());
    shadows.set("g3", json!({"settings": {"mode": 1, "other": 2}}));
    let out =
        run(&request(json!({"dryRun": true})), &shadows, &registry, Duration::from_secs(30), Cursor::default()).await;
    assert_eq!((out.targets, out.updated, out.unchanged), (20, 19, 1));
    assert!(shadows.updates().is_empty());
}

#[tokio::test(start_paused = true)]
async fn unknown_things_fail_alone_and_throttling_is_retried() {
    let shadows = FakeShadows { unknown: vec!["x1".into()], throttle_every: 3, ..Default::default() };
    let out = run(&request(json!({})), &shadows, &registry(), Duration::from_secs(30), Cursor::default()).await;
    assert_eq!((out.updated, out.failed), (19, 1));
    assert_eq!(out.failures[0].thing_name, "x1");
    assert_eq!(out.failures[0].code, "ResourceNotFoundException");
    assert!(out.throttled > 5, "{}", out.throttled);
}

#[tokio::test(start_paused = true)]
async fn an_unknown_group_fails_as_a_source_and_the_rest_goes_on() {
    let shadows = FakeShadows::default();
    let mut registry = registry();
    registry.groups.remove("prod");
    let out = run(&request(json!({})), &shadows, &registry, Duration::from_secs(30), Cursor::default()).await;
    assert_eq!(out.failures.iter().map(|f| f.thing_name.as_str()).collect::<Vec<_>>(), ["thingGroup:prod"]);
    assert_eq!(out.updated, 12, "g0 x1 | (prod fails) | g1 c0..c4 | s0..s3");
}

#[tokio::test(start_paused = true)]
async fn segments_hand_off_and_every_thing_is_updated_once() {
    let shadows = FakeShadows { delay: Duration::from_millis(100), ..Default::default() };
    let registry = registry();
    let plan = request(json!({"skipUnchanged": false}));
    let pace = || {
        let deadline = Instant::now() + Duration::from_millis(320);
        Pace::new(100_000, 8, deadline, Duration::from_millis(200), Duration::from_millis(50))
    };
    let (segments, targets) = to_completion(&plan, &shadows, &registry, pace).await;
    assert!(segments >= 2, "the budget should force hand-offs ({segments})");
    assert_eq!(targets, 20);
    let updates = shadows.updates();
    assert_eq!(updates.len(), 20);
    assert!(updates.values().all(|n| *n == 1), "{updates:?}");
}

/// A thing in a group and in its child group, with a hand-off inside the group: still pushed once.
#[tokio::test(start_paused = true)]
async fn a_hand_off_inside_a_source_remembers_what_it_walked() {
    let shadows = FakeShadows { delay: Duration::from_millis(100), ..Default::default() };
    let mut registry = registry();
    registry.groups.insert("prod".into(), names("g", 30));
    registry.groups.insert("child".into(), [names("g", 30), names("c", 2)].concat());
    let plan = request(json!({"skipUnchanged": false, "targets": {"thingGroup": "prod", "recursive": true}}));
    let pace = || {
        let deadline = Instant::now() + Duration::from_millis(500);
        Pace::new(100_000, 4, deadline, Duration::from_millis(200), Duration::from_millis(50))
    };
    let (segments, targets) = to_completion(&plan, &shadows, &registry, pace).await;
    assert!(segments >= 3, "{segments}");
    assert_eq!(targets, 32);
    let updates = shadows.updates();
    assert_eq!(updates.len(), 32);
    assert!(
        updates.values().all(|n| *n == 1),
        "pushed twice: {:?}",
        updates.iter().filter(|(_, n)| **n > 1).collect::<Vec<_>>()
    );
}

/// Page tokens that expire between segments (a pause, a slow hand-off), in a group and in a query after it:
/// each source is listed again from its start, and every thing is pushed once, none skipped.
#[tokio::test(start_paused = true)]
async fn a_refused_page_token_lists_the_source_again_and_meets_again_what_was_done() {
    let shadows = FakeShadows { delay: Duration::from_millis(100), ..Default::default() };
    let mut registry = registry();
    registry.groups.insert("prod".into(), names("g", 30));
    registry.search = names("s", 20);
    registry.token_ttl = Some((Duration::from_secs(1), Instant::now()));
    let plan = request(json!({"skipUnchanged": false, "targets": {"thingGroup": "prod", "query": "q"}}));
    let (mut cursor, mut segments, mut targets, mut refused) = (Cursor::default(), 0, 0, 0);
    loop {
        segments += 1;
        let deadline = Instant::now() + Duration::from_millis(500);
        let pace = Pace::new(100_000, 4, deadline, Duration::from_millis(200), Duration::from_millis(50));
        let out = run_with(&plan, &shadows, &registry, &pace, SegmentStart { cursor, ..SegmentStart::default() }).await;
        targets += out.targets;
        assert_eq!(out.failed, 0, "segment {segments}: {:?}", out.failures);
        match out.cursor {
            Some(next) => cursor = next,
            None => break,
        }
        // The next segment comes after the saved token's lifetime.
        refused += u32::from(cursor.token.is_some());
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(segments < 100, "no progress");
    }
    assert!(refused >= 2, "too few saved tokens were refused ({refused} in {segments} segments)");
    assert_eq!(targets, 50);
    let updates = shadows.updates();
    assert_eq!(updates.len(), 50, "things skipped");
    let twice: Vec<_> = updates.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "pushed twice: {twice:?}");
}

/// A group whose members change between the listing that saved a token and the one that replaces it: a thing
/// that joined at the front, and one of those walked before that left. Every member is pushed once: the joiner
/// is not skipped and no thing walked before is pushed again (a skip by position would do both).
#[tokio::test(start_paused = true)]
async fn a_refused_page_token_after_the_group_changed_pushes_each_member_once() {
    let shadows = FakeShadows { delay: Duration::from_millis(100), ..Default::default() };
    let mut registry = registry();
    registry.groups.insert("prod".into(), names("g", 30));
    registry.token_ttl = Some((Duration::from_secs(1), Instant::now()));
    for skip_unchanged in [false, true] {
        let plan = request(json!({"skipUnchanged": skip_unchanged, "targets": {"thingGroup": "prod"}}));
        let shadows = FakeShadows { delay: shadows.delay, ..Default::default() };
        registry.groups.insert("prod".into(), names("g", 30));
        let (mut cursor, mut segments, mut targets, mut updated) = (Cursor::default(), 0, 0, 0);
        loop {
            segments += 1;
            let deadline = Instant::now() + Duration::from_millis(500);
            let pace = Pace::new(100_000, 4, deadline, Duration::from_millis(200), Duration::from_millis(50));
            let out =
                run_with(&plan, &shadows, &registry, &pace, SegmentStart { cursor, ..SegmentStart::default() }).await;
            (targets, updated) = (targets + out.targets, updated + out.updated);
            match out.cursor {
                Some(next) => cursor = next,
                None => break,
            }
            if segments == 1 {
                assert!(cursor.token.is_some() && cursor.walked >= 6, "{cursor:?}");
                // Between the listings: one joins at the front, one walked already leaves.
                let members = registry.groups.get_mut("prod").expect("the group");
                members.insert(0, "a-joiner".into());
                members.retain(|m| m != "g1");
            }
            tokio::time::advance(Duration::from_secs(2)).await;
            assert!(segments < 100, "no progress");
        }
        let updates = shadows.updates();
        let twice: Vec<_> = updates.iter().filter(|(_, n)| **n > 1).collect();
        assert!(twice.is_empty(), "skipUnchanged {skip_unchanged}: pushed twice: {twice:?}");
        assert!(updates.contains_key("a-joiner"), "skipUnchanged {skip_unchanged}: the joiner was skipped");
        // All 30 first members (g1 before it left) and the joiner.
        assert_eq!(updates.len(), 31, "skipUnchanged {skip_unchanged}: {updates:?}");
        assert_eq!((targets, updated), (31, 31), "skipUnchanged {skip_unchanged}");
    }
}

/// Things met again after a refused page token that no longer hold the pushed values. One whose pushed keys
/// another writer set after this push updated it, and one whose device applied the values and cleared `desired`, were
/// walked before: neither is updated nor counted again. A joiner holding an older value set before the push started
/// is pushed and counted, and the last thing walked, pushed down the listing by it, is not pushed again. One whose `desired` was cleared with nothing reported cannot be told from a joiner: it is
/// updated again (docs/shadow-push.md).
#[tokio::test(start_paused = true)]
async fn things_met_again_that_others_changed_since_are_not_pushed_again() {
    let shadows = FakeShadows { delay: Duration::from_millis(100), ..Default::default() };
    let mut registry = registry();
    registry.groups.insert("prod".into(), names("g", 30));
    registry.token_ttl = Some((Duration::from_secs(1), Instant::now()));
    let plan = request(json!({"skipUnchanged": false, "targets": {"thingGroup": "prod"}}));
    // The joiner's shadow holds a value set before the push started (at 500 s; the push starts at 1000 s).
    shadows.clock_s.store(500, Ordering::Relaxed);
    shadows.set("a-joiner", json!({"settings": {"mode": 7}}));
    shadows.clock_s.store(1000, Ordering::Relaxed);
    let (mut cursor, mut segments, mut targets, mut updated) = (Cursor::default(), 0, 0, 0);
    loop {
        segments += 1;
        let deadline = Instant::now() + Duration::from_millis(500);
        let pace = Pace::new(100_000, 4, deadline, Duration::from_millis(200), Duration::from_millis(50));
        let start = SegmentStart { cursor, written_since: 1000, ..SegmentStart::default() };
        let out = run_with(&plan, &shadows, &registry, &pace, start).await;
        (targets, updated) = (targets + out.targets, updated + out.updated);
        match out.cursor {
            Some(next) => cursor = next,
            None => break,
        }
        if segments == 1 {
            assert!(cursor.token.is_some() && cursor.walked >= 4, "{cursor:?}");
            // One joins at the front: the last thing walked is pushed down, past the things met again.
            registry.groups.get_mut("prod").expect("the group").insert(0, "a-joiner".into());
            shadows.clock_s.store(1010, Ordering::Relaxed);
            // Another writer sets g0's pushed key; g1's device applies the values and clears desired; g2's desired
            // is cleared with nothing reported.
            shadows.set("g0", json!({"settings": {"mode": 9}}));
            shadows.set("g1", json!({}));
            shadows.set("g2", json!({}));
            if let Ok(mut d) = shadows.desired.lock()
                && let Some(g1) = d.get_mut("g1")
            {
                g1.reported = json!({"settings": {"mode": 1}});
            }
        }
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(segments < 100, "no progress");
    }
    let updates = shadows.updates();
    assert_eq!((updates.get("g0"), updates.get("g1")), (Some(&1), Some(&1)), "walked before, pushed again");
    assert_eq!(updates.get("a-joiner"), Some(&1), "the joiner was not pushed");
    assert_eq!(updates.get("g2"), Some(&2), "cleared, nothing reported: updated again");
    let twice: Vec<_> = updates.iter().filter(|(t, n)| **n > 1 && t.as_str() != "g2").collect();
    assert!(twice.is_empty(), "pushed twice: {twice:?}");
    // All 30 members and the joiner; g2, taken for a joiner, counted twice.
    assert_eq!((updates.len(), targets, updated), (31, 32, 32));
}

/// A member walked before the cursor's place in its page leaves the group between two segments: the page listed
/// again starts one thing later. The next segment goes on after the last thing taken where it now is; when that
/// thing is the one that left, it meets again what lies before the place (read: done when walked, pushed when new).
/// Before, it skipped as many things as before, which skipped a member that never left.
#[tokio::test(start_paused = true)]
async fn a_member_leaving_before_the_cursors_place_in_its_page_skips_no_other() {
    for leaving in ["the page's first", "the last taken"] {
        let shadows = FakeShadows { delay: Duration::from_millis(100), ..Default::default() };
        let mut registry = registry();
        registry.page_size = 10;
        registry.groups.insert("prod".into(), names("g", 30));
        let plan = request(json!({"skipUnchanged": false, "targets": {"thingGroup": "prod"}}));
        let (mut cursor, mut segments, mut targets, mut left) = (Cursor::default(), 0, 0, None);
        loop {
            segments += 1;
            let deadline = Instant::now() + Duration::from_millis(500);
            let pace = Pace::new(100_000, 4, deadline, Duration::from_millis(200), Duration::from_millis(50));
            let start = SegmentStart { cursor, ..SegmentStart::default() };
            let out = run_with(&plan, &shadows, &registry, &pace, start).await;
            targets += out.targets;
            match out.cursor {
                Some(next) => cursor = next,
                None => break,
            }
            // The first time a segment stops inside a page, one of the things it walked there leaves.
            if left.is_none()
                && cursor.offset > 1
                && let Some(start) = cursor.token.as_deref().and_then(|t| t.split_once('@')).map(|(p, _)| p.to_owned())
            {
                let members = registry.groups.get_mut("prod").expect("the group");
                let first: usize = start.parse().expect("a position");
                let at = if leaving == "the last taken" { first + cursor.offset - 1 } else { first };
                left = Some(members.remove(at));
            }
            assert!(segments < 100, "no progress");
        }
        let left = left.expect("no segment stopped inside a page");
        let updates = shadows.updates();
        let skipped: Vec<String> = names("g", 30).into_iter().filter(|t| !updates.contains_key(t)).collect();
        assert!(skipped.is_empty(), "{leaving}: skipped {skipped:?} ({left} left)");
        assert!(updates.values().all(|n| *n == 1), "{leaving}: pushed twice: {updates:?}");
        assert_eq!(targets, 30, "{leaving}");
    }
}

/// A cursor past the last source with a few things to redo lists nothing.
#[tokio::test(start_paused = true)]
async fn redoing_a_few_things_lists_no_source() {
    let (shadows, registry) = (FakeShadows::default(), registry());
    let plan = request(json!({}));
    let sources = super::super::sources_for(&plan, &registry).await.expect("resolving the sources");
    let listed = registry.calls.load(Ordering::Relaxed);
    let cursor = Cursor { source: sources.len(), redo: vec!["g1".into(), "s3".into()], ..Cursor::default() };
    let out = run(&plan, &shadows, &registry, Duration::from_secs(30), cursor).await;
    assert_eq!((out.updated, out.cursor.clone()), (2, None), "{out:?}");
    assert_eq!(registry.calls.load(Ordering::Relaxed), listed, "a source was listed again");
}
