//! The benchmark baseline: a minimal axum server that only parses a reading and answers 202 —
//! no auth, no validation beyond JSON shape, no storage. iotstream's durable ingest is measured
//! against it on the same machine in the same run (see BENCHMARKS.md).
//!
//!     cargo run --release --example baseline -- 127.0.0.1:7080

use axum::Router;
use axum::http::StatusCode;
use axum::routing::post;
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
struct Reading {
    device_id: String,
    ts: Option<serde_json::Value>,
    metrics: BTreeMap<String, f64>,
    id: Option<String>,
}

async fn ingest(body: axum::body::Bytes) -> (StatusCode, &'static str) {
    match serde_json::from_slice::<Reading>(&body) {
        Ok(_) => (StatusCode::ACCEPTED, r#"{"accepted":1,"duplicates":0}"#),
        Err(_) => (StatusCode::BAD_REQUEST, r#"{"error":{"code":"malformed_body"}}"#),
    }
}

#[tokio::main]
async fn main() {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:7080".into());
    let listener = tokio::net::TcpListener::bind(&addr).await.expect("bind");
    eprintln!("baseline listening on http://{addr}");
    axum::serve(listener, Router::new().route("/api/telemetry", post(ingest)))
        .await
        .expect("serve");
}
