//! A push's journal spread over partitions (`<pushId>#<n>`), against DynamoDB's write limit per partition key value
//! put back in front of DynamoDB Local (devstack's `PartitionFront`): a rollout at a scaled quota keeps every
//! partition under its limit, where the same rollout in one partition is throttled; judging and rollback see every
//! shard; a push killed between shards finishes every thing once; failures are listed from every shard.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use devstack::cli::{run_with, stack_env};
use devstack::crash::{CrashPoint, CrashProxy, Step};
use devstack::partition_front::PartitionFront;
use devstack::push::{Device, PushFixture, push};
use devstack::service::{LambdaService, Timing};
use devstack::unique;
use serde_json::{Value, json};
use shadow_core::push::journal::shard_of;
use shadow_core::push::{JournalRef, PushLists};

const TIMING: Timing = Timing {
    timeout: Duration::from_secs(5),
    retries: [Duration::from_secs(2), Duration::from_secs(4)],
    visibility: Duration::from_secs(15),
    schedule_every: Duration::from_secs(1),
    poll_every: Duration::from_millis(100),
};

/// The partition key values of the push table's items of `push_id` (the record's and every shard's), with how many
/// items of each kind (`previous`, `failure`, `conflict`) each holds.
async fn partitions(fx: &PushFixture, push_id: &str) -> BTreeMap<String, BTreeMap<String, usize>> {
    let mut found: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    let mut pages = fx
        .stack
        .dynamodb()
        .scan()
        .table_name(&fx.table)
        .filter_expression("begins_with(pk, :p)")
        .expression_attribute_values(":p", AttributeValue::S(push_id.to_owned()))
        .into_paginator()
        .items()
        .send();
    while let Some(item) = pages.next().await {
        let item = item.expect("scanning the push table");
        let text = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned().unwrap_or_default();
        let kind = text("sk").split('#').next().unwrap_or_default().to_owned();
        *found.entry(text("pk")).or_default().entry(kind).or_default() += 1;
    }
    found
}

/// The journal partitions (`<pushId>#<n>`) among `found`.
fn shards_of(found: &BTreeMap<String, BTreeMap<String, usize>>, push_id: &str) -> BTreeSet<String> {
    found.keys().filter(|pk| pk.starts_with(&format!("{push_id}#"))).cloned().collect()
}

fn mode(doc: &Option<Value>) -> Value {
    doc.as_ref().map_or(Value::Null, |d| d["state"]["desired"]["settings"]["mode"].clone())
}

/// One rollout phase of `things` things at a 200/s quota (moto answers about 60 things a second here), its journal written through a front that admits
/// `limit` writes a second per partition; `partition_wps` sizes the shards. The record, the front, and how long
/// the invocation took.
async fn rollout_through_front(
    fx: &PushFixture,
    things: usize,
    limit: u32,
    partition_wps: &str,
    mode: u32,
) -> (Value, PartitionFront, Duration) {
    let front = PartitionFront::start(&fx.stack.var("AWS_ENDPOINT_URL_DYNAMODB"), limit).await;
    let function = fx
        .function(&[
            ("AWS_ENDPOINT_URL_DYNAMODB", front.url.as_str()),
            ("PUSH_MAX_TPS", "200"),
            ("PUSH_READ_TPS", "200"),
            ("PUSH_CONCURRENCY", "32"),
            ("PUSH_PARTITION_WPS", partition_wps),
        ])
        .await;
    let push_id = unique("sharded");
    // One phase, no bake: the invocation pushes every thing (and journals it), then hands the judgment on.
    let request = json!({"pushId": push_id, "desired": {"settings": {"mode": mode}},
                         "targets": {"thingGroup": fx.group("prod")}, "maxRequestsPerSecond": 200,
                         "rollout": {"phases": [{"percent": 100}], "bakeSeconds": 0, "minThings": 1}});
    let started = Instant::now();
    let answer = push(&function, &request).await.expect("invoking shadow-push");
    let took = started.elapsed();
    let record = fx.record(&push_id).await.unwrap_or(Value::Null);
    assert_eq!(record["phases"][0]["updated"], things, "every thing pushed in one invocation: {answer} {record}");
    (record, front, took)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_at_the_quota_keeps_every_partition_under_its_write_limit() {
    const THINGS: usize = 80;
    // DynamoDB's 1000 writes/s per partition at AWS's 4000/s quota, scaled to a 200/s quota: 50. Lower still, so
    // that moto's pace (about 60 things/s, less on a loaded machine) is well over it too.
    const LIMIT: u32 = 10;
    let fx = PushFixture::new().await;
    fx.create_things(0..THINGS, "tokyo").await;
    fx.create_group("prod", None, 0..THINGS).await;

    // 200/s over 5 writes/s per partition (half the limit, as 500 is of 1000): 40 shards.
    let (sharded, front, took) = rollout_through_front(&fx, THINGS, LIMIT, "5", 7).await;
    let push_id = sharded["pushId"].as_str().unwrap_or_default().to_owned();
    assert_eq!(sharded["journalShards"], 40, "{sharded}");
    let counts = front.counts();
    let journal: Vec<(&String, _)> = counts.iter().filter(|(pk, _)| pk.starts_with(&format!("{push_id}#"))).collect();
    assert!(journal.len() >= 25, "80 things spread over 40 shards: {counts:?}");
    assert_eq!(journal.iter().map(|(_, c)| c.admitted).sum::<u64>(), THINGS as u64, "one entry per thing");
    for (pk, _) in &journal {
        let peak = front.peak_per_second(pk);
        // A quiet partition may take one second's worth at once (the bucket), then its rate.
        assert!(peak <= 2 * LIMIT as usize, "{pk}: {peak} writes in one second");
    }
    let refused: u64 = journal.iter().map(|(_, c)| c.refused).sum();
    let counted = sharded["storeThrottled"].as_u64().unwrap_or(u64::MAX);
    eprintln!(
        "sharded: {THINGS} things in {:.1} s, {counted} DynamoDB requests throttled (record), {refused} journal \
         writes refused (front)",
        took.as_secs_f64()
    );
    assert_eq!(counted, 0, "a sharded journal is not throttled: {sharded}");
    assert!(counted >= refused, "the record counts every refusal of the journal's writes: {counted} < {refused}");

    // The same rollout with every entry in one partition: throttled, and the record says so.
    let (single, front, took) = rollout_through_front(&fx, THINGS, LIMIT, "100000", 8).await;
    let push_id = single["pushId"].as_str().unwrap_or_default().to_owned();
    assert_eq!(single["journalShards"], 1, "{single}");
    let counts = front.counts();
    let only = counts.get(&format!("{push_id}#0")).copied().expect("the one shard written");
    let counted = single["storeThrottled"].as_u64().unwrap_or(0);
    eprintln!(
        "one partition: {THINGS} things in {:.1} s, {counted} DynamoDB requests throttled (record), {} journal \
         writes refused (front)",
        took.as_secs_f64(),
        only.refused
    );
    assert_eq!(only.admitted, THINGS as u64, "{counts:?}");
    assert!(only.refused > 0, "one partition at a 200/s rollout is over {LIMIT}/s: {counts:?}");
    assert!(counted >= only.refused, "every refusal counted in the record: {counted} < {}: {single}", only.refused);
    let total: u64 = counts.values().map(|c| c.refused).sum();
    assert!(counted <= total, "the record counts only what DynamoDB refused: {counted} > {total}");
}

/// A push of `desired` to every thing of the fixture's `group` at `rate` a second (a rollout of one phase, no bake,
/// when `rollout`), through `front`; `wps` is `PUSH_PARTITION_WPS`. The record, and how long the invocation took.
async fn push_through(
    fx: &PushFixture,
    group: &str,
    front: &PartitionFront,
    rate: u32,
    wps: &str,
    desired: Value,
    rollout: bool,
) -> (Value, Duration) {
    let rate_text = rate.to_string();
    let function = fx
        .function(&[
            ("AWS_ENDPOINT_URL_DYNAMODB", front.url.as_str()),
            ("PUSH_MAX_TPS", rate_text.as_str()),
            ("PUSH_READ_TPS", rate_text.as_str()),
            ("PUSH_PARTITION_WPS", wps),
        ])
        .await;
    let push_id = unique(if rollout { "units" } else { "plain" });
    let mut request = json!({"pushId": push_id, "desired": desired, "targets": {"thingGroup": fx.group(group)},
                             "maxRequestsPerSecond": rate});
    if rollout {
        request["rollout"] = json!({"phases": [{"percent": 100}], "bakeSeconds": 0, "minThings": 1});
    }
    let started = Instant::now();
    push(&function, &request).await.expect("invoking shadow-push");
    let took = started.elapsed();
    let record = fx.record(&push_id).await.unwrap_or(Value::Null);
    (record, took)
}

/// The journal entries (previous values) of `push_id` in the push table, over every shard.
async fn entries(fx: &PushFixture, push_id: &str) -> usize {
    let found = partitions(fx, push_id).await;
    shards_of(&found, push_id).iter().map(|pk| found[pk].get("previous").copied().unwrap_or(0)).sum()
}

/// The journal writes of `push_id` through `front`: admitted, their units, refused, and the most units asked of one
/// partition in any second.
fn journal_writes(front: &PartitionFront, push_id: &str) -> (u64, u64, u64, usize) {
    let counts = front.counts();
    let journal: Vec<(&String, _)> = counts.iter().filter(|(pk, _)| pk.starts_with(&format!("{push_id}#"))).collect();
    let written = journal.iter().map(|(_, c)| c.admitted).sum();
    let units = journal.iter().map(|(_, c)| c.admitted_units).sum();
    let refused = journal.iter().map(|(_, c)| c.refused).sum();
    let hottest = journal.iter().map(|(pk, _)| front.peak_asked_per_second(pk)).max().unwrap_or(0);
    (written, units, refused, hottest)
}

/// A rollout whose journal entries are about 3 KB (the things' previous value of a 3 KB setting) at a quota of 10/s,
/// under a partition limit counted in write units (20 a second, `PUSH_PARTITION_WPS` half of it, as its default is
/// of DynamoDB's 1000): its journal is spread so that no partition is asked more than its limit, at most 1 % of its
/// writes are refused, and its walk keeps at least 0.8 of the pace of a plain push of the same fleet. The quota is
/// one that moto serves with room to spare on a loaded machine (a rollout makes three requests a thing, a plain push
/// one); the limit is scaled down less than the quota (from AWS's 4000/s) so that a partition still takes a few
/// entries a second, as DynamoDB's takes hundreds. Then a rollout of a small value over 40 of those 3 KB ones, whose
/// entries are larger than its pushed values let its shards expect: they are paced, not refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_of_large_entries_keeps_every_partition_under_its_write_units() {
    const THINGS: usize = 100;
    const FEW: usize = 40;
    const RATE: u32 = 10;
    const LIMIT: u32 = 20;
    const WPS: &str = "10";
    let fx = PushFixture::new().await;
    fx.create_things(0..THINGS, "tokyo").await;
    fx.create_group("prod", None, 0..THINGS).await;
    fx.create_group("few", None, 0..FEW).await;
    let setting = |value: String| json!({"settings": {"image": value}});
    let large = |c: char| setting(c.to_string().repeat(3100));
    let front = PartitionFront::start(&fx.stack.var("AWS_ENDPOINT_URL_DYNAMODB"), LIMIT).await;

    // A plain push first: every thing then holds a 3 KB value, the one the rollout's journal keeps.
    let (plain, plain_took) = push_through(&fx, "prod", &front, RATE, WPS, large('a'), false).await;
    assert_eq!(plain["updated"], THINGS, "{plain}");
    let (rollout, took) = push_through(&fx, "prod", &front, RATE, WPS, large('b'), true).await;
    assert_eq!(rollout["phases"][0]["updated"], THINGS, "every thing pushed in one invocation: {rollout}");
    let push_id = rollout["pushId"].as_str().unwrap_or_default().to_owned();
    let (written, units, refused, hottest) = journal_writes(&front, &push_id);
    let pace = plain_took.as_secs_f64() / took.as_secs_f64();
    eprintln!(
        "{THINGS} things at {RATE}/s, entries of {:.1} units, {LIMIT} units/s a partition: {} shards, {refused} of \
         {} journal writes refused, at most {hottest} units asked of one partition in a second; plain push {:.1} s, \
         rollout {:.1} s ({pace:.2} of the plain pace), {} DynamoDB requests throttled (record)",
        units as f64 / written.max(1) as f64,
        rollout["journalShards"],
        written + refused,
        plain_took.as_secs_f64(),
        took.as_secs_f64(),
        rollout["storeThrottled"],
    );
    // A put sent again (its answer lost under load) is admitted again and finds the entry there.
    assert_eq!(entries(&fx, &push_id).await, THINGS, "one entry per thing");
    assert!(units >= 3 * written, "entries of about 3 KB take 3 units or more: {units} for {written}");
    // A quiet partition may be asked a second's worth at once (its bucket), then its rate.
    assert!(hottest <= 2 * LIMIT as usize, "a partition asked {hottest} units in one second, over {LIMIT}/s");
    assert!(refused * 100 <= written + refused, "{refused} of {} journal writes refused", written + refused);
    assert!(pace >= 0.8, "the rollout walked at {pace:.2} of a plain push's pace");

    // Pushed values of a few bytes, previous ones of 3 KB: shards for entries of one unit, entries of four.
    let (small, took) = push_through(&fx, "few", &front, RATE, WPS, setting("c".into()), true).await;
    assert_eq!(small["phases"][0]["updated"], FEW, "{small}");
    let push_id = small["pushId"].as_str().unwrap_or_default().to_owned();
    let (written, units, refused, hottest) = journal_writes(&front, &push_id);
    eprintln!(
        "small values over large ones: {} shards, entries of {:.1} units, {refused} of {} journal writes refused, at \
         most {hottest} units asked of one partition in a second, rollout {:.1} s",
        small["journalShards"],
        units as f64 / written.max(1) as f64,
        written + refused,
        took.as_secs_f64(),
    );
    assert_eq!(small["journalShards"], 1, "{small}");
    assert_eq!(entries(&fx, &push_id).await, FEW, "one entry per thing");
    assert!(hottest <= 2 * LIMIT as usize, "a partition asked {hottest} units in one second, over {LIMIT}/s");
    assert!(refused * 100 <= written + refused, "{refused} of {} journal writes refused", written + refused);
}

/// A push whose every thing fails, its failures written at the segment's end through a front that admits 20 write
/// units a second a partition (`PUSH_PARTITION_WPS` half of it): they go to their 3 shards in batches paced in write
/// units, none refused, every one listed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_written_paced_in_write_units() {
    const MISSING: usize = 150;
    const LIMIT: u32 = 20;
    let fx = PushFixture::new().await;
    let front = PartitionFront::start(&fx.stack.var("AWS_ENDPOINT_URL_DYNAMODB"), LIMIT).await;
    let function = fx
        .function(&[
            ("AWS_ENDPOINT_URL_DYNAMODB", front.url.as_str()),
            ("PUSH_MAX_TPS", "25"),
            ("PUSH_PARTITION_WPS", "10"),
        ])
        .await;
    let push_id = unique("failing");
    let missing: Vec<String> = (0..MISSING).map(|i| format!("{}-missing-{i:03}", fx.prefix)).collect();
    let request = json!({"pushId": push_id, "desired": {"settings": {"mode": 7}}, "targets": {"things": missing},
                         "maxRequestsPerSecond": 25});
    let answer = push(&function, &request).await.expect("invoking shadow-push");
    assert_eq!(answer["failed"], MISSING, "{answer}");
    let record = fx.record(&push_id).await.unwrap_or(Value::Null);
    assert_eq!(record["journalShards"], 3, "{record}");
    let (written, units, refused, hottest) = journal_writes(&front, &push_id);
    eprintln!(
        "{MISSING} failures over 3 shards at {LIMIT} units/s a partition: {written} written ({units} units), \
         {refused} refused, at most {hottest} units asked of one partition in a second, {} DynamoDB requests \
         throttled (record)",
        record["storeThrottled"]
    );
    assert_eq!(written, MISSING as u64, "{:?}", front.counts());
    assert_eq!(refused, 0, "failure writes refused: {:?}", front.counts());
    assert!(hottest <= 2 * LIMIT as usize, "a partition asked {hottest} units in one second, over {LIMIT}/s");
    let store = shadow_aws::DynamoPushStore::new(fx.stack.dynamodb(), fx.table.clone(), None);
    let all = store.failures(JournalRef::new(&push_id, 3), 1000).await.expect("reading the failures");
    assert_eq!(all.len(), MISSING, "every failure listed");
}

/// A rollout over 4 shards whose devices half stay silent: the judgment counts every thing of every shard, the
/// phase fails and is rolled back, and the rollback puts back every thing of every shard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn judging_and_rollback_see_every_shard() {
    const THINGS: usize = 24;
    let fx = PushFixture::new().await;
    fx.create_things(0..THINGS, "tokyo").await;
    fx.create_group("prod", None, 0..THINGS).await;
    for i in 0..THINGS / 2 {
        fx.set_desired(&fx.thing(i), None, json!({"settings": {"mode": 1}})).await;
    }
    let env = [("PUSH_LEASE_MS", "3000"), ("PUSH_HANDOFF_GRACE_MS", "1500"), ("PUSH_PARTITION_WPS", "25")];
    let function = fx.function(&env).await;
    let push_id = unique("sharded");
    let request = json!({"pushId": push_id, "desired": {"settings": {"mode": 7}},
                         "targets": {"thingGroup": fx.group("prod")}, "maxRequestsPerSecond": 100,
                         "rollout": {"phases": [{"percent": 100}], "bakeSeconds": 2, "minThings": 1,
                                     "convergedPercent": 90, "onAbort": "rollback"}});
    let devices: Vec<(String, Device)> =
        (0..THINGS).map(|i| (fx.thing(i), if i % 2 == 0 { Device::Healthy } else { Device::Silent })).collect();
    let service = LambdaService::new(&function, fx.stack.sqs(), &fx.queue_url, TIMING);
    let done = || async { fx.record(&push_id).await.is_some_and(|r| r["state"] == "rolledBack") };
    let sweep = json!({"sweepPushes": true});
    let finished = tokio::select! {
        finished = service.run_until(&request, &sweep, Duration::from_secs(60), done) => finished,
        () = fx.fleet_of(devices) => false,
    };
    let record = fx.record(&push_id).await.unwrap_or(Value::Null);
    assert!(finished, "not rolled back: {record}");
    assert_eq!(record["journalShards"], 4, "{record}");
    let found = partitions(&fx, &push_id).await;
    let shards = shards_of(&found, &push_id);
    assert_eq!(shards.len(), 4, "entries in every shard: {found:?}");
    for i in 0..THINGS {
        let thing = fx.thing(i);
        let pk = format!("{push_id}#{}", shard_of(&thing, 4));
        assert!(found.get(&pk).is_some_and(|kinds| kinds.get("previous").is_some()), "{thing} not in {pk}");
    }
    let phase = &record["phases"][0];
    assert_eq!(phase["updated"], THINGS, "{record}");
    let judged = phase["converged"].as_u64().unwrap_or(0) + phase["pending"].as_u64().unwrap_or(0);
    assert_eq!(judged, THINGS as u64, "every thing of every shard judged: {record}");
    assert!(phase["converged"].as_u64().unwrap_or(0) >= THINGS as u64 / 2, "{record}");
    assert_eq!(record["rollback"]["restored"], THINGS, "{record}");
    for i in 0..THINGS {
        let expected = if i < THINGS / 2 { json!(1) } else { Value::Null };
        let doc = fx.shadow(&fx.thing(i), None).await;
        assert_eq!(mode(&doc), expected, "{} not put back: {doc:?}", fx.thing(i));
    }
}

/// Killed after some shards' entries were written (a journal write that landed), and again after some were read
/// back and put back (a rollback update that landed): the next attempts find every shard's things and finish each
/// once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_killed_between_shards_finishes_every_thing_once() {
    const THINGS: usize = 16;
    let fx = PushFixture::new().await;
    fx.create_things(0..THINGS, "tokyo").await;
    fx.create_group("prod", None, 0..THINGS).await;
    let at = |step, nth| CrashPoint { step, nth, delivered: true, repeat: false };
    let journal = CrashProxy::start(&fx.stack.var("AWS_ENDPOINT_URL_DYNAMODB"), at(Step::JournalWrite, 6)).await;
    let rollback =
        CrashProxy::start(&fx.stack.var("AWS_ENDPOINT_URL_IOT_DATA_PLANE"), at(Step::RollbackUpdate, 6)).await;
    let function = fx
        .function(&[
            ("AWS_ENDPOINT_URL_DYNAMODB", journal.url.as_str()),
            ("AWS_ENDPOINT_URL_IOT_DATA_PLANE", rollback.url.as_str()),
            ("PUSH_LEASE_MS", "2000"),
            ("PUSH_HANDOFF_GRACE_MS", "1500"),
            ("PUSH_CONCURRENCY", "2"),
            ("PUSH_PARTITION_WPS", "10"),
        ])
        .await;
    journal.watch(function.pid_handle());
    rollback.watch(function.pid_handle());
    let push_id = unique("sharded");
    // Silent devices: the phase fails its judgment and is rolled back.
    let request = json!({"pushId": push_id, "desired": {"settings": {"mode": 7}},
                         "targets": {"thingGroup": fx.group("prod")}, "maxRequestsPerSecond": 40,
                         "rollout": {"phases": [{"percent": 100}], "bakeSeconds": 1, "minThings": 1,
                                     "onAbort": "rollback"}});
    let service = LambdaService::new(&function, fx.stack.sqs(), &fx.queue_url, TIMING);
    let done = || async { fx.record(&push_id).await.is_some_and(|r| r["state"] == "rolledBack") };
    let finished = service.run_until(&request, &json!({"sweepPushes": true}), Duration::from_secs(90), done).await;
    let record = fx.record(&push_id).await.unwrap_or(Value::Null);
    assert!(journal.fired() && rollback.fired(), "both kills happened: {record}");
    assert!(finished, "not rolled back after the kills: {record}");
    assert_eq!(record["journalShards"], 4, "{record}");
    let found = partitions(&fx, &push_id).await;
    let entries: usize =
        shards_of(&found, &push_id).iter().map(|pk| found[pk].get("previous").copied().unwrap_or(0)).sum();
    assert_eq!(entries, THINGS, "one entry per thing: {found:?}");
    assert_eq!(shards_of(&found, &push_id).len(), 4, "{found:?}");
    assert_eq!(record["phases"][0]["updated"], THINGS, "{record}");
    assert_eq!(record["rollback"]["restored"], THINGS, "{record}");
    for i in 0..THINGS {
        let doc = fx.shadow(&fx.thing(i), None).await.unwrap_or(Value::Null);
        assert_eq!(doc["state"]["desired"]["settings"]["mode"], Value::Null, "{} not put back: {doc}", fx.thing(i));
        // One update by the push, one by the rollback: never twice.
        assert_eq!(doc["version"], 2, "{} written more than once each way: {doc}", fx.thing(i));
    }
}

/// Things that do not exist fail; their failures go to their shards, and the function's answer, the store and
/// `shadow-fleet push show --failures` list every one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_listed_from_every_shard() {
    const MISSING: usize = 30;
    let fx = PushFixture::new().await;
    fx.create_things(0..2, "tokyo").await;
    let function = fx.function(&[("PUSH_PARTITION_WPS", "10")]).await;
    let push_id = unique("sharded");
    let mut things: Vec<String> = (0..2).map(|i| fx.thing(i)).collect();
    let missing: Vec<String> = (0..MISSING).map(|i| format!("{}-missing-{i:02}", fx.prefix)).collect();
    things.extend(missing.iter().cloned());
    let request = json!({"pushId": push_id, "desired": {"settings": {"mode": 7}}, "targets": {"things": things},
                         "maxRequestsPerSecond": 100});
    let answer = push(&function, &request).await.expect("invoking shadow-push");
    assert_eq!(answer["failed"], MISSING, "{answer}");
    let answered: BTreeSet<&str> =
        answer["failures"].as_array().into_iter().flatten().filter_map(|f| f["thingName"].as_str()).collect();
    assert_eq!(answered, missing.iter().map(String::as_str).collect(), "the answer lists every shard's");

    let record = fx.record(&push_id).await.unwrap_or(Value::Null);
    assert_eq!(record["journalShards"], 10, "{record}");
    let found = partitions(&fx, &push_id).await;
    let holding = shards_of(&found, &push_id).iter().filter(|pk| found[*pk].contains_key("failure")).count();
    assert!(holding >= 5, "30 failures spread over 10 shards: {found:?}");

    let store = shadow_aws::DynamoPushStore::new(fx.stack.dynamodb(), fx.table.clone(), None);
    let at = JournalRef::new(&push_id, 10);
    let all = store.failures(at, 100).await.expect("reading the failures");
    let names: Vec<&str> = all.iter().map(|f| f.thing_name.as_str()).collect();
    assert_eq!(names, missing.iter().map(String::as_str).collect::<Vec<_>>(), "every failure once, in thing order");
    let capped = store.failures(at, 7).await.expect("reading the failures");
    assert_eq!(capped.iter().map(|f| f.thing_name.as_str()).collect::<Vec<_>>(), names[..7], "the first 7 by name");

    let mut env = stack_env(&fx.stack);
    env.insert("PUSH_TABLE".into(), fx.table.clone());
    let shown = run_with(&env, &["push", "show", &push_id, "--failures", "--output", "json"]);
    assert_eq!(shown.code, 0, "{}", shown.stderr);
    let listed = shown.lines().pop().unwrap_or_default()["failures"].as_array().cloned().unwrap_or_default();
    let listed: Vec<&str> = listed.iter().filter_map(|f| f["thingName"].as_str()).collect();
    assert_eq!(listed, names, "push show --failures reads every shard");
    assert!(all.iter().all(|f| f.code == "ResourceNotFoundException"), "{all:?}");
}

/// The front itself, with a client of the push store's kind (its throttle count installed): a partition over its
/// limit is refused as DynamoDB refuses it, single writes with ProvisionedThroughputExceeded, a batch's extra items
/// in `UnprocessedItems` (a batch with none admitted refused whole); other partitions are not affected; every refusal
/// is counted on the client.
#[tokio::test]
async fn the_front_refuses_a_partitions_writes_over_its_limit_as_dynamodb_does() {
    use aws_sdk_dynamodb::types::{PutRequest, WriteRequest};
    use shadow_aws::throttles::ThrottleCount;

    let stack = devstack::Stack::get();
    let table = unique("front");
    shadow_aws::tables::ensure_table(&stack.dynamodb(), &table, &shadow_aws::tables::PUSH).await.expect("table");
    let front = PartitionFront::start(&stack.var("AWS_ENDPOINT_URL_DYNAMODB"), 5).await;
    let direct = stack.dynamodb();
    let client = aws_sdk_dynamodb::Client::from_conf(direct.config().to_builder().endpoint_url(&front.url).build());
    let count = ThrottleCount::default();
    let client = count.install(&client);
    let item = |pk: &str, sk: String| {
        [("pk", pk), ("sk", sk.as_str())]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), AttributeValue::S(v.to_owned())))
            .collect()
    };
    let mut refused = Vec::new();
    for i in 0..8 {
        let put = client.put_item().table_name(&table).set_item(Some(item("hot", format!("i{i}")))).send().await;
        if let Err(e) = put {
            refused.push(e.into_service_error().meta().code().map(str::to_owned));
        }
    }
    // A bucket of one second's worth (5), refilled at 5/s: the 8 puts take far less than the 0.2 s of one more.
    assert_eq!(refused, vec![Some("ProvisionedThroughputExceededException".to_owned()); 3]);
    let batch = |pk: &str, n: usize| -> Vec<WriteRequest> {
        (0..n)
            .map(|i| {
                let put = PutRequest::builder().set_item(Some(item(pk, format!("b{i}")))).build().expect("a put");
                WriteRequest::builder().put_request(put).build()
            })
            .collect()
    };
    let written = client.batch_write_item().request_items(&table, batch("warm", 8)).send().await.expect("a batch");
    let unprocessed = written.unprocessed_items.unwrap_or_default().remove(&table).unwrap_or_default();
    assert_eq!(unprocessed.len(), 3, "5 admitted, 3 left to send again");
    let whole = client.batch_write_item().request_items(&table, batch("warm", 2)).send().await;
    let code = whole.err().and_then(|e| e.into_service_error().meta().code().map(str::to_owned));
    assert_eq!(code.as_deref(), Some("ProvisionedThroughputExceededException"), "nothing admitted: refused whole");
    client.put_item().table_name(&table).set_item(Some(item("cold", "c".into()))).send().await.expect("another pk");
    let counts = front.counts();
    assert_eq!((counts["hot"].admitted, counts["hot"].refused), (5, 3), "{counts:?}");
    assert_eq!((counts["warm"].admitted, counts["warm"].refused), (5, 5), "{counts:?}");
    assert_eq!((counts["cold"].admitted, counts["cold"].refused), (1, 0), "{counts:?}");
    assert_eq!(count.get(), 3 + 3 + 1, "every refused put, item and batch counted on the client");
    // What was admitted is in DynamoDB Local, and nothing else.
    let stored = direct.scan().table_name(&table).send().await.expect("scan").count();
    assert_eq!(stored, 5 + 5 + 1);
}

/// The front counts write units as DynamoDB bills them: a put by the item it writes, an update or a delete by the item
/// stored, a unit per KB rounded up. At 1 unit a second, a full bucket admits a write of 3 units (into debt) and
/// refuses the next for 3 s: each write's units are read from the counts.
#[tokio::test]
async fn the_front_counts_write_units_as_dynamodb_bills_them() {
    let stack = devstack::Stack::get();
    let table = unique("units");
    shadow_aws::tables::ensure_table(&stack.dynamodb(), &table, &shadow_aws::tables::PUSH).await.expect("table");
    let front = PartitionFront::start(&stack.var("AWS_ENDPOINT_URL_DYNAMODB"), 1).await;
    let direct = stack.dynamodb();
    let client = aws_sdk_dynamodb::Client::from_conf(direct.config().to_builder().endpoint_url(&front.url).build());
    let s = |v: &str| AttributeValue::S(v.to_owned());
    // pk 2 + 5, sk 2 + 1, values 6 + 2900: 2916 bytes, 3 units.
    let item = |pk: &str| {
        [("pk", s(pk)), ("sk", s("x")), ("values", s(&"v".repeat(2900)))]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect::<std::collections::HashMap<_, _>>()
    };
    let key = |pk: &str| [("pk", s(pk)), ("sk", s("x"))].into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    let put = |pk: &'static str| client.put_item().table_name(&table).set_item(Some(item(pk))).send();
    put("large").await.expect("a full bucket admits a write of 3 units");
    let again = put("large").await.err().and_then(|e| e.into_service_error().meta().code().map(str::to_owned));
    assert_eq!(again.as_deref(), Some("ProvisionedThroughputExceededException"), "in debt for 3 s");
    // An update and a delete of a stored 3 KB item take its 3 units, though their requests are small.
    direct.put_item().table_name(&table).set_item(Some(item("stored"))).send().await.expect("a direct put");
    client
        .update_item()
        .table_name(&table)
        .set_key(Some(key("stored")))
        .update_expression("SET n = :n")
        .expression_attribute_values(":n", AttributeValue::N("1".into()))
        .send()
        .await
        .expect("an update of a full bucket");
    let delete = client.delete_item().table_name(&table).set_key(Some(key("stored"))).send().await;
    assert!(delete.is_err(), "the update's 3 units leave none for the delete");
    client.delete_item().table_name(&table).set_key(Some(key("empty"))).send().await.expect("nothing stored: 1 unit");
    let counts = front.counts();
    let units = |pk: &str| {
        let c = counts[pk];
        (c.admitted, c.admitted_units, c.refused, c.refused_units)
    };
    assert_eq!(units("large"), (1, 3, 1, 3), "{counts:?}");
    assert_eq!(units("stored"), (1, 3, 1, 3), "{counts:?}");
    assert_eq!(units("empty"), (1, 1, 0, 0), "{counts:?}");
}
