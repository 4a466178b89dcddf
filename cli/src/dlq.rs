//! `shadow-fleet dlq list|replay --function history|push`: the messages the dead-letter and on-failure queues keep
//! for a function, why each failed, and their replay. A replay invokes the function synchronously with the message's
//! original payload (as its invocation carried it) and deletes the message only once the function accepted it; a
//! message whose replay fails again is made visible again, and stays.

use std::time::Duration;

use aws_sdk_lambda::{primitives::Blob, types::InvocationType};
use aws_sdk_sqs::types::MessageSystemAttributeName;
use clap::Subcommand;
use serde_json::{Value, json};

use crate::error::CliError;
use crate::output::{self, Format};
use crate::progress::compact;
use crate::{Context, when};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Function {
    /// shadow-history: HistoryDlq (failed asynchronous invocations), RuleErrorQueue (messages a rule could not
    /// hand over) and, with QueuedIngestion, HistoryIngestDlq.
    History,
    /// shadow-push: PushDlq (failed asynchronous invocations, hand-offs that failed three receives, schedule runs
    /// the scheduler could not deliver).
    Push,
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// The messages kept for the function, with why each failed and what it carried; none is removed.
    List {
        #[arg(long, value_enum)]
        function: Function,
        /// At most this many messages per queue.
        #[arg(long, default_value = "100", value_parser = crate::checks::count, allow_hyphen_values = true)]
        limit: usize,
    },
    /// Invoke the function with each message's original payload; delete a message once the function accepted it,
    /// keep it when it fails again. Exit 1 when any replay failed.
    Replay {
        #[arg(long, value_enum)]
        function: Function,
        /// Only this message (repeat for more); default every message.
        #[arg(long = "message-id", value_name = "ID")]
        message_ids: Vec<String>,
        /// At most this many messages per queue.
        #[arg(long, default_value = "100", value_parser = crate::checks::count, allow_hyphen_values = true)]
        limit: usize,
    },
}

/// How long a listed message stays hidden from other readers while this command holds it.
const HOLD: Duration = Duration::from_secs(60);

/// One kept message, read.
#[derive(Debug, Clone, PartialEq)]
pub struct Dead {
    pub queue: String,
    pub message_id: String,
    pub receipt: String,
    pub sent_ms: Option<u64>,
    /// What kind of failure kept it.
    pub kind: &'static str,
    pub why: String,
    /// The invocation to replay, when the message holds one.
    pub payload: Option<Value>,
}

/// Reads a kept message: a Lambda on-failure record, an IoT rule's error action message, a hand-off or scheduled
/// run, or an event as the rule queued it. Pure.
pub fn read_message(queue: &str, body: &str, attributes: &[(String, String)]) -> (&'static str, String, Option<Value>) {
    let attribute = |name: &str| attributes.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let Ok(parsed) = serde_json::from_str::<Value>(body) else {
        return ("unreadable", "the message is not JSON".into(), None);
    };
    if let Some(payload) = parsed.get("requestPayload") {
        let error_type = parsed["responsePayload"]["errorType"].as_str().unwrap_or_default();
        let message = parsed["responsePayload"]["errorMessage"].as_str().unwrap_or_default();
        let condition = parsed["requestContext"]["condition"].as_str().unwrap_or("failed");
        let why = if error_type.is_empty() { condition.to_owned() } else { format!("{error_type}: {message}") };
        return ("on-failure", why, Some(payload.clone()));
    }
    if let Some(original) = parsed.get("base64OriginalPayload").and_then(Value::as_str) {
        let why = parsed["failures"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| f["errorMessage"].as_str())
            .collect::<Vec<_>>()
            .join("; ");
        let decoded = aws_smithy_types::base64::decode(original).ok().and_then(|b| serde_json::from_slice(&b).ok());
        // The rule's SQL adds the topic and the time it received the message (SELECT *, topic() AS topic,
        // timestamp() AS receivedAt): the replay carries both.
        let payload = match (decoded, parsed.get("topic").and_then(Value::as_str)) {
            (Some(Value::Object(mut fields)), Some(topic)) => {
                fields.insert("topic".into(), json!(topic));
                let received = attribute("SentTimestamp").and_then(|t| t.parse::<u64>().ok());
                fields.entry("receivedAt").or_insert_with(|| json!(received.unwrap_or_else(crate::now_ms)));
                Some(Value::Object(fields))
            }
            _ => None,
        };
        return ("rule error", if why.is_empty() { "the rule's action failed".into() } else { why }, payload);
    }
    if let Some(code) = attribute("ERROR_CODE") {
        let message = attribute("ERROR_MESSAGE").unwrap_or_default();
        return ("schedule", format!("{code}: {message}"), Some(parsed));
    }
    if parsed.get("continuePush").is_some() {
        return ("hand-off", "a hand-off that failed three receives".into(), Some(parsed));
    }
    let kind = if queue.contains("Ingest") { "queued event" } else { "message" };
    (kind, "failed every receive of its queue".into(), Some(parsed))
}

impl Function {
    fn name(self) -> &'static str {
        match self {
            Self::History => "shadow-history",
            Self::Push => "shadow-push",
        }
    }
}

/// The queues that keep `function`'s failed messages, named by their output (the ones known).
fn queues(ctx: &Context, function: Function) -> Result<Vec<(String, String)>, CliError> {
    let l = &ctx.locations;
    let found: Vec<(String, String)> = match function {
        Function::History => [
            ("HistoryDlq", &l.history_dlq),
            ("RuleErrorQueue", &l.rule_error_queue),
            ("HistoryIngestDlq", &l.history_ingest_dlq),
        ]
        .into_iter()
        .filter_map(|(name, url)| url.clone().map(|u| (name.to_owned(), u)))
        .collect(),
        Function::Push => l.push_dlq.clone().map(|u| ("PushDlq".to_owned(), u)).into_iter().collect(),
    };
    if found.is_empty() {
        let vars = match function {
            Function::History => "HISTORY_DLQ_URL, RULE_ERROR_QUEUE_URL",
            Function::Push => "PUSH_DLQ_URL",
        };
        return Err(CliError::Failure(format!(
            "no dead-letter queue of {} in {}: pass --stack NAME or set {vars}",
            function.name(),
            l.origin
        )));
    }
    Ok(found)
}

/// Up to `limit` messages of `url`, each held for [`HOLD`]: every message once.
async fn receive(sqs: &aws_sdk_sqs::Client, name: &str, url: &str, limit: usize) -> Result<Vec<Dead>, CliError> {
    let mut dead: Vec<Dead> = Vec::new();
    while dead.len() < limit {
        let got = sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(i32::try_from((limit - dead.len()).min(10)).unwrap_or(10))
            .visibility_timeout(HOLD.as_secs() as i32)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .send()
            .await
            .map_err(CliError::sdk(format!("receiving from queue {name} ({url})")))?;
        let messages = got.messages.unwrap_or_default();
        if messages.is_empty() {
            break;
        }
        for message in messages {
            let body = message.body().unwrap_or_default();
            let mut attributes: Vec<(String, String)> =
                message.attributes().into_iter().flatten().map(|(k, v)| (k.as_str().to_owned(), v.clone())).collect();
            for (key, value) in message.message_attributes().into_iter().flatten() {
                attributes.push((key.clone(), value.string_value().unwrap_or_default().to_owned()));
            }
            let (kind, why, payload) = read_message(name, body, &attributes);
            let sent_ms = attributes.iter().find(|(k, _)| k == "SentTimestamp").and_then(|(_, v)| v.parse().ok());
            let id = message.message_id().unwrap_or_default().to_owned();
            if dead.iter().any(|d| d.message_id == id) {
                continue;
            }
            dead.push(Dead {
                queue: name.to_owned(),
                message_id: id,
                receipt: message.receipt_handle().unwrap_or_default().to_owned(),
                sent_ms,
                kind,
                why,
                payload,
            });
        }
    }
    Ok(dead)
}

/// Makes a held message visible again at once.
async fn release(sqs: &aws_sdk_sqs::Client, url: &str, dead: &Dead) -> Result<(), CliError> {
    sqs.change_message_visibility()
        .queue_url(url)
        .receipt_handle(&dead.receipt)
        .visibility_timeout(0)
        .send()
        .await
        .map(|_| ())
        .map_err(CliError::sdk(format!("releasing message {} of queue {}", dead.message_id, dead.queue)))
}

fn summary(payload: &Option<Value>) -> String {
    let Some(payload) = payload else { return "(nothing to replay)".into() };
    let text = compact(payload);
    if text.chars().count() > 80 { format!("{}…", text.chars().take(80).collect::<String>()) } else { text }
}

fn dead_json(dead: &Dead) -> Value {
    json!({"queue": dead.queue, "messageId": dead.message_id, "sentAt": dead.sent_ms, "kind": dead.kind,
           "why": dead.why, "payload": dead.payload})
}

pub async fn run(ctx: &Context, command: DlqCommand) -> Result<i32, CliError> {
    let sqs = aws_sdk_sqs::Client::new(&ctx.config);
    match command {
        DlqCommand::List { function, limit } => {
            let mut table = output::table(&["queue", "message", "sent", "kind", "why it failed", "payload"]);
            let mut count = 0;
            for (name, url) in queues(ctx, function)? {
                let kept = receive(&sqs, &name, &url, limit).await?;
                for dead in &kept {
                    release(&sqs, &url, dead).await?;
                }
                for dead in kept {
                    count += 1;
                    match ctx.format {
                        Format::Json => output::json_line(&dead_json(&dead)),
                        Format::Table => {
                            let sent = dead.sent_ms.map(when::format_ms).unwrap_or_default();
                            table.add_row(vec![
                                dead.queue.clone(),
                                dead.message_id.clone(),
                                sent,
                                dead.kind.to_owned(),
                                dead.why.clone(),
                                summary(&dead.payload),
                            ]);
                        }
                    }
                }
            }
            if ctx.format == Format::Table {
                if count == 0 {
                    eprintln!("no messages kept for {}", function.name());
                } else {
                    println!("{table}");
                }
            }
            Ok(0)
        }
        DlqCommand::Replay { function, message_ids, limit } => replay(ctx, &sqs, function, &message_ids, limit).await,
    }
}

/// How long a replay waits for the function: a history event is recorded within shadow-history's timeout (30 s); a
/// push's message runs a whole segment, up to shadow-push's timeout (900 s), then hands off.
fn replay_within(function: Function) -> std::time::Duration {
    match function {
        Function::History => crate::INVOKE_WITHIN,
        Function::Push => std::time::Duration::from_secs(960),
    }
}

async fn replay(
    ctx: &Context,
    sqs: &aws_sdk_sqs::Client,
    function: Function,
    only: &[String],
    limit: usize,
) -> Result<i32, CliError> {
    let target = match function {
        Function::History => ctx.locations.history_function()?,
        Function::Push => ctx.locations.push_function()?,
    };
    let lambda = aws_sdk_lambda::Client::new(&ctx.config);
    let (mut replayed, mut kept) = (0, 0);
    for (name, url) in queues(ctx, function)? {
        for dead in receive(sqs, &name, &url, limit).await? {
            if !only.is_empty() && !only.contains(&dead.message_id) {
                release(sqs, &url, &dead).await?;
                continue;
            }
            let outcome = match &dead.payload {
                None => Err(format!("{}: nothing to replay ({})", dead.kind, dead.why)),
                Some(payload) => {
                    let invoked = lambda
                        .invoke()
                        .function_name(&target)
                        .invocation_type(InvocationType::RequestResponse)
                        .payload(Blob::new(payload.to_string()))
                        .customize()
                        .config_override(crate::invoke_timeouts(replay_within(function)))
                        .send()
                        .await;
                    match invoked {
                        Err(e) => Err(format!("invoking {target}: {}", crate::error::causes(&e))),
                        Ok(answer) => match answer.function_error() {
                            Some(kind) => {
                                let body = answer.payload().map(|p| p.as_ref().to_vec()).unwrap_or_default();
                                let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                                let error_type = body["errorType"].as_str().unwrap_or(kind).to_owned();
                                Err(format!("{error_type}: {}", body["errorMessage"].as_str().unwrap_or_default()))
                            }
                            None => Ok(()),
                        },
                    }
                }
            };
            let (state, error) = match outcome {
                Ok(()) => {
                    sqs.delete_message()
                        .queue_url(&url)
                        .receipt_handle(&dead.receipt)
                        .send()
                        .await
                        .map_err(CliError::sdk(format!("deleting message {} of queue {name}", dead.message_id)))?;
                    replayed += 1;
                    ("replayed, deleted", None)
                }
                Err(error) => {
                    release(sqs, &url, &dead).await?;
                    kept += 1;
                    ("failed again, kept", Some(error))
                }
            };
            match ctx.format {
                Format::Json => {
                    let mut line = dead_json(&dead);
                    line["replayed"] = json!(error.is_none());
                    line["error"] = json!(error);
                    output::json_line(&line);
                }
                Format::Table => match &error {
                    None => println!("{} {}: {state}", dead.queue, dead.message_id),
                    Some(error) => println!("{} {}: {state}: {error}", dead.queue, dead.message_id),
                },
            }
        }
    }
    eprintln!("{replayed} replayed and deleted, {kept} kept");
    Ok(if kept > 0 { 1 } else { 0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_of_kept_message_is_read_with_its_reason_and_payload() {
        let on_failure = json!({"requestContext": {"condition": "RetriesExhausted"},
            "requestPayload": {"topic": "t", "current": {}},
            "responsePayload": {"errorType": "Retryable.Store", "errorMessage": "throttled"}});
        let (kind, why, payload) = read_message("HistoryDlq", &on_failure.to_string(), &[]);
        assert_eq!(
            (kind, why.as_str(), payload),
            ("on-failure", "Retryable.Store: throttled", Some(json!({"topic": "t", "current": {}})))
        );

        let original = aws_smithy_types::base64::encode(br#"{"current":{"version":3}}"#);
        let rule = json!({"topic": "$aws/things/a/shadow/update/documents", "base64OriginalPayload": original,
                          "failures": [{"errorMessage": "Lambda throttled"}]});
        let attributes = [("SentTimestamp".to_owned(), "1764210120007".to_owned())];
        let (kind, why, payload) = read_message("RuleErrorQueue", &rule.to_string(), &attributes);
        assert_eq!((kind, why.as_str()), ("rule error", "Lambda throttled"));
        assert_eq!(
            payload,
            Some(json!({"current": {"version": 3}, "topic": "$aws/things/a/shadow/update/documents",
                        "receivedAt": 1_764_210_120_007_u64}))
        );

        let (kind, _, payload) = read_message("PushDlq", r#"{"continuePush":"p","segment":2}"#, &[]);
        assert_eq!((kind, payload), ("hand-off", Some(json!({"continuePush": "p", "segment": 2}))));
        let scheduled = [("ERROR_CODE".to_owned(), "AccessDenied".to_owned())];
        let (kind, why, _) = read_message("PushDlq", r#"{"scheduledRun":"x","request":{}}"#, &scheduled);
        assert_eq!((kind, why.as_str()), ("schedule", "AccessDenied: "));
        let (kind, _, payload) = read_message("PushDlq", "not json", &[]);
        assert_eq!((kind, payload), ("unreadable", None));
    }
}
