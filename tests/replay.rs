//! `iotstream replay` gives exactly what the live pipeline produced for the same readings:
//! the same alerts (ids and final states) and the same window aggregates.
#![cfg(feature = "integration")]

mod common;

use common::*;
use serde_json::{Value, json};
use std::collections::BTreeMap;

const RULES: &str = "[[rules]]\nname='hot'\nmetric='temperature'\nabove=80.0\nclear=75.0\nfor='10s'\n";

#[tokio::test(flavor = "multi_thread")]
async fn replay_matches_the_live_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.toml");
    std::fs::write(&rules, RULES).unwrap();
    let data = dir.path().join("data");
    let mut lines = Vec::new();
    let start =
        (iotstream_core::Ts::from_datetime(time::OffsetDateTime::now_utc()).millis() / 60_000 - 20) * 60_000;
    for device in ["r-1", "r-2"] {
        cli(&data, &["devices", "add", device]);
    }
    let server = Server::start(&data, &["--rules", rules.to_str().unwrap()], None).await;
    for device in ["r-1", "r-2"] {
        let (_, token, _) = cli(&data, &["devices", "token", device]);
        let readings: Vec<Value> = (0..300i64)
            .map(|i| {
                let wave = ((i as f64) / 9.0).sin() * 12.0 + 72.0 + if device == "r-2" { 4.0 } else { 0.0 };
                json!({"deviceId": device, "id": format!("{device}-{i}"), "ts": start + i * 3000, "metrics": {"temperature": wave}})
            })
            .collect();
        for chunk in readings.chunks(7) {
            let r = server
                .client
                .post(format!("{}/api/telemetry", server.url))
                .header("Authorization", token.trim())
                .json(&chunk)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 202);
        }
        lines.extend(readings.iter().map(Value::to_string));
    }
    let file = dir.path().join("recording.ndjson");
    std::fs::write(&file, lines.join("\n")).unwrap();
    let replayed = replay(&file, &rules);
    let expected = final_states(&replayed);
    assert!(
        expected.len() >= 4,
        "the recording opens several alerts: {expected:?}"
    );
    let live = server
        .eventually("/api/alerts?limit=1000", 30, |v| {
            v["alerts"].as_array().unwrap().len() >= expected.len()
        })
        .await;
    let live: BTreeMap<String, String> = live["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["id"].as_str().unwrap().into(),
                a["state"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(live, expected);

    // The backtest workflow: history exported from the readings endpoint (one page per device,
    // appended as `curl ... >> file` does) replays to the same alerts, ids included: the pages
    // carry the ids ingest gave the readings, not the clients' message ids.
    let mut pages = String::new();
    for device in ["r-1", "r-2"] {
        let page = server
            .get(&format!("/api/devices/{device}/readings?limit=1000"))
            .await;
        assert_eq!(page["readings"].as_array().unwrap().len(), 300, "{device}");
        pages.push_str(&format!("{page}\n"));
    }
    let export = dir.path().join("export.json");
    std::fs::write(&export, pages).unwrap();
    assert_eq!(final_states(&replay(&export, &rules)), live);

    // Aggregates: every replayed window equals the live series point for it.
    for agg in replayed
        .iter()
        .filter(|v| v["kind"] == "aggregate" && v["windowMs"] == 60_000)
    {
        let (device, ws) = (
            agg["deviceId"].as_str().unwrap(),
            agg["windowStart"].as_str().unwrap(),
        );
        let ws_ms = iotstream_core::Ts::parse_rfc3339(ws).unwrap().millis();
        let path = format!(
            "/api/devices/{device}/series?metric=temperature&from={ws_ms}&to={}&step=1m",
            ws_ms + 60_000
        );
        let series = server
            .eventually(&path, 30, |v| v["points"][0]["count"] == agg["count"])
            .await;
        assert_eq!(series["points"][0]["max"], agg["max"], "{device} {ws}");
        assert_eq!(series["points"][0]["min"], agg["min"], "{device} {ws}");
    }
}

fn replay(file: &std::path::Path, rules: &std::path::Path) -> Vec<Value> {
    let out = std::process::Command::new(bin())
        .args([
            "replay",
            file.to_str().unwrap(),
            "--rules",
            rules.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The final state of each alert id in a replay's output.
fn final_states(replayed: &[Value]) -> BTreeMap<String, String> {
    replayed
        .iter()
        .filter(|v| v["event"].is_string() && v["event"] != "alert.updated")
        .map(|e| {
            (
                e["alert"]["id"].as_str().unwrap().into(),
                e["alert"]["state"].as_str().unwrap().into(),
            )
        })
        .collect()
}

/// `replay --scores`: one score per reading and metric, in 0..1, high on the injected spike;
/// two runs print byte-identical output.
#[test]
fn replay_scores_every_reading_and_is_byte_identical_across_runs() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pump.csv");
    let mut csv = String::from("timestamp,deviceId,metric,value\n");
    for i in 0..240i64 {
        let v = if i == 200 {
            160.0
        } else {
            101.0 + ((i * 37) % 11) as f64 / 20.0
        };
        csv.push_str(&format!(
            "2026-11-25 10:{:02}:{:02},pump-7,pressure,{v}\n",
            i / 60,
            i % 60
        ));
    }
    std::fs::write(&file, csv).unwrap();
    let run = || {
        let out = std::process::Command::new(bin())
            .args(["replay", file.to_str().unwrap(), "--scores"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        out.stdout
    };
    let (a, b) = (run(), run());
    assert_eq!(a, b, "deterministic");
    // The same recording piped in (`-`): the same output.
    let mut piped = std::process::Command::new(bin())
        .args(["replay", "-", "--scores"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let input = std::fs::read(&file).unwrap();
    let mut stdin = piped.stdin.take().unwrap();
    let writer = std::thread::spawn(move || std::io::Write::write_all(&mut stdin, &input).unwrap());
    let out = piped.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(out.status.success());
    assert_eq!(out.stdout, a, "stdin gives what the file gives");
    let lines: Vec<Value> = String::from_utf8(a)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let scores: Vec<&Value> = lines.iter().filter(|v| v.get("score").is_some()).collect();
    assert_eq!(scores.len(), 240);
    assert!(
        scores
            .iter()
            .all(|s| s["deviceId"] == "pump-7" && s["metric"] == "pressure")
    );
    assert!(scores[200]["score"].as_f64().unwrap() > 0.99, "{}", scores[200]);
    assert!(scores[150]["score"].as_f64().unwrap() < 0.5, "{}", scores[150]);
    let spike = lines.iter().find(|v| v["event"] == "alert.opened").unwrap();
    assert_eq!(
        (spike["alert"]["kind"].as_str(), spike["alert"]["value"].as_f64()),
        (Some("spike"), Some(160.0))
    );
    assert!(spike["alert"]["evidence"]["baseline"].as_f64().unwrap() < 102.0);
}
