//! The README's five-minute tour, through the real binary: CLI provisioning, readings over HTTP,
//! an alert reaching a webhook (with retries), acknowledgement, and the CLI's errors.
#![cfg(feature = "integration")]

mod common;

use common::*;
use serde_json::json;

#[test]
fn every_command_answers_help() {
    for args in [
        vec!["--help"],
        vec!["up", "--help"],
        vec!["devices", "--help"],
        vec!["devices", "add", "--help"],
        vec!["devices", "list", "--help"],
        vec!["devices", "remove", "--help"],
        vec!["devices", "token", "--help"],
        vec!["migrate", "--help"],
    ] {
        let out = std::process::Command::new(bin()).args(&args).output().unwrap();
        assert!(out.status.success(), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("Usage"), "{args:?}");
    }
}

#[test]
fn devices_cli_prints_the_contract_json_and_fails_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, out, _) = cli(dir.path(), &["devices", "add", "pump-1", "--json"]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        v.as_object().unwrap().keys().collect::<Vec<_>>(),
        vec!["deviceId", "primaryKey"]
    );
    assert_eq!(out.trim().lines().count(), 1);

    let (ok, _, err) = cli(dir.path(), &["devices", "add", "pump-1"]);
    assert!(!ok);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("already exists"));
    let (ok, _, err) = cli(dir.path(), &["devices", "add", "bad id"]);
    assert!(!ok && err.contains("invalid device id"));
    let (ok, out, _) = cli(dir.path(), &["devices", "list"]);
    assert!(ok && out.contains("pump-1"));
    let (ok, out, _) = cli(dir.path(), &["devices", "token", "pump-1", "--ttl", "2h"]);
    assert!(ok && out.starts_with("SharedAccessSignature sr="));
    let (ok, _, err) = cli(dir.path(), &["devices", "token", "pump-1", "--ttl", "soon"]);
    assert!(!ok && err.contains("--ttl"));
    let (ok, _, _) = cli(dir.path(), &["devices", "remove", "pump-1"]);
    assert!(ok);
    let (ok, _, err) = cli(dir.path(), &["devices", "remove", "pump-1"]);
    assert!(!ok && err.contains("no device"));
    let (ok, out, _) = cli(dir.path(), &["migrate"]);
    assert!(ok && out.contains("migrated"));
    let (ok, _, err) = cli(dir.path(), &["migrate", "--bus-url", "nats://x"]);
    assert!(!ok && err.contains("nats"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reading_over_the_threshold_reaches_the_webhook_signed_and_acks_follow() {
    let dir = tempfile::tempdir().unwrap();
    let (receiver, hook_url) = Receiver::start(2).await; // the first two deliveries fail: retried
    let server = Server::start(dir.path(), &[], Some(&hook_url)).await;
    // A device added by the CLI while `up` runs can send at once.
    let (ok, _, _) = cli(dir.path(), &["devices", "add", "pump-1"]);
    assert!(ok);
    let (_, token, _) = cli(dir.path(), &["devices", "token", "pump-1"]);
    let r = server
        .client
        .post(format!("{}/api/telemetry", server.url))
        .header("Authorization", token.trim())
        .json(&json!({"deviceId": "pump-1", "metrics": {"temperature": 91.2}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while receiver.hooks().is_empty() {
        assert!(std::time::Instant::now() < deadline, "no webhook arrived");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let hook = receiver.hooks()[0].clone();
    assert_eq!(hook.event, "alert.opened");
    assert!(hook.signature_ok, "X-Iotstream-Signature must verify");
    let alert = &hook.body["alert"];
    assert_eq!(
        (alert["deviceId"].as_str(), alert["rule"].as_str()),
        (Some("pump-1"), Some("overheat"))
    );
    assert_eq!(
        (alert["value"].as_f64(), alert["state"].as_str()),
        (Some(91.2), Some("active"))
    );
    assert!(hook.delivery.starts_with(alert["id"].as_str().unwrap()));

    let (status, body) = server
        .post_admin(&format!("/api/alerts/{}/ack", alert["id"].as_str().unwrap()))
        .await;
    assert_eq!((status, body["changed"].as_bool()), (200, Some(true)));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !receiver.hooks().iter().any(|h| h.event == "alert.acknowledged") {
        assert!(std::time::Instant::now() < deadline, "no acknowledgement webhook");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let events: Vec<String> = receiver.hooks().iter().map(|h| h.event.clone()).collect();
    assert_eq!(
        events,
        vec!["alert.opened", "alert.acknowledged"],
        "each event once"
    );
}
