//! One (device, metric): its windows, detectors, threshold rules and trend, advanced by one
//! in-order value at a time.

use super::detect::Trend;
use super::detectors::DetectorStates;
use super::ids::Key;
use super::threshold::{Ctx, ThresholdState};
use super::window::{Pane, Sink, Windows};
use super::{Output, Score};
use crate::DeviceId;
use crate::rules::{DetectorPlan, Rules};
use crate::ts::Ts;
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

/// One value of one reading.
#[derive(Clone, Copy)]
pub struct Value<'a> {
    pub device: &'a DeviceId,
    pub reading_id: &'a str,
    pub ts: Ts,
    pub value: f64,
}

/// Hot fields first (`repr(C)` keeps the order): what every value touches sits together. Aligned
/// to a cache line, 576 bytes span exactly 9 lines, of which a value touches the first 6 (all 9
/// with threshold rules): the engine's speed at fleet scale is the number of lines a reading
/// moves (BENCHMARKS "Session 9").
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[repr(C, align(64))]
pub struct Slot {
    /// The metric name's bytes, inline: looking a metric up chases no pointer.
    #[serde(skip)]
    pub key: Key<24>,
    /// A value arrived since the last partial window was emitted (in the key's padding).
    #[serde(skip)]
    pub dirty: bool,
    /// The metric has threshold rules, so a trend for forecasts: known without reading `trend`,
    /// whose tag would cost a metric without rules one more cache line per value.
    #[serde(skip)]
    forecasts: bool,
    /// ts and value of the newest in-order value.
    pub last: Option<(i64, f64)>,
    #[serde(skip)]
    plan: DetectorPlan,
    pub windows: Windows,
    det: DetectorStates,
    /// Only for metrics with threshold rules (forecasts).
    trend: Option<Trend>,
    thresholds: SmallVec<[ThresholdState; 1]>,
    pub metric: Box<str>,
}

// A field added to the slot costs every value a cache line once it crosses a line: on purpose.
#[cfg(target_pointer_width = "64")]
const _: () = assert!(
    std::mem::size_of::<Slot>() <= 9 * 64,
    "a slot grew past 9 cache lines"
);

impl Slot {
    pub fn new(metric: &str) -> Slot {
        Slot {
            key: Key::new(metric.as_bytes()),
            metric: metric.into(),
            ..Default::default()
        }
    }

    /// (Re)binds the slot to the rules: detector plan, threshold states by rule name (state of
    /// rules that no longer apply is dropped; new rules start fresh).
    pub fn bind(&mut self, rules: &Rules, device: &str) {
        self.key = Key::new(self.metric.as_bytes());
        self.plan = DetectorPlan::resolve(&rules.detectors, device, &self.metric);
        let mut old = std::mem::take(&mut self.thresholds);
        for (i, rule) in rules.thresholds.iter().enumerate() {
            if *rule.metric != *self.metric || !rule.applies_to(device) {
                continue;
            }
            let state = match old.iter().position(|s| *s.rule == *rule.name) {
                Some(k) => {
                    let mut s = old.swap_remove(k);
                    s.rule_idx = i as u16;
                    s
                }
                None => ThresholdState::new(i as u16, rule),
            };
            self.thresholds.push(state);
        }
        if self.thresholds.is_empty() {
            self.trend = None;
        } else if self.trend.is_none() {
            self.trend = Some(Trend::default());
        }
        self.forecasts = self.trend.is_some();
    }

    /// Advances on one value in event-time order (the caller checked `ts >= last`).
    #[inline]
    pub fn step(
        &mut self,
        rules: &Rules,
        v: &Value<'_>,
        out: &mut Output,
        scoring: bool,
        scratch: &mut Pane,
    ) {
        let Value {
            device,
            reading_id,
            ts,
            value,
        } = *v;
        let t = ts.millis();
        let settings = &rules.settings;
        self.windows.add(
            t,
            value,
            settings,
            &mut Sink {
                device,
                metric: &self.metric,
                out: &mut out.insights,
                scratch,
            },
        );
        self.dirty = true;
        let prev = self.last.replace((t, value));
        let base = &self.det.spike.base;
        let ctx = Ctx {
            device,
            reading_id,
            ts,
            value,
            baseline: (base.n >= 2).then(|| base.expect()),
            settings,
        };
        let score = self.det.step(
            &self.plan,
            &rules.detectors,
            &self.metric,
            prev,
            &ctx,
            &mut out.alerts,
            scoring,
        );
        if self.forecasts
            && let Some(trend) = self.trend.as_mut()
        {
            trend.add(t, value, Trend::SPAN);
            for th in &mut self.thresholds {
                let rule = &rules.thresholds[th.rule_idx as usize];
                th.step(rule, &ctx, &mut out.alerts);
                th.forecast(rule, &ctx, trend, &mut out.insights);
            }
        }
        if scoring {
            out.scores.push(Score {
                ts,
                device_id: device.clone(),
                metric: self.metric.to_string(),
                value,
                score: (super::detect::score(score, 1.0) * 1e4).round() / 1e4,
            });
        }
    }
}
