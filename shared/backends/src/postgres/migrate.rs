//! Migrations of the PostgreSQL results database: the numbered files of `sql/postgres/`,
//! embedded in the binary (a deployment needs no SQL files beside it), each applied once in its
//! own transaction and recorded in `iotstream_migrations`.
//!
//! Several processes may start at once (replicas of every function): a session-wide advisory
//! lock makes them take turns, and each re-reads what is applied after taking it.

use super::pg_err;
use iotstream_core::PortError;
use iotstream_core::ports::PortResult;
use sqlx::PgPool;

/// (version, name, SQL), in order. Append only: never edit an applied migration.
const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "results", sql!("postgres/0001_results.sql")),
    (
        2,
        "window_aggregates",
        sql!("postgres/0002_window_aggregates.sql"),
    ),
    (
        3,
        "forecasts_and_late_readings",
        sql!("postgres/0003_forecasts_and_late_readings.sql"),
    ),
    (
        4,
        "outbox_pending_alert",
        sql!("postgres/0004_outbox_pending_alert.sql"),
    ),
];

/// An arbitrary constant naming iotstream's migration lock.
const LOCK_KEY: i64 = 0x0069_6f74_7374_726d;

/// Applies the migrations not applied yet. Idempotent and safe to run concurrently.
pub async fn migrate(pool: &PgPool) -> PortResult<()> {
    let mut conn = pool.acquire().await.map_err(pg_err)?;
    sqlx::query(sql!("postgres/queries/migrations_lock.sql"))
        .bind(LOCK_KEY)
        .execute(&mut *conn)
        .await
        .map_err(pg_err)?;
    let result = apply(&mut conn).await;
    // Unlock even after a failure; a broken connection releases the lock by itself.
    let _ = sqlx::query(sql!("postgres/queries/migrations_unlock.sql"))
        .bind(LOCK_KEY)
        .execute(&mut *conn)
        .await;
    result
}

async fn apply(conn: &mut sqlx::PgConnection) -> PortResult<()> {
    sqlx::raw_sql(sql!("postgres/queries/migrations_table.sql"))
        .execute(&mut *conn)
        .await
        .map_err(pg_err)?;
    let applied: Vec<i32> = sqlx::query_scalar(sql!("postgres/queries/migrations_applied.sql"))
        .fetch_all(&mut *conn)
        .await
        .map_err(pg_err)?;
    if let Some(newer) = applied
        .iter()
        .find(|v| !MIGRATIONS.iter().any(|(m, _, _)| m == *v))
    {
        return Err(PortError::config(format!(
            "the database has migration {newer}, which this build does not know: it was migrated by a newer iotstream"
        )));
    }
    for (version, name, sql) in MIGRATIONS {
        if applied.contains(version) {
            continue;
        }
        let mut tx = sqlx::Connection::begin(&mut *conn).await.map_err(pg_err)?;
        sqlx::raw_sql(sql).execute(&mut *tx).await.map_err(|e| {
            let mut err = pg_err(e);
            err.message = format!("migration {version} ({name}): {}", err.message);
            err
        })?;
        sqlx::query(sql!("postgres/queries/migrations_record.sql"))
            .bind(version)
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(pg_err)?;
        tx.commit().await.map_err(pg_err)?;
        tracing::info!(version, name, "applied database migration");
    }
    Ok(())
}
