//! Where a push's journal (previous values), failures and conflicts are kept: spread over `shards` partitions of the
//! push table, a thing's in the one a stable hash of its name picks, so that a rollout at the account's quota stays
//! under DynamoDB's write limit per partition key value (1000 write units a second; a write takes a unit per KB of
//! its item). How many is decided once, when the push is created, from its rate, the write units an entry of its
//! pushed values is expected to take ([`entry_units`]) and a budget of units per partition, and kept on its record.
//! The entries actually written may be larger (a thing's previous values of a key may outweigh the pushed ones):
//! each process also paces its writes to any one partition in write units ([`PartitionPacer`]), so that such a
//! shard is slowed rather than refused.
//!
//! Every partition sorts its entries by the same key (`<phase:03>#<thing>`), so one page of the whole journal after
//! a key is the merge of a page of each partition after it, cut at the smallest last key of those that have more
//! ([`merge_pages`]): exact, and resumable from that one key.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;

use super::request::MAX_PUSH_ID_BYTES;
use super::{JournalEntry, JournalPage, PushPlan};

/// The longest thing name AWS IoT accepts, in bytes.
const THING_NAME_BYTES: usize = 128;

/// A push's journal: its id, and how many partitions its entries are spread over (0: a push recorded before
/// journals were sharded, whose entries all sit in the push's own partition).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalRef<'a> {
    pub push_id: &'a str,
    pub shards: u32,
}

impl<'a> JournalRef<'a> {
    pub fn new(push_id: &'a str, shards: u32) -> Self {
        Self { push_id, shards }
    }

    /// The shard `thing`'s entries go to; `None` for an unsharded journal.
    pub fn shard_of(&self, thing: &str) -> Option<u32> {
        (self.shards > 0).then(|| shard_of(thing, self.shards))
    }

    /// Every shard to read, in order; `[None]` for an unsharded journal.
    pub fn shards(&self) -> Vec<Option<u32>> {
        if self.shards == 0 { vec![None] } else { (0..self.shards).map(Some).collect() }
    }
}

/// 64-bit FNV-1a: stable across processes, versions and platforms (std's hasher is not).
fn fnv1a(bytes: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes.iter().fold(OFFSET, |hash, b| (hash ^ u64::from(*b)).wrapping_mul(PRIME))
}

/// The shard (`0..shards`) of `thing`. `shards` 0 is taken as 1.
pub fn shard_of(thing: &str, shards: u32) -> u32 {
    let hash = fnv1a(thing.as_bytes());
    // Fold the high bits in: names that differ in their last character differ most in the low bits of the product.
    ((hash ^ (hash >> 32)) % u64::from(shards.max(1))) as u32
}

/// The most shards a journal is spread over: every page of a journal walk queries each of them.
pub const MAX_SHARDS: u32 = 100;

/// DynamoDB's write units a second per partition key value, whatever the table's capacity mode.
pub const PARTITION_UNITS_LIMIT: u32 = 1000;

/// The bytes one write unit covers: an item's size (attribute names and values) is rounded up to it.
pub const UNIT_BYTES: usize = 1024;

/// The write units of an item of `bytes`: rounded up to 1 KB, at least 1.
pub fn units_of(bytes: usize) -> u32 {
    u32::try_from(bytes.div_ceil(UNIT_BYTES).max(1)).unwrap_or(u32::MAX)
}

/// A journal entry's bytes besides its `values`, at most: the attribute names (`pk`, `sk`, `thingName`, `phase`,
/// `values`, `expiresAt`), the partition key (`<pushId>#<shard>`: 64 + 1 + 2), the sort key
/// (`previous#<phase:03>#<thing>`: 9 + 4 + 128), the thing's name (128), and two numbers (21 each, DynamoDB's most).
pub const ENTRY_KEYS_BYTES: usize =
    (2 + 2 + 9 + 5 + 6 + 9) + (MAX_PUSH_ID_BYTES + 1 + 2) + (9 + 4 + THING_NAME_BYTES) + THING_NAME_BYTES + 2 * 21;

/// The write units a journal entry of a push of `desired` is expected to take: its keys ([`ENTRY_KEYS_BYTES`]) and
/// previous values the size of the pushed ones (the JSON text of `desired`), as a setting replaced by one of its
/// own kind is. An entry may be larger: its values are the thing's, up to its whole `desired` (8 KB by AWS's
/// default limit: 9 units).
pub fn entry_units(desired: &Value) -> u32 {
    units_of(ENTRY_KEYS_BYTES + desired.to_string().len())
}

/// How many partitions a push's journal needs: the write units it writes a second (its update rate, times the units
/// of an entry) over the units one partition is given (`PUSH_PARTITION_WPS`), rounded up, at least 1 and at most
/// [`MAX_SHARDS`]. A rollout writes one journal entry per thing it updates; any push writes a failure (one unit)
/// per thing it gives up on.
pub fn shard_count(rate: u32, partition_wps: u32, entry_units: u32) -> u32 {
    let units = u64::from(rate) * u64::from(entry_units.max(1));
    let shards = units.div_ceil(u64::from(partition_wps.max(1))).clamp(1, u64::from(MAX_SHARDS));
    u32::try_from(shards).unwrap_or(MAX_SHARDS)
}

/// The shards of a new push's journal: a rollout's sized by its entries ([`entry_units`]), any other push's (its
/// failures only) by one unit a thing.
pub fn shards_for(plan: &PushPlan, partition_wps: u32) -> u32 {
    let units = if plan.rollout.is_some() { entry_units(&plan.desired) } else { 1 };
    shard_count(plan.max_requests_per_second, partition_wps, units)
}

/// The write units a second a process lets itself write to any one partition: twice the budget the shards are
/// sized by (room for things that hash unevenly and entries larger than expected), never over DynamoDB's limit.
pub fn pacing_units(partition_wps: u32) -> u32 {
    partition_wps.saturating_mul(2).clamp(1, PARTITION_UNITS_LIMIT)
}

/// One partition's write units: a bucket holding half a second's worth, refilled at `rate` a second. A write takes
/// its units at once, into debt if need be, and waits until the debt is paid: in any span of time a partition is
/// written at most half a second's worth more than its rate. DynamoDB (and the front that stands in for it) allow a
/// second's worth: writes that reach it up to half a second later or earlier than paced still fit.
#[derive(Debug, Clone)]
struct UnitBucket {
    tokens: f64,
    at: Duration,
}

/// Buckets kept before the idle (full) ones are dropped.
const PACER_KEEPS: usize = 256;

/// Write units paced per partition key value, in one process: [`PartitionPacer::take`] says how long a write must
/// wait. Time is given as a [`Duration`] since any fixed origin, so that the pacer is tested without a clock.
#[derive(Debug, Clone)]
pub struct PartitionPacer {
    rate: f64,
    /// The most units a bucket holds: half a second's worth.
    holds: f64,
    buckets: HashMap<String, UnitBucket>,
}

impl PartitionPacer {
    /// A pacer admitting `units_per_second` write units a second to each partition (at least 1).
    pub fn new(units_per_second: u32) -> Self {
        let rate = f64::from(units_per_second.max(1));
        Self { rate, holds: rate / 2.0, buckets: HashMap::new() }
    }

    /// Takes `units` of `partition`'s bucket at `now`: how long the write must wait before it is sent (zero when
    /// the bucket held them).
    pub fn take(&mut self, partition: &str, units: u32, now: Duration) -> Duration {
        let (rate, holds) = (self.rate, self.holds);
        if self.buckets.len() >= PACER_KEEPS && !self.buckets.contains_key(partition) {
            // A bucket idle long enough is full again: one made anew is the same.
            self.buckets.retain(|_, b| (b.tokens + now.saturating_sub(b.at).as_secs_f64() * rate) < holds);
        }
        let bucket = self.buckets.entry(partition.to_owned()).or_insert(UnitBucket { tokens: holds, at: now });
        let now = now.max(bucket.at);
        bucket.tokens = (bucket.tokens + (now - bucket.at).as_secs_f64() * rate).min(holds) - f64::from(units);
        bucket.at = now;
        if bucket.tokens >= 0.0 { Duration::ZERO } else { Duration::from_secs_f64(-bucket.tokens / rate) }
    }
}

/// How many entries to ask each of `shards` partitions for, for a page of about `page` entries: at least a few,
/// so that a journal of many shards still moves on by more than one entry a query.
pub fn per_shard_limit(page: u32, shards: u32) -> u32 {
    page.div_ceil(shards.max(1)).max(8)
}

/// One partition's page of a journal read: its entries in key order, and the key it stopped at (its
/// `LastEvaluatedKey`) when it has more.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ShardPage {
    pub entries: Vec<JournalEntry>,
    pub last: Option<String>,
}

/// One page of the whole journal from one page of each partition, all read after the same key: every entry up to
/// the smallest key a partition with more stopped at, in key order; the next page starts after that key (`None`
/// when no partition has more). Entries past it are read again with the next page, so nothing is skipped or
/// repeated.
pub fn merge_pages(pages: Vec<ShardPage>) -> JournalPage {
    let next = pages.iter().filter_map(|p| p.last.clone()).min();
    let mut entries: Vec<JournalEntry> =
        pages.into_iter().flat_map(|p| p.entries).filter(|e| next.as_ref().is_none_or(|cut| e.key() <= *cut)).collect();
    entries.sort_by_key(JournalEntry::key);
    JournalPage { entries, next }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    #[test]
    fn a_things_shard_is_stable() {
        // Fixed values: a change of the hash would strand every journal written before it.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
        let shards: Vec<u32> = ["sensor-1", "sensor-2", "fleet-0042"].iter().map(|t| shard_of(t, 8)).collect();
        assert_eq!(shards, [shard_of("sensor-1", 8), shard_of("sensor-2", 8), shard_of("fleet-0042", 8)]);
        assert_eq!(shard_of("anything", 1), 0);
        assert_eq!(shard_of("anything", 0), 0);
        assert_eq!(JournalRef::new("p", 0).shard_of("anything"), None);
        assert_eq!(JournalRef::new("p", 0).shards(), [None]);
        assert_eq!(JournalRef::new("p", 3).shards(), [Some(0), Some(1), Some(2)]);
    }

    #[test]
    fn things_spread_evenly_over_the_shards() {
        for shards in [2u32, 4, 8, 10, 16] {
            let mut counts = vec![0u32; shards as usize];
            let things = 20_000;
            for i in 0..things {
                counts[shard_of(&format!("fleet-{i}"), shards) as usize] += 1;
            }
            let mean = things as f64 / f64::from(shards);
            for (shard, count) in counts.iter().enumerate() {
                let off = (f64::from(*count) - mean).abs() / mean;
                assert!(off < 0.05, "{shards} shards: shard {shard} holds {count} of {things} (mean {mean})");
            }
        }
    }

    #[test]
    fn the_shard_count_follows_the_rate() {
        assert_eq!(shard_count(4000, 500, 1), 8);
        assert_eq!(shard_count(4001, 500, 1), 9);
        assert_eq!(shard_count(400, 500, 1), 1);
        assert_eq!(shard_count(200, 25, 1), 8);
        assert_eq!(shard_count(1, 500, 1), 1);
        assert_eq!(shard_count(0, 500, 1), 1);
        assert_eq!(shard_count(10, 0, 1), 10);
        assert_eq!(shard_count(4000, 1, 1), MAX_SHARDS);
        assert_eq!(shard_count(u32::MAX, 1, u32::MAX), MAX_SHARDS);
        assert_eq!(per_shard_limit(100, 1), 100);
        assert_eq!(per_shard_limit(100, 8), 13);
        assert_eq!(per_shard_limit(100, 40), 8);
    }

    #[test]
    fn the_shard_count_follows_the_write_units_of_an_entry() {
        // A 3 KB setting at AWS's 4000/s: entries of 4 units (3 KB of values and their keys), 32 partitions.
        assert_eq!(shard_count(4000, 500, 4), 32);
        assert_eq!(shard_count(4000, 500, 9), 72);
        assert_eq!(units_of(0), 1);
        assert_eq!(units_of(1024), 1);
        assert_eq!(units_of(1025), 2);
        assert_eq!(ENTRY_KEYS_BYTES, 411, "the bound docs/records.md gives");
        assert_eq!(entry_units(&json!({"settings": {"mode": 7}})), 1);
        let setting = |bytes: usize| json!({"settings": {"image": "x".repeat(bytes)}});
        assert_eq!(entry_units(&setting(3000)), 4);
        assert_eq!(entry_units(&setting(1024 - ENTRY_KEYS_BYTES - 30)), 1);
        assert_eq!(entry_units(&setting(8 * 1024)), 9);
        assert_eq!(pacing_units(500), 1000);
        assert_eq!(pacing_units(800), PARTITION_UNITS_LIMIT);
        assert_eq!(pacing_units(3), 6);
        assert_eq!(pacing_units(0), 1);
    }

    #[test]
    fn a_rollouts_shards_are_sized_by_its_pushed_values() {
        let plan = |desired: Value, rollout: bool| {
            let mut request = json!({"pushId": "p", "desired": desired, "targets": {"things": ["a"]},
                                     "maxRequestsPerSecond": 4000});
            if rollout {
                request["rollout"] = json!({"phases": [{"percent": 100}]});
            }
            super::super::validate_request(&request, 4000, None).expect("a valid request")
        };
        let large = json!({"settings": {"image": "x".repeat(3000)}});
        assert_eq!(shards_for(&plan(large.clone(), true), 500), 32);
        assert_eq!(shards_for(&plan(large, false), 500), 8, "no journal: failures of one unit");
        assert_eq!(shards_for(&plan(json!({"mode": 1}), true), 500), 8);
    }

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn a_partition_is_paced_in_write_units() {
        let mut pacer = PartitionPacer::new(10);
        // Half a second's worth at once, then each write waits for its units.
        assert_eq!(pacer.take("a", 4, secs(0.0)), Duration::ZERO);
        assert_eq!(pacer.take("a", 4, secs(0.0)), secs(0.3));
        assert_eq!(pacer.take("a", 4, secs(0.0)), secs(0.7));
        // Another partition has its own bucket.
        assert_eq!(pacer.take("b", 5, secs(0.0)), Duration::ZERO);
        // The debt is paid at the rate; idle, the bucket refills to half a second's worth and no more.
        assert_eq!(pacer.take("a", 1, secs(0.6)), secs(0.2));
        assert_eq!(pacer.take("a", 5, secs(5.0)), Duration::ZERO);
        assert_eq!(pacer.take("a", 1, secs(5.0)), secs(0.1));
        // A write larger than the bucket waits for the rest of its units.
        let mut pacer = PartitionPacer::new(6);
        assert_eq!(pacer.take("a", 9, secs(0.0)), secs(1.0));
    }

    #[test]
    fn no_second_takes_more_than_its_rate_and_half_a_second() {
        // Writes of 1 to 9 units, asked for at random moments; each sent when the pacer says.
        let mut pacer = PartitionPacer::new(50);
        let mut sent: Vec<(f64, u32)> = Vec::new();
        let mut seed = 7u64;
        let mut now = 0.0;
        for _ in 0..2000 {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            now += (seed >> 40) as f64 / (1u64 << 24) as f64 * 0.05;
            let units = 1 + (seed >> 20) as u32 % 9;
            let wait = pacer.take("p", units, secs(now));
            sent.push((now + wait.as_secs_f64(), units));
        }
        sent.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut busiest = 0;
        for (i, (start, _)) in sent.iter().enumerate() {
            let window: u32 = sent[i..].iter().take_while(|(at, _)| *at < start + 1.0).map(|(_, u)| u).sum();
            busiest = busiest.max(window);
        }
        // The rate, the bucket, and the one write that may go into debt at the window's end.
        assert!(busiest <= 50 + 25 + 9, "{busiest} units in one second");
        assert!(busiest >= 50, "the writes were asked for faster than the rate: {busiest}");
    }

    #[test]
    fn idle_buckets_are_dropped() {
        let mut pacer = PartitionPacer::new(10);
        for i in 0..PACER_KEEPS {
            pacer.take(&format!("p{i}"), 10, secs(0.0));
        }
        assert_eq!(pacer.buckets.len(), PACER_KEEPS);
        pacer.take("busy", 18, secs(0.5));
        assert_eq!(pacer.buckets.len(), PACER_KEEPS + 1, "none idle a second yet");
        assert_eq!(pacer.take("new", 1, secs(2.0)), Duration::ZERO);
        assert_eq!(pacer.buckets.len(), 2, "the busy one kept: {:?}", pacer.buckets.keys());
        assert_eq!(pacer.take("busy", 1, secs(2.0)), Duration::ZERO);
    }

    fn entry(phase: u32, thing: &str) -> JournalEntry {
        JournalEntry { thing_name: thing.into(), phase, values: json!(null) }
    }

    /// The adapter's reading, in memory: each shard sorted by key, `limit` entries after `after`.
    fn read(shards: &[Vec<JournalEntry>], after: Option<&str>, limit: usize) -> JournalPage {
        let pages = shards
            .iter()
            .map(|shard| {
                let rest: Vec<JournalEntry> =
                    shard.iter().filter(|e| after.is_none_or(|a| e.key().as_str() > a)).cloned().collect();
                let entries: Vec<JournalEntry> = rest.iter().take(limit).cloned().collect();
                let last = (rest.len() > limit).then(|| entries.last().map(JournalEntry::key)).flatten();
                ShardPage { entries, last }
            })
            .collect();
        merge_pages(pages)
    }

    fn sharded(things: &BTreeSet<(u32, String)>, shards: u32) -> Vec<Vec<JournalEntry>> {
        let mut by_shard: BTreeMap<u32, Vec<JournalEntry>> = (0..shards).map(|s| (s, Vec::new())).collect();
        for (phase, thing) in things {
            by_shard.entry(shard_of(thing, shards)).or_default().push(entry(*phase, thing));
        }
        by_shard
            .into_values()
            .map(|mut v| {
                v.sort_by_key(JournalEntry::key);
                v
            })
            .collect()
    }

    #[test]
    fn a_walk_page_by_page_sees_every_entry_once_in_order() {
        let things: BTreeSet<(u32, String)> = (0..500).map(|i| (1 + i % 3, format!("t-{i}"))).collect();
        let shards = sharded(&things, 6);
        let (mut seen, mut after, mut pages) = (Vec::new(), None::<String>, 0);
        loop {
            let page = read(&shards, after.as_deref(), 10);
            assert!(!page.entries.is_empty() || page.next.is_none(), "a page without entries that has more");
            seen.extend(page.entries.iter().map(JournalEntry::key));
            pages += 1;
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        let expected: Vec<String> = things.iter().map(|(p, t)| entry(*p, t).key()).collect();
        let mut sorted = expected.clone();
        sorted.sort();
        assert_eq!(seen, sorted);
        assert!(pages < 500 / 10 * 2, "{pages} pages");
    }

    #[test]
    fn a_page_stops_at_the_smallest_last_key() {
        let page = merge_pages(vec![
            ShardPage { entries: vec![entry(1, "a"), entry(1, "c")], last: Some("001#c".into()) },
            ShardPage { entries: vec![entry(1, "b"), entry(1, "d")], last: None },
            ShardPage { entries: vec![entry(1, "bb")], last: Some("001#bb".into()) },
        ]);
        let keys: Vec<String> = page.entries.iter().map(JournalEntry::key).collect();
        assert_eq!(keys, ["001#a", "001#b", "001#bb"]);
        assert_eq!(page.next.as_deref(), Some("001#bb"));
        let last = merge_pages(vec![ShardPage { entries: vec![entry(2, "z")], last: None }, ShardPage::default()]);
        assert_eq!((last.entries.len(), last.next), (1, None));
    }

    proptest! {
        /// Any journal, any shard count and page size: a walk resumed from each page's key sees every entry once.
        #[test]
        fn any_walk_sees_every_entry_once(
            names in proptest::collection::btree_set((1u32..4, "[a-z0-9]{1,6}"), 0..120),
            shards in 1u32..12,
            limit in 1usize..20,
        ) {
            let things: BTreeSet<(u32, String)> = names;
            let by_shard = sharded(&things, shards);
            let (mut seen, mut after) = (Vec::new(), None::<String>);
            for _ in 0..=things.len() + 1 {
                let page = read(&by_shard, after.as_deref(), limit);
                seen.extend(page.entries.iter().map(JournalEntry::key));
                match page.next {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
            let mut expected: Vec<String> = things.iter().map(|(p, t)| entry(*p, t).key()).collect();
            expected.sort();
            prop_assert_eq!(seen, expected);
        }
    }
}
