//! A DynamoDB front for the bench: an HTTP server that the function under test takes as its DynamoDB endpoint
//! (`AWS_ENDPOINT_URL_DYNAMODB`). It counts every request with its capacity units, enforces DynamoDB's limits per
//! partition-key value, and can serve a push's journal from memory.
//!
//! - **Counting.** Every request is counted by kind (read or write, journal or other) with its capacity units.
//!   Requests it forwards to DynamoDB Local carry `ReturnConsumedCapacity: TOTAL`, so their units are DynamoDB
//!   Local's own reckoning from the real item sizes; a conditional write whose condition failed counts one write
//!   unit (DynamoDB bills it by the item's size; every item here is under 1 KB). The journal items it serves itself
//!   are reckoned by DynamoDB's rules: one write unit per KB written, one read unit per 4 KB read strongly
//!   consistent, half of that eventually consistent.
//! - **Partition limits.** With [`Limits`], one token bucket per partition-key value of the fronted table for
//!   writes and one for reads (DynamoDB: 1000 write units and 3000 read units a second per partition, in every
//!   capacity mode). A request the bucket refuses is answered `ProvisionedThroughputExceededException`, as DynamoDB
//!   answers it; in a `BatchWriteItem` or `BatchGetItem` the refused items come back unprocessed instead.
//! - **The journal from memory.** DynamoDB Local takes a few hundred writes a second on this machine, far from the
//!   4000 a second a rollout at AWS's quota writes. Items of the fronted table whose partition key is a journal shard
//!   (`<pushId>#<n>`; the board of senders, `#senders`, is not) or whose sort key starts with `previous#`, `failure#` or `conflict#` are kept
//!   in memory, under DynamoDB's key rules: the item is addressed by pk + sk; PutItem with no condition or with
//!   `attribute_not_exists(<key>)` (put-if-absent, `ReturnValuesOnConditionCheckFailure: ALL_OLD` answered), GetItem,
//!   DeleteItem, Query by pk with `=`, `begins_with`, `BETWEEN` or a comparison on sk, `ScanIndexForward`, `Limit`,
//!   `ExclusiveStartKey`/`LastEvaluatedKey` paging (a key whenever the limit or 1 MB was reached, as DynamoDB does),
//!   `ProjectionExpression` of top-level names and `Select: COUNT`; BatchWriteItem and BatchGetItem with
//!   `UnprocessedItems`/`UnprocessedKeys`. Everything else (the push record, indexes, other tables) goes on to
//!   DynamoDB Local. Anything on a journal item it does not implement (UpdateItem, transactions, other conditions, a
//!   FilterExpression, a Query that would span the journal and other items) is answered with a ValidationException
//!   that names it, never with a silently wrong answer.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use devstack::http::{Reply, Server, reply, serve};
use http_body_util::{BodyExt, Full};
use hyper::http::request::Parts;
use hyper::{Request, StatusCode};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::TokioExecutor;
use serde_json::{Map, Value, json};

/// Sort-key prefixes of a push's journal items in the push table.
pub const JOURNAL_PREFIXES: [&str; 3] = ["previous#", "failure#", "conflict#"];
const PK: &str = "pk";
const SK: &str = "sk";
/// A Query page stops at 1 MB, as DynamoDB's does.
const PAGE_BYTES: u64 = 1024 * 1024;

/// DynamoDB's per-partition limits, per partition-key value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub write_units_per_second: f64,
    pub read_units_per_second: f64,
}

impl Limits {
    /// DynamoDB's: 1000 write units and 3000 read units a second per partition.
    pub const AWS: Limits = Limits { write_units_per_second: 1000.0, read_units_per_second: 3000.0 };
}

/// Requests of one kind: accepted and refused (items, for batches), and their capacity units.
#[derive(Debug, Default)]
pub struct Tally {
    pub requests: AtomicU64,
    /// Items written or read (a batch counts its items; a Query the items it returned).
    pub items: AtomicU64,
    /// Items (or single-item requests) refused by a partition's bucket.
    pub refused: AtomicU64,
    /// Capacity units consumed, in thousandths (eventually consistent reads cost half a unit).
    units_milli: AtomicU64,
}

impl Tally {
    fn add(&self, requests: u64, items: u64, units: f64) {
        self.requests.fetch_add(requests, Ordering::Relaxed);
        self.items.fetch_add(items, Ordering::Relaxed);
        self.units_milli.fetch_add((units * 1000.0).round() as u64, Ordering::Relaxed);
    }

    pub fn units(&self) -> f64 {
        self.units_milli.load(Ordering::Relaxed) as f64 / 1000.0
    }

    pub fn to_json(&self) -> Value {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        json!({"requests": load(&self.requests), "items": load(&self.items), "refused": load(&self.refused),
               "units": self.units()})
    }
}

/// What the front saw, by kind.
#[derive(Debug, Default)]
pub struct Counts {
    pub journal_writes: Tally,
    pub journal_reads: Tally,
    pub other_writes: Tally,
    pub other_reads: Tally,
}

impl Counts {
    pub fn to_json(&self) -> Value {
        json!({"journal_writes": self.journal_writes.to_json(), "journal_reads": self.journal_reads.to_json(),
               "other_writes": self.other_writes.to_json(), "other_reads": self.other_reads.to_json()})
    }

    pub fn write_requests(&self) -> u64 {
        self.journal_writes.requests.load(Ordering::Relaxed) + self.other_writes.requests.load(Ordering::Relaxed)
    }

    pub fn read_requests(&self) -> u64 {
        self.journal_reads.requests.load(Ordering::Relaxed) + self.other_reads.requests.load(Ordering::Relaxed)
    }

    pub fn write_units(&self) -> f64 {
        self.journal_writes.units() + self.other_writes.units()
    }

    pub fn read_units(&self) -> f64 {
        self.journal_reads.units() + self.other_reads.units()
    }
}

/// A token bucket that may run into debt (a forwarded write's units are known only from its answer).
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn take(&mut self, rate: f64, units: f64, now: Instant) -> bool {
        self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64() * rate).min(rate);
        self.last = now;
        if self.tokens >= units.min(rate) {
            self.tokens -= units;
            true
        } else {
            false
        }
    }
}

struct Stored {
    /// The item as DynamoDB JSON text.
    json: Box<str>,
    size: u64,
}

#[derive(Default)]
struct Memory {
    /// Journal items by partition-key value, then sort key.
    partitions: HashMap<String, BTreeMap<String, Stored>>,
    writes: HashMap<String, Bucket>,
    reads: HashMap<String, Bucket>,
}

struct Front {
    upstream: String,
    client: Client<HttpConnector, Full<Bytes>>,
    /// The table whose journal is served from memory and whose partitions are limited.
    table: Option<String>,
    limits: Option<Limits>,
    memory: Mutex<Memory>,
    counts: Arc<Counts>,
}

/// The running front; it stops when dropped.
pub struct DynamoFront {
    pub url: String,
    pub counts: Arc<Counts>,
    _server: Server,
}

impl DynamoFront {
    /// A front before `upstream` (DynamoDB Local). With `table`, that table's journal items are served from memory;
    /// with `limits`, its partitions are limited.
    pub async fn start(upstream: &str, table: Option<&str>, limits: Option<Limits>) -> Self {
        let counts = Arc::new(Counts::default());
        let front = Arc::new(Front {
            upstream: upstream.trim_end_matches('/').to_owned(),
            client: Client::builder(TokioExecutor::new()).build_http(),
            table: table.map(str::to_owned),
            limits,
            memory: Mutex::new(Memory::default()),
            counts: counts.clone(),
        });
        let server = serve(move |parts, body| {
            let front = front.clone();
            async move { front.handle(parts, body).await }
        })
        .await;
        Self { url: server.url(), counts, _server: server }
    }
}

fn answer(status: StatusCode, body: String) -> Reply {
    let mut response = reply(status, body);
    response
        .headers_mut()
        .insert("content-type", hyper::header::HeaderValue::from_static("application/x-amz-json-1.0"));
    response
}

fn ok(body: &Value) -> Reply {
    answer(StatusCode::OK, body.to_string())
}

fn error(kind: &str, message: &str) -> Reply {
    answer(StatusCode::BAD_REQUEST, json!({"__type": kind, "message": message}).to_string())
}

fn validation(message: String) -> Reply {
    error("com.amazon.coral.validate#ValidationException", &format!("bench journal stand-in: {message}"))
}

fn throttled() -> Reply {
    error(
        "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
        "The level of configured provisioned throughput for the table was exceeded. Consider increasing your \
         provisioning level with the UpdateTable API.",
    )
}

fn condition_failed(old: Option<Value>) -> Reply {
    let mut body = json!({"__type": "com.amazonaws.dynamodb.v20120810#ConditionalCheckFailedException",
                          "message": "The conditional request failed"});
    if let Some(old) = old {
        body["Item"] = old;
    }
    answer(StatusCode::BAD_REQUEST, body.to_string())
}

/// DynamoDB's size of an attribute value, in bytes.
fn value_size(value: &Value) -> u64 {
    let Some((kind, inner)) = value.as_object().and_then(|o| o.iter().next()) else { return 0 };
    let text = |v: &Value| v.as_str().map_or(0, |s| s.len() as u64);
    // A number takes about one byte per two significant digits, plus one.
    let number = |v: &Value| v.as_str().map_or(1, |s| (s.trim_start_matches(['-', '0']).len() as u64).div_ceil(2) + 1);
    let binary = |v: &Value| v.as_str().map_or(0, |s| s.len() as u64 * 3 / 4);
    let set = |v: &Value, f: &dyn Fn(&Value) -> u64| v.as_array().map_or(0, |a| a.iter().map(f).sum());
    match kind.as_str() {
        "S" => text(inner),
        "N" => number(inner),
        "B" => binary(inner),
        "BOOL" | "NULL" => 1,
        "SS" => set(inner, &text),
        "NS" => set(inner, &number),
        "BS" => set(inner, &binary),
        "M" => 3 + inner.as_object().map_or(0, item_size),
        "L" => 3 + inner.as_array().map_or(0, |a| a.iter().map(|v| value_size(v) + 1).sum()),
        _ => 0,
    }
}

/// DynamoDB's size of an item: its attribute names and values.
pub fn item_size(item: &Map<String, Value>) -> u64 {
    item.iter().map(|(name, value)| name.len() as u64 + value_size(value)).sum()
}

/// Write units of an item of `size` bytes: one per KB, at least one.
pub fn write_units(size: u64) -> f64 {
    size.div_ceil(1024).max(1) as f64
}

/// Read units of `size` bytes read: one per 4 KB strongly consistent, half that eventually consistent.
pub fn read_units(size: u64, consistent: bool) -> f64 {
    let units = size.div_ceil(4096).max(1) as f64;
    if consistent { units } else { units / 2.0 }
}

fn string_of(value: &Value) -> Option<&str> {
    value.get("S").and_then(Value::as_str)
}

/// The pk and sk of an item or key.
fn key_of(item: &Value) -> Option<(String, String)> {
    Some((string_of(item.get(PK)?)?.to_owned(), string_of(item.get(SK)?)?.to_owned()))
}

fn is_journal_key(pk: &str, sk: &str) -> bool {
    is_shard_partition(pk) || JOURNAL_PREFIXES.iter().any(|p| sk.starts_with(p))
}

/// `<pushId>#<n>`: a journal shard. A partition that starts with `#` (the board of senders) is not a push's.
fn is_shard_partition(pk: &str) -> bool {
    !pk.starts_with('#') && pk.contains('#')
}

/// A request's expression attribute names resolved.
fn resolve_name<'a>(request: &'a Value, token: &'a str) -> &'a str {
    if token.starts_with('#') { request["ExpressionAttributeNames"][token].as_str().unwrap_or(token) } else { token }
}

/// Which items of a partition a key condition takes, by sort key.
#[derive(Debug, Clone, PartialEq)]
pub enum SortCondition {
    All,
    BeginsWith(String),
    Range(Bound<String>, Bound<String>),
}

impl SortCondition {
    fn matches(&self, sk: &str) -> bool {
        match self {
            Self::All => true,
            Self::BeginsWith(prefix) => sk.starts_with(prefix.as_str()),
            Self::Range(low, high) => {
                let above = match low {
                    Bound::Included(l) => sk >= l.as_str(),
                    Bound::Excluded(l) => sk > l.as_str(),
                    Bound::Unbounded => true,
                };
                let below = match high {
                    Bound::Included(h) => sk <= h.as_str(),
                    Bound::Excluded(h) => sk < h.as_str(),
                    Bound::Unbounded => true,
                };
                above && below
            }
        }
    }

    /// Whether every sort key it takes is a journal item's.
    fn only_journal(&self) -> bool {
        match self {
            Self::All => false,
            Self::BeginsWith(prefix) => JOURNAL_PREFIXES.iter().any(|p| prefix.starts_with(p)),
            Self::Range(Bound::Included(l) | Bound::Excluded(l), Bound::Included(h) | Bound::Excluded(h)) => {
                JOURNAL_PREFIXES.iter().any(|p| l.starts_with(p) && h.starts_with(p))
            }
            Self::Range(..) => false,
        }
    }
}

fn tokens(expression: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut chars = expression.chars().peekable();
    while let Some(c) = chars.next() {
        let flush = |word: &mut String, out: &mut Vec<String>| {
            if !word.is_empty() {
                out.push(std::mem::take(word));
            }
        };
        match c {
            ' ' | '\t' | '\n' => flush(&mut word, &mut out),
            '(' | ')' | ',' | '=' => {
                flush(&mut word, &mut out);
                out.push(c.to_string());
            }
            '<' | '>' => {
                flush(&mut word, &mut out);
                if chars.peek() == Some(&'=') {
                    chars.next();
                    out.push(format!("{c}="));
                } else {
                    out.push(c.to_string());
                }
            }
            _ => word.push(c),
        }
    }
    if !word.is_empty() {
        out.push(word);
    }
    out
}

/// A Query's key condition: the partition-key value and the sort-key condition.
pub fn key_condition(request: &Value) -> Result<(String, SortCondition), String> {
    let expression = request["KeyConditionExpression"].as_str().ok_or("a Query without KeyConditionExpression")?;
    let value = |token: &str| -> Result<String, String> {
        string_of(&request["ExpressionAttributeValues"][token])
            .map(str::to_owned)
            .ok_or_else(|| format!("{token} is not a string value in ExpressionAttributeValues"))
    };
    let tokens: Vec<String> = tokens(expression).into_iter().filter(|t| t != "(" && t != ")").collect();
    let mut pk = None;
    let mut sort = SortCondition::All;
    let mut i = 0;
    while i < tokens.len() {
        let t = tokens[i].as_str();
        if t.eq_ignore_ascii_case("AND") {
            i += 1;
        } else if t.eq_ignore_ascii_case("begins_with") {
            // begins_with ( name , value ): the parentheses are dropped above.
            let (name, comma, v) = (tokens.get(i + 1), tokens.get(i + 2), tokens.get(i + 3));
            match (name, comma, v) {
                (Some(name), Some(c), Some(v)) if c == "," && resolve_name(request, name) == SK => {
                    sort = SortCondition::BeginsWith(value(v)?);
                    i += 4;
                }
                _ => return Err(format!("cannot read the key condition {expression:?}")),
            }
        } else {
            let name = resolve_name(request, t);
            let op = tokens.get(i + 1).map(String::as_str).ok_or_else(|| format!("{expression:?} ends early"))?;
            let v = tokens.get(i + 2).ok_or_else(|| format!("{expression:?} ends early"))?;
            match (name, op) {
                (PK, "=") => pk = Some(value(v)?),
                (SK, "=") => sort = SortCondition::Range(Bound::Included(value(v)?), Bound::Included(value(v)?)),
                (SK, "<") => sort = SortCondition::Range(Bound::Unbounded, Bound::Excluded(value(v)?)),
                (SK, "<=") => sort = SortCondition::Range(Bound::Unbounded, Bound::Included(value(v)?)),
                (SK, ">") => sort = SortCondition::Range(Bound::Excluded(value(v)?), Bound::Unbounded),
                (SK, ">=") => sort = SortCondition::Range(Bound::Included(value(v)?), Bound::Unbounded),
                (SK, between) if between.eq_ignore_ascii_case("BETWEEN") => {
                    let high = tokens.get(i + 4).ok_or_else(|| format!("{expression:?} ends early"))?;
                    sort = SortCondition::Range(Bound::Included(value(v)?), Bound::Included(value(high)?));
                    i += 2;
                }
                _ => return Err(format!("cannot read the key condition {expression:?}")),
            }
            i += 3;
        }
    }
    Ok((pk.ok_or_else(|| format!("no partition key in {expression:?}"))?, sort))
}

/// The top-level attribute names a ProjectionExpression keeps (`None`: all).
fn projection(request: &Value) -> Result<Option<Vec<String>>, String> {
    let Some(expression) = request["ProjectionExpression"].as_str() else { return Ok(None) };
    let mut names = Vec::new();
    for name in expression.split(',').map(str::trim) {
        if name.contains(['.', '[']) {
            return Err(format!("ProjectionExpression {expression:?}: only top-level names are served"));
        }
        names.push(resolve_name(request, name).to_owned());
    }
    Ok(Some(names))
}

fn project(json: &str, keep: &Option<Vec<String>>) -> String {
    match keep {
        None => json.to_owned(),
        Some(names) => {
            let item: Map<String, Value> = serde_json::from_str(json).unwrap_or_default();
            let kept: Map<String, Value> = item.into_iter().filter(|(k, _)| names.contains(k)).collect();
            Value::Object(kept).to_string()
        }
    }
}

/// `attribute_not_exists(<key>)`, or no condition: whether the put is put-if-absent.
fn put_if_absent(request: &Value) -> Result<bool, String> {
    let Some(condition) = request["ConditionExpression"].as_str() else { return Ok(false) };
    let t = tokens(condition);
    match t.as_slice() {
        [f, open, name, close]
            if f == "attribute_not_exists"
                && open == "("
                && close == ")"
                && [PK, SK].contains(&resolve_name(request, name)) =>
        {
            Ok(true)
        }
        _ => Err(format!(
            "ConditionExpression {condition:?} on a journal item: only attribute_not_exists(<key>) is served"
        )),
    }
}

fn wants_capacity(request: &Value) -> bool {
    request["ReturnConsumedCapacity"].as_str().is_some_and(|c| c != "NONE")
}

fn capacity(table: &str, units: f64) -> Value {
    json!({"TableName": table, "CapacityUnits": units})
}

/// The units in an answer's ConsumedCapacity (one object, or a list for batches).
fn consumed(answer: &Value) -> f64 {
    match &answer["ConsumedCapacity"] {
        Value::Array(list) => list.iter().filter_map(|c| c["CapacityUnits"].as_f64()).sum(),
        c => c["CapacityUnits"].as_f64().unwrap_or(0.0),
    }
}

impl Front {
    fn fronted(&self, request: &Value) -> bool {
        self.table.as_deref().is_some_and(|t| request["TableName"].as_str() == Some(t))
    }

    fn is_fronted_table(&self, table: &str) -> bool {
        self.table.as_deref() == Some(table)
    }

    /// Takes `units` from the write (or read) bucket of partition `pk`; `true` without limits.
    fn admit(&self, memory: &mut Memory, pk: &str, units: f64, write: bool) -> bool {
        let Some(limits) = self.limits else { return true };
        let (buckets, rate) = if write {
            (&mut memory.writes, limits.write_units_per_second)
        } else {
            (&mut memory.reads, limits.read_units_per_second)
        };
        let now = Instant::now();
        buckets.entry(pk.to_owned()).or_insert(Bucket { tokens: rate, last: now }).take(rate, units, now)
    }

    /// Debits units learnt after the fact (a forwarded write's answer).
    fn debit(&self, pk: &str, units: f64) {
        if self.limits.is_none() || units <= 0.0 {
            return;
        }
        if let Ok(mut memory) = self.memory.lock()
            && let Some(bucket) = memory.writes.get_mut(pk)
        {
            bucket.tokens -= units;
        }
    }

    async fn handle(self: Arc<Self>, parts: Parts, body: Bytes) -> Reply {
        let operation = parts
            .headers
            .get("x-amz-target")
            .and_then(|v| v.to_str().ok())
            .and_then(|t| t.split('.').nth(1))
            .unwrap_or_default()
            .to_owned();
        let Ok(request) = serde_json::from_slice::<Value>(&body) else {
            return self.forward_raw(&parts, body).await;
        };
        match operation.as_str() {
            "PutItem" | "DeleteItem" | "GetItem" => self.single(&operation, &parts, request).await,
            "Query" => self.query(&parts, request).await,
            "BatchWriteItem" => self.batch_write(&parts, request).await,
            "BatchGetItem" => self.batch_get(&parts, request).await,
            "UpdateItem" => {
                let journal =
                    self.fronted(&request) && key_of(&request["Key"]).is_some_and(|(pk, sk)| is_journal_key(&pk, &sk));
                if journal {
                    return validation("UpdateItem on a journal item is not served".into());
                }
                let pk = string_of(&request["Key"][PK]).unwrap_or_default().to_owned();
                self.forward_counted(&parts, request, true, Some(pk), 1.0).await
            }
            "TransactWriteItems" | "TransactGetItems" => {
                let touches = request["TransactItems"].as_array().is_some_and(|items| {
                    items.iter().any(|t| {
                        t.as_object().and_then(|o| o.values().next()).is_some_and(|op| {
                            self.fronted(op)
                                && key_of(op.get("Key").or(op.get("Item")).unwrap_or(&Value::Null))
                                    .is_some_and(|(pk, sk)| is_journal_key(&pk, &sk))
                        })
                    })
                });
                if touches {
                    return validation(format!("{operation} on a journal item is not served"));
                }
                self.forward_counted(&parts, request, operation == "TransactWriteItems", None, 0.0).await
            }
            "Scan" => self.forward_counted(&parts, request, false, None, 0.0).await,
            _ => self.forward_raw(&parts, body).await,
        }
    }

    async fn send(&self, parts: &Parts, body: Bytes) -> Result<(hyper::http::response::Parts, Bytes), String> {
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let mut request = Request::builder().method(parts.method.clone()).uri(format!("{}{path}", self.upstream));
        for (name, value) in &parts.headers {
            if name != hyper::header::CONTENT_LENGTH {
                request = request.header(name, value);
            }
        }
        let request = request.body(Full::new(body)).map_err(|e| e.to_string())?;
        let response = self.client.request(request).await.map_err(|e| e.to_string())?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok((parts, body))
    }

    async fn forward_raw(&self, parts: &Parts, body: Bytes) -> Reply {
        match self.send(parts, body).await {
            Ok((answer, body)) => hyper::Response::from_parts(answer, Full::new(body)),
            Err(e) => reply(StatusCode::BAD_GATEWAY, format!("upstream failed: {e}")),
        }
    }

    /// Forwards with `ReturnConsumedCapacity: TOTAL` and counts the answer's units. A write to partition `pk` of
    /// the fronted table first takes `charge` units from its bucket, and the rest of its units after.
    async fn forward_counted(
        &self,
        parts: &Parts,
        mut request: Value,
        write: bool,
        pk: Option<String>,
        charge: f64,
    ) -> Reply {
        let limited = write && self.fronted(&request);
        if limited && let Some(pk) = &pk {
            let admitted = self.memory.lock().is_ok_and(|mut m| self.admit(&mut m, pk, charge, true));
            if !admitted {
                self.counts.other_writes.refused.fetch_add(1, Ordering::Relaxed);
                return throttled();
            }
        }
        if !wants_capacity(&request) {
            request["ReturnConsumedCapacity"] = json!("TOTAL");
        }
        let (answer, body) = match self.send(parts, Bytes::from(request.to_string())).await {
            Ok(answered) => answered,
            Err(e) => return reply(StatusCode::BAD_GATEWAY, format!("upstream failed: {e}")),
        };
        let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let failed_condition =
            parsed["__type"].as_str().is_some_and(|t| t.ends_with("ConditionalCheckFailedException"));
        // DynamoDB bills a write whose condition failed (by the item's size: under 1 KB here).
        let units = if failed_condition { 1.0 } else { consumed(&parsed) };
        let tally = if write { &self.counts.other_writes } else { &self.counts.other_reads };
        tally.add(1, 1, units);
        if limited && let Some(pk) = &pk {
            self.debit(pk, units - charge);
        }
        hyper::Response::from_parts(answer, Full::new(body))
    }

    /// PutItem, DeleteItem, GetItem.
    async fn single(&self, operation: &str, parts: &Parts, request: Value) -> Reply {
        let write = operation != "GetItem";
        let addressed = if operation == "PutItem" { &request["Item"] } else { &request["Key"] };
        let key = key_of(addressed);
        let journal = self.fronted(&request) && key.as_ref().is_some_and(|(pk, sk)| is_journal_key(pk, sk));
        let Some((pk, sk)) = key.filter(|_| journal) else {
            let pk = string_of(&addressed[PK]).unwrap_or_default().to_owned();
            let charge = match operation {
                "PutItem" => addressed.as_object().map_or(1.0, |i| write_units(item_size(i))),
                _ => 1.0,
            };
            return self.forward_counted(parts, request, write, Some(pk), charge).await;
        };
        let table = request["TableName"].as_str().unwrap_or_default().to_owned();
        let Ok(mut memory) = self.memory.lock() else { return validation("state poisoned".into()) };
        match operation {
            "PutItem" => {
                let if_absent = match put_if_absent(&request) {
                    Ok(c) => c,
                    Err(e) => return validation(e),
                };
                let item = request["Item"].as_object().cloned().unwrap_or_default();
                let size = item_size(&item);
                let units = write_units(size);
                if !self.admit(&mut memory, &pk, units, true) {
                    self.counts.journal_writes.refused.fetch_add(1, Ordering::Relaxed);
                    return throttled();
                }
                self.counts.journal_writes.add(1, 1, units);
                let partition = memory.partitions.entry(pk).or_default();
                if if_absent && let Some(old) = partition.get(&sk) {
                    let wants_old = request["ReturnValuesOnConditionCheckFailure"].as_str() == Some("ALL_OLD");
                    return condition_failed(wants_old.then(|| serde_json::from_str(&old.json).unwrap_or_default()));
                }
                let old = partition.insert(sk, Stored { json: Value::Object(item).to_string().into(), size });
                let mut body = json!({});
                if request["ReturnValues"].as_str() == Some("ALL_OLD")
                    && let Some(old) = old
                {
                    body["Attributes"] = serde_json::from_str(&old.json).unwrap_or_default();
                }
                if wants_capacity(&request) {
                    body["ConsumedCapacity"] = capacity(&table, units);
                }
                ok(&body)
            }
            "DeleteItem" => {
                if request.get("ConditionExpression").is_some() {
                    return validation("a conditional DeleteItem on a journal item is not served".into());
                }
                let size = memory.partitions.get(&pk).and_then(|p| p.get(&sk)).map_or(0, |s| s.size);
                let units = write_units(size);
                if !self.admit(&mut memory, &pk, units, true) {
                    self.counts.journal_writes.refused.fetch_add(1, Ordering::Relaxed);
                    return throttled();
                }
                self.counts.journal_writes.add(1, 1, units);
                let old = memory.partitions.get_mut(&pk).and_then(|p| p.remove(&sk));
                let mut body = json!({});
                if request["ReturnValues"].as_str() == Some("ALL_OLD")
                    && let Some(old) = old
                {
                    body["Attributes"] = serde_json::from_str(&old.json).unwrap_or_default();
                }
                if wants_capacity(&request) {
                    body["ConsumedCapacity"] = capacity(&table, units);
                }
                ok(&body)
            }
            _ => {
                let keep = match projection(&request) {
                    Ok(k) => k,
                    Err(e) => return validation(e),
                };
                let consistent = request["ConsistentRead"].as_bool().unwrap_or(false);
                let found = memory.partitions.get(&pk).and_then(|p| p.get(&sk));
                let units = read_units(found.map_or(0, |s| s.size), consistent);
                let item = found.map(|s| project(&s.json, &keep));
                if !self.admit(&mut memory, &pk, units, false) {
                    self.counts.journal_reads.refused.fetch_add(1, Ordering::Relaxed);
                    return throttled();
                }
                self.counts.journal_reads.add(1, u64::from(item.is_some()), units);
                let mut body = String::from("{");
                if let Some(item) = item {
                    body.push_str(&format!("\"Item\":{item}"));
                }
                if wants_capacity(&request) {
                    if body.len() > 1 {
                        body.push(',');
                    }
                    body.push_str(&format!("\"ConsumedCapacity\":{}", capacity(&table, units)));
                }
                body.push('}');
                answer(StatusCode::OK, body)
            }
        }
    }

    async fn query(&self, parts: &Parts, request: Value) -> Reply {
        if !self.fronted(&request) || request.get("IndexName").is_some() {
            return self.forward_counted(parts, request, false, None, 0.0).await;
        }
        let (pk, sort) = match key_condition(&request) {
            Ok(c) => c,
            Err(e) => return validation(e),
        };
        let journal = is_shard_partition(&pk) || sort.only_journal();
        if !journal {
            let spans = sort == SortCondition::All
                && self.memory.lock().is_ok_and(|m| m.partitions.get(&pk).is_some_and(|p| !p.is_empty()));
            if spans {
                return validation(format!("a Query of all of partition {pk}, journal and other items at once"));
            }
            return self.forward_counted(parts, request, false, None, 0.0).await;
        }
        if request.get("FilterExpression").is_some() {
            return validation("a FilterExpression on the journal is not served".into());
        }
        let keep = match projection(&request) {
            Ok(k) => k,
            Err(e) => return validation(e),
        };
        let table = request["TableName"].as_str().unwrap_or_default().to_owned();
        let forward = request["ScanIndexForward"].as_bool().unwrap_or(true);
        let consistent = request["ConsistentRead"].as_bool().unwrap_or(false);
        let limit = request["Limit"].as_u64().map_or(usize::MAX, |l| l as usize);
        let count_only = request["Select"].as_str() == Some("COUNT");
        let start = key_of(&request["ExclusiveStartKey"]).map(|(_, sk)| sk);
        let Ok(mut memory) = self.memory.lock() else { return validation("state poisoned".into()) };
        let (mut items, mut bytes, mut last) = (Vec::new(), 0u64, None);
        if let Some(partition) = memory.partitions.get(&pk) {
            let range: Box<dyn Iterator<Item = (&String, &Stored)>> = match (&start, forward) {
                (Some(s), true) => Box::new(partition.range::<String, _>((Bound::Excluded(s), Bound::Unbounded))),
                (Some(s), false) => {
                    Box::new(partition.range::<String, _>((Bound::Unbounded, Bound::Excluded(s))).rev())
                }
                (None, true) => Box::new(partition.iter()),
                (None, false) => Box::new(partition.iter().rev()),
            };
            // begins_with and ranges: the matching keys are contiguous, so the walk stops past them.
            let mut seen_match = false;
            for (sk, stored) in range {
                if !sort.matches(sk) {
                    if seen_match {
                        break;
                    }
                    continue;
                }
                seen_match = true;
                items.push(if count_only { String::new() } else { project(&stored.json, &keep) });
                bytes += stored.size;
                if items.len() >= limit || bytes >= PAGE_BYTES {
                    last = Some(stored.json.clone());
                    break;
                }
            }
        }
        let units = read_units(bytes, consistent);
        if !self.admit(&mut memory, &pk, units, false) {
            self.counts.journal_reads.refused.fetch_add(1, Ordering::Relaxed);
            return throttled();
        }
        drop(memory);
        self.counts.journal_reads.add(1, items.len() as u64, units);
        let mut body = format!("{{\"Count\":{0},\"ScannedCount\":{0}", items.len());
        if !count_only {
            body.push_str(&format!(",\"Items\":[{}]", items.join(",")));
        }
        if let Some(last) = last {
            let item: Value = serde_json::from_str(&last).unwrap_or_default();
            body.push_str(&format!(",\"LastEvaluatedKey\":{}", json!({PK: item[PK], SK: item[SK]})));
        }
        if wants_capacity(&request) {
            body.push_str(&format!(",\"ConsumedCapacity\":{}", capacity(&table, units)));
        }
        body.push('}');
        answer(StatusCode::OK, body)
    }

    async fn batch_write(&self, parts: &Parts, request: Value) -> Reply {
        let Some(tables) = request["RequestItems"].as_object() else {
            return validation("BatchWriteItem without RequestItems".into());
        };
        let (mut rest, mut unprocessed) = (Map::new(), Map::new());
        let (mut done, mut refused_all, mut units_by_table) = (0usize, true, HashMap::<String, f64>::new());
        {
            let Ok(mut memory) = self.memory.lock() else { return validation("state poisoned".into()) };
            for (table, writes) in tables {
                let writes = writes.as_array().cloned().unwrap_or_default();
                if !self.is_fronted_table(table) {
                    refused_all = false;
                    rest.insert(table.clone(), Value::Array(writes));
                    continue;
                }
                let (mut forwarded, mut left) = (Vec::new(), Vec::new());
                for write in writes {
                    let (item, put) = match (write.get("PutRequest"), write.get("DeleteRequest")) {
                        (Some(p), _) => (&p["Item"], true),
                        (_, Some(d)) => (&d["Key"], false),
                        _ => return validation("a write request that is neither PutRequest nor DeleteRequest".into()),
                    };
                    let Some((pk, sk)) = key_of(item) else {
                        return validation("a BatchWriteItem item without its pk and sk strings".into());
                    };
                    let journal = is_journal_key(&pk, &sk);
                    let size = if put {
                        item.as_object().map_or(0, item_size)
                    } else {
                        memory.partitions.get(&pk).and_then(|p| p.get(&sk)).map_or(0, |s| s.size)
                    };
                    let units = write_units(size);
                    if !self.admit(&mut memory, &pk, units, true) {
                        let tally = if journal { &self.counts.journal_writes } else { &self.counts.other_writes };
                        tally.refused.fetch_add(1, Ordering::Relaxed);
                        left.push(write.clone());
                        continue;
                    }
                    refused_all = false;
                    if !journal {
                        forwarded.push(write.clone());
                        continue;
                    }
                    self.counts.journal_writes.add(0, 1, units);
                    *units_by_table.entry(table.clone()).or_default() += units;
                    done += 1;
                    let partition = memory.partitions.entry(pk).or_default();
                    if put {
                        let json = item.to_string().into();
                        partition.insert(sk, Stored { json, size });
                    } else {
                        partition.remove(&sk);
                    }
                }
                if !forwarded.is_empty() {
                    rest.insert(table.clone(), Value::Array(forwarded));
                }
                if !left.is_empty() {
                    unprocessed.insert(table.clone(), Value::Array(left));
                }
            }
        }
        if done > 0 {
            self.counts.journal_writes.requests.fetch_add(1, Ordering::Relaxed);
        }
        if refused_all {
            return throttled();
        }
        let mut capacities: Vec<Value> = units_by_table.iter().map(|(t, u)| capacity(t, *u)).collect();
        if !rest.is_empty() {
            let mut forwarded = request.clone();
            forwarded["RequestItems"] = Value::Object(rest);
            forwarded["ReturnConsumedCapacity"] = json!("TOTAL");
            let (_, body) = match self.send(parts, Bytes::from(forwarded.to_string())).await {
                Ok(answered) => answered,
                Err(e) => return reply(StatusCode::BAD_GATEWAY, format!("upstream failed: {e}")),
            };
            let answered: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            if answered.get("__type").is_some() {
                return answer(StatusCode::BAD_REQUEST, body_text(&body));
            }
            self.counts.other_writes.add(1, 0, consumed(&answered));
            if let Some(left) = answered["UnprocessedItems"].as_object() {
                for (table, writes) in left {
                    let entry = unprocessed.entry(table.clone()).or_insert_with(|| json!([]));
                    if let (Some(all), Some(more)) = (entry.as_array_mut(), writes.as_array()) {
                        all.extend(more.iter().cloned());
                    }
                }
            }
            if let Some(list) = answered["ConsumedCapacity"].as_array() {
                capacities.extend(list.iter().cloned());
            }
        }
        let mut body = json!({"UnprocessedItems": unprocessed});
        if wants_capacity(&request) {
            body["ConsumedCapacity"] = Value::Array(capacities);
        }
        ok(&body)
    }

    async fn batch_get(&self, parts: &Parts, request: Value) -> Reply {
        let Some(tables) = request["RequestItems"].as_object() else {
            return validation("BatchGetItem without RequestItems".into());
        };
        let (mut rest, mut responses, mut unprocessed) = (Map::new(), Map::new(), Map::new());
        let (mut served, mut refused_all) = (false, true);
        {
            let Ok(mut memory) = self.memory.lock() else { return validation("state poisoned".into()) };
            for (table, spec) in tables {
                if !self.is_fronted_table(table) {
                    refused_all = false;
                    rest.insert(table.clone(), spec.clone());
                    continue;
                }
                let mut scoped = spec.clone();
                scoped["ExpressionAttributeNames"] = spec["ExpressionAttributeNames"].clone();
                let keep = match projection(&scoped) {
                    Ok(k) => k,
                    Err(e) => return validation(e),
                };
                let consistent = spec["ConsistentRead"].as_bool().unwrap_or(false);
                let (mut found, mut others, mut left) = (Vec::new(), Vec::new(), Vec::new());
                for key in spec["Keys"].as_array().cloned().unwrap_or_default() {
                    let Some((pk, sk)) = key_of(&key) else {
                        return validation("a BatchGetItem key without its pk and sk strings".into());
                    };
                    if !is_journal_key(&pk, &sk) {
                        refused_all = false;
                        others.push(key);
                        continue;
                    }
                    let stored = memory.partitions.get(&pk).and_then(|p| p.get(&sk));
                    let units = read_units(stored.map_or(0, |s| s.size), consistent);
                    let item = stored.map(|s| project(&s.json, &keep));
                    if !self.admit(&mut memory, &pk, units, false) {
                        self.counts.journal_reads.refused.fetch_add(1, Ordering::Relaxed);
                        left.push(key);
                        continue;
                    }
                    refused_all = false;
                    served = true;
                    self.counts.journal_reads.add(0, u64::from(item.is_some()), units);
                    if let Some(item) = item {
                        found.push(serde_json::from_str::<Value>(&item).unwrap_or_default());
                    }
                }
                responses.insert(table.clone(), Value::Array(found));
                if !others.is_empty() {
                    let mut spec = spec.clone();
                    spec["Keys"] = Value::Array(others);
                    rest.insert(table.clone(), spec);
                }
                if !left.is_empty() {
                    let mut spec = spec.clone();
                    spec["Keys"] = Value::Array(left);
                    unprocessed.insert(table.clone(), spec);
                }
            }
        }
        if served {
            self.counts.journal_reads.requests.fetch_add(1, Ordering::Relaxed);
        }
        if refused_all {
            return throttled();
        }
        if !rest.is_empty() {
            let mut forwarded = request.clone();
            forwarded["RequestItems"] = Value::Object(rest);
            forwarded["ReturnConsumedCapacity"] = json!("TOTAL");
            let (_, body) = match self.send(parts, Bytes::from(forwarded.to_string())).await {
                Ok(answered) => answered,
                Err(e) => return reply(StatusCode::BAD_GATEWAY, format!("upstream failed: {e}")),
            };
            let answered: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            if answered.get("__type").is_some() {
                return answer(StatusCode::BAD_REQUEST, body_text(&body));
            }
            self.counts.other_reads.add(1, 0, consumed(&answered));
            for (field, into) in [("Responses", &mut responses), ("UnprocessedKeys", &mut unprocessed)] {
                if let Some(more) = answered[field].as_object() {
                    for (table, value) in more {
                        match (into.get_mut(table), field) {
                            (Some(Value::Array(all)), "Responses") => {
                                all.extend(value.as_array().cloned().unwrap_or_default());
                            }
                            _ => {
                                into.insert(table.clone(), value.clone());
                            }
                        }
                    }
                }
            }
        }
        ok(&json!({"Responses": responses, "UnprocessedKeys": unprocessed}))
    }
}

fn body_text(body: &Bytes) -> String {
    String::from_utf8_lossy(body).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(expression: &str, names: Value, values: Value) -> Value {
        json!({"KeyConditionExpression": expression, "ExpressionAttributeNames": names,
               "ExpressionAttributeValues": values})
    }

    #[test]
    fn key_conditions_as_the_push_store_writes_them() {
        let q = query(
            "#pk = :p AND begins_with(#sk, :prefix)",
            json!({"#pk": "pk", "#sk": "sk"}),
            json!({":p": {"S": "push-1"}, ":prefix": {"S": "previous#001#"}}),
        );
        assert_eq!(key_condition(&q), Ok(("push-1".into(), SortCondition::BeginsWith("previous#001#".into()))));
        let q = query(
            "pk = :p AND sk BETWEEN :a AND :b",
            json!({}),
            json!({":p": {"S": "push-1#3"}, ":a": {"S": "failure#a"}, ":b": {"S": "failure#z"}}),
        );
        let (pk, sort) = key_condition(&q).expect("a BETWEEN condition");
        assert_eq!(pk, "push-1#3");
        assert!(sort.only_journal() && sort.matches("failure#m") && !sort.matches("failure#zz"));
        let q = query(
            "#pk = :p AND #sk > :s",
            json!({"#pk": "pk", "#sk": "sk"}),
            json!({":p": {"S": "x"}, ":s": {"S": "b"}}),
        );
        assert_eq!(
            key_condition(&q),
            Ok(("x".into(), SortCondition::Range(Bound::Excluded("b".into()), Bound::Unbounded)))
        );
        assert!(key_condition(&query("#sk = :s", json!({"#sk": "sk"}), json!({":s": {"S": "b"}}))).is_err());
        assert!(key_condition(&query("pk = :p", json!({}), json!({":p": {"N": "1"}}))).is_err());
    }

    #[test]
    fn journal_keys_are_told_from_the_record() {
        assert!(is_journal_key("push-1", "previous#001#thing-1"));
        assert!(is_journal_key("push-1#3", "failure#thing-1"));
        assert!(!is_journal_key("#senders", "push-1"));
        assert!(is_journal_key("push-1", "failure#thing-1"));
        assert!(is_journal_key("push-1#7", "anything"));
        assert!(!is_journal_key("push-1", "push"));
        assert!(SortCondition::BeginsWith("conflict#".into()).only_journal());
        assert!(!SortCondition::BeginsWith("plan#".into()).only_journal());
        assert!(!SortCondition::All.only_journal());
    }

    #[test]
    fn item_sizes_and_units_follow_dynamodb() {
        let item = json!({"pk": {"S": "push-1"}, "sk": {"S": "previous#001#t"}, "phase": {"N": "1"},
                          "ok": {"BOOL": true}, "m": {"M": {"a": {"S": "xy"}}}});
        let size = item_size(item.as_object().expect("an object"));
        // pk 2+6, sk 2+14, phase 5+2, ok 2+1, m 1+3+(1+2)
        assert_eq!(size, 8 + 16 + 7 + 3 + 7);
        assert_eq!(write_units(0), 1.0);
        assert_eq!(write_units(1024), 1.0);
        assert_eq!(write_units(1025), 2.0);
        assert_eq!(read_units(4096, true), 1.0);
        assert_eq!(read_units(4097, false), 1.0);
        assert_eq!(read_units(100, false), 0.5);
    }

    #[test]
    fn a_bucket_refuses_past_its_rate_and_refills() {
        let start = Instant::now();
        let mut bucket = Bucket { tokens: 10.0, last: start };
        let admitted = (0..15).filter(|_| bucket.take(10.0, 1.0, start)).count();
        assert_eq!(admitted, 10);
        assert!(bucket.take(10.0, 1.0, start + std::time::Duration::from_millis(150)));
        assert!(!bucket.take(10.0, 1.0, start + std::time::Duration::from_millis(150)));
    }

    #[test]
    fn only_put_if_absent_conditions_are_served() {
        let put = |c: &str| json!({"ConditionExpression": c, "ExpressionAttributeNames": {"#pk": "pk"}});
        assert_eq!(put_if_absent(&put("attribute_not_exists(#pk)")), Ok(true));
        assert_eq!(put_if_absent(&json!({})), Ok(false));
        assert!(put_if_absent(&put("attribute_exists(#pk)")).is_err());
        assert!(put_if_absent(&put("attribute_not_exists(#pk) AND x = :y")).is_err());
    }
}
