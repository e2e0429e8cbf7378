//! Device provisioning, shared by the CLI (`iotstream devices ...`) and the admin API.

use crate::secrets::Secret;
use anyhow::{Context, bail};
use iotstream_core::ports::DeviceRegistry;
use iotstream_core::sas::{derive_device_key, encode_key, make_token};
use iotstream_core::ts::parse_duration_ms;
use iotstream_core::{DeviceId, PortError};
use serde::Serialize;
use std::sync::Arc;

/// `{"deviceId": "...", "primaryKey": "<base64>"}`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Provisioned {
    pub device_id: DeviceId,
    pub primary_key: String,
}

/// Adds a device; `None` when it exists already.
pub async fn provision(
    registry: &Arc<dyn DeviceRegistry>,
    master: &Secret,
    id: &DeviceId,
) -> Result<Option<Provisioned>, PortError> {
    let Some(rec) = registry.add_device(id, crate::app::now()).await? else {
        return Ok(None);
    };
    let key = derive_device_key(master.expose(), id, rec.generation);
    Ok(Some(Provisioned {
        device_id: id.clone(),
        primary_key: encode_key(&key),
    }))
}

/// A SAS token for an existing device, valid for `ttl`.
pub async fn token(
    registry: &Arc<dyn DeviceRegistry>,
    master: &Secret,
    id: &DeviceId,
    ttl: &str,
    host: &str,
) -> anyhow::Result<String> {
    let ttl_ms = parse_duration_ms(ttl)
        .filter(|ms| *ms > 0)
        .context("--ttl must be a duration like 30m, 1h or 7d")?;
    let Some(rec) = registry.get_device(id).await? else {
        bail!("no device {id}")
    };
    let key = derive_device_key(master.expose(), id, rec.generation);
    let expiry = (crate::app::now().millis() + ttl_ms) / 1000;
    Ok(make_token(host, id, &key, expiry))
}
