//! The rules file (CONTRACT §5), parsed into valid rules or errors naming the rule and field.

use crate::device::glob_match;
use crate::error::FieldError;
use crate::model::Severity;
use crate::reading::MetricName;
use crate::ts::parse_duration_ms;
use serde::Deserialize;

mod detectors;
pub use detectors::{DEFAULT_DETECTORS, Detector, DetectorKind, DetectorPlan};
use detectors::{DetectorWire, parse_detector};

/// Which side of the threshold is the alarm.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Direction {
    Above,
    Below,
}

/// A threshold rule with hysteresis and duration.
#[derive(Debug, Clone, PartialEq)]
pub struct ThresholdRule {
    pub name: String,
    pub metric: String,
    pub direction: Direction,
    pub threshold: f64,
    /// Resolves once the value is back past this (defaults to the threshold).
    pub clear: f64,
    /// The breach must hold this long in event time before the alert opens.
    pub for_ms: i64,
    /// ... and for this many readings in a row ("N times in a row"; 1 = at once).
    pub count: u32,
    pub severity: Severity,
    /// Device glob; `*` by default.
    pub devices: String,
    /// Optional operator advice carried by every alert of this rule.
    pub recommendation: Option<String>,
}

impl ThresholdRule {
    pub fn applies_to(&self, device: &str) -> bool {
        glob_match(&self.devices, device)
    }

    /// True when `value` is in breach.
    pub fn breached(&self, value: f64) -> bool {
        match self.direction {
            Direction::Above => value > self.threshold,
            Direction::Below => value < self.threshold,
        }
    }

    /// True when `value` is back past the clear level (hysteresis).
    pub fn cleared(&self, value: f64) -> bool {
        match self.direction {
            Direction::Above => value < self.clear,
            Direction::Below => value > self.clear,
        }
    }
}

/// A window kind: tumbling when `hop_ms == size_ms`, hopping (sliding by `hop_ms`) otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSpec {
    pub size_ms: i64,
    pub hop_ms: i64,
}

/// Engine settings that live in the rules file's `[settings]` table.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Window kinds computed for every (device, metric): `[[windows]]`, by default a 1-minute
    /// tumbling window and a 5-minute window every minute. Set with [`Settings::set_windows`].
    windows: Vec<WindowSpec>,
    /// The per-device reorder buffer: readings up to this much older than the device's newest
    /// are re-sorted before analysis (so results equal in-order input); older ones are late.
    /// 0 (the default) analyses at once and treats any out-of-order reading as late.
    pub allowed_lateness_ms: i64,
    /// Flap suppression: an alert that opened this many times within `flap_window_ms` is
    /// flapping, and resolves only once clear for a whole `flap_window_ms`.
    pub flap_max: u32,
    pub flap_window_ms: i64,
    /// Trend forecasts for threshold rules look this far ahead (0 turns them off).
    pub forecast_horizon_ms: i64,
    /// Derived from `windows` (see [`Settings::pane_ms`]), kept because the engine asks for
    /// every value.
    pane: i64,
    max_window: i64,
}

impl Settings {
    /// The pane: the largest duration every window size and hop is a multiple of.
    #[inline]
    pub fn pane_ms(&self) -> i64 {
        self.pane
    }

    #[inline]
    pub fn max_window_ms(&self) -> i64 {
        self.max_window
    }

    /// Sets the windows (and what derives from them).
    pub fn set_windows(&mut self, windows: Vec<WindowSpec>) {
        self.pane = windows.iter().flat_map(|w| [w.size_ms, w.hop_ms]).fold(0, gcd);
        self.max_window = windows.iter().map(|w| w.size_ms).max().unwrap_or(0);
        self.windows = windows;
    }

    pub fn windows(&self) -> &[WindowSpec] {
        &self.windows
    }
}

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

impl Default for Settings {
    fn default() -> Self {
        let mut s = Settings {
            windows: Vec::new(),
            allowed_lateness_ms: 0,
            flap_max: 3,
            flap_window_ms: 10 * 60_000,
            forecast_horizon_ms: 30 * 60_000,
            pane: 0,
            max_window: 0,
        };
        s.set_windows(vec![
            WindowSpec {
                size_ms: 60_000,
                hop_ms: 60_000,
            },
            WindowSpec {
                size_ms: 300_000,
                hop_ms: 60_000,
            },
        ]);
        s
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Rules {
    pub thresholds: Vec<ThresholdRule>,
    pub detectors: Vec<Detector>,
    pub settings: Settings,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    #[serde(default)]
    rules: Vec<RuleWire>,
    #[serde(default)]
    detectors: Vec<DetectorWire>,
    #[serde(default)]
    windows: Vec<WindowWire>,
    #[serde(default)]
    settings: Option<SettingsWire>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SettingsWire {
    /// Shorthand for one tumbling window of this size (when there is no `[[windows]]`).
    window: Option<String>,
    allowed_lateness: Option<String>,
    flap_max: Option<u32>,
    flap_window: Option<String>,
    forecast_horizon: Option<String>,
    builtin_detectors: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WindowWire {
    size: String,
    hop: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleWire {
    name: String,
    metric: String,
    above: Option<f64>,
    below: Option<f64>,
    clear: Option<f64>,
    #[serde(rename = "for")]
    for_: Option<String>,
    count: Option<u32>,
    severity: Option<String>,
    devices: Option<String>,
    recommendation: Option<String>,
}

/// The rules used when no file is given: sensible defaults for the common metrics of the
/// newcomer's tour and the simulator (the built-in detectors are added to every file).
pub const DEFAULT_RULES: &str = r#"
[[rules]]
name = "overheat"
metric = "temperature"
above = 80.0
clear = 75.0
for = "0s"
severity = "critical"
recommendation = "inspect cooling and load on the device; shut it down if it keeps rising"

[[rules]]
name = "high-vibration"
metric = "vibration"
above = 0.5
clear = 0.4
for = "10s"
severity = "warning"
recommendation = "check bearings, mounting and balance"
"#;

/// Most panes one window may span, and most window kinds: bounds state per (device, metric).
const MAX_PANES_PER_WINDOW: i64 = 60;
const MAX_WINDOWS: usize = 4;

/// Longest recommendation a rule or detector may carry. Every alert repeats it, and Kafka records,
/// webhook bodies and Functions invocations carry alerts: bounded like every other input.
pub const MAX_RECOMMENDATION_CHARS: usize = 1_000;

/// A recommendation, when set, is 1-[`MAX_RECOMMENDATION_CHARS`] characters.
fn check_recommendation(r: Option<&str>, errors: &mut Vec<FieldError>) {
    if r.is_some_and(|r| r.trim().is_empty() || r.chars().count() > MAX_RECOMMENDATION_CHARS) {
        errors.push(FieldError::new(
            "recommendation",
            format!("must be 1-{MAX_RECOMMENDATION_CHARS} characters (not blank)"),
        ));
    }
}

impl Rules {
    pub fn defaults() -> Rules {
        Rules::from_toml(DEFAULT_RULES).expect("built-in rules are valid")
    }

    /// Parses a rules file, reporting every invalid rule with its index and field.
    pub fn from_toml(text: &str) -> Result<Rules, Vec<FieldError>> {
        let file: RulesFile =
            toml::from_str(text).map_err(|e| vec![FieldError::new("rules", e.message().to_owned())])?;
        let mut errors = Vec::new();
        let mut thresholds = Vec::new();
        let mut names = std::collections::HashSet::new();
        for (i, r) in file.rules.into_iter().enumerate() {
            match parse_rule(r) {
                Ok(rule) if !names.insert(rule.name.clone()) => {
                    errors.push(FieldError::new("name", format!("duplicate rule name {:?}", rule.name)).at(i))
                }
                Ok(rule) => thresholds.push(rule),
                Err(errs) => errors.extend(errs.into_iter().map(|e| e.at(i))),
            }
        }
        let wire = file.settings.unwrap_or(SettingsWire {
            window: None,
            allowed_lateness: None,
            flap_max: None,
            flap_window: None,
            forecast_horizon: None,
            builtin_detectors: None,
        });
        let mut detectors = Vec::new();
        if wire.builtin_detectors.unwrap_or(true) {
            let builtin: RulesFile = toml::from_str(DEFAULT_DETECTORS).expect("built-in detectors parse");
            for d in builtin.detectors {
                detectors.push(parse_detector(d).expect("built-in detectors are valid"));
            }
        }
        for (i, d) in file.detectors.into_iter().enumerate() {
            match parse_detector(d) {
                Ok(d) if names.contains(&d.name) => errors.push(
                    FieldError::new("detectors.name", format!("{:?} is already a rule name", d.name)).at(i),
                ),
                Ok(d) => detectors.push(d),
                Err(errs) => errors.extend(errs.into_iter().map(|mut e| {
                    e.field = format!("detectors.{}", e.field);
                    e.at(i)
                })),
            }
        }
        let settings = parse_settings(wire, file.windows, &mut errors);
        if errors.is_empty() {
            Ok(Rules {
                thresholds,
                detectors,
                settings,
            })
        } else {
            Err(errors)
        }
    }
}

fn parse_settings(s: SettingsWire, windows: Vec<WindowWire>, errors: &mut Vec<FieldError>) -> Settings {
    let mut settings = Settings::default();
    let dur = |field: &str, v: &str, min: i64, errors: &mut Vec<FieldError>| match parse_duration_ms(v) {
        Some(ms) if ms >= min => Some(ms),
        _ => {
            errors.push(FieldError::new(
                field,
                format!("must be a duration of at least {min}ms, like 1m"),
            ));
            None
        }
    };
    if !windows.is_empty() {
        let mut specs = Vec::new();
        for (i, w) in windows.iter().enumerate() {
            let size = dur("windows.size", &w.size, 1_000, errors);
            let hop = match &w.hop {
                Some(h) => dur("windows.hop", h, 1_000, errors),
                None => size,
            };
            match (size, hop) {
                (Some(size_ms), Some(hop_ms)) if hop_ms <= size_ms => {
                    specs.push(WindowSpec { size_ms, hop_ms })
                }
                (Some(_), Some(_)) => {
                    errors.push(FieldError::new("windows.hop", "must not be longer than size").at(i))
                }
                _ => {}
            }
        }
        settings.set_windows(specs);
    } else if let Some(w) = s.window
        && let Some(ms) = dur("settings.window", &w, 1_000, errors)
    {
        settings.set_windows(vec![WindowSpec {
            size_ms: ms,
            hop_ms: ms,
        }]);
    }
    if settings.windows.len() > MAX_WINDOWS {
        errors.push(FieldError::new(
            "windows",
            format!("at most {MAX_WINDOWS} window kinds"),
        ));
    }
    let pane = settings.pane_ms();
    if pane > 0 && settings.max_window_ms() / pane > MAX_PANES_PER_WINDOW {
        errors.push(FieldError::new(
            "windows",
            format!(
                "window sizes and hops must share a step of at least 1/{MAX_PANES_PER_WINDOW} of the largest window"
            ),
        ));
    }
    if let Some(l) = s.allowed_lateness
        && let Some(ms) = dur("settings.allowed_lateness", &l, 0, errors)
    {
        settings.allowed_lateness_ms = ms;
    }
    if let Some(n) = s.flap_max {
        if n >= 2 {
            settings.flap_max = n;
        } else {
            errors.push(FieldError::new("settings.flap_max", "must be at least 2"));
        }
    }
    if let Some(w) = s.flap_window
        && let Some(ms) = dur("settings.flap_window", &w, 1_000, errors)
    {
        settings.flap_window_ms = ms;
    }
    if let Some(h) = s.forecast_horizon
        && let Some(ms) = dur("settings.forecast_horizon", &h, 0, errors)
    {
        settings.forecast_horizon_ms = ms;
    }
    settings
}

pub(crate) fn parse_severity(s: &str) -> Option<Severity> {
    match s {
        "warning" => Some(Severity::Warning),
        "info" => Some(Severity::Info),
        "critical" => Some(Severity::Critical),
        _ => None,
    }
}

fn parse_rule(r: RuleWire) -> Result<ThresholdRule, Vec<FieldError>> {
    let mut errors = Vec::new();
    if r.name.is_empty() || r.name.len() > 64 {
        errors.push(FieldError::new("name", "must be 1-64 characters"));
    }
    if let Err(m) = MetricName::check(&r.metric) {
        errors.push(FieldError::new("metric", m));
    }
    let (direction, threshold) = match (r.above, r.below) {
        (Some(a), None) => (Direction::Above, a),
        (None, Some(b)) => (Direction::Below, b),
        _ => {
            errors.push(FieldError::new("above", "set exactly one of above or below"));
            (Direction::Above, 0.0)
        }
    };
    let clear = r.clear.unwrap_or(threshold);
    let clear_ok = match direction {
        Direction::Above => clear <= threshold,
        Direction::Below => clear >= threshold,
    };
    if !clear_ok {
        errors.push(FieldError::new(
            "clear",
            "must be on the normal side of the threshold",
        ));
    }
    let for_ms = match r.for_.as_deref().map(parse_duration_ms) {
        None => 0,
        Some(Some(ms)) => ms,
        Some(None) => {
            errors.push(FieldError::new("for", "must be a duration like 30s, 5m or 0s"));
            0
        }
    };
    let severity = match r.severity.as_deref().map(parse_severity) {
        None => Severity::Warning,
        Some(Some(s)) => s,
        Some(None) => {
            errors.push(FieldError::new("severity", "must be info, warning or critical"));
            Severity::Warning
        }
    };
    check_recommendation(r.recommendation.as_deref(), &mut errors);
    let count = match r.count {
        None => 1,
        Some(n @ 1..=10_000) => n,
        Some(_) => {
            errors.push(FieldError::new("count", "must be between 1 and 10000"));
            1
        }
    };
    if errors.is_empty() {
        Ok(ThresholdRule {
            name: r.name,
            metric: r.metric,
            direction,
            threshold,
            clear,
            for_ms,
            count,
            severity,
            devices: r.devices.unwrap_or_else(|| "*".into()),
            recommendation: r.recommendation,
        })
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests;
