//! IAM from the calls. Neither DynamoDB Local nor moto checks IAM, so an action a function's policy lacks only shows
//! on AWS, as AccessDenied. With `FLEET_IAM_RECORD=<dir>` set, every function binary the tests start reaches each
//! AWS endpoint through a recording proxy ([`recorded_env`]) that forwards every request unchanged and appends its
//! IAM action and resource to `<dir>/<function>.jsonl`. [`check`] (the `iam-check` binary) then holds those calls
//! against the functions' inline policies in `template.yaml`: every call must be allowed on its resource, and every
//! grant must be used or explained under the function's `Metadata: IamExceptions`.
//!
//! The `shadow-fleet` CLI is held to the operators' managed policies the same way. The CLI tests start it through
//! [`recorded_cli_env`], which records each command's calls as the policy it needs: `shadow-fleet-readonly.jsonl`
//! or `shadow-fleet-operator.jsonl` ([`cli_recording`]). Each `AWS::IAM::ManagedPolicy` names the recordings it must
//! allow under `Metadata: IamRecordings`; the tables and function the CLI reached are traced to the template's
//! resources through the variables and stack outputs it reads them from ([`CLI_LOCATIONS`]), and a `--stack NAME`
//! stands for the stack the template is deployed as.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use http_body_util::Full;
use hyper::http::request::Parts;
use hyper::{HeaderMap, Method, Response, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use serde_yaml::Value as Yaml;

use crate::http::{Reply, Server, Upstream, reply, serve};

/// The test process's variable naming the directory the calls are recorded in.
pub const RECORD_VAR: &str = "FLEET_IAM_RECORD";

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

fn is_endpoint_var(var: &str) -> bool {
    var == "AWS_ENDPOINT_URL" || var.starts_with("AWS_ENDPOINT_URL_")
}

// ---------------------------------------------------------------- one recorded call

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
    fn action(action: impl Into<String>) -> Self {
        Self { action: action.into(), ..Self::default() }
    }

    fn unknown(method: &Method, path: &str) -> Self {
        Self::action(format!("unknown:{method} {path}"))
    }

    fn is_unknown(&self) -> bool {
        self.action.starts_with("unknown:")
    }
}

// ---------------------------------------------------------------- identifying requests as AWS does

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

/// The outputs in a DescribeStacks answer (query protocol XML): value -> key.
fn stack_outputs(xml: &str) -> Vec<(String, String)> {
    let element = |text: &str, name: &str| {
        let open = format!("<{name}>");
        let start = text.find(&open)? + open.len();
        let end = start + text[start..].find(&format!("</{name}>"))?;
        let value = &text[start..end];
        Some(
            value
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&quot;", "\"")
                .replace("&apos;", "'")
                .replace("&amp;", "&"),
        )
    };
    xml.split("<member>")
        .filter_map(|member| Some((element(member, "OutputValue")?, element(member, "OutputKey")?)))
        .collect()
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

// ---------------------------------------------------------------- the recording proxy

/// The recording proxies of one function process; they stop when this is dropped.
pub struct Recording {
    _proxies: Vec<Server>,
}

struct Recorder {
    service: Option<Service>,
    upstream: Upstream,
    file: PathBuf,
    /// The process's environment: value -> the variables holding it; and the outputs of the stacks it described.
    sources: Arc<Mutex<HashMap<String, Vec<String>>>>,
}

/// One writer at a time in this process; `O_APPEND` and one write per request keep lines whole across processes.
static APPEND: Mutex<()> = Mutex::new(());

impl Recorder {
    /// The variables whose value is `value` (a query-protocol queue may show only as the URL's path).
    fn sources_of(&self, value: &str) -> Vec<String> {
        let sources = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        let mut vars: Vec<String> = sources.get(value).cloned().unwrap_or_default();
        if vars.is_empty() && value.starts_with('/') && value.len() > 1 {
            vars = sources
                .iter()
                .filter(|(v, _)| v.ends_with(value) && v.contains("://"))
                .flat_map(|(_, vars)| vars.iter().cloned())
                .collect();
        }
        vars.sort();
        vars.dedup();
        vars
    }

    fn append(&self, calls: &[Call]) -> std::io::Result<()> {
        let mut lines = String::new();
        for call in calls {
            lines.push_str(&serde_json::to_string(call)?);
            lines.push('\n');
        }
        let _one_writer = APPEND.lock().unwrap_or_else(|e| e.into_inner());
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&self.file)?;
        file.write_all(lines.as_bytes())
    }
}

async fn record_and_forward(recorder: Arc<Recorder>, parts: Parts, body: Bytes) -> Reply {
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut calls = identify(recorder.service, &parts.method, path, &parts.headers, &body);
    for call in &mut calls {
        if let Some(name) = call.table.as_deref().or(call.queue_url.as_deref()).or(call.function.as_deref()) {
            call.from = recorder.sources_of(name);
        }
    }
    if let Err(e) = recorder.append(&calls) {
        // Never lose a call silently: the checker would pass on what it did not see.
        let message = format!("{RECORD_VAR}: cannot append to {}: {e}", recorder.file.display());
        eprintln!("{message}");
        return reply(StatusCode::BAD_GATEWAY, message);
    }
    let (answer, body) = recorder.upstream.forward(&parts, body).await;
    // `--stack NAME`: the CLI takes its tables and function from the stack's outputs; later calls on them are traced
    // to the template's resources through the outputs' names.
    if answer.status.is_success() && calls.iter().any(|c| c.action == "cloudformation:DescribeStacks") {
        let mut sources = recorder.sources.lock().unwrap_or_else(|e| e.into_inner());
        for (value, key) in stack_outputs(&String::from_utf8_lossy(&body)) {
            let keys = sources.entry(value).or_default();
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
    }
    Response::from_parts(answer, Full::new(body))
}

/// With `FLEET_IAM_RECORD=<dir>` set in the test process, puts a recording proxy in front of every
/// `AWS_ENDPOINT_URL*` value the function `function` would use (`env` over the test process's own environment; the
/// value may already be a fault proxy or the rules-engine stand-in), and returns `env` pointing at the proxies.
/// Without it, returns `env` unchanged and no proxies.
pub async fn recorded_env(function: &str, env: &[(String, String)]) -> (Vec<(String, String)>, Option<Recording>) {
    match std::env::var_os(RECORD_VAR).filter(|d| !d.is_empty()) {
        Some(dir) => {
            let (env, recording) = recorded_env_in(Path::new(&dir), function, env).await;
            (env, Some(recording))
        }
        None => (env.to_vec(), None),
    }
}

/// [`recorded_env`] into `dir`.
pub async fn recorded_env_in(
    dir: &Path,
    function: &str,
    env: &[(String, String)],
) -> (Vec<(String, String)>, Recording) {
    // What the process will see: the inherited environment, then `env` in order (the last value of a name wins).
    let inherited = std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)));
    let mut effective: BTreeMap<String, String> = inherited.collect();
    effective.extend(env.iter().cloned());
    recorders(dir, function, &effective, env).await
}

/// Recording proxies into `<dir>/<name>.jsonl` for the `AWS_ENDPOINT_URL*` variables of `effective` (everything the
/// process will see); returns `env` with those variables pointing at the proxies.
async fn recorders(
    dir: &Path,
    name: &str,
    effective: &BTreeMap<String, String>,
    env: &[(String, String)],
) -> (Vec<(String, String)>, Recording) {
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{RECORD_VAR}={}: {e}", dir.display()));
    let file = dir.join(format!("{name}.jsonl"));
    let mut sources: HashMap<String, Vec<String>> = HashMap::new();
    for (name, value) in effective {
        if !name.starts_with("AWS_") && name != RECORD_VAR && !value.is_empty() {
            sources.entry(value.clone()).or_default().push(name.clone());
        }
    }
    let sources = Arc::new(Mutex::new(sources));
    let mut routed: Vec<(String, String)> = env.iter().filter(|(name, _)| !is_endpoint_var(name)).cloned().collect();
    let mut proxies = Vec::new();
    for (name, upstream) in effective.iter().filter(|(name, _)| is_endpoint_var(name)) {
        let recorder = Arc::new(Recorder {
            service: Service::of_endpoint_var(name),
            upstream: Upstream::new(upstream),
            file: file.clone(),
            sources: sources.clone(),
        });
        let server = serve(move |parts, body| record_and_forward(recorder.clone(), parts, body)).await;
        routed.push((name.clone(), server.url()));
        proxies.push(server);
    }
    (routed, Recording { _proxies: proxies })
}

// ---------------------------------------------------------------- the CLI's calls

/// The recording of the CLI's read-only commands, held against both operator policies.
pub const CLI_READONLY: &str = "shadow-fleet-readonly";
/// The recording of the commands that start or steer pushes, held against the operator policy.
pub const CLI_OPERATOR: &str = "shadow-fleet-operator";
/// A command [`cli_recording`] does not know: no policy holds it, so `iam-check` reports its calls.
pub const CLI_UNCLASSIFIED: &str = "shadow-fleet-unclassified";

/// The policy a `shadow-fleet` command needs, as the name of the recording its calls go to: [`CLI_READONLY`] for
/// `history`, `shadow get`, `push show|list|watch`; [`CLI_OPERATOR`] for `push start|pause|resume|abort`.
pub fn cli_recording(args: &[&str]) -> &'static str {
    let mut words = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match *arg {
            // The global options that take a value.
            "--output" | "--stack" | "--profile" | "--region" => {
                args.next();
            }
            flag if flag.starts_with('-') => {}
            word => words.push(word),
        }
        if words.len() == 2 {
            break;
        }
    }
    match words.as_slice() {
        ["history" | "drift", ..] | ["shadow", "get"] | ["push", "show" | "list" | "watch"] => CLI_READONLY,
        ["push", "start" | "pause" | "resume" | "abort"] => CLI_OPERATOR,
        _ => CLI_UNCLASSIFIED,
    }
}

/// A runtime of its own for the CLI's recording proxies: the CLI tests wait for the process without yielding.
fn proxy_runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("iam-record")
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("the recording proxies' runtime: {e}"))
    })
}

/// With `FLEET_IAM_RECORD=<dir>` set, puts recording proxies in front of the `AWS_ENDPOINT_URL*` values of `env`,
/// the whole environment of a `shadow-fleet args..` process (it inherits nothing), recording into the file
/// [`cli_recording`] chooses for `args`; returns `env` pointing at the proxies. Without it, `env` and no proxies.
/// Blocking: for a caller that then waits for the process.
pub fn recorded_cli_env(
    args: &[&str],
    env: &BTreeMap<String, String>,
) -> (BTreeMap<String, String>, Option<Recording>) {
    let Some(dir) = std::env::var_os(RECORD_VAR).filter(|d| !d.is_empty()) else { return (env.clone(), None) };
    let pairs: Vec<(String, String)> = env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let name = cli_recording(args);
    let start = || proxy_runtime().block_on(recorders(Path::new(&dir), name, env, &pairs));
    // Not on this thread: it may already be inside a test's runtime.
    let (routed, recording) = std::thread::scope(|scope| {
        scope.spawn(start).join().unwrap_or_else(|_| panic!("starting the recording proxies panicked"))
    });
    (routed.into_iter().collect(), Some(recording))
}

// ---------------------------------------------------------------- reading the template

/// A short-form (`!Ref X`) or long-form (`{"Fn::GetAtt": ..}`, `{"Ref": X}`) intrinsic: its name without `!` or
/// `Fn::`, and its argument.
fn intrinsic(value: &Yaml) -> Option<(String, &Yaml)> {
    match value {
        Yaml::Tagged(tagged) => Some((tagged.tag.to_string().trim_start_matches('!').to_owned(), &tagged.value)),
        Yaml::Mapping(map) if map.len() == 1 => {
            let (key, argument) = map.iter().next()?;
            let key = key.as_str()?;
            let name = if key == "Ref" { key } else { key.strip_prefix("Fn::")? };
            Some((name.to_owned(), argument))
        }
        _ => None,
    }
}

/// Everything `value` may be once conditions are resolved: a sequence is the union of its items, an `!If` the union
/// of both branches (a grant under a condition counts as granted), `!Ref AWS::NoValue` nothing.
fn alternatives(value: &Yaml) -> Vec<&Yaml> {
    match intrinsic(value) {
        Some((name, branches)) if name == "If" => {
            branches.as_sequence().map(|b| b.iter().skip(1).flat_map(alternatives).collect()).unwrap_or_default()
        }
        Some((name, target)) if name == "Ref" && target.as_str() == Some("AWS::NoValue") => Vec::new(),
        _ => match value {
            Yaml::Sequence(items) => items.iter().flat_map(alternatives).collect(),
            other => vec![other],
        },
    }
}

/// A Resource (or ARN) as a pattern over symbolic ARNs: `!GetAtt T.Arn` -> `${T.Arn}`, `!Ref X` -> `${X}`, `!Sub`
/// as written (its own variables substituted), `!Join` joined. `None` for anything else.
fn render(value: &Yaml) -> Option<String> {
    let Some((name, argument)) = intrinsic(value) else {
        // Not `as_str`: serde_yaml's accessors see through tags.
        return if let Yaml::String(text) = value { Some(text.clone()) } else { None };
    };
    match name.as_str() {
        "GetAtt" => match argument {
            Yaml::String(path) => Some(format!("${{{path}}}")),
            Yaml::Sequence(parts) => {
                let parts: Option<Vec<&str>> = parts.iter().map(Yaml::as_str).collect();
                Some(format!("${{{}}}", parts?.join(".")))
            }
            _ => None,
        },
        "Ref" => Some(format!("${{{}}}", argument.as_str()?)),
        "Sub" => match argument {
            Yaml::String(text) => Some(text.clone()),
            Yaml::Sequence(parts) => {
                let mut text = parts.first()?.as_str()?.to_owned();
                for (key, value) in parts.get(1)?.as_mapping()? {
                    text = text.replace(&format!("${{{}}}", key.as_str()?), &render(value)?);
                }
                Some(text)
            }
            _ => None,
        },
        "Join" => {
            let parts = argument.as_sequence()?;
            let separator = parts.first()?.as_str()?;
            let items: Option<Vec<String>> = parts.get(1)?.as_sequence()?.iter().map(render).collect();
            Some(items?.join(separator))
        }
        _ => None,
    }
}

#[derive(Debug, Clone)]
struct Statement {
    /// The Sid, or `#<n>` in the function's statements.
    sid: String,
    allow: bool,
    actions: Vec<String>,
    resources: Vec<String>,
}

/// What iam-check holds recorded calls against: a function's inline policies, or an operators' managed policy.
#[derive(Debug)]
struct Function {
    /// A function's binary, or a managed policy's logical id.
    name: String,
    logical_id: String,
    /// The recordings (`<name>.jsonl`) whose calls it must allow: a function's own; a policy's `IamRecordings`.
    recordings: Vec<String>,
    statements: Vec<Statement>,
    /// The function's environment variables (`Globals` under its own); for a policy, the CLI's variables and the
    /// stack outputs it reads, as the template's outputs give them.
    env: BTreeMap<String, Yaml>,
    exceptions: BTreeMap<String, String>,
    /// What could not be read.
    problems: Vec<String>,
}

/// The template's `AWS::Serverless::Function`s. A function's name is its binary's: the last part of `CodeUri`
/// (`functions/shadow-push` -> `shadow-push`), as `LocalLambda::start` names it.
fn functions(template: &Yaml) -> Vec<Function> {
    let globals = template.get("Globals").and_then(|g| g.get("Function"));
    let global_env = globals.and_then(|g| g.get("Environment")).and_then(|e| e.get("Variables"));
    let Some(resources) = template.get("Resources").and_then(Yaml::as_mapping) else { return Vec::new() };
    let mut found = Vec::new();
    for (id, resource) in resources {
        if resource.get("Type").and_then(Yaml::as_str) != Some("AWS::Serverless::Function") {
            continue;
        }
        let logical_id = id.as_str().unwrap_or_default().to_owned();
        let props = resource.get("Properties").unwrap_or(&Yaml::Null);
        let name = props
            .get("CodeUri")
            .and_then(Yaml::as_str)
            .and_then(|uri| uri.trim_end_matches('/').rsplit('/').next())
            .unwrap_or(&logical_id)
            .to_owned();
        let mut function = Function {
            recordings: vec![name.clone()],
            name,
            logical_id,
            statements: Vec::new(),
            env: BTreeMap::new(),
            exceptions: BTreeMap::new(),
            problems: Vec::new(),
        };
        for vars in [global_env, props.get("Environment").and_then(|e| e.get("Variables"))].into_iter().flatten() {
            for (key, value) in vars.as_mapping().into_iter().flatten() {
                if let Some(key) = key.as_str() {
                    function.env.insert(key.to_owned(), value.clone());
                }
            }
        }
        if props.get("Role").is_some() {
            function.problems.push(format!(
                "{}: has its own Role; iam-check reads only the inline Policies of the role SAM creates",
                function.name
            ));
        }
        read_policies(&mut function, props.get("Policies"));
        read_exceptions(&mut function, resource.get("Metadata").and_then(|m| m.get("IamExceptions")));
        found.push(function);
    }
    found
}

/// The shadow-fleet CLI's variables and the stack outputs that stand for them under `--stack NAME`
/// (cli/src/locate.rs): a table or function the CLI got from either is traced to the resource the output names.
pub const CLI_LOCATIONS: [(&str, &str); 3] = [
    ("HISTORY_TABLE", "HistoryTableName"),
    ("PUSH_TABLE", "PushTableName"),
    ("PUSH_FUNCTION_NAME", "ShadowPushFunctionArn"),
];

/// The template's `AWS::IAM::ManagedPolicy`s: the policies people attach to run the CLI. Each names the recordings
/// of the CLI's calls it must allow under `Metadata: IamRecordings`.
fn managed_policies(template: &Yaml) -> Vec<Function> {
    let outputs = template.get("Outputs");
    let Some(resources) = template.get("Resources").and_then(Yaml::as_mapping) else { return Vec::new() };
    let mut found = Vec::new();
    for (id, resource) in resources {
        if resource.get("Type").and_then(Yaml::as_str) != Some("AWS::IAM::ManagedPolicy") {
            continue;
        }
        let logical_id = id.as_str().unwrap_or_default().to_owned();
        let metadata = resource.get("Metadata");
        let mut policy = Function {
            name: logical_id.clone(),
            logical_id,
            recordings: Vec::new(),
            statements: Vec::new(),
            env: BTreeMap::new(),
            exceptions: BTreeMap::new(),
            problems: Vec::new(),
        };
        let recordings = metadata.and_then(|m| m.get("IamRecordings")).and_then(Yaml::as_sequence);
        policy.recordings = recordings.into_iter().flatten().filter_map(Yaml::as_str).map(str::to_owned).collect();
        if policy.recordings.is_empty() {
            policy.problems.push(format!(
                "{}: Metadata.IamRecordings names no recorded calls (e.g. [{CLI_READONLY}]): iam-check cannot tell \
                 whose calls the policy is for",
                policy.name
            ));
        }
        for (var, output) in CLI_LOCATIONS {
            match outputs.and_then(|o| o.get(output)).and_then(|o| o.get("Value")) {
                Some(value) => {
                    policy.env.insert(var.to_owned(), value.clone());
                    policy.env.insert(output.to_owned(), value.clone());
                }
                None => policy.problems.push(format!(
                    "{}: template.yaml has no output {output}, which the CLI reads (for {var}) with --stack",
                    policy.name
                )),
            }
        }
        let props = resource.get("Properties").unwrap_or(&Yaml::Null);
        read_policies(&mut policy, props.get("PolicyDocument"));
        read_exceptions(&mut policy, metadata.and_then(|m| m.get("IamExceptions")));
        found.push(policy);
    }
    found
}

fn read_policies(function: &mut Function, policies: Option<&Yaml>) {
    let policies: Vec<&Yaml> = match policies {
        None => Vec::new(),
        Some(Yaml::Mapping(map)) if map.contains_key("Statement") => vec![policies.unwrap_or(&Yaml::Null)],
        Some(other) => alternatives(other),
    };
    for policy in policies {
        let Some(statements) = policy.get("Statement") else {
            // A managed policy name or ARN, or a SAM policy template (`SQSSendMessagePolicy: ...`).
            function.problems.push(format!(
                "{}: policy {} is not an inline policy document; iam-check cannot tell what it grants",
                function.name,
                serde_yaml::to_string(policy).unwrap_or_default().trim()
            ));
            continue;
        };
        for statement in alternatives(statements) {
            let n = function.statements.len() + 1;
            let sid = statement.get("Sid").and_then(Yaml::as_str).map_or_else(|| format!("#{n}"), str::to_owned);
            for unsupported in ["NotAction", "NotResource", "Condition"] {
                if statement.get(unsupported).is_some() {
                    function.problems.push(format!(
                        "{}: statement {sid} has {unsupported}, which iam-check does not evaluate",
                        function.name
                    ));
                }
            }
            let mut strings = |key: &str| -> Vec<String> {
                let values = statement.get(key).map(alternatives).unwrap_or_default();
                values
                    .into_iter()
                    .filter_map(|v| {
                        let rendered = render(v);
                        if rendered.is_none() {
                            function.problems.push(format!(
                                "{}: statement {sid}: cannot read {key} {}",
                                function.name,
                                serde_yaml::to_string(v).unwrap_or_default().trim()
                            ));
                        }
                        rendered
                    })
                    .collect()
            };
            let actions = strings("Action");
            let resources = strings("Resource");
            let allow = statement.get("Effect").and_then(Yaml::as_str) != Some("Deny");
            function.statements.push(Statement { sid, allow, actions, resources });
        }
    }
}

fn read_exceptions(function: &mut Function, exceptions: Option<&Yaml>) {
    let Some(exceptions) = exceptions else { return };
    let Some(map) = exceptions.as_mapping() else {
        function.problems.push(format!("{}: Metadata.IamExceptions is not a mapping of action: reason", function.name));
        return;
    };
    for (action, reason) in map {
        match (action.as_str(), reason.as_str().map(str::trim)) {
            (Some(action), Some(reason)) if !reason.is_empty() => {
                function.exceptions.insert(action.to_owned(), reason.to_owned());
            }
            _ => function.problems.push(format!(
                "{}: IamExceptions entry {action:?} needs an action name and a reason (a string)",
                function.name
            )),
        }
    }
}

// ---------------------------------------------------------------- matching

/// IAM's wildcard match: `*` any run of characters, `?` one character.
fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            backtrack = Some((pi, ti));
            pi += 1;
        } else if let Some((star, matched)) = backtrack {
            pi = star + 1;
            ti = matched + 1;
            backtrack = Some((star, matched + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// Action names are case-insensitive.
fn action_matches(pattern: &str, action: &str) -> bool {
    glob(&pattern.to_ascii_lowercase(), &action.to_ascii_lowercase())
}

const IOT_ARN: &str = "arn:${AWS::Partition}:iot:${AWS::Region}:${AWS::AccountId}:";

/// One resource a call needs the action on: the ARN's equivalent spellings in template terms, and how to show it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Needed {
    spellings: Vec<String>,
    /// With names of things, groups and topics left as `{..}`, so problems group by kind.
    shown: String,
}

impl Needed {
    fn any() -> Self {
        Self { spellings: vec!["*".to_owned()], shown: "\"*\" (no resource type)".to_owned() }
    }

    fn iot(kind: &str, name: &str) -> Self {
        Self { spellings: vec![format!("{IOT_ARN}{kind}/{name}")], shown: format!("{IOT_ARN}{kind}/{{{kind}}}") }
    }
}

impl Function {
    /// The template resource the variable `var` names with `!Ref <resource>` (or `!GetAtt <resource>.Arn`).
    fn resource_of(&self, var: &str) -> Option<String> {
        let (name, target) = intrinsic(self.env.get(var)?)?;
        match name.as_str() {
            "Ref" => target.as_str().map(str::to_owned),
            "GetAtt" => render(self.env.get(var)?)?
                .strip_prefix("${")?
                .strip_suffix(".Arn}")
                .map(str::to_owned)
                .filter(|r| !r.contains('.')),
            _ => None,
        }
    }

    /// Follows a table or queue to the template resource through the variable the function got it from.
    fn traced(&self, what: &str, value: &str, from: &[String], kind: &str, template: &Yaml) -> Result<String, String> {
        let resource = from.iter().find_map(|var| self.resource_of(var).map(|r| (var, r)));
        let Some((var, resource)) = resource else {
            return Err(if from.is_empty() {
                format!("{what} {value} is the value of none of the function's environment variables")
            } else {
                format!(
                    "{what} {value} came from {}, which template.yaml does not set to `!Ref <resource>` (or \
                     `!GetAtt <resource>.Arn`)",
                    from.join(", ")
                )
            });
        };
        let actual = template.get("Resources").and_then(|r| r.get(&resource)).and_then(|r| r.get("Type"));
        match actual.and_then(Yaml::as_str) {
            Some(t) if t == kind => Ok(resource),
            other => {
                Err(format!("{var} is !Ref {resource}, which is {}, not an {kind}", other.unwrap_or("no resource")))
            }
        }
    }

    /// The resources `call` needs its action on (all of them), or why they cannot be told.
    fn needed(&self, call: &Call, template: &Yaml) -> Result<Vec<Needed>, String> {
        let service = call.action.split(':').next().unwrap_or_default();
        match service {
            "dynamodb" => {
                let Some(table) = &call.table else { return Ok(vec![Needed::any()]) };
                let resource = self.traced("table", table, &call.from, "AWS::DynamoDB::Table", template)?;
                let mut spellings = vec![
                    format!("${{{resource}.Arn}}"),
                    format!(
                        "arn:${{AWS::Partition}}:dynamodb:${{AWS::Region}}:${{AWS::AccountId}}:table/${{{resource}}}"
                    ),
                ];
                if let Some(index) = &call.index {
                    spellings.iter_mut().for_each(|s| s.push_str(&format!("/index/{index}")));
                }
                let shown = format!("{} (table from {})", spellings[0], call.from.join(", "));
                Ok(vec![Needed { spellings, shown }])
            }
            "sqs" => {
                let Some(queue) = &call.queue_url else { return Ok(vec![Needed::any()]) };
                let resource = self.traced("queue", queue, &call.from, "AWS::SQS::Queue", template)?;
                let spellings = vec![
                    format!("${{{resource}.Arn}}"),
                    format!(
                        "arn:${{AWS::Partition}}:sqs:${{AWS::Region}}:${{AWS::AccountId}}:${{{resource}.QueueName}}"
                    ),
                ];
                let shown = format!("{} (queue from {})", spellings[0], call.from.join(", "));
                Ok(vec![Needed { spellings, shown }])
            }
            "lambda" => {
                let Some(function) = &call.function else { return Ok(vec![Needed::any()]) };
                let resource = self.traced("function", function, &call.from, "AWS::Serverless::Function", template)?;
                let spellings = vec![
                    format!("${{{resource}.Arn}}"),
                    format!(
                        "arn:${{AWS::Partition}}:lambda:${{AWS::Region}}:${{AWS::AccountId}}:function:${{{resource}}}"
                    ),
                ];
                let shown = format!("{} (function from {})", spellings[0], call.from.join(", "));
                Ok(vec![Needed { spellings, shown }])
            }
            // `--stack NAME` names the stack deployed from this template (the tests stand one in, in moto).
            "cloudformation" => {
                if call.stack.is_none() {
                    return Ok(vec![Needed::any()]);
                }
                let stack =
                    "arn:${AWS::Partition}:cloudformation:${AWS::Region}:${AWS::AccountId}:stack/${AWS::StackName}";
                Ok(vec![Needed {
                    spellings: vec![format!("{stack}/${{AWS::StackId.uuid}}"), "${AWS::StackId}".to_owned()],
                    shown: format!("{stack}/* (the stack --stack names)"),
                }])
            }
            "iot" => {
                let mut needed = Vec::new();
                needed.extend(call.thing.as_deref().map(|t| Needed::iot("thing", t)));
                needed.extend(call.thing_group.as_deref().map(|g| Needed::iot("thinggroup", g)));
                needed.extend(call.fleet_index.as_deref().map(|i| Needed::iot("index", i)));
                needed.extend(call.topic.as_deref().map(|t| Needed::iot("topic", t)));
                if needed.is_empty() {
                    needed.push(Needed::any());
                }
                Ok(needed)
            }
            _ => Ok(Vec::new()),
        }
    }

    /// The statements (by position) that grant `action` on one of `needed`'s spellings.
    fn matching(&self, action: &str, needed: &Needed, allow: bool) -> Vec<usize> {
        let covers = |s: &Statement| s.resources.iter().any(|r| needed.spellings.iter().any(|n| glob(r, n)));
        self.statements
            .iter()
            .enumerate()
            .filter(|(_, s)| s.allow == allow && s.actions.iter().any(|a| action_matches(a, action)) && covers(s))
            .map(|(i, _)| i)
            .collect()
    }

    fn granted_anywhere(&self, action: &str) -> bool {
        self.statements.iter().any(|s| s.allow && s.actions.iter().any(|a| action_matches(a, action)))
    }
}

// ---------------------------------------------------------------- the check

/// One row of a function's table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub action: String,
    /// `yes`, `no` (no statement grants it), `partly` (granted, but not on every resource it was used on).
    pub allowed: &'static str,
    pub used: u64,
    /// `ok`, `MISSING`, `RESOURCE` (not allowed on a resource it was used on), `UNUSED`, `PART-UNUSED` (used, but
    /// some statement's grant of it is not), `excused` (an unused grant explained under IamExceptions), `STALE`.
    pub status: &'static str,
    pub exception: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Section {
    /// A function's binary, or a managed policy's logical id.
    pub function: String,
    pub logical_id: String,
    /// The recordings held against it.
    pub recordings: Vec<String>,
    pub rows: Vec<Row>,
}

#[derive(Debug, Clone, Default)]
pub struct Report {
    pub sections: Vec<Section>,
    pub problems: Vec<String>,
}

impl Report {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }

    /// The tables, then the problems (or that there are none).
    pub fn render(&self) -> String {
        let mut out = String::new();
        for section in &self.sections {
            if section.recordings == [section.function.clone()] {
                out.push_str(&format!("{} ({})\n", section.function, section.logical_id));
            } else {
                out.push_str(&format!("{} (the calls of {})\n", section.function, section.recordings.join(", ")));
            }
            let header = ["action", "allowed", "used", "status", "exception"];
            let cells: Vec<[String; 5]> = section
                .rows
                .iter()
                .map(|r| {
                    [
                        r.action.clone(),
                        r.allowed.to_owned(),
                        r.used.to_string(),
                        r.status.to_owned(),
                        r.exception.clone().unwrap_or_default(),
                    ]
                })
                .collect();
            let mut widths = header.map(str::len);
            for row in &cells {
                for (w, c) in widths.iter_mut().zip(row) {
                    *w = (*w).max(c.chars().count());
                }
            }
            let line = |cells: [&str; 5]| {
                let text: Vec<String> = cells.iter().zip(widths).map(|(c, w)| format!("{c:<w$}")).collect();
                format!("  {}\n", text.join("  ").trim_end())
            };
            out.push_str(&line(header));
            for row in &cells {
                out.push_str(&line([&row[0], &row[1], &row[2], &row[3], &row[4]]));
            }
            out.push('\n');
        }
        if self.problems.is_empty() {
            out.push_str("iam-check: every recorded call is allowed and every grant is used or explained\n");
        } else {
            out.push_str(&format!("iam-check: {} problem(s)\n", self.problems.len()));
            for problem in &self.problems {
                out.push_str(&format!("  - {problem}\n"));
            }
        }
        out
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("{path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: {source}")]
    Template { path: String, source: serde_yaml::Error },
}

/// Reads `<dir>/*.jsonl` (one file per function, two for the CLI) and checks them against the template at
/// `template`.
pub fn check(dir: &Path, template: &Path) -> Result<Report, CheckError> {
    let read_error = |path: &Path| {
        let path = path.display().to_string();
        move |source| CheckError::Read { path, source }
    };
    let text = std::fs::read_to_string(template).map_err(read_error(template))?;
    let template_doc: Yaml = serde_yaml::from_str(&text)
        .map_err(|source| CheckError::Template { path: template.display().to_string(), source })?;
    let mut recordings: BTreeMap<String, Vec<Call>> = BTreeMap::new();
    let mut problems = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries.filter_map(Result::ok).map(|e| e.path()).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(read_error(dir)(e)),
    };
    for path in entries {
        let (Some(stem), Some("jsonl")) =
            (path.file_stem().and_then(|s| s.to_str()), path.extension().and_then(|e| e.to_str()))
        else {
            continue;
        };
        let text = std::fs::read_to_string(&path).map_err(read_error(&path))?;
        let calls = recordings.entry(stem.to_owned()).or_default();
        for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            match serde_json::from_str::<Call>(line) {
                Ok(call) => calls.push(call),
                Err(e) => problems.push(format!("{}:{}: not a recorded call: {e}", path.display(), n + 1)),
            }
        }
    }
    let mut report = check_calls(&template_doc, &recordings, &dir.display().to_string());
    problems.append(&mut report.problems);
    report.problems = problems;
    Ok(report)
}

/// Holds each function's recorded calls against its policies, and the CLI's against the managed policies that name
/// them. `source` names where the calls came from.
pub fn check_calls(template: &Yaml, recordings: &BTreeMap<String, Vec<Call>>, source: &str) -> Report {
    let functions = functions(template);
    let mut report = Report::default();
    if functions.is_empty() {
        report.problems.push("the template defines no AWS::Serverless::Function".to_owned());
    }
    let holders: Vec<Function> = functions.into_iter().chain(managed_policies(template)).collect();
    for name in recordings.keys() {
        if !holders.iter().any(|f| f.recordings.contains(name)) {
            let problem = if name.starts_with("shadow-fleet-") {
                format!(
                    "{name}: CLI calls were recorded for it, but no managed policy names it under Metadata: \
                     IamRecordings (a new command: say which policy it needs in tests/src/iam.rs cli_recording)"
                )
            } else {
                format!("{name}: calls were recorded for it, but the template defines no such function")
            };
            report.problems.push(problem);
        }
    }
    for holder in &holders {
        let recorded: Vec<(&str, &[Call])> = holder
            .recordings
            .iter()
            .map(|r| (r.as_str(), recordings.get(r).map(Vec::as_slice).unwrap_or_default()))
            .collect();
        let (section, mut problems) = check_function(holder, &recorded, template, source);
        report.sections.push(section);
        report.problems.append(&mut problems);
    }
    report
}

#[derive(Default)]
struct RowState {
    action: String,
    used: u64,
    denied: u64,
    granted: bool,
}

fn check_function(
    function: &Function,
    recorded: &[(&str, &[Call])],
    template: &Yaml,
    source: &str,
) -> (Section, Vec<String>) {
    let name = &function.name;
    let mut problems = function.problems.clone();
    let mut counted: BTreeMap<&Call, u64> = BTreeMap::new();
    for (recording, calls) in recorded {
        for call in *calls {
            *counted.entry(call).or_default() += 1;
        }
        if calls.is_empty() {
            problems.push(format!(
                "{name}: no recorded calls in {source}/{recording}.jsonl: run the integration tests with \
                 {RECORD_VAR}={source} (a check that saw nothing proves nothing)"
            ));
        }
    }

    // Uses of each (statement, action pattern) grant, and the calls no statement allows.
    let mut grant_uses: HashMap<(usize, usize), u64> = HashMap::new();
    let mut rows: BTreeMap<String, RowState> = BTreeMap::new();
    let mut denied: BTreeMap<(String, String), (u64, BTreeSet<String>)> = BTreeMap::new();
    let mut untraced: BTreeMap<(String, String), u64> = BTreeMap::new();
    for (call, count) in &counted {
        let row = rows.entry(call.action.to_ascii_lowercase()).or_default();
        row.action.clone_from(&call.action);
        row.used += count;
        row.granted = function.granted_anywhere(&call.action);
        let mut mark = |statements: &[usize]| {
            for &s in statements {
                for (a, pattern) in function.statements[s].actions.iter().enumerate() {
                    if action_matches(pattern, &call.action) {
                        *grant_uses.entry((s, a)).or_default() += count;
                    }
                }
            }
        };
        match function.needed(call, template) {
            Err(why) => {
                // The action is checked, its resource cannot be: count the grants of the action as used.
                let granting: Vec<usize> = (0..function.statements.len())
                    .filter(|&s| {
                        let s = &function.statements[s];
                        s.allow && s.actions.iter().any(|a| action_matches(a, &call.action))
                    })
                    .collect();
                mark(&granting);
                if !row.granted {
                    row.denied += count;
                }
                *untraced.entry((call.action.clone(), why)).or_default() += count;
            }
            Ok(needed) => {
                let mut refused = Vec::new();
                for need in needed {
                    let allowing = function.matching(&call.action, &need, true);
                    let denying = function.matching(&call.action, &need, false);
                    mark(&allowing);
                    if allowing.is_empty() || !denying.is_empty() {
                        refused.push(need);
                    }
                }
                if call.is_unknown() || !refused.is_empty() {
                    row.denied += count;
                }
                for need in refused {
                    let example = need.spellings.first().cloned().unwrap_or_default();
                    let entry = denied.entry((call.action.clone(), need.shown)).or_default();
                    entry.0 += count;
                    if entry.1.len() < 3 {
                        entry.1.insert(example);
                    }
                }
                if call.is_unknown() {
                    denied.entry((call.action.clone(), String::new())).or_default().0 += count;
                }
            }
        }
    }

    for ((action, shown), (count, examples)) in &denied {
        let granted_on: BTreeSet<&str> = function
            .statements
            .iter()
            .filter(|s| s.allow && s.actions.iter().any(|a| action_matches(a, action)))
            .flat_map(|s| s.resources.iter().map(String::as_str))
            .collect();
        let problem = if action.starts_with("unknown:") {
            format!(
                "{name}: {count} request(s) iam-check could not identify ({action}): teach tests/src/iam.rs its \
                 IAM action"
            )
        } else if granted_on.is_empty() {
            format!("{name}: {action} on {shown}: no statement allows it ({count} call(s))")
        } else {
            let examples: Vec<&str> = examples.iter().map(String::as_str).collect();
            format!(
                "{name}: {action} on {shown}: granted only on {} ({count} call(s), e.g. {})",
                granted_on.into_iter().collect::<Vec<_>>().join(", "),
                examples.join(", ")
            )
        };
        problems.push(problem);
    }
    for ((action, why), count) in &untraced {
        problems.push(format!("{name}: {action}: cannot check its resource: {why} ({count} call(s))"));
    }

    // Grants no call used, unless explained.
    let mut excused: BTreeSet<String> = BTreeSet::new();
    let mut unused: BTreeSet<String> = BTreeSet::new();
    let seen_anything = !counted.is_empty();
    for (s, statement) in function.statements.iter().enumerate().filter(|(_, s)| s.allow) {
        for (a, pattern) in statement.actions.iter().enumerate() {
            let key = pattern.to_ascii_lowercase();
            let row = rows.entry(key.clone()).or_default();
            if row.action.is_empty() {
                row.action.clone_from(pattern);
            }
            row.granted = true;
            if grant_uses.get(&(s, a)).copied().unwrap_or_default() > 0 || !seen_anything {
                continue;
            }
            if function.exceptions.keys().any(|e| e.eq_ignore_ascii_case(pattern)) {
                excused.insert(key);
                continue;
            }
            unused.insert(key);
            problems.push(format!(
                "{name}: statement {} grants {pattern} on {}, and no recorded call used it: drop the grant, or say why \
                 the binary never calls it under Metadata: IamExceptions",
                statement.sid,
                statement.resources.join(", ")
            ));
        }
    }
    let mut stale: BTreeSet<String> = BTreeSet::new();
    for action in function.exceptions.keys() {
        let key = action.to_ascii_lowercase();
        let granted =
            function.statements.iter().any(|s| s.allow && s.actions.iter().any(|a| a.eq_ignore_ascii_case(action)));
        if !granted {
            stale.insert(key.clone());
            rows.entry(key).or_default().action.clone_from(action);
            problems.push(format!(
                "{name}: IamExceptions names {action}, which no statement grants: remove the stale exception"
            ));
        } else if seen_anything && !excused.contains(&key) {
            stale.insert(key);
            problems.push(format!(
                "{name}: IamExceptions says the binary never calls {action}, but every grant of it was used: remove \
                 the stale exception"
            ));
        }
    }

    let rows = rows
        .into_iter()
        .map(|(key, state)| {
            let exception =
                function.exceptions.iter().find(|(a, _)| a.eq_ignore_ascii_case(&key)).map(|(_, r)| r.clone());
            let allowed = if !state.granted {
                "no"
            } else if state.denied > 0 {
                "partly"
            } else {
                "yes"
            };
            let status = if stale.contains(&key) {
                "STALE"
            } else if state.denied > 0 && !state.granted {
                "MISSING"
            } else if state.denied > 0 {
                "RESOURCE"
            } else if unused.contains(&key) && state.used == 0 {
                "UNUSED"
            } else if unused.contains(&key) {
                // Called, but not under every statement that grants it.
                "PART-UNUSED"
            } else if excused.contains(&key) {
                "excused"
            } else {
                "ok"
            };
            Row { action: state.action, allowed, used: state.used, status, exception }
        })
        .collect();
    let section = Section {
        function: name.clone(),
        logical_id: function.logical_id.clone(),
        recordings: function.recordings.clone(),
        rows,
    };
    (section, problems)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_config::{BehaviorVersion, Region, SdkConfig};
    use aws_credential_types::Credentials;
    use aws_credential_types::provider::SharedCredentialsProvider;
    use tokio::sync::mpsc;

    // ------------------------------------------------------------ requests as the SDK really sends them

    /// A server that keeps every request and answers each with a 400, and an SDK configuration for it.
    async fn capture() -> (Server, mpsc::UnboundedReceiver<(Parts, Bytes)>, SdkConfig) {
        let (sender, requests) = mpsc::unbounded_channel();
        let server = serve(move |parts, body| {
            let _ = sender.send((parts, body));
            async { reply(StatusCode::BAD_REQUEST, r#"{"message":"captured"}"#) }
        })
        .await;
        let config = SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("ap-northeast-1"))
            .credentials_provider(SharedCredentialsProvider::new(Credentials::new("AKID", "SECRET", None, None, "t")))
            .retry_config(aws_config::retry::RetryConfig::disabled())
            .endpoint_url(server.url())
            .build();
        (server, requests, config)
    }

    /// The calls of the next captured request, checking that its signature tells the same service.
    fn next_calls(requests: &mut mpsc::UnboundedReceiver<(Parts, Bytes)>, service: Service) -> Vec<Call> {
        let (parts, body) = requests.try_recv().unwrap_or_else(|e| panic!("no request captured: {e}"));
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
            let request = PutRequest::builder().item("pk", s(pk)).build().unwrap_or_else(|e| panic!("{e}"));
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
        let put = Put::builder().table_name("push-1").item("pk", s("a")).build().unwrap_or_else(|e| panic!("{e}"));
        let update = Update::builder()
            .table_name("push-2")
            .key("pk", s("b"))
            .update_expression("SET x = :x")
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
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
            client.send_message_batch().queue_url(url).entries(entry.unwrap_or_else(|e| panic!("{e}"))).send().await;
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
    fn cli_commands_are_filed_under_the_policy_they_need() {
        for (args, expected) in [
            (&["history", "dev", "--shadow", "cfg"][..], CLI_READONLY),
            (&["--output", "json", "shadow", "get", "t1"], CLI_READONLY),
            (&["push", "show", "p1", "--failures"], CLI_READONLY),
            (&["--stack", "push", "push", "list", "--since", "1h"], CLI_READONLY),
            (&["push", "--output", "json", "watch", "p1"], CLI_READONLY),
            (&["push", "start", "request.json", "--wait"], CLI_OPERATOR),
            (&["--stack", "fleet", "push", "pause", "p1"], CLI_OPERATOR),
            (&["push", "resume", "p1"], CLI_OPERATOR),
            (&["push", "abort", "p1", "--rollback"], CLI_OPERATOR),
            // A command nobody has classified yet: its calls are held against no policy, and iam-check says so.
            (&["push", "frobnicate"], CLI_UNCLASSIFIED),
            (&["drift", "--group", "prod", "--shadow", "cfg"], CLI_READONLY),
            (&["--region", "eu-west-1", "--profile", "ops", "push", "abort", "p1"], CLI_OPERATOR),
            (&["shadow", "frobnicate"], CLI_UNCLASSIFIED),
            (&["--help"], CLI_UNCLASSIFIED),
        ] {
            assert_eq!(cli_recording(args), expected, "{args:?}");
        }
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
        signed.insert("authorization", authorization.parse().unwrap_or_else(|e| panic!("{e}")));
        assert_eq!(
            identify(None, &Method::GET, "/things/t1/shadow?name=cfg", &signed, b""),
            [Call { thing: Some("t1".into()), shadow: Some("cfg".into()), ..call("iot:GetThingShadow") }]
        );
    }

    // ------------------------------------------------------------ the recording proxy

    #[tokio::test]
    async fn the_proxy_records_each_call_with_the_variable_it_came_from_and_forwards_it_unchanged() {
        let (upstream, mut reached, _) = capture().await;
        let dir = std::env::temp_dir().join(crate::unique("iam-record"));
        let env: Vec<(String, String)> = [
            ("AWS_ENDPOINT_URL_DYNAMODB", "http://127.0.0.1:9".to_owned()),
            ("AWS_ENDPOINT_URL_DYNAMODB", upstream.url()), // the last value wins, as for the process
            ("AWS_ENDPOINT_URL_SQS", upstream.url()),
            ("PUSH_TABLE", "push-7".to_owned()),
            ("PUSH_QUEUE_URL", "http://127.0.0.1:15000/123456789012/q-7".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let (routed, _recording) = recorded_env_in(&dir, "shadow-push", &env).await;
        let var = |name: &str| {
            let values: Vec<&String> = routed.iter().filter(|(k, _)| k == name).map(|(_, v)| v).collect();
            assert_eq!(values.len(), 1, "{name} in {routed:?}");
            values[0].clone()
        };
        assert_ne!(var("AWS_ENDPOINT_URL_DYNAMODB"), upstream.url());
        assert_eq!(var("PUSH_TABLE"), "push-7");

        let (_unused, _, config) = capture().await;
        let dynamodb = aws_sdk_dynamodb::config::Builder::from(&config).endpoint_url(var("AWS_ENDPOINT_URL_DYNAMODB"));
        let dynamodb = aws_sdk_dynamodb::Client::from_conf(dynamodb.build());
        let item = aws_sdk_dynamodb::types::AttributeValue::S("a".into());
        let answer = dynamodb.get_item().table_name("push-7").key("pk", item).send().await;
        // The upstream's own answer comes back.
        let error = answer.err().map(|e| format!("{:?}", e.into_service_error())).unwrap_or_default();
        assert!(error.contains("captured"), "{error}");
        let (parts, body) = reached.try_recv().unwrap_or_else(|e| panic!("the request did not reach upstream: {e}"));
        assert_eq!(parts.headers.get("x-amz-target").and_then(|v| v.to_str().ok()), Some("DynamoDB_20120810.GetItem"));
        assert!(String::from_utf8_lossy(&body).contains("push-7"));

        let sqs = aws_sdk_sqs::config::Builder::from(&config).endpoint_url(var("AWS_ENDPOINT_URL_SQS"));
        let sqs = aws_sdk_sqs::Client::from_conf(sqs.build());
        let _ = sqs.send_message().queue_url("http://127.0.0.1:15000/123456789012/q-7").message_body("x").send().await;

        let text = std::fs::read_to_string(dir.join("shadow-push.jsonl")).unwrap_or_else(|e| panic!("{e}"));
        let calls: Vec<Call> =
            text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}"))).collect();
        assert_eq!(
            calls,
            [
                Call { table: Some("push-7".into()), from: vec!["PUSH_TABLE".into()], ..call("dynamodb:GetItem") },
                Call {
                    queue_url: Some("http://127.0.0.1:15000/123456789012/q-7".into()),
                    from: vec!["PUSH_QUEUE_URL".into()],
                    ..call("sqs:SendMessage")
                },
            ]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Under `--stack NAME`, the CLI's tables come from the stack's outputs: the recorder learns them from the
    /// DescribeStacks answer, so later calls on them are traced through the output's name.
    #[tokio::test]
    async fn the_cli_proxy_traces_tables_from_the_stacks_outputs() {
        const ANSWER: &str = "<DescribeStacksResponse><DescribeStacksResult><Stacks><member>\
            <StackName>fleet</StackName><Outputs>\
            <member><OutputKey>PushTableName</OutputKey><OutputValue>push-9</OutputValue></member>\
            <member><OutputValue>a&amp;b</OutputValue><OutputKey>HistoryTableName</OutputKey></member>\
            </Outputs></member></Stacks></DescribeStacksResult></DescribeStacksResponse>";
        assert_eq!(
            stack_outputs(ANSWER),
            [("push-9".to_owned(), "PushTableName".to_owned()), ("a&b".to_owned(), "HistoryTableName".to_owned())]
        );
        let upstream = serve(|_, _| async { reply(StatusCode::OK, ANSWER) }).await;
        let dir = std::env::temp_dir().join(crate::unique("iam-record-cli"));
        // The CLI inherits nothing: its environment is all there is.
        let env = BTreeMap::from([
            ("AWS_ENDPOINT_URL_CLOUDFORMATION".to_owned(), upstream.url()),
            ("AWS_ENDPOINT_URL_DYNAMODB".to_owned(), upstream.url()),
            ("PUSH_FUNCTION_NAME".to_owned(), "shadow-push".to_owned()),
        ]);
        let pairs: Vec<(String, String)> = env.clone().into_iter().collect();
        let (routed, _recording) = recorders(&dir, CLI_READONLY, &env, &pairs).await;
        let routed: BTreeMap<String, String> = routed.into_iter().collect();
        assert_ne!(routed["AWS_ENDPOINT_URL_DYNAMODB"], upstream.url());

        let (_unused, _, config) = capture().await;
        let cloudformation = aws_sdk_cloudformation::config::Builder::from(&config)
            .endpoint_url(&routed["AWS_ENDPOINT_URL_CLOUDFORMATION"]);
        let described = aws_sdk_cloudformation::Client::from_conf(cloudformation.build())
            .describe_stacks()
            .stack_name("fleet")
            .send()
            .await;
        assert!(described.is_ok(), "{described:?}");
        let dynamodb =
            aws_sdk_dynamodb::config::Builder::from(&config).endpoint_url(&routed["AWS_ENDPOINT_URL_DYNAMODB"]);
        let key = aws_sdk_dynamodb::types::AttributeValue::S("p1".into());
        let _ = aws_sdk_dynamodb::Client::from_conf(dynamodb.build())
            .get_item()
            .table_name("push-9")
            .key("pk", key)
            .send()
            .await;

        let text = std::fs::read_to_string(dir.join(format!("{CLI_READONLY}.jsonl"))).unwrap_or_else(|e| panic!("{e}"));
        let calls: Vec<Call> =
            text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}"))).collect();
        assert_eq!(
            calls,
            [
                Call { stack: Some("fleet".into()), ..call("cloudformation:DescribeStacks") },
                Call { table: Some("push-9".into()), from: vec!["PushTableName".into()], ..call("dynamodb:GetItem") },
            ]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    // ------------------------------------------------------------ the checker

    const TEMPLATE: &str = r#"
Conditions:
  Queued: !Equals [a, b]
Resources:
  PushTable:
    Type: AWS::DynamoDB::Table
  PushQueue:
    Type: AWS::SQS::Queue
  PushDlq:
    Type: AWS::SQS::Queue
  ShadowPushFunction:
    Type: AWS::Serverless::Function
    Metadata:
      BuildMethod: rust-cargolambda
      IamExceptions:
        sqs:ReceiveMessage: Lambda's event source mapping receives with the function's role
        sqs:SendMessage: Lambda itself sends failed asynchronous invocations to the on-failure destination
    Properties:
      CodeUri: functions/shadow-push
      Environment:
        Variables:
          PUSH_TABLE: !Ref PushTable
          PUSH_QUEUE_URL: !Ref PushQueue
          PUSH_MAX_TPS: 400
      Policies:
        - Version: "2012-10-17"
          Statement:
            - Sid: Records
              Effect: Allow
              Action:
                - dynamodb:PutItem
                - dynamodb:Query
              Resource: !GetAtt PushTable.Arn
            - Sid: HandOff
              Effect: Allow
              Action: [sqs:SendMessage, sqs:ReceiveMessage]
              Resource: !GetAtt PushQueue.Arn
            - Sid: OnFailureDestination
              Effect: Allow
              Action: sqs:SendMessage
              Resource: !GetAtt PushDlq.Arn
            - !If
              - Queued
              - Sid: Shadows
                Effect: Allow
                Action: iot:UpdateThingShadow
                Resource: !Sub arn:${AWS::Partition}:iot:${AWS::Region}:${AWS::AccountId}:thing/*
              - !Ref AWS::NoValue
"#;

    fn put(table: &str) -> Call {
        Call { table: Some(table.into()), from: vec!["PUSH_TABLE".into()], ..call("dynamodb:PutItem") }
    }

    fn query(index: Option<&str>) -> Call {
        Call {
            table: Some("push-1".into()),
            index: index.map(str::to_owned),
            from: vec!["PUSH_TABLE".into()],
            ..call("dynamodb:Query")
        }
    }

    fn hand_off() -> Call {
        Call {
            queue_url: Some("http://q/1/push".into()),
            from: vec!["PUSH_QUEUE_URL".into()],
            ..call("sqs:SendMessage")
        }
    }

    fn update_shadow(thing: &str) -> Call {
        Call { thing: Some(thing.into()), shadow: Some("config".into()), ..call("iot:UpdateThingShadow") }
    }

    fn clean_calls() -> Vec<Call> {
        vec![put("push-1"), put("push-2"), query(None), hand_off(), update_shadow("t1"), update_shadow("t2")]
    }

    fn run(template: &str, calls: Vec<Call>) -> Report {
        let template: Yaml = serde_yaml::from_str(template).unwrap_or_else(|e| panic!("{e}"));
        check_calls(&template, &BTreeMap::from([("shadow-push".to_owned(), calls)]), "/tmp/calls")
    }

    fn row<'a>(report: &'a Report, action: &str) -> &'a Row {
        let rows = &report.sections[0].rows;
        rows.iter().find(|r| r.action == action).unwrap_or_else(|| panic!("no row {action} in {rows:?}"))
    }

    fn assert_problem(report: &Report, parts: &[&str]) {
        assert!(
            report.problems.iter().any(|p| parts.iter().all(|part| p.contains(part))),
            "no problem with {parts:?} in:\n{}",
            report.render()
        );
    }

    #[test]
    fn calls_all_allowed_and_grants_used_or_explained_pass() {
        let report = run(TEMPLATE, clean_calls());
        assert!(report.is_clean(), "{}", report.render());
        assert_eq!(report.sections[0].function, "shadow-push");
        assert_eq!(report.sections[0].logical_id, "ShadowPushFunction");
        let put = row(&report, "dynamodb:PutItem");
        assert_eq!((put.allowed, put.used, put.status), ("yes", 2, "ok"));
        // Used to hand off, and explained for the on-failure destination the binary never sends to.
        let send = row(&report, "sqs:SendMessage");
        assert_eq!((send.used, send.status), (1, "excused"));
        let receive = row(&report, "sqs:ReceiveMessage");
        assert_eq!((receive.used, receive.status), (0, "excused"));
        assert!(receive.exception.as_deref().is_some_and(|r| r.contains("event source mapping")));
        assert!(report.render().contains("every recorded call is allowed"));
    }

    #[test]
    fn a_missing_action_is_caught() {
        let mut calls = clean_calls();
        calls.push(Call {
            table: Some("push-1".into()),
            from: vec!["PUSH_TABLE".into()],
            ..call("dynamodb:BatchWriteItem")
        });
        let report = run(TEMPLATE, calls);
        assert_problem(
            &report,
            &["dynamodb:BatchWriteItem", "${PushTable.Arn}", "no statement allows it", "PUSH_TABLE"],
        );
        let batch = row(&report, "dynamodb:BatchWriteItem");
        assert_eq!((batch.allowed, batch.used, batch.status), ("no", 1, "MISSING"));
    }

    #[test]
    fn an_unused_grant_is_caught() {
        let calls = clean_calls().into_iter().filter(|c| c.action != "dynamodb:Query").collect();
        let report = run(TEMPLATE, calls);
        assert_eq!(report.problems.len(), 1, "{}", report.render());
        assert_problem(&report, &["statement Records grants dynamodb:Query", "no recorded call used it"]);
        assert_eq!(row(&report, "dynamodb:Query").status, "UNUSED");
    }

    #[test]
    fn a_stale_exception_is_caught() {
        // An exception for an action no statement grants...
        let template = TEMPLATE.replace(
            "      IamExceptions:\n",
            "      IamExceptions:\n        sqs:DeleteMessage: Lambda's event source mapping deletes\n",
        );
        let report = run(&template, clean_calls());
        assert_problem(&report, &["IamExceptions names sqs:DeleteMessage, which no statement grants"]);
        assert_eq!(row(&report, "sqs:DeleteMessage").status, "STALE");

        // ... and one for an action the binary does call under every grant of it.
        let template = TEMPLATE
            .replace("      IamExceptions:\n", "      IamExceptions:\n        dynamodb:PutItem: never called\n");
        let report = run(&template, clean_calls());
        assert_problem(&report, &["dynamodb:PutItem", "every grant of it was used"]);
    }

    #[test]
    fn an_index_query_needs_the_index_resource() {
        let mut calls = clean_calls();
        calls.push(query(Some("byStatus")));
        let report = run(TEMPLATE, calls.clone());
        assert_problem(
            &report,
            &["dynamodb:Query on ${PushTable.Arn}/index/byStatus", "granted only on ${PushTable.Arn}"],
        );
        assert_eq!(row(&report, "dynamodb:Query").allowed, "partly");

        let template = TEMPLATE.replace(
            "              Resource: !GetAtt PushTable.Arn\n",
            concat!(
                "              Resource:\n",
                "                - !GetAtt PushTable.Arn\n",
                "                - !Sub \"${PushTable.Arn}/index/*\"\n",
            ),
        );
        let report = run(&template, calls);
        assert!(report.is_clean(), "{}", report.render());
    }

    #[test]
    fn resources_are_held_to_the_statements() {
        // A thing outside the granted ARN pattern.
        let template = TEMPLATE.replace(":thing/*", ":thing/sensor-*");
        let report = run(&template, clean_calls());
        assert_problem(&report, &["iot:UpdateThingShadow on arn:${AWS::Partition}:iot:", "thing/{thing}", "e.g."]);

        // A table the function did not get from its template environment.
        let mut calls = clean_calls();
        calls.push(Call { table: Some("elsewhere".into()), ..call("dynamodb:PutItem") });
        let report = run(TEMPLATE, calls);
        assert_problem(&report, &["dynamodb:PutItem: cannot check its resource", "table elsewhere"]);

        // A queue from a variable that is not a !Ref, and a Deny that wins.
        let template = TEMPLATE.replace("PUSH_QUEUE_URL: !Ref PushQueue", "PUSH_QUEUE_URL: https://q")
            + "            - Effect: Deny\n              Action: dynamodb:PutItem\n              Resource: \"*\"\n";
        let report = run(&template, clean_calls());
        assert_problem(&report, &["sqs:SendMessage: cannot check its resource", "PUSH_QUEUE_URL"]);
        assert_problem(&report, &["dynamodb:PutItem on ${PushTable.Arn}"]);
    }

    #[test]
    fn nothing_recorded_and_unknown_requests_fail() {
        let report = run(TEMPLATE, Vec::new());
        assert_eq!(report.problems.len(), 1, "{}", report.render());
        assert_problem(&report, &["shadow-push: no recorded calls", "proves nothing"]);

        let mut calls = clean_calls();
        calls.push(call("unknown:GET /things/t1/jobs"));
        let report = run(TEMPLATE, calls);
        assert_problem(&report, &["could not identify (unknown:GET /things/t1/jobs)"]);

        let template: Yaml = serde_yaml::from_str(TEMPLATE).unwrap_or_else(|e| panic!("{e}"));
        let recordings = BTreeMap::from([
            ("shadow-push".to_owned(), clean_calls()),
            ("shadow-other".to_owned(), vec![put("push-1")]),
        ]);
        let report = check_calls(&template, &recordings, "/tmp/calls");
        assert_problem(
            &report,
            &["shadow-other: calls were recorded for it, but the template defines no such function"],
        );
    }

    #[test]
    fn the_projects_template_is_readable() {
        let path = crate::stack::repo_root().join("template.yaml");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let template: Yaml = serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("template.yaml: {e}"));
        let functions = functions(&template);
        let names: Vec<&str> = functions.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["shadow-history", "shadow-push"]);
        for function in &functions {
            assert!(function.problems.is_empty(), "{:?}", function.problems);
            assert!(!function.statements.is_empty(), "{}: no statements found", function.name);
        }
        let policies = managed_policies(&template);
        let held: Vec<(&str, Vec<String>)> = policies.iter().map(|p| (p.name.as_str(), p.recordings.clone())).collect();
        assert_eq!(
            held,
            [
                ("OperatorReadOnlyPolicy", vec![CLI_READONLY.to_owned()]),
                ("OperatorPolicy", vec![CLI_READONLY.to_owned(), CLI_OPERATOR.to_owned()]),
            ]
        );
        for policy in &policies {
            assert!(policy.problems.is_empty(), "{:?}", policy.problems);
            assert!(!policy.statements.is_empty(), "{}: no statements found", policy.name);
        }
    }

    // ------------------------------------------------------------ the checker, for the CLI's managed policies

    const READS: &str = r#"
          - Sid: StackOutputs
            Effect: Allow
            Action: cloudformation:DescribeStacks
            Resource: !Sub arn:${AWS::Partition}:cloudformation:${AWS::Region}:${AWS::AccountId}:stack/${AWS::StackName}/*
          - Sid: ReadPushes
            Effect: Allow
            Action: [dynamodb:GetItem, dynamodb:Query]
            Resource: !GetAtt PushTable.Arn
          - Sid: ListPushes
            Effect: Allow
            Action: dynamodb:Query
            Resource: !Sub "${PushTable.Arn}/index/recent-pushes"
          - Sid: ReadShadows
            Effect: Allow
            Action: iot:GetThingShadow
            Resource: !Sub arn:${AWS::Partition}:iot:${AWS::Region}:${AWS::AccountId}:thing/*
          - Sid: DataEndpoint
            Effect: Allow
            Action: iot:DescribeEndpoint
            Resource: "*"
"#;

    fn cli_template() -> String {
        let template = r#"
Resources:
  HistoryTable:
    Type: AWS::DynamoDB::Table
  PushTable:
    Type: AWS::DynamoDB::Table
  ShadowPushFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: functions/shadow-push
      Environment:
        Variables:
          PUSH_TABLE: !Ref PushTable
      Policies:
        - Statement:
            - Effect: Allow
              Action: dynamodb:UpdateItem
              Resource: !GetAtt PushTable.Arn
  ReadOnly:
    Type: AWS::IAM::ManagedPolicy
    Metadata:
      IamRecordings: [shadow-fleet-readonly]
      IamExceptions:
        iot:DescribeEndpoint: not reached in the tests
    Properties:
      PolicyDocument:
        Statement:
READS
  Operator:
    Type: AWS::IAM::ManagedPolicy
    Metadata:
      IamRecordings: [shadow-fleet-readonly, shadow-fleet-operator]
      IamExceptions:
        iot:DescribeEndpoint: not reached in the tests
    Properties:
      PolicyDocument:
        Statement:
READS
          - Sid: StartAndControlPushes
            Effect: Allow
            Action: lambda:InvokeFunction
            Resource: !GetAtt ShadowPushFunction.Arn
          - Sid: ControlOnTheRecord
            Effect: Allow
            Action: dynamodb:UpdateItem
            Resource: !GetAtt PushTable.Arn
Outputs:
  HistoryTableName:
    Value: !Ref HistoryTable
  PushTableName:
    Value: !Ref PushTable
  ShadowPushFunctionArn:
    Value: !GetAtt ShadowPushFunction.Arn
"#;
        template.replace("READS\n", READS.trim_start_matches('\n'))
    }

    fn on_push_table(action: &str, from: &str, index: Option<&str>) -> Call {
        Call { table: Some("push-1".into()), index: index.map(str::to_owned), from: vec![from.into()], ..call(action) }
    }

    fn invoke() -> Call {
        Call {
            function: Some("shadow-push".into()),
            from: vec!["PUSH_FUNCTION_NAME".into()],
            ..call("lambda:InvokeFunction")
        }
    }

    /// What the CLI tests record: reads (one under --stack, its table from the stack's output), a start and an
    /// abort written on the record; and the function's own calls.
    fn cli_recordings() -> BTreeMap<String, Vec<Call>> {
        BTreeMap::from([
            ("shadow-push".to_owned(), vec![on_push_table("dynamodb:UpdateItem", "PUSH_TABLE", None)]),
            (
                CLI_READONLY.to_owned(),
                vec![
                    Call { stack: Some("deployed-1".into()), ..call("cloudformation:DescribeStacks") },
                    on_push_table("dynamodb:GetItem", "PushTableName", None),
                    on_push_table("dynamodb:Query", "PUSH_TABLE", None),
                    on_push_table("dynamodb:Query", "PUSH_TABLE", Some("recent-pushes")),
                    Call { thing: Some("t1".into()), ..call("iot:GetThingShadow") },
                ],
            ),
            (
                CLI_OPERATOR.to_owned(),
                vec![
                    invoke(),
                    on_push_table("dynamodb:GetItem", "PUSH_TABLE", None),
                    on_push_table("dynamodb:UpdateItem", "PUSH_TABLE", None),
                ],
            ),
        ])
    }

    fn run_cli(template: &str, recordings: &BTreeMap<String, Vec<Call>>) -> Report {
        let template: Yaml = serde_yaml::from_str(template).unwrap_or_else(|e| panic!("{e}"));
        check_calls(&template, recordings, "/tmp/calls")
    }

    fn section_row<'a>(report: &'a Report, section: &str, action: &str) -> &'a Row {
        let section = report.sections.iter().find(|s| s.function == section);
        let rows = &section.unwrap_or_else(|| panic!("no section {section:?}")).rows;
        rows.iter().find(|r| r.action == action).unwrap_or_else(|| panic!("no row {action} in {rows:?}"))
    }

    #[test]
    fn cli_calls_held_against_the_operator_policies_pass_when_all_allowed_and_used() {
        let report = run_cli(&cli_template(), &cli_recordings());
        assert!(report.is_clean(), "{}", report.render());
        let holders: Vec<(&str, &[String])> =
            report.sections.iter().map(|s| (s.function.as_str(), s.recordings.as_slice())).collect();
        assert_eq!(holders[1..].iter().map(|(f, _)| *f).collect::<Vec<_>>(), ["ReadOnly", "Operator"]);
        assert_eq!(holders[2].1, [CLI_READONLY.to_owned(), CLI_OPERATOR.to_owned()]);
        // The read-only policy sees only the read-only commands' calls; the operator policy all of them.
        assert_eq!(section_row(&report, "ReadOnly", "dynamodb:GetItem").used, 1);
        assert_eq!(section_row(&report, "Operator", "dynamodb:GetItem").used, 2);
        assert_eq!(section_row(&report, "Operator", "lambda:InvokeFunction").status, "ok");
        assert_eq!(section_row(&report, "Operator", "iot:DescribeEndpoint").status, "excused");
        assert!(report.render().contains("Operator (the calls of shadow-fleet-readonly, shadow-fleet-operator)"));
    }

    #[test]
    fn a_cli_call_the_policy_does_not_grant_is_caught() {
        // A read-only command that invokes shadow-push, and one that calls what no policy grants yet.
        let mut recordings = cli_recordings();
        let reads = recordings.get_mut(CLI_READONLY).unwrap_or_else(|| panic!("no read-only calls"));
        reads.push(invoke());
        reads.push(Call { fleet_index: Some("AWS_Things".into()), ..call("iot:SearchIndex") });
        let report = run_cli(&cli_template(), &recordings);
        assert_problem(
            &report,
            &[
                "ReadOnly: lambda:InvokeFunction on ${ShadowPushFunction.Arn} (function from PUSH_FUNCTION_NAME)",
                "no statement allows it",
            ],
        );
        assert_eq!(section_row(&report, "ReadOnly", "lambda:InvokeFunction").status, "MISSING");
        for policy in ["ReadOnly", "Operator"] {
            assert_problem(&report, &[&format!("{policy}: iot:SearchIndex on"), "index/{index}", "no statement"]);
        }
        assert_eq!(report.problems.len(), 3, "{}", report.render());

        // A stack outside the policy's: granted on another stack only.
        let template = cli_template().replace("stack/${AWS::StackName}/*", "stack/other/*");
        let report = run_cli(&template, &cli_recordings());
        assert_problem(
            &report,
            &["ReadOnly: cloudformation:DescribeStacks on", "stack/${AWS::StackName}/*", "granted only on"],
        );
    }

    #[test]
    fn an_unused_operator_grant_is_caught() {
        // No recorded abort was written on the record: the operator policy's UpdateItem grant is unused. The
        // function's own UpdateItem does not count for it.
        let mut recordings = cli_recordings();
        recordings.insert(CLI_OPERATOR.to_owned(), vec![invoke()]);
        let report = run_cli(&cli_template(), &recordings);
        assert_eq!(report.problems.len(), 1, "{}", report.render());
        assert_problem(
            &report,
            &["Operator: statement ControlOnTheRecord grants dynamodb:UpdateItem", "no recorded call used it"],
        );
        assert_eq!(section_row(&report, "Operator", "dynamodb:UpdateItem").status, "UNUSED");

        // A read grant no read-only command used is reported for both policies.
        let mut recordings = cli_recordings();
        recordings.entry(CLI_READONLY.to_owned()).or_default().retain(|c| c.index.is_none());
        let report = run_cli(&cli_template(), &recordings);
        assert_problem(&report, &["ReadOnly: statement ListPushes grants dynamodb:Query", "no recorded call"]);
        assert_problem(&report, &["Operator: statement ListPushes grants dynamodb:Query", "no recorded call"]);
    }

    #[test]
    fn cli_recordings_no_policy_holds_and_missing_ones_are_caught() {
        let mut recordings = cli_recordings();
        recordings.insert(CLI_UNCLASSIFIED.to_owned(), vec![invoke()]);
        recordings.remove(CLI_OPERATOR);
        let report = run_cli(&cli_template(), &recordings);
        assert_problem(&report, &["shadow-fleet-unclassified: CLI calls were recorded", "cli_recording"]);
        assert_problem(&report, &["Operator: no recorded calls in /tmp/calls/shadow-fleet-operator.jsonl"]);

        // A policy that names no recordings, and a template without the outputs the CLI reads.
        let template = cli_template().replace("      IamRecordings: [shadow-fleet-readonly]\n", "");
        let template = template.replace("  PushTableName:\n    Value: !Ref PushTable\n", "");
        let report = run_cli(&template, &cli_recordings());
        assert_problem(&report, &["ReadOnly: Metadata.IamRecordings names no recorded calls"]);
        assert_problem(&report, &["Operator: template.yaml has no output PushTableName"]);
    }

    #[test]
    fn wildcards_match_as_iam_does() {
        assert!(glob("arn:x:thing/*", "arn:x:thing/t1"));
        assert!(glob("*", "anything"));
        assert!(glob("${T.Arn}/index/*", "${T.Arn}/index/byStatus"));
        assert!(!glob("${T.Arn}", "${T.Arn}/index/byStatus"));
        assert!(!glob("arn:x:thing/*", "*"));
        assert!(glob("a?c*e", "abcdde"));
        assert!(action_matches("DynamoDB:putitem", "dynamodb:PutItem"));
        assert!(action_matches("dynamodb:Get*", "dynamodb:GetItem"));
        assert!(!action_matches("dynamodb:Get*", "dynamodb:PutItem"));
    }
}
