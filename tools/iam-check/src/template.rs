//! Reading the template: what each function's inline policies and each operators' managed policy grant (their
//! statements, with CloudFormation's intrinsics rendered as symbolic ARNs), the variables and outputs that name their
//! resources, and the grants explained under `Metadata: IamExceptions`.

use std::collections::BTreeMap;

use serde_yaml::Value as Yaml;

use crate::record::CLI_READONLY;

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
pub(crate) struct Statement {
    /// The Sid, or `#<n>` in the function's statements.
    pub(crate) sid: String,
    pub(crate) allow: bool,
    pub(crate) actions: Vec<String>,
    pub(crate) resources: Vec<String>,
}

/// What iam-check holds recorded calls against: a function's inline policies, or an operators' managed policy.
#[derive(Debug)]
pub(crate) struct Function {
    /// A function's binary, or a managed policy's logical id.
    pub(crate) name: String,
    pub(crate) logical_id: String,
    /// The recordings (`<name>.jsonl`) whose calls it must allow: a function's own; a policy's `IamRecordings`.
    pub(crate) recordings: Vec<String>,
    pub(crate) statements: Vec<Statement>,
    /// The function's environment variables (`Globals` under its own); for a policy, the CLI's variables and the
    /// stack outputs it reads, as the template's outputs give them.
    pub(crate) env: BTreeMap<String, Yaml>,
    pub(crate) exceptions: BTreeMap<String, String>,
    /// What could not be read.
    pub(crate) problems: Vec<String>,
}

/// The template's `AWS::Serverless::Function`s. A function's name is its binary's: the last part of `CodeUri`
/// (`functions/shadow-push` -> `shadow-push`), as `devstack::lambda::LocalLambda::start` names it.
pub(crate) fn functions(template: &Yaml) -> Vec<Function> {
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

/// The same for what only `dlq` reads: traced when the template has the output (a template without them has no
/// dead-letter queues for the CLI to read).
pub const CLI_DLQ_LOCATIONS: [(&str, &str); 5] = [
    ("HISTORY_FUNCTION_NAME", "ShadowHistoryFunctionArn"),
    ("HISTORY_DLQ_URL", "HistoryDlqUrl"),
    ("RULE_ERROR_QUEUE_URL", "RuleErrorQueueUrl"),
    ("HISTORY_INGEST_DLQ_URL", "HistoryIngestDlqUrl"),
    ("PUSH_DLQ_URL", "PushDlqUrl"),
];

/// The template's `AWS::IAM::ManagedPolicy`s: the policies people attach to run the CLI. Each names the recordings
/// of the CLI's calls it must allow under `Metadata: IamRecordings`.
pub(crate) fn managed_policies(template: &Yaml) -> Vec<Function> {
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
        for (var, output) in CLI_DLQ_LOCATIONS {
            if let Some(value) = outputs.and_then(|o| o.get(output)).and_then(|o| o.get("Value")) {
                policy.env.insert(var.to_owned(), value.clone());
                policy.env.insert(output.to_owned(), value.clone());
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
    pub(crate) fn traced(
        &self,
        what: &str,
        value: &str,
        from: &[String],
        kind: &str,
        template: &Yaml,
    ) -> Result<String, String> {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::CLI_OPERATOR;

    #[test]
    fn the_projects_template_is_readable() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../template.yaml");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let template: Yaml = serde_yaml::from_str(&text).expect("parsing template.yaml");
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
}
