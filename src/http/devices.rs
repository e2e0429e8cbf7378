//! Device provisioning over the admin API: `POST /api/devices`, `DELETE /api/devices/{id}`.

use super::error::ApiError;
use crate::app::AppState;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use iotstream_core::{DeviceId, FieldError};
use serde::Deserialize;
use std::sync::Arc;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AddDevice {
    device_id: String,
}

pub async fn add(State(state): State<Arc<AppState>>, body: axum::body::Bytes) -> Result<Response, ApiError> {
    let req: AddDevice = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(
            "malformed_body",
            format!("expected {{\"deviceId\": \"...\"}}: {e}"),
        )
    })?;
    let id = DeviceId::parse(&req.device_id).map_err(|m| {
        ApiError::bad_request("invalid_device_id", format!("deviceId {m}"))
            .with_details(vec![FieldError::new("deviceId", m)])
    })?;
    match crate::devices::provision(&state.devices(), &state.master_key, &id).await? {
        Some(created) => Ok((StatusCode::CREATED, Json(created)).into_response()),
        None => Err(ApiError::new(
            StatusCode::CONFLICT,
            "device_exists",
            format!("device {id} already exists"),
        )),
    }
}

pub async fn remove(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = DeviceId::parse(&id).map_err(|_| ApiError::not_found("no such device"))?;
    if state.devices().remove_device(&id).await? {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(ApiError::not_found(format!("no device {id}")))
    }
}
