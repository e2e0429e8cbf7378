//! Synthetic sensors with labelled anomalies, for `iotstream simulate` and the detection-quality
//! test. Deterministic for a seed: the same configuration gives the same readings and labels.
//!
//! Every device reports four metrics every `interval_ms`: `temperature` (45-60, a daily cycle of
//! +-3, noise 0.3), `vibration` (0.06, noise 0.01), `pressure` (101.3, daily +-0.3, noise 0.05)
//! and `humidity` (45, daily +-4, noise 0.8), each drifting by up to one noise sigma a day. Each reading of a device with no anomaly running
//! starts one with probability `anomaly_rate` (after a quiet spell), of one of six kinds, each
//! labelled with its kind, device, metric and time span:
//! - `spike`: one reading 8-14 noise sigmas off;
//! - `level_shift`: a lasting step of 4-8 sigmas;
//! - `rate`: temperature ramps at 6-9 per minute for 90 s, holds 1 min, ramps back;
//! - `flatline`: a metric sticks at its last value for 20-40 min;
//! - `silence`: the device sends nothing for 8-15 min;
//! - `threshold`: temperature at 85-90 (past the built-in 80 °C rule) for 1-2 min.

mod eval;

pub use eval::{Detection, KindReport, evaluate, run_offline, sim_rules};

use crate::reading::{Reading, reading_key};
use crate::{DeviceId, Ts};

/// Added to the built-in rules and detectors to judge the simulator's labels: a rate-of-change
/// limit on temperature (rate detection needs a limit). See [`sim_rules`].
pub const SIM_RULES: &str = r#"
[[detectors]]
kind = "rate"
metrics = "temperature"
max_change = 3.0
per = "1m"
"#;

/// The anomaly kinds, as labelled (and as alert `kind`s).
pub const KINDS: [&str; 6] = ["spike", "level_shift", "rate", "flatline", "silence", "threshold"];

const DAY_MS: f64 = 86_400_000.0;
/// Readings a device runs normally before (and after) an anomaly.
const QUIET_READINGS: u32 = 120;

#[derive(Debug, Clone)]
pub struct SimConfig {
    pub devices: u32,
    /// Time between two readings of one device.
    pub interval_ms: i64,
    pub start: Ts,
    /// Probability, per reading of a device, that an anomaly starts.
    pub anomaly_rate: f64,
    pub seed: u64,
    /// Device ids are `<prefix><n>`.
    pub prefix: String,
}

/// One injected anomaly.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Label {
    pub kind: &'static str,
    pub device_id: DeviceId,
    /// `None` for silence (the whole device).
    pub metric: Option<String>,
    pub start: Ts,
    pub end: Ts,
}

/// SplitMix64 with Box-Muller normals: small, fast, deterministic.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut x = self.0;
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^ (x >> 31)
    }

    /// Uniform in (0, 1).
    pub fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }

    pub fn sign(&mut self) -> f64 {
        if self.next_u64() & 1 == 0 { 1.0 } else { -1.0 }
    }

    pub fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

struct Metric {
    name: &'static str,
    base: f64,
    daily: f64,
    noise: f64,
    /// Sensor drift, per day.
    drift: f64,
    /// The last value sent (a stuck sensor repeats it).
    last: f64,
    /// Lasting offset from level shifts.
    offset: f64,
}

enum Running {
    /// A level shift: the offset moved; nothing else runs.
    Step,
    Spike {
        metric: usize,
        delta: f64,
    },
    Ramp {
        rate_per_ms: f64,
        start: i64,
    },
    Stuck {
        metric: usize,
        value: f64,
    },
    Silent,
    /// Temperature held at about `level` (past the built-in 80 °C rule).
    Hot {
        level: f64,
    },
}

struct Device {
    id: DeviceId,
    phase: f64,
    metrics: Vec<Metric>,
    running: Option<(Running, i64)>,
    quiet: u32,
    n: u64,
}

/// The fleet: call [`Simulator::round`] for each `interval_ms` step.
pub struct Simulator {
    cfg: SimConfig,
    devices: Vec<Device>,
    rng: Rng,
    labels: Vec<Label>,
    t: i64,
}

impl Simulator {
    pub fn new(cfg: SimConfig) -> Self {
        let mut rng = Rng::new(cfg.seed);
        let devices = (1..=cfg.devices)
            .map(|i| Device {
                id: DeviceId::parse(&format!("{}{i}", cfg.prefix)).expect("simulated ids are valid"),
                phase: rng.range(0.0, std::f64::consts::TAU),
                metrics: [
                    ("temperature", rng.range(45.0, 60.0), 3.0, 0.3),
                    ("vibration", 0.06, 0.0, 0.01),
                    ("pressure", 101.3, 0.3, 0.05),
                    ("humidity", 45.0, 4.0, 0.8),
                ]
                .into_iter()
                .map(|(name, base, daily, noise)| Metric {
                    name,
                    base,
                    daily,
                    noise,
                    drift: rng.range(-1.0, 1.0) * noise,
                    offset: 0.0,
                    last: base,
                })
                .collect(),
                running: None,
                quiet: QUIET_READINGS,
                n: 0,
            })
            .collect();
        let t = cfg.start.millis();
        Simulator {
            cfg,
            devices,
            rng,
            labels: Vec::new(),
            t,
        }
    }

    pub fn devices(&self) -> impl Iterator<Item = &DeviceId> {
        self.devices.iter().map(|d| &d.id)
    }

    /// The event time of the next round.
    pub fn now(&self) -> Ts {
        Ts(self.t)
    }

    pub fn labels(&self) -> &[Label] {
        &self.labels
    }

    /// One reading from every device that is not silent, at the current time; then the clock
    /// moves on by `interval_ms`.
    pub fn round(&mut self) -> Vec<Reading> {
        let t = self.t;
        let mut out = Vec::with_capacity(self.devices.len());
        for i in 0..self.devices.len() {
            if let Some(r) = self.reading(i, t) {
                out.push(r);
            }
        }
        self.t += self.cfg.interval_ms;
        out
    }

    fn reading(&mut self, i: usize, t: i64) -> Option<Reading> {
        let interval = self.cfg.interval_ms;
        let rng = &mut self.rng;
        let d = &mut self.devices[i];
        if d.running.as_ref().is_some_and(|(_, end)| t > *end) {
            d.running = None;
            d.quiet = QUIET_READINGS;
        }
        if d.running.is_none() {
            if d.quiet > 0 {
                d.quiet -= 1;
            } else if rng.uniform() < self.cfg.anomaly_rate {
                let (running, end, label) = start_anomaly(d, rng, t, interval);
                d.running = Some((running, end));
                self.labels.push(label);
            }
        }
        if matches!(d.running, Some((Running::Silent, _))) {
            return None;
        }
        d.n += 1;
        let days = (t - self.cfg.start.millis()) as f64 / DAY_MS;
        let day = (t as f64 / DAY_MS) * std::f64::consts::TAU + d.phase;
        let mut metrics = crate::Metrics::new();
        for (k, m) in d.metrics.iter_mut().enumerate() {
            let mut v = m.base + m.offset + m.drift * days + m.daily * day.sin() + m.noise * rng.normal();
            match &d.running {
                Some((Running::Spike { metric, delta }, _)) if *metric == k => v += delta,
                Some((Running::Stuck { metric, value }, _)) if *metric == k => v = *value,
                Some((Running::Ramp { rate_per_ms, start }, end)) if k == 0 => {
                    // Up for 90 s, hold 60 s, down for 90 s.
                    let (up, hold) = (90_000.0, 60_000.0);
                    let dt = (t - start) as f64;
                    let total = (*end - *start) as f64;
                    let rise = if dt <= up {
                        dt
                    } else if dt <= up + hold {
                        up
                    } else {
                        (total - dt).max(0.0)
                    };
                    v += rate_per_ms * rise;
                }
                Some((Running::Hot { level }, _)) if k == 0 => v = level + m.noise * rng.normal(),
                _ => {}
            }
            m.last = round(v);
            metrics.insert(m.name.to_owned(), m.last);
        }
        // Unique per run (the start is part of it), deterministic for a configuration.
        let id = format!("{}-{}", self.cfg.start.millis(), d.n);
        Some(Reading {
            id: reading_key(&d.id, Some(&id), Ts(t), &metrics),
            device_id: d.id.clone(),
            ts: Ts(t),
            metrics,
            message_id: Some(id),
        })
    }
}

fn round(v: f64) -> f64 {
    (v * 1e4).round() / 1e4
}

fn start_anomaly(d: &mut Device, rng: &mut Rng, t: i64, interval: i64) -> (Running, i64, Label) {
    let kind = KINDS[(rng.next_u64() % KINDS.len() as u64) as usize];
    let any_metric = (rng.next_u64() % 4) as usize;
    let minutes = |rng: &mut Rng, lo: f64, hi: f64| (rng.range(lo, hi) * 60_000.0) as i64;
    let (running, end, metric) = match kind {
        "spike" => {
            let m = &d.metrics[any_metric];
            let delta = rng.sign() * rng.range(8.0, 14.0) * m.noise;
            (
                Running::Spike {
                    metric: any_metric,
                    delta,
                },
                t,
                Some(any_metric),
            )
        }
        "level_shift" => {
            let m = &mut d.metrics[any_metric];
            m.offset += rng.sign() * rng.range(4.0, 8.0) * m.noise;
            (Running::Step, t, Some(any_metric))
        }
        "rate" => {
            let per_minute = rng.range(6.0, 9.0) * rng.sign();
            let ramp = Running::Ramp {
                rate_per_ms: per_minute / 60_000.0,
                start: t,
            };
            (ramp, t + 240_000, Some(0))
        }
        "flatline" => {
            let m = &d.metrics[any_metric];
            let value = m.last;
            (
                Running::Stuck {
                    metric: any_metric,
                    value,
                },
                t + minutes(rng, 20.0, 40.0),
                Some(any_metric),
            )
        }
        "silence" => (Running::Silent, t + minutes(rng, 8.0, 15.0), None),
        _ => {
            let level = rng.range(85.0, 90.0);
            let end = t + interval * (6 + (rng.next_u64() % 7) as i64);
            (Running::Hot { level }, end, Some(0))
        }
    };
    let label = Label {
        kind,
        device_id: d.id.clone(),
        metric: metric.map(|k| d.metrics[k].name.to_owned()),
        start: Ts(t),
        end: Ts(end),
    };
    (running, end, label)
}

#[cfg(test)]
mod tests;
