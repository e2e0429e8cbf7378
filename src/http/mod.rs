//! The HTTP API (CONTRACT §2): routes, admin authentication, and the telemetry endpoint.

mod dashboard;
mod devices;
pub mod error;
mod insights;
mod query;
pub mod stream;

use crate::app::AppState;
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use error::ApiError;
use iotstream_core::Ts;
use std::sync::Arc;

/// Every route (`up`).
#[cfg(test)]
pub fn router(state: Arc<AppState>) -> Router {
    router_for(state, crate::app::Functions::ALL)
}

/// The routes of the functions a process runs: `/api/telemetry` for ingest, the query and admin
/// API for web, and the operations endpoints (`/healthz`, `/readyz`, `/metrics`) always, so
/// every deployment has its probes and scrape target.
pub fn router_for(state: Arc<AppState>, functions: crate::app::Functions) -> Router {
    let admin = Router::new()
        .route("/api/devices", get(query::list_devices).post(devices::add))
        .route("/api/devices/{id}", get(query::device).delete(devices::remove))
        .route("/api/devices/{id}/series", get(query::series))
        .route("/api/devices/{id}/readings", get(query::readings))
        .route("/api/alerts", get(query::alerts))
        .route("/api/alerts/{id}/ack", post(query::ack))
        .route("/api/forecasts", get(insights::forecasts))
        .route("/api/late-readings", get(insights::late_readings))
        .route("/api/dead-letters", get(query::dead_letters))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_admin));
    let mut router = Router::new()
        .route(
            "/healthz",
            get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }),
        )
        .route("/metrics", get(metrics))
        .route("/readyz", get(ready));
    if functions.ingest {
        router = router.route("/api/telemetry", post(telemetry));
    }
    if functions.web {
        router = router
            .merge(admin)
            .route("/api/stream", get(stream::stream))
            .route("/", get(dashboard::page))
            .route("/dashboard.js", get(dashboard::script))
            .route("/dashboard.css", get(dashboard::style));
    }
    router
        .fallback(|| async { ApiError::not_found("no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not take that method",
            )
        })
        .with_state(state)
}

/// `Authorization: Bearer <admin token>`, compared in constant time.
async fn require_admin(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if is_admin(&state, bearer(req.headers())) {
        next.run(req).await
    } else {
        ApiError::unauthorized().into_response()
    }
}

/// The token of an `Authorization: Bearer <token>` header.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

/// Whether `presented` is the admin token (compared in constant time).
fn is_admin(state: &AppState, presented: Option<&str>) -> bool {
    presented.is_some_and(|t| iotstream_core::sas::secrets_equal(t.as_bytes(), state.admin_token.expose()))
}

/// `POST /api/telemetry`: the ingest function behind HTTP.
async fn telemetry(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let limit = state.ingest.max_body_bytes;
    let header_str = |name| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let authorization = header_str(header::AUTHORIZATION);
    let content_type = header_str(header::CONTENT_TYPE);
    if let Some(len) = header_str(header::CONTENT_LENGTH).and_then(|l| l.parse::<usize>().ok())
        && len > limit
    {
        return Err(iotstream_ingest::IngestError::BodyTooLarge { size: len, limit }.into());
    }
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|e| {
        if is_length_limit(&e) {
            ApiError::from(iotstream_ingest::IngestError::BodyTooLarge {
                size: limit + 1,
                limit,
            })
        } else {
            ApiError::bad_request("malformed_body", "the request body could not be read")
        }
    })?;
    let input = iotstream_ingest::Input {
        authorization,
        content_type,
        body: bytes.to_vec(),
    };
    let out = iotstream_ingest::handle(input, &state.ingest, now()).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(out)).into_response())
}

/// True when reading a body failed because it was over the limit (not a broken connection).
fn is_length_limit(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = err.source();
    }
    false
}

/// `GET /readyz`: 200 when the backends answer (what a Kubernetes readiness probe should use;
/// `/healthz` only says the process serves HTTP).
async fn ready(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    // The database (devices, results, outbox), the bus, and the telemetry store: what every
    // function needs. The cache is left out: without it the pipeline runs, degraded.
    state.backends.devices.get_device(&ready_probe_device()).await?;
    state
        .backends
        .bus
        .lag(iotstream_core::groups::ANALYZE, iotstream_core::topics::TELEMETRY)
        .await?;
    state
        .backends
        .store
        .contains(&[(ready_probe_device(), "readyz".to_owned())])
        .await?;
    Ok(axum::Json(serde_json::json!({"status": "ready"})).into_response())
}

fn ready_probe_device() -> iotstream_core::DeviceId {
    iotstream_core::DeviceId::parse("iotstream-readyz").expect("valid id")
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    state.record_lag().await;
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

pub fn now() -> Ts {
    Ts::from_datetime(time::OffsetDateTime::now_utc())
}

#[cfg(test)]
pub(crate) mod tests;
