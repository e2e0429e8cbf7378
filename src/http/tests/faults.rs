//! A backend that is down: clients get 503 with `Retry-After` and the contract's error body,
//! never an internal message, and a failed request stores nothing.

use super::*;
use iotstream_backends::Faults;
use serde_json::json;
use std::sync::Arc;

/// A pipeline whose backends are decorated by `wrap` (which gets the fault switch).
async fn app_with_fault(wrap: impl FnOnce(&mut Backends, &Arc<Faults>)) -> (TestApp, Arc<Faults>) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let faults = Faults::new();
    let app = start_in(dir, cfg, |b| wrap(b, &faults)).await;
    (app, faults)
}

/// The 503 a client sees: code, `Retry-After`, exactly the contract's keys, and no cause.
fn assert_unavailable(r: &Reply) {
    assert_error(r, StatusCode::SERVICE_UNAVAILABLE, "backend_unavailable");
    assert_eq!(r.headers["retry-after"], "1");
    let mut keys: Vec<&String> = r.json["error"].as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, vec!["code", "details", "message"]);
    assert_eq!(r.json["error"]["details"], json!([]));
    let message = r.json["error"]["message"].as_str().unwrap();
    assert!(
        !message.contains("injected") && !message.contains("down"),
        "the cause goes to the log, not to the client: {message}"
    );
}

#[tokio::test]
async fn a_reading_sent_while_the_store_is_down_gets_503_and_is_not_stored() {
    let (app, sink_down) = app_with_fault(|b, f| b.sink = f.wrap(b.sink.clone())).await;
    let token = app.device("pump-1").await;
    let reading =
        json!({"deviceId": "pump-1", "ts": crate::app::now().millis(), "metrics": {"temperature": 20.5}})
            .to_string();

    sink_down.set_down(true);
    let r = app.post(Some(&token), "application/json", reading.clone()).await;
    assert_unavailable(&r);
    assert!(
        r.json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("nothing was stored")
    );

    sink_down.set_down(false);
    let stored = app.admin("GET", "/api/devices/pump-1/readings", None).await;
    assert_eq!(stored.status, StatusCode::OK);
    assert_eq!(stored.json["readings"], json!([]), "a 503 stores nothing");
    let r = app.post(Some(&token), "application/json", reading).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.json);
    assert_eq!(
        r.json,
        json!({"accepted": 1, "duplicates": 0}),
        "the retry is new, not a duplicate"
    );
    let stored = app.admin("GET", "/api/devices/pump-1/readings", None).await;
    assert_eq!(stored.json["readings"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn the_query_api_answers_503_while_the_results_store_is_down_and_catches_up_after() {
    let (app, results_down) = app_with_fault(|b, f| b.results = f.wrap(b.results.clone())).await;
    let token = app.device("pump-1").await;

    results_down.set_down(true);
    // Ingest does not need the results store: the reading is accepted and waits on the bus.
    let hot = json!({"deviceId": "pump-1", "metrics": {"temperature": 95.0}}).to_string();
    let r = app.post(Some(&token), "application/json", hot).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.json);
    for (method, uri) in [
        ("GET", "/api/alerts"),
        ("GET", "/api/devices"),
        ("GET", "/api/devices/pump-1"),
        ("GET", "/api/devices/pump-1/series?metric=temperature"),
        ("POST", "/api/alerts/some-alert/ack"),
        ("GET", "/api/forecasts"),
        ("GET", "/api/late-readings?deviceId=pump-1"),
    ] {
        let r = app.admin(method, uri, None).await;
        assert_unavailable(&r);
    }

    results_down.set_down(false);
    let alerts = app
        .eventually("/api/alerts?state=active", |j| {
            j["alerts"].as_array().is_some_and(|a| a.len() == 1)
        })
        .await;
    assert_eq!(
        alerts["alerts"][0]["deviceId"], "pump-1",
        "process retried the batch once the store was back"
    );
}

/// A device registry that cannot be asked is the server's problem, not the device's: 503, so
/// SDKs retry instead of treating their credentials as bad.
#[tokio::test]
async fn a_registry_outage_is_503_not_401() {
    let (app, registry_down) = app_with_fault(|b, f| b.devices = f.wrap(b.devices.clone())).await;
    let token = app.device("pump-1").await; // never used yet: its key is not cached
    registry_down.set_down(true);
    let body = json!({"deviceId": "pump-1", "metrics": {"temperature": 20.5}}).to_string();
    let r = app.post(Some(&token), "application/json", body.clone()).await;
    assert_unavailable(&r);
    registry_down.set_down(false);
    let r = app.post(Some(&token), "application/json", body).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.json);
}

/// Overload is shed, not queued without bound: while the sink is stalled and the in-flight
/// budget is used up, a new request gets 503 `overloaded` with `Retry-After`; the request already
/// admitted completes with 202 once the sink moves again.
#[tokio::test]
async fn past_the_in_flight_budget_ingest_answers_503_overloaded() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.max_in_flight_readings = 3;
    let faults = Faults::new();
    let app = start_in(dir, cfg, |b| b.sink = faults.wrap(b.sink.clone())).await;
    let token = app.device("pump-1").await;
    let batch = |base: i64| {
        json!([
            {"deviceId": "pump-1", "ts": base, "metrics": {"t": 1}},
            {"deviceId": "pump-1", "ts": base + 1, "metrics": {"t": 2}},
        ])
        .to_string()
    };
    faults.set_stalled(true);
    let now = crate::app::now().millis();
    let first = {
        let req = Request::builder()
            .method("POST")
            .uri("/api/telemetry")
            .header("authorization", &token)
            .header("content-type", "application/json")
            .body(Body::from(batch(now)))
            .unwrap();
        let router = app.router.clone();
        tokio::spawn(async move { router.oneshot(req).await.unwrap().status() })
    };
    // The first request's two readings hold two of the three slots while the sink is stalled.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = std::time::Instant::now();
    let r = app.post(Some(&token), "application/json", batch(now + 10)).await;
    assert_error(&r, StatusCode::SERVICE_UNAVAILABLE, "overloaded");
    assert_eq!(r.headers["retry-after"], "1");
    assert!(
        started.elapsed() >= iotstream_ingest::ADMIT_WAIT,
        "it waited for room first"
    );
    faults.set_stalled(false);
    assert_eq!(first.await.unwrap(), StatusCode::ACCEPTED);
    let stored = app.admin("GET", "/api/devices/pump-1/readings", None).await;
    assert_eq!(
        stored.json["readings"].as_array().unwrap().len(),
        2,
        "only the admitted request was stored"
    );
}

/// `/readyz` follows the backends (a probe takes the instance out of rotation); `/healthz` does not.
#[tokio::test]
async fn readiness_follows_the_backends() {
    let (app, registry_down) = app_with_fault(|b, f| b.devices = f.wrap(b.devices.clone())).await;
    let get = |uri: &'static str| Request::builder().uri(uri).body(Body::empty()).unwrap();
    assert_eq!(app.call(get("/readyz")).await.status, StatusCode::OK);
    registry_down.set_down(true);
    assert_unavailable(&app.call(get("/readyz")).await);
    assert_eq!(app.call(get("/healthz")).await.status, StatusCode::OK);
    registry_down.set_down(false);
    assert_eq!(app.call(get("/readyz")).await.status, StatusCode::OK);
}
