//! The embedded engines: everything in one process and a few SQLite files under a data
//! directory, with the same semantics as the production engines (see each engine's docs).
//!
//! | file            | engine                    | stands in for |
//! |-----------------|---------------------------|---------------|
//! | `bus.db`        | [`EmbeddedBus`]           | Kafka         |
//! | `telemetry.db`  | [`EmbeddedTelemetryStore`]| Cosmos DB     |
//! | `results.db`    | [`EmbeddedResults`]       | PostgreSQL    |
//! | (memory)        | [`crate::MemoryCache`]    | Redis         |
//!
//! One file per concern, so that ingest (telemetry + bus) and the consumers (results) do not
//! queue on one SQLite write lock.

mod bus;
mod consumer;
mod results;
mod telemetry;

pub use bus::{DEFAULT_PARTITIONS, EmbeddedBus, RECHECK, partition_for};
pub use results::EmbeddedResults;
pub use telemetry::EmbeddedTelemetryStore;
