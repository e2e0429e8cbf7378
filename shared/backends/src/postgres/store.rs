//! [`ResultsStore`] of [`PgResults`]: aggregates, latest state, alerts (forecasts and late
//! readings in `insights.rs`).

use super::outbox::enqueue_in;
use super::{PgResults, decode_err, pg_err};
use crate::semantics::{AggregateRow, apply_alert_events, merge_latest, rebucket};
use async_trait::async_trait;
use iotstream_core::ports::{AckOutcome, PortResult, ResultsStore, SeriesPoint};
use iotstream_core::{
    Aggregate, Alert, AlertEvent, AlertEventKind, AlertState, DeviceId, Forecast, LateReading, LatestState,
    PortError, Ts,
};
use std::collections::{BTreeMap, HashMap};

fn decode_alert(body: &str) -> PortResult<Alert> {
    serde_json::from_str(body).map_err(|e| decode_err("alert", e))
}

fn encode<T: serde::Serialize>(what: &str, v: &T) -> PortResult<String> {
    serde_json::to_string(v).map_err(|e| PortError::invalid(format!("cannot encode {what}: {e}")))
}

fn decode_latest(device_id: &str, last_seen: i64, metrics: &str) -> PortResult<LatestState> {
    Ok(LatestState {
        device_id: DeviceId::parse(device_id).map_err(|e| decode_err("device id", e))?,
        last_seen: Ts(last_seen),
        metrics: serde_json::from_str::<BTreeMap<String, f64>>(metrics)
            .map_err(|e| decode_err("latest metrics", e))?,
    })
}

/// Takes transaction-scoped advisory locks on `ids`, in sorted order (no deadlocks between
/// writers locking overlapping sets).
async fn lock_ids(conn: &mut sqlx::PgConnection, ids: &[&str]) -> PortResult<()> {
    sqlx::query(sql!("postgres/queries/lock_ids.sql"))
        .bind(ids)
        .execute(&mut *conn)
        .await
        .map_err(pg_err)?;
    Ok(())
}

/// Writes alerts (insert or replace) on an open transaction, in one statement.
async fn write_alerts(conn: &mut sqlx::PgConnection, alerts: &[&Alert]) -> PortResult<()> {
    if alerts.is_empty() {
        return Ok(());
    }
    let bodies: Vec<String> = alerts
        .iter()
        .map(|a| encode("alert", a))
        .collect::<PortResult<_>>()?;
    let ids: Vec<&str> = alerts.iter().map(|a| a.id.as_str()).collect();
    let devices: Vec<&str> = alerts.iter().map(|a| a.device_id.as_str()).collect();
    let states: Vec<&str> = alerts.iter().map(|a| a.state.as_str()).collect();
    let opened: Vec<i64> = alerts.iter().map(|a| a.opened_at.millis()).collect();
    sqlx::query(sql!("postgres/queries/alerts_write.sql"))
        .bind(&ids)
        .bind(&devices)
        .bind(&states)
        .bind(&opened)
        .bind(&bodies)
        .execute(&mut *conn)
        .await
        .map_err(pg_err)?;
    Ok(())
}

#[async_trait]
impl ResultsStore for PgResults {
    async fn upsert_aggregates(&self, aggregates: &[Aggregate]) -> PortResult<()> {
        if aggregates.is_empty() {
            return Ok(());
        }
        // One row per window (PostgreSQL updates a row once per statement): within the batch,
        // the emission that supersedes the others, as the statement does with the stored one.
        let mut last: HashMap<(&str, &str, i64, i64), &Aggregate> = HashMap::with_capacity(aggregates.len());
        for a in aggregates {
            let key = (
                a.device_id.as_str(),
                a.metric.as_str(),
                a.window_ms,
                a.window_start.millis(),
            );
            if last.get(&key).is_none_or(|earlier| a.supersedes(earlier)) {
                last.insert(key, a);
            }
        }
        let rows: Vec<&Aggregate> = last.into_values().collect();
        let col = |f: fn(&Aggregate) -> f64| -> Vec<f64> { rows.iter().map(|a| f(a)).collect() };
        let opt =
            |f: fn(&Aggregate) -> Option<f64>| -> Vec<Option<f64>> { rows.iter().map(|a| f(a)).collect() };
        let devices: Vec<&str> = rows.iter().map(|a| a.device_id.as_str()).collect();
        let metrics: Vec<&str> = rows.iter().map(|a| a.metric.as_str()).collect();
        let lens: Vec<i64> = rows.iter().map(|a| a.window_ms).collect();
        let starts: Vec<i64> = rows.iter().map(|a| a.window_start.millis()).collect();
        let hops: Vec<i64> = rows
            .iter()
            .map(|a| if a.hop_ms > 0 { a.hop_ms } else { a.window_ms })
            .collect();
        let counts: Vec<i64> = rows
            .iter()
            .map(|a| i64::try_from(a.count).unwrap_or(i64::MAX))
            .collect();
        sqlx::query(sql!("postgres/queries/aggregates_upsert.sql"))
            .bind(&devices)
            .bind(&metrics)
            .bind(&lens)
            .bind(&starts)
            .bind(&hops)
            .bind(&counts)
            .bind(col(|a| a.min))
            .bind(col(|a| a.max))
            .bind(col(|a| a.sum))
            .bind(col(|a| a.stddev))
            .bind(opt(|a| a.p50))
            .bind(opt(|a| a.p95))
            .bind(opt(|a| a.p99))
            .execute(&self.pool)
            .await
            .map_err(pg_err)?;
        Ok(())
    }

    async fn upsert_latest(&self, states: &[LatestState]) -> PortResult<()> {
        if states.is_empty() {
            return Ok(());
        }
        // The merge of `semantics::merge_latest` in Rust (exact floats), under per-device locks
        // so concurrent writers cannot lose each other's metrics.
        let mut ids: Vec<&str> = states.iter().map(|s| s.device_id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut tx = self.pool.begin().await.map_err(pg_err)?;
        lock_ids(&mut tx, &ids).await?;
        let rows: Vec<(String, i64, String)> = sqlx::query_as(sql!("postgres/queries/latest_by_devices.sql"))
            .bind(&ids)
            .fetch_all(&mut *tx)
            .await
            .map_err(pg_err)?;
        let mut merged: BTreeMap<DeviceId, LatestState> = BTreeMap::new();
        for (d, t, m) in rows {
            let state = decode_latest(&d, t, &m)?;
            merged.insert(state.device_id.clone(), state);
        }
        for s in states {
            let next = merge_latest(merged.get(&s.device_id), s);
            merged.insert(s.device_id.clone(), next);
        }
        let devices: Vec<&str> = merged.keys().map(|d| d.as_str()).collect();
        let seen: Vec<i64> = merged.values().map(|s| s.last_seen.millis()).collect();
        let metrics: Vec<String> = merged
            .values()
            .map(|s| encode("latest metrics", &s.metrics))
            .collect::<PortResult<_>>()?;
        sqlx::query(sql!("postgres/queries/latest_write.sql"))
            .bind(&devices)
            .bind(&seen)
            .bind(&metrics)
            .execute(&mut *tx)
            .await
            .map_err(pg_err)?;
        tx.commit().await.map_err(pg_err)
    }

    async fn apply_alert_events(&self, events: &[AlertEvent]) -> PortResult<()> {
        if events.is_empty() {
            return Ok(());
        }
        let mut ids: Vec<&str> = events.iter().map(|e| e.alert.id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut tx = self.pool.begin().await.map_err(pg_err)?;
        lock_ids(&mut tx, &ids).await?;
        let bodies: Vec<String> = sqlx::query_scalar(sql!("postgres/queries/alerts_by_ids.sql"))
            .bind(&ids)
            .fetch_all(&mut *tx)
            .await
            .map_err(pg_err)?;
        let mut current: HashMap<String, Alert> = HashMap::with_capacity(bodies.len());
        for body in bodies {
            let alert = decode_alert(&body)?;
            current.insert(alert.id.clone(), alert);
        }
        let changed = apply_alert_events(&mut current, events);
        let to_write: Vec<&Alert> = changed.iter().filter_map(|id| current.get(id)).collect();
        write_alerts(&mut tx, &to_write).await?;
        tx.commit().await.map_err(pg_err)
    }

    async fn latest(&self, device: &DeviceId) -> PortResult<Option<LatestState>> {
        let row: Option<(String, i64, String)> = sqlx::query_as(sql!("queries/latest_get.sql"))
            .bind(device.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(pg_err)?;
        row.map(|(d, t, m)| decode_latest(&d, t, &m)).transpose()
    }

    async fn all_latest(&self) -> PortResult<Vec<LatestState>> {
        let rows: Vec<(String, i64, String)> = sqlx::query_as(sql!("queries/latest_all.sql"))
            .fetch_all(&self.pool)
            .await
            .map_err(pg_err)?;
        rows.into_iter()
            .map(|(d, t, m)| decode_latest(&d, t, &m))
            .collect()
    }

    async fn series(
        &self,
        device: &DeviceId,
        metric: &str,
        from: Ts,
        to: Ts,
        step_ms: i64,
    ) -> PortResult<Vec<SeriesPoint>> {
        if step_ms <= 0 {
            return Err(PortError::invalid(format!(
                "series step must be positive, got {step_ms} ms"
            )));
        }
        let rows: Vec<(i64, i64, f64, f64, f64)> = sqlx::query_as(sql!("queries/series.sql"))
            .bind(device.as_str())
            .bind(metric)
            .bind(from.millis())
            .bind(to.millis())
            .fetch_all(&self.pool)
            .await
            .map_err(pg_err)?;
        let rows = rows.into_iter().map(|(ws, count, min, max, sum)| AggregateRow {
            window_start: Ts(ws),
            count: count.max(0) as u64,
            min,
            max,
            sum,
        });
        Ok(rebucket(rows, step_ms))
    }

    async fn alerts(
        &self,
        state: Option<AlertState>,
        device: Option<&DeviceId>,
        limit: usize,
    ) -> PortResult<Vec<Alert>> {
        let bodies: Vec<String> = sqlx::query_scalar(sql!("postgres/queries/alerts_list.sql"))
            .bind(state.map(|s| s.as_str()))
            .bind(device.map(|d| d.as_str()))
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await
            .map_err(pg_err)?;
        bodies.iter().map(|b| decode_alert(b)).collect()
    }

    async fn alert(&self, id: &str) -> PortResult<Option<Alert>> {
        let body: Option<String> = sqlx::query_scalar(sql!("queries/alert_get.sql"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(pg_err)?;
        body.map(|b| decode_alert(&b)).transpose()
    }

    async fn ack_alert(&self, id: &str, now: Ts) -> PortResult<AckOutcome> {
        let mut tx = self.pool.begin().await.map_err(pg_err)?;
        lock_ids(&mut tx, &[id]).await?;
        let body: Option<String> = sqlx::query_scalar(sql!("queries/alert_get.sql"))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(pg_err)?;
        let Some(body) = body else {
            return Ok(AckOutcome::NotFound);
        };
        let mut alert = decode_alert(&body)?;
        if alert.state != AlertState::Active {
            return Ok(AckOutcome::Unchanged(alert));
        }
        alert.state = AlertState::Acknowledged;
        alert.acknowledged_at = Some(now);
        write_alerts(&mut tx, &[&alert]).await?;
        let event = AlertEvent::new(AlertEventKind::Acknowledged, alert.clone());
        enqueue_in(&mut tx, std::slice::from_ref(&event), now).await?;
        tx.commit().await.map_err(pg_err)?;
        Ok(AckOutcome::Acknowledged(alert))
    }

    async fn insert_forecasts(&self, forecasts: &[Forecast]) -> PortResult<()> {
        self.insert_forecasts_in(forecasts).await
    }

    async fn insert_late_readings(&self, late: &[LateReading]) -> PortResult<()> {
        self.insert_late_readings_in(late).await
    }

    async fn forecasts(
        &self,
        device: Option<&DeviceId>,
        from: Ts,
        to: Ts,
        limit: usize,
    ) -> PortResult<Vec<Forecast>> {
        self.forecasts_in(device, from, to, limit).await
    }

    async fn late_readings(
        &self,
        device: Option<&DeviceId>,
        from: Ts,
        to: Ts,
        limit: usize,
    ) -> PortResult<Vec<LateReading>> {
        self.late_readings_in(device, from, to, limit).await
    }
}
