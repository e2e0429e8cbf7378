//! `GET /`: the dashboard's page and assets, checked without a browser: served with a strict
//! Content-Security-Policy that the page itself obeys, every element the script looks up exists,
//! and every API call it makes answers with the fields it reads.

use super::*;
use serde_json::json;

const PAGE: &str = include_str!("../dashboard/index.html");
const SCRIPT: &str = include_str!("../dashboard/dashboard.js");

async fn get(app: &TestApp, uri: &str) -> (StatusCode, HeaderMap, String) {
    let req = Request::builder().uri(uri).body(Body::empty()).unwrap();
    let res = app.router.clone().oneshot(req).await.unwrap();
    let (status, headers) = (res.status(), res.headers().clone());
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8(bytes.to_vec()).unwrap())
}

/// The string literals that follow `prefix` in `text` (up to the next `"`).
fn literals<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
    text.match_indices(prefix)
        .map(|(at, _)| {
            let rest = &text[at + prefix.len()..];
            &rest[..rest.find('"').unwrap()]
        })
        .collect()
}

#[tokio::test]
async fn the_page_and_its_assets_are_served_under_a_csp_they_obey() {
    let app = app().await;
    for (uri, kind) in [
        ("/", "text/html"),
        ("/dashboard.js", "text/javascript"),
        ("/dashboard.css", "text/css"),
    ] {
        let (status, headers, body) = get(&app, uri).await;
        assert_eq!(status, StatusCode::OK, "{uri}");
        assert!(
            headers["content-type"].to_str().unwrap().starts_with(kind),
            "{uri}"
        );
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("script-src 'self'") && !csp.contains("unsafe"),
            "{csp}"
        );
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert!(!body.is_empty());
    }
    // No inline script or style, which the policy would block.
    assert_eq!(
        PAGE.matches("<script").count(),
        PAGE.matches("<script src=").count()
    );
    assert!(!PAGE.contains("<style") && !PAGE.contains("style=") && !PAGE.contains(" on"));
    assert!(
        !SCRIPT.contains("innerHTML"),
        "API values go on the page as text only"
    );
    // Every element the script looks up is on the page.
    let ids: Vec<&str> = literals(SCRIPT, "getElementById(\"")
        .into_iter()
        .chain(literals(SCRIPT, "fill(\"#").into_iter())
        .collect();
    assert!(ids.len() >= 8, "{ids:?}");
    for id in ids {
        assert!(PAGE.contains(&format!("id=\"{id}\"")), "no element #{id}");
    }
}

#[tokio::test]
async fn every_api_call_of_the_dashboard_answers_with_the_fields_it_reads() {
    let app = app().await;
    let token = app.device("pump-1").await;
    let t0 = crate::app::now().millis() - 300_000;
    // A steady climb toward the overheat threshold (a forecast), then over it (an alert).
    let body: Vec<Value> = (0..25)
        .map(|i| json!({"deviceId": "pump-1", "ts": t0 + i * 10_000, "metrics": {"temperature": 60.0 + i as f64 * 0.5}}))
        .chain([json!({"deviceId": "pump-1", "ts": t0 + 260_000, "metrics": {"temperature": 91.0}})])
        .collect();
    let r = app
        .post(Some(&token), "application/json", Value::from(body).to_string())
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    app.eventually("/api/forecasts?limit=10", |j| j["forecasts"][0].is_object())
        .await;
    app.eventually("/api/alerts?state=active", |j| j["alerts"][0].is_object())
        .await;
    app.eventually("/api/devices", |j| j["devices"][0]["lastSeen"].is_string())
        .await;

    let calls = literals(SCRIPT, "api(\"");
    assert!(calls.len() >= 4, "{calls:?}");
    // The fields each list's renderer reads (`a.x`, `d.x`, `f.x` in the script).
    let reads = |list: &str| -> Vec<String> {
        let (start, var) = match list {
            "alerts" => ("function renderAlert(row, a) {", "a."),
            "devices" => ("function renderDevice(row, d) {", "d."),
            "forecasts" => ("forecasts.forecasts.map((f) => {", "f."),
            other => panic!("the dashboard reads an unexpected list {other}"),
        };
        let body = &SCRIPT[SCRIPT.find(start).unwrap()..];
        let body = &body[..body.find("\n}").unwrap()];
        let mut fields: Vec<String> = body
            .match_indices(var)
            .filter(|(at, _)| !body[..*at].ends_with(|c: char| c.is_alphanumeric()))
            .map(|(at, _)| {
                body[at + 2..]
                    .chars()
                    .take_while(|c| c.is_alphanumeric())
                    .collect()
            })
            .collect();
        fields.sort();
        fields.dedup();
        assert!(fields.len() >= 2, "{list}: {fields:?}");
        fields
    };
    for path in calls.iter().filter(|p| p.contains('?') || !p.ends_with('/')) {
        let r = app.admin("GET", path, None).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.json);
        let (list, items) = r.json.as_object().unwrap().iter().next().unwrap();
        let first = &items.as_array().unwrap()[0];
        for field in reads(list) {
            assert!(
                !first[field.as_str()].is_null(),
                "{path}: {list}[0] has no {field}: {first}"
            );
        }
    }
    // Acknowledge, as the button does.
    assert!(SCRIPT.contains("api(\"/api/alerts/\" + encodeURIComponent(a.id) + \"/ack\", \"POST\")"));
    let alerts = app.admin("GET", "/api/alerts?state=active&limit=200", None).await;
    let id = alerts.json["alerts"][0]["id"].as_str().unwrap();
    let ack = app.admin("POST", &format!("/api/alerts/{id}/ack"), None).await;
    assert_eq!(ack.json["alert"]["state"], "acknowledged");
}
