//! Graceful shutdown: `Pipeline::shutdown` checkpoints analyze, and the next pipeline on the same
//! directory carries on from that state.

use super::*;
use iotstream_core::{groups, topics};
use serde_json::json;

#[tokio::test]
async fn shutdown_checkpoints_analyze_and_a_restart_resolves_the_same_alert() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    // No periodic checkpoint during the test: only the shutdown can save one.
    cfg.checkpoint_every = Duration::from_secs(3_600);
    let app = start_in(dir, cfg.clone(), |_| {}).await;
    let token = app.device("pump-1").await;
    let t0 = crate::app::now().millis() - 10_000;
    let body = json!([
        {"deviceId": "pump-1", "ts": t0, "metrics": {"temperature": 70.0}},
        {"deviceId": "pump-1", "ts": t0 + 1_000, "metrics": {"temperature": 88.0}},
    ])
    .to_string();
    let r = app.post(Some(&token), "application/json", body).await;
    assert_eq!(r.json, json!({"accepted": 2, "duplicates": 0}));
    let active = app
        .eventually("/api/alerts?state=active", |j| {
            j["alerts"].as_array().is_some_and(|a| a.len() == 1)
        })
        .await;
    let alert_id = active["alerts"][0]["id"].as_str().unwrap().to_owned();
    let bus = app.pipeline.state.backends.bus.clone();
    assert_eq!(
        bus.lag(groups::ANALYZE, topics::TELEMETRY).await.unwrap(),
        2,
        "analyze has not committed before the shutdown"
    );
    drop(bus);

    let dir = app.shutdown().await;
    {
        let backends = iotstream_backends::connect(dir.path(), &cfg.urls).await.unwrap();
        let cp = backends
            .checkpoints
            .load_checkpoint("analyze/p0")
            .await
            .unwrap()
            .expect("shutdown saved the checkpoint of analyze's partition");
        let read: u64 = cp.positions.iter().map(|p| p.next_offset).sum();
        assert_eq!(read, 2, "the checkpoint covers both readings");
        assert_eq!(
            backends
                .bus
                .lag(groups::ANALYZE, topics::TELEMETRY)
                .await
                .unwrap(),
            0,
            "and its offsets are committed"
        );
    }

    let app = start_in(dir, cfg, |_| {}).await;
    let cool = json!({"deviceId": "pump-1", "ts": t0 + 2_000, "metrics": {"temperature": 60.0}});
    let r = app.post(Some(&token), "application/json", cool.to_string()).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "the device's token still works");
    let resolved = app
        .eventually("/api/alerts?state=resolved", |j| {
            j["alerts"].as_array().is_some_and(|a| !a.is_empty())
        })
        .await;
    assert_eq!(
        resolved["alerts"][0]["id"], alert_id,
        "the restored engine resolves the alert it opened"
    );
    let all = app.admin("GET", "/api/alerts", None).await;
    assert_eq!(all.json["alerts"].as_array().unwrap().len(), 1, "{}", all.json);
}
