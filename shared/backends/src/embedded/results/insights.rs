//! Forecasts and late readings of [`EmbeddedResults`]: inserted once per key (a redelivered or
//! replayed insight is ignored), listed newest first. The listing statements are shared with
//! PostgreSQL (`sql/queries/`); the inserts are multi-row `VALUES` lists built per batch size.

use super::EmbeddedResults;
use crate::error::{db_err, decode_err, encode_err};
use crate::sqlite::{BEGIN_WRITE, chunks, multi_row};
use iotstream_core::ports::PortResult;
use iotstream_core::{DeviceId, Forecast, LateReading, Ts};
use serde::de::DeserializeOwned;

fn encode_all<T: serde::Serialize>(what: &str, items: &[T]) -> PortResult<Vec<String>> {
    items
        .iter()
        .map(|i| serde_json::to_string(i).map_err(|e| encode_err(what, e)))
        .collect()
}

fn limit_of(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

impl EmbeddedResults {
    pub(super) async fn insert_forecasts_in(&self, forecasts: &[Forecast]) -> PortResult<()> {
        if forecasts.is_empty() {
            return Ok(());
        }
        let bodies = encode_all("forecast", forecasts)?;
        let mut tx = self.db.write.begin_with(BEGIN_WRITE).await.map_err(db_err)?;
        let mut start = 0;
        for chunk in chunks(forecasts) {
            let sql = multi_row(
                "INSERT INTO forecasts (device_id, at, rule, body) VALUES ",
                "(?,?,?,?)",
                chunk.len(),
                " ON CONFLICT DO NOTHING",
            );
            let mut q = sqlx::query(&sql);
            for (f, body) in chunk.iter().zip(&bodies[start..]) {
                q = q
                    .bind(f.device_id.as_str())
                    .bind(f.at.millis())
                    .bind(f.rule.as_str())
                    .bind(body.as_str());
            }
            q.execute(&mut *tx).await.map_err(db_err)?;
            start += chunk.len();
        }
        tx.commit().await.map_err(db_err)
    }

    pub(super) async fn insert_late_readings_in(&self, late: &[LateReading]) -> PortResult<()> {
        if late.is_empty() {
            return Ok(());
        }
        let bodies = encode_all("late reading", late)?;
        let mut tx = self.db.write.begin_with(BEGIN_WRITE).await.map_err(db_err)?;
        let mut start = 0;
        for chunk in chunks(late) {
            let sql = multi_row(
                "INSERT INTO late_readings (device_id, reading_id, ts, watermark, body) VALUES ",
                "(?,?,?,?,?)",
                chunk.len(),
                " ON CONFLICT DO NOTHING",
            );
            let mut q = sqlx::query(&sql);
            for (l, body) in chunk.iter().zip(&bodies[start..]) {
                q = q
                    .bind(l.device_id.as_str())
                    .bind(l.reading_id.as_str())
                    .bind(l.ts.millis())
                    .bind(l.watermark.millis())
                    .bind(body.as_str());
            }
            q.execute(&mut *tx).await.map_err(db_err)?;
            start += chunk.len();
        }
        tx.commit().await.map_err(db_err)
    }

    /// Runs one of a pair of listing statements (one device, or all) and decodes the bodies.
    async fn list<T: DeserializeOwned>(
        &self,
        what: &str,
        (of_device, all): (&str, &str),
        device: Option<&DeviceId>,
        (from, to): (Ts, Ts),
        limit: usize,
    ) -> PortResult<Vec<T>> {
        let q = match device {
            Some(d) => sqlx::query_scalar::<_, String>(of_device).bind(d.as_str()),
            None => sqlx::query_scalar::<_, String>(all),
        };
        let bodies = q
            .bind(from.millis())
            .bind(to.millis())
            .bind(limit_of(limit))
            .fetch_all(&self.db.read)
            .await
            .map_err(db_err)?;
        bodies
            .iter()
            .map(|b| serde_json::from_str(b).map_err(|e| decode_err(what, e)))
            .collect()
    }

    pub(super) async fn forecasts_in(
        &self,
        device: Option<&DeviceId>,
        from: Ts,
        to: Ts,
        limit: usize,
    ) -> PortResult<Vec<Forecast>> {
        let statements = (
            sql!("queries/forecasts_of_device.sql"),
            sql!("queries/forecasts_all.sql"),
        );
        self.list("forecast", statements, device, (from, to), limit).await
    }

    pub(super) async fn late_readings_in(
        &self,
        device: Option<&DeviceId>,
        from: Ts,
        to: Ts,
        limit: usize,
    ) -> PortResult<Vec<LateReading>> {
        let statements = (
            sql!("queries/late_readings_of_device.sql"),
            sql!("queries/late_readings_all.sql"),
        );
        self.list("late reading", statements, device, (from, to), limit)
            .await
    }
}
