//! The whole pipeline in one process: readings in, aggregates, latest state and alerts out.

use super::*;
use serde_json::json;

#[tokio::test]
async fn readings_become_latest_state_series_and_an_alert_that_can_be_acknowledged() {
    let app = app().await;
    let token = app.device("pump-1").await;
    let t0 = (crate::app::now().millis() / 60_000 - 2) * 60_000; // two whole minutes ago
    let body: Vec<Value> = [(0, 70.0), (10_000, 72.0), (61_000, 85.0), (62_000, 90.0)]
        .iter()
        .map(|(dt, v)| json!({"deviceId": "pump-1", "ts": t0 + dt, "metrics": {"temperature": v, "rpm": 1500}}))
        .collect();
    let r = app
        .post(Some(&token), "application/json", Value::from(body).to_string())
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);

    let alerts = app
        .eventually("/api/alerts?state=active", |j| {
            j["alerts"].as_array().is_some_and(|a| !a.is_empty())
        })
        .await;
    let alert = &alerts["alerts"][0];
    assert_eq!(
        (alert["deviceId"].as_str(), alert["rule"].as_str()),
        (Some("pump-1"), Some("overheat"))
    );
    assert_eq!(
        (alert["value"].as_f64(), alert["threshold"].as_f64()),
        (Some(85.0), Some(80.0))
    );
    assert_eq!(alert["severity"], "critical");
    // Firing again at 90 while open updates the alert (its peak) rather than opening another.
    let updated = app
        .eventually("/api/alerts?state=active", |j| {
            j["alerts"][0]["peak"] == json!(90.0)
        })
        .await;
    assert_eq!(updated["alerts"].as_array().unwrap().len(), 1);
    assert!(alert["recommendation"].as_str().unwrap().contains("below 75"));

    let dev = app
        .eventually("/api/devices/pump-1", |j| {
            j["metrics"]["temperature"] == json!(90.0)
        })
        .await;
    assert_eq!(dev["activeAlerts"], 1);
    assert_eq!(dev["metrics"]["rpm"], json!(1500.0));

    let uri = format!(
        "/api/devices/pump-1/series?metric=temperature&from={t0}&to={}&step=1m",
        t0 + 120_000
    );
    let series = app
        .eventually(&uri, |j| j["points"].as_array().is_some_and(|p| p.len() == 2))
        .await;
    let p = &series["points"];
    assert_eq!(
        (p[0]["count"].as_u64(), p[0]["min"].as_f64(), p[0]["max"].as_f64()),
        (Some(2), Some(70.0), Some(72.0))
    );
    assert_eq!(p[0]["mean"].as_f64(), Some(71.0));
    assert_eq!(
        (p[1]["count"].as_u64(), p[1]["mean"].as_f64()),
        (Some(2), Some(87.5))
    );

    let id = alert["id"].as_str().unwrap();
    let ack = app.admin("POST", &format!("/api/alerts/{id}/ack"), None).await;
    assert_eq!(ack.status, StatusCode::OK);
    assert_eq!(
        (ack.json["alert"]["state"].as_str(), ack.json["changed"].as_bool()),
        (Some("acknowledged"), Some(true))
    );
    let again = app.admin("POST", &format!("/api/alerts/{id}/ack"), None).await;
    assert_eq!(
        (again.status, again.json["changed"].as_bool()),
        (StatusCode::OK, Some(false)),
        "idempotent"
    );
    let acked = app.admin("GET", "/api/alerts?state=acknowledged", None).await;
    assert_eq!(acked.json["alerts"][0]["id"], id);

    // Back below the clear level: resolved.
    let body =
        json!({"deviceId": "pump-1", "ts": t0 + 100_000, "metrics": {"temperature": 60.0}}).to_string();
    app.post(Some(&token), "application/json", body).await;
    let resolved = app
        .eventually("/api/alerts?state=resolved", |j| {
            j["alerts"].as_array().is_some_and(|a| !a.is_empty())
        })
        .await;
    assert_eq!(resolved["alerts"][0]["id"], id);
    assert!(resolved["alerts"][0]["resolvedAt"].is_string());
}
