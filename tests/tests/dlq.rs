//! `shadow-fleet dlq list|replay`, the built CLI on the local stack: a history event that failed shadow-history's
//! asynchronous invocation and its two retries (its table was missing) lands in the on-failure queue as Lambda's
//! record; once the cause is fixed its replay writes it, once, even from two copies of the message; a message whose
//! replay fails again (an event shadow-history refuses) stays in the queue, with why. A push start kept twice in
//! PushDlq is replayed into one push.

use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use devstack::cli::{run_with, stack_env};
use devstack::lambda::LocalLambda;
use devstack::service::{LambdaService, Timing};
use devstack::stack::repo_root;
use devstack::{Stack, unique};
use serde_json::{Value, json};

const QUICK: Timing = Timing {
    timeout: Duration::from_secs(5),
    retries: [Duration::from_millis(100), Duration::from_millis(200)],
    visibility: Duration::from_secs(15),
    schedule_every: Duration::from_secs(60),
    poll_every: Duration::from_millis(100),
};

/// The sample update event, for a thing of the test's own.
fn event(thing: &str) -> Value {
    let path = repo_root().join("events/history/update-documents.json");
    let mut event: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap_or_default()).expect("JSON");
    event["topic"] = json!(format!("$aws/things/{thing}/shadow/name/test1/update/documents"));
    event
}

/// The history items (events, not the head) of `thing`'s shadow test1 in the stack's history table.
async fn events_of(stack: &Stack, thing: &str) -> usize {
    let table = stack.env.get("HISTORY_TABLE").cloned().unwrap_or_default();
    let got = stack
        .dynamodb()
        .query()
        .table_name(table)
        .key_condition_expression("pk = :pk")
        .expression_attribute_values(":pk", AttributeValue::S(format!("{thing}#test1")))
        .consistent_read(true)
        .send()
        .await
        .expect("query");
    got.items().iter().filter(|i| i.get("sk").and_then(|s| s.as_s().ok()).is_some_and(|s| s != "~head")).count()
}

async fn messages_in(stack: &Stack, queue: &str) -> usize {
    let attributes = stack
        .sqs()
        .get_queue_attributes()
        .queue_url(queue)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::All)
        .send()
        .await
        .expect("get_queue_attributes");
    let count = |name: aws_sdk_sqs::types::QueueAttributeName| {
        attributes.attributes().and_then(|a| a.get(&name)).and_then(|v| v.parse::<usize>().ok()).unwrap_or(0)
    };
    count(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
        + count(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_history_event_is_replayed_once_fixed_and_a_failing_one_stays() {
    let stack = Stack::get();
    let sqs = stack.sqs();
    let dlq = sqs.create_queue().queue_name(unique("history-dlq")).send().await.expect("create_queue");
    let dlq = dlq.queue_url().unwrap_or_default().to_owned();

    // The cause: shadow-history deployed with a table that does not exist. Lambda's async invocation and its two
    // retries fail, and the on-failure destination keeps the event.
    let thing = unique("dlq-thing");
    let mut env: Vec<(String, String)> = stack.env.clone().into_iter().collect();
    env.push(("HISTORY_TABLE".into(), unique("no-such-table")));
    let broken = LocalLambda::start("shadow-history", &env).await;
    let service = LambdaService::new(&broken, sqs.clone(), &dlq, QUICK).with_on_failure(Some(dlq.clone()));
    service.invoke_async(&event(&thing)).await;
    assert_eq!(messages_in(&stack, &dlq).await, 1, "the failed event is in the on-failure queue");
    // A second copy of the same record (a queue may deliver twice, an operator may have redriven it), and a record
    // of an event shadow-history refuses whatever is fixed.
    let body = {
        let got = sqs.receive_message().queue_url(&dlq).visibility_timeout(0).send().await.expect("receive");
        got.messages().first().and_then(|m| m.body()).unwrap_or_default().to_owned()
    };
    let record: Value = serde_json::from_str(&body).expect("Lambda's record");
    assert!(record["responsePayload"]["errorType"].as_str().is_some_and(|t| !t.is_empty()), "{record}");
    sqs.send_message().queue_url(&dlq).message_body(&body).send().await.expect("send_message");
    let refused = json!({"requestContext": {"condition": "RetriesExhausted"},
        "requestPayload": {"state": {}, "topic": "not/a/shadow/topic"},
        "responsePayload": {"errorType": "Final.InvalidEvent", "errorMessage": "no shadow topic"}});
    sqs.send_message().queue_url(&dlq).message_body(refused.to_string()).send().await.expect("send_message");

    let mut cli = stack_env(&stack);
    cli.insert("HISTORY_DLQ_URL".into(), dlq.clone());
    // list: every message, why it failed, what it carried; nothing removed.
    let listed = run_with(&cli, &["dlq", "list", "--function", "history", "--output", "json"]);
    assert_eq!(listed.code, 0, "{}", listed.stderr);
    let lines = listed.lines();
    assert_eq!(lines.len(), 3, "{}", listed.stdout);
    assert!(lines.iter().all(|l| l["queue"] == "HistoryDlq" && l["kind"] == "on-failure"), "{}", listed.stdout);
    let ours: Vec<&Value> = lines.iter().filter(|l| l["payload"]["topic"] == event(&thing)["topic"]).collect();
    assert_eq!(ours.len(), 2, "{}", listed.stdout);
    assert!(ours[0]["why"].as_str().is_some_and(|w| w.contains("Retryable") || w.contains("Final")), "{}", ours[0]);
    let table = run_with(&cli, &["dlq", "list", "--function", "history"]);
    assert!(table.stdout.contains("Final.InvalidEvent: no shadow topic"), "{}", table.stdout);
    assert_eq!(messages_in(&stack, &dlq).await, 3, "listing removes nothing");
    assert_eq!(events_of(&stack, &thing).await, 0);

    // Fixed: the deployed shadow-history (the stack's, with its table). The event is written once from its two
    // copies, both deleted; the refused one fails again and stays.
    let replayed = run_with(&cli, &["dlq", "replay", "--function", "history", "--output", "json"]);
    assert_eq!(replayed.code, 1, "a replay failed: {}\n{}", replayed.stdout, replayed.stderr);
    let lines = replayed.lines();
    assert_eq!(lines.iter().filter(|l| l["replayed"] == true).count(), 2, "{}", replayed.stdout);
    let failed: Vec<&Value> = lines.iter().filter(|l| l["replayed"] == false).collect();
    assert_eq!(failed.len(), 1, "{}", replayed.stdout);
    assert!(failed[0]["error"].as_str().is_some_and(|e| e.starts_with("Final.")), "{}", failed[0]);
    assert!(replayed.stderr.contains("2 replayed and deleted, 1 kept"), "{}", replayed.stderr);
    assert_eq!(events_of(&stack, &thing).await, 1, "written once");
    assert_eq!(messages_in(&stack, &dlq).await, 1, "the one that failed again stays");
    let left = run_with(&cli, &["dlq", "list", "--function", "history", "--output", "json"]).lines();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["payload"]["topic"], "not/a/shadow/topic");

    // Without a queue to read: said so, exit 1.
    let none = run_with(&stack_env(&stack), &["dlq", "list", "--function", "push"]);
    assert_eq!(none.code, 1, "{}", none.stderr);
    assert!(none.stderr.contains("PUSH_DLQ_URL"), "{}", none.stderr);
}

/// A push start that failed its asynchronous invocation (a thing group missing then, say), kept twice in PushDlq:
/// replayed against shadow-push, the first copy runs the push, the second is the same push id again and pushes
/// nothing twice; both are deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_push_start_is_replayed_once_and_its_copy_pushes_nothing_twice() {
    let stack = Stack::get();
    let sqs = stack.sqs();
    let dlq = sqs.create_queue().queue_name(unique("push-dlq")).send().await.expect("create_queue");
    let dlq = dlq.queue_url().unwrap_or_default().to_owned();
    let things: Vec<String> = (0..2).map(|i| unique(&format!("dlq-push-{i}"))).collect();
    for thing in &things {
        stack.iot().create_thing().thing_name(thing).send().await.expect("create_thing");
    }
    let push_id = unique("dlq-push");
    let request = json!({"pushId": push_id, "shadowName": "cfg", "desired": {"mode": 5},
                         "targets": {"things": things}});
    let record = json!({"requestContext": {"condition": "RetriesExhausted", "approximateInvokeCount": 3},
        "requestPayload": request,
        "responsePayload": {"errorType": "Retryable.Targets", "errorMessage": "ListThingsInThingGroup throttled"}});
    for _ in 0..2 {
        sqs.send_message().queue_url(&dlq).message_body(record.to_string()).send().await.expect("send_message");
    }
    let mut cli = stack_env(&stack);
    cli.insert("PUSH_DLQ_URL".into(), dlq.clone());
    let listed = run_with(&cli, &["dlq", "list", "--function", "push", "--output", "json"]).lines();
    assert_eq!(listed.len(), 2);
    assert!(
        listed
            .iter()
            .all(|l| l["queue"] == "PushDlq" && l["why"] == "Retryable.Targets: ListThingsInThingGroup throttled")
    );

    let replayed = run_with(&cli, &["dlq", "replay", "--function", "push"]);
    assert_eq!(replayed.code, 0, "{}\n{}", replayed.stdout, replayed.stderr);
    assert!(replayed.stderr.contains("2 replayed and deleted, 0 kept"), "{}", replayed.stderr);
    assert_eq!(messages_in(&stack, &dlq).await, 0);
    // The push ran once: each thing's shadow is at version 1, with the push's value.
    for thing in &things {
        let doc = stack.iot_data().get_thing_shadow().thing_name(thing).shadow_name("cfg").send().await;
        let doc: Value = doc
            .ok()
            .and_then(|d| d.payload().and_then(|p| serde_json::from_slice(p.as_ref()).ok()))
            .unwrap_or(Value::Null);
        assert_eq!(
            (doc["state"]["desired"]["mode"].clone(), doc["version"].clone()),
            (json!(5), json!(1)),
            "{thing}: {doc}"
        );
    }
}
