//! The demo's story holds: the push reaches the group (recursively), every device reports, every accepted update is
//! recorded, and a device's history shows the push's desired state and then the device's report.

use fleet_tests::Stack;

#[tokio::test]
async fn the_demo_tells_the_whole_story() {
    let stack = Stack::get();
    let report = fleet_tests::demo::run(&stack).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.summary["targets"], 30, "{}", report.summary);
    assert_eq!(report.summary["updated"], 30, "{}", report.summary);
    assert_eq!(report.delivered, 60, "30 push updates and 30 device reports");
    let push_id = report.summary["pushId"].as_str().unwrap_or_default();
    let kinds: Vec<(String, bool, bool)> = report
        .history
        .iter()
        .map(|e| {
            (
                e["clientToken"].as_str().unwrap_or_default().to_owned(),
                e["state"]["desired"].is_object(),
                e["state"]["reported"].is_object(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [(push_id.to_owned(), true, false), ("device-00".to_owned(), false, true)],
        "{:?}",
        report.history
    );
    // The demo leaves nothing behind.
    let left = stack.iot().describe_thing().thing_name(&report.device).send().await;
    assert!(left.is_err(), "{} still exists", report.device);
}
