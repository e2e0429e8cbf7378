//! Shared SQLite plumbing of the embedded engines: opening a database file with the durability
//! settings, the write/read pool split, and helpers for multi-row statements.

use crate::error::db_err;
use iotstream_core::PortError;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// How long a statement waits for another connection's (or process's) write lock.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Rows per full multi-row statement. Remainders are split into power-of-two chunks, so only a
/// handful of distinct statements (and prepared-statement cache entries) ever exist.
pub(crate) const FULL_CHUNK: usize = 256;

/// `BEGIN IMMEDIATE`: write transactions take the write lock up front, so a read-modify-write
/// never fails with `SQLITE_BUSY_SNAPSHOT` when another process writes concurrently.
pub(crate) const BEGIN_WRITE: &str = "BEGIN IMMEDIATE";

/// How often the background task copies the WAL into the database file.
pub(crate) const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// One SQLite database file: a single-connection pool for writes (serialising writers in this
/// process) and a small pool for reads (WAL lets them run beside the writer).
///
/// Checkpoints run in the background: SQLite's automatic checkpoint would copy the WAL into the
/// database file (and `fsync` it) inside whichever commit crosses 1,000 pages, stalling that
/// commit and every request waiting on it. A task checkpoints every [`CHECKPOINT_EVERY`] on a
/// reader connection instead (`PASSIVE`: it never blocks the writer), and stops with the last
/// clone of the `Db`.
#[derive(Clone, Debug)]
pub(crate) struct Db {
    pub write: SqlitePool,
    pub read: SqlitePool,
    _checkpoints: Arc<AbortOnDrop>,
}

/// Aborts a task when dropped.
#[derive(Debug)]
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn checkpoints(read: SqlitePool, path: std::path::PathBuf) {
    let mut every = tokio::time::interval(CHECKPOINT_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").execute(&read).await {
            tracing::warn!(db = %path.display(), error = %e, "background WAL checkpoint failed; will retry");
        }
    }
}

impl Db {
    /// Opens (creating if missing) `path` in WAL mode with `synchronous=FULL`, so a committed
    /// transaction survives a process kill or power loss, then applies `schema` (idempotent).
    pub async fn open(path: &Path, schema: &str, readers: u32) -> Result<Db, PortError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| {
                PortError::unavailable(format!("cannot create data directory {}: {e}", dir.display()))
            })?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(false)
            .pragma("temp_store", "memory")
            // Checkpoints run in the background (see `Db`), never inside a commit.
            .pragma("wal_autocheckpoint", "0");
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(30))
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options.clone())
            .await
            .map_err(|e| open_err(path, e))?;
        sqlx::raw_sql(schema)
            .execute(&write)
            .await
            .map_err(|e| open_err(path, e))?;
        let read = SqlitePoolOptions::new()
            .max_connections(readers.max(1))
            .acquire_timeout(Duration::from_secs(30))
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await
            .map_err(|e| open_err(path, e))?;
        let task = tokio::spawn(checkpoints(read.clone(), path.to_path_buf()));
        Ok(Db {
            write,
            read,
            _checkpoints: Arc::new(AbortOnDrop(task)),
        })
    }
}

fn open_err(path: &Path, e: sqlx::Error) -> PortError {
    let mut err = db_err(e);
    err.message = format!("opening {}: {}", path.display(), err.message);
    err
}

/// Splits `len` rows into chunk sizes: full chunks first, then powers of two.
pub(crate) fn chunk_sizes(len: usize) -> impl Iterator<Item = usize> {
    let full = len / FULL_CHUNK;
    let rest = len % FULL_CHUNK;
    std::iter::repeat_n(FULL_CHUNK, full).chain(
        (0..usize::BITS)
            .rev()
            .map(|bit| 1usize << bit)
            .filter(move |size| rest & size != 0),
    )
}

/// Iterates over `items` in the slices given by [`chunk_sizes`].
pub(crate) fn chunks<T>(items: &[T]) -> impl Iterator<Item = &[T]> {
    let mut start = 0;
    chunk_sizes(items.len()).map(move |n| {
        let chunk = &items[start..start + n];
        start += n;
        chunk
    })
}

/// `prefix` followed by `rows` groups of `group` (e.g. `(?, ?, ?)`), comma separated, then
/// `suffix`.
pub(crate) fn multi_row(prefix: &str, group: &str, rows: usize, suffix: &str) -> String {
    let mut sql = String::with_capacity(prefix.len() + suffix.len() + rows * (group.len() + 1));
    sql.push_str(prefix);
    for i in 0..rows {
        if i > 0 {
            sql.push(',');
        }
        sql.push_str(group);
    }
    sql.push_str(suffix);
    sql
}

/// Converts a stored (non-negative) integer.
pub(crate) fn to_u64(v: i64) -> u64 {
    v.max(0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_sizes_cover_exactly() {
        for len in [0, 1, 2, 3, 255, 256, 257, 1000, 10_000] {
            let sizes: Vec<usize> = chunk_sizes(len).collect();
            assert_eq!(sizes.iter().sum::<usize>(), len);
            assert!(sizes.iter().all(|s| s.is_power_of_two() && *s <= FULL_CHUNK));
        }
        let items: Vec<u32> = (0..300).collect();
        let joined: Vec<u32> = chunks(&items).flatten().copied().collect();
        assert_eq!(joined, items);
    }

    /// With automatic checkpoints off, only the background task moves committed pages into the
    /// database file: the file grows while nobody checkpoints by hand, and the WAL is reused
    /// instead of growing without bound.
    #[tokio::test]
    async fn the_background_task_checkpoints_the_wal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let db = Db::open(&path, "CREATE TABLE IF NOT EXISTS t (v BLOB);", 1)
            .await
            .unwrap();
        let main_size = || std::fs::metadata(&path).unwrap().len();
        let wal_size = || std::fs::metadata(dir.path().join("t.db-wal")).map_or(0, |m| m.len());
        let before = main_size();
        let blob = vec![7u8; 4096];
        let write = |n: usize| {
            let (db, blob) = (db.clone(), blob.clone());
            async move {
                for _ in 0..n {
                    sqlx::query("INSERT INTO t VALUES (?)")
                        .bind(&blob)
                        .execute(&db.write)
                        .await
                        .unwrap();
                }
            }
        };
        // About 2,000 pages: twice what an automatic checkpoint would have allowed.
        write(500).await;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while main_size() < before + 500 * 4096 {
            assert!(std::time::Instant::now() < deadline, "no checkpoint within 10 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let wal_after_first = wal_size();
        // Once checkpointed, the next writes start the WAL over instead of appending to it.
        tokio::time::sleep(CHECKPOINT_EVERY * 2).await;
        write(500).await;
        // Appending instead would have made it about twice as large.
        assert!(
            wal_size() <= wal_after_first * 3 / 2 + 64 * 1024,
            "the WAL grew from {wal_after_first} to {} bytes: it was not reused",
            wal_size()
        );
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM t")
            .fetch_one(&db.read)
            .await
            .unwrap();
        assert_eq!(rows, 1000);
    }

    #[test]
    fn multi_row_builds_groups() {
        assert_eq!(
            multi_row("INSERT INTO t VALUES ", "(?,?)", 3, " ON CONFLICT DO NOTHING"),
            "INSERT INTO t VALUES (?,?),(?,?),(?,?) ON CONFLICT DO NOTHING"
        );
    }
}
