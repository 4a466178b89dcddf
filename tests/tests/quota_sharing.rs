//! One quota for the account: two pushes started together, each in its own execution of the real shadow-push binary,
//! through a data-plane front that admits at most the account's quota of UpdateThingShadow and of GetThingShadow
//! requests per second across both (devstack's quota front; moto enforces none). Scaled down: a 40/s quota, 100
//! things a push.
//!
//! Pushes on one push table see each other on its board of senders and share the quota. Pushes that cannot see each
//! other (two deployments in one account, each with its own push table) each pace at the whole quota: the second test
//! measures the 429s that sharing prevents.

use std::time::{Duration, Instant};

use devstack::lambda::LocalLambda;
use devstack::push::{PushFixture, push};
use devstack::quota_front::{QuotaFront, Quotas};
use devstack::unique;
use serde_json::{Value, json};

/// The account's quota of each shadow API, per second, and every push's PUSH_MAX_TPS and PUSH_READ_TPS.
const QUOTA: u32 = 40;
/// Things per push.
const THINGS: usize = 100;

/// A push table's functions, with the data plane behind `front`.
async fn function(fx: &PushFixture, front: &QuotaFront) -> LocalLambda {
    let quota = QUOTA.to_string();
    fx.function(&[
        ("AWS_ENDPOINT_URL_IOT_DATA_PLANE", front.url.as_str()),
        ("PUSH_MAX_TPS", quota.as_str()),
        ("PUSH_READ_TPS", quota.as_str()),
        ("PUSH_CONCURRENCY", "16"),
        // Renewed every 2 s: a push that starts later is seen within 2 s (scaled down from 3 s of 30-second leases,
        // with room for a loaded machine's slow renewals).
        ("PUSH_LEASE_MS", "6000"),
    ])
    .await
}

/// A default push (skip checks: a read and an update per thing) of things `range` of `fx`.
fn request(fx: &PushFixture, range: std::ops::Range<usize>) -> Value {
    let things: Vec<String> = range.map(|i| fx.thing(i)).collect();
    json!({"pushId": unique("shared-quota"), "desired": {"firmware": "2.0.1", "mode": 3}, "targets": {"things": things}})
}

/// Every thing of `range` holds the pushed values, written once.
async fn check_updated(fx: &PushFixture, range: std::ops::Range<usize>) {
    use futures::StreamExt;
    let docs: Vec<(String, Option<Value>)> = futures::stream::iter(range.map(|i| fx.thing(i)))
        .map(|thing| async move {
            let doc = fx.shadow(&thing, None).await;
            (thing, doc)
        })
        .buffer_unordered(16)
        .collect()
        .await;
    for (thing, doc) in docs {
        let doc = doc.unwrap_or_else(|| panic!("{thing} has no shadow"));
        assert_eq!(doc["state"]["desired"], json!({"firmware": "2.0.1", "mode": 3}), "{thing}: {doc}");
        assert_eq!(doc["version"], 1, "{thing} updated more than once: {doc}");
    }
}

/// Runs two pushes together, each on its own function and fixture (`b` may be `a`), and checks that each completes
/// with every thing updated and that the pushes counted every 429 the front answered. The front's counts.
async fn two_pushes_at_once(a: &PushFixture, b: &PushFixture, front: &QuotaFront) -> (f64, f64, f64, Duration) {
    let (fa, fb) = (function(a, front).await, function(b, front).await);
    // `b` may share `a`'s fixture: its things then follow `a`'s.
    let b_range = if std::ptr::eq(a, b) { THINGS..2 * THINGS } else { 0..THINGS };
    let (ra, rb) = (request(a, 0..THINGS), request(b, b_range.clone()));
    let started = Instant::now();
    let (sa, sb) = tokio::join!(push(&fa, &ra), push(&fb, &rb));
    let elapsed = started.elapsed();
    let (sa, sb) = (sa.expect("invoking the first push"), sb.expect("invoking the second push"));
    for summary in [&sa, &sb] {
        assert_eq!(summary["complete"], true, "{summary}");
        assert_eq!((summary["updated"].clone(), summary["failed"].clone()), (json!(THINGS), json!(0)), "{summary}");
    }
    check_updated(a, 0..THINGS).await;
    check_updated(b, b_range).await;
    let counts = &front.counts;
    let throttled = sa["throttled"].as_u64().unwrap_or(0) + sb["throttled"].as_u64().unwrap_or(0);
    assert_eq!(
        throttled,
        counts.updates.refused() + counts.reads.refused(),
        "the pushes counted every 429 the front answered: {sa} {sb}"
    );
    assert!(counts.updates.admitted() >= 2 * THINGS as u64, "every update went through the front");
    eprintln!(
        "updates: {} admitted, {} refused ({:.1} %); reads: {} admitted, {} refused ({:.1} %); all: {:.1} % refused; \
         {:.1} s",
        counts.updates.admitted(),
        counts.updates.refused(),
        100.0 * counts.updates.refused_share(),
        counts.reads.admitted(),
        counts.reads.refused(),
        100.0 * counts.reads.refused_share(),
        100.0 * counts.refused_share(),
        elapsed.as_secs_f64()
    );
    (counts.updates.refused_share(), counts.reads.refused_share(), counts.refused_share(), elapsed)
}

#[tokio::test]
async fn two_pushes_at_once_share_the_account_quota() {
    let fx = PushFixture::new().await;
    fx.create_things(0..2 * THINGS, "x").await;
    let front = QuotaFront::start(
        &fx.stack.var("AWS_ENDPOINT_URL_IOT_DATA_PLANE"),
        Quotas::new(f64::from(QUOTA), f64::from(QUOTA)),
    )
    .await;
    let (updates, reads, all, elapsed) = two_pushes_at_once(&fx, &fx, &front).await;
    assert!(
        all <= 0.10,
        "{:.1} % of shadow requests answered 429 (updates {updates:.3}, reads {reads:.3})",
        100.0 * all
    );
    // Together they used the quota, no more: 2 × 100 updates (and as many reads) at 40/s take 5 s.
    assert!(elapsed >= Duration::from_secs(4), "faster than the quota allows: {elapsed:?}");
}

#[tokio::test]
async fn pushes_that_cannot_see_each_other_take_the_quota_twice() {
    let (a, b) = (PushFixture::new().await, PushFixture::new().await);
    tokio::join!(a.create_things(0..THINGS, "x"), b.create_things(0..THINGS, "x"));
    let front = QuotaFront::start(
        &a.stack.var("AWS_ENDPOINT_URL_IOT_DATA_PLANE"),
        Quotas::new(f64::from(QUOTA), f64::from(QUOTA)),
    )
    .await;
    let (updates, reads, all, _) = two_pushes_at_once(&a, &b, &front).await;
    // Each pushes at the whole quota: a third of what they send is refused (and retried) on a quiet machine, less
    // when the stack is too loaded to answer twice the quota; always more than the 10 % that sharing stays under.
    assert!(all > 0.10, "{:.1} % answered 429 (updates {updates:.3}, reads {reads:.3})", 100.0 * all);
}

/// Five pushes started within 100 ms, each in its own execution: none can have seen the others' shares when it took
/// its own. In their first seconds, while each takes its first share, the account is asked for no more than the
/// promise's half part too much: at most 10 % of the requests the front sees in that window are answered 429.
#[tokio::test]
async fn five_pushes_started_together_stay_within_the_quota_from_their_first_request() {
    const PUSHES: usize = 5;
    /// Things per push: 2 × 40 × 5 requests at 40/s per API keep all five sending for about 5 s.
    const EACH: usize = 40;
    /// The window measured from the first shadow request the front sees: the first looks at the board, and the
    /// first renewal (every 2 s).
    const FIRST: Duration = Duration::from_secs(1);
    let fx = PushFixture::new().await;
    fx.create_things(0..PUSHES * EACH, "x").await;
    let front = QuotaFront::start(
        &fx.stack.var("AWS_ENDPOINT_URL_IOT_DATA_PLANE"),
        Quotas::new(f64::from(QUOTA), f64::from(QUOTA)),
    )
    .await;
    let functions = futures::future::join_all((0..PUSHES).map(|_| function(&fx, &front))).await;
    // Each execution warmed by a push of one thing of its own, one after another: the five then start within
    // milliseconds of each other, not a process start apart.
    fx.create_things(PUSHES * EACH..PUSHES * EACH + PUSHES, "warm").await;
    for (p, f) in functions.iter().enumerate() {
        let warm = request(&fx, PUSHES * EACH + p..PUSHES * EACH + p + 1);
        let summary = push(f, &warm).await.expect("invoking a warm-up push");
        assert_eq!(summary["complete"], true, "{summary}");
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let requests: Vec<Value> = (0..PUSHES).map(|p| request(&fx, p * EACH..(p + 1) * EACH)).collect();
    let counts = front.counts.clone();
    let seen = |c: &devstack::quota_front::FrontCounts| {
        (c.updates.admitted() + c.reads.admitted(), c.updates.refused() + c.reads.refused())
    };
    let before = seen(&counts);
    // The front's counts over the pushes' first seconds: from the first shadow request it sees.
    let window = async move {
        let waiting = Instant::now();
        while seen(&counts) == before {
            assert!(waiting.elapsed() < Duration::from_secs(60), "no shadow request reached the front");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(FIRST).await;
        let (admitted, refused) = seen(&counts);
        (admitted - before.0, refused - before.1)
    };
    let started = Instant::now();
    let pushes = futures::future::join_all(functions.iter().zip(&requests).map(|(f, r)| push(f, r)));
    let (summaries, (admitted, refused)) = tokio::join!(pushes, window);
    for summary in summaries {
        let summary = summary.expect("invoking a push");
        assert_eq!(summary["complete"], true, "{summary}");
        assert_eq!((summary["updated"].clone(), summary["failed"].clone()), (json!(EACH), json!(0)), "{summary}");
    }
    check_updated(&fx, 0..PUSHES * EACH).await;
    let share = refused as f64 / (admitted + refused).max(1) as f64;
    eprintln!(
        "first {FIRST:?}: {admitted} admitted, {refused} refused ({:.1} %); all: {:.1} % refused; {:.1} s",
        100.0 * share,
        100.0 * front.counts.refused_share(),
        started.elapsed().as_secs_f64()
    );
    assert!(share <= 0.10, "{:.1} % of the first seconds' shadow requests answered 429", 100.0 * share);
}

/// The board in DynamoDB Local: one entry per push (a takeover's announcement replaces its holder's), read whole and
/// consistently, taken off only by the holder that announced it.
#[tokio::test]
async fn the_board_keeps_one_entry_per_push_and_only_its_holder_takes_it_off() {
    use shadow_core::push::quota::{Rates, Sender, Senders};
    let fx = PushFixture::new().await;
    let store = shadow_aws::DynamoPushStore::new(fx.stack.dynamodb(), &fx.table, None);
    let entry = |push: &str, owner: &str, until_ms: u64, updates: f64| Sender {
        push_id: push.into(),
        owner: owner.into(),
        until_ms,
        caps: Rates { updates, reads: 40.0 },
        pace: Rates { updates: updates / 2.0, reads: 20.0 },
    };
    assert_eq!(store.senders().await.expect("reading an empty board"), []);
    store.announce(&entry("a", "a-1", 1_000, 40.0)).await.expect("announcing a");
    store.announce(&entry("b", "b-1", 2_000, 12.5)).await.expect("announcing b");
    // A takeover of a: its new holder's entry replaces the old one.
    store.announce(&entry("a", "a-2", 3_000, 40.0)).await.expect("announcing a again");
    let mut board = store.senders().await.expect("reading the board");
    board.sort_by(|x, y| x.push_id.cmp(&y.push_id));
    assert_eq!(board, [entry("a", "a-2", 3_000, 40.0), entry("b", "b-1", 2_000, 12.5)]);
    // The holder that died (a-1) ending late does not take its successor's entry off.
    store.withdraw("a", "a-1").await.expect("withdrawing another holder's entry");
    store.withdraw("b", "b-1").await.expect("withdrawing b");
    store.withdraw("c", "c-1").await.expect("withdrawing an entry that is not there");
    assert_eq!(store.senders().await.expect("reading the board"), [entry("a", "a-2", 3_000, 40.0)]);
}
