//! Webhook deliveries that run out of retries become dead letters (`GET /api/dead-letters`).

use super::*;
use crate::app::Webhook;
use axum::extract::State;
use iotstream_notify::RetryPolicy;
use serde_json::json;
use std::sync::{Arc, Mutex};

/// `(X-Iotstream-Event, X-Iotstream-Delivery)` of each request received.
type Received = Arc<Mutex<Vec<(String, String)>>>;

/// A webhook endpoint on 127.0.0.1 that records every request and answers 5xx to the first
/// `failures` of them (`usize::MAX`: always), 204 after.
async fn endpoint(failures: usize) -> (Received, String) {
    async fn answer(State((seen, failures)): State<(Received, usize)>, headers: HeaderMap) -> StatusCode {
        let h = |n: &str| {
            headers
                .get(n)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned()
        };
        let mut seen = seen.lock().unwrap();
        seen.push((h("x-iotstream-event"), h("x-iotstream-delivery")));
        if seen.len() <= failures {
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::NO_CONTENT
        }
    }
    let seen = Received::default();
    let app = Router::new()
        .route("/hook", axum::routing::post(answer))
        .with_state((seen.clone(), failures));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (seen, url)
}

#[tokio::test]
async fn a_webhook_that_always_fails_gets_max_attempts_then_a_dead_letter() {
    let (received, url) = endpoint(usize::MAX).await;
    let app = app_with(|c| {
        c.webhook = Some(Webhook {
            url,
            secret: Secret::from(b"dead-letter-secret".to_vec()),
        });
        c.retry = RetryPolicy {
            max_attempts: 2,
            base_ms: 10,
            max_delay_ms: 20,
        };
    })
    .await;
    let token = app.device("pump-1").await;
    let hot = json!({"deviceId": "pump-1", "metrics": {"temperature": 91.0}}).to_string();
    let r = app.post(Some(&token), "application/json", hot).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.json);

    let alerts = app
        .eventually("/api/alerts?state=active", |j| {
            j["alerts"].as_array().is_some_and(|a| !a.is_empty())
        })
        .await;
    let delivery = format!("{}:opened", alerts["alerts"][0]["id"].as_str().unwrap());

    let dead = app
        .eventually("/api/dead-letters", |j| {
            j["deadLetters"].as_array().is_some_and(|d| !d.is_empty())
        })
        .await;
    let letters = dead["deadLetters"].as_array().unwrap();
    assert_eq!(letters.len(), 1, "{dead}");
    let letter = &letters[0];
    assert_eq!(letter["id"], delivery.as_str());
    assert_eq!(letter["event"], "alert.opened");
    assert_eq!(letter["attempts"], 2);
    assert!(letter["lastError"].as_str().unwrap().contains("500"), "{letter}");
    assert!(letter["deadAt"].is_string(), "{letter}");

    let attempts = received.lock().unwrap().clone();
    let expected = ("alert.opened".to_owned(), delivery);
    assert_eq!(
        attempts,
        vec![expected.clone(), expected],
        "exactly max_attempts requests, all with the same delivery id"
    );
}

/// Events of one alert arrive in order even when the first attempt of the first one fails:
/// the resolution waits for the opening's retry.
#[tokio::test]
async fn a_retried_opening_is_still_delivered_before_its_resolution() {
    let (seen, url) = endpoint(1).await;
    let app = app_with(|c| {
        c.webhook = Some(Webhook {
            url,
            secret: Secret::from(b"s".to_vec()),
        });
        c.retry = RetryPolicy {
            max_attempts: 5,
            base_ms: 100,
            max_delay_ms: 200,
        };
    })
    .await;
    let token = app.device("pump-1").await;
    let t = crate::app::now().millis() - 10_000;
    let body = json!([
        {"deviceId": "pump-1", "ts": t, "metrics": {"temperature": 91.0}},
        {"deviceId": "pump-1", "ts": t + 1000, "metrics": {"temperature": 60.0}},
    ]);
    assert_eq!(
        app.post(Some(&token), "application/json", body.to_string())
            .await
            .status,
        StatusCode::ACCEPTED
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while seen.lock().unwrap().len() < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "deliveries: {:?}",
            seen.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let events: Vec<String> = seen.lock().unwrap().iter().map(|(e, _)| e.clone()).collect();
    assert_eq!(
        events,
        vec!["alert.opened", "alert.opened", "alert.resolved"],
        "failed, retried, then the resolution"
    );
}
