//! Built-in detectors in the rules file: `[[detectors]]` entries, each of one `kind`, scoped by
//! metric and device globs. For one (device, metric, kind) the *last* matching entry applies, so
//! a later, narrower entry overrides a broad one; `enabled = false` turns a kind off there.
//! The built-in defaults come first (unless `[settings] builtin_detectors = false`), so a user's
//! file only states what differs.

use crate::engine::detect::Memory;
use crate::error::FieldError;
use crate::model::Severity;
use crate::ts::parse_duration_ms;
use serde::Deserialize;

/// What a detector looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DetectorKind {
    /// Short excursions from the recent baseline (robust z-score).
    Spike,
    /// A sustained change of level (two-sided CUSUM).
    LevelShift,
    /// Changing faster than a limit.
    Rate,
    /// A stuck sensor: the value does not change for a while.
    Flatline,
    /// No reading from a device for a while (processing time).
    Silence,
}

impl DetectorKind {
    pub const ALL: [DetectorKind; 5] = [
        DetectorKind::Spike,
        DetectorKind::LevelShift,
        DetectorKind::Rate,
        DetectorKind::Flatline,
        DetectorKind::Silence,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DetectorKind::Spike => "spike",
            DetectorKind::LevelShift => "level_shift",
            DetectorKind::Rate => "rate",
            DetectorKind::Flatline => "flatline",
            DetectorKind::Silence => "silence",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// One `[[detectors]]` entry, validated. Fields a kind does not use keep their defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct Detector {
    pub kind: DetectorKind,
    /// Alert rule name; the kind's name by default.
    pub name: String,
    pub metrics: String,
    pub devices: String,
    pub enabled: bool,
    pub severity: Severity,
    /// spike: robust z-score that counts as a spike. level_shift: CUSUM decision interval `h`,
    /// in standard deviations.
    pub threshold: f64,
    /// level_shift: CUSUM allowance `k` (half the smallest shift worth detecting), in standard
    /// deviations.
    pub drift: f64,
    /// spike, level_shift: readings needed to learn the baseline before the detector may fire.
    pub warmup: u32,
    /// spike, level_shift: baseline memory, in readings (EWMA span, 60); rate: readings the
    /// slope is fitted over (6). Set by the rules file: [`Detector::memory`] is derived from it
    /// when the entry is parsed.
    pub span: u32,
    /// spike: longest excursion (readings) still called a spike; longer is a level change.
    pub max_len: u32,
    /// spike, level_shift: an open alert resolves after this long without a new detection.
    pub quiet_ms: i64,
    /// flatline, silence: how long (flatline: event time; silence: processing time).
    pub for_ms: i64,
    /// flatline: changes up to this size count as "no change".
    pub tolerance: f64,
    /// flatline: readings that must be unchanged, besides the duration.
    pub min_readings: u32,
    /// rate: the largest change allowed per `per_ms`.
    pub max_change: f64,
    pub per_ms: i64,
    pub recommendation: Option<String>,
    /// `span` with its EWMA weight, derived once `span` is final.
    memory: Memory,
}

impl Detector {
    fn defaults(kind: DetectorKind) -> Detector {
        let (threshold, severity, for_ms) = match kind {
            DetectorKind::Spike => (6.0, Severity::Warning, 0),
            DetectorKind::LevelShift => (15.0, Severity::Warning, 0),
            DetectorKind::Flatline => (0.0, Severity::Warning, 15 * 60_000),
            DetectorKind::Silence => (0.0, Severity::Critical, 5 * 60_000),
            DetectorKind::Rate => (0.0, Severity::Warning, 0),
        };
        Detector {
            kind,
            // Rate fits a line over its span: short, so it follows a ramp within a few readings.
            span: if kind == DetectorKind::Rate { 6 } else { 60 },
            name: kind.as_str().to_owned(),
            metrics: "*".into(),
            devices: "*".into(),
            enabled: true,
            severity,
            threshold,
            drift: 0.5,
            warmup: 30,
            max_len: 5,
            quiet_ms: 60_000,
            for_ms,
            tolerance: 0.0,
            min_readings: 10,
            max_change: 0.0,
            per_ms: 60_000,
            recommendation: None,
            memory: Memory::new(60),
        }
        .with_memory()
    }

    /// Derives what depends on `span`.
    fn with_memory(mut self) -> Detector {
        self.memory = Memory::new(self.span);
        self
    }

    /// The baselines' memory (spike, level_shift): `span` and its EWMA weight.
    #[inline]
    pub fn memory(&self) -> Memory {
        self.memory
    }
}

/// The built-in detectors: spikes, level shifts, flatline and silence on every metric and device.
/// Rate of change needs a limit, so it is only on where a file sets one.
pub const DEFAULT_DETECTORS: &str = r#"
[[detectors]]
kind = "spike"
[[detectors]]
kind = "level_shift"
[[detectors]]
kind = "flatline"
[[detectors]]
kind = "silence"
"#;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DetectorWire {
    kind: String,
    name: Option<String>,
    metrics: Option<String>,
    devices: Option<String>,
    enabled: Option<bool>,
    severity: Option<String>,
    threshold: Option<f64>,
    drift: Option<f64>,
    warmup: Option<u32>,
    span: Option<u32>,
    max_len: Option<u32>,
    quiet: Option<String>,
    #[serde(rename = "for")]
    for_: Option<String>,
    tolerance: Option<f64>,
    min_readings: Option<u32>,
    max_change: Option<f64>,
    per: Option<String>,
    recommendation: Option<String>,
}

fn duration(field: &str, v: Option<String>, min_ms: i64, into: &mut i64, errors: &mut Vec<FieldError>) {
    if let Some(s) = v {
        match parse_duration_ms(&s) {
            Some(ms) if ms >= min_ms => *into = ms,
            _ => errors.push(FieldError::new(
                field,
                format!("must be a duration of at least {min_ms}ms, like 30s or 5m"),
            )),
        }
    }
}

fn positive(field: &str, v: Option<f64>, into: &mut f64, errors: &mut Vec<FieldError>) {
    if let Some(x) = v {
        if x.is_finite() && x > 0.0 {
            *into = x;
        } else {
            errors.push(FieldError::new(field, "must be a positive number"));
        }
    }
}

pub(super) fn parse_detector(w: DetectorWire) -> Result<Detector, Vec<FieldError>> {
    let mut errors = Vec::new();
    let Some(kind) = DetectorKind::parse(&w.kind) else {
        return Err(vec![FieldError::new(
            "kind",
            "must be spike, level_shift, rate, flatline or silence",
        )]);
    };
    let mut d = Detector::defaults(kind);
    if let Some(name) = w.name {
        if name.is_empty() || name.len() > 64 {
            errors.push(FieldError::new("name", "must be 1-64 characters"));
        }
        d.name = name;
    }
    if let Some(m) = w.metrics {
        if kind == DetectorKind::Silence {
            errors.push(FieldError::new(
                "metrics",
                "silence is per device: it has no metrics",
            ));
        }
        d.metrics = m;
    }
    d.devices = w.devices.unwrap_or(d.devices);
    d.enabled = w.enabled.unwrap_or(true);
    if let Some(s) = w.severity {
        match super::parse_severity(&s) {
            Some(sev) => d.severity = sev,
            None => errors.push(FieldError::new("severity", "must be info, warning or critical")),
        }
    }
    positive("threshold", w.threshold, &mut d.threshold, &mut errors);
    positive("drift", w.drift, &mut d.drift, &mut errors);
    positive("max_change", w.max_change, &mut d.max_change, &mut errors);
    if let Some(t) = w.tolerance {
        if t.is_finite() && t >= 0.0 {
            d.tolerance = t;
        } else {
            errors.push(FieldError::new("tolerance", "must be zero or a positive number"));
        }
    }
    for (field, v, into, min) in [
        ("warmup", w.warmup, &mut d.warmup, 2),
        ("span", w.span, &mut d.span, 2),
        ("max_len", w.max_len, &mut d.max_len, 1),
        ("min_readings", w.min_readings, &mut d.min_readings, 2),
    ] {
        match v {
            Some(n) if n < min || n > 100_000 => errors.push(FieldError::new(
                field,
                format!("must be between {min} and 100000"),
            )),
            Some(n) => *into = n,
            None => {}
        }
    }
    duration("quiet", w.quiet, 0, &mut d.quiet_ms, &mut errors);
    duration("for", w.for_, 1_000, &mut d.for_ms, &mut errors);
    duration("per", w.per, 1, &mut d.per_ms, &mut errors);
    if kind == DetectorKind::Rate && d.enabled && d.max_change == 0.0 {
        errors.push(FieldError::new(
            "max_change",
            "a rate detector needs max_change (and per)",
        ));
    }
    super::check_recommendation(w.recommendation.as_deref(), &mut errors);
    d.recommendation = w.recommendation;
    if errors.is_empty() {
        Ok(d.with_memory())
    } else {
        Err(errors)
    }
}

/// Which entry of each kind applies to one (device, metric): indexes into `Rules::detectors`.
/// Eight bytes (`u16::MAX` for none; an `Option<u16>` takes four): every value reads it, from
/// the first cache line of its slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DetectorPlan([u16; 4]);

/// Position of each kind in [`DetectorPlan`].
const SPIKE: usize = 0;
const LEVEL_SHIFT: usize = 1;
const RATE: usize = 2;
const FLATLINE: usize = 3;
const NONE: u16 = u16::MAX;

impl Default for DetectorPlan {
    fn default() -> Self {
        DetectorPlan([NONE; 4])
    }
}

impl DetectorPlan {
    fn get(&self, kind: usize) -> Option<u16> {
        let i = self.0[kind];
        (i != NONE).then_some(i)
    }

    pub fn spike(&self) -> Option<u16> {
        self.get(SPIKE)
    }

    pub fn level_shift(&self) -> Option<u16> {
        self.get(LEVEL_SHIFT)
    }

    pub fn rate(&self) -> Option<u16> {
        self.get(RATE)
    }

    pub fn flatline(&self) -> Option<u16> {
        self.get(FLATLINE)
    }

    /// The plan for one (device, metric): for each kind, the last enabled-or-not entry matching
    /// both globs wins, and a disabled winner means off.
    pub fn resolve(detectors: &[Detector], device: &str, metric: &str) -> DetectorPlan {
        let mut plan = DetectorPlan::default();
        for (i, d) in detectors.iter().enumerate() {
            if !crate::device::glob_match(&d.devices, device)
                || !crate::device::glob_match(&d.metrics, metric)
            {
                continue;
            }
            let kind = match d.kind {
                DetectorKind::Spike => SPIKE,
                DetectorKind::LevelShift => LEVEL_SHIFT,
                DetectorKind::Rate => RATE,
                DetectorKind::Flatline => FLATLINE,
                DetectorKind::Silence => continue,
            };
            // An entry past index 65,534 cannot be named here (no rules file holds that many).
            plan.0[kind] = match u16::try_from(i) {
                Ok(i) if d.enabled && i != NONE => i,
                _ => NONE,
            };
        }
        plan
    }

    /// The silence entry for a device, if any.
    pub fn silence(detectors: &[Detector], device: &str) -> Option<u16> {
        let mut found = None;
        for (i, d) in detectors.iter().enumerate() {
            if d.kind == DetectorKind::Silence && crate::device::glob_match(&d.devices, device) {
                found = d.enabled.then_some(i as u16);
            }
        }
        found
    }
}
