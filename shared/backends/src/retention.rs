//! Retention of the embedded engines, run periodically by `up`: telemetry older than the period
//! once analysed, consumed internal topics after an hour, and in the results database the
//! aggregates, resolved alerts, delivered or dead webhook deliveries older than the period.
//! The results database is pruned whichever engine holds it (SQLite or PostgreSQL); the other
//! real engines have their own retention (Kafka topic retention, Cosmos DB TTL).

use crate::embedded::EmbeddedResults;
use crate::log::{LogBus, LogTelemetryStore};
use iotstream_core::ports::PortResult;
use iotstream_core::{PortError, Ts, topics};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// How long consumed internal records (insights, alerts) are kept, for inspection.
pub const INTERNAL_RETENTION: Duration = Duration::from_secs(3600);

pub struct Retention {
    /// The embedded log, when it is the bus.
    pub bus: Option<LogBus>,
    /// The embedded log's telemetry store, when it is the store.
    pub store: Option<Arc<LogTelemetryStore>>,
    pub results: ResultsPruner,
}

/// The results database to prune.
#[derive(Clone, Debug)]
pub enum ResultsPruner {
    Embedded(EmbeddedResults),
    #[cfg(feature = "postgres")]
    Postgres(crate::postgres::PgResults),
}

impl ResultsPruner {
    async fn prune(&self, cutoff: Ts) -> PortResult<u64> {
        match self {
            ResultsPruner::Embedded(db) => db.prune(cutoff).await,
            #[cfg(feature = "postgres")]
            ResultsPruner::Postgres(db) => db.prune(cutoff).await,
        }
    }
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
            let readings = match &store {
                Some(store) => store.retain(now - keep)?,
                None => 0,
            };
            let internal = now - keep.min(INTERNAL_RETENTION);
            let segments = match &bus {
                Some(bus) => {
                    bus.trim_consumed(topics::INSIGHTS, internal)?
                        + bus.trim_consumed(topics::ALERTS, internal)?
                }
                None => 0,
            };
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
