//! What an invocation carries: an SQS batch of hand-offs, a wake-up, the sweeper's round, a scheduled run, an
//! operator's control, a push request; told apart and checked before anything runs.

use aws_lambda_events::sqs::SqsEvent;
use serde::Deserialize;
use serde_json::Value;
use shadow_aws::Continuation;
use shadow_core::push::PushRequestError;
use shadow_core::push::machine::Action;

use super::PushError;

/// What an invocation carries.
#[derive(Debug)]
pub(super) enum Invocation {
    /// Hand-off messages from the push queue, through the event source mapping.
    Queue(SqsEvent),
    /// A hand-off message invoked directly.
    Wake(Continuation),
    /// The sweeper's schedule: wake every push whose lease ran out.
    Sweep,
    /// EventBridge Scheduler's run of the scheduled push: `scheduledRun` is `<aws.scheduler.scheduled-time>`, the
    /// same for every retry of one run.
    Scheduled { run: String, request: Value },
    /// An operator's pause, resume or abort of a push.
    Control { push_id: String, action: Action },
    /// A push request.
    Push(Value),
    /// A push request that wants its answer at once (`{"startPush": request}`, invoked synchronously by the CLI):
    /// validated, its sources checked, its record created, its first segment handed to the queue.
    StartPush(Value),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ControlMessage {
    pause_push: Option<String>,
    resume_push: Option<String>,
    abort_push: Option<String>,
    rollback: Option<bool>,
}

impl ControlMessage {
    fn parse(payload: Value) -> Result<(String, Action), PushError> {
        let refused =
            |field: &str, reason: String| PushError::InvalidRequest(PushRequestError(vec![(field.into(), reason)]));
        let message: ControlMessage = serde_path_to_error::deserialize(payload).map_err(|e| {
            let path = e.path().to_string();
            refused(if path == "." { "request" } else { &path }, e.into_inner().to_string())
        })?;
        let given =
            [&message.pause_push, &message.resume_push, &message.abort_push].iter().filter(|f| f.is_some()).count();
        if given > 1 {
            return Err(refused("request", "give one of pausePush, resumePush, abortPush".into()));
        }
        if message.rollback.is_some() && message.abort_push.is_none() {
            return Err(refused("rollback", "goes only with abortPush".into()));
        }
        let (field, id, action) = match (message.pause_push, message.resume_push, message.abort_push) {
            (Some(id), _, _) => ("pausePush", id, Action::Pause),
            (_, Some(id), _) => ("resumePush", id, Action::Resume),
            (_, _, Some(id)) => ("abortPush", id, Action::Abort { rollback: message.rollback }),
            _ => return Err(refused("request", "give one of pausePush, resumePush, abortPush".into())),
        };
        if id.trim().is_empty() {
            return Err(refused(field, "is empty: give the push id".into()));
        }
        Ok((id, action))
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ScheduledRun {
    scheduled_run: String,
    request: Value,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct StartRequest {
    start_push: Value,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SweepRequest {
    #[allow(dead_code)]
    sweep_pushes: Value,
}

impl Invocation {
    pub(super) fn parse(payload: Value) -> Result<Self, PushError> {
        let invalid = |what: &str, e: serde_json::Error| PushError::InvalidEvent(format!("{what}: {e}"));
        let has = |key: &str| payload.get(key).is_some();
        if payload.get("Records").is_some_and(Value::is_array) {
            return serde_json::from_value(payload).map(Self::Queue).map_err(|e| invalid("SQS event", e));
        }
        if has("continuePush") {
            return serde_json::from_value(payload).map(Self::Wake).map_err(|e| invalid("continuePush", e));
        }
        if has("sweepPushes") {
            return serde_json::from_value::<SweepRequest>(payload)
                .map(|_| Self::Sweep)
                .map_err(|e| invalid("sweepPushes", e));
        }
        if has("pausePush") || has("resumePush") || has("abortPush") {
            let (push_id, action) = ControlMessage::parse(payload)?;
            return Ok(Self::Control { push_id, action });
        }
        if has("startPush") {
            return serde_json::from_value::<StartRequest>(payload)
                .map(|s| Self::StartPush(s.start_push))
                .map_err(|e| invalid("startPush", e));
        }
        if has("scheduledRun") {
            return serde_json::from_value::<ScheduledRun>(payload)
                .map(|s| Self::Scheduled { run: s.scheduled_run, request: s.request })
                .map_err(|e| invalid("scheduledRun", e));
        }
        Ok(Self::Push(payload))
    }
}

/// The scheduled push request with a push id of its own for this run: `<pushId or "scheduled">-<run>`, so that every
/// retry of one run is the same push and the next run is a new one.
pub(super) fn scheduled_request(mut request: Value, run: &str) -> Result<Value, PushError> {
    let Some(fields) = request.as_object_mut() else {
        return Err(PushError::InvalidRequest(PushRequestError(vec![(
            "request".into(),
            "must be a JSON object".into(),
        )])));
    };
    let prefix = match fields.get("pushId") {
        None => "scheduled".to_owned(),
        Some(Value::String(p)) => p.clone(),
        Some(other) => {
            return Err(PushError::InvalidRequest(PushRequestError(vec![(
                "pushId".into(),
                format!("must be a string, found {other}"),
            )])));
        }
    };
    let run: String = run.chars().filter(|c| c.is_ascii_alphanumeric() || "-_.:".contains(*c)).collect();
    if run.is_empty() {
        return Err(PushError::InvalidEvent("scheduledRun is empty: expected <aws.scheduler.scheduled-time>".into()));
    }
    fields.insert("pushId".into(), Value::String(format!("{prefix}-{run}")));
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;

    use serde_json::json;
    use shadow_core::push::validate_request;

    #[test]
    fn events_are_told_apart() {
        assert!(matches!(Invocation::parse(json!({"Records": []})), Ok(Invocation::Queue(_))));
        assert!(matches!(Invocation::parse(json!({"continuePush": "p", "segment": 2})), Ok(Invocation::Wake(_))));
        assert!(matches!(Invocation::parse(json!({"sweepPushes": true})), Ok(Invocation::Sweep)));
        assert!(matches!(
            Invocation::parse(json!({"scheduledRun": "2026-11-27T03:00:00Z", "request": {}})),
            Ok(Invocation::Scheduled { .. })
        ));
        assert!(matches!(Invocation::parse(json!({"desired": {}})), Ok(Invocation::Push(_))));
        assert!(matches!(Invocation::parse(json!({"startPush": {"desired": {}}})), Ok(Invocation::StartPush(_))));
        let bad =
            Invocation::parse(json!({"startPush": {}, "colour": 1})).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(bad.contains("startPush") && bad.contains("colour"), "{bad}");
        let bad = Invocation::parse(json!({"continuePush": 5})).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(bad.contains("continuePush"), "{bad}");
    }

    #[test]
    fn a_scheduled_run_gets_a_stable_push_id() {
        let request = json!({"desired": {"a": 1}, "targets": {"things": ["t"]}});
        let one = scheduled_request(request.clone(), "2026-11-27T03:00:00Z").ok();
        let again = scheduled_request(request.clone(), "2026-11-27T03:00:00Z").ok();
        let next = scheduled_request(request, "2026-11-28T03:00:00Z").ok();
        assert_eq!(one.as_ref().map(|r| r["pushId"].clone()), Some(json!("scheduled-2026-11-27T03:00:00Z")));
        assert_eq!(one, again);
        assert_ne!(one, next);
        let named = scheduled_request(json!({"pushId": "nightly"}), "2026-11-27T03:00:00Z").ok();
        assert_eq!(named.map(|r| r["pushId"].clone()), Some(json!("nightly-2026-11-27T03:00:00Z")));
        assert!(scheduled_request(json!([1]), "t").is_err());
    }

    #[test]
    fn control_messages_are_validated() {
        let parsed = |v: Value| Invocation::parse(v).map_err(|e| e.to_string());
        assert!(matches!(parsed(json!({"pausePush": "p"})), Ok(Invocation::Control { action: Action::Pause, .. })));
        assert!(matches!(parsed(json!({"resumePush": "p"})), Ok(Invocation::Control { action: Action::Resume, .. })));
        assert!(matches!(
            parsed(json!({"abortPush": "p", "rollback": true})),
            Ok(Invocation::Control { action: Action::Abort { rollback: Some(true) }, .. })
        ));
        for (bad, field) in [
            (json!({"pausePush": "p", "rollback": true}), "rollback"),
            (json!({"pausePush": "p", "abortPush": "p"}), "request"),
            (json!({"pausePush": 5}), "pausePush"),
            (json!({"abortPush": ""}), "abortPush"),
            (json!({"abortPush": "p", "colour": 1}), "colour"),
        ] {
            let error = parsed(bad.clone()).err().unwrap_or_default();
            assert!(error.contains(&format!("`{field}`")), "{bad}: {error}");
        }
    }

    /// Every sample in events/push/ is a valid event, and every push request in it a valid request as the function
    /// takes it when invoked directly (`cargo lambda invoke --data-file`, `aws lambda invoke`): with its own
    /// `pushId`, or a scheduled run's.
    #[test]
    fn the_samples_are_valid() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../events/push");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            let value: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{:?}: {e}", entry.path()));
            match Invocation::parse(value) {
                Ok(Invocation::Push(request) | Invocation::StartPush(request)) => {
                    if let Err(e) = validate_request(&request, 400, None) {
                        panic!("{:?}: {e}", entry.path());
                    }
                }
                Ok(Invocation::Scheduled { run, request }) => {
                    let request =
                        scheduled_request(request, &run).unwrap_or_else(|e| panic!("{:?}: {e}", entry.path()));
                    if let Err(e) = validate_request(&request, 400, None) {
                        panic!("{:?}: {e}", entry.path());
                    }
                }
                Ok(_) => {}
                Err(e) => panic!("{:?}: {e}", entry.path()),
            }
            seen += 1;
        }
        assert!(seen >= 9, "{seen} samples in {dir:?}");
    }
}
