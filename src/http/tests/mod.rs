//! HTTP tests: the real router and pipeline on the embedded engines in a temporary directory,
//! driven with `oneshot` requests.

mod admin;
mod checkpoints;
mod dashboard;
mod dead_letters;
mod faults;
mod functions;
mod insights;
mod pipeline;
mod restart;
mod stream;
mod telemetry;

use crate::app::{Config, Pipeline};
use crate::secrets::Secret;
use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use iotstream_backends::{BackendUrls, Backends};
use iotstream_core::DeviceId;
use iotstream_core::rules::Rules;
use iotstream_core::sas::{decode_key, make_token};
use serde_json::Value;
use std::time::Duration;
use tower::ServiceExt;

pub const ADMIN: &str = "test-admin-token-0123456789";

pub struct TestApp {
    pub pipeline: Pipeline,
    pub router: Router,
    pub dir: tempfile::TempDir,
}

pub fn config(dir: &std::path::Path) -> Config {
    Config {
        functions: crate::app::Functions::ALL,
        data_dir: dir.to_path_buf(),
        urls: BackendUrls::default(),
        rules: Rules::from_toml(
            "[[rules]]\nname='overheat'\nmetric='temperature'\nabove=80.0\nclear=75.0\nseverity='critical'\n",
        )
        .unwrap(),
        webhook: None,
        device_rate_limit: 0,
        retry: iotstream_notify::RetryPolicy::default(),
        checkpoint_every: Duration::from_millis(100),
        admin_token: Secret::from(ADMIN.as_bytes().to_vec()),
        master_key: Secret::from(vec![7u8; 32]),
        max_in_flight_readings: 200_000,
        retention: Duration::from_secs(7 * 86_400),
    }
}

pub async fn app_with(f: impl FnOnce(&mut Config)) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    f(&mut cfg);
    let pipeline = Pipeline::start(cfg).await.unwrap();
    let router = super::router(pipeline.state.clone());
    TestApp {
        pipeline,
        router,
        dir,
    }
}

/// Starts a pipeline on the embedded backends in `dir` after `wrap` has decorated them (e.g.
/// with `iotstream_backends::Faults`). `cfg.data_dir` must be `dir`.
pub async fn start_in(dir: tempfile::TempDir, cfg: Config, wrap: impl FnOnce(&mut Backends)) -> TestApp {
    assert_eq!(cfg.data_dir, dir.path());
    let mut backends = iotstream_backends::connect(&cfg.data_dir, &cfg.urls)
        .await
        .unwrap();
    wrap(&mut backends);
    let pipeline = Pipeline::start_with(backends, cfg).await.unwrap();
    let router = super::router(pipeline.state.clone());
    TestApp {
        pipeline,
        router,
        dir,
    }
}

pub async fn app() -> TestApp {
    app_with(|_| {}).await
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub json: Value,
}

impl TestApp {
    /// Stops the pipeline gracefully ([`Pipeline::shutdown`]) and hands back its data directory.
    pub async fn shutdown(self) -> tempfile::TempDir {
        let TestApp {
            pipeline,
            router,
            dir,
        } = self;
        drop(router);
        pipeline.shutdown().await;
        dir
    }

    pub async fn call(&self, req: Request<Body>) -> Reply {
        let res = self.router.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            json,
        }
    }

    pub async fn admin(&self, method: &str, uri: &str, body: Option<Value>) -> Reply {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header("authorization", format!("Bearer {ADMIN}"))
            .header("content-type", "application/json");
        let body = body
            .map(|b| Body::from(b.to_string()))
            .unwrap_or_else(Body::empty);
        self.call(req.body(body).unwrap()).await
    }

    /// Provisions a device over the admin API and returns a valid SAS token for it.
    pub async fn device(&self, id: &str) -> String {
        let r = self
            .admin("POST", "/api/devices", Some(serde_json::json!({"deviceId": id})))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
        let key = decode_key(r.json["primaryKey"].as_str().unwrap()).unwrap();
        make_token(
            "test-hub",
            &DeviceId::parse(id).unwrap(),
            &key,
            i64::from(u32::MAX),
        )
    }

    pub async fn post(&self, token: Option<&str>, content_type: &str, body: impl Into<Body>) -> Reply {
        let mut req = Request::builder()
            .method("POST")
            .uri("/api/telemetry")
            .header("content-type", content_type);
        if let Some(t) = token {
            req = req.header("authorization", t);
        }
        self.call(req.body(body.into()).unwrap()).await
    }

    /// Polls `uri` until `done` holds (the pipeline is asynchronous), failing after 10 s.
    pub async fn eventually(&self, uri: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let r = self.admin("GET", uri, None).await;
            if r.status == StatusCode::OK && done(&r.json) {
                return r.json;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting on {uri}: {}",
                r.json
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

pub fn assert_error(r: &Reply, status: StatusCode, code: &str) {
    assert_eq!(r.status, status, "{}", r.json);
    assert_eq!(r.json["error"]["code"], code, "{}", r.json);
    assert!(r.json["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    assert!(r.json["error"]["details"].is_array());
}
