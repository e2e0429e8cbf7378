//! SQLite engines.
//!
//! | file            | engine                    | role |
//! |-----------------|---------------------------|------|
//! | `results.db`    | [`EmbeddedResults`]       | the embedded PostgreSQL: devices, results, outbox, checkpoints |
//! | `bus.db`        | [`EmbeddedBus`]           | a second, SQLite implementation of the bus port |
//! | `telemetry.db`  | [`EmbeddedTelemetryStore`]| a second, SQLite implementation of the store port |
//!
//! `connect` uses `EmbeddedResults`; the embedded bus and telemetry store are the partition
//! log (`crate::log`), which is several times faster on the ingest path. The SQLite bus and
//! store stay as an independent second implementation of those ports (multi-process safe,
//! slower): the conformance suites and `SplitSink` (the Kafka + Cosmos DB write path) are
//! proven against them until the real engines land.

mod bus;
mod consumer;
mod results;
mod telemetry;

pub use bus::{DEFAULT_PARTITIONS, EmbeddedBus, RECHECK, partition_for};
pub use results::EmbeddedResults;
pub use telemetry::EmbeddedTelemetryStore;
