//! Stored insights besides aggregates and latest state (extensions of CONTRACT §2.3):
//! `GET /api/forecasts` and `GET /api/late-readings`, newest first, filtered like `/api/alerts`
//! (`deviceId`, `limit`) and by time (`from`, `to`: RFC 3339 or epoch milliseconds, `[from, to)`).

use super::error::ApiError;
use super::query::{bad_query, parse_time};
use crate::app::AppState;
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use iotstream_core::{DeviceId, FieldError, Ts};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

/// Rows one request may ask for, and the default.
const MAX_LIMIT: usize = 1_000;
const DEFAULT_LIMIT: usize = 100;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InsightsQuery {
    device_id: Option<String>,
    from: Option<String>,
    to: Option<String>,
    limit: Option<usize>,
}

/// A parsed [`InsightsQuery`]: no bounds mean everything stored.
struct Filter {
    device: Option<DeviceId>,
    from: Ts,
    to: Ts,
    limit: usize,
}

impl Filter {
    /// Every bad field is named in the 400's details, like the series query.
    fn parse(q: InsightsQuery, what: &str) -> Result<Filter, ApiError> {
        let mut errors = Vec::new();
        let device = match q.device_id.as_deref().map(DeviceId::parse) {
            None => None,
            Some(Ok(d)) => Some(d),
            Some(Err(m)) => {
                errors.push(FieldError::new("deviceId", m));
                None
            }
        };
        let mut time = |field: &str, v: Option<&str>, default: Ts| match v.map(|s| parse_time(field, s)) {
            None => default,
            Some(Ok(t)) => t,
            Some(Err(e)) => {
                errors.push(e);
                default
            }
        };
        let from = time("from", q.from.as_deref(), Ts(i64::MIN));
        let to = time("to", q.to.as_deref(), Ts(i64::MAX));
        if errors.is_empty() && from >= to {
            errors.push(FieldError::new("from", "must be before to"));
        }
        if !errors.is_empty() {
            return Err(
                ApiError::bad_request("invalid_query", format!("invalid {what} query")).with_details(errors),
            );
        }
        Ok(Filter {
            device,
            from,
            to,
            limit: q.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT),
        })
    }
}

/// `GET /api/forecasts?deviceId=&from=&to=&limit=`: trend forecasts, newest (`at`) first.
pub async fn forecasts(
    State(state): State<Arc<AppState>>,
    q: Result<Query<InsightsQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = q.map_err(bad_query)?;
    let f = Filter::parse(q, "forecasts")?;
    let forecasts = state
        .results()
        .forecasts(f.device.as_ref(), f.from, f.to, f.limit)
        .await?;
    Ok(Json(json!({ "forecasts": forecasts })))
}

/// `GET /api/late-readings?deviceId=&from=&to=&limit=`: readings that came too late to be
/// analysed, newest (`ts`) first.
pub async fn late_readings(
    State(state): State<Arc<AppState>>,
    q: Result<Query<InsightsQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = q.map_err(bad_query)?;
    let f = Filter::parse(q, "late readings")?;
    let late = state
        .results()
        .late_readings(f.device.as_ref(), f.from, f.to, f.limit)
        .await?;
    Ok(Json(json!({ "lateReadings": late })))
}
