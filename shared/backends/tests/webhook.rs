//! `WebhookNotifier` against a real local HTTP server.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use iotstream_backends::WebhookNotifier;
use iotstream_core::PortErrorKind;
use iotstream_core::model::webhook_signature as sign_body;
use iotstream_core::ports::{Notifier, WebhookRequest};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone)]
struct Captured {
    headers: HeaderMap,
    body: Bytes,
}

type Seen = Arc<Mutex<Vec<Captured>>>;

async fn hook(
    State(seen): State<Seen>,
    Path(status): Path<u16>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    seen.lock().unwrap().push(Captured { headers, body });
    if status == 999 {
        tokio::time::sleep(Duration::from_secs(5)).await;
        return StatusCode::OK;
    }
    StatusCode::from_u16(status).unwrap()
}

async fn server() -> (SocketAddr, Seen) {
    let seen: Seen = Arc::default();
    let app = Router::new()
        .route("/hook/{status}", post(hook))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, seen)
}

fn request(secret: &[u8]) -> WebhookRequest {
    let body = br#"{"event":"alert.opened","alert":{"id":"a1"}}"#.to_vec();
    WebhookRequest {
        delivery_id: "a1:opened".into(),
        event: "alert.opened".into(),
        signature: sign_body(secret, &body),
        body,
    }
}

#[tokio::test]
async fn posts_the_signed_body_with_headers() {
    let (addr, seen) = server().await;
    let notifier = WebhookNotifier::new(&format!("http://{addr}/hook/204")).unwrap();
    let req = request(b"s3cret");
    notifier.send(&req).await.unwrap();
    let got = seen.lock().unwrap().pop().unwrap();
    let h = |name: &str| {
        got.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(got.body.as_ref(), req.body.as_slice());
    assert_eq!(h("content-type"), "application/json");
    assert_eq!(h("x-iotstream-event"), "alert.opened");
    assert_eq!(h("x-iotstream-delivery"), "a1:opened");
    assert_eq!(
        h("user-agent"),
        format!("iotstream/{}", env!("CARGO_PKG_VERSION"))
    );
    // The receiver recomputes the signature from its copy of the secret.
    assert_eq!(h("x-iotstream-signature"), sign_body(b"s3cret", &got.body));
    assert!(h("x-iotstream-signature").starts_with("sha256=") && h("x-iotstream-signature").len() == 71);
}

#[tokio::test]
async fn server_errors_are_retryable_and_client_errors_are_not() {
    let (addr, seen) = server().await;
    for (status, kind) in [
        (500, PortErrorKind::Unavailable),
        (503, PortErrorKind::Unavailable),
        (429, PortErrorKind::Unavailable),
        (408, PortErrorKind::Unavailable),
        (400, PortErrorKind::Invalid),
        (410, PortErrorKind::Invalid),
    ] {
        let notifier = WebhookNotifier::new(&format!("http://{addr}/hook/{status}")).unwrap();
        let err = notifier.send(&request(b"k")).await.unwrap_err();
        assert_eq!(err.kind, kind, "status {status}: {err}");
        assert!(
            err.message.contains(&status.to_string()),
            "status in the message: {err}"
        );
        assert!(!err.message.contains("alert.opened"), "no body in errors: {err}");
    }
    assert_eq!(seen.lock().unwrap().len(), 6);
    let err = WebhookNotifier::new(&format!("http://{addr}/hook/500"))
        .unwrap()
        .send(&request(b"k"))
        .await
        .unwrap_err();
    assert!(err.is_retryable());
}

#[tokio::test]
async fn connection_refused_is_unavailable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let notifier = WebhookNotifier::new(&format!("http://{addr}/hook/204")).unwrap();
    let err = notifier.send(&request(b"k")).await.unwrap_err();
    assert_eq!(err.kind, PortErrorKind::Unavailable, "{err}");
    assert!(err.is_retryable());
}

#[tokio::test]
async fn slow_receivers_time_out() {
    let (addr, _seen) = server().await;
    let notifier =
        WebhookNotifier::with_timeout(&format!("http://{addr}/hook/999"), Duration::from_millis(300))
            .unwrap();
    let start = std::time::Instant::now();
    let err = notifier.send(&request(b"k")).await.unwrap_err();
    assert_eq!(err.kind, PortErrorKind::Timeout, "{err}");
    assert!(start.elapsed() < Duration::from_secs(3));
}
