//! Forecasts and late readings through the whole embedded pipeline: readings in, analyze's
//! insights stored by process, read back through `/api/forecasts` and `/api/late-readings`.

use super::*;
use serde_json::json;

fn rfc3339(ms: i64) -> Value {
    serde_json::to_value(iotstream_core::Ts(ms)).unwrap()
}

#[tokio::test]
async fn a_rising_trend_is_forecast_and_late_readings_are_listed() {
    let app = app().await;
    let token = app.device("pump-1").await;
    let t0 = (crate::app::now().millis() / 60_000 - 5) * 60_000;
    // +0.1 per second from 60, toward the overheat rule's 80: from the 10th reading on (69 at
    // t0 + 90 s) the trend is known well enough to say it crosses in about 110 seconds.
    let rising: Vec<Value> = (0..12)
        .map(|i| json!({"deviceId": "pump-1", "ts": t0 + i * 10_000, "metrics": {"temperature": 60 + i}}))
        .collect();
    let r = app
        .post(Some(&token), "application/json", Value::from(rising).to_string())
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.json);

    let got = app
        .eventually("/api/forecasts?deviceId=pump-1", |j| {
            j["forecasts"].as_array().is_some_and(|f| !f.is_empty())
        })
        .await;
    let forecasts = got["forecasts"].as_array().unwrap();
    assert_eq!(forecasts.len(), 1, "once per approach: {got}");
    let f = &forecasts[0];
    assert_eq!(
        (f["deviceId"].as_str(), f["rule"].as_str(), f["metric"].as_str()),
        (Some("pump-1"), Some("overheat"), Some("temperature"))
    );
    assert_eq!(f["threshold"].as_f64(), Some(80.0));
    assert_eq!(f["at"], rfc3339(t0 + 90_000), "made by the 10th reading");
    let eta = f["etaSeconds"].as_i64().unwrap();
    assert!((105..=115).contains(&eta), "about 110 s: {f}");
    let eta_at = iotstream_core::Ts::parse_rfc3339(f["eta"].as_str().unwrap()).unwrap();
    assert_eq!(
        (eta_at.millis() - (t0 + 90_000)) / 1_000,
        eta,
        "eta = at + etaSeconds: {f}"
    );
    assert!((f["slopePerMinute"].as_f64().unwrap() - 6.0).abs() < 1e-6, "{f}");
    assert!(
        f["message"]
            .as_str()
            .unwrap()
            .starts_with("temperature on pump-1 will cross 80 in about"),
        "{f}"
    );
    let everyone = app.admin("GET", "/api/forecasts", None).await;
    assert_eq!(everyone.json["forecasts"], got["forecasts"], "across devices too");
    let after = app
        .admin(
            "GET",
            &format!("/api/forecasts?deviceId=pump-1&from={}", t0 + 90_001),
            None,
        )
        .await;
    assert_eq!(after.json, json!({"forecasts": []}), "`from` bounds `at`");
    let other = app.admin("GET", "/api/forecasts?deviceId=pump-2", None).await;
    assert_eq!(
        other.json,
        json!({"forecasts": []}),
        "another device's are left out"
    );

    // Two readings older than the device's newest value: late, kept in the store, listed.
    let late: Vec<Value> = [5_000, 15_000]
        .iter()
        .map(|dt| json!({"deviceId": "pump-1", "ts": t0 + dt, "metrics": {"temperature": 99.0}}))
        .collect();
    let r = app
        .post(Some(&token), "application/json", Value::from(late).to_string())
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.json);
    let got = app
        .eventually("/api/late-readings?deviceId=pump-1", |j| {
            j["lateReadings"].as_array().is_some_and(|l| l.len() == 2)
        })
        .await;
    let listed = got["lateReadings"].as_array().unwrap();
    assert_eq!(
        listed.iter().map(|l| l["ts"].clone()).collect::<Vec<_>>(),
        vec![rfc3339(t0 + 15_000), rfc3339(t0 + 5_000)],
        "newest first"
    );
    assert_eq!(listed[0]["metrics"], json!(["temperature"]));
    assert_eq!(
        listed[0]["watermark"],
        rfc3339(t0 + 110_000),
        "the device's clock then"
    );
    let stored = app
        .admin(
            "GET",
            &format!(
                "/api/devices/pump-1/readings?from={}&to={}",
                t0 + 15_000,
                t0 + 15_001
            ),
            None,
        )
        .await;
    assert_eq!(
        listed[0]["readingId"], stored.json["readings"][0]["id"],
        "the id of the reading in the store"
    );
    let one = app
        .admin("GET", "/api/late-readings?deviceId=pump-1&limit=1", None)
        .await;
    assert_eq!(one.json["lateReadings"], json!([listed[0]]), "at most `limit`");
    let alerts = app.admin("GET", "/api/alerts", None).await;
    assert_eq!(alerts.json["alerts"], json!([]), "a late 99 opens no alert");
}

#[tokio::test]
async fn insight_queries_are_validated() {
    let app = app().await;
    let r = app
        .admin("GET", "/api/forecasts?deviceId=no%20spaces&from=yesterday", None)
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_query");
    let fields: Vec<&str> = r.json["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, vec!["deviceId", "from"]);
    let r = app
        .admin("GET", "/api/late-readings?from=2000&to=1000", None)
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_query");
    assert_eq!(r.json["error"]["details"][0]["field"], "from");
    let r = app.admin("GET", "/api/late-readings?to=soon", None).await;
    assert_eq!(r.json["error"]["details"][0]["field"], "to");
    let r = app.admin("GET", "/api/forecasts?limit=-1", None).await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_query");
    let r = app.admin("GET", "/api/late-readings?limit=0", None).await;
    assert_eq!(
        (r.status, r.json.clone()),
        (StatusCode::OK, json!({"lateReadings": []})),
        "a limit out of range is clamped (1..=1000), like /api/alerts"
    );
    let r = app
        .call(
            Request::builder()
                .uri("/api/forecasts")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "unauthorized");
}
