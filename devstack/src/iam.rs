//! The recording proxies of the IAM tier. Neither DynamoDB Local nor moto checks IAM, so an action a function's
//! policy lacks only shows on AWS, as AccessDenied. With `FLEET_IAM_RECORD=<dir>` set, every function binary the
//! tests start reaches each AWS endpoint through a recording proxy ([`recorded_env`]) that forwards every request
//! unchanged and appends its IAM action and resource to `<dir>/<function>.jsonl`; the CLI tests start the CLI
//! through [`recorded_cli_env`], which records each command's calls as the policy it needs. `iam-check` (the
//! `iam_check` crate, tools/iam-check) then holds those calls against `template.yaml`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use http_body_util::Full;
use hyper::Response;
use hyper::StatusCode;
use hyper::http::request::Parts;
use iam_check::identify::{Service, identify, is_endpoint_var};
use iam_check::record::{CallLog, RECORD_VAR, Sources, cli_recording};

use crate::http::{Reply, Server, Upstream, reply, serve};

/// The recording proxies of one function process; they stop when this is dropped.
pub struct Recording {
    _proxies: Vec<Server>,
}

struct Recorder {
    service: Option<Service>,
    upstream: Upstream,
    log: CallLog,
    /// Shared by the process's proxies: a stack described through one names the tables reached through another.
    sources: Arc<Mutex<Sources>>,
}

async fn record_and_forward(recorder: Arc<Recorder>, parts: Parts, body: Bytes) -> Reply {
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut calls = identify(recorder.service, &parts.method, path, &parts.headers, &body);
    recorder.sources.lock().unwrap_or_else(|e| e.into_inner()).trace(&mut calls);
    if let Err(e) = recorder.log.append(&calls) {
        // Never lose a call silently: the checker would pass on what it did not see.
        let message = format!("{RECORD_VAR}: cannot append to {}: {e}", recorder.log.path().display());
        eprintln!("{message}");
        return reply(StatusCode::BAD_GATEWAY, message);
    }
    let (answer, body) = recorder.upstream.forward(&parts, body).await;
    // `--stack NAME`: the CLI takes its tables and function from the stack's outputs; later calls on them are traced
    // to the template's resources through the outputs' names.
    if answer.status.is_success() && calls.iter().any(|c| c.action == "cloudformation:DescribeStacks") {
        let mut sources = recorder.sources.lock().unwrap_or_else(|e| e.into_inner());
        sources.learn_stack_outputs(&String::from_utf8_lossy(&body));
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
    let log = CallLog::new(dir, name);
    let sources = Arc::new(Mutex::new(Sources::of_env(effective)));
    let mut routed: Vec<(String, String)> = env.iter().filter(|(name, _)| !is_endpoint_var(name)).cloned().collect();
    let mut proxies = Vec::new();
    for (name, upstream) in effective.iter().filter(|(name, _)| is_endpoint_var(name)) {
        let recorder = Arc::new(Recorder {
            service: Service::of_endpoint_var(name),
            upstream: Upstream::new(upstream),
            log: log.clone(),
            sources: sources.clone(),
        });
        let server = serve(move |parts, body| record_and_forward(recorder.clone(), parts, body)).await;
        routed.push((name.clone(), server.url()));
        proxies.push(server);
    }
    (routed, Recording { _proxies: proxies })
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
            .expect("the recording proxies' runtime")
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
    let (routed, recording) =
        std::thread::scope(|scope| scope.spawn(start).join().expect("starting the recording proxies panicked"));
    (routed.into_iter().collect(), Some(recording))
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_config::{BehaviorVersion, Region, SdkConfig};
    use aws_credential_types::Credentials;
    use aws_credential_types::provider::SharedCredentialsProvider;
    use iam_check::identify::Call;
    use iam_check::record::{CLI_READONLY, stack_outputs};
    use tokio::sync::mpsc;

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

    fn call(action: &str) -> Call {
        Call::action(action)
    }

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
        let (parts, body) = reached.try_recv().expect("the request did not reach upstream");
        assert_eq!(parts.headers.get("x-amz-target").and_then(|v| v.to_str().ok()), Some("DynamoDB_20120810.GetItem"));
        assert!(String::from_utf8_lossy(&body).contains("push-7"));

        let sqs = aws_sdk_sqs::config::Builder::from(&config).endpoint_url(var("AWS_ENDPOINT_URL_SQS"));
        let sqs = aws_sdk_sqs::Client::from_conf(sqs.build());
        let _ = sqs.send_message().queue_url("http://127.0.0.1:15000/123456789012/q-7").message_body("x").send().await;

        let text = std::fs::read_to_string(dir.join("shadow-push.jsonl")).expect("reading the recorded calls");
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

        let text =
            std::fs::read_to_string(dir.join(format!("{CLI_READONLY}.jsonl"))).expect("reading the recorded calls");
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
}
