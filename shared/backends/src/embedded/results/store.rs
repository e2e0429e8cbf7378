//! [`ResultsStore`] of [`EmbeddedResults`]: aggregates, latest state, alerts (forecasts and
//! late readings in `insights.rs`).

use super::EmbeddedResults;
use super::outbox::enqueue_in;
use crate::error::{db_err, decode_err, encode_err};
use crate::semantics::{AggregateRow, apply_alert_events, rebucket};
use crate::sqlite::{BEGIN_WRITE, chunks, multi_row, to_u64};
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

fn decode_latest(device_id: String, last_seen: i64, metrics: &str) -> PortResult<LatestState> {
    Ok(LatestState {
        device_id: DeviceId::parse(&device_id).map_err(|e| decode_err("device id", e))?,
        last_seen: Ts(last_seen),
        metrics: serde_json::from_str::<BTreeMap<String, f64>>(metrics)
            .map_err(|e| decode_err("latest metrics", e))?,
    })
}

/// Writes alerts (insert or replace) on an open transaction.
async fn write_alerts(conn: &mut sqlx::SqliteConnection, alerts: &[&Alert]) -> PortResult<()> {
    let bodies: Vec<String> = alerts
        .iter()
        .map(|a| serde_json::to_string(a).map_err(|e| encode_err("alert", e)))
        .collect::<PortResult<_>>()?;
    let mut start = 0;
    for chunk in chunks(alerts) {
        let sql = multi_row(
            "INSERT INTO alerts (id, device_id, state, opened_at, body) VALUES ",
            "(?,?,?,?,?)",
            chunk.len(),
            " ON CONFLICT (id) DO UPDATE SET device_id = excluded.device_id, state = excluded.state, \
             opened_at = excluded.opened_at, body = excluded.body",
        );
        let mut q = sqlx::query(&sql);
        for (a, body) in chunk.iter().zip(&bodies[start..]) {
            q = q
                .bind(a.id.as_str())
                .bind(a.device_id.as_str())
                .bind(a.state.as_str())
                .bind(a.opened_at.millis())
                .bind(body.as_str());
        }
        q.execute(&mut *conn).await.map_err(db_err)?;
        start += chunk.len();
    }
    Ok(())
}

#[async_trait]
impl ResultsStore for EmbeddedResults {
    async fn upsert_aggregates(&self, aggregates: &[Aggregate]) -> PortResult<()> {
        if aggregates.is_empty() {
            return Ok(());
        }
        let mut tx = self.db.write.begin_with(BEGIN_WRITE).await.map_err(db_err)?;
        for chunk in chunks(aggregates) {
            let sql = multi_row(
                "INSERT INTO window_aggregates (device_id, metric, window_ms, window_start, hop_ms, count, \
                 min, max, sum, stddev, p50, p95, p99) VALUES ",
                "(?,?,?,?,?,?,?,?,?,?,?,?,?)",
                chunk.len(),
                " ON CONFLICT (device_id, metric, window_ms, window_start) DO UPDATE SET \
                 hop_ms = excluded.hop_ms, count = excluded.count, min = excluded.min, max = excluded.max, \
                 sum = excluded.sum, stddev = excluded.stddev, p50 = excluded.p50, p95 = excluded.p95, \
                 p99 = excluded.p99 WHERE excluded.count >= window_aggregates.count",
            );
            let mut q = sqlx::query(&sql);
            for a in chunk {
                q = q
                    .bind(a.device_id.as_str())
                    .bind(a.metric.as_str())
                    .bind(a.window_ms)
                    .bind(a.window_start.millis())
                    .bind(if a.hop_ms > 0 { a.hop_ms } else { a.window_ms })
                    .bind(i64::try_from(a.count).unwrap_or(i64::MAX))
                    .bind(a.min)
                    .bind(a.max)
                    .bind(a.sum)
                    .bind(a.stddev)
                    .bind(a.p50)
                    .bind(a.p95)
                    .bind(a.p99);
            }
            q.execute(&mut *tx).await.map_err(db_err)?;
        }
        tx.commit().await.map_err(db_err)
    }

    async fn upsert_latest(&self, states: &[LatestState]) -> PortResult<()> {
        if states.is_empty() {
            return Ok(());
        }
        let metrics: Vec<String> = states
            .iter()
            .map(|s| serde_json::to_string(&s.metrics).map_err(|e| encode_err("latest metrics", e)))
            .collect::<PortResult<_>>()?;
        let mut tx = self.db.write.begin_with(BEGIN_WRITE).await.map_err(db_err)?;
        let mut start = 0;
        // The merge rule of `semantics::merge_latest`, in SQL: json_patch(older, newer). Rows of
        // one statement are applied in order, so repeats of a device within a batch merge too.
        for chunk in chunks(states) {
            let sql = multi_row(
                "INSERT INTO latest (device_id, last_seen, metrics) VALUES ",
                "(?,?,?)",
                chunk.len(),
                " ON CONFLICT (device_id) DO UPDATE SET \
                 metrics = CASE WHEN excluded.last_seen >= last_seen THEN json_patch(metrics, excluded.metrics) \
                                ELSE json_patch(excluded.metrics, metrics) END, \
                 last_seen = MAX(last_seen, excluded.last_seen)",
            );
            let mut q = sqlx::query(&sql);
            for (s, m) in chunk.iter().zip(&metrics[start..]) {
                q = q
                    .bind(s.device_id.as_str())
                    .bind(s.last_seen.millis())
                    .bind(m.as_str());
            }
            q.execute(&mut *tx).await.map_err(db_err)?;
            start += chunk.len();
        }
        tx.commit().await.map_err(db_err)
    }

    async fn apply_alert_events(&self, events: &[AlertEvent]) -> PortResult<()> {
        if events.is_empty() {
            return Ok(());
        }
        let mut tx = self.db.write.begin_with(BEGIN_WRITE).await.map_err(db_err)?;
        let mut ids: Vec<&str> = events.iter().map(|e| e.alert.id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut current: HashMap<String, Alert> = HashMap::new();
        for chunk in chunks(&ids) {
            let sql = multi_row("SELECT body FROM alerts WHERE id IN (", "?", chunk.len(), ")");
            let mut q = sqlx::query_scalar::<_, String>(&sql);
            for id in chunk {
                q = q.bind(*id);
            }
            for body in q.fetch_all(&mut *tx).await.map_err(db_err)? {
                let alert = decode_alert(&body)?;
                current.insert(alert.id.clone(), alert);
            }
        }
        let changed = apply_alert_events(&mut current, events);
        let to_write: Vec<&Alert> = changed.iter().filter_map(|id| current.get(id)).collect();
        write_alerts(&mut tx, &to_write).await?;
        tx.commit().await.map_err(db_err)
    }

    async fn latest(&self, device: &DeviceId) -> PortResult<Option<LatestState>> {
        let row: Option<(String, i64, String)> = sqlx::query_as(sql!("queries/latest_get.sql"))
            .bind(device.as_str())
            .fetch_optional(&self.db.read)
            .await
            .map_err(db_err)?;
        row.map(|(d, t, m)| decode_latest(d, t, &m)).transpose()
    }

    async fn all_latest(&self) -> PortResult<Vec<LatestState>> {
        let rows: Vec<(String, i64, String)> = sqlx::query_as(sql!("queries/latest_all.sql"))
            .fetch_all(&self.db.read)
            .await
            .map_err(db_err)?;
        rows.into_iter()
            .map(|(d, t, m)| decode_latest(d, t, &m))
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
            .fetch_all(&self.db.read)
            .await
            .map_err(db_err)?;
        let rows = rows.into_iter().map(|(ws, count, min, max, sum)| AggregateRow {
            window_start: Ts(ws),
            count: to_u64(count),
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
        let filter = match (state, device) {
            (None, None) => "",
            (Some(_), None) => "WHERE state = ?",
            (None, Some(_)) => "WHERE device_id = ?",
            (Some(_), Some(_)) => "WHERE state = ? AND device_id = ?",
        };
        let sql = format!("SELECT body FROM alerts {filter} ORDER BY opened_at DESC, id DESC LIMIT ?");
        let mut q = sqlx::query_scalar::<_, String>(&sql);
        if let Some(s) = state {
            q = q.bind(s.as_str());
        }
        if let Some(d) = device {
            q = q.bind(d.as_str());
        }
        let bodies = q
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.db.read)
            .await
            .map_err(db_err)?;
        bodies.iter().map(|b| decode_alert(b)).collect()
    }

    async fn alert(&self, id: &str) -> PortResult<Option<Alert>> {
        let body: Option<String> = sqlx::query_scalar(sql!("queries/alert_get.sql"))
            .bind(id)
            .fetch_optional(&self.db.read)
            .await
            .map_err(db_err)?;
        body.map(|b| decode_alert(&b)).transpose()
    }

    async fn ack_alert(&self, id: &str, now: Ts) -> PortResult<AckOutcome> {
        let mut tx = self.db.write.begin_with(BEGIN_WRITE).await.map_err(db_err)?;
        let body: Option<String> = sqlx::query_scalar(sql!("queries/alert_get.sql"))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?;
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
        tx.commit().await.map_err(db_err)?;
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
