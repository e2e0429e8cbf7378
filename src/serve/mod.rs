//! `iotstream serve`: the Azure Functions custom handler (CONTRACT §1; reference/azure-functions.md).
//!
//! The Functions host owns the triggers: it answers HTTP on its own port and consumes Kafka with
//! its extension, and calls this process on `127.0.0.1:$FUNCTIONS_CUSTOMHANDLER_PORT` with one
//! `POST /<function>` per invocation. Each route decodes the host's payload ([`payload`]) and calls
//! the same handler the long-running runner (`iotstream run`) calls:
//!
//! | route | trigger (function.json) | does |
//! |---|---|---|
//! | `/ingest` | HTTP `POST /api/telemetry` | the request goes through the HTTP API's own router: SAS, validation, group commit; the client's status, headers and body come back as the `res` output |
//! | `/analyze` | Kafka `telemetry` | per partition: the engine, then publish, then the partition's checkpoint ([`analyze`]) |
//! | `/process`, `/process-alerts` | Kafka `insights`, `alerts` | results store and cache |
//! | `/notify` | Kafka `alerts` | webhook first, then the outbox; a background loop retries from the outbox |
//!
//! An invocation answers 200 only when its side effects are durable; a backend that is down is
//! retried inside the invocation (as the runner's loops do), so the host's offset commit after a
//! 200 never skips a record. Only a payload the host would not send (another function.json) or a
//! stop in the middle answers an error status.

mod analyze;
pub mod payload;

use crate::app::{AppState, Config, Functions, Pipeline};
use crate::workers;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::BodyExt;
use iotstream_core::PortError;
use iotstream_core::ports::{Delivered, Poisoned};
use payload::{Invocation, PayloadError, response};
use serde_json::{Value, json};
use std::sync::Arc;
use tokio::sync::watch;
use tower::ServiceExt;

/// Largest invocation body: a Kafka batch (`maxBatchSize` 1,000 in host.json) of readings up to
/// the ingest limit, each encoded twice more by the host.
pub const MAX_INVOCATION_BYTES: usize = 64 << 20;

/// What the routes share.
pub struct Handler {
    app: Arc<AppState>,
    /// The HTTP API's routes for ingest: an HTTP trigger's request is replayed through them.
    http: Router,
    analyze: analyze::Analyzer,
    notify: Option<workers::notify::Sender>,
    topic_prefix: Option<String>,
    shutdown: watch::Receiver<bool>,
}

/// Starts the pipeline's stores (no consumers: the host consumes) and the handler's background
/// work: analyze's processing-time tick, notify's retries from the outbox, retention.
pub async fn start(cfg: Config) -> anyhow::Result<(Pipeline, Arc<Handler>)> {
    let cfg = Config {
        functions: Functions::NONE,
        ..cfg
    };
    let mut pipeline = Pipeline::start(cfg.clone()).await?;
    let app = pipeline.state.clone();
    let shutdown = pipeline.stopping();
    let notify = match &cfg.webhook {
        Some(webhook) => {
            let (sender, task) = workers::notify::spawn_delivery(&app, &cfg, webhook, shutdown.clone())?;
            pipeline.add_task(task);
            Some(sender)
        }
        None => None,
    };
    if let Some(task) = workers::spawn_retention(&app, &cfg, shutdown.clone()) {
        pipeline.add_task(task);
    }
    let handler = Arc::new(Handler {
        http: crate::http::router_for(
            app.clone(),
            Functions {
                ingest: true,
                ..Functions::NONE
            },
        ),
        analyze: analyze::Analyzer::new(cfg.rules.clone()),
        app,
        notify,
        topic_prefix: cfg
            .urls
            .setting("IOTSTREAM_KAFKA_TOPIC_PREFIX")
            .map(str::to_owned),
        shutdown: shutdown.clone(),
    });
    pipeline.add_task(tokio::spawn(analyze::tick_loop(handler.clone(), shutdown)));
    Ok((pipeline, handler))
}

/// The custom handler's routes. `GET /` answers the host's readiness probe.
pub fn router(handler: Arc<Handler>) -> Router {
    Router::new()
        .route("/", get(|| async { "iotstream custom handler" }))
        .route("/ingest", post(ingest))
        .route("/analyze", post(analyze))
        .route("/process", post(process_insights))
        .route("/process-alerts", post(process_alerts))
        .route("/notify", post(notify))
        .layer(DefaultBodyLimit::max(MAX_INVOCATION_BYTES))
        .with_state(handler)
}

/// Why an invocation failed: the host logs `Logs` and, with `CommitOnFailure: false` in host.json,
/// delivers the records again.
enum Failure {
    Payload(PayloadError),
    Stopping,
    NoWebhook,
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let (status, log) = match self {
            Failure::Payload(e) => (StatusCode::BAD_REQUEST, format!("invalid invocation: {e}")),
            Failure::Stopping => (
                StatusCode::SERVICE_UNAVAILABLE,
                "the handler is stopping; nothing of this invocation was committed".to_string(),
            ),
            Failure::NoWebhook => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "notify needs IOTSTREAM_WEBHOOK_URL (and IOTSTREAM_WEBHOOK_SECRET) in the app settings"
                    .to_string(),
            ),
        };
        tracing::warn!(status = status.as_u16(), "{log}");
        (status, axum::Json(response(json!({}), &[log]))).into_response()
    }
}

impl From<PayloadError> for Failure {
    fn from(e: PayloadError) -> Self {
        Failure::Payload(e)
    }
}

fn done(logs: &[String]) -> Response {
    axum::Json(response(json!({}), logs)).into_response()
}

/// `/ingest`: the HTTP trigger's request through the HTTP API; its response is the `res` output.
async fn ingest(State(h): State<Arc<Handler>>, body: Bytes) -> Result<Response, Failure> {
    let req = Invocation::parse(&body)?.http_request()?;
    // The function is the telemetry endpoint whatever route prefix the host has: only the query
    // string of its URL is kept.
    let query = req
        .path
        .split_once('?')
        .map_or(String::new(), |(_, q)| format!("?{q}"));
    let mut builder = Request::builder()
        .method(req.method.as_str())
        .uri(format!("/api/telemetry{query}"));
    for (name, value) in &req.headers {
        // Hop-by-hop and length headers describe the host's request, not this one.
        if !["content-length", "transfer-encoding", "connection", "host"]
            .iter()
            .any(|h| name.eq_ignore_ascii_case(h))
        {
            builder = builder.header(name.as_str(), value.as_str());
        }
    }
    let request = builder
        .body(Body::from(req.body))
        .map_err(|e| PayloadError(format!("the request cannot be replayed: {e}")))?;
    let res = h
        .http
        .clone()
        .oneshot(request)
        .await
        .expect("the router is infallible");
    let status = res.status();
    let mut headers = serde_json::Map::new();
    for (name, value) in res.headers() {
        if let Ok(v) = value.to_str() {
            headers.insert(name.to_string(), Value::String(v.to_string()));
        }
    }
    let bytes = res
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let res = json!({
        "statusCode": status.as_u16().to_string(),
        "headers": headers,
        "body": String::from_utf8_lossy(&bytes),
    });
    Ok(axum::Json(response(json!({ "res": res }), &[])).into_response())
}

/// `/analyze`: the engine over each partition's records.
async fn analyze(State(h): State<Arc<Handler>>, body: Bytes) -> Result<Response, Failure> {
    let records = h.records(&body)?;
    let logs = h.analyze.invoke(&h, records).await?;
    Ok(done(&logs))
}

/// `/process`: insights (windows, latest state, forecasts, late readings) into the results store.
async fn process_insights(State(h): State<Arc<Handler>>, body: Bytes) -> Result<Response, Failure> {
    let records = h.records(&body)?;
    let input = iotstream_process::Insights::decode(&records);
    h.dead_letter("process", &records, &input.poisoned).await?;
    let deps = h.process_deps();
    h.retry("process", || iotstream_process::handle_insights(&input, &deps))
        .await?;
    Ok(done(&[]))
}

/// `/process-alerts`: alert transitions into the results store (applied monotonically).
async fn process_alerts(State(h): State<Arc<Handler>>, body: Bytes) -> Result<Response, Failure> {
    let records = h.records(&body)?;
    let (events, poisoned) = iotstream_process::decode_alerts(&records);
    h.dead_letter("process", &records, &poisoned).await?;
    let deps = h.process_deps();
    h.retry("process", || iotstream_process::handle_alerts(&events, &deps))
        .await?;
    Ok(done(&[]))
}

/// `/notify`: each slice sent, then recorded in the outbox (as the runner's notify loop).
async fn notify(State(h): State<Arc<Handler>>, body: Bytes) -> Result<Response, Failure> {
    let records = h.records(&body)?;
    let sender = h.notify.as_ref().ok_or(Failure::NoWebhook)?;
    let (events, poisoned) = iotstream_notify::decode(&records);
    iotstream_notify::record_alert_delay("received", &events);
    h.dead_letter("notify", &records, &poisoned).await?;
    sender
        .send_all(&h.app, &events, &h.shutdown)
        .await
        .then_some(())
        .ok_or(Failure::Stopping)?;
    Ok(done(&[]))
}

impl Handler {
    /// The Kafka records of an invocation, their topics named as the ports name them (without
    /// `IOTSTREAM_KAFKA_TOPIC_PREFIX`, which the host's envelopes carry).
    fn records(&self, body: &[u8]) -> Result<Vec<Delivered>, Failure> {
        let mut records = Invocation::parse(body)?.kafka_records()?;
        if let Some(prefix) = &self.topic_prefix {
            for r in &mut records {
                if let Some(topic) = r.topic.strip_prefix(prefix.as_str()) {
                    r.topic = topic.to_string();
                }
            }
        }
        Ok(records)
    }

    fn process_deps(&self) -> iotstream_process::Deps<'_> {
        iotstream_process::Deps {
            results: self.app.backends.results.as_ref(),
            cache: self.app.backends.cache.as_ref(),
        }
    }

    /// Runs a side effect until it succeeds (a backend that is down holds the invocation, as it
    /// holds the runner's loop); fails only when the handler is stopping.
    async fn retry<T, F, Fut>(&self, what: &str, op: F) -> Result<T, Failure>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, PortError>>,
    {
        workers::retry_until(what, &self.shutdown, op)
            .await
            .ok_or(Failure::Stopping)
    }

    /// Sets records that can never be handled aside on their dead-letter topic.
    async fn dead_letter(
        &self,
        what: &str,
        records: &[Delivered],
        poisoned: &[Poisoned],
    ) -> Result<(), Failure> {
        let bus = self.app.backends.bus.as_ref();
        workers::dead_letter_poison(what, bus, records, poisoned, &self.shutdown)
            .await
            .then_some(())
            .ok_or(Failure::Stopping)
    }
}

#[cfg(test)]
mod tests;
