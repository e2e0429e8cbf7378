//! The embedded durable log: Kafka's model on local files, built for the ingest hot path.
//!
//! `<data_dir>/log/<topic>/<partition>.log` holds framed records (see [`partition`]); each topic
//! has a fixed partition count, records are placed by a stable hash of their key, offsets are
//! dense per partition, and consumer groups keep their committed offsets in
//! `<topic>/groups/<group>` (written atomically). One append is one `write` plus one
//! `fdatasync`, so a group commit of thousands of readings costs one disk flush.
//!
//! [`LogTelemetryStore`] keeps the telemetry store *in* the `telemetry` topic: ingest's one
//! append both stores and publishes a reading, atomically, and the store answers `contains` and
//! `range` from an in-memory index rebuilt from the log at start.
//!
//! Retention (`crate::retention::Retention`) deletes whole 64 MiB segments: telemetry once analysed and older
//! than the retention period, internal topics once consumed. Limits: the index costs about 80
//! bytes of resident memory per kept reading.

mod bus;
mod frame;
pub mod partition;
mod store;

pub use bus::LogBus;
pub use store::LogTelemetryStore;
