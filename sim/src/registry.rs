//! The IoT registry in memory (the `Registry` port): thing groups that gain members while a push walks them, listed
//! a few things a page, with page tokens refused (`InvalidRequestException`) once older than their lifetime, as the
//! local stack's registry front refuses them.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shadow_core::names::ThingGroupName;
use shadow_core::push::{Page, Registry};
use shadow_core::service::{FaultKind, ServiceError};

use crate::trace::{Trace, invocation};

#[derive(Default)]
struct State {
    /// Each group's members, in the order they joined.
    groups: BTreeMap<String, Vec<String>>,
    /// When each member joined (ms since the world began).
    joined: BTreeMap<(String, String), u64>,
    listings: Vec<Listing>,
}

/// A page of a group's listing served: when, to which invocation, and whether it was the last page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    pub at_ms: u64,
    pub invocation: u64,
    pub group: String,
    pub last: bool,
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
            s.groups.entry(group.to_owned()).or_default().push(thing.to_owned());
            s.joined.insert((group.to_owned(), thing.to_owned()), now);
        }
    }

    /// Every page served so far.
    pub fn listings(&self) -> Vec<Listing> {
        self.state.lock().map(|s| s.listings.clone()).unwrap_or_default()
    }

    /// The group's members, with when each joined.
    pub fn members(&self, group: &str) -> Vec<(String, u64)> {
        let Ok(s) = self.state.lock() else { return Vec::new() };
        s.groups
            .get(group)
            .map(|m| {
                m.iter()
                    .map(|t| (t.clone(), s.joined.get(&(group.to_owned(), t.clone())).copied().unwrap_or(0)))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Registry for SimRegistry {
    async fn things_in_group(&self, group: &ThingGroupName, token: Option<&str>) -> Result<Page, ServiceError> {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let now = self.trace.now();
        let (offset, issued) = match token {
            None => (0, now),
            Some(t) => {
                let parsed =
                    t.split_once('@').and_then(|(o, i)| Some((o.parse::<usize>().ok()?, i.parse::<u64>().ok()?)));
                let Some((offset, issued)) = parsed else {
                    return Err(refused(format!("the token {t:?} is not one this registry gave")));
                };
                (offset, issued)
            }
        };
        if token.is_some() && now.saturating_sub(issued) > self.token_lifetime_ms {
            self.trace.line(format!("registry: refused a page token of group {group} issued at {issued} ms"));
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
        let end = (offset + self.page_size).min(members.len());
        let things = members.get(offset..end).map(<[String]>::to_vec).unwrap_or_default();
        let next = (end < members.len()).then(|| format!("{end}@{now}"));
        let listing = Listing { at_ms: now, invocation: invocation(), group: group.to_string(), last: next.is_none() };
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
