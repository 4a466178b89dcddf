//! `shadow-fleet push start` answers at once and never misleads: the built CLI against a local Lambda service of
//! each test's own (shadow-push on the test's table and queue, the queue drained into it, an on-failure destination
//! standing for PushDlq), so that every invocation it received, and how, can be counted.
//!
//! A request shadow-push refuses is an error in the CLI within seconds, with the function's reason, and is neither
//! retried nor sent to the on-failure queue; a pushId reused with another request is refused before anything is
//! sent; with `--stack` the request is checked against the deployed quota; a start that succeeds has its first
//! segment run from the queue; a throttled start says so. The scheduled path keeps one push per run.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::InvocationType;
use devstack::cli::{Run, create_stack, run_with, write_request};
use devstack::lambda::binary;
use devstack::local_lambda::{Deployment, FunctionSpec, LocalLambdaService, QueueMapping};
use devstack::push::{PushFixture, push};
use devstack::service::Timing;
use devstack::unique;
use serde_json::{Value, json};

/// The tests' clock ([`Timing::SCALED`]) with 10-second invocations (PUSH_HANDOFF_GRACE_MS is 3 s), a visibility
/// timeout of 3 x that, and the async retries after 1 s and 2 s. No schedule runs here.
const TIMING: Timing = Timing {
    timeout: Duration::from_secs(10),
    retries: [Duration::from_secs(1), Duration::from_secs(2)],
    visibility: Duration::from_secs(30),
    schedule_every: Duration::from_secs(3600),
    ..Timing::SCALED
};

const ANY_PORT: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

/// The deployed quota of these tests' shadow-push (its PUSH_MAX_TPS).
const QUOTA: u32 = 50;

/// A start refused must be an error this soon (a loaded machine included); the old asynchronous start took 60 s.
const WITHIN: Duration = Duration::from_secs(15);

/// A local Lambda service of the test's own around shadow-push, with an on-failure queue, and the CLI's settings.
struct Setup {
    fx: PushFixture,
    service: LocalLambdaService,
    dlq_url: String,
    /// The CLI's environment: the stack's, pointed at this service, this table; no PUSH_MAX_TPS (only the function
    /// knows its quota).
    env: BTreeMap<String, String>,
}

impl Setup {
    async fn new() -> Self {
        Self::with(TIMING, &[]).await
    }

    /// With the function's invocations on `timing`, and `extra` settings (or endpoints) in its environment.
    async fn with(timing: Timing, extra: &[(&str, &str)]) -> Self {
        let fx = PushFixture::new().await;
        let dlq_url = fx
            .stack
            .sqs()
            .create_queue()
            .queue_name(unique("push-dlq"))
            .send()
            .await
            .expect("create_queue")
            .queue_url
            .unwrap_or_default();
        let mut env: Vec<(String, String)> = fx.stack.env.clone().into_iter().collect();
        env.extend(
            [
                ("PUSH_TABLE", fx.table.as_str()),
                ("PUSH_QUEUE_URL", fx.queue_url.as_str()),
                ("PUSH_MAX_TPS", &QUOTA.to_string()),
                ("PUSH_CONCURRENCY", "8"),
                ("PUSH_HANDOFF_GRACE_MS", "3000"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned())),
        );
        env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        let spec = FunctionSpec {
            name: "shadow-push".into(),
            binary: binary("shadow-push"),
            env,
            timing,
            concurrency: 2,
            on_failure: Some(dlq_url.clone()),
        };
        let deployment = Deployment {
            functions: vec![spec],
            queues: vec![QueueMapping { function: "shadow-push".into(), queue_url: fx.queue_url.clone() }],
            schedules: Vec::new(),
            sqs: fx.stack.sqs(),
            region: fx.stack.var("AWS_REGION"),
        };
        let service = LocalLambdaService::start(ANY_PORT, deployment).await.expect("starting the local Lambda service");
        let mut env = fx.stack.env.clone();
        env.remove("RUST_LOG");
        env.remove("PUSH_MAX_TPS");
        env.insert("AWS_ENDPOINT_URL_LAMBDA".into(), service.url.clone());
        env.insert("PUSH_FUNCTION_NAME".into(), "shadow-push".into());
        env.insert("PUSH_TABLE".into(), fx.table.clone());
        Self { fx, service, dlq_url, env }
    }

    fn cli(&self, args: &[&str]) -> Run {
        run_with(&self.env, args)
    }

    fn start(&self, request: &Value, extra: &[&str]) -> Run {
        let path = write_request(request).to_string_lossy().into_owned();
        let mut args = vec!["push", "start", path.as_str()];
        args.extend_from_slice(extra);
        self.cli(&args)
    }

    /// Each invocation's source (`sync`, `async`, `async retry`, `queue`) with its outcome.
    fn invocations(&self) -> Vec<(String, bool)> {
        let function = self.service.function("shadow-push");
        function
            .map(|f| f.invocations())
            .unwrap_or_default()
            .iter()
            .map(|i| (i.source.to_owned(), i.answer.is_ok()))
            .collect()
    }

    fn count(&self, source: &str) -> usize {
        self.invocations().iter().filter(|(s, _)| s == source).count()
    }

    /// The bodies of the messages on the on-failure queue (received and left there).
    async fn dead_letters(&self) -> Vec<Value> {
        let received = self
            .fx
            .stack
            .sqs()
            .receive_message()
            .queue_url(&self.dlq_url)
            .max_number_of_messages(10)
            .visibility_timeout(0)
            .send()
            .await
            .expect("receive_message");
        received
            .messages
            .unwrap_or_default()
            .iter()
            .map(|m| serde_json::from_str(m.body().unwrap_or_default()).unwrap_or(Value::Null))
            .collect()
    }

    /// How long Lambda's two async retries take, with a margin.
    fn retries_over() -> Duration {
        TIMING.retries.iter().sum::<Duration>() + Duration::from_secs(3)
    }
}

/// A thing group that does not exist: the CLI says so within seconds, exit 1; the synchronous start was invoked
/// once, not retried, and left nothing on the on-failure queue and no record. The same request invoked
/// asynchronously (as before) is retried twice and ends on that queue: the queue is watched, not assumed empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_thing_group_is_refused_at_once_with_the_reason_and_not_retried() {
    let setup = Setup::new().await;
    let group = setup.fx.group("prod");
    let push_id = unique("nogroup");
    let request = json!({"pushId": push_id, "desired": {"mode": 1}, "targets": {"thingGroup": group}});

    let started = setup.start(&request, &[]);
    assert_eq!(started.code, 1, "stdout: {}\nstderr: {}", started.stdout, started.stderr);
    assert!(started.took < WITHIN, "took {:?}", started.took);
    assert!(
        started.stderr.contains(&format!("thing group {group} does not exist"))
            && started.stderr.contains("nothing was started"),
        "{}",
        started.stderr
    );
    assert!(!started.stderr.contains("may have refused"), "{}", started.stderr);
    assert_eq!(setup.fx.record(&push_id).await, None, "a refused push left a record");
    assert_eq!(setup.invocations(), [("sync".to_owned(), false)], "one synchronous invocation, no retry");

    // The asynchronous way: retried twice, then the on-failure queue, with the same reason.
    let other = json!({"pushId": unique("nogroup-async"), "desired": {"mode": 1}, "targets": {"thingGroup": group}});
    let lambda = setup.fx.stack.lambda_at(&setup.service.url);
    lambda
        .invoke()
        .function_name("shadow-push")
        .invocation_type(InvocationType::Event)
        .payload(Blob::new(other.to_string()))
        .send()
        .await
        .expect("Invoke Event");
    tokio::time::sleep(Setup::retries_over()).await;
    assert_eq!((setup.count("sync"), setup.count("async"), setup.count("async retry")), (1, 1, 2));
    let letters = setup.dead_letters().await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0]["requestPayload"]["pushId"], other["pushId"], "{letters:?}");
    let reason = letters[0]["responsePayload"]["errorMessage"].as_str().unwrap_or_default();
    assert!(reason.contains("does not exist"), "{letters:?}");
    assert_eq!(letters[0]["responsePayload"]["errorType"], "Final.UnknownTargets", "{letters:?}");
}

/// A rate over the function's quota, which the CLI does not know (no PUSH_MAX_TPS, no --stack): shadow-push refuses
/// it in the synchronous start, and the CLI says why within seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_over_the_quota_is_refused_at_once_by_the_function() {
    let setup = Setup::new().await;
    setup.fx.create_things(0..1, "quota").await;
    let push_id = unique("quota");
    let request = json!({"pushId": push_id, "desired": {"mode": 1}, "targets": {"things": [setup.fx.thing(0)]},
                         "maxRequestsPerSecond": QUOTA + 10});
    let started = setup.start(&request, &[]);
    assert_eq!(started.code, 1, "stdout: {}\nstderr: {}", started.stdout, started.stderr);
    assert!(started.took < WITHIN, "took {:?}", started.took);
    let said = format!("`maxRequestsPerSecond` is {}, above the account quota PUSH_MAX_TPS={QUOTA}", QUOTA + 10);
    assert!(started.stderr.contains(&said) && started.stderr.contains("refused"), "{}", started.stderr);
    assert_eq!(setup.fx.record(&push_id).await, None);
    assert_eq!(setup.invocations(), [("sync".to_owned(), false)]);
    tokio::time::sleep(Setup::retries_over()).await;
    assert_eq!(setup.dead_letters().await, Vec::<Value>::new());
}

/// A start that succeeds answers once the push is recorded; its first segment runs from the queue. The pushId
/// again with another request is refused by the CLI before it sends anything (no invocation; the record as it
/// was); the same request again is the same push (nothing pushed twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_id_reused_with_another_request_is_refused_before_anything_is_sent() {
    let setup = Setup::new().await;
    setup.fx.create_things(0..2, "reuse").await;
    let things = [setup.fx.thing(0), setup.fx.thing(1)];
    let push_id = unique("reuse");
    let request =
        json!({"pushId": push_id, "desired": {"mode": 1}, "targets": {"things": things}, "skipUnchanged": false});

    let started = setup.start(&request, &["--wait", "--interval", "0.2", "--output", "json"]);
    assert_eq!(started.code, 0, "stdout: {}\nstderr: {}", started.stdout, started.stderr);
    let first: Value = started.stdout.lines().next().and_then(|l| serde_json::from_str(l).ok()).unwrap_or_default();
    assert_eq!((first["pushId"].as_str(), first["existing"].as_bool()), (Some(push_id.as_str()), Some(false)));
    let record = setup.fx.record(&push_id).await.unwrap_or_default();
    assert_eq!((record["complete"].clone(), record["updated"].clone()), (json!(true), json!(2)), "{record}");
    // The start answered; the first segment ran from the queue, not in the invocation the CLI waited on.
    assert_eq!(setup.count("sync"), 1, "{:?}", setup.invocations());
    assert!(setup.invocations().contains(&("queue".to_owned(), true)), "{:?}", setup.invocations());
    let invoked = setup.invocations().len();

    let mut other = request.clone();
    other["desired"] = json!({"mode": 2});
    let refused = setup.start(&other, &[]);
    assert_eq!(refused.code, 1, "stdout: {}\nstderr: {}", refused.stdout, refused.stderr);
    assert!(
        refused.stderr.contains(&format!("pushId {push_id} names a push made with another request"))
            && refused.stderr.contains("nothing was sent"),
        "{}",
        refused.stderr
    );
    assert_eq!(setup.invocations().len(), invoked, "the CLI invoked shadow-push: {:?}", setup.invocations());
    assert_eq!(setup.fx.record(&push_id).await.unwrap_or_default(), record, "the record changed");

    // The same request again: reported, not pushed again.
    let again = setup.start(&request, &[]);
    assert_eq!(again.code, 0, "stdout: {}\nstderr: {}", again.stdout, again.stderr);
    assert!(again.stderr.contains("started before with this same request"), "{}", again.stderr);
    assert_eq!(again.stdout.trim(), push_id);
    for thing in &things {
        let doc = setup.fx.shadow(thing, None).await.unwrap_or_default();
        assert_eq!(doc["version"], 1, "{thing} pushed twice: {doc}");
    }
    let after = setup.fx.record(&push_id).await.unwrap_or_default();
    assert_eq!((after["segment"].clone(), after["updated"].clone()), (record["segment"].clone(), json!(2)));
}

/// With `--stack`, the request is checked against the deployed quota (the stack's PushMaxTps parameter, which the
/// template passes to shadow-push as PUSH_MAX_TPS) before anything is sent; a request within it starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_stack_a_rate_over_the_deployed_quota_is_refused_before_sending() {
    let setup = Setup::new().await;
    setup.fx.create_things(0..1, "stack").await;
    let name = unique("quota-stack");
    let output = |value: &str| json!({"Value": value});
    create_stack(
        &setup.fx.stack,
        &name,
        &json!({"Parameters": {"PushMaxTps": {"Type": "Number", "Default": 400}},
                "Resources": {"Queue": {"Type": "AWS::SQS::Queue"}},
                "Outputs": {"HistoryTableName": output("unused-history"),
                            "PushTableName": output(&setup.fx.table),
                            "ShadowPushFunctionArn": output("shadow-push")}}),
        &[("PushMaxTps", &QUOTA.to_string())],
    );
    let mut env = setup.env.clone();
    env.remove("PUSH_TABLE");
    env.remove("PUSH_FUNCTION_NAME");
    // moto serves CloudFormation on its one endpoint.
    env.insert("AWS_ENDPOINT_URL_CLOUDFORMATION".into(), setup.fx.stack.var("AWS_ENDPOINT_URL_IOT"));
    let request = |rate: u32| {
        json!({"pushId": unique("stack"), "desired": {"mode": 1}, "targets": {"things": [setup.fx.thing(0)]},
               "maxRequestsPerSecond": rate})
    };

    let over = request(QUOTA + 1);
    let path = write_request(&over).to_string_lossy().into_owned();
    let refused = run_with(&env, &["--stack", &name, "push", "start", &path]);
    assert_eq!(refused.code, 1, "stdout: {}\nstderr: {}", refused.stdout, refused.stderr);
    assert!(
        refused.stderr.contains("nothing was sent")
            && refused.stderr.contains("maxRequestsPerSecond")
            && refused.stderr.contains(&format!("parameter PushMaxTps = {QUOTA}")),
        "{}",
        refused.stderr
    );
    assert_eq!(setup.invocations(), Vec::<(String, bool)>::new(), "the CLI invoked shadow-push");

    let within = request(QUOTA);
    let path = write_request(&within).to_string_lossy().into_owned();
    let started = run_with(&env, &["--stack", &name, "push", "start", &path, "--wait", "--interval", "0.2"]);
    assert_eq!(started.code, 0, "stdout: {}\nstderr: {}", started.stdout, started.stderr);
    let record = setup.fx.record(within["pushId"].as_str().unwrap_or_default()).await.unwrap_or_default();
    assert_eq!((record["complete"].clone(), record["updated"].clone()), (json!(true), json!(1)), "{record}");
}

/// Two deliveries of one scheduled run at once (Scheduler's at-least-once delivery, or its retry racing Lambda's):
/// one push, each thing updated once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_deliveries_of_one_scheduled_run_at_once_are_one_push() {
    let fx = PushFixture::new().await;
    fx.create_things(0..4, "sched").await;
    let (one, two) = (fx.function(&[]).await, fx.function(&[]).await);
    let things: Vec<String> = (0..4).map(|i| fx.thing(i)).collect();
    let run = json!({"scheduledRun": "2026-12-01T03:00:00Z", "request": {"pushId": fx.group("nightly"),
                     "desired": {"mode": 7}, "targets": {"things": things}, "skipUnchanged": false}});
    let (a, b) = tokio::join!(push(&one, &run), push(&two, &run));
    let (a, b) =
        (a.expect("invoking shadow-push (the first delivery)"), b.expect("invoking shadow-push (the second delivery)"));
    let push_id = format!("{}-2026-12-01T03:00:00Z", fx.group("nightly"));
    assert_eq!((a["pushId"].as_str(), b["pushId"].as_str()), (Some(push_id.as_str()), Some(push_id.as_str())));
    let record = fx.record(&push_id).await.unwrap_or_default();
    assert_eq!((record["complete"].clone(), record["updated"].clone()), (json!(true), json!(4)), "{record}");
    for thing in &things {
        let doc = fx.shadow(thing, None).await.unwrap_or_default();
        assert_eq!(doc["version"], 1, "{thing} pushed twice: {doc}");
    }
}

/// Every reserved slot of shadow-push busy: Lambda answers the synchronous start with 429 (a proxy in front of the
/// local Lambda). The CLI says so, exit 1, and nothing was started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_while_shadow_push_is_throttled_says_so_and_starts_nothing() {
    use devstack::fault_proxy::{FaultProxy, Faults, Service};
    let setup = Setup::new().await;
    setup.fx.create_things(0..1, "busy").await;
    let busy = FaultProxy::start(&setup.service.url, Service::Lambda, Faults::throttling(1.0)).await;
    let mut env = setup.env.clone();
    env.insert("AWS_ENDPOINT_URL_LAMBDA".into(), busy.url.clone());
    env.insert("AWS_MAX_ATTEMPTS".into(), "2".into());
    let push_id = unique("busy");
    let request = json!({"pushId": push_id, "desired": {"mode": 1}, "targets": {"things": [setup.fx.thing(0)]}});
    let path = write_request(&request).to_string_lossy().into_owned();
    let started = run_with(&env, &["push", "start", &path]);
    assert_eq!(started.code, 1, "stdout: {}\nstderr: {}", started.stdout, started.stderr);
    assert!(busy.counts.throttled() >= 1, "the invoke was never throttled");
    assert!(
        started.stderr.contains(&format!("push {push_id} was not started"))
            && started.stderr.contains("concurrency limit"),
        "{}",
        started.stderr
    );
    assert_eq!(setup.invocations(), Vec::<(String, bool)>::new());
    assert_eq!(setup.fx.record(&push_id).await, None);
}

/// A registry that answers every call with ThrottlingException (a proxy in front of moto's IoT) while shadow-push's
/// invocation could wait a minute: the synchronous start answers within PUSH_ANSWER_MS (3 s here) that it is still
/// waiting for the registry, exit 1, and nothing was started; the CLI does not wait for the function's timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_held_by_registry_throttling_answers_within_its_bound_and_says_what_it_waits_for() {
    use devstack::fault_proxy::{FaultProxy, Faults, Service};
    let iot = devstack::stack::Stack::get().var("AWS_ENDPOINT_URL_IOT");
    // The registry's restJson1 throttling answer is the data plane's: HTTP 429, ThrottlingException.
    let registry = FaultProxy::start(&iot, Service::IotDataPlane, Faults::throttling(1.0)).await;
    let long = Timing { timeout: Duration::from_secs(60), visibility: Duration::from_secs(180), ..TIMING };
    let setup = Setup::with(long, &[("AWS_ENDPOINT_URL_IOT", registry.url.as_str()), ("PUSH_ANSWER_MS", "3000")]).await;
    // The group need not exist: its check is what the registry holds back.
    let group = setup.fx.group("prod");
    let push_id = unique("held");
    let request = json!({"pushId": push_id, "desired": {"mode": 1}, "targets": {"thingGroup": group}});

    let started = setup.start(&request, &[]);
    assert_eq!(started.code, 1, "stdout: {}\nstderr: {}", started.stdout, started.stderr);
    assert!(started.took < WITHIN, "took {:?}: {}", started.took, started.stderr);
    assert!(registry.counts.throttled() >= 2, "the registry was asked {} times", registry.counts.throttled());
    assert!(
        started.stderr.contains("no answer within 3 s: still waiting for the registry")
            && started.stderr.contains("ThrottlingException")
            && started.stderr.contains("run the same command again"),
        "{}",
        started.stderr
    );
    assert_eq!(setup.fx.record(&push_id).await, None, "a start not answered left a record");
    assert_eq!(setup.invocations(), [("sync".to_owned(), false)], "one synchronous invocation, no retry");
}
