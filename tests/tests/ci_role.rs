//! The CI role's companion template (deploy/github-oidc-role.yaml): only this repository's `main` branch and
//! `production` environment may assume it, its IAM and data grants stay within the project's names, and it grants
//! something for every kind of resource template.yaml creates (a new kind without a grant would fail the first deploy
//! from CI, with AccessDenied). Needs no stack.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_yaml::Value;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn yaml(path: &str) -> Value {
    let text = std::fs::read_to_string(repo_root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn strings(value: &Value) -> Vec<String> {
    match value {
        Value::String(s) => vec![s.clone()],
        Value::Sequence(items) => items.iter().flat_map(strings).collect(),
        Value::Tagged(tagged) => strings(&tagged.value),
        _ => Vec::new(),
    }
}

fn statements(role: &Value) -> Vec<Value> {
    role["Properties"]["Policies"]
        .as_sequence()
        .into_iter()
        .flatten()
        .flat_map(|p| p["PolicyDocument"]["Statement"].as_sequence().cloned().unwrap_or_default())
        .collect()
}

#[test]
fn only_main_and_production_may_assume_the_deploy_role() {
    let template = yaml("deploy/github-oidc-role.yaml");
    let role = &template["Resources"]["DeployRole"];
    let trust = role["Properties"]["AssumeRolePolicyDocument"]["Statement"].as_sequence().cloned().unwrap_or_default();
    assert_eq!(trust.len(), 1, "one trust statement");
    let condition = &trust[0]["Condition"];
    assert_eq!(condition["StringEquals"]["token.actions.githubusercontent.com:aud"], "sts.amazonaws.com");
    let subjects = strings(&condition["StringLike"]["token.actions.githubusercontent.com:sub"]);
    assert_eq!(subjects, ["repo:${Repository}:ref:refs/heads/main", "repo:${Repository}:environment:production"]);
    assert!(subjects.iter().all(|s| !s.contains('*')), "{subjects:?}");
    // The workflow assumes the role by the variable the docs name.
    let workflow = std::fs::read_to_string(repo_root().join(".github/workflows/deploy.yml")).unwrap_or_default();
    assert_eq!(workflow.matches("role-to-assume: ${{ vars.AWS_DEPLOY_ROLE_ARN }}").count(), 2);
}

#[test]
fn the_deploy_role_stays_within_the_projects_names_and_covers_every_kind_of_resource() {
    let template = yaml("deploy/github-oidc-role.yaml");
    let statements = statements(&template["Resources"]["DeployRole"]);
    let mut granted = BTreeSet::new();
    for statement in &statements {
        let sid = statement["Sid"].as_str().unwrap_or_default();
        let actions = strings(&statement["Action"]);
        let resources = strings(&statement["Resource"]);
        for action in &actions {
            assert_ne!(action, "*", "{sid}: every action");
            let service = action.split(':').next().unwrap_or_default();
            granted.insert(service.to_owned());
            // Identity and data: never wider than the project's own names.
            if matches!(service, "iam" | "dynamodb" | "sqs") {
                assert!(
                    resources.iter().all(|r| r.contains("${StackPrefix}-")),
                    "{sid}: {action} on {resources:?}, outside the project's names"
                );
            }
            assert!(!action.starts_with("iot:") || !action.contains("ThingShadow"), "{sid}: the data plane");
            assert!(!matches!(action.as_str(), "iam:*" | "sts:*" | "s3:*"), "{sid}: {action}");
        }
    }
    // Every kind of resource template.yaml creates needs its service's actions.
    let project = yaml("template.yaml");
    let service_of = |kind: &str| -> Vec<&'static str> {
        match kind {
            "AWS::Serverless::Function" => vec!["lambda", "iam", "scheduler"],
            "AWS::Lambda::EventSourceMapping" | "AWS::Lambda::Permission" => vec!["lambda"],
            "AWS::DynamoDB::Table" => vec!["dynamodb"],
            "AWS::SQS::Queue" => vec!["sqs"],
            "AWS::IoT::TopicRule" => vec!["iot"],
            "AWS::Logs::LogGroup" => vec!["logs"],
            "AWS::CloudWatch::Alarm" | "AWS::CloudWatch::Dashboard" => vec!["cloudwatch"],
            "AWS::IAM::Role" | "AWS::IAM::ManagedPolicy" => vec!["iam"],
            other => panic!("template.yaml creates {other}: grant its actions in deploy/github-oidc-role.yaml"),
        }
    };
    for (id, resource) in project["Resources"].as_mapping().into_iter().flatten() {
        let kind = resource["Type"].as_str().unwrap_or_default();
        for service in service_of(kind) {
            assert!(granted.contains(service), "{id:?} ({kind}) needs {service}:* actions; granted: {granted:?}");
        }
    }
}
