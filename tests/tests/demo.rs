//! The demo's story holds: the CLI's push reaches the group (recursively) through the local Lambda, every device
//! reports, every accepted update is recorded, the CLI's history of a device shows the push's desired state and then
//! the device's report, and its shadow document holds both.

use devstack::Stack;
use serde_json::json;

#[tokio::test]
async fn the_demo_tells_the_whole_story() {
    let stack = Stack::get();
    let report = devstack::demo::run(&stack).await.expect("running the demo on the local stack");
    assert_eq!(report.summary["targets"], 30, "{}", report.summary);
    assert_eq!(report.summary["updated"], 30, "{}", report.summary);
    assert_eq!(report.delivered, 60, "30 push updates and 30 device reports");
    let push_id = report.summary["pushId"].as_str().unwrap_or_default();
    assert_eq!(push_id, "seed-2026-11");
    let who: Vec<&str> = report.history.iter().map(|e| e["clientToken"].as_str().unwrap_or_default()).collect();
    assert_eq!(who, [push_id, "device-00"], "{:?}", report.history);
    let settings = |section: &str, op: &str| {
        json!([{"path": "firmware_url", "op": op, "to": "https://s3.com/firmware.bin"},
               {"path": "settings.mode", "op": op, "to": 1}, {"path": "settings.temp", "op": op, "to": 20}])
        .as_array()
        .cloned()
        .map(|changes| (section.to_owned(), changes))
    };
    let changed = |i: usize, section: &str| {
        report.history[i][section].as_array().cloned().map(|changes| (section.to_owned(), changes))
    };
    // What the push set, then what the device reported; neither touched the other section. The history holds the
    // shadow's creation (its first snapshot has no document before it), so the values are added, not merely set.
    assert_eq!(changed(0, "desired"), settings("desired", "added"), "{:?}", report.history);
    assert_eq!(report.history[0]["reported"], json!([]));
    assert_eq!(report.history[1]["desired"], json!([]));
    assert_eq!(changed(1, "reported"), settings("reported", "added"), "{:?}", report.history);
    assert_eq!(report.document["state"]["desired"], report.document["state"]["reported"], "{}", report.document);
    // The demo leaves nothing behind.
    let left = stack.iot().describe_thing().thing_name(&report.device).send().await;
    assert!(left.is_err(), "{} still exists", report.device);
}
