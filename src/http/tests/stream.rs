//! `GET /api/stream`: live updates as Server-Sent Events.

use super::*;
use futures::StreamExt;
use serde_json::json;

/// Reads SSE events (name, JSON data) from `body` into `seen` until `done` holds for one,
/// failing after 15 s.
async fn until(
    body: &mut (impl futures::Stream<Item = Result<bytes::Bytes, axum::Error>> + Unpin),
    text: &mut String,
    seen: &mut Vec<(String, Value)>,
    done: impl Fn(&str, &Value) -> bool,
) -> (String, Value) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        while let Some(end) = text.find("\n\n") {
            let frame: String = text.drain(..end + 2).collect();
            let field = |name: &str| {
                frame
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .map(str::trim)
                    .map(str::to_owned)
            };
            if let (Some(event), Some(data)) = (field("event:"), field("data:")) {
                let data: Value = serde_json::from_str(&data).unwrap_or(Value::Null);
                seen.push((event.clone(), data.clone()));
                if done(&event, &data) {
                    return (event, data);
                }
            }
        }
        let chunk = tokio::time::timeout_at(deadline, body.next())
            .await
            .expect("no such event within 15 s")
            .expect("the stream ended")
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
}

#[tokio::test]
async fn the_stream_needs_the_token_and_a_valid_device() {
    let app = app().await;
    for uri in ["/api/stream", "/api/stream?token=not-the-token"] {
        let r = app
            .call(Request::builder().uri(uri).body(Body::empty()).unwrap())
            .await;
        assert_error(&r, StatusCode::UNAUTHORIZED, "unauthorized");
    }
    let r = app
        .call(
            Request::builder()
                .uri(format!("/api/stream?token={ADMIN}&deviceId=a%20b"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_query");
}

#[tokio::test]
async fn an_alert_and_its_resolution_arrive_as_events_for_the_device_asked_for() {
    let app = app().await;
    let token = app.device("pump-1").await;
    let other = app.device("pump-2").await;
    let req = Request::builder()
        .uri(format!("/api/stream?token={ADMIN}&deviceId=pump-1"))
        .body(Body::empty())
        .unwrap();
    let res = app.router.clone().oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let (mut body, mut text, mut seen) = (res.into_body().into_data_stream(), String::new(), Vec::new());

    let hot = |d: &str, t: f64| json!({"deviceId": d, "metrics": {"temperature": t}}).to_string();
    app.post(Some(&other), "application/json", hot("pump-2", 95.0))
        .await;
    app.post(Some(&token), "application/json", hot("pump-1", 91.0))
        .await;
    let (_, latest) = until(&mut body, &mut text, &mut seen, |e, d| {
        e == "latest" && d["metrics"]["temperature"] == 91.0
    })
    .await;
    assert_eq!(latest["deviceId"], "pump-1");
    let active = app
        .eventually("/api/alerts?state=active&deviceId=pump-1", |j| {
            j["alerts"][0].is_object()
        })
        .await;
    let id = active["alerts"][0]["id"].as_str().unwrap().to_owned();
    // Cool down: the alert resolves, and its resolution is an event too.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    app.post(Some(&token), "application/json", hot("pump-1", 60.0))
        .await;
    let (_, resolved) = until(&mut body, &mut text, &mut seen, |e, d| {
        e == "alert" && d["state"] == "resolved"
    })
    .await;
    assert_eq!(
        (resolved["id"].as_str(), resolved["rule"].as_str()),
        (Some(id.as_str()), Some("overheat"))
    );
    assert!(
        seen.iter().all(|(_, d)| d["deviceId"] == "pump-1"),
        "only the device asked for: {seen:?}"
    );
}
