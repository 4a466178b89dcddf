//! The push request, validated completely before the first shadow request.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::rollout::{ROLLBACK_SUFFIX, Rollout};
use crate::document::validate_desired;
use crate::names::{ShadowName, ThingGroupName, ThingName};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawRequest {
    push_id: Option<String>,
    shadow_name: Option<String>,
    desired: Option<Value>,
    targets: Option<RawTargets>,
    skip_unchanged: Option<bool>,
    dry_run: Option<bool>,
    max_requests_per_second: Option<u32>,
    rollout: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawTargets {
    things: Option<Vec<String>>,
    thing_group: Option<String>,
    recursive: Option<bool>,
    query: Option<String>,
}

/// What a push targets: the union of its kinds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Targets {
    /// De-duplicated, in the request's order.
    pub things: Vec<ThingName>,
    pub thing_group: Option<ThingGroupName>,
    pub recursive: bool,
    pub query: Option<String>,
}

/// A validated push.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PushPlan {
    pub push_id: String,
    pub shadow_name: Option<ShadowName>,
    pub desired: Value,
    pub targets: Targets,
    pub skip_unchanged: bool,
    pub dry_run: bool,
    pub max_requests_per_second: u32,
    /// Staged phases gated by what devices report; `None`: every target at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Rollout>,
}

impl PushPlan {
    /// The update document: the push id is the `clientToken`, so the history shows which push changed what.
    pub fn update_document(&self) -> String {
        json!({"state": {"desired": self.desired}, "clientToken": self.push_id}).to_string()
    }

    /// The update document, accepted only while the shadow is at `version` (AWS answers 409 otherwise): for a thing
    /// whose earlier update may still land, so that the two cannot both apply.
    pub fn update_document_at(&self, version: u64) -> String {
        json!({"state": {"desired": self.desired}, "clientToken": self.push_id, "version": version}).to_string()
    }

    /// The rollback of one thing: its previous values, as `<pushId>.rollback`, at the version just read.
    pub fn rollback_document(&self, previous: &Value, version: Option<u64>) -> String {
        let token = format!("{}{ROLLBACK_SUFFIX}", self.push_id);
        match version {
            Some(v) => json!({"state": {"desired": previous}, "clientToken": token, "version": v}),
            None => json!({"state": {"desired": previous}, "clientToken": token}),
        }
        .to_string()
    }
}

/// Every problem found in a request, each naming its field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid push request: {}", .0.iter().map(|(f, r)| format!("`{f}` {r}")).collect::<Vec<_>>().join("; "))]
pub struct PushRequestError(pub Vec<(String, String)>);

/// The longest `clientToken` AWS IoT accepts.
pub const MAX_PUSH_ID_BYTES: usize = 64;
/// The most that listed things (`targets.things`, each name's bytes and one byte of list overhead, as DynamoDB
/// counts them) may take: the validated request is kept in one item of the push table, and a DynamoDB item holds at
/// most 400 KB. The rest (the desired document, the rollout, the resolved sources) keeps 100 KB of room.
pub const MAX_LISTED_THINGS_BYTES: usize = 300_000;
const MAX_QUERY_BYTES: usize = 1024;

/// Why `id` cannot name a push (it is sent as the updates' `clientToken`), when it cannot.
pub fn push_id_problem(id: &str) -> Option<String> {
    if id.is_empty() {
        return Some("is empty".into());
    }
    if id.len() > MAX_PUSH_ID_BYTES {
        return Some(format!("is {} bytes; a clientToken may have at most {MAX_PUSH_ID_BYTES}", id.len()));
    }
    id.chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "-_.:".contains(*c)))
        .map(|c| format!("contains {c:?}; use letters, digits and - _ . :"))
}

/// Validates `request` against the account quota `max_tps`. `new_id` names a push that did not choose its id (the
/// CLI, before it sends the request); `None` requires `pushId` (the function: an id drawn there would differ at each
/// delivery of the same request).
pub fn validate_request(
    request: &Value,
    max_tps: u32,
    new_id: Option<&dyn Fn() -> String>,
) -> Result<PushPlan, PushRequestError> {
    if !request.is_object() {
        let found = crate::history::type_name(request);
        return Err(PushRequestError(vec![("request".into(), format!("must be a JSON object, found {found}"))]));
    }
    let raw: RawRequest = serde_path_to_error::deserialize(request).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { "request".to_owned() } else { path };
        PushRequestError(vec![(field, e.into_inner().to_string())])
    })?;
    let mut errors: Vec<(String, String)> = Vec::new();

    let push_id = match (raw.push_id, new_id) {
        (None, Some(new_id)) => new_id(),
        (None, None) => {
            fail(
                &mut errors,
                "pushId",
                "is required: it names the push, and only a name that the request carries stays the same when \
                 Lambda delivers or retries it again (one request, one push)"
                    .into(),
            );
            String::new()
        }
        (Some(id), _) => {
            if let Some(problem) = push_id_problem(&id) {
                fail(&mut errors, "pushId", problem);
            }
            id
        }
    };
    let shadow_name = match raw.shadow_name.map(ShadowName::parse_user).transpose() {
        Ok(name) => name,
        Err(e) => {
            fail(&mut errors, "shadowName", e.to_string());
            None
        }
    };
    let desired = match raw.desired {
        None => {
            fail(&mut errors, "desired", "is missing".into());
            Value::Null
        }
        Some(desired) => {
            if let Err(e) = validate_desired(&desired) {
                fail(&mut errors, &e.path, e.reason);
            } else if desired.as_object().is_some_and(|o| o.is_empty()) {
                fail(&mut errors, "desired", "is empty: there is nothing to push".into());
            }
            desired
        }
    };

    let mut targets = Targets { things: Vec::new(), thing_group: None, recursive: false, query: None };
    match raw.targets {
        None => fail(&mut errors, "targets", "is missing: give things, thingGroup or query".into()),
        Some(raw) => {
            let mut seen = std::collections::HashSet::new();
            for (i, name) in raw.things.iter().flatten().enumerate() {
                match ThingName::parse(name.as_str()) {
                    Ok(thing) => {
                        if seen.insert(thing.clone()) {
                            targets.things.push(thing);
                        }
                    }
                    Err(e) => fail(&mut errors, &format!("targets.things[{i}]"), format!("{name:?} {e}")),
                }
            }
            match raw.thing_group.map(ThingGroupName::parse).transpose() {
                Ok(group) => targets.thing_group = group,
                Err(e) => fail(&mut errors, "targets.thingGroup", e.to_string()),
            }
            targets.recursive = raw.recursive.unwrap_or(false);
            if targets.recursive && targets.thing_group.is_none() {
                fail(&mut errors, "targets.recursive", "needs targets.thingGroup".into());
            }
            match raw.query {
                Some(q) if q.trim().is_empty() => fail(&mut errors, "targets.query", "is empty".into()),
                Some(q) if q.len() > MAX_QUERY_BYTES => {
                    fail(&mut errors, "targets.query", format!("is {} bytes; at most {MAX_QUERY_BYTES}", q.len()))
                }
                q => targets.query = q,
            }
            let listed: usize = targets.things.iter().map(|t| t.as_str().len() + 1).sum();
            if listed > MAX_LISTED_THINGS_BYTES {
                let per_name = listed / targets.things.len().max(1);
                fail(
                    &mut errors,
                    "targets.things",
                    format!(
                        "lists {} things in {listed} bytes; at most {MAX_LISTED_THINGS_BYTES} bytes (about {} names \
                         of this length) fit, because a push's plan is kept in one DynamoDB item (400 KB): target a \
                         larger fleet with targets.thingGroup or targets.query",
                        targets.things.len(),
                        MAX_LISTED_THINGS_BYTES / per_name.max(1)
                    ),
                );
            }
            let any = raw.things.as_ref().is_some_and(|t| !t.is_empty())
                || targets.thing_group.is_some()
                || targets.query.is_some();
            if !any && !errors.iter().any(|(f, _)| f.starts_with("targets")) {
                fail(&mut errors, "targets", "names no things: give things, thingGroup or query".into());
            }
        }
    }
    let max_requests_per_second = match raw.max_requests_per_second {
        None => max_tps,
        Some(0) => {
            fail(&mut errors, "maxRequestsPerSecond", "must be at least 1".into());
            max_tps
        }
        Some(n) if n > max_tps => {
            fail(
                &mut errors,
                "maxRequestsPerSecond",
                format!("is {n}, above the account quota PUSH_MAX_TPS={max_tps}"),
            );
            max_tps
        }
        Some(n) => n,
    };

    let dry_run = raw.dry_run.unwrap_or(false);
    let rollout = raw.rollout.as_ref().and_then(|r| Rollout::validate(r, &mut errors));
    if raw.rollout.is_some() {
        if dry_run {
            fail(&mut errors, "rollout", "cannot go with dryRun: a dry run updates nothing to judge".into());
        }
        let longest = MAX_PUSH_ID_BYTES - ROLLBACK_SUFFIX.len();
        if push_id.len() > longest && push_id.len() <= MAX_PUSH_ID_BYTES {
            fail(
                &mut errors,
                "pushId",
                format!(
                    "is {} bytes; with a rollout at most {longest}, so that the rollback's clientToken \
                     `<pushId>{ROLLBACK_SUFFIX}` fits in {MAX_PUSH_ID_BYTES}",
                    push_id.len()
                ),
            );
        }
    }

    if !errors.is_empty() {
        return Err(PushRequestError(errors));
    }
    Ok(PushPlan {
        push_id,
        shadow_name,
        desired,
        targets,
        skip_unchanged: raw.skip_unchanged.unwrap_or(true),
        dry_run,
        max_requests_per_second,
        rollout,
    })
}

fn fail(errors: &mut Vec<(String, String)>, field: &str, reason: String) {
    errors.push((field.to_owned(), reason));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(request: Value) -> PushPlan {
        validate_request(&request, 400, Some(&|| "generated".into())).expect("a valid request")
    }

    fn refused(request: Value) -> Vec<(String, String)> {
        match validate_request(&request, 400, Some(&|| "generated".into())) {
            Ok(p) => panic!("accepted {p:?}"),
            Err(e) => e.0,
        }
    }

    #[test]
    fn the_issue_example() {
        let p = plan(json!({
            "pushId": "fw-2026-11", "shadowName": "config",
            "desired": {"settings": {"mode": 1, "temp": 20}, "firmware_url": "https://s3.com/firmware.bin"},
            "targets": {"things": ["Test-Device", "Test-Device", "b"], "thingGroup": "prod", "recursive": true,
                        "query": "attributes.site:tokyo"},
            "skipUnchanged": true, "dryRun": false, "maxRequestsPerSecond": 300
        }));
        assert_eq!(p.push_id, "fw-2026-11");
        assert_eq!(p.shadow_name.as_ref().map(|s| s.as_str()), Some("config"));
        let things: Vec<&str> = p.targets.things.iter().map(|t| t.as_str()).collect();
        assert_eq!(things, ["Test-Device", "b"], "de-duplicated in order");
        assert!(p.targets.recursive);
        assert_eq!(p.max_requests_per_second, 300);
        let doc: Value = serde_json::from_str(&p.update_document()).expect("the update document is JSON");
        assert_eq!(doc["clientToken"], "fw-2026-11");
        assert_eq!(doc["state"]["desired"]["settings"]["temp"], 20);
    }

    /// Listed things beyond what the plan item holds are refused, naming the field, the count, the bytes and the
    /// limit; up to the limit they are taken.
    #[test]
    fn listed_things_beyond_the_plan_item_are_refused() {
        let things = |n: usize| (0..n).map(|i| format!("sensor-{i:08}")).collect::<Vec<_>>();
        let errors = refused(json!({"desired": {"a": 1}, "targets": {"things": things(50_000)}}));
        let (field, reason) = &errors[0];
        assert_eq!(field, "targets.things");
        assert!(reason.contains("50000 things in 800000 bytes"), "{reason}");
        assert!(reason.contains(&format!("at most {MAX_LISTED_THINGS_BYTES} bytes")), "{reason}");
        assert!(reason.contains("about 18750 names") && reason.contains("thingGroup"), "{reason}");
        let fits = MAX_LISTED_THINGS_BYTES / 16;
        assert_eq!(plan(json!({"desired": {"a": 1}, "targets": {"things": things(fits)}})).targets.things.len(), fits);
        refused(json!({"desired": {"a": 1}, "targets": {"things": things(fits + 1)}}));
    }

    #[test]
    fn defaults() {
        let p = plan(json!({"desired": {"a": 1}, "targets": {"thingGroup": "g"}, "shadowName": null}));
        assert_eq!(
            (p.push_id.as_str(), p.skip_unchanged, p.dry_run, p.max_requests_per_second),
            ("generated", true, false, 400)
        );
        assert_eq!(p.shadow_name, None);
    }

    #[test]
    fn every_bad_field_is_named() {
        let long_id = "x".repeat(65);
        let cases: Vec<(Value, &str, &str)> = vec![
            (json!([1]), "request", "must be a JSON object"),
            (
                json!({"desired": {"a": 1}, "targets": {"things": ["a"]}, "colour": 1}),
                "colour",
                "unknown field `colour`",
            ),
            (
                json!({"desired": {"a": 1}, "targets": {"things": ["a"], "group": "g"}}),
                "targets.group",
                "unknown field `group`",
            ),
            (json!({"desired": {"a": 1}, "targets": {"things": "a"}}), "targets.things", "invalid type"),
            (json!({"desired": {"a": 1}, "targets": {"things": ["a"]}, "dryRun": "yes"}), "dryRun", "invalid type"),
            (
                json!({"desired": {"a": 1}, "targets": {"things": ["a"]}, "maxRequestsPerSecond": -1}),
                "maxRequestsPerSecond",
                "invalid value",
            ),
            (json!({"desired": [1], "targets": {"things": ["a"]}}), "desired", "must be an object"),
            (json!({"targets": {"things": ["a"]}}), "desired", "is missing"),
            (json!({"desired": {}, "targets": {"things": ["a"]}}), "desired", "nothing to push"),
            (json!({"desired": {"l": [1, null]}, "targets": {"things": ["a"]}}), "desired.l[1]", "null"),
            (
                json!({"desired": {"a": {"b": {"c": {"d": {"e": {"f": {"g": 1}}}}}}}, "targets": {"things": ["a"]}}),
                "desired.a.b.c.d.e.f",
                "deeper",
            ),
            (json!({"desired": {"big": "x".repeat(8200)}, "targets": {"things": ["a"]}}), "desired", "8192"),
            (
                json!({"desired": {"a": 1}, "targets": {"things": ["ok", "bad/name"]}}),
                "targets.things[1]",
                "contains '/'",
            ),
            (
                json!({"desired": {"a": 1}, "targets": {"thingGroup": "bad group"}}),
                "targets.thingGroup",
                "contains ' '",
            ),
            (
                json!({"desired": {"a": 1}, "targets": {"things": ["a"]}, "shadowName": "$reserved"}),
                "shadowName",
                "AWS reserves",
            ),
            (
                json!({"desired": {"a": 1}, "targets": {"things": ["a"]}, "shadowName": "a/b"}),
                "shadowName",
                "contains '/'",
            ),
            (json!({"desired": {"a": 1}, "targets": {"things": ["a"]}, "pushId": long_id}), "pushId", "65 bytes"),
            (json!({"desired": {"a": 1}, "targets": {"things": ["a"]}, "pushId": "a b"}), "pushId", "contains ' '"),
            (json!({"desired": {"a": 1}}), "targets", "is missing"),
            (json!({"desired": {"a": 1}, "targets": {}}), "targets", "names no things"),
            (json!({"desired": {"a": 1}, "targets": {"things": []}}), "targets", "names no things"),
            (
                json!({"desired": {"a": 1}, "targets": {"things": ["a"], "recursive": true}}),
                "targets.recursive",
                "needs",
            ),
            (json!({"desired": {"a": 1}, "targets": {"query": " "}}), "targets.query", "is empty"),
            (
                json!({"desired": {"a": 1}, "targets": {"things": ["a"]}, "maxRequestsPerSecond": 0}),
                "maxRequestsPerSecond",
                "at least 1",
            ),
            (
                json!({"desired": {"a": 1}, "targets": {"things": ["a"]}, "maxRequestsPerSecond": 401}),
                "maxRequestsPerSecond",
                "PUSH_MAX_TPS=400",
            ),
        ];
        for (request, field, reason) in cases {
            let errors = refused(request.clone());
            assert!(
                errors.iter().any(|(f, r)| f == field && r.contains(reason)),
                "{request}: {errors:?} should name {field} with {reason:?}"
            );
        }
    }

    #[test]
    fn all_problems_are_reported_at_once() {
        let errors = refused(json!({"desired": [1], "targets": {"things": ["bad/1"]}, "pushId": ""}));
        let fields: Vec<&str> = errors.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(fields, ["pushId", "desired", "targets.things[0]"]);
    }

    #[test]
    fn a_rollout_is_checked_with_the_request() {
        let base = json!({"desired": {"a": 1}, "targets": {"things": ["a"]},
                          "rollout": {"phases": [{"percent": 10}, {"percent": 100}], "bakeSeconds": 5}});
        let p = plan(base.clone());
        assert_eq!(p.rollout.as_ref().map(|r| r.phases.len()), Some(2));
        let mut dry = base.clone();
        dry["dryRun"] = json!(true);
        assert!(refused(dry).iter().any(|(f, r)| f == "rollout" && r.contains("dryRun")));
        let mut long = base.clone();
        long["pushId"] = json!("x".repeat(56));
        assert!(refused(long).iter().any(|(f, r)| f == "pushId" && r.contains(".rollback")));
        let mut bad = base;
        bad["rollout"]["phases"] = json!([{"percent": 50}, {"percent": 20}]);
        bad["desired"] = json!({});
        let errors = refused(bad);
        assert!(errors.iter().any(|(f, _)| f == "desired"), "{errors:?}");
        assert!(errors.iter().any(|(f, _)| f == "rollout.phases[1].percent"), "{errors:?}");
        let without = plan(json!({"desired": {"a": 1}, "targets": {"things": ["a"]}}));
        let text = serde_json::to_string(&without).unwrap_or_default();
        assert!(!text.contains("rollout"), "plans without a rollout keep their digest: {text}");
    }
}
