//! Checking: every recorded call must be allowed on its resource by the statements of the function (or managed
//! policy) that holds it, and every grant must be used or explained under `Metadata: IamExceptions`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use serde_yaml::Value as Yaml;

use crate::identify::Call;
use crate::record::RECORD_VAR;
use crate::report::{Report, Row, Section};
use crate::template::{Function, Statement, functions, managed_policies};

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
                     IamRecordings (a new command: say which policy it needs in tools/iam-check/src/record.rs \
                     cli_recording)"
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
                "{name}: {count} request(s) iam-check could not identify ({action}): teach \
                 tools/iam-check/src/identify.rs its IAM action"
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
    use crate::record::{CLI_OPERATOR, CLI_READONLY, CLI_UNCLASSIFIED};

    fn call(action: &str) -> Call {
        Call::action(action)
    }

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
        let template: Yaml = serde_yaml::from_str(template).expect("parsing the template");
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

        let template: Yaml = serde_yaml::from_str(TEMPLATE).expect("parsing the template");
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
        let template: Yaml = serde_yaml::from_str(template).expect("parsing the template");
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
        let reads = recordings.get_mut(CLI_READONLY).expect("no read-only calls");
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
