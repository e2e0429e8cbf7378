//! The pure core of iotstream.
//!
//! Everything here is plain functions over plain data: no sockets, files, clocks or async runtime.
//! Time comes in as arguments ([`Ts`]), I/O goes through the port traits in [`ports`], which the
//! `iotstream-backends` crate implements once per engine. This is the invariant that keeps the
//! analysis engine deterministic, replayable and fast to test (see ARCHITECTURE.md).

pub mod device;
pub mod engine;
pub mod error;
pub mod model;
pub mod ports;
pub mod reading;
pub mod rules;
pub mod sas;
pub mod sim;
pub mod ts;

pub use device::DeviceId;
pub use error::{FieldError, PortError, PortErrorKind};
pub use model::{
    Aggregate, Alert, AlertEvent, AlertEventKind, AlertState, Evidence, Forecast, Insight, LateReading,
    LatestState, Severity,
};
pub use reading::{MetricName, Metrics, Reading};
pub use ts::Ts;

/// Kafka-compatible topic names (CONTRACT §3).
pub mod topics {
    pub const TELEMETRY: &str = "telemetry";
    pub const INSIGHTS: &str = "insights";
    pub const ALERTS: &str = "alerts";
}

/// Consumer group names (CONTRACT §3).
pub mod groups {
    pub const ANALYZE: &str = "iotstream-analyze";
    pub const PROCESS: &str = "iotstream-process";
    pub const NOTIFY: &str = "iotstream-notify";
}
