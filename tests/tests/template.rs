//! `template.yaml` and the tables the code (and the local stack) use must agree.

use fleet_tests::stack::repo_root;
use serde_yaml::Value;
use shadow_aws::tables;

fn template() -> Value {
    let path = repo_root().join("template.yaml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("template.yaml: {e}"))
}

fn key(table: &Value, key_type: &str) -> Option<String> {
    table["Properties"]["KeySchema"]
        .as_sequence()?
        .iter()
        .find(|k| k["KeyType"].as_str() == Some(key_type))?["AttributeName"]
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
    }
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
