//! The seed's own device scripts on the local stack: `subscribe.py` and `publish.py`, as the seed article gives
//! them (tests/seed/, with the article's `mqtt_connect()` put after each script's imports, since the article shows it
//! apart), run with awsiotsdk (pinned, `.tools/device-venv`, installed by scripts/tools.sh). Changed: only the
//! endpoint (the stack's broker, whose port the article's endpoint leaves at 8883) and the three file paths (a
//! certificate from `fleet-local cert`'s CA). The subscriber must print the update's and the get's state, and
//! shadow-history must have recorded the update.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use devstack::cli::run;
use devstack::mqtt_ca::{CERTIFICATE_FILE, PRIVATE_KEY_FILE, ROOT_CA_FILE};
use devstack::mqtt_device::Endpoint;
use devstack::stack::repo_root;
use devstack::{Stack, unique};
use serde_json::Value;

const SEED_ENDPOINT: &str = "endpoint=\"IoT Coreのエンドポイント(それぞれのアカウントで異なる。https://ap-northeast-1.console.aws.amazon.com/iot/home?region=ap-northeast-1#/settings)\",";

/// The article's script with its `mqtt_connect()`, pointed at the stack's broker and at the certificate in `dir`.
fn seed_script(name: &str, endpoint: &Endpoint, dir: &Path) -> String {
    let seed = repo_root().join("tests/seed");
    let read =
        |file: &str| std::fs::read_to_string(seed.join(file)).unwrap_or_else(|e| panic!("tests/seed/{file}: {e}"));
    let script = read(name);
    let connect = read("mqtt_connect.py");
    let (imports, body) = script.split_once("\n\n\n").unwrap_or_else(|| panic!("{name} has no imports block"));
    let path = |file: &str| dir.join(file).display().to_string();
    let connect = connect
        .replace(SEED_ENDPOINT, &format!("endpoint=\"{}\", port={},", endpoint.host, endpoint.port))
        .replace("\"./certificate.pem.crt\"", &format!("\"{}\"", path(CERTIFICATE_FILE)))
        .replace("\"./private.pem.key\"", &format!("\"{}\"", path(PRIVATE_KEY_FILE)))
        .replace("\"./AmazonRootCA1.pem\"", &format!("\"{}\"", path(ROOT_CA_FILE)));
    assert_eq!(connect.matches(&dir.display().to_string()).count(), 3, "the three paths replaced: {connect}");
    assert!(connect.contains(&format!("port={}", endpoint.port)), "the endpoint replaced: {connect}");
    format!("{imports}\n\n\n{connect}\n\n{body}")
}

fn python() -> PathBuf {
    let python = repo_root().join(".tools/device-venv/bin/python");
    assert!(python.exists(), "{} is missing: run scripts/tools.sh (make tools)", python.display());
    python
}

/// Each line the process prints, as it prints it.
fn lines_of(child: &mut Child) -> mpsc::Receiver<String> {
    let (sender, receiver) = mpsc::channel();
    if let Some(stdout) = child.stdout.take() {
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    return;
                }
            }
        });
    }
    receiver
}

/// Lines until one satisfies `done` (within `within`); all the lines read.
fn read_until(
    lines: &mpsc::Receiver<String>,
    seen: &mut Vec<String>,
    within: Duration,
    done: impl Fn(&[String]) -> bool,
) {
    let deadline = Instant::now() + within;
    while !done(seen) {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => panic!("within {within:?} the subscriber printed only: {seen:#?}"),
        }
    }
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seeds_scripts_run_on_the_stack_as_written() {
    let stack = Stack::get();
    let (endpoint, ca) = Endpoint::of(&stack).unwrap_or_else(|e| panic!("{e}"));
    // The seed's thing; it may exist already (the demo's fleet has it).
    let _ = stack.iot().create_thing().thing_name("Test-Device").send().await;
    let dir = std::env::temp_dir().join(unique("seed"));
    ca.write_thing("Test-Device", &dir).expect("the thing's certificate");
    for name in ["subscribe.py", "publish.py"] {
        std::fs::write(dir.join(name), seed_script(name, &endpoint, &dir)).expect("writing the script");
    }

    let subscriber = Command::new(python())
        .arg("-u")
        .arg(dir.join("subscribe.py"))
        .current_dir(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting subscribe.py");
    let mut subscriber = Killed(subscriber);
    let lines = lines_of(&mut subscriber.0);
    let mut seen = Vec::new();
    read_until(&lines, &mut seen, Duration::from_secs(30), |seen| {
        seen.iter().any(|l| l == "Waiting for shadow publish...")
    });

    let published = Command::new(python())
        .arg("-u")
        .arg(dir.join("publish.py"))
        .current_dir(&dir)
        .output()
        .expect("running publish.py");
    let out = String::from_utf8_lossy(&published.stdout);
    assert!(
        published.status.success() && out.contains("Publish Complete!"),
        "publish.py: {out} {}",
        String::from_utf8_lossy(&published.stderr)
    );

    // Both scripts connect with client id "client_id" and clean_session=False: the publisher takes the session over,
    // the subscriber reconnects and gets the answers the session kept (as on AWS IoT Core).
    read_until(&lines, &mut seen, Duration::from_secs(60), |seen| {
        let after = |heading: &str| seen.iter().position(|l| l == heading).and_then(|i| seen.get(i + 1));
        after("Shadow Update Accepted:").is_some() && after("Shadow Get Accepted:").is_some()
    });
    let after = |heading: &str| {
        let i = seen.iter().position(|l| l == heading).unwrap_or_default();
        seen.get(i + 1).cloned().unwrap_or_default()
    };
    // The article's desired state, whatever the order of its keys (a JSON object's keys have none).
    let state_of = |section: &str, line: &str| {
        let map = format!("{section}={{");
        let at = line.find(&map).map(|i| &line[i + map.len() - 1..]).unwrap_or_default();
        ["'settings': {'mode': 1, 'temp': 20}", "'firmware_url': 'https://s3.com/firmware.bin'"]
            .iter()
            .all(|part| at.split(", desired").next().unwrap_or_default().contains(part))
    };
    let update = after("Shadow Update Accepted:");
    assert!(update.starts_with("awsiot.iotshadow.ShadowState(") && state_of("desired", &update), "{seen:#?}");
    assert!(update.contains("reported=None"), "{update}");
    let get = after("Shadow Get Accepted:");
    assert!(get.starts_with("awsiot.iotshadow.ShadowStateWithDelta(") && state_of("desired", &get), "{seen:#?}");
    assert!(state_of("delta", &get) && get.contains("reported=None"), "{get}");
    assert!(!seen.iter().any(|l| l.contains("Rejected")), "{seen:#?}");

    // The update is in shadow-fleet's history of Test-Device's test1, at the version the shadow has now.
    let shadow = stack
        .iot_data()
        .get_thing_shadow()
        .thing_name("Test-Device")
        .shadow_name("test1")
        .send()
        .await
        .expect("GetThingShadow");
    let document: Value = shadow.payload().and_then(|p| serde_json::from_slice(p.as_ref()).ok()).unwrap_or_default();
    let version = document["version"].as_u64().expect("the shadow's version");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let history = run(&stack, &["history", "Test-Device", "--shadow", "test1", "--output", "json", "--limit", "0"]);
        assert_eq!(history.code, 0, "{}", history.stderr);
        let events = history.lines();
        if let Some(event) = events.iter().find(|e| e["version"].as_u64() == Some(version)) {
            let changes = event["desired"].as_array().cloned().unwrap_or_default();
            assert!(changes.iter().any(|c| c["path"] == "settings.temp" && c["to"] == 20), "{event}");
            break;
        }
        assert!(Instant::now() < deadline, "version {version} is not in the history: {events:#?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let _ = std::fs::remove_dir_all(dir);
}
