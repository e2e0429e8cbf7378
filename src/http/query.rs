//! Reading the results (CONTRACT §2.3): devices, series, alerts, acknowledgement, dead letters.

use super::error::ApiError;
use super::now;
use crate::app::AppState;
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use iotstream_core::ports::{AckOutcome, DeviceRecord, PortResult, ResultsStore};
use iotstream_core::ts::parse_duration_ms;
use iotstream_core::{Alert, AlertState, DeviceId, FieldError, LatestState, Ts};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;

/// Most buckets one series request may ask for.
const MAX_BUCKETS: i64 = 10_000;

fn device_json(rec: &DeviceRecord, latest: Option<&LatestState>, open_alerts: usize) -> Value {
    json!({
        "deviceId": rec.device_id,
        "createdAt": rec.created_at,
        "lastSeen": latest.map(|l| l.last_seen),
        "metrics": latest.map(|l| json!(l.metrics)).unwrap_or_else(|| json!({})),
        "activeAlerts": open_alerts,
    })
}

/// Alerts that are not resolved (active or acknowledged), per device.
pub(super) async fn open_alerts(
    results: &dyn ResultsStore,
    device: Option<&DeviceId>,
) -> PortResult<Vec<Alert>> {
    let mut open = results.alerts(Some(AlertState::Active), device, 10_000).await?;
    open.extend(
        results
            .alerts(Some(AlertState::Acknowledged), device, 10_000)
            .await?,
    );
    Ok(open)
}

pub async fn list_devices(State(state): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    let devices = state.devices().list_devices().await?;
    let latest: HashMap<DeviceId, LatestState> = state
        .results()
        .all_latest()
        .await?
        .into_iter()
        .map(|l| (l.device_id.clone(), l))
        .collect();
    let mut counts: HashMap<DeviceId, usize> = HashMap::new();
    for a in open_alerts(state.results().as_ref(), None).await? {
        *counts.entry(a.device_id).or_default() += 1;
    }
    let items: Vec<Value> = devices
        .iter()
        .map(|d| {
            device_json(
                d,
                latest.get(&d.device_id),
                counts.get(&d.device_id).copied().unwrap_or(0),
            )
        })
        .collect();
    Ok(Json(json!({ "devices": items })))
}

/// A query string that does not fit (e.g. `limit=-1`): the contract's error body, not axum's text.
pub(super) fn bad_query(e: QueryRejection) -> ApiError {
    ApiError::bad_request(
        "invalid_query",
        format!("invalid query string: {}", e.body_text()),
    )
}

fn parse_device(id: &str) -> Result<DeviceId, ApiError> {
    DeviceId::parse(id).map_err(|_| ApiError::not_found(format!("no device {id}")))
}

pub async fn device(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_device(&id)?;
    let rec = state
        .devices()
        .get_device(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no device {id}")))?;
    // The cache is the fast path; the database is the truth when the cache is cold or down.
    let latest = match state.cache().get_latest(&id).await {
        Ok(Some(l)) => Some(l),
        _ => state.results().latest(&id).await?,
    };
    let mut alerts = open_alerts(state.results().as_ref(), Some(&id)).await?;
    alerts.sort_by_key(|a| std::cmp::Reverse(a.opened_at));
    let mut body = device_json(&rec, latest.as_ref(), alerts.len());
    body["alerts"] = json!(alerts);
    Ok(Json(body))
}

#[derive(Deserialize)]
pub struct SeriesQuery {
    metric: Option<String>,
    from: Option<String>,
    to: Option<String>,
    step: Option<String>,
}

pub(super) fn parse_time(field: &str, s: &str) -> Result<Ts, FieldError> {
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(Ts(ms));
    }
    Ts::parse_rfc3339(s).ok_or_else(|| FieldError::new(field, "must be RFC 3339 or epoch milliseconds"))
}

pub async fn series(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    q: Result<Query<SeriesQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = q.map_err(bad_query)?;
    let id = parse_device(&id)?;
    let mut errors = Vec::new();
    let metric = q.metric.unwrap_or_default();
    if let Err(m) = iotstream_core::MetricName::check(&metric) {
        errors.push(FieldError::new(
            "metric",
            if metric.is_empty() {
                "is required".to_owned()
            } else {
                m
            },
        ));
    }
    let to =
        q.to.as_deref()
            .map(|s| parse_time("to", s))
            .transpose()
            .unwrap_or_else(|e| {
                errors.push(e);
                None
            });
    let from = q
        .from
        .as_deref()
        .map(|s| parse_time("from", s))
        .transpose()
        .unwrap_or_else(|e| {
            errors.push(e);
            None
        });
    let step = match q.step.as_deref().map(parse_duration_ms) {
        None => 60_000,
        Some(Some(ms)) if ms >= 1_000 => ms,
        Some(_) => {
            errors.push(FieldError::new(
                "step",
                "must be a duration of at least 1s, like 1m or 1h",
            ));
            60_000
        }
    };
    let to = to.unwrap_or_else(|| now().plus_millis(1));
    let from = from.unwrap_or_else(|| to.plus_millis(-3_600_000));
    if errors.is_empty() && from >= to {
        errors.push(FieldError::new("from", "must be before to"));
    }
    if errors.is_empty() && to.millis().saturating_sub(from.millis()) / step > MAX_BUCKETS {
        errors.push(FieldError::new(
            "step",
            format!("asks for more than {MAX_BUCKETS} buckets; use a larger step"),
        ));
    }
    if !errors.is_empty() {
        return Err(ApiError::bad_request("invalid_query", "invalid series query").with_details(errors));
    }
    if state.devices().get_device(&id).await?.is_none() {
        return Err(ApiError::not_found(format!("no device {id}")));
    }
    let points = state.results().series(&id, &metric, from, to, step).await?;
    Ok(Json(json!({
        "deviceId": id, "metric": metric, "from": from, "to": to, "step": format!("{}s", step / 1000),
        "points": points,
    })))
}

#[derive(Deserialize)]
pub struct ReadingsQuery {
    from: Option<String>,
    to: Option<String>,
    limit: Option<usize>,
}

/// `GET /api/devices/{id}/readings`: raw readings from the telemetry store, oldest first
/// (an extension of the contract: export and audit of what was acknowledged).
pub async fn readings(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    q: Result<Query<ReadingsQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = q.map_err(bad_query)?;
    let id = parse_device(&id)?;
    let mut errors = Vec::new();
    let mut time = |field: &str, v: Option<&str>, default: Ts| match v.map(|s| parse_time(field, s)) {
        None => default,
        Some(Ok(t)) => t,
        Some(Err(e)) => {
            errors.push(e);
            default
        }
    };
    let to = time("to", q.to.as_deref(), now().plus_millis(5 * 60_000 + 1));
    let from = time("from", q.from.as_deref(), Ts(0));
    if !errors.is_empty() {
        return Err(ApiError::bad_request("invalid_query", "invalid readings query").with_details(errors));
    }
    let limit = q.limit.unwrap_or(1_000).clamp(1, MAX_READINGS);
    let store = &state.backends.store;
    let mut readings = store.range(&id, from, to, limit).await?;
    // A full page may have more after it: `next` is where the next page starts. Each reading is
    // on exactly one page, whatever order the store gives readings of the same millisecond: the
    // page stops before its last millisecond, which starts the next one; a page that is all one
    // millisecond holds every reading of it.
    let mut next = None;
    if let (true, Some(first), Some(last)) = (readings.len() == limit, readings.first(), readings.last()) {
        let (first, last) = (first.ts, last.ts);
        if first < last {
            readings.retain(|r| r.ts < last);
            next = Some(last);
        } else {
            readings = store.range(&id, last, last.plus_millis(1), MAX_READINGS).await?;
            next = Some(last.plus_millis(1));
        }
    }
    let mut body = json!({ "deviceId": id, "readings": readings });
    if let Some(next) = next.filter(|n| *n < to) {
        body["next"] = json!(next);
    }
    Ok(Json(body))
}

/// Most readings in one page of `GET /api/devices/{id}/readings`.
const MAX_READINGS: usize = 100_000;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AlertsQuery {
    state: Option<String>,
    device_id: Option<String>,
    limit: Option<usize>,
}

pub async fn alerts(
    State(state): State<Arc<AppState>>,
    q: Result<Query<AlertsQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = q.map_err(bad_query)?;
    let filter = match q.state.as_deref() {
        None => None,
        Some(s) => Some(AlertState::parse(s).ok_or_else(|| {
            ApiError::bad_request("invalid_query", "state must be active, acknowledged or resolved")
                .with_details(vec![FieldError::new(
                    "state",
                    "must be active, acknowledged or resolved",
                )])
        })?),
    };
    let device = match q.device_id.as_deref() {
        None => None,
        Some(d) => Some(DeviceId::parse(d).map_err(|m| {
            ApiError::bad_request("invalid_query", format!("deviceId {m}"))
                .with_details(vec![FieldError::new("deviceId", m)])
        })?),
    };
    let limit = q.limit.unwrap_or(100).clamp(1, 1_000);
    let alerts = state.results().alerts(filter, device.as_ref(), limit).await?;
    Ok(Json(json!({ "alerts": alerts })))
}

pub async fn ack(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    match state.results().ack_alert(&id, now()).await? {
        AckOutcome::NotFound => Err(ApiError::not_found(format!("no alert {id}"))),
        AckOutcome::Unchanged(alert) => Ok(Json(json!({ "alert": alert, "changed": false }))),
        AckOutcome::Acknowledged(alert) => {
            state.wake_notifier();
            Ok(Json(json!({ "alert": alert, "changed": true })))
        }
    }
}

pub async fn dead_letters(State(state): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    let dead = state.outbox().dead_letters(1_000).await?;
    Ok(Json(json!({ "deadLetters": dead })))
}
