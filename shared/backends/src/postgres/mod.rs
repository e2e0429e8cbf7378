//! `PgResults`: the results database on PostgreSQL (cargo feature `postgres`), implementing
//! [`DeviceRegistry`], [`ResultsStore`](iotstream_core::ports::ResultsStore),
//! [`Outbox`](iotstream_core::ports::Outbox) and [`CheckpointStore`] over one pool.
//!
//! The tables are those of the embedded engine (`sql/sqlite/results.sql`) in PostgreSQL types
//! (`sql/postgres/NNNN_*.sql`, applied by [`migrate`]); the rules are the same functions of
//! [`crate::semantics`], and the same conformance suites check both engines. Statements live in
//! `sql/queries/` when the embedded engine runs the same text, else in `sql/postgres/queries/`.
//!
//! **Batches.** Multi-row writes are one statement over arrays (`INSERT ... SELECT FROM
//! UNNEST($1, $2, ...)`): one round trip and one plan whatever the batch size. PostgreSQL
//! refuses to update a row twice in one `ON CONFLICT` statement, so each batch is first reduced
//! to one row per key with the same merge rule.
//!
//! **Concurrency.** Several processes (process replicas, the CLI) share the database. Read-modify
//! -write paths (alert transitions, acks) lock the rows' ids with transaction-scoped advisory
//! locks taken in sorted order, so concurrent writers serialise per alert without deadlocks,
//! even for alerts that do not exist yet.

mod insights;
mod migrate;
mod outbox;
mod store;

use async_trait::async_trait;
use iotstream_core::ports::{
    Checkpoint, CheckpointStore, DeviceRecord, DeviceRegistry, PortResult, Position,
};
use iotstream_core::{DeviceId, PortError, Ts};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use std::str::FromStr;
use std::time::Duration;

pub use migrate::migrate;

/// The PostgreSQL results database. Cheap to clone.
#[derive(Clone, Debug)]
pub struct PgResults {
    pool: PgPool,
}

impl PgResults {
    /// Connects to `url` (`postgres://user:password@host:port/db?sslmode=require`) and applies
    /// pending migrations. The password is never logged (errors name only host and database).
    /// A request that finds the database down or saturated fails within 5 s (a 503), not hangs.
    pub async fn connect(url: &str) -> PortResult<Self> {
        Self::connect_waiting(url, Duration::from_secs(5)).await
    }

    /// [`PgResults::connect`] for a one-shot command (`iotstream devices ...`): it waits up to
    /// `acquire` for a connection, as a person running it would rather wait out a busy database
    /// (every backend forks a process, which takes seconds on a loaded machine) than retry.
    pub async fn connect_waiting(url: &str, acquire: Duration) -> PortResult<Self> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| {
                PortError::config(format!(
                    "database URL is not a PostgreSQL URL: {}",
                    redact(&e.to_string())
                ))
            })?
            .application_name("iotstream");
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .min_connections(0)
            .acquire_timeout(acquire)
            .idle_timeout(Some(Duration::from_secs(300)))
            .connect_lazy_with(options);
        let results = PgResults { pool };
        migrate(&results.pool).await?;
        Ok(results)
    }

    /// The pool, for tests and tools.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Retention: deletes aggregates whose window started, resolved alerts opened, forecasts
    /// made, late readings that arrived (the device's clock then), and delivered or
    /// dead-lettered webhook rows finished before `cutoff` (like the embedded engine's prune).
    pub async fn prune(&self, cutoff: Ts) -> PortResult<u64> {
        let mut n = 0;
        for sql in [
            sql!("queries/prune_window_aggregates.sql"),
            sql!("queries/prune_alerts.sql"),
            sql!("queries/prune_outbox.sql"),
            sql!("queries/prune_forecasts.sql"),
            sql!("queries/prune_late_readings.sql"),
        ] {
            n += sqlx::query(sql)
                .bind(cutoff.millis())
                .execute(&self.pool)
                .await
                .map_err(pg_err)?
                .rows_affected();
        }
        Ok(n)
    }
}

/// Maps a PostgreSQL error by SQLSTATE class: connection problems (08), serialisation failures
/// and deadlocks (40), lack of resources (53), shutdowns (57) and lock timeouts (55P03) are
/// retryable; anything else is a bug or bad data.
pub(crate) fn pg_err(e: sqlx::Error) -> PortError {
    use sqlx::Error as E;
    match &e {
        E::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            let retryable = matches!(code.get(..2), Some("08" | "40" | "53" | "57")) || code == "55P03";
            if retryable {
                PortError::unavailable(format!("postgres unavailable ({code}): {}", db.message()))
            } else {
                PortError::internal(format!("postgres error ({code}): {}", db.message()))
            }
        }
        E::Io(_) | E::PoolTimedOut | E::PoolClosed | E::WorkerCrashed | E::Tls(_) | E::Protocol(_) => {
            PortError::unavailable(format!("postgres unavailable: {}", redact(&e.to_string())))
        }
        _ => PortError::internal(format!("postgres error: {}", redact(&e.to_string()))),
    }
}

/// Removes anything that looks like a URL's password from an error text.
fn redact(text: &str) -> String {
    let Some(scheme) = text.find("://") else {
        return text.to_owned();
    };
    let rest = &text[scheme + 3..];
    match (rest.find('@'), rest.find(':')) {
        (Some(at), Some(colon)) if colon < at => {
            format!("{}{}:***{}", &text[..scheme + 3], &rest[..colon], &rest[at..])
        }
        _ => text.to_owned(),
    }
}

fn decode_err(what: &str, e: impl std::fmt::Display) -> PortError {
    PortError::internal(format!("cannot decode stored {what}: {e}"))
}

fn device_record(device_id: &str, generation: i32, created_at: i64) -> PortResult<DeviceRecord> {
    Ok(DeviceRecord {
        device_id: DeviceId::parse(device_id).map_err(|e| decode_err("device id", e))?,
        generation: u32::try_from(generation).map_err(|e| decode_err("device generation", e))?,
        created_at: Ts(created_at),
    })
}

/// Devices start at generation 1; re-adding a removed device takes the next generation. One
/// statement each, so concurrent adds of the same id cannot both succeed.
#[async_trait]
impl DeviceRegistry for PgResults {
    async fn add_device(&self, device: &DeviceId, now: Ts) -> PortResult<Option<DeviceRecord>> {
        let row: Option<(i32,)> = sqlx::query_as(sql!("postgres/queries/device_add.sql"))
            .bind(device.as_str())
            .bind(now.millis())
            .fetch_optional(&self.pool)
            .await
            .map_err(pg_err)?;
        row.map(|(g,)| device_record(device.as_str(), g, now.millis()))
            .transpose()
    }

    async fn get_device(&self, device: &DeviceId) -> PortResult<Option<DeviceRecord>> {
        let row: Option<(String, i32, i64)> = sqlx::query_as(sql!("queries/device_get.sql"))
            .bind(device.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(pg_err)?;
        row.map(|(d, g, c)| device_record(&d, g, c)).transpose()
    }

    async fn list_devices(&self) -> PortResult<Vec<DeviceRecord>> {
        let rows: Vec<(String, i32, i64)> = sqlx::query_as(sql!("queries/device_list.sql"))
            .fetch_all(&self.pool)
            .await
            .map_err(pg_err)?;
        rows.iter().map(|(d, g, c)| device_record(d, *g, *c)).collect()
    }

    async fn remove_device(&self, device: &DeviceId) -> PortResult<bool> {
        let done = sqlx::query(sql!("queries/device_remove.sql"))
            .bind(device.as_str())
            .execute(&self.pool)
            .await
            .map_err(pg_err)?;
        Ok(done.rows_affected() > 0)
    }
}

#[async_trait]
impl CheckpointStore for PgResults {
    async fn load_checkpoint(&self, name: &str) -> PortResult<Option<Checkpoint>> {
        let row: Option<(String, Vec<u8>)> = sqlx::query_as(sql!("queries/checkpoint_load.sql"))
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(pg_err)?;
        row.map(|(positions, state)| {
            let positions: Vec<Position> =
                serde_json::from_str(&positions).map_err(|e| decode_err("checkpoint positions", e))?;
            Ok(Checkpoint { positions, state })
        })
        .transpose()
    }

    async fn save_checkpoint(&self, name: &str, checkpoint: &Checkpoint) -> PortResult<()> {
        let positions = serde_json::to_string(&checkpoint.positions)
            .map_err(|e| PortError::invalid(format!("cannot encode checkpoint positions: {e}")))?;
        sqlx::query(sql!("queries/checkpoint_save.sql"))
            .bind(name)
            .bind(positions)
            .bind(checkpoint.state.as_slice())
            .execute(&self.pool)
            .await
            .map_err(pg_err)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_are_redacted_from_error_texts() {
        assert_eq!(
            redact("cannot connect to postgres://app:s3cret@db:5432/x"),
            "cannot connect to postgres://app:***@db:5432/x"
        );
        assert_eq!(redact("no url here"), "no url here");
        assert_eq!(redact("postgres://db:5432/x"), "postgres://db:5432/x");
    }
}
