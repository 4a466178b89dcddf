//! In-memory shadows, registry and journals for the engine's tests, on tokio's clock.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;

use crate::names::{ShadowName, ThingGroupName, ThingName};
use crate::push::{
    Cursor, DesiredState, Journal, JournalEntry, JournalPage, JournalRef, NoJournal, Pace, Page, PushPlan, Registry,
    Segment, SegmentOutcome, SegmentStart, Shadows, run_segment, validate_request,
};
use crate::service::{FaultKind, ServiceError};

/// In-memory shadows: desired documents with per-key write times, an update count per thing, a share of
/// throttled calls, and a latency (on tokio's clock).
#[derive(Default)]
pub(crate) struct FakeShadows {
    pub(crate) desired: Mutex<HashMap<String, DesiredState>>,
    pub(crate) updates: Mutex<HashMap<String, u32>>,
    pub(crate) unknown: Vec<String>,
    pub(crate) throttle_every: u64,
    pub(crate) calls: AtomicU64,
    pub(crate) delay: Duration,
    /// Epoch seconds the fake stamps on writes.
    pub(crate) clock_s: AtomicU64,
}

impl FakeShadows {
    fn fault(&self, thing: &ThingName) -> Result<(), ServiceError> {
        let n = self.calls.fetch_add(1, Ordering::Relaxed);
        if self.throttle_every > 0 && n.is_multiple_of(self.throttle_every) {
            return Err(ServiceError::new("X", FaultKind::Throttled, Some("ThrottlingException".into()), "slow down"));
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

    pub(crate) fn set(&self, thing: &str, desired: Value) {
        let stamp = self.clock_s.load(Ordering::Relaxed);
        let metadata = stamps(&desired, stamp);
        if let Ok(mut d) = self.desired.lock() {
            let version = d.get(thing).and_then(|c| c.version).unwrap_or(0) + 1;
            d.insert(
                thing.to_owned(),
                DesiredState { state: desired, metadata, version: Some(version), ..DesiredState::default() },
            );
        }
    }

    pub(crate) fn updates(&self) -> HashMap<String, u32> {
        self.updates.lock().map(|u| u.clone()).unwrap_or_default()
    }
}

fn stamps(desired: &Value, t: u64) -> Value {
    match desired {
        Value::Object(fields) => Value::Object(fields.iter().map(|(k, v)| (k.clone(), stamps(v, t))).collect()),
        _ => json!({"timestamp": t}),
    }
}

impl Shadows for FakeShadows {
    async fn desired(&self, thing: &ThingName, _: Option<&ShadowName>) -> Result<Option<DesiredState>, ServiceError> {
        tokio::time::sleep(self.delay).await;
        self.fault(thing)?;
        Ok(self.desired.lock().map(|d| d.get(thing.as_str()).cloned()).unwrap_or_default())
    }

    async fn update(&self, thing: &ThingName, _: Option<&ShadowName>, document: &str) -> Result<(), ServiceError> {
        tokio::time::sleep(self.delay).await;
        self.fault(thing)?;
        let doc: Value = serde_json::from_str(document).unwrap_or_default();
        let current = self.desired.lock().ok().and_then(|d| d.get(thing.as_str()).and_then(|c| c.version));
        if let Some(expected) = doc["version"].as_u64()
            && current != Some(expected)
        {
            return Err(ServiceError::new("X", FaultKind::Rejected, Some("ConflictException".into()), "version"));
        }
        self.set(thing.as_str(), doc["state"]["desired"].clone());
        if let Ok(mut u) = self.updates.lock() {
            *u.entry(thing.to_string()).or_default() += 1;
        }
        Ok(())
    }
}

pub(crate) struct FakeRegistry {
    pub(crate) groups: HashMap<String, Vec<String>>,
    pub(crate) children: Vec<String>,
    pub(crate) search: Vec<String>,
    pub(crate) calls: AtomicU64,
    pub(crate) page_size: usize,
    /// Page tokens are refused (`InvalidRequestException`) once older than this, from `epoch`.
    pub(crate) token_ttl: Option<(Duration, Instant)>,
}

impl FakeRegistry {
    fn paged(&self, things: &[String], token: Option<&str>) -> Result<Page, ServiceError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let (position, issued) = token.and_then(|t| t.split_once('@')).unwrap_or(("0", "0"));
        if let (Some((ttl, epoch)), Some(_)) = (self.token_ttl, token)
            && Instant::now().saturating_duration_since(epoch).as_millis()
                > issued.parse::<u128>().unwrap_or(0) + ttl.as_millis()
        {
            let code = Some("InvalidRequestException".into());
            return Err(ServiceError::new("L", FaultKind::Rejected, code, "invalid token"));
        }
        let now = self.token_ttl.map_or(0, |(_, epoch)| Instant::now().saturating_duration_since(epoch).as_millis());
        let start: usize = position.parse().unwrap_or(0);
        let end = (start + self.page_size).min(things.len());
        let next = (end < things.len()).then(|| format!("{end}@{now}"));
        Ok(Page { things: things[start..end].to_vec(), next })
    }
}

impl Registry for FakeRegistry {
    async fn things_in_group(&self, group: &ThingGroupName, token: Option<&str>) -> Result<Page, ServiceError> {
        match self.groups.get(group.as_str()) {
            Some(things) => self.paged(things, token),
            None => {
                Err(ServiceError::new("L", FaultKind::Rejected, Some("ResourceNotFoundException".into()), "no group"))
            }
        }
    }
    async fn child_groups(&self, _: &ThingGroupName) -> Result<Vec<ThingGroupName>, ServiceError> {
        Ok(self.children.iter().filter_map(|c| ThingGroupName::parse(c.as_str()).ok()).collect())
    }
    async fn search(&self, _: &str, token: Option<&str>) -> Result<Page, ServiceError> {
        self.paged(&self.search, token)
    }
}

pub(crate) fn names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

pub(crate) fn registry() -> FakeRegistry {
    FakeRegistry {
        groups: HashMap::from([
            ("prod".to_owned(), names("g", 10)),
            ("child".to_owned(), [names("g", 2), names("c", 5)].concat()),
        ]),
        children: vec!["child".into()],
        search: [names("c", 3), names("s", 4)].concat(),
        calls: AtomicU64::new(0),
        page_size: 3,
        token_ttl: None,
    }
}

pub(crate) async fn run_with(
    plan: &PushPlan,
    shadows: &impl Shadows,
    registry: &FakeRegistry,
    pace: &Pace,
    start: SegmentStart,
) -> SegmentOutcome {
    let sources = super::sources_for(plan, registry).await.expect("resolving the sources");
    run_segment(
        &Segment { plan, sources: &sources, shadows, registry, journal: &NoJournal, journal_shards: 1, pace },
        start,
        |_| {},
    )
    .await
}

pub(crate) async fn run(
    plan: &PushPlan,
    shadows: &FakeShadows,
    registry: &FakeRegistry,
    budget: Duration,
    start: Cursor,
) -> SegmentOutcome {
    let pace = Pace::new(100_000, 8, Instant::now() + budget, Duration::from_millis(200), Duration::from_millis(50));
    run_with(plan, shadows, registry, &pace, SegmentStart { cursor: start, ..SegmentStart::default() }).await
}

pub(crate) fn request(extra: Value) -> PushPlan {
    let mut r = json!({"pushId": "p1", "desired": {"settings": {"mode": 1}},
                       "targets": {"things": ["g0", "x1", "x1"], "thingGroup": "prod", "recursive": true, "query": "q"}});
    if let (Some(r), Value::Object(extra)) = (r.as_object_mut(), extra) {
        r.extend(extra);
    }
    validate_request(&r, 100_000, Some(&|| "id".into())).expect("a valid request")
}

/// Runs segments until the push is complete; returns how many it took.
pub(crate) async fn to_completion(
    plan: &PushPlan,
    shadows: &FakeShadows,
    registry: &FakeRegistry,
    pace: impl Fn() -> Pace,
) -> (u32, u64) {
    let (mut cursor, mut segments, mut targets) = (Cursor::default(), 0, 0);
    loop {
        segments += 1;
        let pace = pace();
        let out = run_with(plan, shadows, registry, &pace, SegmentStart { cursor, ..SegmentStart::default() }).await;
        assert!(Instant::now() < pace.deadline, "segment {segments} ran to its deadline");
        targets += out.targets;
        match out.cursor {
            Some(next) => cursor = next,
            None => return (segments, targets),
        }
        assert!(segments < 200, "no progress");
    }
}

/// An in-memory journal: entries by key, put-if-absent as the table's. With a page size, pages are read as a
/// query reads them, and an empty page with a next key comes between any two (as DynamoDB may answer).
#[derive(Default)]
pub(crate) struct FakeJournal(pub(crate) Mutex<std::collections::BTreeMap<String, JournalEntry>>, pub(crate) usize);

impl Journal for FakeJournal {
    async fn record_previous(&self, _: JournalRef<'_>, _: u64, entry: &JournalEntry) -> Result<(), ServiceError> {
        if let Ok(mut j) = self.0.lock() {
            j.entry(entry.key()).or_insert_with(|| entry.clone());
        }
        Ok(())
    }
    async fn previous_page(
        &self,
        _: JournalRef<'_>,
        phase: Option<u32>,
        after: Option<&str>,
    ) -> Result<JournalPage, ServiceError> {
        if self.1 == 0 {
            return Ok(JournalPage::default());
        }
        let after = match after {
            Some(key) if !key.starts_with('!') => {
                return Ok(JournalPage { entries: Vec::new(), next: Some(format!("!{key}")) });
            }
            Some(key) => Some(key.trim_start_matches('!').to_owned()),
            None => None,
        };
        let journal = self.0.lock().map(|j| j.clone()).unwrap_or_default();
        let mut left = journal
            .into_iter()
            .filter(|(key, e)| after.as_ref().is_none_or(|a| key > a) && phase.is_none_or(|p| e.phase == p));
        let entries: Vec<JournalEntry> = left.by_ref().take(self.1).map(|(_, e)| e).collect();
        let next = entries.last().filter(|_| left.next().is_some()).map(JournalEntry::key);
        Ok(JournalPage { entries, next })
    }
    async fn previous(&self, _: JournalRef<'_>, key: &str) -> Result<Option<JournalEntry>, ServiceError> {
        Ok(self.0.lock().ok().and_then(|j| j.get(key).cloned()))
    }
}

/// A journal in shards, in memory, read as the push store reads it: each shard a page of at most 2 entries
/// after the key, the pages merged ([`super::journal::merge_pages`]).
pub(crate) struct ShardedJournal(pub(crate) Mutex<Vec<std::collections::BTreeMap<String, JournalEntry>>>);

impl ShardedJournal {
    pub(crate) fn new(shards: usize) -> Self {
        Self(Mutex::new(vec![Default::default(); shards]))
    }
}

impl Journal for ShardedJournal {
    async fn record_previous(&self, at: JournalRef<'_>, _: u64, entry: &JournalEntry) -> Result<(), ServiceError> {
        let shard = at.shard_of(&entry.thing_name).unwrap_or(0) as usize;
        if let Ok(mut shards) = self.0.lock() {
            shards[shard].entry(entry.key()).or_insert_with(|| entry.clone());
        }
        Ok(())
    }
    async fn previous_page(
        &self,
        _: JournalRef<'_>,
        phase: Option<u32>,
        after: Option<&str>,
    ) -> Result<JournalPage, ServiceError> {
        use super::journal::{ShardPage, merge_pages};
        let shards = self.0.lock().map(|s| s.clone()).unwrap_or_default();
        let pages = shards
            .into_iter()
            .map(|shard| {
                let mut left = shard
                    .into_values()
                    .filter(|e| after.is_none_or(|a| e.key().as_str() > a) && phase.is_none_or(|p| e.phase == p));
                let entries: Vec<JournalEntry> = left.by_ref().take(2).collect();
                let last = entries.last().filter(|_| left.next().is_some()).map(JournalEntry::key);
                ShardPage { entries, last }
            })
            .collect();
        Ok(merge_pages(pages))
    }
    async fn previous(&self, at: JournalRef<'_>, key: &str) -> Result<Option<JournalEntry>, ServiceError> {
        let thing = key.split_once('#').map_or(key, |(_, t)| t);
        let shard = at.shard_of(thing).unwrap_or(0) as usize;
        Ok(self.0.lock().ok().and_then(|s| s[shard].get(key).cloned()))
    }
}
