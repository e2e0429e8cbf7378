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
        vec!["replay", "--help"],
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
    let hot = json!({"deviceId": "pump-1", "metrics": {"temperature": 91.2}});
    assert_eq!(server.send_as("pump-1", &hot).await, 202);

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
    // The terminal running `up` shows what the pipeline found, one line each.
    let transitions = || -> Vec<String> {
        let printed = server.printed.lock().unwrap();
        printed
            .iter()
            .filter(|l| l.contains(" alert."))
            .map(|l| l.split_whitespace().skip(1).take(4).collect::<Vec<_>>().join(" "))
            .collect()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while transitions().is_empty() {
        assert!(std::time::Instant::now() < deadline, "{:?}", server.printed);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        transitions(),
        vec!["alert.opened pump-1 overheat (critical):"],
        "{:?}",
        server.printed
    );
}

/// The banner's curl command works as printed: a first start provisions `demo-1` and prints a
/// valid token for it, plus the admin token; on `--listen 127.0.0.1:0` it names the port the
/// system gave, not 0.
#[tokio::test(flavor = "multi_thread")]
async fn the_start_banner_prints_a_working_curl_command_and_the_admin_token() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(bin())
        .args(["up", "--listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(dir.path())
        .env_remove("IOTSTREAM_ADMIN_TOKEN")
        .env("IOTSTREAM_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut banner = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        banner.push_str(&line);
        banner.push('\n');
        if line.starts_with("see the alerts") {
            break;
        }
    }
    let curl = banner
        .split("curl -i ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .expect(&banner);
    let url = curl.strip_suffix("/api/telemetry").expect(&banner);
    assert!(
        banner.starts_with(&format!("iotstream is up at {url} ")) && !url.ends_with(":0"),
        "{banner}"
    );
    let sas = banner
        .split("'Authorization: ")
        .nth(1)
        .and_then(|s| s.split('\'').next())
        .expect(&banner);
    let admin = banner
        .split("admin token")
        .nth(1)
        .and_then(|s| s.split(": ").nth(1))
        .map(|s| s.lines().next().unwrap().trim())
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.path().join("admin.token"))
            .unwrap()
            .trim(),
        admin
    );
    let client = reqwest::Client::new();
    let r = client
        .post(format!("{url}/api/telemetry"))
        .header("Authorization", sas)
        .header("Content-Type", "application/json")
        .body(r#"{"deviceId":"demo-1","metrics":{"temperature":85.5}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{banner}");
    let alerts = client
        .get(format!("{url}/api/alerts"))
        .bearer_auth(admin)
        .send()
        .await
        .unwrap();
    assert_eq!(alerts.status(), 200);
    let _ = child.kill();
    let _ = child.wait();
}

/// While `up` owns the data directory, `migrate` refuses with a clear error, and device
/// commands keep working.
#[tokio::test(flavor = "multi_thread")]
async fn migrate_refuses_a_data_dir_in_use_and_devices_still_work() {
    let dir = tempfile::tempdir().unwrap();
    let _server = Server::start(dir.path(), &[], None).await;
    let (ok, _, err) = cli(dir.path(), &["migrate"]);
    assert!(
        !ok && err.contains("in use by another iotstream process"),
        "{err}"
    );
    let (ok, out, err) = cli(dir.path(), &["devices", "add", "pump-9", "--json"]);
    assert!(ok && out.contains("pump-9"), "{err}");
}
