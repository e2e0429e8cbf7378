//! Forecasts and late readings of [`PgResults`]: inserted once per key with one statement over
//! arrays (`ON CONFLICT DO NOTHING` also absorbs repeats within a batch), listed newest first
//! with the statements the embedded engine runs (`sql/queries/`).

use super::{PgResults, decode_err, pg_err};
use iotstream_core::ports::PortResult;
use iotstream_core::{DeviceId, Forecast, LateReading, PortError, Ts};
use serde::de::DeserializeOwned;

fn encode_all<T: serde::Serialize>(what: &str, items: &[T]) -> PortResult<Vec<String>> {
    items
        .iter()
        .map(|i| {
            serde_json::to_string(i).map_err(|e| PortError::invalid(format!("cannot encode {what}: {e}")))
        })
        .collect()
}

fn limit_of(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

impl PgResults {
    pub(super) async fn insert_forecasts_in(&self, forecasts: &[Forecast]) -> PortResult<()> {
        if forecasts.is_empty() {
            return Ok(());
        }
        let bodies = encode_all("forecast", forecasts)?;
        let devices: Vec<&str> = forecasts.iter().map(|f| f.device_id.as_str()).collect();
        let ats: Vec<i64> = forecasts.iter().map(|f| f.at.millis()).collect();
        let rules: Vec<&str> = forecasts.iter().map(|f| f.rule.as_str()).collect();
        sqlx::query(sql!("postgres/queries/forecasts_insert.sql"))
            .bind(&devices)
            .bind(&ats)
            .bind(&rules)
            .bind(&bodies)
            .execute(&self.pool)
            .await
            .map_err(pg_err)?;
        Ok(())
    }

    pub(super) async fn insert_late_readings_in(&self, late: &[LateReading]) -> PortResult<()> {
        if late.is_empty() {
            return Ok(());
        }
        let bodies = encode_all("late reading", late)?;
        let devices: Vec<&str> = late.iter().map(|l| l.device_id.as_str()).collect();
        let ids: Vec<&str> = late.iter().map(|l| l.reading_id.as_str()).collect();
        let ts: Vec<i64> = late.iter().map(|l| l.ts.millis()).collect();
        let watermarks: Vec<i64> = late.iter().map(|l| l.watermark.millis()).collect();
        sqlx::query(sql!("postgres/queries/late_readings_insert.sql"))
            .bind(&devices)
            .bind(&ids)
            .bind(&ts)
            .bind(&watermarks)
            .bind(&bodies)
            .execute(&self.pool)
            .await
            .map_err(pg_err)?;
        Ok(())
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
            .fetch_all(&self.pool)
            .await
            .map_err(pg_err)?;
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
