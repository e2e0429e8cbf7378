//! The admin and query API: auth, provisioning, validation errors.

use super::*;
use serde_json::json;

#[tokio::test]
async fn the_admin_api_needs_the_bearer_token() {
    let app = app().await;
    for (auth, uri) in [
        (None, "/api/devices"),
        (Some("Bearer wrong-token"), "/api/alerts"),
        (Some(ADMIN), "/api/alerts"),
    ] {
        let mut req = Request::builder().uri(uri);
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let r = app.call(req.body(Body::empty()).unwrap()).await;
        assert_error(&r, StatusCode::UNAUTHORIZED, "unauthorized");
        assert_eq!(r.headers["www-authenticate"], "Bearer");
    }
    let health = app
        .call(Request::builder().uri("/healthz").body(Body::empty()).unwrap())
        .await;
    assert_eq!(health.status, StatusCode::OK, "health needs no token");
}

#[tokio::test]
async fn devices_are_added_listed_and_removed_and_a_removed_key_stops_working() {
    let app = app().await;
    let r = app
        .admin("POST", "/api/devices", Some(json!({"deviceId": "pump-1"})))
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let keys: Vec<&String> = r.json.as_object().unwrap().keys().collect();
    assert_eq!(keys, vec!["deviceId", "primaryKey"]);
    assert_eq!(
        decode_key(r.json["primaryKey"].as_str().unwrap()).unwrap().len(),
        32
    );

    let again = app
        .admin("POST", "/api/devices", Some(json!({"deviceId": "pump-1"})))
        .await;
    assert_error(&again, StatusCode::CONFLICT, "device_exists");
    let bad = app
        .admin("POST", "/api/devices", Some(json!({"deviceId": "no spaces"})))
        .await;
    assert_error(&bad, StatusCode::BAD_REQUEST, "invalid_device_id");
    assert_eq!(bad.json["error"]["details"][0]["field"], "deviceId");
    let malformed = app.admin("POST", "/api/devices", Some(json!({"id": "x"}))).await;
    assert_error(&malformed, StatusCode::BAD_REQUEST, "malformed_body");

    let list = app.admin("GET", "/api/devices", None).await;
    assert_eq!(list.json["devices"][0]["deviceId"], "pump-1");
    assert_eq!(list.json["devices"][0]["activeAlerts"], 0);

    assert_eq!(
        app.admin("DELETE", "/api/devices/pump-1", None).await.status,
        StatusCode::NO_CONTENT
    );
    assert_error(
        &app.admin("DELETE", "/api/devices/pump-1", None).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_error(
        &app.admin("GET", "/api/devices/pump-1", None).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );

    // Re-added: a new key; a token signed with the old one is refused.
    let old = decode_key(r.json["primaryKey"].as_str().unwrap()).unwrap();
    let new = app
        .admin("POST", "/api/devices", Some(json!({"deviceId": "pump-1"})))
        .await;
    assert_ne!(new.json["primaryKey"], r.json["primaryKey"]);
    let stale = make_token(
        "h",
        &DeviceId::parse("pump-1").unwrap(),
        &old,
        i64::from(u32::MAX),
    );
    let body = json!({"deviceId": "pump-1", "metrics": {"t": 1}}).to_string();
    assert_error(
        &app.post(Some(&stale), "application/json", body).await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    );
}

#[tokio::test]
async fn query_parameters_are_validated() {
    let app = app().await;
    app.device("pump-1").await;
    let r = app.admin("GET", "/api/devices/pump-1/series", None).await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_query");
    assert_eq!(r.json["error"]["details"][0]["field"], "metric");
    let r = app
        .admin(
            "GET",
            "/api/devices/pump-1/series?metric=t&from=yesterday&step=1ms",
            None,
        )
        .await;
    let fields: Vec<&str> = r.json["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, vec!["from", "step"]);
    let r = app
        .admin(
            "GET",
            "/api/devices/pump-1/series?metric=t&from=0&to=100000000000&step=1s",
            None,
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_query");
    let r = app
        .admin("GET", "/api/devices/nobody/series?metric=t", None)
        .await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");
    let r = app.admin("GET", "/api/alerts?state=open", None).await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_query");
    let r = app.admin("POST", "/api/alerts/nope/ack", None).await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");
    let r = app.admin("GET", "/api/nothing-here", None).await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn metrics_are_prometheus_text() {
    let app = app().await;
    let token = app.device("pump-1").await;
    app.post(
        Some(&token),
        "application/json",
        json!({"deviceId": "pump-1", "metrics": {"t": 1}}).to_string(),
    )
    .await;
    let res = app
        .router
        .clone()
        .oneshot(Request::builder().uri("/metrics").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let text = String::from_utf8(res.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    assert!(text.contains("iotstream_ingest_readings_total"), "{text}");
    assert!(
        text.contains("iotstream_consumer_lag{group=\"iotstream-analyze\""),
        "{text}"
    );
}

#[tokio::test]
async fn bad_query_strings_and_wrong_methods_get_the_contract_error_body() {
    let app = app().await;
    let r = app.admin("GET", "/api/alerts?limit=-1", None).await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_query");
    let r = app.admin("GET", "/api/devices/x/readings?limit=lots", None).await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_query");
    let r = app
        .call(
            Request::builder()
                .uri("/api/telemetry")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_error(&r, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
}

/// A chunked body (no Content-Length) over the limit is still a 413 with the contract body.
#[tokio::test]
async fn a_chunked_body_over_the_limit_is_413() {
    let app = app().await;
    let token = app.device("pump-1").await;
    let chunk = bytes::Bytes::from(vec![b' '; 64 * 1024]);
    let stream = futures_stream(chunk, 20);
    let req = Request::builder()
        .method("POST")
        .uri("/api/telemetry")
        .header("authorization", token)
        .header("content-type", "application/json")
        .body(Body::from_stream(stream))
        .unwrap();
    let r = app.call(req).await;
    assert_error(&r, StatusCode::PAYLOAD_TOO_LARGE, "body_too_large");
}

fn futures_stream(
    chunk: bytes::Bytes,
    n: usize,
) -> impl futures::Stream<Item = Result<bytes::Bytes, std::io::Error>> {
    futures::stream::iter((0..n).map(move |_| Ok(chunk.clone())))
}
