//! Desired documents: what AWS IoT accepts, and whether a shadow already holds what a push would set.

use serde_json::{Map, Value};

use crate::history::type_name;

/// AWS's current error text says the maximum nesting depth is 6.
pub const MAX_DEPTH: usize = 6;
/// desired + reported may not exceed 8 KB (adjustable per account; the safe value).
pub const MAX_DOCUMENT_BYTES: usize = 8 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{path}` {reason}")]
pub struct DocumentError {
    /// Where, as a JSON path from `desired` (`desired.settings.modes[2]`).
    pub path: String,
    pub reason: String,
}

/// Checks a desired section: an object, nesting at most [`MAX_DEPTH`], no `null` inside arrays, and an update
/// document of at most [`MAX_DOCUMENT_BYTES`].
pub fn validate_desired(desired: &Value) -> Result<(), DocumentError> {
    let Value::Object(fields) = desired else {
        return Err(DocumentError {
            path: "desired".into(),
            reason: format!("must be an object, found {}", type_name(desired)),
        });
    };
    check_object(fields, "desired", 1)?;
    let size = serde_json::json!({"state": {"desired": desired}}).to_string().len();
    if size > MAX_DOCUMENT_BYTES {
        return Err(DocumentError {
            path: "desired".into(),
            reason: format!("makes a document of {size} bytes; the shadow limit is {MAX_DOCUMENT_BYTES}"),
        });
    }
    Ok(())
}

fn check_object(fields: &Map<String, Value>, path: &str, depth: usize) -> Result<(), DocumentError> {
    for (key, value) in fields {
        check_value(value, &format!("{path}.{key}"), depth)?;
    }
    Ok(())
}

fn check_value(value: &Value, path: &str, depth: usize) -> Result<(), DocumentError> {
    match value {
        Value::Object(fields) => {
            if depth + 1 > MAX_DEPTH {
                return Err(DocumentError {
                    path: path.to_owned(),
                    reason: format!("nests deeper than the shadow limit of {MAX_DEPTH} levels"),
                });
            }
            check_object(fields, path, depth + 1)
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let item_path = format!("{path}[{i}]");
                if item.is_null() {
                    return Err(DocumentError {
                        path: item_path,
                        reason: "is null: shadow arrays may not contain null".into(),
                    });
                }
                check_value(item, &item_path, depth)?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Whether a shadow whose desired section is `current` already holds every key of `pushed`: nested objects are
/// merged by AWS, so they hold key by key; a `null` holds when the key is absent; arrays and scalars must be equal,
/// numbers compared as numbers (1 equals 1.0).
pub fn holds(current: Option<&Value>, pushed: &Value) -> bool {
    match pushed {
        Value::Object(pushed) => {
            let current = match current {
                Some(Value::Object(c)) => Some(c),
                _ => None,
            };
            pushed.iter().all(|(key, value)| {
                let existing = current.and_then(|c| c.get(key)).filter(|v| !v.is_null());
                match value {
                    Value::Null => existing.is_none(),
                    // An absent object holds a subtree of deletions only.
                    Value::Object(_) => match existing {
                        Some(e) => e.is_object() && holds(Some(e), value),
                        None => only_deletions(value),
                    },
                    _ => existing.is_some_and(|e| equal(e, value)),
                }
            })
        }
        other => current.is_some_and(|c| equal(c, other)),
    }
}

/// Whether `value` sets nothing: every leaf is `null`.
fn only_deletions(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Object(fields) => fields.values().all(only_deletions),
        _ => false,
    }
}

/// Whether every value `pushed` sets (every non-null leaf) was written at or after `since` (epoch seconds), by the
/// shadow's `metadata.desired` (per-key `timestamp`s; an array's metadata is one entry per element). A push that
/// takes over an abandoned segment uses it to recognise the things that segment updated before it died.
/// `false` when `pushed` sets nothing (only deletions): there is then no evidence either way.
pub fn written_since(metadata: Option<&Value>, pushed: &Value, since: u64) -> bool {
    let mut evidence = false;
    leaves_written_since(metadata, pushed, since, &mut evidence) && evidence
}

fn leaves_written_since(metadata: Option<&Value>, pushed: &Value, since: u64, evidence: &mut bool) -> bool {
    match pushed {
        Value::Null => true,
        Value::Object(fields) => fields
            .iter()
            .all(|(key, value)| leaves_written_since(metadata.and_then(|m| m.get(key)), value, since, evidence)),
        _ => {
            *evidence = true;
            metadata.and_then(oldest_timestamp).is_some_and(|t| t >= since)
        }
    }
}

/// Whether any value `pushed` sets (a non-null leaf) was written at or after `since` (epoch seconds), by the shadow's
/// `metadata.desired`, whatever it holds now. A thing met again after a refused page token that no longer holds the
/// pushed values, but one of whose pushed keys someone wrote while the push ran, was most likely updated by the push
/// and changed since by another writer.
pub fn touched_since(metadata: Option<&Value>, pushed: &Value, since: u64) -> bool {
    match pushed {
        Value::Null => false,
        Value::Object(fields) => {
            fields.iter().any(|(key, value)| touched_since(metadata.and_then(|m| m.get(key)), value, since))
        }
        _ => metadata.and_then(newest_timestamp).is_some_and(|t| t >= since),
    }
}

fn newest_timestamp(metadata: &Value) -> Option<u64> {
    match metadata {
        Value::Object(fields) => match fields.get("timestamp").and_then(Value::as_u64) {
            Some(t) => Some(t),
            None => fields.values().filter_map(newest_timestamp).max(),
        },
        Value::Array(items) => items.iter().filter_map(newest_timestamp).max(),
        _ => None,
    }
}

fn oldest_timestamp(metadata: &Value) -> Option<u64> {
    match metadata {
        Value::Object(fields) => match fields.get("timestamp").and_then(Value::as_u64) {
            Some(t) => Some(t),
            None => fields.values().map(oldest_timestamp).collect::<Option<Vec<_>>>()?.into_iter().min(),
        },
        Value::Array(items) => items.iter().map(oldest_timestamp).collect::<Option<Vec<_>>>()?.into_iter().min(),
        _ => None,
    }
}

/// Deep equality with numbers compared by value.
pub fn equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64(), x.as_u64(), y.as_u64()) {
            (Some(x), Some(y), _, _) => x == y,
            (_, _, Some(x), Some(y)) => x == y,
            _ => x.as_f64() == y.as_f64(),
        },
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(x, y)| equal(x, y)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| equal(v, w)))
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn valid_documents() {
        assert!(
            validate_desired(
                &json!({"settings": {"mode": 1, "temp": 20}, "firmware_url": "https://s3.com/firmware.bin"})
            )
            .is_ok()
        );
        assert!(validate_desired(&json!({"gone": null, "list": [1, [2], {"a": 1}]})).is_ok());
        assert!(validate_desired(&json!({"a": {"b": {"c": {"d": {"e": {"f": 1}}}}}})).is_ok(), "6 levels in desired");
    }

    #[test]
    fn invalid_documents_name_the_path() {
        let cases = [
            (json!([1]), "desired", "must be an object"),
            (json!("x"), "desired", "must be an object"),
            (json!({"list": [1, null]}), "desired.list[1]", "may not contain null"),
            (json!({"a": {"b": [{"c": [null]}]}}), "desired.a.b[0].c[0]", "may not contain null"),
            (json!({"a": {"b": {"c": {"d": {"e": {"f": {"g": 1}}}}}}}), "desired.a.b.c.d.e.f", "deeper than"),
            (json!({"blob": "x".repeat(9000)}), "desired", "bytes"),
        ];
        for (doc, path, reason) in cases {
            let err = validate_desired(&doc).err().unwrap_or_else(|| panic!("{doc} accepted"));
            assert_eq!(err.path, path, "{err}");
            assert!(err.reason.contains(reason), "{err}");
        }
    }

    #[test]
    fn holds_compares_like_the_shadow_merges() {
        let current = json!({"settings": {"mode": 1, "temp": 20.0, "extra": true}, "url": "u", "list": [1, 2], "n": 5});
        let yes = [
            json!({}),
            json!({"settings": {"mode": 1}}),
            json!({"settings": {"temp": 20}}),
            json!({"settings": {"mode": 1.0, "temp": 2e1}}),
            json!({"url": "u", "list": [1.0, 2]}),
            json!({"absent": null}),
            json!({"settings": {"absent": null}}),
        ];
        for pushed in yes {
            assert!(holds(Some(&current), &pushed), "{pushed} should hold");
        }
        let no = [
            json!({"settings": {"mode": 2}}),
            json!({"settings": {"new": 1}}),
            json!({"url": "v"}),
            json!({"list": [1]}),
            json!({"list": [2, 1]}),
            json!({"n": "5"}),
            json!({"n": null}),
            json!({"url": {"nested": 1}}),
            json!({"settings": 1}),
        ];
        for pushed in no {
            assert!(!holds(Some(&current), &pushed), "{pushed} should not hold");
        }
        assert!(!holds(None, &json!({"a": 1})));
        assert!(holds(None, &json!({"a": null})));
        assert!(equal(&json!(12345678901234567890u64), &json!(12345678901234567890u64)));
        assert!(!equal(&json!(1), &json!(2)));
    }

    #[test]
    fn written_since_reads_the_metadata_timestamps() {
        let pushed = json!({"settings": {"mode": 1, "gone": null}, "list": [1, 2], "url": "u"});
        let metadata = json!({"settings": {"mode": {"timestamp": 1000}, "temp": {"timestamp": 10}},
                              "list": [{"timestamp": 1001}, {"timestamp": 1000}], "url": {"timestamp": 1002}});
        assert!(written_since(Some(&metadata), &pushed, 1000));
        assert!(!written_since(Some(&metadata), &pushed, 1001), "mode and list[1] are older");
        assert!(!written_since(None, &pushed, 0));
        assert!(
            !written_since(Some(&json!({"settings": {"mode": {"timestamp": 5000}}})), &pushed, 1000),
            "list absent"
        );
        assert!(!written_since(Some(&metadata), &json!({"gone": null}), 0), "deletions alone are no evidence");
    }

    #[test]
    fn touched_since_finds_any_pushed_key_written_since() {
        let pushed = json!({"settings": {"mode": 1, "gone": null}, "list": [1, 2], "url": "u"});
        let metadata = json!({"settings": {"mode": {"timestamp": 1000}, "temp": {"timestamp": 5000}},
                              "list": [{"timestamp": 999}, {"timestamp": 1001}], "url": {"timestamp": 990}});
        assert!(touched_since(Some(&metadata), &pushed, 1000), "mode");
        assert!(touched_since(Some(&metadata), &pushed, 1001), "list[1]");
        assert!(!touched_since(Some(&metadata), &pushed, 1002), "temp is not pushed");
        assert!(!touched_since(None, &pushed, 0), "no metadata (desired cleared)");
        assert!(!touched_since(Some(&json!({"gone": {"timestamp": 5000}})), &json!({"gone": null}), 0), "deletions");
    }
}
