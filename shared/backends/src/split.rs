//! [`SplitSink`]: ingest's write for engines that keep the store and the bus apart (Cosmos DB
//! and Kafka): publish first, then store.
//!
//! Only readings the store does not hold are published, and they are published *before* they
//! are stored. A crash between the two leaves a reading on the bus that the store lacks; the
//! client got no 202 and re-sends it, the store still lacks it, so it is published again and
//! analyze drops the second copy by id. The opposite order could store a reading that is never
//! published, and the re-send would then be taken for a duplicate and never analysed.

use async_trait::async_trait;
use iotstream_core::ports::{EventBus, PortResult, Record, TelemetrySink, TelemetryStore};
use iotstream_core::{Reading, topics};
use std::collections::HashSet;
use std::sync::Arc;

pub struct SplitSink {
    pub store: Arc<dyn TelemetryStore>,
    pub bus: Arc<dyn EventBus>,
}

#[async_trait]
impl TelemetrySink for SplitSink {
    async fn accept(&self, readings: &[Reading]) -> PortResult<Vec<bool>> {
        let keys: Vec<_> = readings
            .iter()
            .map(|r| (r.device_id.clone(), r.id.clone()))
            .collect();
        let stored = self.store.contains(&keys).await?;
        let mut seen = HashSet::with_capacity(readings.len());
        let flags: Vec<bool> = readings
            .iter()
            .zip(&stored)
            .map(|(r, &held)| !held && seen.insert(r.id.as_str()))
            .collect();
        let fresh: Vec<Reading> = readings
            .iter()
            .zip(&flags)
            .filter(|(_, new)| **new)
            .map(|(r, _)| r.clone())
            .collect();
        if !fresh.is_empty() {
            let records: Vec<Record> = fresh
                .iter()
                .map(|r| Record {
                    key: r.device_id.to_string(),
                    value: serde_json::to_vec(r).expect("reading"),
                })
                .collect();
            self.bus.publish(topics::TELEMETRY, &records).await?;
            self.store.put(&fresh).await?;
        }
        Ok(flags)
    }
}
