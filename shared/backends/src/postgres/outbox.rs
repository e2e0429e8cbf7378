//! [`Outbox`] of [`PgResults`]: webhook deliveries with retries and dead letters, with the
//! embedded engine's rules (rows are never deleted by delivery; `status` is `pending`,
//! `delivered` or `dead`; only pending rows change; unknown ids are ignored).

use super::{PgResults, decode_err, pg_err};
use crate::semantics;
use async_trait::async_trait;
use iotstream_core::ports::{DeadLetter, Outbox, PendingDelivery, PortResult, Screened, Settled};
use iotstream_core::{AlertEvent, PortError, Ts};

/// Enqueues on an open connection or transaction (shared with `ack_alert`), in input order.
pub(super) async fn enqueue_in(
    conn: &mut sqlx::PgConnection,
    events: &[AlertEvent],
    now: Ts,
) -> PortResult<usize> {
    let pending = Settled::Pending {
        attempts: 0,
        at: now,
        error: None,
    };
    record_in(conn, events.iter().map(|e| (e, &pending)), now).await
}

/// Inserts rows with their status, in input order; held ids are ignored.
async fn record_in<'a>(
    conn: &mut sqlx::PgConnection,
    rows: impl Iterator<Item = (&'a AlertEvent, &'a Settled)>,
    now: Ts,
) -> PortResult<usize> {
    let mut c = Columns::default();
    for (e, settled) in rows {
        c.push(e, settled, now)?;
    }
    if c.ids.is_empty() {
        return Ok(0);
    }
    let done = sqlx::query(sql!("postgres/queries/outbox_record.sql"))
        .bind(&c.ids)
        .bind(&c.kinds)
        .bind(&c.bodies)
        .bind(&c.alerts)
        .bind(&c.statuses)
        .bind(&c.attempts)
        .bind(&c.at)
        .bind(&c.errors)
        .bind(now.millis())
        .execute(&mut *conn)
        .await
        .map_err(pg_err)?;
    Ok(done.rows_affected() as usize)
}

/// The arrays `outbox_record.sql` unnests.
#[derive(Default)]
struct Columns {
    ids: Vec<String>,
    kinds: Vec<&'static str>,
    bodies: Vec<String>,
    alerts: Vec<String>,
    statuses: Vec<&'static str>,
    attempts: Vec<i32>,
    at: Vec<i64>,
    errors: Vec<Option<String>>,
}

impl Columns {
    fn push(&mut self, e: &AlertEvent, settled: &Settled, now: Ts) -> PortResult<()> {
        let body = serde_json::to_string(e)
            .map_err(|err| PortError::invalid(format!("cannot encode alert event: {err}")))?;
        let (status, attempts, at, error) = semantics::outbox_row(settled, now);
        self.ids.push(e.id.clone());
        self.kinds.push(e.event.as_str());
        self.bodies.push(body);
        self.alerts.push(e.alert.id.clone());
        self.statuses.push(status);
        self.attempts.push(i32::try_from(attempts).unwrap_or(i32::MAX));
        self.at.push(at.millis());
        self.errors.push(error.map(str::to_owned));
        Ok(())
    }
}

fn attempts_of(v: i32) -> u32 {
    u32::try_from(v.max(0)).unwrap_or(u32::MAX)
}

fn limit_of(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

#[async_trait]
impl Outbox for PgResults {
    async fn enqueue(&self, events: &[AlertEvent], now: Ts) -> PortResult<usize> {
        if events.is_empty() {
            return Ok(0);
        }
        let mut conn = self.pool.acquire().await.map_err(pg_err)?;
        enqueue_in(&mut conn, events, now).await
    }

    async fn screen(&self, events: &[AlertEvent]) -> PortResult<Screened> {
        if events.is_empty() {
            return Ok(Screened::default());
        }
        let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
        let alerts: Vec<&str> = events.iter().map(|e| e.alert.id.as_str()).collect();
        let rows: Vec<(String, String)> = sqlx::query_as(sql!("postgres/queries/outbox_screen.sql"))
            .bind(&ids)
            .bind(&alerts)
            .fetch_all(&self.pool)
            .await
            .map_err(pg_err)?;
        Ok(semantics::screened(rows))
    }

    async fn record(&self, settled: &[(AlertEvent, Settled)], now: Ts) -> PortResult<usize> {
        let mut conn = self.pool.acquire().await.map_err(pg_err)?;
        record_in(&mut conn, settled.iter().map(|(e, s)| (e, s)), now).await
    }

    async fn due(&self, now: Ts, limit: usize) -> PortResult<Vec<PendingDelivery>> {
        let rows: Vec<(String, String, i32, i64)> = sqlx::query_as(sql!("postgres/queries/outbox_due.sql"))
            .bind(now.millis())
            .bind(limit_of(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(pg_err)?;
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
            .fetch_one(&self.pool)
            .await
            .map_err(pg_err)?;
        Ok(at.map(Ts))
    }

    async fn mark_delivered(&self, ids: &[String], now: Ts) -> PortResult<()> {
        if ids.is_empty() {
            return Ok(());
        }
        sqlx::query(sql!("postgres/queries/outbox_mark_delivered.sql"))
            .bind(now.millis())
            .bind(ids)
            .execute(&self.pool)
            .await
            .map_err(pg_err)?;
        Ok(())
    }

    async fn schedule_retry(&self, id: &str, attempts: u32, at: Ts, error: &str) -> PortResult<()> {
        sqlx::query(sql!("queries/outbox_schedule_retry.sql"))
            .bind(i32::try_from(attempts).unwrap_or(i32::MAX))
            .bind(at.millis())
            .bind(error)
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(pg_err)?;
        Ok(())
    }

    async fn dead_letter(&self, id: &str, attempts: u32, error: &str, now: Ts) -> PortResult<()> {
        sqlx::query(sql!("queries/outbox_dead_letter.sql"))
            .bind(i32::try_from(attempts).unwrap_or(i32::MAX))
            .bind(error)
            .bind(now.millis())
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(pg_err)?;
        Ok(())
    }

    /// Newest first.
    async fn dead_letters(&self, limit: usize) -> PortResult<Vec<DeadLetter>> {
        let rows: Vec<(String, String, i32, Option<String>, Option<i64>)> =
            sqlx::query_as(sql!("queries/outbox_dead_letters.sql"))
                .bind(limit_of(limit))
                .fetch_all(&self.pool)
                .await
                .map_err(pg_err)?;
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
