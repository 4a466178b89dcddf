//! Where a push's journal (previous values), failures and conflicts are kept: spread over `shards` partitions of the
//! push table, a thing's in the one a stable hash of its name picks, so that a rollout at the account's quota stays
//! under DynamoDB's write limit per partition key value. How many is decided once, when the push is created, from
//! its rate and a write budget per partition, and kept on its record.
//!
//! Every partition sorts its entries by the same key (`<phase:03>#<thing>`), so one page of the whole journal after
//! a key is the merge of a page of each partition after it, cut at the smallest last key of those that have more
//! ([`merge_pages`]): exact, and resumable from that one key.

use super::{JournalPage, Previous};

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

/// How many partitions a push's journal needs: its update rate over the writes one partition is given
/// (`PUSH_PARTITION_WPS`), rounded up, at least 1 and at most [`MAX_SHARDS`]. A rollout writes one journal entry per
/// thing it updates.
pub fn shard_count(rate: u32, partition_wps: u32) -> u32 {
    rate.div_ceil(partition_wps.max(1)).clamp(1, MAX_SHARDS)
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
    pub entries: Vec<Previous>,
    pub last: Option<String>,
}

/// One page of the whole journal from one page of each partition, all read after the same key: every entry up to
/// the smallest key a partition with more stopped at, in key order; the next page starts after that key (`None`
/// when no partition has more). Entries past it are read again with the next page, so nothing is skipped or
/// repeated.
pub fn merge_pages(pages: Vec<ShardPage>) -> JournalPage {
    let next = pages.iter().filter_map(|p| p.last.clone()).min();
    let mut entries: Vec<Previous> =
        pages.into_iter().flat_map(|p| p.entries).filter(|e| next.as_ref().is_none_or(|cut| e.key() <= *cut)).collect();
    entries.sort_by_key(Previous::key);
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
        assert_eq!(shard_count(4000, 500), 8);
        assert_eq!(shard_count(4001, 500), 9);
        assert_eq!(shard_count(400, 500), 1);
        assert_eq!(shard_count(200, 25), 8);
        assert_eq!(shard_count(1, 500), 1);
        assert_eq!(shard_count(0, 500), 1);
        assert_eq!(shard_count(10, 0), 10);
        assert_eq!(shard_count(4000, 1), MAX_SHARDS);
        assert_eq!(per_shard_limit(100, 1), 100);
        assert_eq!(per_shard_limit(100, 8), 13);
        assert_eq!(per_shard_limit(100, 40), 8);
    }

    fn entry(phase: u32, thing: &str) -> Previous {
        Previous { thing_name: thing.into(), phase, values: json!(null) }
    }

    /// The adapter's reading, in memory: each shard sorted by key, `limit` entries after `after`.
    fn read(shards: &[Vec<Previous>], after: Option<&str>, limit: usize) -> JournalPage {
        let pages = shards
            .iter()
            .map(|shard| {
                let rest: Vec<Previous> =
                    shard.iter().filter(|e| after.is_none_or(|a| e.key().as_str() > a)).cloned().collect();
                let entries: Vec<Previous> = rest.iter().take(limit).cloned().collect();
                let last = (rest.len() > limit).then(|| entries.last().map(Previous::key)).flatten();
                ShardPage { entries, last }
            })
            .collect();
        merge_pages(pages)
    }

    fn sharded(things: &BTreeSet<(u32, String)>, shards: u32) -> Vec<Vec<Previous>> {
        let mut by_shard: BTreeMap<u32, Vec<Previous>> = (0..shards).map(|s| (s, Vec::new())).collect();
        for (phase, thing) in things {
            by_shard.entry(shard_of(thing, shards)).or_default().push(entry(*phase, thing));
        }
        by_shard
            .into_values()
            .map(|mut v| {
                v.sort_by_key(Previous::key);
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
            seen.extend(page.entries.iter().map(Previous::key));
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
        let keys: Vec<String> = page.entries.iter().map(Previous::key).collect();
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
                seen.extend(page.entries.iter().map(Previous::key));
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
