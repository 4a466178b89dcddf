//! The IoT registry: thing groups and the fleet index.

use aws_sdk_iot::Client;
use shadow_core::ThingGroupName;
use shadow_core::push::{Page, Registry};
use shadow_core::service::ServiceError;

use crate::sdk::service_error;

/// ListThingsInThingGroup's largest page.
const GROUP_PAGE: i32 = 250;
/// SearchIndex's largest page.
const SEARCH_PAGE: i32 = 100;
const THING_INDEX: &str = "AWS_Things";

#[derive(Debug, Clone)]
pub struct IotRegistry {
    client: Client,
}

impl IotRegistry {
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

impl Registry for IotRegistry {
    async fn things_in_group(&self, group: &ThingGroupName, token: Option<&str>) -> Result<Page, ServiceError> {
        let page = self
            .client
            .list_things_in_thing_group()
            .thing_group_name(group.as_str())
            .recursive(false)
            .max_results(GROUP_PAGE)
            .set_next_token(token.map(str::to_owned))
            .send()
            .await
            .map_err(|e| service_error("ListThingsInThingGroup", e))?;
        Ok(Page { things: page.things.unwrap_or_default(), next: page.next_token.filter(|t| !t.is_empty()) })
    }

    async fn child_groups(&self, group: &ThingGroupName) -> Result<Vec<ThingGroupName>, ServiceError> {
        let mut children = Vec::new();
        let mut pages =
            self.client.list_thing_groups().parent_group(group.as_str()).recursive(true).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| service_error("ListThingGroups", e))?;
            for child in page.thing_groups.unwrap_or_default() {
                if let Some(name) = child.group_name.and_then(|n| ThingGroupName::parse(n).ok()) {
                    children.push(name);
                }
            }
        }
        Ok(children)
    }

    async fn search(&self, query: &str, token: Option<&str>) -> Result<Page, ServiceError> {
        let page = self
            .client
            .search_index()
            .index_name(THING_INDEX)
            .query_string(query)
            .max_results(SEARCH_PAGE)
            .set_next_token(token.map(str::to_owned))
            .send()
            .await
            .map_err(|e| service_error("SearchIndex", e))?;
        let things = page.things.unwrap_or_default().into_iter().filter_map(|t| t.thing_name).collect();
        Ok(Page { things, next: page.next_token.filter(|t| !t.is_empty()) })
    }
}
