//! [`Outbox`] of [`EmbeddedResults`]: webhook deliveries with retries and dead letters.
//!
//! Rows are never deleted: `status` is `pending`, `delivered` or `dead`, so an event id that was
//! already delivered or dead-lettered is ignored when enqueued again. `mark_delivered`,
//! `schedule_retry` and `dead_letter` only change pending rows and ignore unknown ids.

use super::EmbeddedResults;
use crate::error::{db_err, decode_err, encode_err};
use crate::sqlite::{BEGIN_WRITE, chunks, multi_row};
use async_trait::async_trait;
use iotstream_core::ports::{DeadLetter, Outbox, PendingDelivery, PortResult};
use iotstream_core::{AlertEvent, Ts};

/// Enqueues on an open connection or transaction (shared with `ack_alert`).
pub(super) async fn enqueue_in(
    conn: &mut sqlx::SqliteConnection,
    events: &[AlertEvent],
    now: Ts,
) -> PortResult<usize> {
    let bodies: Vec<String> = events
        .iter()
        .map(|e| serde_json::to_string(e).map_err(|err| encode_err("alert event", err)))
        .collect::<PortResult<_>>()?;
    let mut new = 0;
    let mut start = 0;
    for chunk in chunks(events) {
        let sql = multi_row(
            "INSERT OR IGNORE INTO outbox (id, event, body, status, attempts, next_attempt_at, created_at) VALUES ",
            "(?,?,?,'pending',0,?,?)",
            chunk.len(),
            "",
        );
        let mut q = sqlx::query(&sql);
        for (e, body) in chunk.iter().zip(&bodies[start..]) {
            q = q
                .bind(e.id.as_str())
                .bind(e.event.as_str())
                .bind(body.as_str())
                .bind(now.millis())
                .bind(now.millis());
        }
        new += q.execute(&mut *conn).await.map_err(db_err)?.rows_affected() as usize;
        start += chunk.len();
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
