//! The IoT registry in memory (the `Registry` port): thing groups that gain and lose members while a push walks them,
//! listed a few things a page, with page tokens refused (`InvalidRequestException`) once older than their lifetime, as
//! the local stack's registry front refuses them. A group lists its members in the order they joined; a page token
//! names the position after the last thing it served (each membership has a place of its own, given when it joins),
//! so a member leaving moves no other member across a page boundary: AWS documents nothing about its tokens, and a
//! continuation key is what a paged store gives. The fleet index (`SearchIndex`) answers two kinds of query the
//! same way, in pages with expiring tokens: `thingGroupNames:<group>` (the group's members as they join and leave)
//! and `thingName:<prefix>*` (the indexed things, by name); it refuses any other (`InvalidQueryException`), and its
//! expired tokens with `InvalidTokenException`. The index is up to date at once: AWS's lags, which is not simulated.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shadow_core::names::ThingGroupName;
use shadow_core::push::{Page, Registry};
use shadow_core::service::{FaultKind, ServiceError};

use crate::trace::{Trace, invocation};

#[derive(Default)]
struct State {
    /// Each group's memberships, in the order they joined, those that left included.
    groups: BTreeMap<String, Vec<Member>>,
    /// The things in the fleet index, in the order they were indexed.
    index: Vec<Member>,
    /// The place the next membership gets (1, 2, ...).
    next_place: u64,
    /// Joins, leaves and pages served so far: each one's order among the others.
    events: u64,
    listings: Vec<Listing>,
    /// Page tokens refused: (the registry's event order, the invocation).
    refusals: Vec<(u64, u64)>,
}

/// A membership of a group: the thing, its place in the listing, and when it joined and left (ms since the world
/// began, and the registry's order of events: joins, leaves and pages served).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub thing: String,
    pub place: u64,
    pub joined_ms: u64,
    pub joined: u64,
    pub left: Option<(u64, u64)>,
}

impl Member {
    /// Whether it was a member when `listing` was served.
    pub fn member_at(&self, listing: &Listing) -> bool {
        self.joined < listing.event && self.left.is_none_or(|(_, left)| left > listing.event)
    }
}

/// A page of a group's listing or of a search served: when, to which invocation, of which group or query, the places
/// it covers (after `after`, up to
/// `through`, or to the end of the listing when it is the last page), and whether it was the last page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    pub at_ms: u64,
    pub event: u64,
    pub invocation: u64,
    /// The group listed, or the query searched.
    pub source: String,
    pub after: u64,
    pub through: Option<u64>,
    /// Things the page held.
    pub served: usize,
    pub last: bool,
}

impl Listing {
    /// Whether the page covers the place `place`.
    pub fn covers(&self, place: u64) -> bool {
        place > self.after && self.through.is_none_or(|t| place <= t)
    }
}

#[derive(Clone)]
pub struct SimRegistry {
    state: Arc<Mutex<State>>,
    trace: Trace,
    page_size: usize,
    token_lifetime_ms: u64,
}

impl SimRegistry {
    pub fn new(trace: Trace, page_size: usize, token_lifetime_ms: u64) -> Self {
        Self { state: Arc::default(), trace, page_size: page_size.max(1), token_lifetime_ms }
    }

    /// `thing` joins `group` now (at the end of its listing).
    pub fn join(&self, group: &str, thing: &str) {
        let now = self.trace.now();
        if let Ok(mut s) = self.state.lock() {
            s.next_place += 1;
            s.events += 1;
            let (place, joined) = (s.next_place, s.events);
            s.groups.entry(group.to_owned()).or_default().push(Member {
                thing: thing.to_owned(),
                place,
                joined_ms: now,
                joined,
                left: None,
            });
        }
    }

    /// `thing` enters the fleet index now (at the end of its order).
    pub fn index(&self, thing: &str) {
        let now = self.trace.now();
        if let Ok(mut s) = self.state.lock() {
            s.next_place += 1;
            s.events += 1;
            let member =
                Member { thing: thing.to_owned(), place: s.next_place, joined_ms: now, joined: s.events, left: None };
            s.index.push(member);
        }
    }

    /// The things in the fleet index.
    pub fn indexed(&self) -> Vec<Member> {
        self.state.lock().map(|s| s.index.clone()).unwrap_or_default()
    }

    /// `thing` leaves `group` now; whether it was a member.
    pub fn leave(&self, group: &str, thing: &str) -> bool {
        let now = self.trace.now();
        let Ok(mut s) = self.state.lock() else { return false };
        let event = s.events + 1;
        let member = s
            .groups
            .get_mut(group)
            .and_then(|members| members.iter_mut().find(|m| m.thing == thing && m.left.is_none()));
        let Some(member) = member else { return false };
        member.left = Some((now, event));
        s.events = event;
        true
    }

    /// Every page served so far.
    pub fn listings(&self) -> Vec<Listing> {
        self.state.lock().map(|s| s.listings.clone()).unwrap_or_default()
    }

    /// Every page token refused so far: (its order among joins, leaves and pages served, the invocation).
    pub fn refusals(&self) -> Vec<(u64, u64)> {
        self.state.lock().map(|s| s.refusals.clone()).unwrap_or_default()
    }

    /// The group's memberships, those that left included.
    pub fn members(&self, group: &str) -> Vec<Member> {
        let Ok(s) = self.state.lock() else { return Vec::new() };
        s.groups.get(group).cloned().unwrap_or_default()
    }
}

impl SimRegistry {
    /// One page of `members` after the token's place, for `api` (`source`: the group or the query), or the token
    /// refused with `expired` once older than its lifetime.
    async fn serve(
        &self,
        api: &'static str,
        source: &str,
        token: Option<&str>,
        expired: &'static str,
        members: impl FnOnce(&State) -> Result<Vec<Member>, ServiceError>,
    ) -> Result<Page, ServiceError> {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let now = self.trace.now();
        let (after, issued) = match token {
            None => (0, now),
            Some(t) => {
                let parsed =
                    t.split_once('@').and_then(|(o, i)| Some((o.parse::<u64>().ok()?, i.parse::<u64>().ok()?)));
                let Some((after, issued)) = parsed else {
                    return Err(refused(api, expired, format!("the token {t:?} is not one this registry gave")));
                };
                (after, issued)
            }
        };
        if token.is_some() && now.saturating_sub(issued) > self.token_lifetime_ms {
            self.trace.line(format!("registry: refused a page token of {source} issued at {issued} ms"));
            if let Ok(mut s) = self.state.lock() {
                s.events += 1;
                let event = s.events;
                s.refusals.push((event, invocation()));
            }
            return Err(refused(api, expired, "The pagination token has expired".into()));
        }
        let mut s = self
            .state
            .lock()
            .map_err(|_| ServiceError::new(api, FaultKind::Transient, None, "the registry's state is poisoned"))?;
        let members = members(&s)?;
        let mut present = members.iter().filter(|m| m.left.is_none() && m.place > after);
        let page: Vec<&Member> = present.by_ref().take(self.page_size).collect();
        let through = page.last().map(|m| m.place).filter(|_| present.next().is_some());
        let things: Vec<String> = page.iter().map(|m| m.thing.clone()).collect();
        let next = through.map(|t| format!("{t}@{now}"));
        s.events += 1;
        let listing = Listing {
            at_ms: now,
            event: s.events,
            invocation: invocation(),
            source: source.to_owned(),
            after,
            through,
            served: things.len(),
            last: next.is_none(),
        };
        s.listings.push(listing);
        Ok(Page { things, next })
    }
}

/// The memberships a fleet-index query matches, from the groups' and the index's (`None`: a query this index does
/// not take): `thingGroupNames:<group>` or `thingName:<prefix>*`.
pub fn matching(query: &str, group: impl FnOnce(&str) -> Vec<Member>, index: &[Member]) -> Option<Vec<Member>> {
    let (field, value) = query.trim().split_once(':')?;
    match field {
        "thingGroupNames" if !value.is_empty() => Some(group(value)),
        "thingName" => {
            let prefix = value.strip_suffix('*')?;
            Some(index.iter().filter(|m| m.thing.starts_with(prefix)).cloned().collect())
        }
        _ => None,
    }
}

impl Registry for SimRegistry {
    async fn things_in_group(&self, group: &ThingGroupName, token: Option<&str>) -> Result<Page, ServiceError> {
        let api = "ListThingsInThingGroup";
        self.serve(api, group.as_str(), token, "InvalidRequestException", |s| {
            s.groups.get(group.as_str()).cloned().ok_or_else(|| {
                ServiceError::new(
                    api,
                    FaultKind::Rejected,
                    Some("ResourceNotFoundException".into()),
                    format!("Thing group {group} does not exist"),
                )
            })
        })
        .await
    }

    async fn child_groups(&self, _group: &ThingGroupName) -> Result<Vec<ThingGroupName>, ServiceError> {
        Ok(Vec::new())
    }

    async fn search(&self, query: &str, token: Option<&str>) -> Result<Page, ServiceError> {
        let api = "SearchIndex";
        self.serve(api, query, token, "InvalidTokenException", |s| {
            matching(query, |g| s.groups.get(g).cloned().unwrap_or_default(), &s.index).ok_or_else(|| {
                ServiceError::new(
                    api,
                    FaultKind::Rejected,
                    Some("InvalidQueryException".into()),
                    format!("the query {query:?} is not one this index takes"),
                )
            })
        })
        .await
    }
}

fn refused(api: &'static str, code: &str, message: String) -> ServiceError {
    ServiceError::new(api, FaultKind::Rejected, Some(code.into()), message)
}

#[cfg(test)]
mod tests {
    use shadow_core::clock::Clock;

    use super::*;

    fn registry() -> SimRegistry {
        let clock = Clock::simulated(1_000);
        SimRegistry::new(Trace::new(clock, 1_000), 2, 10_000)
    }

    async fn group_page(r: &SimRegistry, token: Option<&str>) -> Page {
        let group = ThingGroupName::parse("g").expect("a valid group name");
        r.things_in_group(&group, token).await.expect("a page")
    }

    /// A member leaving before a token's place moves no other member across the page boundary: the next page starts
    /// after the last thing served, whoever left.
    #[tokio::test(start_paused = true)]
    async fn a_member_leaving_shifts_no_page() {
        let r = registry();
        for t in ["a", "b", "c", "d", "e"] {
            r.join("g", t);
        }
        let first = group_page(&r, None).await;
        assert_eq!(first.things, ["a", "b"]);
        assert!(r.leave("g", "a"));
        assert!(!r.leave("g", "a"), "a left already");
        let second = group_page(&r, first.next.as_deref()).await;
        assert_eq!(second.things, ["c", "d"], "c is not skipped");
        let restarted = group_page(&r, None).await;
        assert_eq!(restarted.things, ["b", "c"], "a listing from the start leaves out who left");
        let listings = r.listings();
        assert!(listings[1].covers(3) && !listings[1].covers(2) && !listings[1].last);
        let left = r.members("g").into_iter().find(|m| m.thing == "a").expect("a's membership");
        assert!(left.member_at(&listings[0]) && !left.member_at(&listings[1]));
    }

    /// The index answers group-membership and name-prefix queries in pages, and refuses other queries and expired
    /// tokens with the codes SearchIndex documents.
    #[tokio::test(start_paused = true)]
    async fn the_index_answers_two_kinds_of_query() {
        let r = registry();
        for t in ["thing-01", "thing-02", "joiner-0", "thing-11"] {
            r.index(t);
        }
        r.join("g", "thing-02");
        let page = r.search("thingName:thing-0*", None).await.expect("a page");
        assert_eq!(page.things, ["thing-01", "thing-02"]);
        assert_eq!(page.next, None);
        let page = r.search("thingGroupNames:g", None).await.expect("a page");
        assert_eq!(page.things, ["thing-02"]);
        let refused = r.search("attributes.site:tokyo", None).await.expect_err("refused");
        assert_eq!(refused.code.as_deref(), Some("InvalidQueryException"));
        let page = r.search("thingName:*", None).await.expect("a page");
        assert_eq!(page.things, ["thing-01", "thing-02"]);
        tokio::time::advance(Duration::from_secs(11)).await;
        let expired = r.search("thingName:*", page.next.as_deref()).await.expect_err("expired");
        assert_eq!(expired.code.as_deref(), Some("InvalidTokenException"));
        assert_eq!(r.refusals().len(), 1);
    }
}
