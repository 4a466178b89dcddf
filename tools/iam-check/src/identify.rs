//! What a request is: the IAM actions and resources of one HTTP request to an AWS service, told from its method,
//! path, headers and body the way AWS tells them (the endpoint variable it was sent through, or its SigV4 scope).
//! Each is a [`Call`], the unit that is recorded and checked.

use std::collections::HashMap;

use hyper::{HeaderMap, Method};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

/// The services the functions and the CLI reach, each through its own `AWS_ENDPOINT_URL_*` variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    DynamoDb,
    Iot,
    IotDataPlane,
    Sqs,
    Lambda,
    CloudFormation,
}

impl Service {
    /// The service an `AWS_ENDPOINT_URL_<SERVICE>` variable points at; `None` for the generic `AWS_ENDPOINT_URL`
    /// and for services this module does not know.
    pub fn of_endpoint_var(var: &str) -> Option<Self> {
        match var {
            "AWS_ENDPOINT_URL_DYNAMODB" => Some(Self::DynamoDb),
            "AWS_ENDPOINT_URL_IOT" => Some(Self::Iot),
            "AWS_ENDPOINT_URL_IOT_DATA_PLANE" => Some(Self::IotDataPlane),
            "AWS_ENDPOINT_URL_SQS" => Some(Self::Sqs),
            "AWS_ENDPOINT_URL_LAMBDA" => Some(Self::Lambda),
            "AWS_ENDPOINT_URL_CLOUDFORMATION" => Some(Self::CloudFormation),
            _ => None,
        }
    }

    /// The service a SigV4 signature was made for (`Credential=<key>/<date>/<region>/<service>/aws4_request`).
    fn of_signature(headers: &HeaderMap) -> Option<Self> {
        let authorization = headers.get("authorization")?.to_str().ok()?;
        let credential = authorization.split("Credential=").nth(1)?;
        let scope = credential.split([',', ' ']).next()?;
        match scope.split('/').nth(3)? {
            "dynamodb" => Some(Self::DynamoDb),
            "iot" => Some(Self::Iot),
            "iotdata" => Some(Self::IotDataPlane),
            "sqs" => Some(Self::Sqs),
            "lambda" => Some(Self::Lambda),
            "cloudformation" => Some(Self::CloudFormation),
            _ => None,
        }
    }
}

/// `AWS_ENDPOINT_URL` or `AWS_ENDPOINT_URL_<SERVICE>`: a variable that points an SDK client at an endpoint.
pub fn is_endpoint_var(var: &str) -> bool {
    var == "AWS_ENDPOINT_URL" || var.starts_with("AWS_ENDPOINT_URL_")
}

/// One IAM action on one resource, as far as the request shows it. One line of `<function>.jsonl`.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Call {
    /// `dynamodb:PutItem`, `iot:UpdateThingShadow`, ...; `unknown:<METHOD> <path>` for a request not recognised.
    pub action: String,
    /// DynamoDB: the table.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    /// DynamoDB: the index a Query or Scan reads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thing: Option<String>,
    /// IoT data plane: the named shadow (absent for the classic shadow). The IAM resource is the thing either way.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shadow: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thing_group: Option<String>,
    /// IoT fleet indexing: the index searched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fleet_index: Option<String>,
    /// IoT data plane: the MQTT topic of a Publish or a retained message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// Lambda: the function invoked or read, as the caller named it (a name or an ARN).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub function: Option<String>,
    /// CloudFormation: the stack's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stack: Option<String>,
    /// The environment variables (or, for the CLI, the stack outputs) whose value is `table`, `queue_url` or
    /// `function`: the checker follows them to the template's resources.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<String>,
}

impl Call {
    /// A call of `action` with no resource named yet.
    pub fn action(action: impl Into<String>) -> Self {
        Self { action: action.into(), ..Self::default() }
    }

    fn unknown(method: &Method, path: &str) -> Self {
        Self::action(format!("unknown:{method} {path}"))
    }

    /// A request [`identify`] did not recognise.
    pub fn is_unknown(&self) -> bool {
        self.action.starts_with("unknown:")
    }
}

/// The IAM actions and resources of one request to `service` (`None`: tell it from the request's signature).
/// Most requests are one call; a batch over several tables or a transaction is one call per table or item.
pub fn identify(
    service: Option<Service>,
    method: &Method,
    path_and_query: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Vec<Call> {
    let (path, query) = path_and_query.split_once('?').unwrap_or((path_and_query, ""));
    match service.or_else(|| Service::of_signature(headers)) {
        Some(Service::DynamoDb) => dynamodb(method, path, headers, body),
        Some(Service::Sqs) => sqs(method, path, query, headers, body),
        Some(Service::IotDataPlane) => vec![iot_data_plane(method, path, query)],
        Some(Service::Iot) => vec![iot(method, path, body)],
        Some(Service::Lambda) => vec![lambda(method, path, query)],
        Some(Service::CloudFormation) => vec![cloudformation(method, path, query, body)],
        None => vec![Call::unknown(method, path)],
    }
}

/// The operation named by an `X-Amz-Target: <prefix><Operation>` header.
fn target<'a>(headers: &'a HeaderMap, prefix: &str) -> Option<&'a str> {
    headers.get("x-amz-target")?.to_str().ok()?.strip_prefix(prefix).filter(|op| !op.is_empty())
}

fn json_str(value: &Json, key: &str) -> Option<String> {
    value.get(key)?.as_str().map(str::to_owned)
}

/// awsJson1.0: `X-Amz-Target: DynamoDB_20120810.<Operation>`, the table (and index) in the JSON body.
fn dynamodb(method: &Method, path: &str, headers: &HeaderMap, body: &[u8]) -> Vec<Call> {
    let Some(operation) = target(headers, "DynamoDB_20120810.") else { return vec![Call::unknown(method, path)] };
    let body: Json = serde_json::from_slice(body).unwrap_or(Json::Null);
    let table_call = |action: &str, table: Option<String>| Call { table, ..Call::action(format!("dynamodb:{action}")) };
    match operation {
        // One action on every table of the batch.
        "BatchWriteItem" | "BatchGetItem" => {
            let tables: Vec<String> = body
                .get("RequestItems")
                .and_then(Json::as_object)
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default();
            if tables.is_empty() {
                return vec![table_call(operation, None)];
            }
            tables.into_iter().map(|t| table_call(operation, Some(t))).collect()
        }
        // IAM has no Transact* actions: each item needs the action of its kind on its table.
        "TransactWriteItems" | "TransactGetItems" => {
            const KINDS: [(&str, &str); 5] = [
                ("Put", "PutItem"),
                ("Update", "UpdateItem"),
                ("Delete", "DeleteItem"),
                ("ConditionCheck", "ConditionCheckItem"),
                ("Get", "GetItem"),
            ];
            let items = body.get("TransactItems").and_then(Json::as_array).cloned().unwrap_or_default();
            let calls: Vec<Call> = items
                .iter()
                .flat_map(|item| {
                    KINDS.iter().filter_map(move |(kind, action)| {
                        let part = item.get(*kind)?;
                        Some(table_call(action, json_str(part, "TableName")))
                    })
                })
                .collect();
            if calls.is_empty() { vec![table_call(operation, None)] } else { calls }
        }
        _ => vec![Call { index: json_str(&body, "IndexName"), ..table_call(operation, json_str(&body, "TableName")) }],
    }
}

/// SQS: awsJson1.0 (`X-Amz-Target: AmazonSQS.<Operation>`, what the Rust SDK sends), or the older query protocol
/// (`Action=<Operation>&QueueUrl=...` in a form body or the query string; the queue may be the request's path).
fn sqs(method: &Method, path: &str, query: &str, headers: &HeaderMap, body: &[u8]) -> Vec<Call> {
    let (operation, queue_url) = if let Some(operation) = target(headers, "AmazonSQS.") {
        let body: Json = serde_json::from_slice(body).unwrap_or(Json::Null);
        (operation.to_owned(), json_str(&body, "QueueUrl"))
    } else {
        let mut params = form(query);
        if let Ok(body) = std::str::from_utf8(body) {
            params.extend(form(body));
        }
        let Some(operation) = params.get("Action").cloned() else { return vec![Call::unknown(method, path)] };
        let queue_url = params.get("QueueUrl").cloned().or_else(|| (path != "/").then(|| path.to_owned()));
        (operation, queue_url)
    };
    // IAM has no actions of their own for the batch operations.
    let action = match operation.as_str() {
        "SendMessageBatch" => "SendMessage",
        "DeleteMessageBatch" => "DeleteMessage",
        "ChangeMessageVisibilityBatch" => "ChangeMessageVisibility",
        other => other,
    };
    vec![Call { queue_url, ..Call::action(format!("sqs:{action}")) }]
}

/// restJson1: the operation is the method and the path (aws-sdk-iotdataplane's request serializers).
fn iot_data_plane(method: &Method, path: &str, query: &str) -> Call {
    let segments = segments(path);
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let shadow = form(query).get("name").cloned();
    let thing_call = |action: &str, thing: &str| Call {
        thing: Some(thing.to_owned()),
        shadow: shadow.clone(),
        ..Call::action(format!("iot:{action}"))
    };
    let topic_call = |action: &str, topic: &[&str]| Call { topic: Some(topic.join("/")), ..Call::action(action) };
    match (method, segments.as_slice()) {
        (&Method::GET, ["things", thing, "shadow"]) => thing_call("GetThingShadow", thing),
        (&Method::POST, ["things", thing, "shadow"]) => thing_call("UpdateThingShadow", thing),
        (&Method::DELETE, ["things", thing, "shadow"]) => thing_call("DeleteThingShadow", thing),
        (&Method::GET, ["api", "things", "shadow", "ListNamedShadowsForThing", thing]) => {
            thing_call("ListNamedShadowsForThing", thing)
        }
        (&Method::POST, ["topics", topic @ ..]) if !topic.is_empty() => topic_call("iot:Publish", topic),
        (&Method::GET, ["retainedMessage"]) => Call::action("iot:ListRetainedMessages"),
        (&Method::GET, ["retainedMessage", topic @ ..]) if !topic.is_empty() => {
            topic_call("iot:GetRetainedMessage", topic)
        }
        _ => Call::unknown(method, path),
    }
}

/// restJson1: the operation is the method and the path (aws-sdk-iot's request serializers). The registry
/// operations around things, thing groups, fleet indexing and the endpoint; anything else is `unknown:`.
fn iot(method: &Method, path: &str, body: &[u8]) -> Call {
    let segments = segments(path);
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let body: Json = serde_json::from_slice(body).unwrap_or(Json::Null);
    let call = |action: &str| Call::action(format!("iot:{action}"));
    let thing = |action: &str, thing: &str| Call { thing: Some(thing.to_owned()), ..call(action) };
    let group = |action: &str, group: &str| Call { thing_group: Some(group.to_owned()), ..call(action) };
    let index = |action: &str, index: Option<String>| Call {
        // Without indexName, AWS searches the registry's index.
        fleet_index: Some(index.unwrap_or_else(|| "AWS_Things".to_owned())),
        ..call(action)
    };
    // A name, or the last part of an ARN given instead (`...:thinggroup/<name>`).
    let name_or_arn = |name: &str, arn: &str| {
        json_str(&body, name).or_else(|| json_str(&body, arn).and_then(|a| a.rsplit('/').next().map(str::to_owned)))
    };
    let membership = |action: &str| Call {
        thing: name_or_arn("thingName", "thingArn"),
        thing_group: name_or_arn("thingGroupName", "thingGroupArn"),
        ..call(action)
    };
    match (method, segments.as_slice()) {
        (&Method::GET, ["endpoint"]) => call("DescribeEndpoint"),
        (&Method::GET, ["things"]) => call("ListThings"),
        (&Method::GET, ["things", name]) => thing("DescribeThing", name),
        (&Method::POST, ["things", name]) => thing("CreateThing", name),
        (&Method::PATCH, ["things", name]) => thing("UpdateThing", name),
        (&Method::DELETE, ["things", name]) => thing("DeleteThing", name),
        (&Method::GET, ["things", name, "thing-groups"]) => thing("ListThingGroupsForThing", name),
        (&Method::GET, ["things", name, "principals"]) => thing("ListThingPrincipals", name),
        (&Method::GET, ["thing-groups"]) => call("ListThingGroups"),
        (&Method::PUT, ["thing-groups", "addThingToThingGroup"]) => membership("AddThingToThingGroup"),
        (&Method::PUT, ["thing-groups", "removeThingFromThingGroup"]) => membership("RemoveThingFromThingGroup"),
        (&Method::GET, ["thing-groups", name]) => group("DescribeThingGroup", name),
        (&Method::POST, ["thing-groups", name]) => group("CreateThingGroup", name),
        (&Method::PATCH, ["thing-groups", name]) => group("UpdateThingGroup", name),
        (&Method::DELETE, ["thing-groups", name]) => group("DeleteThingGroup", name),
        (&Method::GET, ["thing-groups", name, "things"]) => group("ListThingsInThingGroup", name),
        (&Method::GET, ["indices"]) => call("ListIndices"),
        (&Method::POST, ["indices", "search"]) => index("SearchIndex", json_str(&body, "indexName")),
        (&Method::POST, ["indices", "cardinality"]) => index("GetCardinality", json_str(&body, "indexName")),
        (&Method::POST, ["indices", "statistics"]) => index("GetStatistics", json_str(&body, "indexName")),
        (&Method::GET, ["indices", name]) => index("DescribeIndex", Some((*name).to_owned())),
        (&Method::GET, ["indexing", "config"]) => call("GetIndexingConfiguration"),
        _ => Call::unknown(method, path),
    }
}

/// restJson1: the operation is the method and the path (aws-sdk-lambda's request serializers); the function is
/// named (or its ARN given) in the path, a version or alias in `Qualifier`.
fn lambda(method: &Method, path: &str, query: &str) -> Call {
    let segments = segments(path);
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let function_call = |action: &str, function: &str| {
        let function = match form(query).get("Qualifier") {
            Some(qualifier) => format!("{function}:{qualifier}"),
            None => function.to_owned(),
        };
        Call { function: Some(function), ..Call::action(format!("lambda:{action}")) }
    };
    match (method, segments.as_slice()) {
        (&Method::POST, ["2015-03-31", "functions", function, "invocations"]) => {
            function_call("InvokeFunction", function)
        }
        (&Method::GET, ["2015-03-31", "functions", function]) => function_call("GetFunction", function),
        (&Method::GET, ["2015-03-31", "functions", function, "configuration"]) => {
            function_call("GetFunctionConfiguration", function)
        }
        _ => Call::unknown(method, path),
    }
}

/// The query protocol: `Action=<Operation>&StackName=...` in the form body (or the query string). A stack given
/// by its id (`arn:...:stack/<name>/<uuid>`) is recorded by its name.
fn cloudformation(method: &Method, path: &str, query: &str, body: &[u8]) -> Call {
    let mut params = form(query);
    if let Ok(body) = std::str::from_utf8(body) {
        params.extend(form(body));
    }
    let Some(operation) = params.get("Action") else { return Call::unknown(method, path) };
    let stack = params.get("StackName").map(|name| match name.strip_prefix("arn:") {
        Some(arn) => arn.split('/').nth(1).unwrap_or(name).to_owned(),
        None => name.clone(),
    });
    Call { stack, ..Call::action(format!("cloudformation:{operation}")) }
}

/// A path's segments, percent-decoded (the SDK encodes the labels it puts in paths).
fn segments(path: &str) -> Vec<String> {
    path.split('/').filter(|s| !s.is_empty()).map(|s| percent_decode(s, false)).collect()
}

/// `a=1&b=x%2Fy` -> {a: 1, b: x/y}.
fn form(text: &str) -> HashMap<String, String> {
    text.split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k, true), percent_decode(v, true))
        })
        .collect()
}

fn percent_decode(text: &str, plus_is_space: bool) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' if plus_is_space => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_config::{BehaviorVersion, Region, SdkConfig};
    use aws_credential_types::Credentials;
    use aws_credential_types::provider::SharedCredentialsProvider;
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper::http::request::Parts;
    use hyper::{Request, Response, StatusCode};
    use tokio::sync::mpsc;

    /// A loopback server that keeps every request; it stops when dropped.
    struct Capture {
        /// Where it listens (the SDK configuration points there).
        _url: String,
        task: tokio::task::JoinHandle<()>,
    }

    impl Drop for Capture {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    /// A server that keeps every request and answers each with a 400, and an SDK configuration for it.
    async fn capture() -> (Capture, mpsc::UnboundedReceiver<(Parts, Bytes)>, SdkConfig) {
        let (sender, requests) = mpsc::unbounded_channel();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binding the capturing server");
        let url = format!("http://{}", listener.local_addr().expect("the capturing server's address"));
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let sender = sender.clone();
                let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                    let sender = sender.clone();
                    async move {
                        let (parts, body) = request.into_parts();
                        let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                        let _ = sender.send((parts, body));
                        let mut answer = Response::new(Full::new(Bytes::from(r#"{"message":"captured"}"#)));
                        *answer.status_mut() = StatusCode::BAD_REQUEST;
                        Ok::<_, std::convert::Infallible>(answer)
                    }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(io, service));
            }
        });
        let config = SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("ap-northeast-1"))
            .credentials_provider(SharedCredentialsProvider::new(Credentials::new("AKID", "SECRET", None, None, "t")))
            .retry_config(aws_config::retry::RetryConfig::disabled())
            .endpoint_url(&url)
            .build();
        (Capture { _url: url, task }, requests, config)
    }

    /// The calls of the next captured request, checking that its signature tells the same service.
    fn next_calls(requests: &mut mpsc::UnboundedReceiver<(Parts, Bytes)>, service: Service) -> Vec<Call> {
        let (parts, body) = requests.try_recv().expect("no request captured");
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let calls = identify(Some(service), &parts.method, path, &parts.headers, &body);
        let by_signature = identify(None, &parts.method, path, &parts.headers, &body);
        assert_eq!(calls, by_signature, "the signature names another service: {:?}", parts.headers);
        calls
    }

    fn call(action: &str) -> Call {
        Call::action(action)
    }

    #[tokio::test]
    async fn dynamodb_operations_from_real_requests() {
        use aws_sdk_dynamodb::types::{AttributeValue, Put, PutRequest, TransactWriteItem, Update, WriteRequest};
        let (_server, mut requests, config) = capture().await;
        let client = aws_sdk_dynamodb::Client::new(&config);
        let s = |v: &str| AttributeValue::S(v.to_owned());

        let _ = client.put_item().table_name("history-1").item("pk", s("a")).send().await;
        let table = |t: &str| Some(t.to_owned());
        assert_eq!(
            next_calls(&mut requests, Service::DynamoDb),
            [Call { table: table("history-1"), ..call("dynamodb:PutItem") }]
        );

        let _ =
            client.query().table_name("push-1").index_name("byStatus").key_condition_expression("pk = :p").send().await;
        assert_eq!(
            next_calls(&mut requests, Service::DynamoDb),
            [Call { table: table("push-1"), index: Some("byStatus".into()), ..call("dynamodb:Query") }]
        );

        let put = |pk: &str| {
            let request = PutRequest::builder().item("pk", s(pk)).build().expect("building the put request");
            WriteRequest::builder().put_request(request).build()
        };
        let _ = client
            .batch_write_item()
            .request_items("push-1", vec![put("a")])
            .request_items("push-2", vec![put("b")])
            .send()
            .await;
        let mut calls = next_calls(&mut requests, Service::DynamoDb);
        calls.sort();
        assert_eq!(
            calls,
            [
                Call { table: table("push-1"), ..call("dynamodb:BatchWriteItem") },
                Call { table: table("push-2"), ..call("dynamodb:BatchWriteItem") },
            ]
        );

        // A transaction needs each item's own action.
        let put = Put::builder().table_name("push-1").item("pk", s("a")).build().expect("building the put");
        let update = Update::builder()
            .table_name("push-2")
            .key("pk", s("b"))
            .update_expression("SET x = :x")
            .build()
            .expect("building the update");
        let _ = client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().put(put).build())
            .transact_items(TransactWriteItem::builder().update(update).build())
            .send()
            .await;
        assert_eq!(
            next_calls(&mut requests, Service::DynamoDb),
            [
                Call { table: table("push-1"), ..call("dynamodb:PutItem") },
                Call { table: table("push-2"), ..call("dynamodb:UpdateItem") },
            ]
        );
    }

    #[tokio::test]
    async fn iot_data_plane_operations_from_real_requests() {
        use aws_sdk_iotdataplane::primitives::Blob;
        let (_server, mut requests, config) = capture().await;
        let client = aws_sdk_iotdataplane::Client::new(&config);
        let shadow_call = |action: &str, thing: &str, shadow: Option<&str>| Call {
            thing: Some(thing.to_owned()),
            shadow: shadow.map(str::to_owned),
            ..call(action)
        };

        let _ = client.get_thing_shadow().thing_name("Test-Device").send().await;
        assert_eq!(
            next_calls(&mut requests, Service::IotDataPlane),
            [shadow_call("iot:GetThingShadow", "Test-Device", None)]
        );

        // Thing names may hold ':', which the SDK percent-encodes in the path.
        let _ = client
            .update_thing_shadow()
            .thing_name("site:17_a")
            .shadow_name("config")
            .payload(Blob::new(r#"{"state":{"desired":{"x":1}}}"#))
            .send()
            .await;
        assert_eq!(
            next_calls(&mut requests, Service::IotDataPlane),
            [shadow_call("iot:UpdateThingShadow", "site:17_a", Some("config"))]
        );

        let _ = client.delete_thing_shadow().thing_name("t1").shadow_name("config").send().await;
        assert_eq!(
            next_calls(&mut requests, Service::IotDataPlane),
            [shadow_call("iot:DeleteThingShadow", "t1", Some("config"))]
        );

        let _ = client.list_named_shadows_for_thing().thing_name("t1").send().await;
        assert_eq!(
            next_calls(&mut requests, Service::IotDataPlane),
            [shadow_call("iot:ListNamedShadowsForThing", "t1", None)]
        );

        let _ = client.publish().topic("fleet/t1/cmd").payload(Blob::new("{}")).send().await;
        assert_eq!(
            next_calls(&mut requests, Service::IotDataPlane),
            [Call { topic: Some("fleet/t1/cmd".into()), ..call("iot:Publish") }]
        );
    }

    #[tokio::test]
    async fn iot_registry_operations_from_real_requests() {
        let (_server, mut requests, config) = capture().await;
        let client = aws_sdk_iot::Client::new(&config);
        let group = |action: &str, group: &str| Call { thing_group: Some(group.to_owned()), ..call(action) };
        let index = |action: &str, index: &str| Call { fleet_index: Some(index.to_owned()), ..call(action) };

        let _ =
            client.list_things_in_thing_group().thing_group_name("prod").recursive(false).max_results(250).send().await;
        assert_eq!(next_calls(&mut requests, Service::Iot), [group("iot:ListThingsInThingGroup", "prod")]);

        // ListThingGroups has no resource type: its parentGroup is not its resource.
        let _ = client.list_thing_groups().parent_group("prod").recursive(true).send().await;
        assert_eq!(next_calls(&mut requests, Service::Iot), [call("iot:ListThingGroups")]);

        let _ = client.search_index().index_name("AWS_Things").query_string("attributes.site:tokyo").send().await;
        assert_eq!(next_calls(&mut requests, Service::Iot), [index("iot:SearchIndex", "AWS_Things")]);
        let _ = client.search_index().query_string("thingName:a*").send().await;
        assert_eq!(next_calls(&mut requests, Service::Iot), [index("iot:SearchIndex", "AWS_Things")]);

        let _ = client.describe_endpoint().endpoint_type("iot:Data-ATS").send().await;
        assert_eq!(next_calls(&mut requests, Service::Iot), [call("iot:DescribeEndpoint")]);

        let _ = client.get_indexing_configuration().send().await;
        assert_eq!(next_calls(&mut requests, Service::Iot), [call("iot:GetIndexingConfiguration")]);

        let _ = client.describe_thing_group().thing_group_name("prod").send().await;
        assert_eq!(next_calls(&mut requests, Service::Iot), [group("iot:DescribeThingGroup", "prod")]);

        let _ = client.describe_thing().thing_name("t1").send().await;
        assert_eq!(
            next_calls(&mut requests, Service::Iot),
            [Call { thing: Some("t1".into()), ..call("iot:DescribeThing") }]
        );

        let _ = client.add_thing_to_thing_group().thing_group_name("prod").thing_name("t1").send().await;
        assert_eq!(
            next_calls(&mut requests, Service::Iot),
            [Call { thing: Some("t1".into()), thing_group: Some("prod".into()), ..call("iot:AddThingToThingGroup") }]
        );
    }

    #[tokio::test]
    async fn sqs_operations_from_real_requests() {
        use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
        let (_server, mut requests, config) = capture().await;
        let client = aws_sdk_sqs::Client::new(&config);
        let url = "http://127.0.0.1:15000/123456789012/push-queue";
        let queue_call = |action: &str| Call { queue_url: Some(url.to_owned()), ..call(action) };

        let _ = client.send_message().queue_url(url).message_body("{}").send().await;
        assert_eq!(next_calls(&mut requests, Service::Sqs), [queue_call("sqs:SendMessage")]);

        // IAM has no SendMessageBatch: a batch needs sqs:SendMessage.
        let entry = SendMessageBatchRequestEntry::builder().id("1").message_body("{}").build();
        let _ =
            client.send_message_batch().queue_url(url).entries(entry.expect("building the batch entry")).send().await;
        assert_eq!(next_calls(&mut requests, Service::Sqs), [queue_call("sqs:SendMessage")]);

        let _ = client.receive_message().queue_url(url).send().await;
        assert_eq!(next_calls(&mut requests, Service::Sqs), [queue_call("sqs:ReceiveMessage")]);
    }

    #[tokio::test]
    async fn lambda_and_cloudformation_operations_from_real_requests() {
        let (_server, mut requests, config) = capture().await;
        let lambda = aws_sdk_lambda::Client::new(&config);
        let function = |action: &str, function: &str| Call { function: Some(function.to_owned()), ..call(action) };

        let payload = aws_sdk_lambda::primitives::Blob::new(r#"{"abortPush":"p1"}"#);
        let _ = lambda.invoke().function_name("shadow-push").payload(payload).send().await;
        assert_eq!(next_calls(&mut requests, Service::Lambda), [function("lambda:InvokeFunction", "shadow-push")]);

        // An ARN in the path, and a qualifier (which IAM sees as part of the function's ARN).
        let arn = "arn:aws:lambda:ap-northeast-1:123456789012:function:fleet-ShadowPush-1";
        let _ = lambda.invoke().function_name(arn).qualifier("live").send().await;
        assert_eq!(
            next_calls(&mut requests, Service::Lambda),
            [function("lambda:InvokeFunction", &format!("{arn}:live"))]
        );

        let _ = lambda.get_function_configuration().function_name("shadow-push").send().await;
        assert_eq!(
            next_calls(&mut requests, Service::Lambda),
            [function("lambda:GetFunctionConfiguration", "shadow-push")]
        );

        let cloudformation = aws_sdk_cloudformation::Client::new(&config);
        let stack =
            |stack: Option<&str>| Call { stack: stack.map(str::to_owned), ..call("cloudformation:DescribeStacks") };
        let _ = cloudformation.describe_stacks().stack_name("fleet-prod").send().await;
        assert_eq!(next_calls(&mut requests, Service::CloudFormation), [stack(Some("fleet-prod"))]);
        let id =
            "arn:aws:cloudformation:ap-northeast-1:123456789012:stack/fleet-prod/0a1b2c3d-1111-2222-3333-444455556666";
        let _ = cloudformation.describe_stacks().stack_name(id).send().await;
        assert_eq!(next_calls(&mut requests, Service::CloudFormation), [stack(Some("fleet-prod"))]);
        let _ = cloudformation.describe_stacks().send().await;
        assert_eq!(next_calls(&mut requests, Service::CloudFormation), [stack(None)]);
    }

    #[test]
    fn sqs_query_protocol_and_unknown_requests() {
        let form_headers = HeaderMap::new();
        let body = b"Action=SendMessage&QueueUrl=http%3A%2F%2Flocalhost%3A4566%2F1%2Fq&MessageBody=a+b";
        assert_eq!(
            identify(Some(Service::Sqs), &Method::POST, "/", &form_headers, body),
            [Call { queue_url: Some("http://localhost:4566/1/q".into()), ..call("sqs:SendMessage") }]
        );
        // The queue may be the request's path.
        assert_eq!(
            identify(Some(Service::Sqs), &Method::POST, "/1/q", &form_headers, b"Action=DeleteMessageBatch"),
            [Call { queue_url: Some("/1/q".into()), ..call("sqs:DeleteMessage") }]
        );

        // Anything not recognised says what it was, so the checker fails on it.
        for (service, method, path, expected) in [
            (Some(Service::IotDataPlane), Method::GET, "/things/t1/jobs?x=1", "unknown:GET /things/t1/jobs"),
            (Some(Service::Iot), Method::POST, "/jobs/j1", "unknown:POST /jobs/j1"),
            (Some(Service::DynamoDb), Method::POST, "/", "unknown:POST /"),
            (Some(Service::Sqs), Method::POST, "/", "unknown:POST /"),
            (None, Method::GET, "/things/t1/shadow", "unknown:GET /things/t1/shadow"),
        ] {
            let calls = identify(service, &method, path, &HeaderMap::new(), b"");
            assert_eq!(calls, [call(expected)], "{method} {path}");
            assert!(calls[0].is_unknown());
        }

        // Without an endpoint variable for the service, the SigV4 scope tells it.
        let mut signed = HeaderMap::new();
        let authorization = "AWS4-HMAC-SHA256 Credential=AKID/20260101/ap-northeast-1/iotdata/aws4_request, \
                             SignedHeaders=host;x-amz-date, Signature=00";
        signed.insert("authorization", authorization.parse().expect("the authorization header"));
        assert_eq!(
            identify(None, &Method::GET, "/things/t1/shadow?name=cfg", &signed, b""),
            [Call { thing: Some("t1".into()), shadow: Some("cfg".into()), ..call("iot:GetThingShadow") }]
        );
    }
}
