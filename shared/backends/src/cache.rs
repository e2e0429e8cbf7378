//! `MemoryCache`: the in-process [`Cache`] (stands in for Redis).
//!
//! A `RwLock<HashMap>`; nothing survives a restart, which the port allows (the results store is
//! the source of truth). `set_latest` keeps, per device, the newer state and merges metric maps
//! exactly like `ResultsStore::upsert_latest` ([`crate::semantics::merge_latest`]). Unbounded:
//! one entry per device.

use crate::semantics::merge_latest;
use async_trait::async_trait;
use iotstream_core::ports::{Cache, PortResult};
use iotstream_core::{DeviceId, LatestState};
use std::collections::HashMap;
use std::sync::RwLock;

/// The in-process cache.
#[derive(Debug, Default)]
pub struct MemoryCache {
    latest: RwLock<HashMap<DeviceId, LatestState>>,
}

impl MemoryCache {
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl Cache for MemoryCache {
    async fn set_latest(&self, states: &[LatestState]) -> PortResult<()> {
        let mut map = self.latest.write().unwrap_or_else(|p| p.into_inner());
        for state in states {
            let merged = merge_latest(map.get(&state.device_id), state);
            map.insert(state.device_id.clone(), merged);
        }
        Ok(())
    }

    async fn get_latest(&self, device: &DeviceId) -> PortResult<Option<LatestState>> {
        let map = self.latest.read().unwrap_or_else(|p| p.into_inner());
        Ok(map.get(device).cloned())
    }
}
