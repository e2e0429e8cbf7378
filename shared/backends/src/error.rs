//! The one mapping from engine errors to [`PortError`].

use iotstream_core::PortError;

/// SQLite primary result codes that mean "try again later" (the extended code's low byte).
const SQLITE_BUSY: i64 = 5;
const SQLITE_LOCKED: i64 = 6;
const SQLITE_NOMEM: i64 = 7;
const SQLITE_IOERR: i64 = 10;
const SQLITE_FULL: i64 = 13;
const SQLITE_CANTOPEN: i64 = 14;
const SQLITE_PROTOCOL: i64 = 15;

/// Maps a `sqlx` error: busy/locked/out-of-memory/I/O/disk-full, pool exhaustion and broken
/// connections are `Unavailable` (retryable); anything else (SQL bugs, constraint violations,
/// corrupt data) is `Internal`.
pub(crate) fn db_err(e: sqlx::Error) -> PortError {
    use sqlx::Error as E;
    match &e {
        E::Database(db) => {
            let code = db.code().and_then(|c| c.parse::<i64>().ok()).unwrap_or(0);
            match code & 0xff {
                SQLITE_BUSY | SQLITE_LOCKED | SQLITE_NOMEM | SQLITE_IOERR | SQLITE_FULL | SQLITE_CANTOPEN
                | SQLITE_PROTOCOL => PortError::unavailable(format!(
                    "sqlite is busy or failing (code {code}): {}",
                    db.message()
                )),
                _ => PortError::internal(format!("sqlite error (code {code}): {}", db.message())),
            }
        }
        E::Io(_) | E::PoolTimedOut | E::PoolClosed | E::WorkerCrashed | E::Tls(_) | E::Protocol(_) => {
            PortError::unavailable(format!("database unavailable: {e}"))
        }
        _ => PortError::internal(format!("database error: {e}")),
    }
}

/// A stored value that does not decode: the store is corrupt or was written by a newer version.
pub(crate) fn decode_err(what: &str, e: impl std::fmt::Display) -> PortError {
    PortError::internal(format!("cannot decode stored {what}: {e}"))
}

/// A value that cannot be encoded (e.g. a non-finite number in JSON).
pub(crate) fn encode_err(what: &str, e: impl std::fmt::Display) -> PortError {
    PortError::invalid(format!("cannot encode {what}: {e}"))
}
