//! Retention of the embedded engines, run periodically by `up`: telemetry older than the period
//! once analysed, consumed internal topics after an hour, and in the results database the
//! aggregates, resolved alerts, delivered or dead webhook deliveries older than the period.
//! (The real engines have their own: Kafka retention, Cosmos DB TTL, a PostgreSQL job.)

use crate::embedded::EmbeddedResults;
use crate::log::{LogBus, LogTelemetryStore};
use iotstream_core::ports::PortResult;
use iotstream_core::{PortError, Ts, topics};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// How long consumed internal records (insights, alerts) are kept, for inspection.
pub const INTERNAL_RETENTION: Duration = Duration::from_secs(3600);

pub struct Retention {
    pub bus: LogBus,
    pub store: Arc<LogTelemetryStore>,
    pub results: EmbeddedResults,
}

/// What one retention pass deleted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RetentionReport {
    pub readings: u64,
    pub internal_segments: usize,
    pub result_rows: u64,
}

impl Retention {
    /// Deletes what is older than `keep` (and, for the log, already consumed).
    pub async fn enforce(&self, keep: Duration) -> PortResult<RetentionReport> {
        let (bus, store) = (self.bus.clone(), self.store.clone());
        let (readings, internal_segments) = tokio::task::spawn_blocking(move || {
            let now = SystemTime::now();
            let readings = store.retain(now - keep)?;
            let internal = now - keep.min(INTERNAL_RETENTION);
            let segments = bus.trim_consumed(topics::INSIGHTS, internal)?
                + bus.trim_consumed(topics::ALERTS, internal)?;
            Ok::<_, PortError>((readings, segments))
        })
        .await
        .map_err(|e| PortError::internal(format!("retention task failed: {e}")))??;
        let now_ms = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let cutoff = Ts(now_ms - keep.as_millis() as i64);
        let result_rows = self.results.prune(cutoff).await?;
        Ok(RetentionReport {
            readings,
            internal_segments,
            result_rows,
        })
    }
}
