//! DynamoDB's write limit per partition, put back in front of DynamoDB Local (which enforces none): an HTTP proxy
//! that admits at most `W` write units a second per partition key value (a token bucket per value, holding one
//! second's worth), and answers the rest as DynamoDB does: PutItem, UpdateItem and DeleteItem with HTTP 400
//! `ProvisionedThroughputExceededException`; BatchWriteItem with the refused items in `UnprocessedItems` (the whole
//! call refused when none of its items is admitted). Everything else passes unchanged. It counts what it admitted
//! and refused, per partition key value.
//!
//! A write takes the units DynamoDB bills it: its item's size (attribute names and values, [`item_size`]) rounded up
//! to 1 KB, at least one. A put is sized by the item it writes; an update or a delete by the item it changes, read
//! from DynamoDB Local first (DynamoDB bills an update by the larger of the item before and after: the front counts
//! the one before, as the updates it sees add a few bytes at most).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::Full;
use hyper::http::request::Parts;
use hyper::{Response, StatusCode};
use serde_json::{Map, Value, json};

use crate::http::{Reply, Server, Upstream, serve};

/// The partition key attribute of the project's tables.
const PARTITION_KEY: &str = shadow_aws::tables::PARTITION_KEY;

/// What one partition key value was given.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PartitionCount {
    /// Writes admitted and refused.
    pub admitted: u64,
    pub refused: u64,
    /// The write units of those writes.
    pub admitted_units: u64,
    pub refused_units: u64,
    /// When its first and last writes were admitted (the span its writes took).
    pub first: Option<Instant>,
    pub last: Option<Instant>,
}

/// DynamoDB's bytes a write unit covers.
const UNIT_BYTES: usize = 1024;

/// The size DynamoDB gives an item in its wire form (`{"name": {"S": ".."}, ..}`): each attribute's name (UTF-8
/// bytes) and value. A string is its UTF-8 bytes, a binary its decoded bytes, a number about one byte per two
/// significant digits and one more, a boolean or null one byte, a set the sum of its elements, a list or a map 3
/// bytes and one a member beside its members (a map's with their names).
pub fn item_size(item: &Map<String, Value>) -> usize {
    item.iter().map(|(name, value)| name.len() + value_size(value)).sum()
}

fn value_size(value: &Value) -> usize {
    let Some((kind, inner)) = value.as_object().and_then(|o| o.iter().next()) else { return 0 };
    let text = || inner.as_str().unwrap_or_default();
    let number = |n: &str| n.trim_start_matches(['-', '0', '.']).chars().filter(char::is_ascii_digit).count() / 2 + 1;
    let each = |f: &dyn Fn(&Value) -> usize| inner.as_array().into_iter().flatten().map(f).sum::<usize>();
    match kind.as_str() {
        "S" => text().len(),
        "N" => number(text()),
        "B" => text().len() * 3 / 4,
        "BOOL" | "NULL" => 1,
        "SS" => each(&|v| v.as_str().map_or(0, str::len)),
        "NS" => each(&|v| v.as_str().map_or(0, number)),
        "BS" => each(&|v| v.as_str().map_or(0, |b| b.len() * 3 / 4)),
        "L" => 3 + each(&|v| 1 + value_size(v)),
        "M" => 3 + inner.as_object().into_iter().flatten().map(|(k, v)| 1 + k.len() + value_size(v)).sum::<usize>(),
        _ => 0,
    }
}

/// The write units of a write of `item` (absent: an item not there yet): its size rounded up to 1 KB, at least 1.
pub fn write_units(item: Option<&Map<String, Value>>) -> u32 {
    let size = item.map_or(0, item_size);
    u32::try_from(size.div_ceil(UNIT_BYTES).max(1)).unwrap_or(u32::MAX)
}

/// The most units of `writes` (in order) in any window of one second.
fn peak_per_second(writes: &[(Instant, u32)]) -> usize {
    let (mut peak, mut start, mut sum) = (0, 0, 0usize);
    for (at, units) in writes {
        sum += *units as usize;
        while at.duration_since(writes[start].0).as_secs_f64() >= 1.0 {
            sum -= writes[start].1 as usize;
            start += 1;
        }
        peak = peak.max(sum);
    }
    peak
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

#[derive(Default)]
struct Partitions {
    buckets: HashMap<String, Bucket>,
    counts: BTreeMap<String, PartitionCount>,
    /// When each write of each partition was admitted, in order, and its units.
    admissions: HashMap<String, Vec<(Instant, u32)>>,
    /// When each write of each partition was asked for (admitted or refused), and its units.
    asked: HashMap<String, Vec<(Instant, u32)>>,
}

struct Front {
    upstream: Upstream,
    writes_per_second: f64,
    partitions: Mutex<Partitions>,
}

impl Front {
    /// Takes `units` write units of `pk`'s bucket, if it has them (a write of more units than a second's worth
    /// when the bucket is full).
    fn admit(&self, pk: &str, units: u32) -> bool {
        let now = Instant::now();
        let mut p = self.partitions.lock().unwrap_or_else(|e| e.into_inner());
        let rate = self.writes_per_second;
        let bucket = p.buckets.entry(pk.to_owned()).or_insert(Bucket { tokens: rate, at: now });
        bucket.tokens = (bucket.tokens + now.duration_since(bucket.at).as_secs_f64() * rate).min(rate);
        bucket.at = now;
        let admitted = bucket.tokens >= f64::from(units).min(rate);
        if admitted {
            bucket.tokens -= f64::from(units);
            p.admissions.entry(pk.to_owned()).or_default().push((now, units));
        }
        p.asked.entry(pk.to_owned()).or_default().push((now, units));
        let count = p.counts.entry(pk.to_owned()).or_insert(PartitionCount {
            admitted: 0,
            refused: 0,
            admitted_units: 0,
            refused_units: 0,
            first: None,
            last: None,
        });
        if admitted {
            count.admitted += 1;
            count.admitted_units += u64::from(units);
            count.first.get_or_insert(now);
            count.last = Some(now);
        } else {
            count.refused += 1;
            count.refused_units += u64::from(units);
        }
        admitted
    }

    /// The units an update or a delete of the item at `key` in `table` takes: the item's as stored (1 when there is
    /// none), read from DynamoDB Local with the request's own headers.
    async fn stored_units(&self, parts: &Parts, table: &str, key: &Value) -> u32 {
        let get = json!({"TableName": table, "Key": key, "ConsistentRead": true});
        let body = Bytes::from(get.to_string());
        let mut parts = with_length(parts, body.len());
        parts.headers.insert("x-amz-target", hyper::header::HeaderValue::from_static("DynamoDB_20120810.GetItem"));
        let (answer, body) = self.upstream.forward(&parts, body).await;
        let stored: Value =
            if answer.status.is_success() { serde_json::from_slice(&body).unwrap_or_default() } else { Value::Null };
        write_units(stored.get("Item").and_then(Value::as_object))
    }
}

/// A DynamoDB endpoint with a write limit per partition key value.
pub struct PartitionFront {
    pub url: String,
    front: Arc<Front>,
    _server: Server,
}

impl PartitionFront {
    /// Listens on a free loopback port and forwards to DynamoDB at `upstream`, admitting `writes_per_second` write
    /// units a second per partition key value (a write of an item up to 1 KB takes one).
    pub async fn start(upstream: &str, writes_per_second: u32) -> Self {
        let front = Arc::new(Front {
            upstream: Upstream::new(upstream),
            writes_per_second: f64::from(writes_per_second.max(1)),
            partitions: Mutex::default(),
        });
        let serving = front.clone();
        let server = serve(move |parts, body| handle(serving.clone(), parts, body)).await;
        Self { url: server.url(), front, _server: server }
    }

    /// Admitted and refused writes, per partition key value.
    pub fn counts(&self) -> BTreeMap<String, PartitionCount> {
        self.front.partitions.lock().unwrap_or_else(|e| e.into_inner()).counts.clone()
    }

    /// The most write units a partition key value was given in any one second.
    pub fn peak_per_second(&self, pk: &str) -> usize {
        let p = self.front.partitions.lock().unwrap_or_else(|e| e.into_inner());
        p.admissions.get(pk).map_or(0, |a| peak_per_second(a))
    }

    /// The most write units asked of a partition key value (admitted or refused) in any one second.
    pub fn peak_asked_per_second(&self, pk: &str) -> usize {
        let p = self.front.partitions.lock().unwrap_or_else(|e| e.into_inner());
        p.asked.get(pk).map_or(0, |a| peak_per_second(a))
    }

    /// Writes refused, over every partition.
    pub fn refused(&self) -> u64 {
        self.counts().values().map(|c| c.refused).sum()
    }
}

/// The partition key value of an item or a key (`{"pk": {"S": ".."}}`).
fn partition_of(item: Option<&Value>) -> Option<String> {
    item?.get(PARTITION_KEY)?.get("S")?.as_str().map(str::to_owned)
}

fn throughput_exceeded() -> Reply {
    let body = json!({
        "__type": "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
        "message": "The level of configured provisioned throughput for the table was exceeded. Consider increasing \
                    your provisioning level with the UpdateTable API.",
    });
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = StatusCode::BAD_REQUEST;
    let headers = response.headers_mut();
    headers.insert("content-type", hyper::header::HeaderValue::from_static("application/x-amz-json-1.0"));
    if let Ok(id) = uuid::Uuid::new_v4().to_string().parse() {
        headers.insert("x-amzn-requestid", id);
    }
    response
}

/// `parts` for a body of another length (the SDK's signature is not checked by DynamoDB Local).
fn with_length(parts: &Parts, len: usize) -> Parts {
    let mut parts = parts.clone();
    parts.headers.remove("content-length");
    if let Ok(value) = len.to_string().parse() {
        parts.headers.insert("content-length", value);
    }
    parts
}

async fn handle(front: Arc<Front>, parts: Parts, body: Bytes) -> Reply {
    let target = parts.headers.get("x-amz-target").and_then(|t| t.to_str().ok()).unwrap_or_default().to_owned();
    let operation = target.rsplit('.').next().unwrap_or_default();
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    match operation {
        "PutItem" | "UpdateItem" | "DeleteItem" => {
            let item = if operation == "PutItem" { request.get("Item") } else { request.get("Key") };
            if let Some(pk) = partition_of(item) {
                let units = match (operation, item) {
                    ("PutItem", _) => write_units(item.and_then(Value::as_object)),
                    (_, Some(key)) => {
                        let table = request.get("TableName").and_then(Value::as_str).unwrap_or_default();
                        front.stored_units(&parts, table, key).await
                    }
                    _ => 1,
                };
                if !front.admit(&pk, units) {
                    return throughput_exceeded();
                }
            }
        }
        "BatchWriteItem" => return batch_write(&front, &parts, body, request).await,
        _ => {}
    }
    let (answer, body) = front.upstream.forward(&parts, body).await;
    Response::from_parts(answer, Full::new(body))
}

/// Each item of the batch admitted or refused by its partition; the admitted ones sent on, the refused ones added
/// to the answer's `UnprocessedItems`.
async fn batch_write(front: &Front, parts: &Parts, body: Bytes, request: Value) -> Reply {
    let Some(tables) = request.get("RequestItems").and_then(Value::as_object) else {
        // Not a batch this front can read: DynamoDB Local answers it.
        let (answer, body) = front.upstream.forward(parts, body).await;
        return Response::from_parts(answer, Full::new(body));
    };
    let (mut admitted, mut refused) = (Map::new(), Map::new());
    for (table, writes) in tables {
        for write in writes.as_array().into_iter().flatten() {
            let put = write.pointer("/PutRequest/Item");
            let item = put.or_else(|| write.pointer("/DeleteRequest/Key"));
            let units = match (put, item) {
                (Some(put), _) => write_units(put.as_object()),
                (None, Some(key)) => front.stored_units(parts, table, key).await,
                (None, None) => 1,
            };
            let into = match partition_of(item) {
                Some(pk) if !front.admit(&pk, units) => &mut refused,
                _ => &mut admitted,
            };
            let list = into.entry(table.clone()).or_insert_with(|| Value::Array(Vec::new()));
            if let Some(list) = list.as_array_mut() {
                list.push(write.clone());
            }
        }
    }
    if admitted.is_empty() {
        return throughput_exceeded();
    }
    let mut forwarded = request.clone();
    forwarded["RequestItems"] = Value::Object(admitted);
    let body = Bytes::from(forwarded.to_string());
    let (mut answer, body) = front.upstream.forward(&with_length(parts, body.len()), body).await;
    if refused.is_empty() || !answer.status.is_success() {
        return Response::from_parts(answer, Full::new(body));
    }
    let mut out: Value = serde_json::from_slice(&body).unwrap_or_else(|_| json!({}));
    let unprocessed = out
        .as_object_mut()
        .map(|o| o.entry("UnprocessedItems").or_insert_with(|| json!({})))
        .and_then(Value::as_object_mut);
    if let Some(unprocessed) = unprocessed {
        for (table, writes) in refused {
            let list = unprocessed.entry(table).or_insert_with(|| Value::Array(Vec::new()));
            if let (Some(list), Value::Array(writes)) = (list.as_array_mut(), writes) {
                list.extend(writes);
            }
        }
    }
    let body = Bytes::from(out.to_string());
    // The body changed: its length and checksum with it.
    answer.headers.remove("x-amz-crc32");
    answer.headers.remove("content-length");
    if let Ok(value) = body.len().to_string().parse() {
        answer.headers.insert("content-length", value);
    }
    Response::from_parts(answer, Full::new(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn units(item: Value) -> u32 {
        write_units(item.as_object())
    }

    #[test]
    fn an_item_is_sized_as_dynamodb_sizes_it() {
        let item = json!({"pk": {"S": "push-1#3"}, "n": {"N": "-12345"}, "ok": {"BOOL": true},
                          "m": {"M": {"k": {"S": "abc"}, "l": {"L": [{"NULL": true}, {"S": "é"}]}}}});
        // pk 2+8, n 1+(5/2+1), ok 2+1, m 1 + 3 + k (1+1+3) + l (1+1 + 3 + (1+1) + (1+2)).
        assert_eq!(item_size(item.as_object().unwrap_or(&Map::new())), 10 + 4 + 3 + (1 + 3 + 5 + 10));
        assert_eq!(units(json!({"pk": {"S": "a"}})), 1);
        assert_eq!(write_units(None), 1, "a write of nothing stored still takes a unit");
        // 1 KB exactly is one unit; a byte more is two.
        assert_eq!(units(json!({"pk": {"S": "x".repeat(1022)}})), 1);
        assert_eq!(units(json!({"pk": {"S": "x".repeat(1023)}})), 2);
        assert_eq!(units(json!({"pk": {"S": "p"}, "values": {"S": "v".repeat(3000)}})), 3);
    }

    #[test]
    fn the_peak_counts_units_in_any_second() {
        let t = Instant::now();
        let at = |ms: u64| t + std::time::Duration::from_millis(ms);
        assert_eq!(peak_per_second(&[(at(0), 4), (at(500), 4), (at(999), 1), (at(1000), 2), (at(1600), 3)]), 9);
        assert_eq!(peak_per_second(&[]), 0);
    }
}
