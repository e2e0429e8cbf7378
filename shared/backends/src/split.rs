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
        let started = std::time::Instant::now();
        let stored = self.store.contains(&keys).await?;
        step_done("contains", started);
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
            let started = std::time::Instant::now();
            self.bus.publish(topics::TELEMETRY, &records).await?;
            step_done("publish", started);
            let started = std::time::Instant::now();
            self.store.put(&fresh).await?;
            step_done("store", started);
        }
        Ok(flags)
    }

    /// Groups overlap: the next group's lookup and publish go ahead while an earlier group
    /// waits for its acknowledgements or its store write, so a slow store write does not hold
    /// readings back from the bus (and from alerting).
    fn concurrency(&self) -> usize {
        CONCURRENT_GROUPS
    }
}

/// Group commits in flight at once through a [`SplitSink`].
pub const CONCURRENT_GROUPS: usize = 4;

/// Records how long one step of a group commit took (`iotstream_ingest_step_seconds`).
fn step_done(step: &'static str, started: std::time::Instant) {
    metrics::histogram!("iotstream_ingest_step_seconds", "step" => step)
        .record(started.elapsed().as_secs_f64());
}
