//! `iotstream up --simulate N`: simulated devices are provisioned and their readings flow
//! through the whole pipeline.
#![cfg(feature = "integration")]

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread")]
async fn simulated_devices_send_readings_that_reach_the_results() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--simulate", "3"], None).await;
    let devices = server
        .eventually("/api/devices", 20, |v| {
            let list = v["devices"].as_array().unwrap();
            list.len() == 3
                && list
                    .iter()
                    .all(|d| d["metrics"]["temperature"].is_number() && d["lastSeen"].is_string())
        })
        .await;
    let ids: Vec<&str> = devices["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["deviceId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["sim-1", "sim-2", "sim-3"]);
    let t = devices["devices"][0]["metrics"]["temperature"].as_f64().unwrap();
    assert!((30.0..120.0).contains(&t), "a plausible temperature: {t}");
    // Their readings are in the store, authenticated like any device's.
    let readings = server
        .eventually("/api/devices/sim-2/readings", 20, |v| {
            v["readings"].as_array().unwrap().len() >= 2
        })
        .await;
    assert!(readings["readings"][0]["metrics"]["vibration"].is_number());

    // Restarted on the same data: new readings flow at once, not after as many seconds as the
    // first run sent (its message ids, sent again, would all be re-sends).
    let count = |v: &serde_json::Value| v["readings"].as_array().unwrap().len();
    let all = "/api/devices/sim-2/readings?limit=100000";
    let before = count(&server.eventually(all, 40, |v| count(v) >= 15).await);
    drop(server);
    let server = Server::start(dir.path(), &["--simulate", "3"], None).await;
    server.eventually(all, 12, |v| count(v) >= before + 2).await;
}

/// Runs `iotstream simulate` with `args`; returns (success, the JSON report, stderr).
fn simulate(args: &[&str]) -> (bool, serde_json::Value, String) {
    let out = std::process::Command::new(bin())
        .arg("simulate")
        .args(args)
        .env("IOTSTREAM_LOG", "warn")
        .env_remove("IOTSTREAM_ADMIN_TOKEN")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report = stdout.lines().last().and_then(|l| serde_json::from_str(l).ok());
    (
        out.status.success(),
        report.unwrap_or_default(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn the_simulate_command_loads_a_server_and_scores_the_alerts_it_raised() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[], None).await;
    let (ok, report, err) = simulate(&[
        "--target",
        &server.url,
        "--devices",
        "4",
        "--rate",
        "80",
        "--duration",
        "3s",
        "--batch",
        "2",
        "--anomaly-rate",
        "0.02",
        "--seed",
        "3",
        "--admin-token",
        ADMIN,
    ]);
    assert!(ok, "{err}");
    let sent = report["sent"].as_u64().unwrap();
    assert!((180..=260).contains(&sent), "about 80/s for 3 s: {report}");
    assert_eq!(report["accepted"].as_u64(), Some(sent), "{report}");
    assert_eq!(report["rejected"], serde_json::json!({}));
    assert!(report["latencyMs"]["p99"].as_f64().unwrap() > 0.0);
    let kinds: Vec<&str> = report["detection"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["spike", "level_shift", "rate", "flatline", "silence", "threshold"]
    );
    // The devices it provisioned are the server's, and their readings arrived.
    let simulated = |v: &serde_json::Value| {
        v["devices"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| {
                d["deviceId"].as_str().unwrap().starts_with("simulated-") && d["lastSeen"].is_string()
            })
            .count()
    };
    server.eventually("/api/devices", 20, |v| simulated(v) == 4).await;
    // Running again re-provisions the same devices (their old keys are not retrievable).
    let (ok, report, err) = simulate(&[
        "--target",
        &server.url,
        "--devices",
        "4",
        "--rate",
        "40",
        "--duration",
        "1s",
        "--admin-token",
        ADMIN,
    ]);
    assert!(ok && report["accepted"] == report["sent"], "{err} {report}");
}

#[test]
fn offline_simulation_reports_precision_recall_and_delay_per_detector() {
    let (ok, report, err) = simulate(&[
        "--offline",
        "--devices",
        "6",
        "--duration",
        "1d",
        "--anomaly-rate",
        "0.003",
        "--seed",
        "5",
    ]);
    assert!(ok, "{err}");
    assert!(report["readings"].as_u64().unwrap() > 50_000);
    for k in report["detection"].as_array().unwrap() {
        if k["labels"].as_u64().unwrap() >= 5 {
            assert!(k["recall"].as_f64().unwrap() >= 0.8, "{k}");
            assert!(k["precision"].as_f64().unwrap() >= 0.8, "{k}");
        }
    }
    assert!(err.contains("precision"), "a human summary on stderr: {err}");
}

#[test]
fn simulate_explains_what_is_missing() {
    let (ok, _, err) = simulate(&["--devices", "2"]);
    assert!(!ok && err.contains("needs --target URL (or --offline)"), "{err}");
    let (ok, _, err) = simulate(&[
        "--target",
        "http://127.0.0.1:9",
        "--devices",
        "2",
        "--duration",
        "1s",
    ]);
    assert!(!ok && err.contains("needs --data-dir or --admin-token"), "{err}");
    let (ok, _, err) = simulate(&["--offline", "--anomaly-rate", "2"]);
    assert!(
        !ok && err.contains("--anomaly-rate must be between 0 and 1"),
        "{err}"
    );
    let (ok, _, err) = simulate(&["--offline", "--duration", "soon"]);
    assert!(!ok && err.contains("--duration"), "{err}");
}
