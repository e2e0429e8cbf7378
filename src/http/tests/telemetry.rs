//! `POST /api/telemetry`: every status of CONTRACT §2.2.

use super::*;
use serde_json::json;

fn reading(device: &str, t: i64, temp: f64) -> Value {
    json!({"deviceId": device, "ts": t, "metrics": {"temperature": temp}})
}

fn now_ms() -> i64 {
    crate::app::now().millis()
}

#[tokio::test]
async fn accepts_json_arrays_and_ndjson_and_counts_resends_as_duplicates() {
    let app = app().await;
    let token = app.device("pump-1").await;
    let t = now_ms();
    let one = reading("pump-1", t, 20.0);
    let r = app.post(Some(&token), "application/json", one.to_string()).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.json);
    assert_eq!(r.json, json!({"accepted": 1, "duplicates": 0}));

    let arr = json!([one, reading("pump-1", t + 1, 21.0)]);
    let r = app.post(Some(&token), "application/json", arr.to_string()).await;
    assert_eq!(r.json, json!({"accepted": 1, "duplicates": 1}));

    let nd = format!(
        "{}\n{}\n",
        reading("pump-1", t + 2, 22.0),
        reading("pump-1", t + 2, 22.0)
    );
    let r = app.post(Some(&token), "application/x-ndjson", nd).await;
    assert_eq!(
        r.json,
        json!({"accepted": 1, "duplicates": 1}),
        "in-request duplicates count too"
    );

    let stored = app.admin("GET", "/api/devices/pump-1/readings", None).await;
    assert_eq!(stored.json["readings"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn message_ids_make_resends_duplicates_even_with_other_values() {
    let app = app().await;
    let token = app.device("d1").await;
    let a = json!({"deviceId": "d1", "id": "msg-1", "metrics": {"x": 1}});
    let b = json!({"deviceId": "d1", "id": "msg-1", "metrics": {"x": 2}});
    assert_eq!(
        app.post(Some(&token), "application/json", a.to_string())
            .await
            .json["accepted"],
        1
    );
    assert_eq!(
        app.post(Some(&token), "application/json", b.to_string())
            .await
            .json["duplicates"],
        1
    );
}

#[tokio::test]
async fn bad_tokens_get_401_and_say_why() {
    let app = app().await;
    let token = app.device("pump-1").await;
    let body = reading("pump-1", now_ms(), 1.0).to_string();
    assert_error(
        &app.post(None, "application/json", body.clone()).await,
        StatusCode::UNAUTHORIZED,
        "missing_token",
    );
    let r = app
        .post(
            Some("SharedAccessSignature sr=x"),
            "application/json",
            body.clone(),
        )
        .await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "malformed_token");
    assert_eq!(r.headers["www-authenticate"], "SharedAccessSignature");
    let tampered = token.replace("&se=", "&se=1");
    let r = app.post(Some(&tampered), "application/json", body.clone()).await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "invalid_token");

    let key = decode_key(
        app.admin("POST", "/api/devices", Some(json!({"deviceId": "old"})))
            .await
            .json["primaryKey"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let expired = make_token("h", &DeviceId::parse("old").unwrap(), &key, 1_000);
    let body_old = reading("old", now_ms(), 1.0).to_string();
    assert_error(
        &app.post(Some(&expired), "application/json", body_old).await,
        StatusCode::UNAUTHORIZED,
        "token_expired",
    );

    let ghost = make_token(
        "h",
        &DeviceId::parse("ghost").unwrap(),
        &[1u8; 32],
        i64::from(u32::MAX),
    );
    let body_ghost = reading("ghost", now_ms(), 1.0).to_string();
    assert_error(
        &app.post(Some(&ghost), "application/json", body_ghost).await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    );
}

#[tokio::test]
async fn a_reading_for_another_device_is_403_and_nothing_is_stored() {
    let app = app().await;
    let token = app.device("pump-1").await;
    let body = json!([reading("pump-1", now_ms(), 1.0), reading("pump-2", now_ms(), 1.0)]).to_string();
    let r = app.post(Some(&token), "application/json", body).await;
    assert_error(&r, StatusCode::FORBIDDEN, "device_mismatch");
    assert!(r.json["error"]["message"].as_str().unwrap().contains("pump-2"));
    let stored = app.admin("GET", "/api/devices/pump-1/readings", None).await;
    assert_eq!(stored.json["readings"], json!([]));
}

#[tokio::test]
async fn invalid_readings_are_400_with_index_and_field_and_nothing_is_stored() {
    let app = app().await;
    let token = app.device("pump-1").await;
    let body = json!([
        reading("pump-1", now_ms(), 1.0),
        {"deviceId": "pump-1", "metrics": {"temperature": "hot"}},
        {"deviceId": "pump-1", "ts": now_ms() + 3_600_000, "metrics": {"t": 1}},
    ])
    .to_string();
    let r = app.post(Some(&token), "application/json", body).await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_reading");
    let details = r.json["error"]["details"].as_array().unwrap();
    assert_eq!(details.len(), 2);
    assert_eq!(
        (details[0]["index"].as_u64(), details[0]["field"].as_str()),
        (Some(1), Some("metrics.temperature"))
    );
    assert_eq!(
        (details[1]["index"].as_u64(), details[1]["field"].as_str()),
        (Some(2), Some("ts"))
    );
    let stored = app.admin("GET", "/api/devices/pump-1/readings", None).await;
    assert_eq!(stored.json["readings"], json!([]), "all-or-nothing");

    let r = app.post(Some(&token), "application/json", "{not json").await;
    assert_error(&r, StatusCode::BAD_REQUEST, "malformed_body");
    let r = app.post(Some(&token), "application/json", "[]").await;
    assert_error(&r, StatusCode::BAD_REQUEST, "empty_body");
}

#[tokio::test]
async fn oversized_bodies_and_batches_are_413_and_other_types_415() {
    let app = app().await;
    let token = app.device("pump-1").await;
    let big = format!(
        "[{}]",
        vec![reading("pump-1", now_ms(), 1.0).to_string(); 20_000].join(",")
    );
    assert!(big.len() > 1 << 20);
    assert_error(
        &app.post(Some(&token), "application/json", big).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
    );
    let many: Vec<String> = (0..10_001)
        .map(|i| json!({"deviceId": "pump-1", "ts": i, "metrics": {"t": 1}}).to_string())
        .collect();
    let body = many.join("\n");
    assert!(body.len() < 1 << 20);
    let r = app.post(Some(&token), "application/x-ndjson", body).await;
    assert_error(&r, StatusCode::PAYLOAD_TOO_LARGE, "too_many_readings");
    let r = app.post(Some(&token), "text/plain", "temperature=1").await;
    assert_error(&r, StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
}

#[tokio::test]
async fn a_device_over_its_rate_limit_gets_429_with_retry_after() {
    let app = app_with(|c| c.device_rate_limit = 1).await;
    let token = app.device("pump-1").await;
    let mut statuses = Vec::new();
    for i in 0..3 {
        let r = app
            .post(
                Some(&token),
                "application/json",
                reading("pump-1", now_ms() + i, 1.0).to_string(),
            )
            .await;
        statuses.push(r.status.as_u16());
        if r.status == StatusCode::TOO_MANY_REQUESTS {
            assert_error(&r, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
            assert_eq!(r.headers["retry-after"], "1");
        }
    }
    assert_eq!(statuses, vec![202, 202, 429], "burst of 2, then limited");
}

/// `GET /api/devices/{id}/readings` pages: following `next` gives every stored reading exactly
/// once, also when readings share a millisecond across a page's end, or fill a whole page.
#[tokio::test]
async fn readings_pages_follow_next_and_hold_each_reading_once() {
    let app = app().await;
    let token = app.device("pump-1").await;
    let t = now_ms() - 60_000;
    // ms offsets: three at +2 (a page of 2 ends inside them) and four at +5 (a whole page).
    let offsets = [0, 1, 2, 2, 2, 3, 5, 5, 5, 5, 6];
    let body: Vec<Value> = offsets
        .iter()
        .enumerate()
        .map(|(i, dt)| reading("pump-1", t + dt, i as f64))
        .collect();
    let r = app
        .post(Some(&token), "application/json", Value::from(body).to_string())
        .await;
    assert_eq!(r.json["accepted"], 11);

    let (mut from, mut seen, mut pages) = (t.to_string(), Vec::new(), Vec::new());
    loop {
        let uri = format!("/api/devices/pump-1/readings?from={from}&limit=2");
        let page = app.admin("GET", &uri, None).await.json;
        let values: Vec<f64> = page["readings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["metrics"]["temperature"].as_f64().unwrap())
            .collect();
        pages.push(values.len());
        seen.extend(values);
        match page["next"].as_str() {
            Some(next) => from = next.to_owned(),
            None => break,
        }
        assert!(pages.len() < 20, "pages do not end: {pages:?}");
    }
    seen.sort_by(f64::total_cmp);
    assert_eq!(
        seen,
        (0..11).map(f64::from).collect::<Vec<_>>(),
        "pages {pages:?}"
    );
    assert!(
        pages.contains(&4),
        "the millisecond of four is one page: {pages:?}"
    );
    // A page that is not full has no `next`.
    let all = app
        .admin("GET", "/api/devices/pump-1/readings?limit=1000", None)
        .await;
    assert_eq!(all.json["readings"].as_array().unwrap().len(), 11);
    assert!(all.json.get("next").is_none());
}
