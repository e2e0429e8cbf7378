//! Per-device engine state and how one reading changes it.

use super::threshold::{self, RuleState};
use super::{DEDUP_WINDOW, Output};
use crate::device::DeviceId;
use crate::model::{Aggregate, Insight, LatestState};
use crate::reading::Reading;
use crate::rules::Rules;
use crate::ts::Ts;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, VecDeque};

/// Everything the engine remembers, keyed by device.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct EngineState {
    pub(super) devices: HashMap<DeviceId, DeviceState>,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub(super) struct DeviceState {
    /// The device's event-time clock: its newest reading's ts.
    newest: Option<Ts>,
    /// Hashes of the last reading ids, to drop re-sends.
    recent: VecDeque<u64>,
    metrics: BTreeMap<String, MetricState>,
    rules: BTreeMap<String, RuleState>,
    /// Touched in the current batch (listed in `Touched`); not part of the checkpoint.
    #[serde(skip)]
    touched: bool,
    /// Latest state changed in the current batch.
    #[serde(skip)]
    latest_changed: bool,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct MetricState {
    /// ts of the newest in-order value, and that value.
    last: Option<(Ts, f64)>,
    /// Open windows by start (ms).
    windows: BTreeMap<i64, Window>,
    /// Windows updated in the current batch, in first-touched order.
    #[serde(skip)]
    changed_windows: Vec<i64>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Window {
    count: u64,
    min: f64,
    max: f64,
    sum: f64,
}

/// Devices touched by a batch, in first-touched order (so output order is deterministic).
#[derive(Default)]
pub struct Touched {
    devices: Vec<DeviceId>,
}

impl EngineState {
    pub(super) fn retain_rules(&mut self, rules: &Rules) {
        for d in self.devices.values_mut() {
            d.rules
                .retain(|name, _| rules.thresholds.iter().any(|r| &r.name == name));
        }
    }

    pub(super) fn apply(
        &mut self,
        rules: &Rules,
        reading: &Reading,
        touched: &mut Touched,
        out: &mut Output,
    ) {
        if !self.devices.contains_key(&reading.device_id) {
            self.devices
                .insert(reading.device_id.clone(), DeviceState::default());
        }
        let device = self.devices.get_mut(&reading.device_id).expect("inserted above");
        let hash = id_hash(&reading.id);
        if device.recent.contains(&hash) {
            out.stats.duplicates += 1;
            return;
        }
        if device.recent.len() == DEDUP_WINDOW {
            device.recent.pop_front();
        }
        device.recent.push_back(hash);
        out.stats.processed += 1;

        let newest = device.newest.map_or(reading.ts, |n| n.max(reading.ts));
        device.newest = Some(newest);
        let settings = &rules.settings;
        let open_from = newest.millis() - settings.allowed_lateness_ms;
        let mut any_in_order = false;
        let mut any_out_of_order = false;
        if !device.touched {
            device.touched = true;
            touched.devices.push(reading.device_id.clone());
        }
        for (name, &value) in &reading.metrics {
            if !device.metrics.contains_key(name) {
                device.metrics.insert(name.clone(), MetricState::default());
            }
            let metric = device.metrics.get_mut(name).expect("inserted above");
            let start = reading.ts.floor(settings.window_ms).millis();
            if start + settings.window_ms > open_from {
                let w = metric.windows.entry(start).or_insert(Window {
                    count: 0,
                    min: f64::INFINITY,
                    max: f64::NEG_INFINITY,
                    sum: 0.0,
                });
                w.count += 1;
                w.min = w.min.min(value);
                w.max = w.max.max(value);
                w.sum += value;
                if !metric.changed_windows.contains(&start) {
                    metric.changed_windows.push(start);
                }
            } else {
                out.stats.late += 1;
            }
            // Drop windows nobody can add to any more; their last emission was final.
            while let Some((&first, _)) = metric.windows.first_key_value() {
                if first + settings.window_ms > open_from {
                    break;
                }
                metric.windows.pop_first();
            }
            let in_order = metric.last.is_none_or(|(t, _)| reading.ts >= t);
            if !in_order {
                any_out_of_order = true;
                continue;
            }
            any_in_order = true;
            metric.last = Some((reading.ts, value));
            for rule in rules.thresholds.iter().filter(|r| &r.metric == name) {
                if !rule.applies_to(reading.device_id.as_str()) {
                    continue;
                }
                if !device.rules.contains_key(&rule.name) {
                    device.rules.insert(rule.name.clone(), RuleState::default());
                }
                let st = device.rules.get_mut(&rule.name).expect("inserted above");
                if let Some(event) = threshold::step(st, rule, reading, value) {
                    out.alerts.push(event);
                }
            }
        }
        if any_out_of_order {
            out.stats.out_of_order += 1;
        }
        if any_in_order {
            device.latest_changed = true;
        }
    }

    pub(super) fn emit(&mut self, rules: &Rules, touched: Touched, out: &mut Output) {
        let mut latest = Vec::new();
        for device_id in touched.devices {
            let Some(d) = self.devices.get_mut(&device_id) else {
                continue;
            };
            d.touched = false;
            for (metric, m) in d.metrics.iter_mut() {
                for start in m.changed_windows.drain(..) {
                    // A window closed within the same batch is gone: its last emission was final.
                    let Some(w) = m.windows.get(&start) else { continue };
                    out.insights.push(Insight::Aggregate(Aggregate {
                        device_id: device_id.clone(),
                        metric: metric.clone(),
                        window_start: Ts(start),
                        window_ms: rules.settings.window_ms,
                        count: w.count,
                        min: w.min,
                        max: w.max,
                        sum: w.sum,
                    }));
                }
            }
            if std::mem::take(&mut d.latest_changed) {
                let metrics: BTreeMap<String, f64> = d
                    .metrics
                    .iter()
                    .filter_map(|(k, m)| m.last.map(|(_, v)| (k.clone(), v)))
                    .collect();
                let last_seen = d
                    .metrics
                    .values()
                    .filter_map(|m| m.last.map(|(t, _)| t))
                    .max()
                    .unwrap_or_default();
                latest.push(Insight::Latest(LatestState {
                    device_id,
                    last_seen,
                    metrics,
                }));
            }
        }
        out.insights.extend(latest);
    }
}

/// FNV-1a over the id: stable across runs (unlike std's hasher), which checkpoints need.
fn id_hash(id: &str) -> u64 {
    id.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}
