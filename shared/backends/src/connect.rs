//! Choosing the engines: the one place that maps backend URLs to implementations.
//!
//! | setting           | accepted                                  |
//! |-------------------|-------------------------------------------|
//! | `bus`             | unset / `embedded`, `kafka://`            |
//! | `telemetry_store` | unset / `embedded`, `cosmos://`, `cosmos+https://` |
//! | `database`        | unset / `embedded`, `postgres://`, `postgresql://` |
//! | `cache`           | unset / `embedded`, `redis://`            |
//!
//! Only the embedded engines exist in this build; the others answer with a `Config` error
//! naming the cargo feature that will enable them.

use crate::cache::MemoryCache;
use crate::embedded::EmbeddedResults;
use crate::log::{LogBus, LogTelemetryStore};
use iotstream_core::PortError;
use iotstream_core::ports::{
    Cache, CheckpointStore, DeviceRegistry, EventBus, Outbox, ResultsStore, TelemetrySink, TelemetryStore,
};
use std::path::Path;
use std::sync::Arc;

/// Every port the functions need, behind trait objects.
#[derive(Clone)]
pub struct Backends {
    /// Where ingest writes: stores and publishes in one durable step.
    pub sink: Arc<dyn TelemetrySink>,
    pub store: Arc<dyn TelemetryStore>,
    pub bus: Arc<dyn EventBus>,
    pub devices: Arc<dyn DeviceRegistry>,
    pub results: Arc<dyn ResultsStore>,
    pub outbox: Arc<dyn Outbox>,
    pub checkpoints: Arc<dyn CheckpointStore>,
    pub cache: Arc<dyn Cache>,
    /// Retention of the embedded log (the real engines have their own: Kafka retention,
    /// Cosmos DB TTL).
    pub retention: Option<Arc<crate::retention::Retention>>,
}

/// Backend URLs; `None` (or `"embedded"`) selects the embedded engine.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackendUrls {
    pub bus: Option<String>,
    pub telemetry_store: Option<String>,
    pub database: Option<String>,
    pub cache: Option<String>,
}

/// An engine family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Embedded,
    Kafka,
    Cosmos,
    Postgres,
    Redis,
}

impl Engine {
    fn feature(self) -> &'static str {
        match self {
            Engine::Embedded => "embedded",
            Engine::Kafka => "kafka",
            Engine::Cosmos => "cosmos",
            Engine::Postgres => "postgres",
            Engine::Redis => "redis",
        }
    }
}

/// Parses one setting: which engine it names, checked against the engines the role accepts.
pub fn engine_for(role: &str, url: Option<&str>, accepted: &[Engine]) -> Result<Engine, PortError> {
    let url = url.map(str::trim).unwrap_or("");
    let engine = if url.is_empty() || url.eq_ignore_ascii_case("embedded") {
        Engine::Embedded
    } else {
        let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
        match scheme.as_deref() {
            Some("embedded") => Engine::Embedded,
            Some("kafka") => Engine::Kafka,
            Some("cosmos" | "cosmos+https") => Engine::Cosmos,
            Some("postgres" | "postgresql") => Engine::Postgres,
            Some("redis") => Engine::Redis,
            _ => {
                return Err(PortError::config(format!(
                    "{role}: URL scheme {:?} is not supported; use {}",
                    scheme.unwrap_or_else(|| url.split(':').next().unwrap_or("").to_owned()),
                    accepted_list(accepted)
                )));
            }
        }
    };
    if !accepted.contains(&engine) {
        return Err(PortError::config(format!(
            "{role}: the {} engine cannot serve this role; use {}",
            engine.feature(),
            accepted_list(accepted)
        )));
    }
    if engine != Engine::Embedded {
        return Err(PortError::config(format!(
            "{role}: the {0} engine is not enabled in this build (cargo feature `{0}`)",
            engine.feature()
        )));
    }
    Ok(engine)
}

fn accepted_list(accepted: &[Engine]) -> String {
    let names: Vec<&str> = accepted
        .iter()
        .map(|e| match e {
            Engine::Embedded => "`embedded` (or leave unset)",
            Engine::Kafka => "kafka://",
            Engine::Cosmos => "cosmos:// or cosmos+https://",
            Engine::Postgres => "postgres:// or postgresql://",
            Engine::Redis => "redis://",
        })
        .collect();
    names.join(", ")
}

/// Opens only the device registry: what `iotstream devices ...` needs, safe while `up` runs
/// (the embedded registry is a SQLite database shared between processes).
pub async fn connect_registry(
    data_dir: &Path,
    urls: &BackendUrls,
) -> Result<Arc<dyn DeviceRegistry>, PortError> {
    use Engine::*;
    engine_for("database", urls.database.as_deref(), &[Embedded, Postgres])?;
    std::fs::create_dir_all(data_dir).map_err(|e| {
        PortError::unavailable(format!(
            "cannot create data directory {}: {e}",
            data_dir.display()
        ))
    })?;
    Ok(Arc::new(EmbeddedResults::open(data_dir).await?))
}

/// Opens every port: embedded engines live under `data_dir` (created if missing).
pub async fn connect(data_dir: &Path, urls: &BackendUrls) -> Result<Backends, PortError> {
    use Engine::*;
    engine_for("bus", urls.bus.as_deref(), &[Embedded, Kafka])?;
    engine_for(
        "telemetry store",
        urls.telemetry_store.as_deref(),
        &[Embedded, Cosmos],
    )?;
    engine_for("database", urls.database.as_deref(), &[Embedded, Postgres])?;
    engine_for("cache", urls.cache.as_deref(), &[Embedded, Redis])?;
    // Every engine is embedded here; later engines will branch on the values above.
    std::fs::create_dir_all(data_dir).map_err(|e| {
        PortError::unavailable(format!(
            "cannot create data directory {}: {e}",
            data_dir.display()
        ))
    })?;
    let results = Arc::new(EmbeddedResults::open(data_dir).await?);
    let bus = LogBus::open(data_dir)?;
    // The embedded telemetry store lives in the bus's `telemetry` log: one write stores and
    // publishes a reading.
    let store = Arc::new(LogTelemetryStore::open(bus.clone())?);
    let retention = Arc::new(crate::retention::Retention {
        bus: bus.clone(),
        store: store.clone(),
        results: (*results).clone(),
    });
    Ok(Backends {
        retention: Some(retention),
        sink: store.clone(),
        store,
        bus: Arc::new(bus),
        devices: results.clone(),
        results: results.clone(),
        outbox: results.clone(),
        checkpoints: results,
        cache: Arc::new(MemoryCache::new()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use Engine::*;

    #[test]
    fn embedded_is_the_default() {
        assert_eq!(engine_for("bus", None, &[Embedded, Kafka]).unwrap(), Embedded);
        assert_eq!(
            engine_for("bus", Some("embedded"), &[Embedded, Kafka]).unwrap(),
            Embedded
        );
    }

    #[test]
    fn real_engines_name_their_feature() {
        let e = engine_for("bus", Some("kafka://broker:9092"), &[Embedded, Kafka]).unwrap_err();
        assert!(e.message.contains("cargo feature `kafka`"), "{e}");
        let e = engine_for("database", Some("postgresql://x/db"), &[Embedded, Postgres]).unwrap_err();
        assert!(e.message.contains("`postgres`"), "{e}");
        let e = engine_for(
            "telemetry store",
            Some("cosmos+https://acct"),
            &[Embedded, Cosmos],
        )
        .unwrap_err();
        assert!(e.message.contains("`cosmos`"), "{e}");
    }

    #[test]
    fn unknown_and_misplaced_schemes_are_config_errors() {
        let e = engine_for("cache", Some("memcached://x"), &[Embedded, Redis]).unwrap_err();
        assert_eq!(e.kind, iotstream_core::PortErrorKind::Config);
        assert!(
            e.message.contains("memcached") && e.message.contains("redis://"),
            "{e}"
        );
        let e = engine_for("bus", Some("redis://x"), &[Embedded, Kafka]).unwrap_err();
        assert!(e.message.contains("kafka://"), "{e}");
    }
}
