//! The analysis engine: per-device state machines over readings in event time.
//!
//! `Engine::process` takes a batch of readings (in bus order, so per-device arrival order) and
//! returns insights and alert transitions. It is deterministic: the same state and input give the
//! same output, byte for byte, which is what makes checkpoint/replay and `iotstream replay` exact.
//!
//! Rules for time, stated once:
//! - Event time is per device: a device's clock is the newest `ts` seen from it.
//! - A reading older than the newest one already evaluated for the same metric is *out of
//!   order*: it still counts in its window's aggregate while that window is open (newest ts minus
//!   `allowed_lateness`), but it never changes alert state or latest state, because an older
//!   reading cannot tell us anything about *now*. Readings whose window is already closed are
//!   counted as `late` and dropped from aggregates (they stay in the telemetry store).
//! - Re-sent readings (same reading id within the device's last [`DEDUP_WINDOW`] ids) are skipped.

mod state;
mod threshold;

use crate::model::{AlertEvent, Insight};
use crate::reading::Reading;
use crate::rules::Rules;
pub use state::EngineState;

/// How many recent reading ids per device are remembered to drop redelivered duplicates.
pub const DEDUP_WINDOW: usize = 64;

/// What one call to [`Engine::process`] produced.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Output {
    pub insights: Vec<Insight>,
    pub alerts: Vec<AlertEvent>,
    pub stats: Stats,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Readings evaluated.
    pub processed: u64,
    /// Readings skipped as re-sends.
    pub duplicates: u64,
    /// Readings older than their metric's newest evaluated reading (aggregated, not alerted on).
    pub out_of_order: u64,
    /// Readings whose window had closed: not aggregated.
    pub late: u64,
}

/// The engine: rules plus the state they act on.
pub struct Engine {
    rules: Rules,
    state: EngineState,
}

impl Engine {
    pub fn new(rules: Rules) -> Self {
        Engine {
            rules,
            state: EngineState::default(),
        }
    }

    /// Restores an engine from a [`Engine::snapshot`]; state of rules that no longer exist is dropped.
    pub fn restore(rules: Rules, snapshot: &[u8]) -> Result<Self, String> {
        let mut state: EngineState =
            serde_json::from_slice(snapshot).map_err(|e| format!("invalid analyze checkpoint: {e}"))?;
        state.retain_rules(&rules);
        Ok(Engine { rules, state })
    }

    /// The state as bytes, for checkpoints.
    pub fn snapshot(&self) -> Vec<u8> {
        serde_json::to_vec(&self.state).expect("engine state serialises")
    }

    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// Number of devices with state.
    pub fn devices(&self) -> usize {
        self.state.devices.len()
    }

    /// Evaluates a batch. Aggregates and latest states touched by the batch are emitted once each,
    /// with their values after the whole batch; alert transitions in the order they happened.
    pub fn process(&mut self, readings: &[Reading]) -> Output {
        let mut out = Output::default();
        let mut touched = state::Touched::default();
        for reading in readings {
            self.state.apply(&self.rules, reading, &mut touched, &mut out);
        }
        self.state.emit(&self.rules, touched, &mut out);
        out
    }
}

#[cfg(test)]
mod tests;
