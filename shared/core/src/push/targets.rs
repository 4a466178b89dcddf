//! Target sources, walked page by page as the push goes, and the cursor a hand-off resumes from.

use std::collections::HashSet;
use std::hash::BuildHasher;

use serde::{Deserialize, Serialize};

use super::PushPlan;
use crate::names::ThingGroupName;
use crate::service::ServiceError;

/// The IoT registry, as far as resolving targets needs it.
pub trait Registry: Sync {
    /// One page of the things directly in `group`.
    fn things_in_group(
        &self,
        group: &ThingGroupName,
        token: Option<&str>,
    ) -> impl Future<Output = Result<Page, ServiceError>> + Send;
    /// Every group below `group`, at any depth.
    fn child_groups(
        &self,
        group: &ThingGroupName,
    ) -> impl Future<Output = Result<Vec<ThingGroupName>, ServiceError>> + Send;
    /// One page of a fleet-index search (`SearchIndex` on `AWS_Things`).
    fn search(&self, query: &str, token: Option<&str>) -> impl Future<Output = Result<Page, ServiceError>> + Send;
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Page {
    pub things: Vec<String>,
    pub next: Option<String>,
}

/// One source of targets. A recursive group becomes one source per group, each listed directly: that works the
/// same on every registry and lets duplicates across groups be caught like any other.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "name", rename_all = "camelCase")]
pub enum Source {
    Things,
    Group(ThingGroupName),
    Query(String),
}

/// Where a segment starts: the source, the page token that fetches the current page, the offset in that page,
/// how many things of the source the pages before it held (so that a later segment can know them again), and
/// things an earlier segment started but could not finish (they are done first).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Cursor {
    pub source: usize,
    pub token: Option<String>,
    pub offset: usize,
    /// The names of the last things of this source taken, up to three, the latest last (in the page at `token`, the
    /// latest the one before `offset`; or the last of the page before): a segment that lists the page again and does
    /// not find the latest there (things before it left the source) goes on after the latest of them still there;
    /// after a refused token, the meeting again ends at the latest.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub last: Vec<String>,
    #[serde(default)]
    pub walked: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub redo: Vec<String>,
    /// Things of this source to meet again from here: the registry refused a saved page token, so the source is
    /// listed again from its start, and its first `again` things are the ones walked before (as far as the
    /// listing's order holds). Each is looked at, not skipped: one that holds the pushed values is done, one that
    /// does not (it joined the source meanwhile) is pushed.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub again: u64,
    /// Things of this source to meet after the `again` ones as perhaps walked before: as many as the relisting's
    /// first page held, in case things that joined the walked stretch pushed walked ones down the listing. One
    /// that holds the pushed values written since the push started, or that this phase's journal holds, is done;
    /// any other is new, and taken on as one met for the first time.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub beyond: u64,
    /// The last thing walked before the refused token: met there in the new listing, it ends the meeting again
    /// (`again` and `beyond`), however many things left or joined the walked stretch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub again_to: Option<String>,
    /// This source's listing is one started again after a refused token: a token refused in it is not met again
    /// from the start (the walk would never gain ground if every token were refused), its things before the
    /// position are skipped by their position.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub relisted: bool,
    /// Things met again (`again`) that a segment could not finish: done first, and met again as they were.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub redo_again: Vec<String>,
    /// Things met after those (`beyond`) that a segment could not finish: done first, and met as they were.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub redo_beyond: Vec<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The sources of `plan`, in walking order: listed things, the group and its children, the query.
pub async fn sources_for(plan: &PushPlan, registry: &impl Registry) -> Result<Vec<Source>, ServiceError> {
    let mut sources = Vec::new();
    if !plan.targets.things.is_empty() {
        sources.push(Source::Things);
    }
    if let Some(group) = &plan.targets.thing_group {
        sources.push(Source::Group(group.clone()));
        if plan.targets.recursive {
            sources.extend(registry.child_groups(group).await?.into_iter().map(Source::Group));
        }
    }
    if let Some(query) = &plan.targets.query {
        sources.push(Source::Query(query.clone()));
    }
    Ok(sources)
}

/// Checks that every source of `plan` can be walked, with one cheap request each: the thing group exists (the
/// first page of its members), the query is one the fleet index takes (its first page). `Ok(Some(why))`: a source
/// that cannot be walked, said as a sentence; no retry changes it. Paging through the sources is left to the
/// segments: a million-thing group is checked in one request, not listed.
pub async fn check_sources(plan: &PushPlan, registry: &impl Registry) -> Result<Option<String>, ServiceError> {
    let refused = |e: &ServiceError, codes: &[&str]| {
        e.kind == crate::service::FaultKind::Rejected && e.code.as_deref().is_some_and(|c| codes.contains(&c))
    };
    if let Some(group) = &plan.targets.thing_group {
        match registry.things_in_group(group, None).await {
            Ok(_) => {}
            Err(e) if refused(&e, &["ResourceNotFoundException"]) => {
                return Ok(Some(format!("thing group {group} does not exist")));
            }
            Err(e) => return Err(e),
        }
    }
    if let Some(query) = &plan.targets.query {
        match registry.search(query, None).await {
            Ok(_) => {}
            Err(e) if refused(&e, &["InvalidQueryException"]) => {
                return Ok(Some(format!("the fleet index refuses the query {query:?} (InvalidQueryException)")));
            }
            Err(e) if refused(&e, &["ResourceNotFoundException", "IndexNotReadyException"]) => {
                let code = e.code.as_deref().unwrap_or_default();
                return Ok(Some(format!(
                    "the query needs the fleet index AWS_Things, which is not enabled or not ready ({code})"
                )));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// Thing names of earlier sources, as 128-bit fingerprints (two independent SipHash keys): 16 bytes a thing (about
/// 35 with the hash table's overhead), whatever the names' length. Only sources that a later source could repeat
/// are remembered: a push with one source keeps nothing.
#[derive(Debug, Default)]
pub struct Seen {
    keys: (std::collections::hash_map::RandomState, std::collections::hash_map::RandomState),
    set: HashSet<u128>,
}

impl Seen {
    fn fingerprint(&self, name: &str) -> u128 {
        (u128::from(self.keys.0.hash_one(name)) << 64) | u128::from(self.keys.1.hash_one(name))
    }

    /// `true` when `name` is new.
    pub fn insert(&mut self, name: &str) -> bool {
        let fp = self.fingerprint(name);
        self.set.insert(fp)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.set.contains(&self.fingerprint(name))
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.set.len()
    }
}

/// One page of `source`.
pub async fn page(
    plan: &PushPlan,
    source: &Source,
    token: Option<&str>,
    registry: &impl Registry,
) -> Result<Page, ServiceError> {
    match source {
        Source::Things => Ok(Page { things: plan.targets.things.iter().map(|t| t.to_string()).collect(), next: None }),
        Source::Group(group) => registry.things_in_group(group, token).await,
        Source::Query(query) => registry.search(query, token).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seen_deduplicates() {
        let mut seen = Seen::default();
        assert!(seen.insert("a"));
        assert!(seen.insert("b"));
        assert!(!seen.insert("a"));
        assert_eq!(seen.len(), 2);
        let many = (0..100_000).filter(|i| seen.insert(&format!("thing-{i}"))).count();
        assert_eq!(many, 100_000, "no fingerprint collisions");
    }

    #[test]
    fn cursor_round_trips() {
        let c = Cursor {
            source: 2,
            token: Some("t".into()),
            offset: 7,
            last: vec!["g5".into(), "g6".into()],
            walked: 500,
            redo: vec!["x".into()],
            again: 3,
            beyond: 4,
            again_to: Some("g2".into()),
            relisted: true,
            redo_again: vec!["y".into()],
            redo_beyond: vec!["z".into()],
        };
        let json = serde_json::to_string(&c).unwrap_or_default();
        assert_eq!(serde_json::from_str::<Cursor>(&json).ok(), Some(c));
        let s = vec![
            Source::Things,
            Source::Group(ThingGroupName::parse("g").expect("a valid group name")),
            Source::Query("q".into()),
        ];
        let json = serde_json::to_string(&s).unwrap_or_default();
        assert_eq!(json, r#"[{"kind":"things"},{"kind":"group","name":"g"},{"kind":"query","name":"q"}]"#);
    }
}
