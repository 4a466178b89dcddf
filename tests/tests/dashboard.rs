//! The dashboard (and the alarms) in `template.yaml` name only metrics that exist: the functions' own metrics as
//! the functions emit them (the catalog in `shared/runtime/src/metrics.rs`, which the emitters use, and the EMF
//! lines the real binaries print), and AWS/Lambda and AWS/SQS metrics of resources the template declares. And the
//! functions' log lines carry their invocation's request id.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use devstack::crash::{CrashPoint, CrashProxy, Step};
use devstack::history::{HistoryFixture, update};
use devstack::lambda::LocalLambda;
use devstack::push::PushFixture;
use devstack::service::{LambdaService, Timing};
use devstack::stack::repo_root;
use devstack::unique;
use serde_json::{Value as Json, json};
use serde_yaml::Value;
use shadow_runtime::metrics::{self, Emitter, Metric, Unit};

// ---------------------------------------------------------------- the template, with its intrinsics resolved

fn template() -> Value {
    let path = repo_root().join("template.yaml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::from_str(&text).expect("parsing template.yaml")
}

fn tagged<'a>(value: &'a Value, tag: &str) -> Option<&'a Value> {
    match value {
        Value::Tagged(t) if t.tag == tag => Some(&t.value),
        _ => None,
    }
}

/// A reference in a resolved string: `{{Ref:X}}` or `{{GetAtt:X.Attr}}`, so the checks can see what it names.
fn marker(kind: &str, name: &str) -> String {
    format!("{{{{{kind}:{name}}}}}")
}

/// Conditions fixed to a value each: the body is checked under every combination of those it uses.
type Conditions = BTreeMap<String, bool>;

/// `value` (a literal, `!Sub`, `!If`, `!Ref`, `!GetAtt`) as the string CloudFormation would make of it, references
/// left as markers.
fn resolve(value: &Value, conditions: &Conditions, vars: &BTreeMap<String, String>) -> String {
    if let Some(s) = value.as_str().filter(|_| !matches!(value, Value::Tagged(_))) {
        return s.to_owned();
    }
    if let Some(sub) = tagged(value, "!Sub") {
        let (text, own) = match sub {
            Value::Sequence(parts) => {
                let text = parts.first().and_then(Value::as_str).unwrap_or_else(|| panic!("!Sub: {sub:?}"));
                let map = parts.get(1).and_then(Value::as_mapping).unwrap_or_else(|| panic!("!Sub vars: {sub:?}"));
                let own: BTreeMap<String, String> = map
                    .iter()
                    .map(|(k, v)| (k.as_str().unwrap_or_default().to_owned(), resolve(v, conditions, vars)))
                    .collect();
                (text, own)
            }
            other => (other.as_str().unwrap_or_else(|| panic!("!Sub: {other:?}")), BTreeMap::new()),
        };
        return substitute(text, &own);
    }
    if let Some(branches) = tagged(value, "!If") {
        let branches = branches.as_sequence().unwrap_or_else(|| panic!("!If: {value:?}"));
        let name = branches[0].as_str().unwrap_or_default();
        let holds = *conditions.get(name).unwrap_or_else(|| panic!("condition {name} not fixed"));
        return resolve(&branches[if holds { 1 } else { 2 }], conditions, vars);
    }
    if let Some(name) = tagged(value, "!Ref").and_then(Value::as_str) {
        return marker("Ref", name);
    }
    if let Some(name) = tagged(value, "!GetAtt").and_then(Value::as_str) {
        return marker("GetAtt", name);
    }
    panic!("cannot resolve {value:?} (vars {vars:?})")
}

/// `${Name}` in `text`: a variable of the `!Sub`, else `${X.Attr}` a `!GetAtt`, else a `!Ref`.
fn substitute(text: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').unwrap_or_else(|| panic!("unclosed ${{ in {text}")) + start;
        let name = &rest[start + 2..end];
        out.push_str(&match vars.get(name) {
            Some(value) => value.clone(),
            None if name.contains('.') => marker("GetAtt", name),
            None => marker("Ref", name),
        });
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

/// The condition names `value` uses in `!If`s.
fn conditions_used(value: &Value, found: &mut BTreeSet<String>) {
    match value {
        Value::Tagged(t) => {
            if t.tag == "!If"
                && let Some(name) = t.value.as_sequence().and_then(|b| b.first()).and_then(Value::as_str)
            {
                found.insert(name.to_owned());
            }
            conditions_used(&t.value, found);
        }
        Value::Sequence(items) => items.iter().for_each(|v| conditions_used(v, found)),
        Value::Mapping(map) => map.values().for_each(|v| conditions_used(v, found)),
        _ => {}
    }
}

/// Every assignment of `names`.
fn assignments(names: &BTreeSet<String>) -> Vec<Conditions> {
    let names: Vec<&String> = names.iter().collect();
    (0..1u32 << names.len())
        .map(|bits| names.iter().enumerate().map(|(i, n)| ((*n).clone(), bits & (1 << i) != 0)).collect())
        .collect()
}

/// Whether `resource` exists under `conditions` (a resource without `Condition` always does). Only conditions
/// that are plain `!Equals` on a parameter's default or fixed ones are needed here.
fn exists(template: &Value, resource: &str, conditions: &Conditions) -> bool {
    let Some(condition) = template["Resources"][resource]["Condition"].as_str() else { return true };
    *conditions
        .get(condition)
        .unwrap_or_else(|| panic!("{resource} has Condition {condition}, which the dashboard does not choose between"))
}

fn resource_type<'a>(template: &'a Value, resource: &str) -> Option<&'a str> {
    template["Resources"][resource]["Type"].as_str()
}

fn resources_of_type<'a>(template: &'a Value, kind: &str) -> Vec<(String, &'a Value)> {
    template["Resources"]
        .as_mapping()
        .map(|m| {
            m.iter()
                .filter(|(_, r)| r["Type"].as_str() == Some(kind))
                .map(|(id, r)| (id.as_str().unwrap_or_default().to_owned(), r))
                .collect()
        })
        .unwrap_or_default()
}

/// The function whose binary the template resource `resource` deploys (`CodeUri: functions/<binary>`).
fn emitter_of(template: &Value, resource: &str) -> Option<Emitter> {
    let code = template["Resources"][resource]["Properties"]["CodeUri"].as_str()?;
    let binary = code.trim_end_matches('/').rsplit('/').next()?;
    Emitter::ALL.into_iter().find(|e| e.binary() == binary)
}

// ---------------------------------------------------------------- what a graph or an alarm names

#[derive(Debug, Clone)]
struct Named {
    namespace: String,
    name: String,
    dimensions: Vec<(String, String)>,
    stat: Option<String>,
    /// Where it is, for the messages.
    at: String,
}

/// The metrics of a dashboard body's widgets (CloudWatch's `[namespace, name, dim, value, ..., {options}]` rows;
/// a `"."` repeats the row above's entry).
fn dashboard_metrics(body: &Json) -> Vec<Named> {
    let mut found = Vec::new();
    let widgets = body["widgets"].as_array().unwrap_or_else(|| panic!("the dashboard has no widgets: {body}"));
    for (w, widget) in widgets.iter().enumerate() {
        let props = &widget["properties"];
        if widget["type"] != "metric" {
            continue;
        }
        let title = props["title"].as_str().unwrap_or("(untitled)");
        let rows = props["metrics"].as_array().unwrap_or_else(|| panic!("widget {w} {title}: no metrics"));
        let mut previous: Vec<String> = Vec::new();
        for row in rows {
            let row = row.as_array().unwrap_or_else(|| panic!("widget {title}: a metric row is not a list: {row}"));
            let options = row.last().filter(|o| o.is_object());
            if options.is_some_and(|o| o.get("expression").is_some()) {
                continue; // metric math names no metric of its own
            }
            let mut entries: Vec<String> = Vec::new();
            for (i, entry) in row.iter().take_while(|e| e.is_string()).enumerate() {
                let text = entry.as_str().unwrap_or_default();
                entries.push(if text == "." {
                    previous.get(i).cloned().unwrap_or_else(|| panic!("widget {title}: '.' with nothing above"))
                } else {
                    text.to_owned()
                });
            }
            assert!(entries.len() >= 2 && entries.len().is_multiple_of(2), "widget {title}: malformed row {row:?}");
            previous = entries.clone();
            let stat = options.and_then(|o| o["stat"].as_str()).or_else(|| props["stat"].as_str()).map(str::to_owned);
            found.push(Named {
                namespace: entries[0].clone(),
                name: entries[1].clone(),
                dimensions: entries[2..].chunks(2).map(|p| (p[0].clone(), p[1].clone())).collect(),
                stat,
                at: format!("dashboard widget \"{title}\""),
            });
            assert_eq!(props["region"].as_str(), Some(marker("Ref", "AWS::Region").as_str()), "widget {title}");
        }
    }
    found
}

/// The metric of every `AWS::CloudWatch::Alarm`.
fn alarm_metrics(template: &Value, conditions: &Conditions) -> Vec<Named> {
    resources_of_type(template, "AWS::CloudWatch::Alarm")
        .into_iter()
        .filter(|(id, _)| exists(template, id, conditions))
        .map(|(id, alarm)| {
            let props = &alarm["Properties"];
            let dimensions = props["Dimensions"]
                .as_sequence()
                .map(|d| {
                    d.iter()
                        .map(|d| {
                            let name = d["Name"].as_str().unwrap_or_default().to_owned();
                            (name, resolve(&d["Value"], conditions, &BTreeMap::new()))
                        })
                        .collect()
                })
                .unwrap_or_default();
            Named {
                namespace: props["Namespace"].as_str().unwrap_or_else(|| panic!("{id}: no Namespace")).to_owned(),
                name: props["MetricName"].as_str().unwrap_or_else(|| panic!("{id}: no MetricName")).to_owned(),
                dimensions,
                stat: props["Statistic"].as_str().map(str::to_owned),
                at: format!("alarm {id}"),
            }
        })
        .collect()
}

/// AWS/Lambda's per-function metrics (Lambda developer guide, "Types of metrics for Lambda functions").
const LAMBDA_METRICS: [&str; 9] = [
    "Invocations",
    "Errors",
    "Throttles",
    "Duration",
    "ConcurrentExecutions",
    "DeadLetterErrors",
    "DestinationDeliveryFailures",
    "AsyncEventAge",
    "AsyncEventsDropped",
];

/// AWS/SQS's per-queue metrics (SQS developer guide, "Available CloudWatch metrics for Amazon SQS").
const SQS_METRICS: [&str; 8] = [
    "ApproximateAgeOfOldestMessage",
    "ApproximateNumberOfMessagesDelayed",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesVisible",
    "NumberOfEmptyReceives",
    "NumberOfMessagesDeleted",
    "NumberOfMessagesReceived",
    "NumberOfMessagesSent",
];

/// The statistics that mean something for a metric of `unit`: counts per invocation add up; a duration per
/// invocation does not.
fn stat_fits(unit: Unit, stat: &str) -> bool {
    match unit {
        Unit::Count => stat == "Sum",
        Unit::Milliseconds => {
            ["Maximum", "Average", "Minimum"].contains(&stat)
                || stat.strip_prefix('p').is_some_and(|p| p.parse::<f64>().is_ok_and(|p| p > 0.0 && p <= 100.0))
        }
    }
}

/// The dimension `dimension` of `named` when it is its only one, as the resource its value references.
fn only_dimension<'a>(named: &'a Named, dimension: &str, kind: &str) -> &'a str {
    let [(name, value)] = named.dimensions.as_slice() else {
        panic!(
            "{}: {}/{} must have exactly the dimension {dimension}: {:?}",
            named.at, named.namespace, named.name, named.dimensions
        )
    };
    assert_eq!(name, dimension, "{}: {}/{}: dimension {name}, not {dimension}", named.at, named.namespace, named.name);
    let prefix = format!("{{{{{kind}:");
    value.strip_prefix(&prefix).and_then(|v| v.strip_suffix("}}")).unwrap_or_else(|| {
        panic!("{}: {}/{} {dimension} = {value:?}: not a {kind} of a resource", named.at, named.namespace, named.name)
    })
}

/// Checks that `named` exists: a catalog metric by the function that emits it, or an AWS metric of a resource that
/// exists under `conditions`. Returns what it is, for the coverage checks.
fn check(template: &Value, named: &Named, conditions: &Conditions) -> Shown {
    let what = format!("{}: {}/{}", named.at, named.namespace, named.name);
    match named.namespace.as_str() {
        metrics::NAMESPACE => {
            let function = only_dimension(named, metrics::DIMENSION, "Ref");
            assert_eq!(resource_type(template, function), Some("AWS::Serverless::Function"), "{what}: {function}");
            let emitter =
                emitter_of(template, function).unwrap_or_else(|| panic!("{what}: {function} deploys no emitter"));
            let metric =
                metrics::catalog().find(|m| m.emitter() == emitter && m.name() == named.name).unwrap_or_else(|| {
                    let emitted: Vec<&str> =
                        metrics::catalog().filter(|m| m.emitter() == emitter).map(Metric::name).collect();
                    panic!("{what}: {} emits no metric {:?} (it emits {emitted:?})", emitter.binary(), named.name)
                });
            let stat = named.stat.as_deref().unwrap_or_else(|| panic!("{what}: no statistic"));
            assert!(stat_fits(metric.unit(), stat), "{what}: statistic {stat} of a {:?} metric", metric.unit());
            Shown::Own(metric)
        }
        "AWS/Lambda" => {
            let function = only_dimension(named, "FunctionName", "Ref");
            assert_eq!(resource_type(template, function), Some("AWS::Serverless::Function"), "{what}: {function}");
            assert!(exists(template, function, conditions), "{what}: {function} does not exist here");
            assert!(LAMBDA_METRICS.contains(&named.name.as_str()), "{what}: not a Lambda metric");
            Shown::Lambda(function.to_owned(), named.name.clone())
        }
        "AWS/SQS" => {
            let attribute = only_dimension(named, "QueueName", "GetAtt");
            let queue = attribute
                .strip_suffix(".QueueName")
                .unwrap_or_else(|| panic!("{what}: QueueName is {attribute}, not a queue's QueueName"));
            assert_eq!(resource_type(template, queue), Some("AWS::SQS::Queue"), "{what}: {queue}");
            assert!(exists(template, queue, conditions), "{what}: {queue} does not exist with {conditions:?}");
            assert!(SQS_METRICS.contains(&named.name.as_str()), "{what}: not an SQS metric");
            Shown::Queue(queue.to_owned(), named.name.clone())
        }
        other => panic!(
            "{what}: namespace {other:?} is neither the functions' ({}) nor AWS/Lambda, AWS/SQS",
            metrics::NAMESPACE
        ),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Shown {
    Own(Metric),
    Lambda(String, String),
    Queue(String, String),
}

/// Every queue the template uses as a dead-letter queue: a redrive target, an on-failure destination, a rule's
/// error action, a schedule's dead-letter queue.
fn dead_letter_queues(template: &Value, conditions: &Conditions) -> BTreeSet<String> {
    fn walk(value: &Value, inside: bool, template: &Value, found: &mut BTreeSet<String>) {
        match value {
            Value::Mapping(map) => {
                for (key, v) in map {
                    let key = key.as_str().unwrap_or_default();
                    let dead = matches!(key, "deadLetterTargetArn" | "OnFailure" | "ErrorAction" | "DeadLetterConfig");
                    walk(v, inside || dead, template, found);
                }
            }
            Value::Sequence(items) => items.iter().for_each(|v| walk(v, inside, template, found)),
            Value::Tagged(t) => {
                let named = if t.tag == "!Ref" {
                    t.value.as_str()
                } else if t.tag == "!GetAtt" {
                    t.value.as_str().and_then(|s| s.split('.').next())
                } else {
                    None
                };
                if inside
                    && let Some(name) = named
                    && resource_type(template, name) == Some("AWS::SQS::Queue")
                {
                    found.insert(name.to_owned());
                }
                walk(&t.value, inside, template, found);
            }
            _ => {}
        }
    }
    let mut found = BTreeSet::new();
    walk(&template["Resources"], false, template, &mut found);
    found.retain(|q| exists(template, q, conditions));
    found
}

/// The dashboard's body under each assignment of the conditions it uses, with the assignment.
fn dashboard_bodies(template: &Value) -> Vec<(Conditions, Json)> {
    let dashboards = resources_of_type(template, "AWS::CloudWatch::Dashboard");
    let [(id, dashboard)] = dashboards.as_slice() else {
        panic!("template.yaml declares {} dashboards, not one", dashboards.len())
    };
    let props = &dashboard["Properties"];
    let name = resolve(&props["DashboardName"], &Conditions::new(), &BTreeMap::new());
    assert!(name.contains(&marker("Ref", "AWS::StackName")), "{id}: one dashboard per stack: its name is {name}");
    let mut used = BTreeSet::new();
    conditions_used(&props["DashboardBody"], &mut used);
    assignments(&used)
        .into_iter()
        .map(|conditions| {
            let text = resolve(&props["DashboardBody"], &conditions, &BTreeMap::new());
            let body: Json = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{id}: the body is not JSON with {conditions:?}: {e}\n{text}"));
            (conditions, body)
        })
        .collect()
}

#[test]
fn the_dashboard_names_only_metrics_that_exist() {
    let template = template();
    for (conditions, body) in dashboard_bodies(&template) {
        for named in dashboard_metrics(&body) {
            check(&template, &named, &conditions);
        }
    }
}

#[test]
fn the_alarms_name_only_metrics_that_exist() {
    let template = template();
    let mut used = BTreeSet::new();
    for (_, alarm) in resources_of_type(&template, "AWS::CloudWatch::Alarm") {
        conditions_used(alarm, &mut used);
        if let Some(c) = alarm["Condition"].as_str() {
            used.insert(c.to_owned());
        }
    }
    for conditions in assignments(&used) {
        let alarms = alarm_metrics(&template, &conditions);
        assert!(alarms.len() >= 5, "only {} alarms found: is the walk still finding them?", alarms.len());
        for named in alarms {
            check(&template, &named, &conditions);
        }
    }
}

#[test]
fn the_dashboard_shows_every_metric_every_dead_letter_queue_and_both_functions() {
    let template = template();
    let functions: Vec<String> =
        resources_of_type(&template, "AWS::Serverless::Function").into_iter().map(|(id, _)| id).collect();
    assert_eq!(functions.len(), 2, "{functions:?}");
    for (conditions, body) in dashboard_bodies(&template) {
        let shown: BTreeSet<Shown> =
            dashboard_metrics(&body).iter().map(|named| check(&template, named, &conditions)).collect();
        for metric in metrics::catalog() {
            assert!(shown.contains(&Shown::Own(metric)), "{metric:?} is not on the dashboard");
        }
        for queue in dead_letter_queues(&template, &conditions) {
            let depth = Shown::Queue(queue.clone(), "ApproximateNumberOfMessagesVisible".into());
            assert!(
                shown.contains(&depth),
                "dead-letter queue {queue}'s depth is not on the dashboard ({conditions:?})"
            );
        }
        for function in &functions {
            for name in ["Errors", "Throttles", "Duration"] {
                let lambda = Shown::Lambda(function.clone(), name.into());
                assert!(shown.contains(&lambda), "{function} {name} is not on the dashboard");
            }
        }
    }
}

/// The dead-letter walk finds what the template declares today, so a check over it can fail.
#[test]
fn every_dead_letter_queue_is_found() {
    let template = template();
    let queued = Conditions::from([("IngestionQueued".to_owned(), true)]);
    let found = dead_letter_queues(&template, &queued);
    for queue in ["HistoryDlq", "PushDlq", "RuleErrorQueue", "HistoryIngestDlq"] {
        assert!(found.contains(queue), "{queue} not found among {found:?}");
    }
    assert!(!found.contains("PushQueue") && !found.contains("HistoryIngestQueue"), "{found:?}");
}

// ---------------------------------------------------------------- what the real binaries print

const INVOKE: Duration = Duration::from_secs(30);
/// How long the captured output must stay quiet before an invocation's lines count as all read.
const QUIET: Duration = Duration::from_millis(300);

fn parse_lines(lines: &[String]) -> Vec<Json> {
    lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("a log line that is not JSON ({e}): {l}")))
        .collect()
}

/// The metrics of an EMF line: (namespace, dimension sets, [(name, unit)]), after checking each has its value.
fn emf_metrics(line: &Json) -> Vec<(String, Vec<Vec<String>>, String, String)> {
    let mut found = Vec::new();
    for directive in line["_aws"]["CloudWatchMetrics"].as_array().cloned().unwrap_or_default() {
        let namespace = directive["Namespace"].as_str().unwrap_or_default().to_owned();
        let dimensions: Vec<Vec<String>> = serde_json::from_value(directive["Dimensions"].clone())
            .unwrap_or_else(|e| panic!("Dimensions ({e}): {line}"));
        for set in &dimensions {
            for dimension in set {
                assert!(line[dimension].is_string(), "dimension {dimension} has no value: {line}");
            }
        }
        for definition in directive["Metrics"].as_array().cloned().unwrap_or_default() {
            let name = definition["Name"].as_str().unwrap_or_default().to_owned();
            assert!(line[&name].is_number(), "metric {name} has no value: {line}");
            found.push((namespace.clone(), dimensions.clone(), name, definition["Unit"].as_str().unwrap_or("").into()));
        }
    }
    found
}

/// shadow-history on `fx`'s table, its output captured.
async fn history_function(fx: &HistoryFixture, extra: &[(&str, &str)]) -> LocalLambda {
    let mut env: Vec<(String, String)> = fx.stack.env.clone().into_iter().collect();
    env.retain(|(k, _)| k != "HISTORY_RETENTION_DAYS");
    env.push(("HISTORY_TABLE".into(), fx.table.clone()));
    env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    LocalLambda::start_capturing("shadow-history", &env).await
}

/// shadow-push on `fx`'s table and queue, its output captured.
async fn push_function(fx: &PushFixture, extra: &[(&str, &str)]) -> LocalLambda {
    let mut env: Vec<(String, String)> = fx.stack.env.clone().into_iter().collect();
    env.push(("PUSH_TABLE".into(), fx.table.clone()));
    env.push(("PUSH_QUEUE_URL".into(), fx.queue_url.clone()));
    env.push(("PUSH_MAX_TPS".into(), "2000".into()));
    env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    LocalLambda::start_capturing("shadow-push", &env).await
}

/// Invokes `function` with a request id of its own and returns the id and every line it printed meanwhile, after
/// checking each carries that request id.
async fn invoke_logged(function: &LocalLambda, payload: &Json) -> (String, Vec<Json>, Result<Json, String>) {
    let logs = function.logs().expect("started without capturing");
    let mark = logs.len();
    let id = unique("req");
    let answer = function.invoke_as(&id, payload, INVOKE).await.map_err(|e| e.to_string());
    let lines = parse_lines(&logs.since(mark, QUIET).await);
    assert!(!lines.is_empty(), "the invocation printed nothing");
    for line in &lines {
        assert_eq!(line["requestId"], id.as_str(), "a line without its invocation's request id: {line}");
    }
    (id, lines, answer)
}

/// Every log line of both functions, at INFO and under a WARN filter, carries the request id of its invocation:
/// decisions, warnings, errors and metric lines alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_log_line_carries_its_request_id() {
    let fx = HistoryFixture::new().await;
    let thing = unique("logged");
    for level in ["info", "warn"] {
        let function = history_function(&fx, &[("RUST_LOG", level), ("AWS_LAMBDA_LOG_LEVEL", level)]).await;
        let event = update(&thing, Some("config"), 1, devstack::history::now_secs(), json!({"reported": {"a": 1}}));
        let (_, lines, answer) = invoke_logged(&function, &event).await;
        assert!(answer.is_ok(), "{answer:?}");
        if level == "info" {
            assert!(lines.iter().any(|l| l["message"] == "shadow event" && l["outcome"] == "written"), "{lines:?}");
        }
        assert!(lines.iter().any(|l| l["message"] == metrics::EMF_MESSAGE), "no metric line: {lines:?}");
        // A malformed event: a warning, at either level.
        let (_, lines, answer) = invoke_logged(&function, &json!({"version": 1})).await;
        assert!(answer.is_err(), "{answer:?}");
        let warning = lines.iter().find(|l| l["level"] == "WARN").unwrap_or_else(|| panic!("no warning: {lines:?}"));
        assert_eq!(warning["outcome"], "rejected", "{warning}");
    }

    // shadow-push: a push's lines (started, segment, summary, metrics) and a control.
    let fx = PushFixture::new().await;
    fx.create_things(0..2, "logged").await;
    let function = push_function(&fx, &[]).await;
    let push_id = unique("logged");
    let request = json!({"pushId": push_id, "desired": {"mode": 1}, "targets": {"things": [fx.thing(0), fx.thing(1)]}});
    let (_, lines, answer) = invoke_logged(&function, &request).await;
    assert!(answer.is_ok(), "{answer:?}");
    assert!(lines.iter().any(|l| l["message"] == "push started"), "{lines:?}");
    assert!(lines.iter().any(|l| l["message"] == "push summary"), "{lines:?}");
    // A control refused (the push is complete): the runtime's own error line carries the request id too.
    let (_, lines, answer) = invoke_logged(&function, &json!({"pausePush": push_id})).await;
    assert!(answer.is_err(), "{answer:?}");
    assert!(lines.iter().any(|l| l["level"] == "ERROR"), "{lines:?}");
}

/// A push started, baking, paused, resumed and aborted by its operator: routine, so at INFO; not one WARN line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routine_operator_actions_log_at_info() {
    let fx = PushFixture::new().await;
    fx.create_things(0..3, "routine").await;
    let function = push_function(&fx, &[]).await;
    let push_id = unique("routine");
    let things: Vec<String> = (0..3).map(|i| fx.thing(i)).collect();
    let rollout = json!({"phases": [{"percent": 100}], "bakeSeconds": 600, "onAbort": "stop"});
    let request = json!({"pushId": push_id, "desired": {"mode": 1}, "targets": {"things": things}, "rollout": rollout});
    let steps = [
        (request, "push started"),
        (json!({"pausePush": push_id}), "operator control carried out"),
        (json!({"resumePush": push_id}), "push resumed"),
        (json!({"abortPush": push_id}), "operator control carried out"),
    ];
    for (payload, expected) in steps {
        let (_, lines, answer) = invoke_logged(&function, &payload).await;
        assert!(answer.is_ok(), "{payload}: {answer:?}");
        let line = lines
            .iter()
            .find(|l| l["message"] == expected)
            .unwrap_or_else(|| panic!("{payload}: no {expected:?} line in {lines:?}"));
        assert_eq!(line["level"], "INFO", "{line}");
        let loud: Vec<&Json> = lines.iter().filter(|l| l["level"] != "INFO").collect();
        assert!(loud.is_empty(), "{payload}: routine work logged above INFO: {loud:?}");
    }
    let record = fx.record(&push_id).await.unwrap_or(Json::Null);
    assert_eq!(record["state"], "aborted", "{record}");
}

/// The metric lines the real binaries print name exactly the catalog's metrics, with its units, in its namespace,
/// by the one dimension the dashboard uses: every catalog metric is seen in a real run (the history's counts and
/// event age; a push segment's counts; a sweep; a push that stalls), and nothing else is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_functions_emit_exactly_the_catalog() {
    let mut seen: BTreeSet<(Emitter, String, String)> = BTreeSet::new();
    let mut record = |emitter: Emitter, lines: &[Json]| {
        for line in lines.iter().filter(|l| l.get("_aws").is_some()) {
            assert_eq!(line["message"], metrics::EMF_MESSAGE, "{line}");
            assert_eq!(
                line[metrics::DIMENSION],
                emitter.binary(),
                "the dimension's value is the function's name: {line}"
            );
            for (namespace, dimensions, name, unit) in emf_metrics(line) {
                assert_eq!(namespace, metrics::NAMESPACE, "{line}");
                assert_eq!(dimensions, vec![vec![metrics::DIMENSION.to_owned()]], "{line}");
                seen.insert((emitter, name, unit));
            }
        }
    };

    let history = HistoryFixture::new().await;
    let function = history_function(&history, &[]).await;
    let thing = unique("emf");
    let event = update(&thing, None, 1, devstack::history::now_secs(), json!({"reported": {"a": 1}}));
    let (_, lines, answer) = invoke_logged(&function, &event).await;
    assert!(answer.is_ok(), "{answer:?}");
    let emf = lines.iter().find(|l| l.get("_aws").is_some()).unwrap_or_else(|| panic!("no EMF line: {lines:?}"));
    let age = emf["newestEventAge"].as_u64().unwrap_or_else(|| panic!("no event age: {emf}"));
    assert!(age < 60_000, "the event was written within a minute of its timestamp: {emf}");
    record(Emitter::History, &lines);

    let fx = PushFixture::new().await;
    fx.create_things(0..2, "emf").await;
    let function = push_function(&fx, &[]).await;
    let request =
        json!({"pushId": unique("emf"), "desired": {"mode": 1}, "targets": {"things": [fx.thing(0), fx.thing(1)]}});
    let (_, lines, answer) = invoke_logged(&function, &request).await;
    assert!(answer.is_ok(), "{answer:?}");
    record(Emitter::Push, &lines);
    let (_, lines, _) = invoke_logged(&function, &json!({"sweepPushes": true})).await;
    record(Emitter::Push, &lines);

    // A push whose every segment dies is marked stalled (as tests/tests/crash.rs does it).
    let point = CrashPoint { step: Step::ShadowRequest, nth: 1, delivered: false, repeat: true };
    let proxy = CrashProxy::start(&fx.stack.var("AWS_ENDPOINT_URL_IOT_DATA_PLANE"), point).await;
    let doomed = push_function(
        &fx,
        &[
            ("AWS_ENDPOINT_URL_IOT_DATA_PLANE", proxy.url.as_str()),
            ("PUSH_LEASE_MS", "1000"),
            ("PUSH_HANDOFF_GRACE_MS", "1500"),
        ],
    )
    .await;
    proxy.watch(doomed.pid_handle());
    let timing = Timing {
        timeout: Duration::from_secs(3),
        retries: [Duration::from_secs(2), Duration::from_secs(4)],
        visibility: Duration::from_secs(9),
        schedule_every: Duration::from_secs(1),
        poll_every: Duration::from_millis(100),
    };
    let service = LambdaService::new(&doomed, fx.stack.sqs(), &fx.queue_url, timing);
    let push_id = unique("doomed");
    let request = json!({"pushId": push_id, "desired": {"mode": 2}, "targets": {"things": [fx.thing(0)]}});
    let stalled = || async { fx.record(&push_id).await.is_some_and(|r| r["stalled"].is_string()) };
    let done = service.run_until(&request, &json!({"sweepPushes": true}), Duration::from_secs(60), stalled).await;
    assert!(done, "not marked stalled: {:?}", fx.record(&push_id).await);
    let logs = doomed.logs().expect("started without capturing");
    let lines = parse_lines(&logs.since(0, QUIET).await);
    for line in &lines {
        assert!(line["requestId"].is_string(), "a line without a request id: {line}");
    }
    record(Emitter::Push, &lines);

    let catalog: BTreeSet<(Emitter, String, String)> =
        metrics::catalog().map(|m| (m.emitter(), m.name().to_owned(), m.unit().as_str().to_owned())).collect();
    let missing: Vec<_> = catalog.difference(&seen).collect();
    let unknown: Vec<_> = seen.difference(&catalog).collect();
    assert!(missing.is_empty(), "catalog metrics no run emitted: {missing:?}");
    assert!(unknown.is_empty(), "emitted metrics the catalog does not list: {unknown:?}");

    // And the dashboard's own metrics, each against what the binaries printed.
    let template = template();
    for (conditions, body) in dashboard_bodies(&template) {
        for named in dashboard_metrics(&body) {
            if let Shown::Own(metric) = check(&template, &named, &conditions) {
                let printed = seen
                    .iter()
                    .any(|(e, n, u)| *e == metric.emitter() && *n == named.name && u == metric.unit().as_str());
                assert!(
                    printed,
                    "{}: {}/{} was never printed by {}",
                    named.at,
                    named.namespace,
                    named.name,
                    metric.emitter().binary()
                );
            }
        }
    }
}
