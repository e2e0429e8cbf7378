//! `EmbeddedTelemetryStore`: raw readings in one SQLite file (`<data_dir>/telemetry.db`).
//!
//! **Mapping to Cosmos DB.** The table is keyed by (`device_id`, `id`) like the `telemetry`
//! container (partition key `/deviceId`, item id = reading id), and `put` is a create-if-absent,
//! so re-sent readings are absorbed (a unique index on (`device_id`, `id`)). Rows are clustered
//! by (`device_id`, `ts`, `id`), so `range` is one index scan, like a single-partition query
//! ordered by `ts`.
//!
//! **Durability.** A `put` call is one transaction (WAL, `synchronous=FULL`): on `Ok` every
//! reading survives kill -9 and power loss; on `Err` none was stored.
//!
//! **Throughput.** Batches are written with multi-row `INSERT OR IGNORE` statements (256 rows
//! each), sorted by key, in one transaction with one fsync; when the inserted count equals the
//! batch size (the usual case) every reading was new, otherwise the batch is re-run with
//! `RETURNING` to find which. Hex ids are stored as 16-byte BLOBs. Measured in release on a
//! 2-core machine with 10,000-reading batches: about 150,000 readings/s
//! (`tests/throughput.rs`).
//!
//! **Limits.** One writer at a time (SQLite); inserts into the id index are random, so they slow
//! down as it outgrows the page cache; readings are kept forever (no TTL yet).

use crate::error::{db_err, decode_err, encode_err};
use crate::sqlite::{BEGIN_WRITE, Db, chunks, multi_row};
use async_trait::async_trait;
use iotstream_core::ports::{PortResult, TelemetryStore};
use iotstream_core::{DeviceId, Reading, Ts};
use std::collections::{HashMap, HashSet};
use std::path::Path;

/// Reading ids are normally 32 lowercase hex characters (a SHA-256 prefix): those are stored as
/// 16-byte BLOBs, which shrinks the idempotency index and speeds up inserts by about a fifth.
/// Any other id is stored as TEXT (SQLite never considers a BLOB equal to a TEXT).
fn compact_id(id: &str) -> Option<[u8; 16]> {
    let hex = id.as_bytes();
    if hex.len() != 32 {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; 16];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = (nibble(hex[2 * i])? << 4) | nibble(hex[2 * i + 1])?;
    }
    Some(out)
}

/// The SQL expression giving a stored id back as text (see [`compact_id`]).
macro_rules! id_text {
    () => {
        "CASE WHEN typeof(id) = 'blob' THEN lower(hex(id)) ELSE id END"
    };
}

/// (device id, reading id) pairs, looked up by `&str` without allocating.
#[derive(Default)]
struct KeySet(HashMap<String, HashSet<String>>);

impl KeySet {
    fn extend(&mut self, rows: Vec<(String, String)>) {
        for (device, id) in rows {
            self.0.entry(device).or_default().insert(id);
        }
    }

    fn contains(&self, device: &str, id: &str) -> bool {
        self.0.get(device).is_some_and(|ids| ids.contains(id))
    }

    /// True once per pair: removes it.
    fn take(&mut self, device: &str, id: &str) -> bool {
        self.0.get_mut(device).is_some_and(|ids| ids.remove(id))
    }
}

const SCHEMA: &str = include_str!("../../sql/sqlite/telemetry.sql");

/// The embedded telemetry store. Cheap to clone.
#[derive(Clone, Debug)]
pub struct EmbeddedTelemetryStore {
    db: Db,
}

impl EmbeddedTelemetryStore {
    /// Opens (creating if missing) `<data_dir>/telemetry.db`.
    pub async fn open(data_dir: &Path) -> PortResult<Self> {
        Ok(EmbeddedTelemetryStore {
            db: Db::open(&data_dir.join("telemetry.db"), SCHEMA, 4).await?,
        })
    }
}

/// Every reading's metrics as JSON, in one buffer (one allocation per batch, not per reading).
struct MetricsJson {
    text: String,
    ends: Vec<usize>,
}

impl MetricsJson {
    fn encode(readings: &[&Reading]) -> PortResult<Self> {
        let mut buf = Vec::with_capacity(readings.len() * 48);
        let mut ends = Vec::with_capacity(readings.len());
        for r in readings {
            serde_json::to_writer(&mut buf, &r.metrics).map_err(|e| encode_err("metrics", e))?;
            ends.push(buf.len());
        }
        let text = String::from_utf8(buf).map_err(|e| encode_err("metrics", e))?;
        Ok(MetricsJson { text, ends })
    }

    fn get(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.text[start..self.ends[i]]
    }
}

/// Inserts the readings that are absent, on an open transaction. With `inserted`, collects the
/// keys of the inserted rows (`RETURNING`); returns how many rows were inserted.
async fn insert(
    conn: &mut sqlx::SqliteConnection,
    readings: &[&Reading],
    metrics: &MetricsJson,
    mut inserted: Option<&mut KeySet>,
) -> PortResult<u64> {
    let mut count = 0;
    let mut start = 0;
    for chunk in chunks(readings) {
        let returning = if inserted.is_some() {
            concat!(" RETURNING device_id, ", id_text!())
        } else {
            ""
        };
        let sql = multi_row(
            "INSERT OR IGNORE INTO readings (device_id, id, ts, metrics, message_id) VALUES ",
            "(?,?,?,?,?)",
            chunk.len(),
            returning,
        );
        let ids: Vec<Option<[u8; 16]>> = chunk.iter().map(|r| compact_id(&r.id)).collect();
        let mut q = sqlx::query_as::<_, (String, String)>(&sql);
        for (i, r) in chunk.iter().enumerate() {
            q = q.bind(r.device_id.as_str());
            q = match &ids[i] {
                Some(bytes) => q.bind(bytes.as_slice()),
                None => q.bind(r.id.as_str()),
            };
            q = q
                .bind(r.ts.millis())
                .bind(metrics.get(start + i))
                .bind(r.message_id.as_deref());
        }
        match inserted.as_deref_mut() {
            Some(keys) => {
                let rows = q.fetch_all(&mut *conn).await.map_err(db_err)?;
                count += rows.len() as u64;
                keys.extend(rows);
            }
            None => {
                let done = sqlx::Executor::execute(&mut *conn, q).await.map_err(db_err)?;
                count += done.rows_affected();
            }
        }
        start += chunk.len();
    }
    Ok(count)
}

#[async_trait]
impl TelemetryStore for EmbeddedTelemetryStore {
    /// Fast path: insert everything and compare the inserted count with the batch size; when
    /// they match, every reading was new. Otherwise roll back and insert again with
    /// `RETURNING` to learn which ones were (re-sent batches pay twice; new ones never do).
    async fn put(&self, readings: &[Reading]) -> PortResult<Vec<bool>> {
        if readings.is_empty() {
            return Ok(Vec::new());
        }
        // Insert in key order (stable, so the first copy of a repeated key is the one stored):
        // the idempotency index is keyed by hash-like ids, and sorted inserts touch each of its
        // pages once per batch instead of jumping around.
        let mut sorted: Vec<&Reading> = readings.iter().collect();
        sorted.sort_by(|a, b| {
            (a.device_id.as_str(), a.id.as_str()).cmp(&(b.device_id.as_str(), b.id.as_str()))
        });
        let metrics = MetricsJson::encode(&sorted)?;
        let mut tx = self.db.write.begin_with(BEGIN_WRITE).await.map_err(db_err)?;
        if insert(&mut tx, &sorted, &metrics, None).await? == readings.len() as u64 {
            tx.commit().await.map_err(db_err)?;
            return Ok(vec![true; readings.len()]);
        }
        tx.rollback().await.map_err(db_err)?;
        let mut inserted = KeySet::default();
        let mut tx = self.db.write.begin_with(BEGIN_WRITE).await.map_err(db_err)?;
        insert(&mut tx, &sorted, &metrics, Some(&mut inserted)).await?;
        tx.commit().await.map_err(db_err)?;
        // RETURNING lists each inserted row once, in no particular order: the first copy of a
        // key in the batch is the new one, later copies are duplicates.
        Ok(readings
            .iter()
            .map(|r| inserted.take(r.device_id.as_str(), &r.id))
            .collect())
    }

    async fn contains(&self, device_ids_and_ids: &[(DeviceId, String)]) -> PortResult<Vec<bool>> {
        let mut found = KeySet::default();
        for chunk in chunks(device_ids_and_ids) {
            let sql = multi_row(
                concat!(
                    "SELECT device_id, ",
                    id_text!(),
                    " FROM readings WHERE (device_id, id) IN (VALUES "
                ),
                "(?,?)",
                chunk.len(),
                ")",
            );
            let ids: Vec<Option<[u8; 16]>> = chunk.iter().map(|(_, id)| compact_id(id)).collect();
            let mut q = sqlx::query_as::<_, (String, String)>(&sql);
            for ((device, id), bytes) in chunk.iter().zip(&ids) {
                q = q.bind(device.as_str());
                q = match bytes {
                    Some(bytes) => q.bind(bytes.as_slice()),
                    None => q.bind(id.as_str()),
                };
            }
            found.extend(q.fetch_all(&self.db.read).await.map_err(db_err)?);
        }
        Ok(device_ids_and_ids
            .iter()
            .map(|(device, id)| found.contains(device.as_str(), id))
            .collect())
    }

    async fn range(&self, device: &DeviceId, from: Ts, to: Ts, limit: usize) -> PortResult<Vec<Reading>> {
        let rows: Vec<(String, i64, String, Option<String>)> = sqlx::query_as(concat!(
            "SELECT ",
            id_text!(),
            ", ts, metrics, message_id FROM readings \
             WHERE device_id = ? AND ts >= ? AND ts < ? ORDER BY ts, id LIMIT ?"
        ))
        .bind(device.as_str())
        .bind(from.millis())
        .bind(to.millis())
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.db.read)
        .await
        .map_err(db_err)?;
        rows.into_iter()
            .map(|(id, ts, metrics, message_id)| {
                let metrics: iotstream_core::Metrics =
                    serde_json::from_str(&metrics).map_err(|e| decode_err("reading metrics", e))?;
                Ok(Reading {
                    id,
                    device_id: device.clone(),
                    ts: Ts(ts),
                    metrics,
                    message_id,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::compact_id;

    #[test]
    fn only_lowercase_32_hex_ids_are_compacted() {
        let id = "0123456789abcdef0123456789abcdef";
        let bytes = compact_id(id).unwrap();
        assert_eq!(bytes[0], 0x01);
        assert_eq!(bytes[15], 0xef);
        assert_eq!(compact_id("0123456789ABCDEF0123456789ABCDEF"), None);
        assert_eq!(compact_id("0123456789abcdef0123456789abcde"), None);
        assert_eq!(compact_id("0123456789abcdef0123456789abcdeg"), None);
        assert_eq!(compact_id("héllo"), None);
    }
}
