//! The parameter reference in docs/parameters.md is generated from template.yaml and samconfig.toml: every
//! parameter's meaning (its `Description`), default, allowed values, its value in the prod and dev configurations,
//! and the settings it becomes (an environment variable of a function, a resource's property, a condition). The test
//! fails when the reference and the template differ, a parameter among them, and prints the text to put there;
//! `FLEET_WRITE_DOCS=1` writes it. Needs no stack.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_yaml::Value;

const BEGIN: &str =
    "<!-- BEGIN parameters: generated from template.yaml and samconfig.toml by tests/tests/parameters.rs -->";
const END: &str = "<!-- END parameters -->";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn template() -> Value {
    let text = std::fs::read_to_string(repo_root().join("template.yaml")).expect("reading template.yaml");
    serde_yaml::from_str(&text).expect("parsing template.yaml")
}

/// `parameter_overrides` of one samconfig.toml environment (`[<env>.deploy.parameters]`), as name → value.
fn overrides(env: &str) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(repo_root().join("samconfig.toml")).expect("reading samconfig.toml");
    let section = format!("[{env}.deploy.parameters]");
    let mut inside = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            inside = line == section;
            continue;
        }
        if inside && let Some(value) = line.strip_prefix("parameter_overrides = ") {
            return value
                .trim_matches('"')
                .split_whitespace()
                .filter_map(|pair| pair.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
        }
    }
    BTreeMap::new()
}

fn scalar(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Sequence(items) => items.iter().map(scalar).collect::<Vec<_>>().join(", "),
        Value::Null => String::new(),
        other => serde_yaml::to_string(other).unwrap_or_default().trim().to_owned(),
    }
}

/// Where `name` is used under `value` (at `path`): `!Ref name`, or `${name}` in a `!Sub`.
fn uses(value: &Value, name: &str, path: &mut Vec<String>, found: &mut Vec<Vec<String>>) {
    match value {
        Value::Tagged(tagged) => {
            let tag = tagged.tag.to_string();
            let referenced = match (&*tag, &tagged.value) {
                ("!Ref", Value::String(s)) => s == name,
                ("!Sub", Value::String(s)) => s.contains(&format!("${{{name}}}")),
                ("!Sub", Value::Sequence(items)) => {
                    items.first().and_then(Value::as_str).is_some_and(|s| s.contains(&format!("${{{name}}}")))
                }
                _ => false,
            };
            if referenced {
                found.push(path.clone());
            } else {
                uses(&tagged.value, name, path, found);
            }
        }
        Value::Mapping(map) => {
            for (key, inner) in map {
                path.push(scalar(key));
                uses(inner, name, path, found);
                path.pop();
            }
        }
        Value::Sequence(items) => {
            for inner in items {
                uses(inner, name, path, found);
            }
        }
        _ => {}
    }
}

/// Whether `value` names condition `name`: a `Condition: name`, or `!If [name, ..]`.
fn names_condition(value: &Value, name: &str) -> bool {
    match value {
        Value::Tagged(tagged) => {
            let first = tagged.value.as_sequence().and_then(|s| s.first()).and_then(Value::as_str);
            (tagged.tag == "!If" && first == Some(name)) || names_condition(&tagged.value, name)
        }
        Value::Mapping(map) => map.iter().any(|(key, inner)| {
            (key.as_str() == Some("Condition") && inner.as_str() == Some(name)) || names_condition(inner, name)
        }),
        Value::Sequence(items) => items.iter().any(|inner| names_condition(inner, name)),
        _ => false,
    }
}

/// The resources condition `name` switches on or shapes.
fn switched_by(template: &Value, name: &str) -> Vec<String> {
    template
        .get("Resources")
        .and_then(Value::as_mapping)
        .into_iter()
        .flatten()
        .filter(|(_, resource)| names_condition(resource, name))
        .map(|(id, _)| scalar(id))
        .collect()
}

/// A use's path, for people: a function's environment variable, a condition (and the resources it switches), or a
/// resource's property.
fn setting(template: &Value, path: &[String]) -> String {
    let parts: Vec<&str> = path.iter().map(String::as_str).collect();
    match parts.as_slice() {
        ["Conditions", name, ..] => {
            let resources = switched_by(template, name);
            if resources.is_empty() {
                format!("condition `{name}`")
            } else {
                format!("condition `{name}` ({})", resources.join(", "))
            }
        }
        ["Resources", resource, "Properties", "Environment", "Variables", var, ..] => format!("`{var}` ({resource})"),
        ["Globals", rest @ ..] => format!("`Globals.{}`", rest.join(".")),
        ["Resources", resource, "Properties", rest @ ..] => format!("`{resource}.{}`", rest.join(".")),
        ["Resources", resource, rest @ ..] => format!("`{resource}.{}`", rest.join(".")),
        other => format!("`{}`", other.join(".")),
    }
}

/// The reference, as docs/parameters.md holds it between its markers.
fn reference(template: &Value) -> String {
    let prod = overrides("prod");
    let dev = overrides("default");
    let parameters = template.get("Parameters").and_then(Value::as_mapping).expect("the template's Parameters");
    let mut out = vec![
        BEGIN.to_owned(),
        String::new(),
        "| parameter | meaning | default | allowed | prod (dev) | becomes |".to_owned(),
        "|---|---|---|---|---|---|".to_owned(),
    ];
    for (name, spec) in parameters {
        let name = scalar(name);
        let field = |key: &str| spec.get(key).map(scalar).unwrap_or_default();
        let allowed = match (spec.get("AllowedValues"), spec.get("MinValue"), spec.get("MaxValue")) {
            // A `|` would end the table's cell, even in code.
            _ if spec.get("AllowedPattern").is_some() => {
                format!("matching `{}`", field("AllowedPattern").replace('|', "\\|"))
            }
            (Some(values), _, _) => scalar(values),
            (None, Some(min), Some(max)) => format!("{} to {}", scalar(min), scalar(max)),
            (None, Some(min), None) => format!("at least {}", scalar(min)),
            (None, None, Some(max)) => format!("at most {}", scalar(max)),
            (None, None, None) => format!("any {}", field("Type").to_lowercase()),
        };
        let default = field("Default");
        let default = if default.is_empty() { "(empty)".to_owned() } else { format!("`{default}`") };
        let value_in = |config: &BTreeMap<String, String>| config.get(&name).map(|v| format!("`{v}`"));
        let configured = match (value_in(&prod), value_in(&dev)) {
            (None, None) => "default".to_owned(),
            (Some(p), None) => format!("{p} (default)"),
            (None, Some(d)) => format!("default ({d})"),
            (Some(p), Some(d)) => format!("{p} ({d})"),
        };
        let mut found = Vec::new();
        for section in ["Conditions", "Globals", "Resources", "Outputs"] {
            if let Some(tree) = template.get(section) {
                uses(tree, &name, &mut vec![section.to_owned()], &mut found);
            }
        }
        let mut becomes: Vec<String> = found.iter().map(|p| setting(template, p)).collect();
        becomes.dedup();
        let becomes = if becomes.is_empty() { "nothing (unused)".to_owned() } else { becomes.join("; ") };
        let meaning = field("Description").replace('|', "\\|").replace('<', "&lt;").replace('\n', " ");
        out.push(format!("| `{name}` | {} | {default} | {allowed} | {configured} | {becomes} |", meaning.trim()));
    }
    out.push(String::new());
    out.push("Refused at `sam deploy` whatever each value alone allows (the template's `Rules`):".to_owned());
    out.push(String::new());
    let rules = template.get("Rules").and_then(Value::as_mapping).into_iter().flatten();
    for (name, rule) in rules {
        for assertion in rule.get("Assertions").and_then(Value::as_sequence).into_iter().flatten() {
            let said = assertion.get("AssertDescription").map(scalar).unwrap_or_default();
            out.push(format!("- `{}`: {}", scalar(name), said.replace('\n', " ").trim()));
        }
    }
    out.push(String::new());
    out.push(END.to_owned());
    out.join("\n")
}

#[test]
fn the_parameter_reference_is_the_templates() {
    let template = template();
    let expected = reference(&template);
    let path = repo_root().join("docs/parameters.md");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let (Some(begin), Some(end)) = (text.find(BEGIN), text.find(END)) else {
        panic!("docs/parameters.md has no generated section between {BEGIN} and {END}");
    };
    let current = &text[begin..end + END.len()];
    if current != expected {
        if std::env::var_os("FLEET_WRITE_DOCS").is_some() {
            let written = format!("{}{expected}{}", &text[..begin], &text[end + END.len()..]);
            std::fs::write(&path, written).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            return;
        }
        let parameters = template.get("Parameters").and_then(Value::as_mapping).map(|m| m.len()).unwrap_or(0);
        let missing: Vec<String> = template
            .get("Parameters")
            .and_then(Value::as_mapping)
            .into_iter()
            .flatten()
            .map(|(k, _)| scalar(k))
            .filter(|name| !current.contains(&format!("| `{name}` |")))
            .collect();
        panic!(
            "docs/parameters.md does not match template.yaml ({parameters} parameters; without an entry: {missing:?}). \
             Regenerate it: FLEET_WRITE_DOCS=1 cargo nextest run -p fleet-tests --test parameters\nExpected:\n{expected}"
        );
    }
}

/// Every parameter says what it is for, is in one of the console's parameter groups, and is used.
#[test]
fn every_parameter_is_described_grouped_and_used() {
    let template = template();
    let parameters = template.get("Parameters").and_then(Value::as_mapping).expect("Parameters");
    let groups = template["Metadata"]["AWS::CloudFormation::Interface"]["ParameterGroups"].as_sequence();
    let grouped: Vec<String> = groups
        .into_iter()
        .flatten()
        .flat_map(|g| g["Parameters"].as_sequence().cloned().unwrap_or_default())
        .map(|p| scalar(&p))
        .collect();
    for (name, spec) in parameters {
        let name = scalar(name);
        assert!(spec.get("Description").is_some_and(|d| !scalar(d).trim().is_empty()), "{name} has no Description");
        assert_eq!(grouped.iter().filter(|g| **g == name).count(), 1, "{name} is not in exactly one ParameterGroup");
        let mut found = Vec::new();
        for section in ["Conditions", "Globals", "Resources", "Outputs"] {
            if let Some(tree) = template.get(section) {
                uses(tree, &name, &mut vec![section.to_owned()], &mut found);
            }
        }
        assert!(!found.is_empty(), "{name} is used nowhere in the template");
    }
}

/// A rule's intrinsic evaluated as CloudFormation does at deploy, over the parameters' values (defaults, then
/// `given`): `!Ref`, `!Equals`, `!Not`, `!And`, `!Or`, `!Contains`. Anything else is a test failure.
fn evaluate(value: &Value, parameters: &BTreeMap<String, String>) -> Value {
    let Value::Tagged(tagged) = value else { return value.clone() };
    let args = |n: usize| -> Vec<Value> {
        let items = tagged.value.as_sequence().unwrap_or_else(|| panic!("{} takes a list: {value:?}", tagged.tag));
        assert_eq!(items.len(), n, "{} takes {n} arguments: {value:?}", tagged.tag);
        items.iter().map(|v| evaluate(v, parameters)).collect()
    };
    let truth = |v: &Value| v.as_bool().unwrap_or_else(|| panic!("not a condition: {v:?}"));
    match tagged.tag.to_string().as_str() {
        "!Ref" => {
            let name = scalar(&tagged.value);
            Value::String(parameters.get(&name).cloned().unwrap_or_else(|| panic!("!Ref {name}: no such parameter")))
        }
        "!Equals" => {
            let a = args(2);
            Value::Bool(scalar(&a[0]) == scalar(&a[1]))
        }
        "!Not" => Value::Bool(!truth(&args(1)[0])),
        "!Contains" => {
            let a = args(2);
            let list = a[0].as_sequence().unwrap_or_else(|| panic!("!Contains needs a list: {value:?}"));
            Value::Bool(list.iter().any(|item| scalar(item) == scalar(&a[1])))
        }
        "!And" | "!Or" => {
            let items = tagged.value.as_sequence().expect("!And / !Or take a list");
            let results: Vec<bool> = items.iter().map(|v| truth(&evaluate(v, parameters))).collect();
            Value::Bool(if tagged.tag == "!And" { results.iter().all(|r| *r) } else { results.iter().any(|r| *r) })
        }
        other => panic!("the rules' evaluator does not know {other}: {value:?}"),
    }
}

/// What CloudFormation would refuse for these parameter values (over the defaults): each value's own constraints
/// (`AllowedValues`, `AllowedPattern`, `MinValue`, `MaxValue`), then every rule's failed assertions, each as the
/// message it gives.
fn refusals(template: &Value, given: &[(&str, &str)]) -> Vec<String> {
    let specs = template.get("Parameters").and_then(Value::as_mapping).expect("Parameters");
    let mut values: BTreeMap<String, String> =
        specs.iter().map(|(name, spec)| (scalar(name), spec.get("Default").map(scalar).unwrap_or_default())).collect();
    for (name, value) in given {
        assert!(values.contains_key(*name), "no parameter {name}");
        values.insert((*name).to_owned(), (*value).to_owned());
    }
    let mut refused = Vec::new();
    for (name, spec) in specs {
        let name = scalar(name);
        let value = &values[&name];
        let said = || spec.get("ConstraintDescription").map(scalar).unwrap_or_else(|| format!("{name}: {value}"));
        if let Some(allowed) = spec.get("AllowedValues").and_then(Value::as_sequence)
            && !allowed.iter().any(|a| scalar(a) == *value)
        {
            refused.push(said());
        }
        if let Some(pattern) = spec.get("AllowedPattern").map(scalar) {
            // CloudFormation matches the whole value.
            let whole = regex_lite::Regex::new(&format!("^(?:{pattern})$")).expect("an AllowedPattern that compiles");
            if !whole.is_match(value) {
                refused.push(said());
            }
        }
        if spec.get("Type").map(scalar).as_deref() == Some("Number") {
            let Ok(number) = value.parse::<f64>() else {
                refused.push(format!("{name}: {value:?} is not a number"));
                continue;
            };
            let bound = |key: &str| spec.get(key).map(scalar).and_then(|b| b.parse::<f64>().ok());
            if bound("MinValue").is_some_and(|min| number < min) || bound("MaxValue").is_some_and(|max| number > max) {
                refused.push(said());
            }
        }
    }
    for (_, rule) in template.get("Rules").and_then(Value::as_mapping).into_iter().flatten() {
        let applies = rule.get("RuleCondition").is_none_or(|c| evaluate(c, &values) == Value::Bool(true));
        for assertion in rule.get("Assertions").and_then(Value::as_sequence).into_iter().flatten().filter(|_| applies) {
            if evaluate(&assertion["Assert"], &values) != Value::Bool(true) {
                refused.push(scalar(&assertion["AssertDescription"]));
            }
        }
    }
    refused
}

/// The defaults and both samconfig environments deploy; each rule and pattern refuses the values AWS would refuse
/// later (or that would starve shadow-push), with a message that names the parameter, and lets the values next to
/// them through.
#[test]
fn parameter_values_aws_would_refuse_are_refused_at_deploy_by_name() {
    let template = template();
    for env in ["default", "prod"] {
        let given = overrides(env);
        let given: Vec<(&str, &str)> = given.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(refusals(&template, &given), Vec::<String>::new(), "samconfig's {env} is refused");
    }
    let refused = [
        (vec![("QueuedIngestion", "true"), ("HistoryReservedConcurrency", "1")], "HistoryReservedConcurrency"),
        (vec![("HistoryReservedConcurrency", "1001")], "HistoryReservedConcurrency"),
        (vec![("PushReservedConcurrency", "1")], "PushReservedConcurrency"),
        (vec![("PushReservedConcurrency", "2")], "PushReservedConcurrency"),
        (vec![("PushScheduleEnabled", "true"), ("PushScheduleTimezone", "")], "PushScheduleTimezone"),
        (vec![("PushScheduleEnabled", "true"), ("PushScheduleInput", "")], "PushScheduleInput"),
        (vec![("PushScheduleExpression", "every day")], "PushScheduleExpression"),
        (vec![("IotDataEndpoint", "https://abc-ats.iot.ap-northeast-1.amazonaws.com")], "IotDataEndpoint"),
        (vec![("AlarmTopicArn", "alarms")], "AlarmTopicArn"),
    ];
    for (given, named) in refused {
        let said = refusals(&template, &given);
        assert_eq!(said.len(), 1, "{given:?}: refused {said:?}");
        assert!(said[0].starts_with(named), "{given:?}: the refusal does not start with {named}: {said:?}");
    }
    let accepted = [
        vec![("QueuedIngestion", "true"), ("HistoryReservedConcurrency", "0")],
        vec![("QueuedIngestion", "true"), ("HistoryReservedConcurrency", "2")],
        vec![("QueuedIngestion", "true"), ("HistoryReservedConcurrency", "1000")],
        vec![("QueuedIngestion", "false"), ("HistoryReservedConcurrency", "1")],
        vec![("PushReservedConcurrency", "0")],
        vec![("PushReservedConcurrency", "3")],
        vec![("PushScheduleEnabled", "true"), ("PushScheduleExpression", "cron(0 3 * * ? *)")],
        vec![("PushScheduleEnabled", "false"), ("PushScheduleTimezone", "")],
        vec![("IotDataEndpoint", "abc123-ats.iot.ap-northeast-1.amazonaws.com")],
        vec![("AlarmTopicArn", "arn:aws:sns:ap-northeast-1:123456789012:fleet-alarms")],
    ];
    for given in accepted {
        assert_eq!(refusals(&template, &given), Vec::<String>::new(), "{given:?} is refused");
    }
}
