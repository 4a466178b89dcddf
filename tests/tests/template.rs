//! `template.yaml` and the tables the code (and the local stack) use must agree.

use devstack::stack::repo_root;
use serde_yaml::Value;
use shadow_aws::tables;

fn template() -> Value {
    let path = repo_root().join("template.yaml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::from_str(&text).expect("parsing template.yaml")
}

fn key(table: &Value, key_type: &str) -> Option<String> {
    schema_key(&table["Properties"], key_type)
}

fn schema_key(keyed: &Value, key_type: &str) -> Option<String> {
    keyed["KeySchema"].as_sequence()?.iter().find(|k| k["KeyType"].as_str() == Some(key_type))?["AttributeName"]
        .as_str()
        .map(str::to_owned)
}

#[test]
fn template_tables_match_the_code() {
    let template = template();
    for spec in tables::ALL {
        let table = &template["Resources"][spec.logical_id];
        assert_eq!(table["Type"].as_str(), Some("AWS::DynamoDB::Table"), "{} is not a table", spec.logical_id);
        assert_eq!(key(table, "HASH").as_deref(), Some(spec.partition_key), "{} partition key", spec.logical_id);
        assert_eq!(key(table, "RANGE").as_deref(), Some(spec.sort_key), "{} sort key", spec.logical_id);
        let attrs = table["Properties"]["AttributeDefinitions"].as_sequence().cloned().unwrap_or_default();
        for name in [spec.partition_key, spec.sort_key] {
            let defined = attrs.iter().find(|a| a["AttributeName"].as_str() == Some(name));
            assert_eq!(defined.and_then(|a| a["AttributeType"].as_str()), Some("S"), "{} {name}", spec.logical_id);
        }
        let ttl = &table["Properties"]["TimeToLiveSpecification"];
        assert_eq!(ttl["AttributeName"].as_str(), Some(spec.ttl_attribute), "{} TTL", spec.logical_id);
        assert_eq!(ttl["Enabled"].as_bool(), Some(true), "{} TTL enabled", spec.logical_id);
        let indexes = table["Properties"]["GlobalSecondaryIndexes"].as_sequence().cloned().unwrap_or_default();
        assert_eq!(indexes.len(), spec.indexes.len(), "{} indexes", spec.logical_id);
        for index in spec.indexes {
            let declared = indexes
                .iter()
                .find(|i| i["IndexName"].as_str() == Some(index.name))
                .unwrap_or_else(|| panic!("{}: no index {}", spec.logical_id, index.name));
            assert_eq!(schema_key(declared, "HASH").as_deref(), Some(index.partition_key), "{} hash", index.name);
            assert_eq!(schema_key(declared, "RANGE").as_deref(), Some(index.sort_key), "{} range", index.name);
            assert_eq!(declared["Projection"]["ProjectionType"].as_str(), Some("KEYS_ONLY"), "{}", index.name);
            for (name, kind) in [(index.partition_key, "S"), (index.sort_key, "N")] {
                let defined = attrs.iter().find(|a| a["AttributeName"].as_str() == Some(name));
                assert_eq!(defined.and_then(|a| a["AttributeType"].as_str()), Some(kind), "{} {name}", index.name);
            }
        }
    }
}

/// `!Ref X` or `!GetAtt X.Arn`: the resource `X`.
fn referenced(value: &Value) -> Option<String> {
    let Value::Tagged(tagged) = value else { return None };
    let tag = tagged.tag.to_string();
    let target = tagged.value.as_str()?;
    match tag.trim_start_matches('!') {
        "Ref" => Some(target.to_owned()),
        "GetAtt" => target.strip_suffix(".Arn").map(str::to_owned),
        _ => None,
    }
}

/// Lambda's recursive loop detection stops a chain function -> queue -> the same function after about 16 hops. A
/// function in such a loop (it may send to a queue that invokes it) must say `RecursiveLoop: Allow`, and only such
/// a function: everywhere else the detection stays on. The one loop is shadow-push -> PushQueue -> shadow-push, the
/// hand-off of long pushes.
#[test]
fn the_hand_off_loop_is_declared() {
    let template = template();
    assert!(template["Globals"]["Function"].get("RecursiveLoop").is_none(), "set per function, not for all");
    let resources = template["Resources"].as_mapping().expect("the template's resources");
    let resource = |value: &Value| value.as_str().unwrap_or_default().to_owned();
    let functions: Vec<(String, &Value)> = resources
        .iter()
        .filter(|(_, r)| matches!(r["Type"].as_str(), Some("AWS::Serverless::Function" | "AWS::Lambda::Function")))
        .map(|(id, r)| (resource(id), r))
        .collect();
    assert_eq!(functions.len(), 2, "a function was added or renamed: check its loops");
    // The queues that invoke a function: event source mappings, and SAM's own SQS events.
    let mut invoked_by: Vec<(String, String)> = resources
        .values()
        .filter(|r| r["Type"].as_str() == Some("AWS::Lambda::EventSourceMapping"))
        .filter_map(|r| {
            Some((referenced(&r["Properties"]["FunctionName"])?, referenced(&r["Properties"]["EventSourceArn"])?))
        })
        .collect();
    for (id, function) in &functions {
        let events = function["Properties"]["Events"].as_mapping().into_iter().flat_map(|e| e.values());
        let queues =
            events.filter(|e| e["Type"].as_str() == Some("SQS")).filter_map(|e| referenced(&e["Properties"]["Queue"]));
        invoked_by.extend(queues.map(|q| (id.clone(), q)));
    }
    let mut looping = Vec::new();
    for (id, function) in &functions {
        // The queues its role may send to.
        let statements = function["Properties"]["Policies"]
            .as_sequence()
            .into_iter()
            .flatten()
            .flat_map(|p| p["Statement"].as_sequence().cloned().unwrap_or_default());
        let sends_to: Vec<String> = statements
            .filter(|st| {
                let actions = &st["Action"];
                actions.as_str() == Some("sqs:SendMessage")
                    || actions.as_sequence().is_some_and(|a| a.iter().any(|a| a.as_str() == Some("sqs:SendMessage")))
            })
            .filter_map(|st| referenced(&st["Resource"]))
            .collect();
        let in_loop = invoked_by.iter().any(|(f, queue)| f == id && sends_to.contains(queue));
        let declared = function["Properties"]["RecursiveLoop"].as_str();
        if in_loop {
            looping.push(id.clone());
            assert_eq!(declared, Some("Allow"), "{id} is in a loop: without Allow Lambda stops it after ~16 hops");
        } else {
            assert_ne!(declared, Some("Allow"), "{id} is in no loop: Lambda's loop detection must stay on for it");
        }
    }
    assert_eq!(looping, ["ShadowPushFunction"], "the hand-off loop (shadow-push -> PushQueue -> shadow-push)");
}

/// The sweeper runs every minute, enabled whatever the push schedule, and its input is the sweep event.
#[test]
fn the_sweeper_runs_every_minute() {
    let template = template();
    let sweeper = &template["Resources"]["ShadowPushFunction"]["Properties"]["Events"]["Sweeper"];
    assert_eq!(sweeper["Type"].as_str(), Some("ScheduleV2"));
    assert_eq!(sweeper["Properties"]["ScheduleExpression"].as_str(), Some("rate(1 minute)"));
    assert_eq!(sweeper["Properties"]["State"].as_str(), Some("ENABLED"));
    let input: serde_json::Value =
        serde_json::from_str(sweeper["Properties"]["Input"].as_str().unwrap_or_default()).expect("sweeper input");
    assert_eq!(input, serde_json::json!({"sweepPushes": true}));
}

#[test]
fn functions_are_told_their_tables() {
    let template = template();
    for (function, spec) in [("ShadowHistoryFunction", tables::HISTORY), ("ShadowPushFunction", tables::PUSH)] {
        let vars = &template["Resources"][function]["Properties"]["Environment"]["Variables"];
        let value = vars[spec.env_var].clone();
        let Value::Tagged(tagged) = value else { panic!("{function} {}: not a !Ref", spec.env_var) };
        assert_eq!(tagged.tag, "!Ref", "{function} {}", spec.env_var);
        assert_eq!(tagged.value.as_str(), Some(spec.logical_id), "{function} {}", spec.env_var);
    }
}

// ---------------------------------------------------------------- helpers over the parsed template

/// The template's resources as (logical id, resource).
fn resources(template: &Value) -> Vec<(String, &Value)> {
    let resources = template["Resources"].as_mapping().expect("template.yaml: no Resources");
    resources
        .iter()
        .map(|(id, r)| (id.as_str().unwrap_or_else(|| panic!("resource id {id:?}")).to_owned(), r))
        .collect()
}

fn resources_of_type<'a>(template: &'a Value, kind: &str) -> Vec<(String, &'a Value)> {
    resources(template).into_iter().filter(|(_, r)| r["Type"].as_str() == Some(kind)).collect()
}

/// The value of a short-form intrinsic (`!Ref X`, `!GetAtt X.Arn`, `!If [..]`) when `value` is one with `tag`.
fn intrinsic<'a>(value: &'a Value, tag: &str) -> Option<&'a Value> {
    match value {
        Value::Tagged(t) if t.tag == tag => Some(&t.value),
        _ => None,
    }
}

/// `!GetAtt Resource.Arn` -> `Resource`.
fn arn_of(value: &Value) -> Option<&str> {
    intrinsic(value, "!GetAtt")?.as_str()?.strip_suffix(".Arn")
}

fn ref_of(value: &Value) -> Option<&str> {
    intrinsic(value, "!Ref")?.as_str()
}

/// Everything `value` may be once its conditions are resolved: a sequence is the union of its items, an `!If` the
/// union of both branches, `!Ref AWS::NoValue` nothing.
fn alternatives(value: &Value) -> Vec<&Value> {
    if let Some(branches) = intrinsic(value, "!If") {
        let branches = branches.as_sequence().unwrap_or_else(|| panic!("!If without a list: {value:?}"));
        return branches.iter().skip(1).flat_map(alternatives).collect();
    }
    if ref_of(value) == Some("AWS::NoValue") {
        return Vec::new();
    }
    match value {
        Value::Sequence(items) => items.iter().flat_map(alternatives).collect(),
        other => vec![other],
    }
}

/// Every IAM policy statement in `value`: the functions' `Policies`, roles' inline policies and trust policies.
fn statements<'a>(value: &'a Value, found: &mut Vec<&'a Value>) {
    match value {
        Value::Mapping(map) => {
            for (key, value) in map {
                if key.as_str() == Some("Statement") {
                    found.extend(alternatives(value));
                } else {
                    statements(value, found);
                }
            }
        }
        Value::Sequence(items) => items.iter().for_each(|v| statements(v, found)),
        Value::Tagged(tagged) => statements(&tagged.value, found),
        _ => {}
    }
}

fn strings(value: &Value, what: &str) -> Vec<String> {
    alternatives(value)
        .into_iter()
        .map(|v| v.as_str().map(str::to_owned).unwrap_or_else(|| panic!("{what}: not a literal string: {v:?}")))
        .collect()
}

// ---------------------------------------------------------------- IAM

#[test]
fn no_policy_statement_allows_every_action() {
    let template = template();
    let mut found = Vec::new();
    statements(&template["Resources"], &mut found);
    assert!(found.len() >= 10, "found only {} policy statements: is the walk still finding them?", found.len());
    for statement in found {
        assert!(statement.get("NotAction").is_none(), "NotAction grants everything else: {statement:?}");
        let actions = strings(&statement["Action"], "Action");
        assert!(!actions.is_empty(), "a statement without Action: {statement:?}");
        for action in actions {
            assert!(action != "*" && !action.ends_with(":*"), "wildcard action {action:?} in {statement:?}");
        }
    }
}

/// The only actions granted on `Resource: "*"`: AWS defines no resource type for them (Service Authorization
/// Reference, AWS IoT), so no narrower Resource is valid.
const ACTIONS_WITHOUT_RESOURCE_TYPES: [&str; 3] =
    ["iot:DescribeEndpoint", "iot:ListThingGroups", "iot:GetIndexingConfiguration"];

#[test]
fn resource_star_only_where_aws_allows_nothing_narrower() {
    let template = template();
    let mut found = Vec::new();
    statements(&template["Resources"], &mut found);
    let mut stars = 0;
    for statement in found {
        if statement.get("Resource").is_none() {
            continue; // a trust policy (Principal, no Resource)
        }
        let resources = alternatives(&statement["Resource"]);
        if !resources.iter().any(|r| r.as_str() == Some("*")) {
            continue;
        }
        stars += 1;
        for action in strings(&statement["Action"], "Action") {
            assert!(
                ACTIONS_WITHOUT_RESOURCE_TYPES.contains(&action.as_str()),
                "{action} on Resource \"*\": give it a resource ARN ({statement:?})"
            );
        }
    }
    // And each one says why, in the comment right above it.
    let path = repo_root().join("template.yaml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let lines: Vec<&str> = text.lines().collect();
    let mut commented = 0;
    for (i, line) in lines.iter().enumerate() {
        let line = line.trim();
        if !(line.starts_with("Resource:") && line.contains("\"*\"") || line.starts_with("Resource: '*'")) {
            continue;
        }
        let comment: Vec<&str> = lines[..i].iter().rev().map(|l| l.trim()).take_while(|l| l.starts_with('#')).collect();
        assert!(
            comment.iter().any(|c| c.contains("nothing narrower")),
            "template.yaml:{}: Resource \"*\" needs a comment saying AWS allows nothing narrower",
            i + 1
        );
        commented += 1;
    }
    assert_eq!(commented, stars, "every Resource \"*\" is written as `Resource: \"*\"` under its comment");
}

// ---------------------------------------------------------------- IoT rules

#[test]
fn topic_rules_pass_topic_and_time_and_keep_their_errors() {
    let template = template();
    let rules = resources_of_type(&template, "AWS::IoT::TopicRule");
    let mut sources = Vec::new();
    for (id, rule) in &rules {
        let payload = &rule["Properties"]["TopicRulePayload"];
        // CloudFormation's default is 2015-10-08, whose SQL differs.
        assert_eq!(payload["AwsIotSqlVersion"].as_str(), Some("2016-03-23"), "{id} AwsIotSqlVersion");
        let sql = payload["Sql"].as_str().unwrap_or_else(|| panic!("{id}: Sql is not a literal string"));
        let sql = sql.split_whitespace().collect::<Vec<_>>().join(" ");
        // No payload names the thing or the shadow: only the topic does. timestamp() is the rule's receive time (ms).
        assert!(sql.contains("topic() AS topic"), "{id}: the SQL must select topic() AS topic: {sql}");
        assert!(
            sql.contains("timestamp() AS receivedAt"),
            "{id}: the SQL must select timestamp() AS receivedAt: {sql}"
        );
        let from = sql.split(" FROM ").nth(1).unwrap_or_else(|| panic!("{id}: no FROM: {sql}"));
        sources.push(from.trim_matches('\'').to_owned());
        let error_action = payload["ErrorAction"].as_mapping();
        assert!(error_action.is_some_and(|a| !a.is_empty()), "{id}: no ErrorAction");
        let actions = alternatives(&payload["Actions"]);
        assert!(!actions.is_empty(), "{id}: no Actions");
        for action in actions {
            if let Some(lambda) = action.get("Lambda") {
                assert_eq!(arn_of(&lambda["FunctionArn"]), Some("ShadowHistoryFunction"), "{id} Lambda action");
                assert_rule_may_invoke(&template, id);
            }
        }
    }
    for topic in [
        "$aws/things/+/shadow/name/+/update/documents",
        "$aws/things/+/shadow/update/documents",
        "$aws/things/+/shadow/name/+/delete/accepted",
        "$aws/things/+/shadow/delete/accepted",
    ] {
        assert!(sources.iter().any(|s| s == topic), "no rule reads {topic} (rules read {sources:?})");
    }
}

/// IoT may invoke the function for this rule only: a permission with the rule's ARN and the account.
fn assert_rule_may_invoke(template: &Value, rule: &str) {
    let permissions = resources_of_type(template, "AWS::Lambda::Permission");
    let permission = permissions.iter().find(|(_, p)| arn_of(&p["Properties"]["SourceArn"]) == Some(rule));
    let (id, permission) = permission.unwrap_or_else(|| panic!("no AWS::Lambda::Permission has SourceArn {rule}.Arn"));
    let props = &permission["Properties"];
    assert_eq!(props["Principal"].as_str(), Some("iot.amazonaws.com"), "{id} Principal");
    assert_eq!(props["Action"].as_str(), Some("lambda:InvokeFunction"), "{id} Action");
    assert_eq!(ref_of(&props["SourceAccount"]), Some("AWS::AccountId"), "{id} SourceAccount");
    assert_eq!(arn_of(&props["FunctionName"]), Some("ShadowHistoryFunction"), "{id} FunctionName");
}

// ---------------------------------------------------------------- failures and queues

/// The on-failure destination of `function`'s asynchronous invocations: SAM's `EventInvokeConfig` property, or an
/// `AWS::Lambda::EventInvokeConfig` resource.
fn on_failure_destination<'a>(template: &'a Value, function: &str) -> Option<&'a Value> {
    let own = &template["Resources"][function]["Properties"]["EventInvokeConfig"];
    let configs = resources_of_type(template, "AWS::Lambda::EventInvokeConfig");
    let config = configs
        .into_iter()
        .map(|(_, c)| &c["Properties"])
        .find(|c| ref_of(&c["FunctionName"]) == Some(function) || arn_of(&c["FunctionName"]) == Some(function))
        .unwrap_or(own);
    config["DestinationConfig"]["OnFailure"].get("Destination")
}

#[test]
fn failed_async_invocations_go_to_a_dead_letter_queue() {
    let template = template();
    for (function, dlq) in [("ShadowHistoryFunction", "HistoryDlq"), ("ShadowPushFunction", "PushDlq")] {
        let destination = on_failure_destination(&template, function)
            .unwrap_or_else(|| panic!("{function}: no on-failure destination for asynchronous invocations"));
        assert_eq!(arn_of(destination), Some(dlq), "{function}: on-failure destination");
        assert_eq!(template["Resources"][dlq]["Type"].as_str(), Some("AWS::SQS::Queue"), "{dlq}");
    }
    let history = &template["Resources"]["ShadowHistoryFunction"]["Properties"]["EventInvokeConfig"];
    assert_eq!(history["MaximumRetryAttempts"].as_u64(), Some(2), "ShadowHistoryFunction retries");
}

#[test]
fn queues_feeding_functions_outlast_them_and_report_partial_failures() {
    let template = template();
    let mappings = resources_of_type(&template, "AWS::Lambda::EventSourceMapping");
    assert!(!mappings.is_empty(), "no SQS event source mapping");
    for (id, mapping) in mappings {
        let props = &mapping["Properties"];
        let function = ref_of(&props["FunctionName"]).unwrap_or_else(|| panic!("{id}: FunctionName is not a !Ref"));
        let queue = arn_of(&props["EventSourceArn"]).unwrap_or_else(|| panic!("{id}: EventSourceArn is not !GetAtt"));
        let timeout = template["Resources"][function]["Properties"]["Timeout"]
            .as_u64()
            .unwrap_or_else(|| panic!("{function}: no literal Timeout"));
        let queue_props = &template["Resources"][queue]["Properties"];
        let visibility = queue_props["VisibilityTimeout"]
            .as_u64()
            .unwrap_or_else(|| panic!("{queue}: no literal VisibilityTimeout"));
        assert!(
            visibility >= 6 * timeout,
            "{queue}: VisibilityTimeout {visibility} < 6 x {function} Timeout {timeout}"
        );
        assert!(arn_of(&queue_props["RedrivePolicy"]["deadLetterTargetArn"]).is_some(), "{queue}: no redrive to a DLQ");
        let types = strings(&props["FunctionResponseTypes"], "FunctionResponseTypes");
        assert!(types.iter().any(|t| t == "ReportBatchItemFailures"), "{id}: no ReportBatchItemFailures");
    }
}

#[test]
fn functions_are_given_every_setting_they_read() {
    let template = template();
    for (function, names) in [
        ("ShadowHistoryFunction", &["HISTORY_TABLE", "HISTORY_RETENTION_DAYS", "HISTORY_STORE_METADATA"][..]),
        (
            "ShadowPushFunction",
            &[
                "PUSH_TABLE",
                "PUSH_QUEUE_URL",
                "PUSH_MAX_TPS",
                "PUSH_READ_TPS",
                "PUSH_QUOTA_HEADROOM_PERCENT",
                "PUSH_CONCURRENCY",
                "IOT_DATA_ENDPOINT",
                "PUSH_RETENTION_DAYS",
                "PUSH_PARTITION_WPS",
            ][..],
        ),
    ] {
        let vars = &template["Resources"][function]["Properties"]["Environment"]["Variables"];
        for name in names {
            assert!(vars.get(*name).is_some(), "{function}: environment variable {name} is not set");
        }
    }
}

#[test]
fn the_scheduled_push_input_is_a_valid_push_request() {
    let template = template();
    let parameter = |name: &str| {
        let value = &template["Parameters"][name]["Default"];
        assert!(!value.is_null(), "parameter {name} has no Default");
        value.clone()
    };
    let input = parameter("PushScheduleInput");
    let input = input.as_str().expect("PushScheduleInput: not a string");
    // The schedule wraps the request with the run's scheduled time, which becomes part of the push id.
    let schedule = &template["Resources"]["ShadowPushFunction"]["Properties"]["Events"]["Schedule"]["Properties"];
    let wrapper = intrinsic(&schedule["Input"], "!Sub")
        .and_then(Value::as_str)
        .expect("the schedule's Input is not a !Sub string");
    let event = wrapper
        .replace("${PushScheduleInput}", input)
        .replace("<aws.scheduler.scheduled-time>", "2026-11-27T03:00:00Z");
    let event: serde_json::Value = serde_json::from_str(&event).expect("the scheduled event is not JSON");
    assert_eq!(event["scheduledRun"], "2026-11-27T03:00:00Z", "{event}");
    let request = event["request"].clone();
    assert!(request.is_object(), "{event}");
    let max_tps = parameter("PushMaxTps").as_u64().expect("PushMaxTps: not a number");
    let max_tps = u32::try_from(max_tps).expect("PushMaxTps");
    let plan = shadow_core::push::validate_request(&request, max_tps, Some(&|| "scheduled".to_owned()))
        .expect("PushScheduleInput");
    assert!(plan.dry_run, "the default scheduled push is a dry run: enabling the schedule alone pushes nothing");
}

// ---------------------------------------------------------------- operators

/// The operator policy repeats the read-only policy's statements word for word (each person attaches one policy),
/// the read-only policy changes and starts nothing, and both ARNs are stack outputs.
#[test]
fn the_operator_policies_read_and_steer_as_documented() {
    let template = template();
    let statements = |id: &str| {
        let policy = &template["Resources"][id];
        assert_eq!(policy["Type"].as_str(), Some("AWS::IAM::ManagedPolicy"), "{id}");
        let statements = policy["Properties"]["PolicyDocument"]["Statement"].as_sequence().cloned();
        statements.unwrap_or_else(|| panic!("{id}: no statements"))
    };
    let read_only = statements("OperatorReadOnlyPolicy");
    let operator = statements("OperatorPolicy");
    assert!(!read_only.is_empty());
    for statement in &read_only {
        assert!(operator.contains(statement), "OperatorPolicy lacks the read-only statement {statement:?}");
        for action in strings(&statement["Action"], "Action") {
            let operation = action.split(':').nth(1).unwrap_or_default();
            assert!(
                ["Get", "BatchGet", "Query", "Describe", "List", "Search"].iter().any(|p| operation.starts_with(p)),
                "the read-only policy grants {action}, which is no read"
            );
        }
    }
    let extra: Vec<String> =
        operator.iter().filter(|s| !read_only.contains(s)).flat_map(|s| strings(&s["Action"], "Action")).collect();
    assert_eq!(
        extra,
        [
            "lambda:InvokeFunction",
            "dynamodb:UpdateItem",
            "sqs:ReceiveMessage",
            "sqs:ChangeMessageVisibility",
            "sqs:DeleteMessage",
            "lambda:InvokeFunction"
        ],
        "what the operator policy adds: push start and controls, a control on the record, dlq list and replay"
    );
    for (output, policy) in
        [("OperatorReadOnlyPolicyArn", "OperatorReadOnlyPolicy"), ("OperatorPolicyArn", "OperatorPolicy")]
    {
        assert_eq!(ref_of(&template["Outputs"][output]["Value"]), Some(policy), "output {output}");
    }
}
