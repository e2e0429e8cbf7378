//! Choosing the engines: the one place that maps backend URLs to implementations.
//!
//! | setting           | accepted                                  | cargo feature |
//! |-------------------|-------------------------------------------|---------------|
//! | `bus`             | unset / `embedded`, `kafka://`            | `kafka`       |
//! | `telemetry_store` | unset / `embedded`, `cosmos://`, `cosmos+https://` | `cosmos` |
//! | `database`        | unset / `embedded`, `postgres://`, `postgresql://` | `postgres` |
//! | `cache`           | unset / `embedded`, `redis://`, `rediss://` | `redis`     |
//!
//! An engine that is not compiled in answers with a `Config` error naming its cargo feature.
//! Engines mix freely: the telemetry store and the bus are composed by [`SplitSink`] unless both
//! are embedded (then the log is both, in one write); a Kafka bus without Cosmos DB keeps
//! readings in the embedded SQLite telemetry store.

use crate::cache::MemoryCache;
use crate::embedded::{EmbeddedResults, EmbeddedTelemetryStore};
use crate::log::{LogBus, LogTelemetryStore};
use crate::retention::{ResultsPruner, Retention};
use crate::split::SplitSink;
use iotstream_core::PortError;
use iotstream_core::ports::{
    Cache, CheckpointStore, DeviceRegistry, EventBus, Outbox, ResultsStore, TelemetrySink, TelemetryStore,
};
use std::collections::BTreeMap;
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
    /// Retention: of the embedded log when it is used, and of the results database (the other
    /// engines have their own: Kafka topic retention, Cosmos DB TTL).
    pub retention: Option<Arc<Retention>>,
}

/// Backend URLs; `None` (or `"embedded"`) selects the embedded engine. `settings` holds the
/// engines' other options by environment name (`IOTSTREAM_KAFKA_*`, `IOTSTREAM_COSMOS_*`,
/// `IOTSTREAM_REDIS_*`, and the [`AZURE_IDENTITY_SETTINGS`] of Cosmos DB's workload identity),
/// gathered once by the binary. `Debug` shows no value: URLs and settings
/// may hold passwords and keys.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct BackendUrls {
    pub bus: Option<String>,
    pub telemetry_store: Option<String>,
    pub database: Option<String>,
    pub cache: Option<String>,
    pub settings: BTreeMap<String, String>,
}

impl std::fmt::Debug for BackendUrls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = |u: &Option<String>| {
            u.as_deref()
                .map(|u| u.split_once("://").map_or("embedded", |(s, _)| s).to_owned())
                .unwrap_or_else(|| "embedded".into())
        };
        f.debug_struct("BackendUrls")
            .field("bus", &scheme(&self.bus))
            .field("telemetry_store", &scheme(&self.telemetry_store))
            .field("database", &scheme(&self.database))
            .field("cache", &scheme(&self.cache))
            .field("settings", &self.settings.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// The Azure variables the Cosmos DB store reads (from the settings) for Entra ID workload
/// identity: the ones AKS's workload identity webhook sets, and the authority host of another
/// cloud.
pub const AZURE_IDENTITY_SETTINGS: [&str; 4] = [
    "AZURE_CLIENT_ID",
    "AZURE_TENANT_ID",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_AUTHORITY_HOST",
];

impl BackendUrls {
    /// Every setting of the environment whose name starts with one of the engines' prefixes, and
    /// the [`AZURE_IDENTITY_SETTINGS`].
    pub fn settings_from_env() -> BTreeMap<String, String> {
        std::env::vars()
            .filter(|(k, _)| {
                ["IOTSTREAM_KAFKA_", "IOTSTREAM_COSMOS_", "IOTSTREAM_REDIS_"]
                    .iter()
                    .any(|p| k.starts_with(p))
                    || AZURE_IDENTITY_SETTINGS.contains(&k.as_str())
            })
            .collect()
    }

    /// A setting, if set and not blank.
    pub fn setting(&self, name: &str) -> Option<&str> {
        self.settings
            .get(name)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    }
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

    /// Whether this build has the engine.
    pub fn compiled(self) -> bool {
        match self {
            Engine::Embedded => true,
            Engine::Kafka => cfg!(feature = "kafka"),
            Engine::Cosmos => cfg!(feature = "cosmos"),
            Engine::Postgres => cfg!(feature = "postgres"),
            Engine::Redis => cfg!(feature = "redis"),
        }
    }
}

/// Parses one setting: which engine it names, checked against the engines the role accepts
/// and the engines compiled in.
pub fn engine_for(role: &str, url: Option<&str>, accepted: &[Engine]) -> Result<Engine, PortError> {
    let url = url.map(str::trim).unwrap_or("");
    let engine = if url.is_empty() || url.eq_ignore_ascii_case("embedded") {
        Engine::Embedded
    } else {
        let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
        match scheme.as_deref() {
            Some("embedded") => Engine::Embedded,
            Some("kafka") => Engine::Kafka,
            Some("cosmos" | "cosmos+https" | "cosmos+http") => Engine::Cosmos,
            Some("postgres" | "postgresql") => Engine::Postgres,
            Some("redis" | "rediss") => Engine::Redis,
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
    if !engine.compiled() {
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
            Engine::Redis => "redis:// or rediss://",
        })
        .collect();
    names.join(", ")
}

fn ensure_dir(data_dir: &Path) -> Result<(), PortError> {
    std::fs::create_dir_all(data_dir).map_err(|e| {
        PortError::unavailable(format!(
            "cannot create data directory {}: {e}",
            data_dir.display()
        ))
    })
}

/// Opens only the device registry: what `iotstream devices ...` needs, safe while `up` runs
/// (the embedded registry is a SQLite database shared between processes). A one-shot command
/// waits up to 15 s for a PostgreSQL connection, where a server's request waits 5 s.
pub async fn connect_registry(
    data_dir: &Path,
    urls: &BackendUrls,
) -> Result<Arc<dyn DeviceRegistry>, PortError> {
    use Engine::*;
    match engine_for("database", urls.database.as_deref(), &[Embedded, Postgres])? {
        #[cfg(feature = "postgres")]
        Postgres => Ok(Arc::new(
            crate::postgres::PgResults::connect_waiting(
                urls.database.as_deref().unwrap_or_default(),
                std::time::Duration::from_secs(15),
            )
            .await?,
        )),
        _ => {
            ensure_dir(data_dir)?;
            Ok(Arc::new(EmbeddedResults::open(data_dir).await?))
        }
    }
}

/// The results database's four ports and its pruner.
struct ResultsPorts {
    devices: Arc<dyn DeviceRegistry>,
    results: Arc<dyn ResultsStore>,
    outbox: Arc<dyn Outbox>,
    checkpoints: Arc<dyn CheckpointStore>,
    pruner: ResultsPruner,
}

async fn open_results(
    engine: Engine,
    data_dir: &Path,
    urls: &BackendUrls,
) -> Result<ResultsPorts, PortError> {
    #[cfg(feature = "postgres")]
    if engine == Engine::Postgres {
        let pg = Arc::new(
            crate::postgres::PgResults::connect(urls.database.as_deref().unwrap_or_default()).await?,
        );
        return Ok(ResultsPorts {
            pruner: ResultsPruner::Postgres((*pg).clone()),
            devices: pg.clone(),
            results: pg.clone(),
            outbox: pg.clone(),
            checkpoints: pg,
        });
    }
    let _ = (engine, urls);
    let db = Arc::new(EmbeddedResults::open(data_dir).await?);
    Ok(ResultsPorts {
        pruner: ResultsPruner::Embedded((*db).clone()),
        devices: db.clone(),
        results: db.clone(),
        outbox: db.clone(),
        checkpoints: db,
    })
}

async fn open_cache(engine: Engine, urls: &BackendUrls) -> Result<Arc<dyn Cache>, PortError> {
    #[cfg(feature = "redis")]
    if engine == Engine::Redis {
        let mut settings = crate::redis::RedisSettings::default();
        if let Some(p) = urls.setting("IOTSTREAM_REDIS_PREFIX") {
            settings.prefix = p.to_owned();
        }
        if let Some(ttl) = urls.setting("IOTSTREAM_REDIS_LATEST_TTL") {
            settings.latest_ttl = parse_ttl("IOTSTREAM_REDIS_LATEST_TTL", ttl)?;
        }
        return Ok(Arc::new(crate::redis::RedisCache::new(
            urls.cache.as_deref().unwrap_or_default(),
            settings,
        )?));
    }
    let _ = (engine, urls);
    Ok(Arc::new(MemoryCache::new()))
}

/// A duration setting like `1h` or `7d`.
pub fn parse_ttl(name: &str, text: &str) -> Result<std::time::Duration, PortError> {
    iotstream_core::ts::parse_duration_ms(text)
        .filter(|ms| *ms > 0)
        .map(|ms| std::time::Duration::from_millis(ms as u64))
        .ok_or_else(|| PortError::config(format!("{name} {text:?}: use a duration like 30m, 12h or 7d")))
}

/// Opens every port: embedded engines live under `data_dir` (created if missing).
pub async fn connect(data_dir: &Path, urls: &BackendUrls) -> Result<Backends, PortError> {
    use Engine::*;
    let bus_engine = engine_for("bus", urls.bus.as_deref(), &[Embedded, Kafka])?;
    let store_engine = engine_for(
        "telemetry store",
        urls.telemetry_store.as_deref(),
        &[Embedded, Cosmos],
    )?;
    let db_engine = engine_for("database", urls.database.as_deref(), &[Embedded, Postgres])?;
    let cache_engine = engine_for("cache", urls.cache.as_deref(), &[Embedded, Redis])?;
    ensure_dir(data_dir)?;
    let r = open_results(db_engine, data_dir, urls).await?;
    let cache = open_cache(cache_engine, urls).await?;
    let log = match bus_engine {
        Embedded => Some(LogBus::open(data_dir)?),
        _ => None,
    };
    let bus: Arc<dyn EventBus> = match (&log, bus_engine) {
        (Some(log), _) => Arc::new(log.clone()),
        #[cfg(feature = "kafka")]
        (None, Kafka) => Arc::new(crate::kafka::KafkaBus::connect(
            urls.bus.as_deref().unwrap_or_default(),
            urls,
        )?),
        (None, other) => unreachable!("engine_for accepted {other:?} for the bus"),
    };
    let (sink, store, log_store): (Arc<dyn TelemetrySink>, Arc<dyn TelemetryStore>, _) =
        match (store_engine, log.clone()) {
            // The embedded telemetry store lives in the bus's `telemetry` log: one write stores
            // and publishes a reading.
            (Embedded, Some(log)) => {
                let store = Arc::new(LogTelemetryStore::open(log.clone())?);
                let _ = log;
                (store.clone(), store.clone(), Some(store))
            }
            (engine, _) => {
                let store: Arc<dyn TelemetryStore> = match engine {
                    #[cfg(feature = "cosmos")]
                    Cosmos => Arc::new(
                        crate::cosmos::CosmosStore::connect(
                            urls.telemetry_store.as_deref().unwrap_or_default(),
                            urls,
                        )
                        .await?,
                    ),
                    _ => Arc::new(EmbeddedTelemetryStore::open(data_dir).await?),
                };
                let sink = Arc::new(SplitSink {
                    store: store.clone(),
                    bus: bus.clone(),
                });
                (sink, store, None)
            }
        };
    let retention = Arc::new(Retention {
        bus: log,
        store: log_store,
        results: r.pruner,
    });
    Ok(Backends {
        retention: Some(retention),
        sink,
        store,
        bus,
        devices: r.devices,
        results: r.results,
        outbox: r.outbox,
        checkpoints: r.checkpoints,
        cache,
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
    #[cfg(not(any(feature = "kafka", feature = "postgres", feature = "cosmos")))]
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
