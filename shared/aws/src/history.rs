//! The history table in DynamoDB: one conditional put per event, so a redelivery never adds or changes an item.

use std::borrow::Cow;
use std::collections::HashMap;

use aws_sdk_dynamodb::{Client, types::AttributeValue};
use serde_json::{Map, Number, Value};
use shadow_core::ShadowRef;
use shadow_core::history::{HistoryRecord, HistoryStore, PutOutcome, RecordKind, partition_key, time_prefix};
use shadow_core::service::{FaultKind, ServiceError};

use crate::sdk::{ConditionalWrite, service_error};
use crate::tables::{PARTITION_KEY, SORT_KEY, TTL_ATTRIBUTE};
use crate::writes;

/// The sort key of a shadow's head: its newest snapshot or deletion, kept without expiry (a deletion's head expires
/// with its retention). `~` sorts after every event's key (they start with 10 digits), so event reads stop below
/// [`EVENTS_END`].
pub const HEAD_SORT_KEY: &str = "~head";
/// Every event's sort key is below this, and the head's above it.
pub const EVENTS_END: &str = "~";
/// The history table's index of events by version (keys only): `shadow get --version N` finds the item of
/// version N with one Query, whatever the history's length.
pub const VERSION_INDEX: &str = "by-version";
/// Readers skip items past their expiry: DynamoDB deletes them only within about two days.
const LIVE: &str = "attribute_not_exists(#exp) OR #exp > :now";

fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// An item read back as the documented JSON attributes, with its sort key as `sk`.
fn event_of(mut item: HashMap<String, AttributeValue>) -> Result<Value, ServiceError> {
    item.remove(PARTITION_KEY);
    let sk = item.remove(SORT_KEY);
    let event: Value = serde_dynamo::from_item(item)
        .map_err(|e| ServiceError::new("Query", FaultKind::Rejected, Some("UnreadableItem".into()), e))?;
    let mut event = restore_numbers(event);
    if let (Value::Object(fields), Some(AttributeValue::S(sk))) = (&mut event, sk) {
        fields.insert("sk".into(), Value::String(sk));
    }
    Ok(event)
}

#[derive(Debug, Clone)]
pub struct DynamoHistoryStore {
    client: Client,
    table: String,
}

impl DynamoHistoryStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into() }
    }

    pub fn from_sdk(config: &aws_config::SdkConfig, table: impl Into<String>) -> Self {
        Self::new(Client::new(config), table)
    }

    /// Every recorded event of one shadow, oldest first, as JSON objects with the documented attributes.
    pub async fn events(&self, shadow: &ShadowRef) -> Result<Vec<Value>, ServiceError> {
        let mut events = Vec::new();
        let mut pages = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("#pk = :pk AND #sk < :end")
            .filter_expression(LIVE)
            .expression_attribute_names("#pk", PARTITION_KEY)
            .expression_attribute_names("#sk", SORT_KEY)
            .expression_attribute_names("#exp", TTL_ATTRIBUTE)
            .expression_attribute_values(":pk", AttributeValue::S(partition_key(shadow)))
            .expression_attribute_values(":end", AttributeValue::S(EVENTS_END.into()))
            .expression_attribute_values(":now", AttributeValue::N(now_secs().to_string()))
            .consistent_read(true)
            .into_paginator()
            .items()
            .send();
        while let Some(item) = pages.next().await {
            let mut item = item.map_err(|e| service_error("Query", e))?;
            item.remove(PARTITION_KEY);
            item.remove(SORT_KEY);
            let event: Value = serde_dynamo::from_item(item)
                .map_err(|e| ServiceError::new("Query", FaultKind::Rejected, Some("UnreadableItem".into()), e))?;
            events.push(restore_numbers(event));
        }
        Ok(events)
    }
}

/// One page of a shadow's history: its events, oldest first, as [`DynamoHistoryStore::events`] gives them, and where
/// the next page starts (`None` at the end).
#[derive(Debug, Clone, Default)]
pub struct HistoryPage {
    pub events: Vec<Value>,
    pub next: Option<HashMap<String, AttributeValue>>,
}

impl DynamoHistoryStore {
    /// One page (at most `limit` events) of one shadow's history between `from` and `until` (epoch seconds, both
    /// included, either open), oldest first, from `start` (the previous page's `next`). The range is a key
    /// condition on the sort key, so DynamoDB reads only the events in it.
    pub async fn page(
        &self,
        shadow: &ShadowRef,
        from: Option<u64>,
        until: Option<u64>,
        start: Option<HashMap<String, AttributeValue>>,
        limit: i32,
    ) -> Result<HistoryPage, ServiceError> {
        let range = match (from, until) {
            (Some(_), Some(_)) => " AND #sk BETWEEN :from AND :to",
            (Some(_), None) => " AND #sk BETWEEN :from AND :end",
            (None, Some(_)) => " AND #sk < :to",
            (None, None) => " AND #sk < :end",
        };
        let mut query = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression(format!("#pk = :pk{range}"))
            .expression_attribute_names("#pk", PARTITION_KEY)
            .expression_attribute_values(":pk", AttributeValue::S(partition_key(shadow)))
            .set_exclusive_start_key(start)
            .filter_expression(LIVE)
            .expression_attribute_names("#sk", SORT_KEY)
            .expression_attribute_names("#exp", TTL_ATTRIBUTE)
            .expression_attribute_values(":now", AttributeValue::N(now_secs().to_string()))
            .limit(limit.max(1));
        if until.is_none() {
            query = query.expression_attribute_values(":end", AttributeValue::S(EVENTS_END.into()));
        }
        if let Some(from) = from {
            query = query.expression_attribute_values(":from", AttributeValue::S(time_prefix(from)));
        }
        if let Some(until) = until {
            // Every key of second `until` sorts below the next second's prefix (BETWEEN includes its bound, and no
            // key equals a bare prefix).
            query = query.expression_attribute_values(":to", AttributeValue::S(time_prefix(until.saturating_add(1))));
        }
        let page = query.send().await.map_err(|e| service_error("Query", e))?;
        let mut events = Vec::new();
        for mut item in page.items.unwrap_or_default() {
            item.remove(PARTITION_KEY);
            item.remove(SORT_KEY);
            let event: Value = serde_dynamo::from_item(item)
                .map_err(|e| ServiceError::new("Query", FaultKind::Rejected, Some("UnreadableItem".into()), e))?;
            events.push(restore_numbers(event));
        }
        Ok(HistoryPage { events, next: page.last_evaluated_key.filter(|k| !k.is_empty()) })
    }
}

impl DynamoHistoryStore {
    /// One page (at most `limit` events) of one shadow's history, newest first, from `start` (the previous page's
    /// `next`): what `shadow-fleet drift` reads to find when a key was last written, usually in one page.
    pub async fn newest_first(
        &self,
        shadow: &ShadowRef,
        start: Option<HashMap<String, AttributeValue>>,
        limit: i32,
    ) -> Result<HistoryPage, ServiceError> {
        let page = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("#pk = :pk AND #sk < :end")
            .filter_expression(LIVE)
            .expression_attribute_names("#pk", PARTITION_KEY)
            .expression_attribute_names("#sk", SORT_KEY)
            .expression_attribute_names("#exp", TTL_ATTRIBUTE)
            .expression_attribute_values(":pk", AttributeValue::S(partition_key(shadow)))
            .expression_attribute_values(":end", AttributeValue::S(EVENTS_END.into()))
            .expression_attribute_values(":now", AttributeValue::N(now_secs().to_string()))
            .scan_index_forward(false)
            .set_exclusive_start_key(start)
            .limit(limit.max(1))
            .send()
            .await
            .map_err(|e| service_error("Query", e))?;
        let mut events = Vec::new();
        for mut item in page.items.unwrap_or_default() {
            item.remove(PARTITION_KEY);
            item.remove(SORT_KEY);
            let event: Value = serde_dynamo::from_item(item)
                .map_err(|e| ServiceError::new("Query", FaultKind::Rejected, Some("UnreadableItem".into()), e))?;
            events.push(restore_numbers(event));
        }
        Ok(HistoryPage { events, next: page.last_evaluated_key.filter(|k| !k.is_empty()) })
    }
}

/// What a point-in-time read costs: requests made and items read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadCost {
    pub requests: u32,
    pub items: u32,
}

impl DynamoHistoryStore {
    /// The items around the end of second `t`, for [`shadow_core::history::point::at_time`]: the last item at or
    /// before it and the first after it (one item each, whatever their expiry: the core decides), and the head.
    /// Three requests at once, each of at most one item.
    pub async fn around(&self, shadow: &ShadowRef, t: u64) -> Result<(Vec<Value>, ReadCost), ServiceError> {
        let pk = AttributeValue::S(partition_key(shadow));
        let boundary = AttributeValue::S(time_prefix(t.saturating_add(1)));
        let before = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("#pk = :pk AND #sk < :t")
            .expression_attribute_names("#pk", PARTITION_KEY)
            .expression_attribute_names("#sk", SORT_KEY)
            .expression_attribute_values(":pk", pk.clone())
            .expression_attribute_values(":t", boundary.clone())
            .scan_index_forward(false)
            .consistent_read(true)
            .limit(1)
            .send();
        let after = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("#pk = :pk AND #sk BETWEEN :t AND :end")
            .expression_attribute_names("#pk", PARTITION_KEY)
            .expression_attribute_names("#sk", SORT_KEY)
            .expression_attribute_values(":pk", pk.clone())
            .expression_attribute_values(":t", boundary)
            .expression_attribute_values(":end", AttributeValue::S(EVENTS_END.into()))
            .consistent_read(true)
            .limit(1)
            .send();
        let head = self.head_request(shadow);
        let (before, after, head) = futures::join!(before, after, head);
        let mut found = Vec::new();
        let mut label = |items: Option<Vec<HashMap<String, AttributeValue>>>, role: &str| -> Result<(), ServiceError> {
            for item in items.unwrap_or_default() {
                let mut event = event_of(item)?;
                event["role"] = Value::String(role.to_owned());
                found.push(event);
            }
            Ok(())
        };
        label(before.map_err(|e| service_error("Query", e))?.items, "before")?;
        label(after.map_err(|e| service_error("Query", e))?.items, "after")?;
        label(head?.map(|h| vec![h]), "head")?;
        let items = found.len() as u32;
        Ok((found, ReadCost { requests: 3, items }))
    }

    async fn head_request(&self, shadow: &ShadowRef) -> Result<Option<HashMap<String, AttributeValue>>, ServiceError> {
        let got = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(crate::tables::key(&partition_key(shadow), HEAD_SORT_KEY)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| service_error("GetItem", e))?;
        Ok(got.item.map(|mut head| {
            // The head's version is `latestVersion` (out of the version index): readers get it as `version`.
            if let Some(v) = head.remove("latestVersion") {
                head.insert("version".into(), v);
            }
            head
        }))
    }

    /// The shadow's head (its newest snapshot or deletion), as an event.
    pub async fn head(&self, shadow: &ShadowRef) -> Result<Option<Value>, ServiceError> {
        self.head_request(shadow).await?.map(event_of).transpose()
    }

    /// The item recorded with `version`, of the newest life of the shadow (versions restart after a shadow was
    /// deleted for 48 hours), a snapshot rather than a change or a deletion of the same version: one Query of the
    /// version index, then one GetItem. Also says how many earlier lives had that version.
    pub async fn at_version(
        &self,
        shadow: &ShadowRef,
        version: u64,
    ) -> Result<(Option<Value>, usize, ReadCost), ServiceError> {
        let keys = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(VERSION_INDEX)
            .key_condition_expression("#pk = :pk AND #v = :v")
            .expression_attribute_names("#pk", PARTITION_KEY)
            .expression_attribute_names("#v", "version")
            .expression_attribute_values(":pk", AttributeValue::S(partition_key(shadow)))
            .expression_attribute_values(":v", AttributeValue::N(version.to_string()))
            .send()
            .await
            .map_err(|e| service_error("Query", e))?;
        let mut sks: Vec<String> = keys
            .items
            .unwrap_or_default()
            .into_iter()
            .filter_map(|mut k| match k.remove(SORT_KEY) {
                Some(AttributeValue::S(sk)) => Some(sk),
                _ => None,
            })
            .collect();
        let mut cost = ReadCost { requests: 1, items: sks.len() as u32 };
        // The newest life's second: its items sort by time first; within it a snapshot before a change before a
        // deletion.
        sks.sort();
        let Some(newest) = sks.last().map(|sk| sk.split('#').next().unwrap_or_default().to_owned()) else {
            return Ok((None, 0, cost));
        };
        let earlier_lives = sks.iter().filter(|sk| !sk.starts_with(&newest)).count();
        let rank = |sk: &&String| match sk.rsplit('-').next() {
            Some("snapshot") => 0,
            Some("update") => 1,
            _ => 2,
        };
        let Some(sk) = sks.iter().filter(|sk| sk.starts_with(&newest)).min_by_key(rank) else {
            return Ok((None, earlier_lives, cost));
        };
        let got = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(crate::tables::key(&partition_key(shadow), sk)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| service_error("GetItem", e))?;
        cost.requests += 1;
        cost.items += u32::from(got.item.is_some());
        Ok((got.item.map(event_of).transpose()?, earlier_lives, cost))
    }

    /// The live items among the `limit` at or before sort key `sk`, newest first (expired ones are filtered, as in
    /// every history read), for a fold back to a checkpoint, to say who wrote each value last, or since when.
    pub async fn back_from(&self, shadow: &ShadowRef, sk: &str, limit: i32) -> Result<Vec<Value>, ServiceError> {
        let page = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("#pk = :pk AND #sk <= :sk")
            .expression_attribute_names("#pk", PARTITION_KEY)
            .expression_attribute_names("#sk", SORT_KEY)
            .expression_attribute_values(":pk", AttributeValue::S(partition_key(shadow)))
            .expression_attribute_values(":sk", AttributeValue::S(sk.to_owned()))
            .filter_expression(LIVE)
            .expression_attribute_names("#exp", TTL_ATTRIBUTE)
            .expression_attribute_values(":now", AttributeValue::N(now_secs().to_string()))
            .scan_index_forward(false)
            .limit(limit.max(1))
            .send()
            .await
            .map_err(|e| service_error("Query", e))?;
        page.items.unwrap_or_default().into_iter().map(event_of).collect()
    }
}

/// The key of the map that stands for a number DynamoDB cannot hold: `{"$number": "1e+200"}`, with the number's JSON
/// text.
///
/// DynamoDB numbers are 0 or of magnitude 1E-130 to 9.9999999999999999999999999999999999999E+125; a JSON number
/// outside that (a double such as 1e200 or 1e-200) fails the whole PutItem with a ValidationException. Every event
/// is kept instead: such a number is stored as this marker, so nothing is lost, a reader can tell it from a string,
/// and [`DynamoHistoryStore::events`] turns it back into the number.
pub const NUMBER_MARKER: &str = "$number";

/// Whether DynamoDB can hold `n` as a number. Integers always fit (at most 20 digits); a double is sent as its
/// shortest decimal, so the f64 nearest 1e126 (written `1e126`) is the first one too large, and the one nearest
/// 1E-130 the smallest that fits.
pub fn fits_dynamodb(n: &Number) -> bool {
    if n.is_i64() || n.is_u64() {
        return true;
    }
    n.as_f64().is_some_and(|x| x == 0.0 || (1e-130..1e126).contains(&x.abs()))
}

/// `value` with each number DynamoDB cannot hold replaced by its [`NUMBER_MARKER`] map; borrowed when it has none.
pub fn storable_numbers(value: &Value) -> Cow<'_, Value> {
    match value {
        Value::Number(n) if !fits_dynamodb(n) => {
            Cow::Owned(Value::Object(Map::from_iter([(NUMBER_MARKER.to_owned(), Value::String(n.to_string()))])))
        }
        Value::Array(items) => {
            let stored: Vec<Cow<'_, Value>> = items.iter().map(storable_numbers).collect();
            if stored.iter().all(|v| matches!(v, Cow::Borrowed(_))) {
                return Cow::Borrowed(value);
            }
            Cow::Owned(Value::Array(stored.into_iter().map(Cow::into_owned).collect()))
        }
        Value::Object(fields) => {
            let stored: Vec<(&String, Cow<'_, Value>)> = fields.iter().map(|(k, v)| (k, storable_numbers(v))).collect();
            if stored.iter().all(|(_, v)| matches!(v, Cow::Borrowed(_))) {
                return Cow::Borrowed(value);
            }
            Cow::Owned(Value::Object(stored.into_iter().map(|(k, v)| (k.clone(), v.into_owned())).collect()))
        }
        _ => Cow::Borrowed(value),
    }
}

/// The reverse of [`storable_numbers`]: a [`NUMBER_MARKER`] map whose text is a number DynamoDB cannot hold
/// becomes that number again. Any other map, even one with that single key, is left as it is.
pub fn restore_numbers(value: Value) -> Value {
    match value {
        Value::Object(fields) => {
            if fields.len() == 1
                && let Some(Value::String(text)) = fields.get(NUMBER_MARKER)
                && let Some(n) = number_out_of_range(text)
            {
                return Value::Number(n);
            }
            Value::Object(fields.into_iter().map(|(k, v)| (k, restore_numbers(v))).collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(restore_numbers).collect()),
        other => other,
    }
}

/// The number a marker's text stands for, when it is a JSON number that DynamoDB cannot hold. Its value comes from
/// the standard library's correctly rounded parse: the text is the double's shortest form, so it reads back exactly.
fn number_out_of_range(text: &str) -> Option<Number> {
    text.parse::<Number>().ok()?;
    text.parse::<f64>().ok().and_then(Number::from_f64).filter(|n| !fits_dynamodb(n))
}

/// The item for `record`: the attributes documented in the README.
pub fn item(record: &HistoryRecord) -> Result<HashMap<String, AttributeValue>, serde_dynamo::Error> {
    let mut item = HashMap::from([
        (PARTITION_KEY.to_owned(), AttributeValue::S(record.partition_key())),
        (SORT_KEY.to_owned(), AttributeValue::S(record.sort_key())),
        ("thingName".to_owned(), AttributeValue::S(record.shadow.thing.to_string())),
        ("shadowName".to_owned(), AttributeValue::S(record.shadow.shadow_name().to_owned())),
        ("version".to_owned(), AttributeValue::N(record.version.to_string())),
        ("timestamp".to_owned(), AttributeValue::N(record.timestamp.to_string())),
        ("kind".to_owned(), AttributeValue::S(record.kind.as_str().to_owned())),
    ]);
    let mut number = |name: &str, value: Option<u64>| {
        if let Some(value) = value {
            item.insert(name.to_owned(), AttributeValue::N(value.to_string()));
        }
    };
    number("receivedAt", record.received_at);
    number(TTL_ATTRIBUTE, record.expires_at);
    number("previousVersion", record.previous_version);
    if let Some(token) = &record.client_token {
        item.insert("clientToken".to_owned(), AttributeValue::S(token.clone()));
    }
    if let Some(state) = &record.state {
        item.insert("state".to_owned(), serde_dynamo::to_attribute_value(storable_numbers(state))?);
    }
    if let Some(metadata) = &record.metadata {
        item.insert("metadata".to_owned(), serde_dynamo::to_attribute_value(storable_numbers(metadata))?);
    }
    if let Some(previous) = &record.previous_state {
        item.insert("previousState".to_owned(), serde_dynamo::to_attribute_value(storable_numbers(previous))?);
    }
    Ok(item)
}

/// The head item for `record` (a snapshot or a deletion): the event's own attributes under the head's key, with
/// `eventSk` (the event's sort key, which orders heads) and the version as `latestVersion` (so that the head stays
/// out of the version index). Without `previousState`: the head is the document now, not before. A deletion's head
/// expires with the event's retention; a document's never does, so a quiet shadow stays known.
pub fn head_item(record: &HistoryRecord) -> Result<HashMap<String, AttributeValue>, serde_dynamo::Error> {
    let mut head = item(record)?;
    head.insert(SORT_KEY.to_owned(), AttributeValue::S(HEAD_SORT_KEY.to_owned()));
    head.insert("eventSk".to_owned(), AttributeValue::S(record.sort_key()));
    if let Some(version) = head.remove("version") {
        head.insert("latestVersion".to_owned(), version);
    }
    head.remove("previousState");
    if record.kind != RecordKind::Delete {
        head.remove(TTL_ATTRIBUTE);
    }
    Ok(head)
}

impl HistoryStore for DynamoHistoryStore {
    async fn put_new(&self, record: &HistoryRecord) -> Result<PutOutcome, ServiceError> {
        let item = item(record)
            .map_err(|e| ServiceError::new("PutItem", FaultKind::Rejected, Some("UnrepresentableState".into()), e))?;
        let written = writes::put_if_absent(&self.client, &self.table, item).await?;
        // The head moves to this event unless it holds a later one. Done on a duplicate too: a retry after a crash
        // between the two writes finds the event written and the head not yet moved.
        if matches!(record.kind, RecordKind::Snapshot | RecordKind::Delete) {
            let head = head_item(record).map_err(|e| {
                ServiceError::new("PutItem", FaultKind::Rejected, Some("UnrepresentableState".into()), e)
            })?;
            self.client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(head))
                .condition_expression("attribute_not_exists(#pk) OR #event < :event")
                .expression_attribute_names("#pk", PARTITION_KEY)
                .expression_attribute_names("#event", "eventSk")
                .expression_attribute_values(":event", AttributeValue::S(record.sort_key()))
                .send()
                .await
                .condition_held("PutItem")?;
        }
        Ok(if written { PutOutcome::Written } else { PutOutcome::Duplicate })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use shadow_core::history::{RecordOptions, record_from_event};

    #[test]
    fn item_keeps_nulls_and_exact_numbers() {
        let record = record_from_event(
            &json!({"state": {"desired": {"gone": null, "f": 0.1, "big": 12345678901234567890u64, "neg": -3, "e": {}, "a": [1, "x"]}},
                    "version": 1, "timestamp": 5, "topic": "$aws/things/d/shadow/update/accepted"}),
            &RecordOptions { retention_days: Some(1), store_metadata: false },
        )
        .expect("recording the event");
        let item = item(&record).expect("the record's item");
        let Some(AttributeValue::M(state)) = item.get("state") else { panic!("state is not a map: {item:?}") };
        let Some(AttributeValue::M(desired)) = state.get("desired") else { panic!("desired is not a map") };
        assert_eq!(desired.get("gone"), Some(&AttributeValue::Null(true)));
        assert_eq!(desired.get("f"), Some(&AttributeValue::N("0.1".into())));
        assert_eq!(desired.get("big"), Some(&AttributeValue::N("12345678901234567890".into())));
        assert_eq!(desired.get("neg"), Some(&AttributeValue::N("-3".into())));
        assert_eq!(desired.get("e"), Some(&AttributeValue::M(HashMap::new())));
        assert!(matches!(desired.get("a"), Some(AttributeValue::L(l)) if l.len() == 2));
        assert_eq!(item.get("expiresAt"), Some(&AttributeValue::N("86405".into())));
        assert_eq!(item.get("shadowName"), Some(&AttributeValue::S(String::new())));
        assert!(!item.contains_key("clientToken"));
    }

    #[test]
    fn numbers_dynamodb_cannot_hold_become_markers_and_read_back() {
        let desired = json!({"huge": 1e200, "negative": -1e200, "tiny": 1e-200, "list": [1e126, 2, {"n": -1e-131}],
                             "largest": 9.99999999999999e125, "smallest": 1e-130, "zero": 0, "int": -7});
        let record = record_from_event(
            &json!({"state": {"desired": desired}, "version": 1, "timestamp": 5,
                    "topic": "$aws/things/d/shadow/update/accepted"}),
            &RecordOptions::default(),
        )
        .expect("recording the event");
        let item = item(&record).expect("the record's item");
        let Some(AttributeValue::M(state)) = item.get("state") else { panic!("state is not a map: {item:?}") };
        let Some(AttributeValue::M(stored)) = state.get("desired") else { panic!("desired is not a map") };
        let marker = |text: &str| {
            AttributeValue::M(HashMap::from([(NUMBER_MARKER.to_owned(), AttributeValue::S(text.to_owned()))]))
        };
        assert_eq!(stored.get("huge"), Some(&marker("1e+200")));
        assert_eq!(stored.get("negative"), Some(&marker("-1e+200")));
        assert_eq!(stored.get("tiny"), Some(&marker("1e-200")));
        let Some(AttributeValue::L(list)) = stored.get("list") else { panic!("list: {stored:?}") };
        assert_eq!(list[0], marker("1e+126"));
        assert_eq!(list[1], AttributeValue::N("2".into()));
        assert_eq!(list[2], AttributeValue::M(HashMap::from([("n".to_owned(), marker("-1e-131"))])));
        for fits in ["largest", "smallest", "zero", "int"] {
            assert!(matches!(stored.get(fits), Some(AttributeValue::N(_))), "{fits}: {stored:?}");
        }

        let read: Value = serde_dynamo::from_attribute_value(AttributeValue::M(stored.clone()))
            .expect("reading the stored state back");
        assert_eq!(restore_numbers(read), desired);
    }

    #[test]
    fn only_markers_of_numbers_out_of_range_are_read_as_numbers() {
        for kept in [
            json!({"$number": "5"}),
            json!({"$number": "text"}),
            json!({"$number": 1e100}),
            json!({"$number": "1e200", "other": 1}),
            json!({"$number": "+1e200"}),
            json!({"$number": "inf"}),
        ] {
            assert_eq!(restore_numbers(kept.clone()), kept);
            assert!(matches!(storable_numbers(&kept), Cow::Borrowed(_)), "{kept} needs no change");
        }
        assert_eq!(restore_numbers(json!({"a": [{"$number": "-1e-200"}]})), json!({"a": [-1e-200]}));
        assert!(fits_dynamodb(&Number::from_f64(0.0).expect("0.0 is finite")));
    }
}
