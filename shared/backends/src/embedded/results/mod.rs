//! `EmbeddedResults`: the results database in one SQLite file (`<data_dir>/results.db`),
//! implementing [`DeviceRegistry`], [`ResultsStore`](iotstream_core::ports::ResultsStore),
//! [`Outbox`](iotstream_core::ports::Outbox) and [`CheckpointStore`] over one pool.
//!
//! **Mapping to PostgreSQL.** The tables and statements are the ones the PostgreSQL engine runs
//! (`INSERT ... ON CONFLICT`, one transaction per call): statements with the same text live in
//! `sql/queries/` and both engines load them; the multi-row writes are built per batch size here
//! (PostgreSQL binds arrays instead). Keeping the outbox in the same database as the alerts is
//! what lets `ack_alert` change the alert and queue its notification atomically (the
//! transactional-outbox pattern).
//!
//! **Durability.** Every call is one transaction in WAL mode with `synchronous=FULL`: on `Ok`
//! it survives kill -9 and power loss, on `Err` nothing of it was applied. Read-modify-write
//! transactions start with `BEGIN IMMEDIATE`, so several processes may share the file.
//!
//! **Limits.** One writer at a time. Old aggregates, resolved alerts, forecasts, late readings
//! and finished outbox rows stay until [`EmbeddedResults::prune`] (run by retention) deletes them.

mod insights;
mod outbox;
mod store;

use crate::error::{db_err, decode_err, encode_err};
use crate::sqlite::{BEGIN_WRITE, Db};
use async_trait::async_trait;
use iotstream_core::ports::{
    Checkpoint, CheckpointStore, DeviceRecord, DeviceRegistry, PortResult, Position,
};
use iotstream_core::{DeviceId, Ts};
use std::path::Path;

const SCHEMA: &str = sql!("sqlite/results.sql");

/// The embedded results database. Cheap to clone.
#[derive(Clone, Debug)]
pub struct EmbeddedResults {
    db: Db,
}

impl EmbeddedResults {
    /// Opens (creating if missing) `<data_dir>/results.db`.
    pub async fn open(data_dir: &Path) -> PortResult<Self> {
        Ok(EmbeddedResults {
            db: Db::open(&data_dir.join("results.db"), SCHEMA, 4).await?,
        })
    }
}

impl EmbeddedResults {
    /// Retention: deletes aggregates whose window started, resolved alerts opened, forecasts
    /// made, late readings that arrived (the device's clock then), and delivered or
    /// dead-lettered webhook rows finished before `cutoff`. Pending deliveries, open alerts,
    /// latest state, devices and checkpoints are never pruned. Returns the rows deleted.
    pub async fn prune(&self, cutoff: Ts) -> PortResult<u64> {
        let mut tx = self.db.write.begin_with(BEGIN_WRITE).await.map_err(db_err)?;
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
                .execute(&mut *tx)
                .await
                .map_err(db_err)?
                .rows_affected();
        }
        tx.commit().await.map_err(db_err)?;
        Ok(n)
    }
}

fn device_record(device_id: String, generation: i64, created_at: i64) -> PortResult<DeviceRecord> {
    Ok(DeviceRecord {
        device_id: DeviceId::parse(&device_id).map_err(|e| decode_err("device id", e))?,
        generation: u32::try_from(generation).map_err(|e| decode_err("device generation", e))?,
        created_at: Ts(created_at),
    })
}

/// Devices start at generation 1; re-adding a removed device takes the next generation.
#[async_trait]
impl DeviceRegistry for EmbeddedResults {
    async fn add_device(&self, device: &DeviceId, now: Ts) -> PortResult<Option<DeviceRecord>> {
        let mut tx = self.db.write.begin_with(BEGIN_WRITE).await.map_err(db_err)?;
        let existing: Option<(i64, bool)> =
            sqlx::query_as("SELECT generation, removed FROM devices WHERE device_id = ?")
                .bind(device.as_str())
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err)?;
        let generation = match existing {
            Some((_, false)) => return Ok(None),
            Some((g, true)) => g + 1,
            None => 1,
        };
        sqlx::query(
            "INSERT INTO devices (device_id, generation, created_at, removed) VALUES (?, ?, ?, 0) \
             ON CONFLICT (device_id) DO UPDATE SET generation = excluded.generation, \
             created_at = excluded.created_at, removed = 0",
        )
        .bind(device.as_str())
        .bind(generation)
        .bind(now.millis())
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        device_record(device.as_str().to_owned(), generation, now.millis()).map(Some)
    }

    async fn get_device(&self, device: &DeviceId) -> PortResult<Option<DeviceRecord>> {
        let row: Option<(String, i64, i64)> = sqlx::query_as(sql!("queries/device_get.sql"))
            .bind(device.as_str())
            .fetch_optional(&self.db.read)
            .await
            .map_err(db_err)?;
        row.map(|(d, g, c)| device_record(d, g, c)).transpose()
    }

    async fn list_devices(&self) -> PortResult<Vec<DeviceRecord>> {
        let rows: Vec<(String, i64, i64)> = sqlx::query_as(sql!("queries/device_list.sql"))
            .fetch_all(&self.db.read)
            .await
            .map_err(db_err)?;
        rows.into_iter().map(|(d, g, c)| device_record(d, g, c)).collect()
    }

    async fn remove_device(&self, device: &DeviceId) -> PortResult<bool> {
        let done = sqlx::query(sql!("queries/device_remove.sql"))
            .bind(device.as_str())
            .execute(&self.db.write)
            .await
            .map_err(db_err)?;
        Ok(done.rows_affected() > 0)
    }
}

#[async_trait]
impl CheckpointStore for EmbeddedResults {
    async fn load_checkpoint(&self, name: &str) -> PortResult<Option<Checkpoint>> {
        let row: Option<(String, Vec<u8>)> = sqlx::query_as(sql!("queries/checkpoint_load.sql"))
            .bind(name)
            .fetch_optional(&self.db.read)
            .await
            .map_err(db_err)?;
        row.map(|(positions, state)| {
            let positions: Vec<Position> =
                serde_json::from_str(&positions).map_err(|e| decode_err("checkpoint positions", e))?;
            Ok(Checkpoint { positions, state })
        })
        .transpose()
    }

    async fn save_checkpoint(&self, name: &str, checkpoint: &Checkpoint) -> PortResult<()> {
        let positions = serde_json::to_string(&checkpoint.positions)
            .map_err(|e| encode_err("checkpoint positions", e))?;
        sqlx::query(sql!("queries/checkpoint_save.sql"))
            .bind(name)
            .bind(positions)
            .bind(checkpoint.state.as_slice())
            .execute(&self.db.write)
            .await
            .map_err(db_err)?;
        Ok(())
    }
}
