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
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct MetricState {
    /// ts of the newest in-order value, and that value.
    last: Option<(Ts, f64)>,
    /// Open windows by start (ms).
    windows: BTreeMap<i64, Window>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Window {
    count: u64,
    min: f64,
    max: f64,
    sum: f64,
}

/// What a batch touched, in first-touched order (so output order is deterministic).
#[derive(Default)]
pub struct Touched {
    windows: Vec<(DeviceId, String, i64)>,
    seen_windows: std::collections::HashSet<(DeviceId, String, i64)>,
    devices: Vec<DeviceId>,
    seen_devices: std::collections::HashSet<DeviceId>,
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
        let device = self.devices.entry(reading.device_id.clone()).or_default();
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
        for (name, &value) in &reading.metrics {
            let metric = device.metrics.entry(name.clone()).or_default();
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
                touched.window(&reading.device_id, name, start);
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
                let st = device.rules.entry(rule.name.clone()).or_default();
                if let Some(event) = threshold::step(st, rule, reading, value) {
                    out.alerts.push(event);
                }
            }
        }
        if any_out_of_order {
            out.stats.out_of_order += 1;
        }
        if any_in_order {
            touched.device(&reading.device_id);
        }
    }

    pub(super) fn emit(&self, rules: &Rules, touched: Touched, out: &mut Output) {
        for (device_id, metric, start) in touched.windows {
            let Some(w) = self
                .devices
                .get(&device_id)
                .and_then(|d| d.metrics.get(&metric)?.windows.get(&start))
            else {
                continue; // closed within the same batch: its final value was emitted earlier
            };
            out.insights.push(Insight::Aggregate(Aggregate {
                device_id,
                metric,
                window_start: Ts(start),
                window_ms: rules.settings.window_ms,
                count: w.count,
                min: w.min,
                max: w.max,
                sum: w.sum,
            }));
        }
        for device_id in touched.devices {
            let Some(d) = self.devices.get(&device_id) else {
                continue;
            };
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
            out.insights.push(Insight::Latest(LatestState {
                device_id,
                last_seen,
                metrics,
            }));
        }
    }
}

impl Touched {
    fn window(&mut self, device: &DeviceId, metric: &str, start: i64) {
        let key = (device.clone(), metric.to_owned(), start);
        if self.seen_windows.insert(key.clone()) {
            self.windows.push(key);
        }
    }

    fn device(&mut self, device: &DeviceId) {
        if self.seen_devices.insert(device.clone()) {
            self.devices.push(device.clone());
        }
    }
}

/// FNV-1a over the id: stable across runs (unlike std's hasher), which checkpoints need.
fn id_hash(id: &str) -> u64 {
    id.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}
