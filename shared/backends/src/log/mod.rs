//! The embedded durable log: Kafka's model on local files, built for the ingest hot path.
//!
//! `<data_dir>/log/<topic>/<partition>.log` holds framed records (see [`partition`]); each topic
//! has a fixed partition count, records are placed by a stable hash of their key, offsets are
//! dense per partition, and consumer groups keep their committed offsets in
//! `<topic>/groups/<group>` (written atomically). One append is one `write` plus one
//! `fdatasync`, so a group commit of thousands of readings costs one disk flush.
//!
//! [`LogTelemetryStore`] keeps the telemetry store *in* the `telemetry` topic: ingest's one
//! append both stores and publishes a reading, atomically, and the store answers `contains` and
//! `range` from an in-memory index rebuilt from the log at start.
//!
//! Retention ([`LogRetention`]) deletes whole 64 MiB segments: telemetry once analysed and older
//! than the retention period, internal topics once consumed. Limits: the index costs about 80
//! bytes of resident memory per kept reading.

mod bus;
mod frame;
pub mod partition;
mod store;

pub use bus::LogBus;
pub use store::LogTelemetryStore;

use iotstream_core::ports::PortResult;
use iotstream_core::topics;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// How long consumed internal records (insights, alerts) are kept, for inspection.
pub const INTERNAL_RETENTION: Duration = Duration::from_secs(3600);

/// Retention of the embedded log, run periodically by `up`.
pub struct LogRetention {
    pub bus: LogBus,
    pub store: Arc<LogTelemetryStore>,
}

/// What one retention pass deleted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RetentionReport {
    pub readings: u64,
    pub internal_segments: usize,
}

impl LogRetention {
    /// Deletes telemetry older than `keep` that analyze has consumed, and consumed internal
    /// records older than [`INTERNAL_RETENTION`] (or `keep`, if shorter).
    pub async fn enforce(&self, keep: Duration) -> PortResult<RetentionReport> {
        let (bus, store) = (self.bus.clone(), self.store.clone());
        tokio::task::spawn_blocking(move || {
            let now = SystemTime::now();
            let readings = store.retain(now - keep)?;
            let internal = now - keep.min(INTERNAL_RETENTION);
            let internal_segments = bus.trim_consumed(topics::INSIGHTS, internal)?
                + bus.trim_consumed(topics::ALERTS, internal)?;
            Ok(RetentionReport {
                readings,
                internal_segments,
            })
        })
        .await
        .map_err(|e| iotstream_core::PortError::internal(format!("retention task failed: {e}")))?
    }
}
