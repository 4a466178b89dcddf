//! The IoT registry in memory (the `Registry` port): thing groups that gain and lose members while a push walks them,
//! listed a few things a page, with page tokens refused (`InvalidRequestException`) once older than their lifetime, as
//! the local stack's registry front refuses them. A group lists its members in the order they joined; a page token
//! names the position after the last thing it served (each membership has a place of its own, given when it joins),
//! so a member leaving moves no other member across a page boundary: AWS documents nothing about its tokens, and a
//! continuation key is what a paged store gives.

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

/// A page of a group's listing served: when, to which invocation, the places it covers (after `after`, up to
/// `through`, or to the end of the listing when it is the last page), and whether it was the last page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    pub at_ms: u64,
    pub event: u64,
    pub invocation: u64,
    pub group: String,
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

impl Registry for SimRegistry {
    async fn things_in_group(&self, group: &ThingGroupName, token: Option<&str>) -> Result<Page, ServiceError> {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let now = self.trace.now();
        let (after, issued) = match token {
            None => (0, now),
            Some(t) => {
                let parsed =
                    t.split_once('@').and_then(|(o, i)| Some((o.parse::<u64>().ok()?, i.parse::<u64>().ok()?)));
                let Some((after, issued)) = parsed else {
                    return Err(refused(format!("the token {t:?} is not one this registry gave")));
                };
                (after, issued)
            }
        };
        if token.is_some() && now.saturating_sub(issued) > self.token_lifetime_ms {
            self.trace.line(format!("registry: refused a page token of group {group} issued at {issued} ms"));
            if let Ok(mut s) = self.state.lock() {
                s.events += 1;
                let event = s.events;
                s.refusals.push((event, invocation()));
            }
            return Err(refused("The pagination token has expired".into()));
        }
        let mut s = self.state.lock().map_err(|_| {
            ServiceError::new("ListThingsInThingGroup", FaultKind::Transient, None, "the registry's state is poisoned")
        })?;
        let Some(members) = s.groups.get(group.as_str()) else {
            return Err(ServiceError::new(
                "ListThingsInThingGroup",
                FaultKind::Rejected,
                Some("ResourceNotFoundException".into()),
                format!("Thing group {group} does not exist"),
            ));
        };
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
            group: group.to_string(),
            after,
            through,
            served: things.len(),
            last: next.is_none(),
        };
        s.listings.push(listing);
        Ok(Page { things, next })
    }

    async fn child_groups(&self, _group: &ThingGroupName) -> Result<Vec<ThingGroupName>, ServiceError> {
        Ok(Vec::new())
    }

    async fn search(&self, _query: &str, _token: Option<&str>) -> Result<Page, ServiceError> {
        Ok(Page::default())
    }
}

fn refused(message: String) -> ServiceError {
    ServiceError::new("ListThingsInThingGroup", FaultKind::Rejected, Some("InvalidRequestException".into()), message)
}
