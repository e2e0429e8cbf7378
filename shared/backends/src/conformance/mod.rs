//! Conformance suites: one per port, written once, run against every engine.
//!
//! Each submodule has a `run(...)` entry point that panics (like a failing test) when the engine
//! breaks the port's contract, plus one `pub async fn` per check so a failure names the rule.
//! The suites only use unique names (topics, groups, devices, alert and event ids get a random
//! suffix from [`unique`]), so they can run concurrently and against shared, non-empty
//! backends such as a real Kafka cluster or PostgreSQL database.
//!
//! The module is always compiled (it needs nothing beyond the crate's own dependencies), so a
//! later engine's tests, in this crate or another, simply do:
//!
//! ```text
//! let backends = iotstream_backends::connect(dir, &urls).await?;
//! iotstream_backends::conformance::run_all(&backends).await;
//! ```
//!
//! or call one suite, e.g. `conformance::bus::run(bus).await`.

pub mod alerts;
pub mod bus;
pub mod cache;
pub mod checkpoints;
pub mod devices;
pub mod insights;
pub mod outbox;
pub mod results;
pub mod sink;
pub mod store;

use crate::connect::Backends;
use iotstream_core::{Alert, AlertEvent, AlertEventKind, AlertState, DeviceId, LatestState, Severity, Ts};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Runs every suite against one set of backends.
pub async fn run_all(b: &Backends) {
    bus::run(b.bus.clone()).await;
    store::run(b.store.clone()).await;
    sink::run(b.sink.clone(), b.store.clone(), b.bus.clone()).await;
    devices::run(b.devices.clone()).await;
    results::run(b.results.clone(), b.outbox.clone()).await;
    outbox::run(b.outbox.clone()).await;
    checkpoints::run(b.checkpoints.clone()).await;
    cache::run(b.cache.clone()).await;
}

/// `prefix-<pid>-<time>-<counter>`: unique across runs and processes, and valid as a topic
/// name, consumer group, device id or alert id.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{:x}-{nanos:x}-{n}", std::process::id())
}

/// A unique, valid device id.
pub fn unique_device(prefix: &str) -> DeviceId {
    DeviceId::parse(&unique(prefix)).expect("unique() yields valid device ids")
}

/// A metric map from pairs (a reading's `Metrics` or a latest state's map).
pub fn metrics<M: FromIterator<(String, f64)>>(pairs: &[(&str, f64)]) -> M {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
}

/// A latest state.
pub fn latest(device: &DeviceId, last_seen: i64, pairs: &[(&str, f64)]) -> LatestState {
    LatestState {
        device_id: device.clone(),
        last_seen: Ts(last_seen),
        metrics: metrics(pairs),
    }
}

/// An active alert opened at `opened_at`.
pub fn alert(id: &str, device: &DeviceId, opened_at: i64, value: f64) -> Alert {
    Alert {
        id: id.to_owned(),
        device_id: device.clone(),
        rule: "temperature-high".into(),
        severity: Severity::Warning,
        metric: "temperature".into(),
        value,
        threshold: 80.0,
        state: AlertState::Active,
        opened_at: Ts(opened_at),
        resolved_at: None,
        acknowledged_at: None,
        message: "temperature above 80".into(),
        recommendation: "check the cooling".into(),
        peak: None,
        kind: "threshold".into(),
        evidence: None,
    }
}

/// The event of `kind` for `alert`, with the transition's fields set as analyze sets them.
pub fn event(kind: AlertEventKind, alert: &Alert, at: i64, value: f64) -> AlertEvent {
    let mut a = alert.clone();
    match kind {
        AlertEventKind::Opened => a.state = AlertState::Active,
        AlertEventKind::Resolved => {
            a.state = AlertState::Resolved;
            a.resolved_at = Some(Ts(at));
            a.value = value;
        }
        AlertEventKind::Acknowledged => {
            a.state = AlertState::Acknowledged;
            a.acknowledged_at = Some(Ts(at));
        }
        AlertEventKind::Updated => a.peak = Some(value),
    }
    AlertEvent::new(kind, a)
}
