//! DynamoDB's write limit per partition, put back in front of DynamoDB Local (which enforces none): an HTTP proxy
//! that admits at most `W` item writes a second per partition key value (a token bucket per value, holding one
//! second's worth), and answers the rest as DynamoDB does: PutItem, UpdateItem and DeleteItem with HTTP 400
//! `ProvisionedThroughputExceededException`; BatchWriteItem with the refused items in `UnprocessedItems` (the whole
//! call refused when none of its items is admitted). Everything else passes unchanged. It counts what it admitted
//! and refused, per partition key value.

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
    pub admitted: u64,
    pub refused: u64,
    /// When its first and last writes were admitted (the span its writes took).
    pub first: Option<Instant>,
    pub last: Option<Instant>,
}

/// The most of `admissions` (in order) in any window of one second.
fn peak_per_second(admissions: &[Instant]) -> usize {
    let (mut peak, mut start) = (0, 0);
    for (end, at) in admissions.iter().enumerate() {
        while at.duration_since(admissions[start]).as_secs_f64() >= 1.0 {
            start += 1;
        }
        peak = peak.max(end - start + 1);
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
    /// When each write of each partition was admitted, in order.
    admissions: HashMap<String, Vec<Instant>>,
}

struct Front {
    upstream: Upstream,
    writes_per_second: f64,
    partitions: Mutex<Partitions>,
}

impl Front {
    /// Takes one write unit of `pk`'s bucket, if it has one.
    fn admit(&self, pk: &str) -> bool {
        let now = Instant::now();
        let mut p = self.partitions.lock().unwrap_or_else(|e| e.into_inner());
        let rate = self.writes_per_second;
        let bucket = p.buckets.entry(pk.to_owned()).or_insert(Bucket { tokens: rate, at: now });
        bucket.tokens = (bucket.tokens + now.duration_since(bucket.at).as_secs_f64() * rate).min(rate);
        bucket.at = now;
        let admitted = bucket.tokens >= 1.0;
        if admitted {
            bucket.tokens -= 1.0;
            p.admissions.entry(pk.to_owned()).or_default().push(now);
        }
        let count = p.counts.entry(pk.to_owned()).or_insert(PartitionCount {
            admitted: 0,
            refused: 0,
            first: None,
            last: None,
        });
        if admitted {
            count.admitted += 1;
            count.first.get_or_insert(now);
            count.last = Some(now);
        } else {
            count.refused += 1;
        }
        admitted
    }
}

/// A DynamoDB endpoint with a write limit per partition key value.
pub struct PartitionFront {
    pub url: String,
    front: Arc<Front>,
    _server: Server,
}

impl PartitionFront {
    /// Listens on a free loopback port and forwards to DynamoDB at `upstream`, admitting `writes_per_second` item
    /// writes a second per partition key value.
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

    /// The most writes a partition key value was given in any one second.
    pub fn peak_per_second(&self, pk: &str) -> usize {
        let p = self.front.partitions.lock().unwrap_or_else(|e| e.into_inner());
        p.admissions.get(pk).map_or(0, |a| peak_per_second(a))
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
            if let Some(pk) = partition_of(item)
                && !front.admit(&pk)
            {
                return throughput_exceeded();
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
            let item = write.pointer("/PutRequest/Item").or_else(|| write.pointer("/DeleteRequest/Key"));
            let into = match partition_of(item) {
                Some(pk) if !front.admit(&pk) => &mut refused,
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
