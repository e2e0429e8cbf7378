//! Device key lookup with a short-lived cache, so the hot path does no database read per request
//! and a device added by another process (`iotstream devices add`) can send at once.

use iotstream_core::ports::DeviceRegistry;
use iotstream_core::sas::{AuthError, SasToken, derive_device_key};
use iotstream_core::{DeviceId, Ts};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// How long a known device's key is trusted without asking the registry again: removing a
/// device takes effect within this time on every running ingest.
pub const KEY_CACHE_MS: i64 = 5_000;

/// Why a device's key could not be checked.
#[derive(Debug)]
pub enum KeyError {
    /// The token is not valid (401).
    Auth(AuthError),
    /// The registry could not be asked (503).
    Unavailable(iotstream_core::PortError),
}

pub struct DeviceKeys {
    registry: Arc<dyn DeviceRegistry>,
    master: Vec<u8>,
    cache: Mutex<HashMap<DeviceId, ([u8; 32], Ts)>>,
}

impl DeviceKeys {
    pub fn new(registry: Arc<dyn DeviceRegistry>, master: Vec<u8>) -> Self {
        DeviceKeys {
            registry,
            master,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Checks the token against the device's current key.
    pub async fn verify(&self, token: &SasToken, now: Ts) -> Result<(), KeyError> {
        let key = self.key(&token.device_id, now).await?;
        token
            .verify(&key, now.millis().div_euclid(1000))
            .map_err(KeyError::Auth)
    }

    async fn key(&self, device: &DeviceId, now: Ts) -> Result<[u8; 32], KeyError> {
        if let Some((key, at)) = self.cache.lock().expect("key cache").get(device)
            && now.millis() - at.millis() < KEY_CACHE_MS
        {
            return Ok(*key);
        }
        // A registry outage lets no one in and is not the device's fault: 503, retry later.
        let record = match self.registry.get_device(device).await {
            Ok(Some(r)) => r,
            Ok(None) => {
                self.cache.lock().expect("key cache").remove(device);
                return Err(KeyError::Auth(AuthError::UnknownDevice));
            }
            Err(e) => {
                tracing::warn!(error = %e, "device registry unavailable");
                return Err(KeyError::Unavailable(e));
            }
        };
        let key = derive_device_key(&self.master, device, record.generation);
        let mut cache = self.cache.lock().expect("key cache");
        if cache.len() > 1_000_000 {
            cache.clear();
        }
        cache.insert(device.clone(), (key, now));
        Ok(key)
    }
}
