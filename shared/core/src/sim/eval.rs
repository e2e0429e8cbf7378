//! Scoring detections against the simulator's labels.
//!
//! - recall of a kind: the share of its labels that an alert of the same kind on the same
//!   device and metric caught within the label's span plus a tolerance; the delay is from the
//!   label's start to the first such alert;
//! - precision of a kind: the share of its detections (alerts opened, and repeat detections
//!   gathered into an open alert) that fall within *some* label's span on that device and
//!   metric. A level-shift alert during a labelled ramp is not a false alarm: something did
//!   happen there.

use super::{KINDS, Label, SimConfig, Simulator};
use crate::engine::Engine;
use crate::model::AlertEventKind;
use crate::rules::Rules;
use crate::{DeviceId, Ts};
use serde::Serialize;

/// One detection: an alert opening, or a repeat detection while open (`alert.updated`).
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    pub kind: String,
    pub device_id: DeviceId,
    /// `*` for silence.
    pub metric: String,
    pub at: Ts,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KindReport {
    pub kind: &'static str,
    pub labels: usize,
    pub detected: usize,
    pub detections: usize,
    pub explained: usize,
    pub precision: f64,
    pub recall: f64,
    pub median_delay_ms: Option<i64>,
}

/// How long after an anomaly's end a detector of `kind` may still react to it (its memory):
/// a detection that late still catches the anomaly, and is not a false alarm.
fn tolerance(kind: &str, interval_ms: i64) -> i64 {
    interval_ms
        * match kind {
            "spike" | "threshold" => 3,
            "level_shift" => 60,
            "rate" => 12,
            _ => 2,
        }
}

fn covers(l: &Label, d: &Detection, interval_ms: i64) -> bool {
    let tolerance = tolerance(&d.kind, interval_ms).max(tolerance(l.kind, interval_ms));
    let same_metric = match &l.metric {
        None => true,
        Some(m) => d.metric == "*" || *m == d.metric,
    };
    l.device_id == d.device_id
        && same_metric
        && d.at >= l.start
        && d.at.millis() <= l.end.millis() + tolerance
}

pub fn evaluate(labels: &[Label], detections: &[Detection], interval_ms: i64) -> Vec<KindReport> {
    KINDS
        .iter()
        .map(|&kind| {
            let mine: Vec<&Detection> = detections.iter().filter(|d| d.kind == kind).collect();
            let mut delays: Vec<i64> = labels
                .iter()
                .filter(|l| l.kind == kind)
                .filter_map(|l| {
                    mine.iter()
                        .filter(|d| covers(l, d, interval_ms))
                        .map(|d| d.at.millis() - l.start.millis())
                        .min()
                })
                .collect();
            delays.sort_unstable();
            let n_labels = labels.iter().filter(|l| l.kind == kind).count();
            let explained = mine
                .iter()
                .filter(|d| labels.iter().any(|l| covers(l, d, interval_ms)))
                .count();
            KindReport {
                kind,
                labels: n_labels,
                detected: delays.len(),
                detections: mine.len(),
                explained,
                precision: if mine.is_empty() {
                    1.0
                } else {
                    explained as f64 / mine.len() as f64
                },
                recall: if n_labels == 0 {
                    1.0
                } else {
                    delays.len() as f64 / n_labels as f64
                },
                median_delay_ms: delays.get(delays.len() / 2).copied(),
            }
        })
        .collect()
}

/// The rules the simulator is judged with: [`super::SIM_RULES`] after the built-in rules.
pub fn sim_rules() -> Rules {
    Rules::from_toml(&format!("{}{}", crate::rules::DEFAULT_RULES, super::SIM_RULES))
        .expect("simulator rules are valid")
}

/// Runs the simulator for `duration_ms` of event time straight through the engine (one batch
/// and one tick per round, the clock being event time) and scores what it detected.
pub fn run_offline(cfg: SimConfig, rules: Rules, duration_ms: i64) -> (Vec<KindReport>, Vec<Label>, u64) {
    let interval = cfg.interval_ms;
    let mut sim = Simulator::new(cfg);
    let mut engine = Engine::new(rules);
    let end = sim.now().millis() + duration_ms;
    let mut detections = Vec::new();
    let mut readings = 0u64;
    while sim.now().millis() < end {
        let now = sim.now();
        let batch = sim.round();
        readings += batch.len() as u64;
        let mut out = engine.process(&batch, now);
        out.alerts.extend(engine.tick(now).alerts);
        for e in out.alerts {
            if matches!(e.event, AlertEventKind::Opened | AlertEventKind::Updated) {
                detections.push(Detection {
                    kind: e.alert.kind.clone(),
                    device_id: e.alert.device_id.clone(),
                    metric: e.alert.metric.clone(),
                    at: now,
                });
            }
        }
    }
    let labels = sim.labels().to_vec();
    (evaluate(&labels, &detections, interval), labels, readings)
}
