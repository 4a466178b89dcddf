//! The push engine: walks the targets, paces every shadow request under one rate limit with bounded concurrency,
//! retries what is retryable, and stops in time to hand the rest on.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::time::Instant;

use super::targets::{Seen, page};
use super::{Cursor, Failure, PushPlan, Registry, Shadows, Source};
use crate::document::holds;
use crate::names::ThingName;
use crate::retry::{Backoff, GaveUp, retry_until};
use crate::store::ServiceError;

/// How fast and for how long a segment may run.
pub struct Pace {
    limiter: DefaultDirectRateLimiter,
    pub concurrency: usize,
    /// When the invocation ends.
    pub deadline: Instant,
    /// Stop starting things this long before the deadline, so that those in flight can finish.
    pub hand_off_margin: Duration,
    /// Time kept back after the last retry, to record the segment and answer.
    pub reserve: Duration,
    pub backoff: Backoff,
}

impl Pace {
    /// `rate` requests per second in all (reads and updates), spread evenly (bursts of at most 1/20 s worth).
    pub fn new(rate: u32, concurrency: usize, deadline: Instant, hand_off_margin: Duration, reserve: Duration) -> Self {
        let rate = NonZeroU32::new(rate).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(rate.get() / 20).unwrap_or(NonZeroU32::MIN);
        Self {
            limiter: RateLimiter::direct(Quota::per_second(rate).allow_burst(burst)),
            concurrency: concurrency.max(1),
            deadline,
            hand_off_margin,
            reserve,
            backoff: Backoff::default(),
        }
    }

    fn time_to_hand_off(&self) -> bool {
        Instant::now() + self.hand_off_margin >= self.deadline
    }
}

/// What happened to one thing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ThingOutcome {
    Updated,
    Unchanged,
    /// A dry run found that the thing would be updated.
    WouldUpdate,
    Failed(Failure),
    /// Out of time while the thing was being pushed: the next segment does it again.
    Unfinished,
}

/// The counts of one segment, and where the next one starts (`cursor: None` when the push is complete).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SegmentOutcome {
    /// Distinct things this segment took on (things redone from an earlier segment are not counted again).
    pub targets: u64,
    /// Updated, or in a dry run: would be updated.
    pub updated: u64,
    pub unchanged: u64,
    pub failed: u64,
    pub requests: u64,
    pub throttled: u64,
    pub failures: Vec<Failure>,
    pub cursor: Option<Cursor>,
}

#[derive(Default)]
struct Stats {
    requests: AtomicU64,
    throttled: AtomicU64,
}

/// Pushes `plan` to the things of `sources`, from `start`, until done or until it is time to hand off.
/// `progress` is called after every thing. Registry errors that stay past the deadline end the segment early with
/// a cursor (nothing is lost); a registry error that is final (an unknown group, a bad query) is reported as a
/// failure of that source, and the other sources go on.
pub async fn run_segment(
    plan: &PushPlan,
    sources: &[Source],
    start: Cursor,
    shadows: &impl Shadows,
    registry: &impl Registry,
    pace: &Pace,
    mut progress: impl FnMut(&SegmentOutcome),
) -> SegmentOutcome {
    let stats = Stats::default();
    let mut out = SegmentOutcome::default();
    let mut seen = Seen::default();
    let document = plan.update_document();

    // Things of the sources before the cursor were done by earlier segments: know them again, so that a thing
    // in two sources is still pushed once.
    for (i, source) in sources.iter().enumerate().take(start.source) {
        let mut token: Option<String> = None;
        loop {
            match fetch(plan, source, token.as_deref(), registry, pace, &stats).await {
                Ok(p) => {
                    p.things.iter().for_each(|t| {
                        seen.insert(t);
                    });
                    match p.next {
                        Some(next) => token = Some(next),
                        None => break,
                    }
                }
                Err(GaveUp::OutOfTime { .. }) => {
                    out.cursor = Some(start);
                    return finish(out, &stats);
                }
                // A final error here was reported by the segment that walked this source.
                Err(GaveUp::Final(_)) => {
                    tracing::debug!(source = i, "source skipped while rebuilding de-duplication");
                    break;
                }
            }
        }
    }

    let mut in_flight = FuturesUnordered::new();
    let mut redo = Vec::new();
    let record =
        |out: &mut SegmentOutcome, redo: &mut Vec<String>, (name, outcome): (String, ThingOutcome)| match outcome {
            ThingOutcome::Updated | ThingOutcome::WouldUpdate => out.updated += 1,
            ThingOutcome::Unchanged => out.unchanged += 1,
            ThingOutcome::Failed(failure) => {
                out.failed += 1;
                out.failures.push(failure);
            }
            ThingOutcome::Unfinished => redo.push(name),
        };

    for name in &start.redo {
        seen.insert(name);
        match ThingName::parse(name.as_str()) {
            Ok(thing) => in_flight.push(push_thing(plan, thing, &document, shadows, pace, &stats)),
            Err(e) => record(&mut out, &mut redo, (name.clone(), invalid_name(name, &e))),
        }
    }

    let (mut source, mut token, mut offset) = (start.source, start.token, start.offset);
    'walk: while source < sources.len() {
        if pace.time_to_hand_off() {
            out.cursor = Some(Cursor { source, token, offset, redo: Vec::new() });
            break;
        }
        let current = match fetch(plan, &sources[source], token.as_deref(), registry, pace, &stats).await {
            Ok(p) => p,
            Err(GaveUp::OutOfTime { .. }) => {
                out.cursor = Some(Cursor { source, token, offset, redo: Vec::new() });
                break;
            }
            Err(GaveUp::Final(e)) => {
                let failure = Failure {
                    thing_name: describe(&sources[source]),
                    code: e.code.clone().unwrap_or_else(|| format!("{:?}", e.kind)),
                    message: e.to_string(),
                };
                tracing::error!(source = %failure.thing_name, error = %e, "target source failed");
                out.failed += 1;
                out.failures.push(failure);
                (source, token, offset) = (source + 1, None, 0);
                continue;
            }
        };
        let mut i = offset;
        while i < current.things.len() {
            if pace.time_to_hand_off() {
                out.cursor = Some(Cursor { source, token, offset: i, redo: Vec::new() });
                break 'walk;
            }
            let name = &current.things[i];
            i += 1;
            if seen.contains(name) {
                continue;
            }
            // A source has no duplicates of its own: remember its things only if a later source could repeat them.
            if source + 1 < sources.len() {
                seen.insert(name);
            }
            out.targets += 1;
            let thing = match ThingName::parse(name.as_str()) {
                Ok(thing) => thing,
                Err(e) => {
                    record(&mut out, &mut redo, (name.clone(), invalid_name(name, &e)));
                    continue;
                }
            };
            while in_flight.len() >= pace.concurrency {
                if let Some(done) = in_flight.next().await {
                    record(&mut out, &mut redo, done);
                    progress(&out);
                }
            }
            in_flight.push(push_thing(plan, thing, &document, shadows, pace, &stats));
        }
        match current.next {
            Some(next) => (token, offset) = (Some(next), 0),
            None => (source, token, offset) = (source + 1, None, 0),
        }
    }
    while let Some(done) = in_flight.next().await {
        record(&mut out, &mut redo, done);
        progress(&out);
    }
    if !redo.is_empty() {
        let cursor = out.cursor.get_or_insert_with(|| Cursor { source: sources.len(), ..Cursor::default() });
        cursor.redo = redo;
    }
    finish(out, &stats)
}

fn finish(mut out: SegmentOutcome, stats: &Stats) -> SegmentOutcome {
    out.requests = stats.requests.load(Ordering::Relaxed);
    out.throttled = stats.throttled.load(Ordering::Relaxed);
    out
}

fn describe(source: &Source) -> String {
    match source {
        Source::Things => "targets.things".into(),
        Source::Group(g) => format!("thingGroup:{g}"),
        Source::Query(q) => format!("query:{q}"),
    }
}

fn invalid_name(name: &str, e: &crate::names::NameError) -> ThingOutcome {
    ThingOutcome::Failed(Failure {
        thing_name: name.to_owned(),
        code: "InvalidThingName".into(),
        message: e.to_string(),
    })
}

async fn fetch(
    plan: &PushPlan,
    source: &Source,
    token: Option<&str>,
    registry: &impl Registry,
    pace: &Pace,
    stats: &Stats,
) -> Result<super::Page, GaveUp<ServiceError>> {
    retry_until(
        pace.deadline,
        pace.reserve,
        pace.backoff,
        || page(plan, source, token, registry),
        |e: &ServiceError| {
            if e.is_throttling() {
                stats.throttled.fetch_add(1, Ordering::Relaxed);
            }
        },
    )
    .await
}

/// Retries `op` to the deadline, every attempt waiting for the shared limiter, counting requests and throttles.
async fn paced<T, Fut>(pace: &Pace, stats: &Stats, mut op: impl FnMut() -> Fut) -> Result<T, GaveUp<ServiceError>>
where
    Fut: Future<Output = Result<T, ServiceError>>,
{
    let attempt = || {
        let request = op();
        async {
            pace.limiter.until_ready().await;
            stats.requests.fetch_add(1, Ordering::Relaxed);
            request.await
        }
    };
    let on_retry = |e: &ServiceError| {
        if e.is_throttling() {
            stats.throttled.fetch_add(1, Ordering::Relaxed);
        }
    };
    retry_until(pace.deadline, pace.reserve, pace.backoff, attempt, on_retry).await
}

/// One thing: read and compare (when skipping unchanged things), then update. One request at a time per thing.
async fn push_thing(
    plan: &PushPlan,
    thing: ThingName,
    document: &str,
    shadows: &impl Shadows,
    pace: &Pace,
    stats: &Stats,
) -> (String, ThingOutcome) {
    let shadow = plan.shadow_name.as_ref();
    let name = thing.to_string();
    if plan.skip_unchanged {
        match paced(pace, stats, || shadows.desired(&thing, shadow)).await {
            Ok(current) if holds(current.as_ref(), &plan.desired) => return (name, ThingOutcome::Unchanged),
            Ok(_) => {}
            Err(e) => return (name.clone(), gave_up(&name, e)),
        }
    }
    if plan.dry_run {
        return (name, ThingOutcome::WouldUpdate);
    }
    match paced(pace, stats, || shadows.update(&thing, shadow, document)).await {
        Ok(()) => (name, ThingOutcome::Updated),
        Err(e) => (name.clone(), gave_up(&name, e)),
    }
}

fn gave_up(thing: &str, e: GaveUp<ServiceError>) -> ThingOutcome {
    match e {
        GaveUp::OutOfTime { .. } => ThingOutcome::Unfinished,
        GaveUp::Final(e) => {
            tracing::warn!(thing, code = e.code.as_deref().unwrap_or("-"), error = %e, "thing not pushed");
            ThingOutcome::Failed(Failure {
                thing_name: thing.to_owned(),
                code: e.code.clone().unwrap_or_else(|| format!("{:?}", e.kind)),
                message: e.source.to_string(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::{ShadowName, ThingGroupName};
    use crate::push::{Page, validate_request};
    use crate::store::FaultKind;
    use serde_json::{Value, json};
    use std::collections::HashMap;
    use std::sync::Mutex;

    /// In-memory shadows: desired documents, an update count per thing, and a share of throttled calls.
    #[derive(Default)]
    struct FakeShadows {
        desired: Mutex<HashMap<String, Value>>,
        updates: Mutex<HashMap<String, u32>>,
        unknown: Vec<String>,
        throttle_every: u64,
        calls: AtomicU64,
        delay: Duration,
    }

    impl FakeShadows {
        fn fault(&self, thing: &ThingName) -> Result<(), ServiceError> {
            let n = self.calls.fetch_add(1, Ordering::Relaxed);
            if self.throttle_every > 0 && n.is_multiple_of(self.throttle_every) {
                return Err(ServiceError::new(
                    "X",
                    FaultKind::Throttled,
                    Some("ThrottlingException".into()),
                    "slow down",
                ));
            }
            if self.unknown.iter().any(|u| u == thing.as_str()) {
                return Err(ServiceError::new(
                    "X",
                    FaultKind::Rejected,
                    Some("ResourceNotFoundException".into()),
                    "no such thing",
                ));
            }
            Ok(())
        }
    }

    impl Shadows for FakeShadows {
        async fn desired(&self, thing: &ThingName, _: Option<&ShadowName>) -> Result<Option<Value>, ServiceError> {
            tokio::time::sleep(self.delay).await;
            self.fault(thing)?;
            Ok(self.desired.lock().map(|d| d.get(thing.as_str()).cloned()).unwrap_or_default())
        }

        async fn update(&self, thing: &ThingName, _: Option<&ShadowName>, document: &str) -> Result<(), ServiceError> {
            tokio::time::sleep(self.delay).await;
            self.fault(thing)?;
            let doc: Value = serde_json::from_str(document).unwrap_or_default();
            if let Ok(mut d) = self.desired.lock() {
                d.insert(thing.to_string(), doc["state"]["desired"].clone());
            }
            if let Ok(mut u) = self.updates.lock() {
                *u.entry(thing.to_string()).or_default() += 1;
            }
            Ok(())
        }
    }

    struct FakeRegistry {
        groups: HashMap<String, Vec<String>>,
        children: Vec<String>,
        search: Vec<String>,
    }

    fn paged(things: &[String], token: Option<&str>) -> Page {
        let start: usize = token.and_then(|t| t.parse().ok()).unwrap_or(0);
        let end = (start + 3).min(things.len());
        Page { things: things[start..end].to_vec(), next: (end < things.len()).then(|| end.to_string()) }
    }

    impl Registry for FakeRegistry {
        async fn things_in_group(&self, group: &ThingGroupName, token: Option<&str>) -> Result<Page, ServiceError> {
            match self.groups.get(group.as_str()) {
                Some(things) => Ok(paged(things, token)),
                None => Err(ServiceError::new(
                    "L",
                    FaultKind::Rejected,
                    Some("ResourceNotFoundException".into()),
                    "no group",
                )),
            }
        }
        async fn child_groups(&self, _: &ThingGroupName) -> Result<Vec<ThingGroupName>, ServiceError> {
            Ok(self.children.iter().filter_map(|c| ThingGroupName::parse(c.as_str()).ok()).collect())
        }
        async fn search(&self, _: &str, token: Option<&str>) -> Result<Page, ServiceError> {
            Ok(paged(&self.search, token))
        }
    }

    fn names(prefix: &str, n: usize) -> Vec<String> {
        (0..n).map(|i| format!("{prefix}{i}")).collect()
    }

    fn registry() -> FakeRegistry {
        FakeRegistry {
            groups: HashMap::from([
                ("prod".to_owned(), names("g", 10)),
                ("child".to_owned(), [names("g", 2), names("c", 5)].concat()),
            ]),
            children: vec!["child".into()],
            search: [names("c", 3), names("s", 4)].concat(),
        }
    }

    async fn run(
        plan: &PushPlan,
        shadows: &FakeShadows,
        registry: &FakeRegistry,
        budget: Duration,
        start: Cursor,
    ) -> SegmentOutcome {
        let sources = super::super::sources_for(plan, registry).await.unwrap_or_else(|e| panic!("{e}"));
        let pace =
            Pace::new(100_000, 8, Instant::now() + budget, Duration::from_millis(200), Duration::from_millis(50));
        run_segment(plan, &sources, start, shadows, registry, &pace, |_| {}).await
    }

    fn request(extra: Value) -> PushPlan {
        let mut r = json!({"pushId": "p1", "desired": {"settings": {"mode": 1}},
                           "targets": {"things": ["g0", "x1", "x1"], "thingGroup": "prod", "recursive": true, "query": "q"}});
        if let (Some(r), Value::Object(extra)) = (r.as_object_mut(), extra) {
            r.extend(extra);
        }
        validate_request(&r, 100_000, || "id".into()).unwrap_or_else(|e| panic!("{e}"))
    }

    #[tokio::test]
    async fn union_without_duplicates_then_nothing_left_to_change() {
        let (shadows, registry) = (FakeShadows::default(), registry());
        let plan = request(json!({}));
        let out = run(&plan, &shadows, &registry, Duration::from_secs(30), Cursor::default()).await;
        // g0 x1 | g0..g9 | g0 g1 c0..c4 | c0..c2 s0..s3  => g0..g9, x1, c0..c4, s0..s3 = 20
        assert_eq!((out.targets, out.updated, out.failed, out.cursor.clone()), (20, 20, 0, None));
        let updates = shadows.updates.lock().map(|u| u.clone()).unwrap_or_default();
        assert_eq!(updates.len(), 20);
        assert!(updates.values().all(|n| *n == 1), "{updates:?}");

        let again = run(&plan, &shadows, &registry, Duration::from_secs(30), Cursor::default()).await;
        assert_eq!((again.targets, again.updated, again.unchanged), (20, 0, 20));
        assert!(shadows.updates.lock().map(|u| u.values().all(|n| *n == 1)).unwrap_or(false));
    }

    #[tokio::test]
    async fn dry_run_writes_nothing() {
        let (shadows, registry) = (FakeShadows::default(), registry());
        if let Ok(mut d) = shadows.desired.lock() {
            d.insert("g3".into(), json!({"settings": {"mode": 1, "other": 2}}));
        }
        let out =
            run(&request(json!({"dryRun": true})), &shadows, &registry, Duration::from_secs(30), Cursor::default())
                .await;
        assert_eq!((out.targets, out.updated, out.unchanged), (20, 19, 1));
        assert!(shadows.updates.lock().map(|u| u.is_empty()).unwrap_or(false));
    }

    #[tokio::test]
    async fn unknown_things_fail_alone_and_throttling_is_retried() {
        let shadows = FakeShadows { unknown: vec!["x1".into()], throttle_every: 3, ..Default::default() };
        let out = run(&request(json!({})), &shadows, &registry(), Duration::from_secs(30), Cursor::default()).await;
        assert_eq!((out.updated, out.failed), (19, 1));
        assert_eq!(out.failures[0].thing_name, "x1");
        assert_eq!(out.failures[0].code, "ResourceNotFoundException");
        assert!(out.throttled > 5, "{}", out.throttled);
    }

    #[tokio::test]
    async fn an_unknown_group_fails_as_a_source_and_the_rest_goes_on() {
        let shadows = FakeShadows::default();
        let mut registry = registry();
        registry.groups.remove("prod");
        let out = run(&request(json!({})), &shadows, &registry, Duration::from_secs(30), Cursor::default()).await;
        assert_eq!(out.failures.iter().map(|f| f.thing_name.as_str()).collect::<Vec<_>>(), ["thingGroup:prod"]);
        assert_eq!(out.updated, 12, "g0 x1 | (prod fails) | g1 c0..c4 | s0..s3");
    }

    #[tokio::test]
    async fn segments_hand_off_and_every_thing_is_updated_once() {
        let shadows = FakeShadows { delay: Duration::from_millis(100), ..Default::default() };
        let registry = registry();
        let plan = request(json!({"skipUnchanged": false}));
        let (mut cursor, mut segments, mut targets) = (Cursor::default(), 0, 0);
        loop {
            segments += 1;
            let out = run(&plan, &shadows, &registry, Duration::from_millis(320), cursor).await;
            targets += out.targets;
            match out.cursor {
                Some(next) => cursor = next,
                None => break,
            }
            assert!(segments < 100, "no progress");
        }
        assert!(segments >= 2, "the budget should force hand-offs ({segments})");
        assert_eq!(targets, 20);
        let updates = shadows.updates.lock().map(|u| u.clone()).unwrap_or_default();
        assert_eq!(updates.len(), 20);
        assert!(updates.values().all(|n| *n == 1), "{updates:?}");
    }
}
