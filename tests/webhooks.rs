//! Webhook delivery through the real binary: a pending delivery survives `kill -9`, and
//! `IOTSTREAM_WEBHOOK_MAX_ATTEMPTS` decides when a failing delivery becomes a dead letter.
#![cfg(feature = "integration")]

mod common;

use common::*;
use serde_json::json;

/// Adds `pump-1` with the CLI and sends it one reading over the `overheat` threshold.
async fn overheat(server: &Server) {
    let (ok, _, err) = cli(&server.data_dir, &["devices", "add", "pump-1"]);
    assert!(ok, "{err}");
    let hot = json!({"deviceId": "pump-1", "metrics": {"temperature": 91.2}});
    assert_eq!(server.send_as("pump-1", &hot).await, 202);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pending_delivery_survives_kill_9_and_arrives_after_the_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (receiver, hook_url) = Receiver::start(2).await; // 500 to the first two requests
    let mut server = Server::start(dir.path(), &[], Some(&hook_url)).await;
    overheat(&server).await;
    receiver
        .wait_for(20, "a failed webhook attempt", |r| !r.failed().is_empty())
        .await;
    server.kill9();
    assert!(
        receiver.hooks().is_empty(),
        "nothing was delivered before the crash: the delivery was pending"
    );

    let _server = Server::start(dir.path(), &[], Some(&hook_url)).await;
    receiver
        .wait_for(30, "the delivery after the restart", |r| !r.hooks().is_empty())
        .await;
    let hook = receiver.hooks()[0].clone();
    assert_eq!(hook.event, "alert.opened");
    assert!(hook.signature_ok, "X-Iotstream-Signature must verify");
    let alert = &hook.body["alert"];
    assert_eq!(
        (alert["deviceId"].as_str(), alert["value"].as_f64()),
        (Some("pump-1"), Some(91.2))
    );
    let delivery = format!("{}:opened", alert["id"].as_str().unwrap());
    assert_eq!(hook.delivery, delivery);
    let failed = receiver.failed();
    assert_eq!(failed.len(), 2);
    for f in failed {
        assert_eq!(
            (f.event.as_str(), f.delivery.as_str()),
            ("alert.opened", delivery.as_str()),
            "a retry across the restart keeps its delivery id"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn max_attempts_from_the_environment_decides_when_a_delivery_is_dead() {
    let dir = tempfile::tempdir().unwrap();
    let (receiver, hook_url) = Receiver::start(usize::MAX).await; // always 500
    let server = Server::start_with_env(
        dir.path(),
        &[],
        Some(&hook_url),
        &[("IOTSTREAM_WEBHOOK_MAX_ATTEMPTS", "1")],
    )
    .await;
    overheat(&server).await;
    let dead = server
        .eventually("/api/dead-letters", 20, |v| {
            v["deadLetters"].as_array().is_some_and(|d| !d.is_empty())
        })
        .await;
    let letter = &dead["deadLetters"][0];
    assert_eq!(
        (letter["event"].as_str(), letter["attempts"].as_u64()),
        (Some("alert.opened"), Some(1))
    );
    assert!(letter["lastError"].as_str().unwrap().contains("500"), "{letter}");
    assert_eq!(receiver.failed().len(), 1, "one attempt, no retry");
    assert_eq!(
        letter["id"].as_str(),
        Some(receiver.failed()[0].delivery.as_str())
    );

    let out = std::process::Command::new(bin())
        .args(["up", "--listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(dir.path().join("other"))
        .env("IOTSTREAM_WEBHOOK_MAX_ATTEMPTS", "0")
        .env("IOTSTREAM_LOG", "warn")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("IOTSTREAM_WEBHOOK_MAX_ATTEMPTS"), "{err}");
}
