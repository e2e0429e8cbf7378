//! [`Outbox`] of [`EmbeddedResults`]: webhook deliveries with retries and dead letters.
//!
//! Rows are never deleted: `status` is `pending`, `delivered` or `dead`, so an event id that was
//! already delivered or dead-lettered is ignored when enqueued again. `mark_delivered`,
//! `schedule_retry` and `dead_letter` only change pending rows and ignore unknown ids.

use super::EmbeddedResults;
use crate::error::{db_err, decode_err, encode_err};
use crate::semantics;
use crate::sqlite::{BEGIN_WRITE, chunks, multi_row};
use async_trait::async_trait;
use iotstream_core::ports::{DeadLetter, Outbox, PendingDelivery, PortResult, Screened, Settled};
use iotstream_core::{AlertEvent, Ts};
use std::collections::HashMap;

/// Enqueues on an open connection or transaction (shared with `ack_alert`).
pub(super) async fn enqueue_in(
    conn: &mut sqlx::SqliteConnection,
    events: &[AlertEvent],
    now: Ts,
) -> PortResult<usize> {
    let pending = Settled::Pending {
        attempts: 0,
        at: now,
        error: None,
    };
    let rows: Vec<(&AlertEvent, &Settled)> = events.iter().map(|e| (e, &pending)).collect();
    record_in(conn, &rows, now).await
}

/// Inserts rows with their status, in input order; held ids are ignored. Like PostgreSQL's
/// `outbox_record.sql`, a pending row is due no earlier than the pending rows its alert already
/// has (run it in a write transaction, so nothing changes in between).
async fn record_in(
    conn: &mut sqlx::SqliteConnection,
    rows: &[(&AlertEvent, &Settled)],
    now: Ts,
) -> PortResult<usize> {
    let alerts: Vec<&str> = rows.iter().map(|(e, _)| e.alert.id.as_str()).collect();
    let waiting: HashMap<String, i64> = sqlx::query_as(
        "SELECT json_extract(body, '$.alert.id'), max(next_attempt_at) FROM outbox \
         WHERE status = 'pending' AND json_extract(body, '$.alert.id') IN (SELECT value FROM json_each(?)) \
         GROUP BY 1",
    )
    .bind(serde_json::to_string(&alerts).map_err(|e| encode_err("alert ids", e))?)
    .fetch_all(&mut *conn)
    .await
    .map_err(db_err)?
    .into_iter()
    .collect();
    let mut new = 0;
    for chunk in chunks(rows) {
        let sql = multi_row(
            "INSERT OR IGNORE INTO outbox \
             (id, event, body, status, attempts, next_attempt_at, last_error, created_at, finished_at) VALUES ",
            "(?,?,?,?,?,?,?,?,?)",
            chunk.len(),
            "",
        );
        let mut q = sqlx::query(&sql);
        for (e, settled) in chunk {
            let body = serde_json::to_string(e).map_err(|err| encode_err("alert event", err))?;
            let (status, attempts, at, error) = semantics::outbox_row(settled, now);
            let pending = matches!(settled, Settled::Pending { .. });
            let floor = waiting.get(&e.alert.id).filter(|_| pending).copied();
            let at = floor.map_or(at.millis(), |f| at.millis().max(f));
            let finished = (!pending).then_some(now.millis());
            q = q
                .bind(e.id.as_str())
                .bind(e.event.as_str())
                .bind(body)
                .bind(status)
                .bind(i64::from(attempts))
                .bind(at)
                .bind(error.map(str::to_owned))
                .bind(now.millis())
                .bind(finished);
        }
        new += q.execute(&mut *conn).await.map_err(db_err)?.rows_affected() as usize;
    }
    Ok(new)
}

fn attempts_of(v: i64) -> u32 {
    u32::try_from(v.max(0)).unwrap_or(u32::MAX)
}

#[async_trait]
impl Outbox for EmbeddedResults {
    async fn enqueue(&self, events: &[AlertEvent], now: Ts) -> PortResult<usize> {
        if events.is_empty() {
            return Ok(0);
        }
        let mut tx = self.db.write.begin_with(BEGIN_WRITE).await.map_err(db_err)?;
        let new = enqueue_in(&mut tx, events, now).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(new)
    }

    async fn screen(&self, events: &[AlertEvent]) -> PortResult<Screened> {
        if events.is_empty() {
            return Ok(Screened::default());
        }
        let json = |items: Vec<&str>| serde_json::to_string(&items).map_err(|e| encode_err("ids", e));
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT 'held', id FROM outbox WHERE id IN (SELECT value FROM json_each(?1)) \
             UNION \
             SELECT 'waiting', json_extract(body, '$.alert.id') FROM outbox \
             WHERE status = 'pending' AND json_extract(body, '$.alert.id') IN (SELECT value FROM json_each(?2))",
        )
        .bind(json(events.iter().map(|e| e.id.as_str()).collect())?)
        .bind(json(events.iter().map(|e| e.alert.id.as_str()).collect())?)
        .fetch_all(&self.db.read)
        .await
        .map_err(db_err)?;
        Ok(semantics::screened(rows))
    }

    async fn record(&self, settled: &[(AlertEvent, Settled)], now: Ts) -> PortResult<usize> {
        if settled.is_empty() {
            return Ok(0);
        }
        let rows: Vec<(&AlertEvent, &Settled)> = settled.iter().map(|(e, s)| (e, s)).collect();
        let mut tx = self.db.write.begin_with(BEGIN_WRITE).await.map_err(db_err)?;
        let new = record_in(&mut tx, &rows, now).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(new)
    }

    async fn due(&self, now: Ts, limit: usize) -> PortResult<Vec<PendingDelivery>> {
        let rows: Vec<(String, String, i64, i64)> = sqlx::query_as(
            "SELECT id, body, attempts, next_attempt_at FROM outbox \
             WHERE status = 'pending' AND next_attempt_at <= ? ORDER BY next_attempt_at, rowid LIMIT ?",
        )
        .bind(now.millis())
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.db.read)
        .await
        .map_err(db_err)?;
        rows.into_iter()
            .map(|(id, body, attempts, at)| {
                Ok(PendingDelivery {
                    event: serde_json::from_str(&body).map_err(|e| decode_err("outbox event", e))?,
                    id,
                    attempts: attempts_of(attempts),
                    next_attempt_at: Ts(at),
                })
            })
            .collect()
    }

    async fn next_due(&self) -> PortResult<Option<Ts>> {
        let at: Option<i64> = sqlx::query_scalar(sql!("queries/outbox_next_due.sql"))
            .fetch_one(&self.db.read)
            .await
            .map_err(db_err)?;
        Ok(at.map(Ts))
    }

    async fn mark_delivered(&self, ids: &[String], now: Ts) -> PortResult<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut tx = self.db.write.begin_with(BEGIN_WRITE).await.map_err(db_err)?;
        for chunk in ids.chunks(500) {
            let marks = vec!["?"; chunk.len()].join(",");
            let sql = format!(
                "UPDATE outbox SET status = 'delivered', finished_at = ? WHERE status = 'pending' AND id IN ({marks})"
            );
            let mut q = sqlx::query(&sql).bind(now.millis());
            for id in chunk {
                q = q.bind(id);
            }
            q.execute(&mut *tx).await.map_err(db_err)?;
        }
        tx.commit().await.map_err(db_err)
    }

    async fn schedule_retry(&self, id: &str, attempts: u32, at: Ts, error: &str) -> PortResult<()> {
        sqlx::query(sql!("queries/outbox_schedule_retry.sql"))
            .bind(i64::from(attempts))
            .bind(at.millis())
            .bind(error)
            .bind(id)
            .execute(&self.db.write)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn dead_letter(&self, id: &str, attempts: u32, error: &str, now: Ts) -> PortResult<()> {
        sqlx::query(sql!("queries/outbox_dead_letter.sql"))
            .bind(i64::from(attempts))
            .bind(error)
            .bind(now.millis())
            .bind(id)
            .execute(&self.db.write)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    /// Newest first.
    async fn dead_letters(&self, limit: usize) -> PortResult<Vec<DeadLetter>> {
        let rows: Vec<(String, String, i64, Option<String>, Option<i64>)> =
            sqlx::query_as(sql!("queries/outbox_dead_letters.sql"))
                .bind(i64::try_from(limit).unwrap_or(i64::MAX))
                .fetch_all(&self.db.read)
                .await
                .map_err(db_err)?;
        Ok(rows
            .into_iter()
            .map(|(id, event, attempts, last_error, dead_at)| DeadLetter {
                id,
                event,
                attempts: attempts_of(attempts),
                last_error: last_error.unwrap_or_default(),
                dead_at: Ts(dead_at.unwrap_or(0)),
            })
            .collect())
    }
}
