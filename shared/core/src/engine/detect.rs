//! The detectors' arithmetic: small, allocation-free state machines over one (device, metric)
//! series in event-time order. They report *signals*; `alerting` turns signals into alerts.
//!
//! - [`Baseline`]: a robust, trend-following expectation of the next value (Holt's linear
//!   exponential smoothing, with the innovation clipped at 3 standard deviations so outliers
//!   barely move it) and a scale (exponentially weighted mean absolute deviation; for normal
//!   noise `sigma = 1.2533 * mad`).
//! - [`Spike`]: robust z-score against a baseline; an excursion counts as a spike once the
//!   series is back (it lasted at most `max_len` readings); a longer one is a new level, which
//!   the baseline adopts without an alert (the level-shift detector reports those).
//! - [`Shift`]: two-sided CUSUM of clipped standardised residuals (Page, 1954) against a flat
//!   baseline (a learned trend would wander and bias it) that holds still while evidence builds. With allowance
//!   `k = 0.5` and the default decision interval `h = 15` its in-control average run length is
//!   about 2e7 readings per side for independent normal noise (Siegmund's approximation:
//!   `(e^(2k(h+1.166)) - 2k(h+1.166) - 1) / 2k^2`), one false alarm per ~6 years of a reading
//!   every 10 s; a 3-sigma shift is found in about 7 readings, 1 sigma in about 32.
//!   After a shift the level is re-learned (as in warm-up) against the scale from before it; a
//!   level that moves on again meanwhile (5 readings in a row more than 6 sigmas off the mean
//!   of the readings since the shift, on one side) is reported then and re-learning
//!   starts over at it, instead of being found only once the re-learning is over.
//! - [`Flat`]: the value has not moved more than a tolerance for N readings and T time.
//! - [`Trend`]: exponentially weighted least squares of value on time, for forecasts.

use serde::{Deserialize, Serialize};

/// sigma / mean absolute deviation for normal noise (sqrt(pi / 2)).
const MAD_TO_SIGMA: f64 = 1.253_314;
/// Innovations beyond this many sigmas are clipped when learning.
const CLIP: f64 = 3.0;
/// CUSUM increments are clipped to this many sigmas, so a short spike cannot look like a shift.
const CUSUM_CLIP: f64 = 3.0;
/// How far out a reading must be to restart a run's level estimate (see [`Shift::step`]).
const STEP_FAR_SIGMAS: f64 = 3.0;
/// While a shift's new level is re-learned: a reading this many sigmas (the scale from before
/// the shift) off the level being learned is "far"...
const RELEARN_FAR: f64 = 6.0;
/// ...and this many far readings in a row on one side are the level moving on again, once
/// the level has been learned from this many readings.
const RELEARN_RUN: u32 = 5;

/// `x.max(y)` for a `y` that is not NaN: the same result without `f64::max`'s NaN handling
/// (several instructions on x86-64, and this runs a few times per value).
#[inline]
fn larger(x: f64, y: f64) -> f64 {
    if x > y { x } else { y }
}

/// `x.clamp(-lim, lim)` for `lim >= 0` (or infinite): the same result without `f64::clamp`'s
/// check of its bounds.
#[inline]
fn within(x: f64, lim: f64) -> f64 {
    if x < -lim {
        -lim
    } else if x > lim {
        lim
    } else {
        x
    }
}

/// `if c { a } else { b }` as bit operations: no branch to mispredict.
#[inline]
fn pick(c: bool, a: f64, b: f64) -> f64 {
    let m = (c as u64).wrapping_neg();
    f64::from_bits((a.to_bits() & m) | (b.to_bits() & !m))
}

/// One CUSUM side's sum and count of values after `x`: unchanged when the side is not `on`,
/// else `x` added, to fresh sums when the side was zero (`restart`).
#[inline]
fn side_sums(on: bool, restart: bool, sum: f64, n: u32, x: f64) -> (f64, u32) {
    // `&`, not `&&`: both are computed, nothing branches.
    let restart = on & restart;
    let added = pick(restart, 0.0, sum) + x;
    let r = restart as u32;
    let n = ((n + on as u32) & r.wrapping_sub(1)) | r;
    (pick(on, added, sum), n)
}

/// Maps a statistic to a 0..1 anomaly score that is 0.5 at the detector's threshold.
pub fn score(statistic: f64, threshold: f64) -> f64 {
    if threshold <= 0.0 || !statistic.is_finite() {
        return if statistic > 0.0 { 1.0 } else { 0.0 };
    }
    let r = statistic.abs() / threshold;
    1.0 - (-std::f64::consts::LN_2 * r * r).exp()
}

/// A baseline's memory: its span in readings, and the EWMA weight once warm, `2 / (span + 1)`
/// (a division computed once per rule, not twice per value).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Memory {
    pub span: u32,
    pub alpha: f64,
}

impl Memory {
    pub fn new(span: u32) -> Memory {
        Memory {
            span,
            alpha: 2.0 / (span as f64 + 1.0),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    pub level: f64,
    pub trend: f64,
    pub mad: f64,
    pub n: u32,
}

impl Baseline {
    /// The expected value of the next reading.
    #[inline]
    pub fn expect(&self) -> f64 {
        self.level + self.trend
    }

    /// Standard deviation estimate, floored so a perfectly constant series does not make every
    /// tiny change infinitely anomalous.
    #[inline]
    pub fn sigma(&self) -> f64 {
        larger(MAD_TO_SIGMA * self.mad, 1e-9 + 1e-6 * self.level.abs())
    }

    /// Learns from `x`. During warm-up (`n < span`) it averages cumulatively, so the baseline is
    /// usable after a few readings rather than after a whole span.
    #[inline]
    pub fn learn(&mut self, x: f64, m: Memory, warm: bool) {
        self.learn_with(x, m, warm, true);
    }

    /// [`Baseline::learn`], optionally without the trend (a flat expectation).
    #[inline]
    pub fn learn_with(&mut self, x: f64, m: Memory, warm: bool, trend: bool) {
        if self.n == 0 {
            *self = Baseline {
                level: x,
                trend: 0.0,
                mad: 0.0,
                n: 1,
            };
            return;
        }
        let expect = self.expect();
        let lim = if warm { CLIP * self.sigma() } else { f64::INFINITY };
        self.update(x, expect, lim, m, trend);
    }

    /// [`Baseline::learn_with`] once warm (`n > 0`), with the expectation and sigma the caller
    /// already computed from this state for its z-score: the same arithmetic, done once.
    #[inline]
    fn learn_warm(&mut self, x: f64, expect: f64, sigma: f64, m: Memory, trend: bool) {
        self.update(x, expect, CLIP * sigma, m, trend);
    }

    /// The update itself: the innovation `x - expect` clamped to `±lim` (infinite: not clamped).
    #[inline]
    fn update(&mut self, x: f64, expect: f64, lim: f64, m: Memory, trend: bool) {
        let alpha = if self.n < m.span {
            1.0 / (self.n as f64 + 1.0)
        } else {
            m.alpha
        };
        let d = within(x - expect, lim);
        self.level = expect + alpha * d;
        // The trend learns only once warm (Holt's beta = 0.05): it follows ramps, daily cycles
        // and drifts; a jump moves it little, and a detected shift resets it.
        if trend && self.n >= m.span {
            self.trend += 0.05 * alpha * d;
        }
        self.mad += alpha * (d.abs() - self.mad);
        self.n = self.n.saturating_add(1);
    }

    /// Starts over at a new level, keeping the learned scale: the level is re-learned from the
    /// next readings as in warm-up (during which the detectors stay quiet).
    pub fn adopt(&mut self, level: f64) {
        self.level = level;
        self.trend = 0.0;
        self.n = 1;
    }
}

/// What a detector saw in one reading when it fired.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Signal {
    pub value: f64,
    pub baseline: f64,
    pub statistic: f64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Spike {
    pub base: Baseline,
    /// Readings in the current excursion (0: none).
    pub run: u32,
    /// The excursion's most extreme value and its z-score.
    pub peak: f64,
    pub peak_z: f64,
}

impl Spike {
    /// Advances on `x`; returns the spike once the series is back to normal. Also returns the
    /// reading's z-score (0 during warm-up) for scores.
    #[inline]
    pub fn step(
        &mut self,
        x: f64,
        threshold: f64,
        warmup: u32,
        m: Memory,
        max_len: u32,
    ) -> (Option<Signal>, f64) {
        if self.base.n < warmup {
            self.base.learn(x, m, false);
            return (None, 0.0);
        }
        let (expect, sigma) = (self.base.expect(), self.base.sigma());
        let z = (x - expect) / sigma;
        if z.abs() >= threshold {
            if self.run == 0 || z.abs() > self.peak_z.abs() {
                self.peak = x;
                self.peak_z = z;
            }
            self.run += 1;
            if self.run > max_len {
                // Too long for a spike: a new level. Adopt it quietly.
                self.base.adopt(x);
                self.run = 0;
            }
            return (None, z);
        }
        let fired = (self.run > 0).then_some(Signal {
            value: self.peak,
            baseline: expect,
            statistic: self.peak_z,
        });
        self.run = 0;
        // Warm (`n >= warmup >= 2`), and the baseline has not moved since `z`.
        self.base.learn_warm(x, expect, sigma, m, true);
        (fired, z)
    }
}

/// Level-shift state. While a shift's new level is re-learned the CUSUM is idle, and two of its
/// fields carry the re-learning instead (the checkpoint format stays as it was, and a
/// checkpoint from before this rule re-learns as it did then):
/// - `base.mad` is the scale from before the shift, **negated**: the mark of this phase (a
///   scale is never negative otherwise). It is not learned meanwhile: the first readings after
///   a shift, off an adopted level that pre-shift readings can bias, would inflate it at once.
/// - `hi_sum`/`hi_n` and `lo_sum`/`lo_n` are the sum and count of the current run of far
///   readings above and below the level being learned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Shift {
    pub base: Baseline,
    pub hi: f64,
    pub lo: f64,
    /// Sum and count of the values since each side last was zero: the new level's estimate.
    pub hi_sum: f64,
    pub hi_n: u32,
    pub lo_sum: f64,
    pub lo_n: u32,
}

impl Shift {
    /// Advances on `x`; returns the shift when a side's sum passes `h`, with the new level as
    /// `value`, the old one as `baseline`. Also returns max(hi, lo) for scores.
    #[inline]
    pub fn step(&mut self, x: f64, h: f64, k: f64, warmup: u32, m: Memory) -> (Option<Signal>, f64) {
        if self.base.n < warmup {
            if self.base.mad < 0.0 {
                return self.relearn(x, k, warmup);
            }
            self.base.learn_with(x, m, false, false);
            return (None, 0.0);
        }
        let (expect, sigma) = (self.base.expect(), self.base.sigma());
        let raw = (x - expect) / sigma;
        let z = within(raw, CUSUM_CLIP);
        let hi = larger(self.hi + z - k, 0.0);
        let lo = larger(self.lo - z - k, 0.0);
        // A side above zero adds `x` to its sums (the new level's estimate), which restart when the
        // side was zero, or at a step: a reading more than `STEP_FAR_SIGMAS` out while the run's mean
        // is within a quarter of the way to it. A side is often above zero by chance when a step
        // comes, and without the second restart those readings from before the step stayed in its
        // estimate: a 60-sigma step was reported as low as 18 sigmas (51 on average). The sums
        // take no branch (on noise each side is above zero at random, which no predictor learns);
        // a far reading is rare, so its test is one well-predicted branch.
        let (mut hi_restart, mut lo_restart) = (self.hi == 0.0, self.lo == 0.0);
        if raw.abs() > STEP_FAR_SIGMAS {
            let quarter = expect + (x - expect) / 4.0;
            hi_restart |= (raw > 0.0) & (self.hi_sum < quarter * self.hi_n as f64);
            lo_restart |= (raw < 0.0) & (self.lo_sum > quarter * self.lo_n as f64);
        }
        (self.hi_sum, self.hi_n) = side_sums(hi > 0.0, hi_restart, self.hi_sum, self.hi_n, x);
        (self.lo_sum, self.lo_n) = side_sums(lo > 0.0, lo_restart, self.lo_sum, self.lo_n, x);
        (self.hi, self.lo) = (hi, lo);
        let stat = larger(hi, lo);
        if stat > h {
            let level = if hi >= lo {
                self.hi_sum / self.hi_n.max(1) as f64
            } else {
                self.lo_sum / self.lo_n.max(1) as f64
            };
            let signal = Signal {
                value: level,
                baseline: expect,
                statistic: if hi >= lo { hi } else { -lo },
            };
            self.adopt(level);
            return (Some(signal), stat);
        }
        // While evidence of a change builds up, the baseline holds still: learning the new
        // values would hide the change it is testing for.
        if stat < h / 2.0 {
            self.base.learn_warm(x, expect, sigma, m, false);
        }
        (None, stat)
    }

    /// Starts re-learning at `level`: the scale frozen (negated, see [`Shift`]), no far run, the
    /// CUSUM at rest.
    fn adopt(&mut self, level: f64) {
        self.base.adopt(level);
        self.base.mad = -self.base.mad.abs();
        (self.hi, self.lo) = (0.0, 0.0);
        (self.hi_sum, self.hi_n, self.lo_sum, self.lo_n) = (0.0, 0, 0.0, 0);
    }

    /// One reading while a shift's level is re-learned: the level is the mean of the readings
    /// since the shift (the adopted estimate is only the reference for the first one: it is the
    /// mean of the few readings that raised the alarm, within a sigma or two of the level, and
    /// could then, as a small leftover, make the CUSUM find a second shift later). Once that mean
    /// holds [`RELEARN_RUN`] readings, a far reading joins its side's run, and a run of
    /// [`RELEARN_RUN`] is reported as a shift to the run's mean, where re-learning starts over;
    /// far readings are not learned (an outlier or the level moving on, neither is this level).
    /// The statistic reported is the run's CUSUM increments, unclipped (each
    /// at least `RELEARN_FAR - k`).
    fn relearn(&mut self, x: f64, k: f64, warmup: u32) -> (Option<Signal>, f64) {
        let sigma = Baseline {
            mad: -self.base.mad,
            ..self.base
        }
        .sigma();
        let d = x - self.base.level;
        let z = d / sigma;
        // Readings since the shift (the adopted estimate counts as the first `n`).
        let since = self.base.n.saturating_sub(1);
        let settled = since >= RELEARN_RUN;
        if settled && z.abs() > RELEARN_FAR {
            let (sum, n, other_sum, other_n) = if z > 0.0 {
                (&mut self.hi_sum, &mut self.hi_n, &mut self.lo_sum, &mut self.lo_n)
            } else {
                (&mut self.lo_sum, &mut self.lo_n, &mut self.hi_sum, &mut self.hi_n)
            };
            (*other_sum, *other_n) = (0.0, 0);
            *sum += x;
            *n += 1;
            if *n >= RELEARN_RUN {
                let level = *sum / *n as f64;
                let run_z = (level - self.base.level) / sigma;
                let signal = Signal {
                    value: level,
                    baseline: self.base.level,
                    statistic: run_z.signum() * (run_z.abs() - k) * *n as f64,
                };
                self.adopt(level);
                return (Some(signal), signal.statistic.abs());
            }
            return (None, 0.0);
        }
        (self.hi_sum, self.hi_n, self.lo_sum, self.lo_n) = (0.0, 0, 0.0, 0);
        self.base.level += d / (since as f64 + 1.0);
        self.base.n += 1;
        if self.base.n >= warmup {
            // Re-learnt: the scale learns again and the CUSUM takes over (its sums restart).
            self.base.mad = -self.base.mad;
        }
        (None, 0.0)
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Flat {
    pub reference: f64,
    pub since: i64,
    pub n: u32,
}

impl Flat {
    /// Advances; returns how long (ms) the value has stayed within `tolerance`, once it has for
    /// at least `min_readings` readings (else 0).
    #[inline]
    pub fn step(&mut self, x: f64, ts: i64, tolerance: f64, min_readings: u32) -> i64 {
        if self.n > 0 && (x - self.reference).abs() <= tolerance {
            self.n = self.n.saturating_add(1);
        } else {
            *self = Flat {
                reference: x,
                since: ts,
                n: 1,
            };
        }
        if self.n >= min_readings {
            ts - self.since
        } else {
            0
        }
    }
}

/// Exponentially weighted least squares of value on time (seconds from `anchor`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Trend {
    anchor: i64,
    w: f64,
    t: f64,
    x: f64,
    tt: f64,
    tx: f64,
    xx: f64,
    pub n: u32,
}

/// The fitted line at the latest reading. Its level and R² are computed when asked for: the
/// rate detector needs neither, and a forecast needs R² only when the line heads for the
/// threshold soon.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fit {
    /// Per second.
    pub slope: f64,
    /// Weighted sums of the values and times, the weight, and the time of the fit.
    x: f64,
    t: f64,
    w: f64,
    at: f64,
    cov: f64,
    var_t: f64,
    var_x: f64,
}

impl Fit {
    /// The line's value at the time of the fit.
    #[inline]
    pub fn level(&self) -> f64 {
        (self.x + self.slope * (self.w * self.at - self.t)) / self.w
    }

    #[inline]
    pub fn r_squared(&self) -> f64 {
        if self.var_x <= 1e-12 {
            0.0
        } else {
            (self.cov * self.cov / (self.var_t * self.var_x)).min(1.0)
        }
    }
}

impl Trend {
    /// Memory of the fit for forecasts, in readings.
    pub const SPAN: u32 = 30;

    /// Adds a reading; `span` is the fit's memory in readings.
    #[inline]
    pub fn add(&mut self, ts: i64, x: f64, span: u32) {
        if self.n == 0 {
            self.anchor = ts;
        }
        let mut t = (ts - self.anchor) as f64 / 1000.0;
        if t > 86_400.0 {
            // Re-anchor at the newest reading so the sums stay well conditioned.
            let d = t;
            self.tt += -2.0 * d * self.t + d * d * self.w;
            self.tx -= d * self.x;
            self.t -= d * self.w;
            self.anchor = ts;
            t = 0.0;
        }
        let decay = 1.0 - 1.0 / span.max(2) as f64;
        self.w = self.w * decay + 1.0;
        self.t = self.t * decay + t;
        self.x = self.x * decay + x;
        self.tt = self.tt * decay + t * t;
        self.tx = self.tx * decay + t * x;
        self.xx = self.xx * decay + x * x;
        self.n = self.n.saturating_add(1);
    }

    /// The fit at time `ts`, once there are `min_n` readings spread over time.
    pub fn fit(&self, ts: i64, min_n: u32) -> Option<Fit> {
        if self.n < min_n {
            return None;
        }
        let var_t = self.w * self.tt - self.t * self.t;
        let var_x = self.w * self.xx - self.x * self.x;
        if var_t <= 1e-12 {
            return None;
        }
        let cov = self.w * self.tx - self.t * self.x;
        Some(Fit {
            slope: cov / var_t,
            x: self.x,
            t: self.t,
            w: self.w,
            at: (ts - self.anchor) as f64 / 1000.0,
            cov,
            var_t,
            var_x,
        })
    }
}

#[cfg(test)]
#[path = "detect_tests.rs"]
pub(crate) mod tests;
