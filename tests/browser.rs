//! The dashboard in a real browser (Chromium driven by playwright-core, `tests/browser/`): open
//! the address `up` prints, see the device and its alert (first, among more devices than the
//! page shows), see a new reading arrive live (through `/api/stream`, well before the next poll),
//! acknowledge the alert, and be asked for the token again when it is wrong; no error in the
//! browser's console.
//! Needs `scripts/services` (run by `scripts/test`) for the browser; a missing one FAILS the test.
#![cfg(feature = "integration")]

mod common;

use common::*;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_shows_an_alert_that_a_click_acknowledges() {
    let need = |name: &str| {
        std::env::var(name)
            .unwrap_or_else(|_| panic!("{name} is not set: run through scripts/services or ./scripts/test"))
    };
    let (chromium, node_path) = (need("IOTSTREAM_TEST_CHROMIUM"), need("IOTSTREAM_TEST_NODE_PATH"));
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[], None).await;
    // A fleet larger than the page shows (200): the device with an alert must still be on it.
    for i in 0..210 {
        let r = server
            .client
            .post(format!("{}/api/devices", server.url))
            .bearer_auth(ADMIN)
            .json(&json!({"deviceId": format!("idle-{i:03}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    let (ok, _, _) = cli(dir.path(), &["devices", "add", "pump-1"]);
    assert!(ok);
    let hot = json!({"deviceId": "pump-1", "metrics": {"temperature": 91.2}});
    assert_eq!(server.send_as("pump-1", &hot).await, 202);
    server
        .eventually("/api/alerts?state=active", 20, |v| v["alerts"][0].is_object())
        .await;

    let url = format!("{}/#token={ADMIN}", server.url);
    let mut node = std::process::Command::new("node")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser/dashboard.js"))
        .arg(url)
        .env("NODE_PATH", node_path)
        .env("IOTSTREAM_TEST_CHROMIUM", chromium)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("node runs");
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = node.stdout.take().unwrap();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let next_line = || {
        rx.recv_timeout(std::time::Duration::from_secs(60))
            .expect("node said nothing")
    };
    let mut line = next_line();
    if line.contains("\"ready\"") {
        // The page is up: a new reading must reach it live.
        let warmer = json!({"deviceId": "pump-1", "metrics": {"temperature": 92.5}});
        assert_eq!(server.send_as("pump-1", &warmer).await, 202);
        line = next_line();
    }
    assert!(node.wait().unwrap().success());
    let seen: Value = serde_json::from_str(line.trim()).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert!(seen["failure"].is_null(), "{seen}");
    assert!(
        !seen["urlAfterLoad"].as_str().unwrap().contains("token"),
        "the token leaves the address bar: {seen}"
    );
    assert!(
        seen["devices"].as_str().unwrap().starts_with("pump-1"),
        "first: {seen}"
    );
    // 210 idle devices, demo-1 and pump-1.
    assert_eq!(seen["deviceCount"], "(200 of 212)", "{seen}");
    assert!(
        seen["devices"].as_str().unwrap().contains("temperature 91.2"),
        "{seen}"
    );
    let alerts = seen["alerts"].as_str().unwrap();
    assert!(
        alerts.contains("overheat") && alerts.contains("critical"),
        "{seen}"
    );
    assert!(alerts.contains("temperature on pump-1 is 91.2"), "{seen}");
    assert!(seen["liveUpdateMs"].as_u64().unwrap() < 5_000, "{seen}");
    assert_eq!(seen["alertsAfterAck"], "(0)", "{seen}");
    let acked = server.get("/api/alerts?state=acknowledged").await;
    assert_eq!(acked["alerts"][0]["rule"], "overheat");
    assert_eq!(seen["wrongTokenShowsLogin"], true, "{seen}");
    assert_eq!(seen["wrongTokenHidesBoard"], true, "{seen}");
    assert_eq!(seen["errors"], json!([]), "the browser's console: {seen}");
}
