//! Engines behind the ports of `iotstream_core::ports`.
//!
//! * Real engines, each behind its cargo feature: `kafka` (the bus), `cosmos` (the telemetry
//!   store), `postgres` (devices, results, outbox, checkpoints), `redis` (the cache).
//! * [`embedded`]: SQLite files under a data directory ([`EmbeddedBus`],
//!   [`EmbeddedTelemetryStore`], [`EmbeddedResults`]) and the in-process [`MemoryCache`].
//! * [`webhook`]: the HTTP [`WebhookNotifier`].
//! * [`connect`](mod@connect): picks the engine for each port from its URL, in one place.
//! * [`conformance`]: one behaviour suite per port, written once and run against every engine
//!   (always compiled, so other crates and later engines can call it from their tests).
//! * [`faults`]: [`Faults`] and the [`Faulty`] decorator, which takes a port down on demand
//!   (fault-injection tests).
//! * [`semantics`]: the merge/transition rules shared by all engines, as plain functions.
//!
//! SQL lives in `sql/`: schemas and migrations, and the results engines' statements, one per
//! file (`sql/queries/` for those both engines run, `sql/postgres/queries/` for PostgreSQL's
//! own), embedded with `sql!`.

/// The text of a statement kept under `sql/`, embedded at compile time:
/// `sqlx::query(sql!("queries/alert_get.sql"))`. A missing file fails the build.
macro_rules! sql {
    ($path:literal) => {
        include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/sql/", $path))
    };
}

pub mod cache;
pub mod conformance;
pub mod connect;
#[cfg(feature = "cosmos")]
pub mod cosmos;
pub mod embedded;
mod error;
pub mod faults;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod log;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "redis")]
pub mod redis;
pub mod retention;
pub mod semantics;
mod split;
mod sqlite;
pub mod webhook;

pub use cache::MemoryCache;
pub use connect::{BackendUrls, Backends, connect, connect_registry};
pub use embedded::{EmbeddedBus, EmbeddedResults, EmbeddedTelemetryStore};
pub use faults::{Faults, Faulty};
pub use log::{LogBus, LogTelemetryStore};
pub use split::SplitSink;
pub use webhook::WebhookNotifier;

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    fn files(dir: &Path, ext: &str, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                files(&path, ext, out);
            } else if path.extension().is_some_and(|e| e == ext) {
                out.push(path);
            }
        }
    }

    /// Every statement file is loaded by some `sql!`: an orphan would be SQL that nobody runs
    /// but that readers would take for the engine's.
    #[test]
    fn every_statement_file_is_used() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut sources = Vec::new();
        files(&root.join("src"), "rs", &mut sources);
        let code: String = sources
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect();
        let mut statements = Vec::new();
        files(&root.join("sql/queries"), "sql", &mut statements);
        files(&root.join("sql/postgres/queries"), "sql", &mut statements);
        assert!(statements.len() > 20, "{statements:?}");
        for path in statements {
            let name = path
                .strip_prefix(root.join("sql"))
                .unwrap()
                .to_str()
                .unwrap()
                .to_owned();
            assert!(
                code.contains(&format!("sql!(\"{name}\")")),
                "sql/{name} is not used"
            );
        }
    }
}
