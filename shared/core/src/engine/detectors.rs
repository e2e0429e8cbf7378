//! The built-in detectors of one (device, metric): spike, level shift, rate of change and
//! flatline, each turning its signals into alerts with evidence and a recommendation.
//! Spikes and level shifts are events: their alert opens on detection, gathers repeats as
//! updates, and resolves after `quiet` without one. Rate and flatline are conditions: their
//! alert resolves when the condition ends.

use super::alerting::{Episode, Opening, fmt_num, human_ms};
use super::detect::{Flat, Shift, Signal, Spike, Trend, score};
use super::threshold::Ctx;
use crate::model::{AlertEvent, Evidence};
use crate::rules::{Detector, DetectorKind, DetectorPlan};
use serde::{Deserialize, Serialize};

/// The hot fields inline (`repr(C)` keeps their order: a value touches as few cache lines as
/// possible), the alerts (touched only when open or firing) out of line: they were 200 of a
/// slot's 880 bytes, between its detector state and its trend. A boxed struct encodes as its
/// fields in place, so checkpoints are the same bytes as when they were inline.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[repr(C)]
pub struct DetectorStates {
    /// Readings in a row equal to the one before: a stuck value must not teach the baselines
    /// that the noise is zero (every reading after it would look like a spike).
    repeats: u32,
    /// Which alerts are open (bits below): checked on every reading instead of the episodes.
    open: u8,
    pub spike: Spike,
    spike_last: i64,
    pub shift: Shift,
    shift_last: i64,
    flat: Flat,
    cold: Box<Cold>,
}

/// What of [`DetectorStates`] most values do not touch.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Cold {
    spike_alert: Episode,
    shift_alert: Episode,
    flat_alert: Episode,
    rate_alert: Episode,
    /// A short least-squares fit: the rate of change is its slope, not the noisy difference of
    /// two readings. (Only metrics with a rate limit use it.)
    rate: Trend,
}

const SPIKE: u8 = 1;
const SHIFT: u8 = 2;
const FLAT: u8 = 4;
const RATE: u8 = 8;

/// Repeats after which spike and level-shift detection pause until the value moves.
const STUCK: u32 = 3;

/// The previous in-order (ts, value) of the metric, for rate of change.
pub type Prev = Option<(i64, f64)>;

impl DetectorStates {
    /// Runs every detector the plan enables on one in-order value; with `scoring`, returns the
    /// largest ratio of a detector's statistic to its threshold (the anomaly score is [`score`]
    /// of it), else 0: those ratios cost three divisions per value, for scores only. `metric` is
    /// the slot's field, read only on the rare paths that name it in an alert (read here, its box
    /// would cost every value the slot's last cache line).
    #[allow(clippy::too_many_arguments)]
    #[allow(
        clippy::borrowed_box,
        reason = "a pointer to the field, read only on the rare paths"
    )]
    #[inline(always)]
    pub fn step(
        &mut self,
        plan: &DetectorPlan,
        detectors: &[Detector],
        metric: &Box<str>,
        prev: Prev,
        c: &Ctx<'_>,
        alerts: &mut Vec<AlertEvent>,
        scoring: bool,
    ) -> f64 {
        let ts = c.ts.millis();
        let mut best = 0.0f64;
        self.repeats = match prev {
            Some((_, v)) if v == c.value => self.repeats.saturating_add(1),
            _ => 0,
        };
        let moving = self.repeats < STUCK;
        if let (Some(i), true) = (plan.spike(), moving) {
            let d = &detectors[i as usize];
            let (signal, z) = self
                .spike
                .step(c.value, d.threshold, d.warmup, d.memory(), d.max_len);
            if scoring {
                best = best.max(z.abs() / d.threshold);
            }
            if let Some(s) = signal {
                self.spike_last = ts;
                self.event(Which::Spike, d, metric, s, c, alerts);
                self.mark(SPIKE, self.cold.spike_alert.is_active());
            } else if self.open & SPIKE != 0 && ts - self.spike_last >= d.quiet_ms {
                quiet(&mut self.cold.spike_alert, d, metric, c, alerts);
                self.mark(SPIKE, self.cold.spike_alert.is_active());
            }
        }
        if let (Some(i), true) = (plan.level_shift(), moving) {
            let d = &detectors[i as usize];
            let (signal, sum) = self
                .shift
                .step(c.value, d.threshold, d.drift, d.warmup, d.memory());
            if scoring {
                best = best.max(sum / d.threshold);
            }
            if let Some(s) = signal {
                self.shift_last = ts;
                self.event(Which::Shift, d, metric, s, c, alerts);
                self.mark(SHIFT, self.cold.shift_alert.is_active());
            } else if self.open & SHIFT != 0 && ts - self.shift_last >= d.quiet_ms {
                quiet(&mut self.cold.shift_alert, d, metric, c, alerts);
                self.mark(SHIFT, self.cold.shift_alert.is_active());
            }
        }
        if let Some(i) = plan.flatline() {
            let d = &detectors[i as usize];
            let held = self.flat.step(c.value, ts, d.tolerance, d.min_readings);
            if scoring {
                best = best.max(held as f64 / d.for_ms as f64);
            }
            if held >= d.for_ms && held > 0 {
                if self.open & FLAT == 0 {
                    self.flat_open(d, metric, held, c, alerts);
                } else {
                    self.cold.flat_alert.holding();
                }
            } else if self.open & FLAT != 0 {
                self.flat_clear(d, metric, c, alerts);
            }
        }
        if let Some(i) = plan.rate() {
            let d = &detectors[i as usize];
            self.cold.rate.add(ts, c.value, d.span);
            // Needs half a span of readings, and time between them.
            if let (Some(fit), Some((_, pv))) = (self.cold.rate.fit(ts, (d.span / 2).max(3)), prev) {
                let rate = fit.slope * d.per_ms as f64 / 1000.0;
                if scoring {
                    best = best.max(rate.abs() / d.max_change);
                }
                self.rate_step(d, metric, rate, pv, c, alerts);
            }
        }
        best
    }

    /// The flatline alert opens (rare: out of line, so the common path stays small).
    #[cold]
    #[inline(never)]
    fn flat_open(
        &mut self,
        d: &Detector,
        metric: &str,
        held: i64,
        c: &Ctx<'_>,
        alerts: &mut Vec<AlertEvent>,
    ) {
        self.open |= FLAT;
        let reference = self.flat.reference;
        let evidence = Evidence {
            value: c.value,
            baseline: Some(reference),
            score: score(held as f64, d.for_ms as f64),
            statistic: held as f64 / 1000.0,
        };
        let message = format!(
            "{metric} on {} has not changed from {} for {} ({} readings): the sensor may be stuck",
            c.device,
            fmt_num(reference),
            human_ms(held),
            self.flat.n
        );
        let advice =
            "check the sensor's wiring and power, power-cycle it, and replace it if the value stays frozen";
        open(
            &mut self.cold.flat_alert,
            d,
            metric,
            evidence,
            message,
            advice,
            c,
            alerts,
        );
    }

    #[cold]
    #[inline(never)]
    fn flat_clear(&mut self, d: &Detector, metric: &str, c: &Ctx<'_>, alerts: &mut Vec<AlertEvent>) {
        let (dev, v) = (c.device, c.value);
        self.cold.flat_alert.clear(
            c.ts,
            v,
            c.settings,
            |_| {
                format!(
                    "{metric} on {dev} is changing again ({}), resolving {}",
                    fmt_num(v),
                    d.name
                )
            },
            alerts,
        );
        self.mark(FLAT, self.cold.flat_alert.is_active());
    }

    #[inline(never)]
    fn rate_step(
        &mut self,
        d: &Detector,
        metric: &str,
        rate: f64,
        prev: f64,
        c: &Ctx<'_>,
        alerts: &mut Vec<AlertEvent>,
    ) {
        let per = human_ms(d.per_ms);
        if rate.abs() > d.max_change {
            if self.open & RATE != 0 {
                self.cold.rate_alert.holding();
                return;
            }
            let evidence = Evidence {
                value: c.value,
                baseline: Some(prev),
                score: score(rate, d.max_change),
                statistic: rate,
            };
            let message = format!(
                "{metric} on {} is {} {} per {per} (limit {}), from {} to {}",
                c.device,
                if rate > 0.0 { "rising" } else { "falling" },
                fmt_num(rate.abs()),
                fmt_num(d.max_change),
                fmt_num(prev),
                fmt_num(c.value)
            );
            let advice = if rate > 0.0 {
                "a fast rise often precedes a failure: check what changed on the device (load, cooling, process) now"
            } else {
                "a fast fall often means a leak, a loss of supply or a failing sensor: check the device now"
            };
            open(
                &mut self.cold.rate_alert,
                d,
                metric,
                evidence,
                message,
                advice,
                c,
                alerts,
            );
            self.open |= RATE;
        } else if self.open & RATE != 0 {
            let (dev, v) = (c.device, c.value);
            self.cold.rate_alert.clear(
                c.ts,
                v,
                c.settings,
                |_| {
                    format!(
                        "{metric} on {dev} changes at {} per {per} again, resolving {}",
                        fmt_num(rate.abs()),
                        d.name
                    )
                },
                alerts,
            );
            self.mark(RATE, self.cold.rate_alert.is_active());
        }
    }

    fn mark(&mut self, bit: u8, on: bool) {
        if on {
            self.open |= bit;
        } else {
            self.open &= !bit;
        }
    }

    #[cold]
    #[inline(never)]
    fn event(
        &mut self,
        which: Which,
        d: &Detector,
        metric: &str,
        s: Signal,
        c: &Ctx<'_>,
        alerts: &mut Vec<AlertEvent>,
    ) {
        let episode = match which {
            Which::Spike => &mut self.cold.spike_alert,
            Which::Shift => &mut self.cold.shift_alert,
        };
        if episode.is_active() {
            // Another one while open: the alert gathers it (`alert.updated`).
            episode.touch(s.value, s.value >= s.baseline, alerts);
            return;
        }
        let evidence = Evidence {
            value: s.value,
            baseline: Some(s.baseline),
            score: score(s.statistic, d.threshold),
            statistic: s.statistic,
        };
        let up = s.value >= s.baseline;
        let (message, advice) = match which {
            Which::Spike => (
                format!(
                    "{metric} on {} spiked {} to {} (expected {}, robust z {:.1})",
                    c.device,
                    if up { "up" } else { "down" },
                    fmt_num(s.value),
                    fmt_num(s.baseline),
                    s.statistic
                ),
                "a short spike is often electrical noise or a loose connection: check the sensor's cabling; \
                 if spikes repeat, inspect the device for intermittent faults",
            ),
            Which::Shift => (
                format!(
                    "{metric} on {} shifted {} from about {} to about {} and stayed there",
                    c.device,
                    if up { "up" } else { "down" },
                    fmt_num(s.baseline),
                    fmt_num(s.value)
                ),
                "a lasting change of level: check for a changed setpoint, load or operating mode, \
                 a recalibrated or replaced sensor, or wear",
            ),
        };
        open(episode, d, metric, evidence, message, advice, c, alerts);
    }
}

enum Which {
    Spike,
    Shift,
}

#[allow(clippy::too_many_arguments)]
fn open(
    episode: &mut Episode,
    d: &Detector,
    metric: &str,
    evidence: Evidence,
    message: String,
    advice: &str,
    c: &Ctx<'_>,
    alerts: &mut Vec<AlertEvent>,
) {
    episode.open(
        Opening {
            device: c.device,
            rule: &d.name,
            scope: metric,
            kind: d.kind.as_str(),
            severity: d.severity,
            metric,
            threshold: threshold_of(d),
            ts: c.ts,
            reading_id: c.reading_id,
            evidence,
            message,
            recommendation: d.recommendation.clone().unwrap_or_else(|| advice.to_owned()),
        },
        c.settings,
        alerts,
    );
}

/// The `threshold` an alert of this detector reports: its own limit, in its own units.
pub fn threshold_of(d: &Detector) -> f64 {
    match d.kind {
        DetectorKind::Rate => d.max_change,
        DetectorKind::Flatline | DetectorKind::Silence => d.for_ms as f64 / 1000.0,
        DetectorKind::Spike | DetectorKind::LevelShift => d.threshold,
    }
}

#[cold]
#[inline(never)]
fn quiet(episode: &mut Episode, d: &Detector, metric: &str, c: &Ctx<'_>, alerts: &mut Vec<AlertEvent>) {
    let (dev, v) = (c.device, c.value);
    episode.clear(
        c.ts,
        v,
        c.settings,
        |_| {
            format!(
                "no {} on {metric} of {dev} for {}, resolving",
                d.name,
                human_ms(d.quiet_ms)
            )
        },
        alerts,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Moving the alerts out of line must not change a checkpoint: a boxed struct encodes as
    /// its fields in place, as they were when inline.
    #[test]
    fn the_out_of_line_alerts_encode_as_they_did_inline() {
        let mut s = DetectorStates {
            repeats: 2,
            open: SPIKE | RATE,
            spike_last: 7,
            shift_last: 9,
            ..Default::default()
        };
        s.spike.run = 3;
        s.shift.hi = 1.5;
        s.cold.rate.add(1_000, 2.0, 6);
        let c = &s.cold;
        let inline = (
            (
                s.repeats,
                s.open,
                s.spike,
                s.spike_last,
                s.shift,
                s.shift_last,
                s.flat,
            ),
            (
                &c.spike_alert,
                &c.shift_alert,
                &c.flat_alert,
                &c.rate_alert,
                c.rate,
            ),
        );
        assert_eq!(
            postcard::to_stdvec(&s).unwrap(),
            postcard::to_stdvec(&inline).unwrap()
        );
    }
}
