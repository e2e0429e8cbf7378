//! The analysis engine: per-device state machines over readings in event time.
//!
//! `Engine::process` takes a batch of readings (in bus order, so per-device arrival order) and
//! returns insights, alert transitions and, when asked, anomaly scores. It is deterministic:
//! the same state and input give the same output, byte for byte, whatever the batching, which
//! is what makes checkpoint/restore and `iotstream replay` exact. Only [`Engine::tick`] looks
//! at processing time (silence, idle reorder buffers, partial windows).
//!
//! Rules for time, stated once:
//! - Event time is per device. With `allowed_lateness` L > 0 a device's readings wait in a
//!   reorder buffer until the device's newest ts minus L (its watermark) passes them, and are
//!   analysed in ts order; readings older than the watermark when they arrive are *late*. With
//!   L = 0 (the default) nothing waits, and a value older than its metric's newest is late.
//! - Late readings are counted, published as `late` insights and stay in the telemetry store;
//!   they change no window and no alert.
//! - Windows close when a value at or past their end arrives, and are emitted final then.
//! - Re-sent readings (same reading id within the device's last [`DEDUP_WINDOW`] ids) are skipped.

mod alerting;
mod bins;
mod codec;
pub mod detect;
mod detectors;
mod ids;
pub mod sketch;
mod slot;
mod state;
mod threshold;
mod window;

use crate::model::{AlertEvent, Insight};
use crate::reading::Reading;
use crate::rules::Rules;
use crate::{DeviceId, Ts};
pub use alerting::alert_id;
use serde::Serialize;
pub use state::EngineState;

/// How many recent reading ids per device are remembered to drop redelivered duplicates. Ingest
/// already stores each reading once; this catches a bus redelivering recent records. Older
/// re-sends are older than their metric's newest value, so they are late, not analysed twice.
pub const DEDUP_WINDOW: usize = 16;
/// First byte of a checkpoint: the encoding's version.
const SNAPSHOT_VERSION: u8 = 2;

/// What one call produced.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Output {
    pub insights: Vec<Insight>,
    pub alerts: Vec<AlertEvent>,
    /// Per analysed value, when scoring is on ([`Engine::with_scores`]).
    pub scores: Vec<Score>,
    pub stats: Stats,
}

/// The anomaly score of one value: `iotstream replay --scores` prints these.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Score {
    pub ts: Ts,
    pub device_id: DeviceId,
    pub metric: String,
    pub value: f64,
    /// 0..1: the largest of the detectors' scores (0.5 at a detector's threshold).
    pub score: f64,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Readings accepted for analysis (not re-sends).
    pub processed: u64,
    /// Readings skipped as re-sends.
    pub duplicates: u64,
    /// Readings that arrived out of order and were re-sorted by the reorder buffer.
    pub out_of_order: u64,
    /// Readings (or some of their metrics) too late to analyse.
    pub late: u64,
}

/// The engine: rules plus the state they act on.
pub struct Engine {
    rules: Rules,
    state: EngineState,
    scoring: bool,
}

impl Engine {
    pub fn new(rules: Rules) -> Self {
        Engine {
            rules,
            state: EngineState::default(),
            scoring: false,
        }
    }

    /// Also computes an anomaly score per analysed value (`Output::scores`).
    pub fn with_scores(mut self) -> Self {
        self.scoring = true;
        self
    }

    /// Restores an engine from [`Engine::snapshot`]s; state of rules that no longer exist is
    /// dropped, and rules or detectors that are new start fresh.
    pub fn restore(rules: Rules, snapshot: &[u8]) -> Result<Self, String> {
        let mut state = decode(snapshot)?;
        state.bind(&rules);
        Ok(Engine {
            rules,
            state,
            scoring: false,
        })
    }

    /// The whole state as bytes, for checkpoints.
    pub fn snapshot(&self) -> Vec<u8> {
        self.snapshot_where(&|_| true)
    }

    /// The state of the devices `keep` selects (one partition's devices, for a partitioned
    /// checkpoint: several analyze instances each own some partitions).
    pub fn snapshot_where(&self, keep: &dyn Fn(&DeviceId) -> bool) -> Vec<u8> {
        encode(&self.state.select(|d| keep(&d.id)))
    }

    /// The state of the devices whose readings come from `partition`.
    pub fn snapshot_partition(&self, partition: u32) -> Vec<u8> {
        encode(&self.state.select(|d| d.partition == partition))
    }

    /// Forgets the devices of `partition` (revoked from this instance by a rebalance).
    pub fn release_partition(&mut self, partition: u32) {
        self.state.retain(|d| d.partition != partition, &self.rules);
    }

    /// Adds the devices of a snapshot (a partition assigned to this instance).
    pub fn absorb(&mut self, snapshot: &[u8]) -> Result<(), String> {
        let other = decode(snapshot)?;
        self.state.absorb(other, &self.rules);
        Ok(())
    }

    /// [`Engine::absorb`] by a live instance at processing time `now`: the silence clocks of
    /// the absorbed devices restart at `now`, so the backlog that piled up while the partition
    /// had no owner raises no false silence alert (a device that really went quiet is reported
    /// `for` after `now`).
    pub fn absorb_at(&mut self, snapshot: &[u8], now: Ts) -> Result<(), String> {
        let mut other = decode(snapshot)?;
        other.restart_silence_clocks(now.millis());
        self.state.absorb(other, &self.rules);
        Ok(())
    }

    /// Forgets the devices `drop` selects (a partition revoked from this instance).
    pub fn release_where(&mut self, drop: &dyn Fn(&DeviceId) -> bool) {
        self.state.retain(|d| !drop(&d.id), &self.rules);
    }

    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// Number of devices with state.
    pub fn devices(&self) -> usize {
        self.state.devices.len()
    }

    /// Number of (device, metric) pairs with state.
    pub fn device_metrics(&self) -> usize {
        self.state.slots()
    }

    /// Analyses a batch that arrived at processing time `now`. Outputs come in the order the
    /// readings caused them; the batching does not change them.
    pub fn process(&mut self, readings: &[Reading], now: Ts) -> Output {
        self.process_in(readings, 0, now)
    }

    /// [`Engine::process`] for readings of one bus partition: their devices' state is tagged
    /// with it, for [`Engine::snapshot_partition`] and [`Engine::release_partition`].
    pub fn process_in(&mut self, readings: &[Reading], partition: u32, now: Ts) -> Output {
        let mut out = Output::default();
        // Windows close about once a minute per (device, metric): room for that, not regrowth.
        out.insights.reserve(readings.len() / 8);
        for r in readings {
            self.state
                .apply(&self.rules, r, partition, now.millis(), &mut out, self.scoring);
        }
        out
    }

    /// Processing-time work, about once a second: silence alerts, reorder buffers of devices
    /// idle for the allowed lateness, and partial windows plus latest state of devices that
    /// changed since the last tick.
    pub fn tick(&mut self, now: Ts) -> Output {
        let mut out = Output::default();
        self.state.tick(&self.rules, now.millis(), &mut out);
        out
    }

    /// End of input (offline replay): analyses every buffered reading, then emits every open
    /// window (as partial) and every device's latest state.
    pub fn finish(&mut self) -> Output {
        let mut out = Output::default();
        self.state.finish(&self.rules, &mut out, self.scoring);
        out
    }
}

/// A checkpoint: the version byte, the state, then what the next tick owes (`EngineState::owed`:
/// partial windows and latest state not emitted yet). The last part is a trailer: a reader from
/// before it ignores it, and a checkpoint from before it decodes as "everything".
fn encode(state: &EngineState) -> Vec<u8> {
    // Appended in place: a checkpoint of 10,000 devices is tens of MB, not worth a second copy.
    let bytes = postcard::to_extend(state, vec![SNAPSHOT_VERSION]).expect("engine state encodes");
    postcard::to_extend(&state.owed(), bytes).expect("flags encode")
}

fn decode(snapshot: &[u8]) -> Result<EngineState, String> {
    let invalid = |e: postcard::Error| format!("invalid analyze checkpoint: {e}");
    match snapshot.split_first() {
        Some((&SNAPSHOT_VERSION, rest)) => {
            let (mut state, trailer) = postcard::take_from_bytes::<EngineState>(rest).map_err(invalid)?;
            let owed = match trailer {
                [] => None,
                t => Some(postcard::from_bytes(t).map_err(invalid)?),
            };
            state.set_owed(owed)?;
            Ok(state)
        }
        Some((v, _)) => Err(format!(
            "analyze checkpoint version {v} is not supported (this build reads {SNAPSHOT_VERSION}); \
             delete the checkpoint to re-analyse from the retained telemetry"
        )),
        None => Err("empty analyze checkpoint".into()),
    }
}

#[cfg(test)]
mod tests;
