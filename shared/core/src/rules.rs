//! The rules file (CONTRACT §5), parsed into valid rules or errors naming the rule and field.

use crate::device::glob_match;
use crate::error::FieldError;
use crate::model::Severity;
use crate::reading::MetricName;
use crate::ts::parse_duration_ms;
use serde::Deserialize;

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

/// Engine settings that live in the rules file's `[settings]` table.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Aggregate window size.
    pub window_ms: i64,
    /// How long after a device's newest reading a window still accepts late readings.
    pub allowed_lateness_ms: i64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            window_ms: 60_000,
            allowed_lateness_ms: 5 * 60_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Rules {
    pub thresholds: Vec<ThresholdRule>,
    pub settings: Settings,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    #[serde(default)]
    rules: Vec<RuleWire>,
    #[serde(default)]
    settings: Option<SettingsWire>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SettingsWire {
    window: Option<String>,
    allowed_lateness: Option<String>,
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
    severity: Option<String>,
    devices: Option<String>,
    recommendation: Option<String>,
}

/// The rules used when no file is given: sensible defaults for the common metrics of the
/// newcomer's tour and the simulator.
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
        let mut settings = Settings::default();
        if let Some(s) = file.settings {
            if let Some(w) = s.window {
                match parse_duration_ms(&w) {
                    Some(ms) if ms >= 1_000 => settings.window_ms = ms,
                    _ => errors.push(FieldError::new(
                        "settings.window",
                        "must be a duration of at least 1s",
                    )),
                }
            }
            if let Some(l) = s.allowed_lateness {
                match parse_duration_ms(&l) {
                    Some(ms) => settings.allowed_lateness_ms = ms,
                    None => errors.push(FieldError::new(
                        "settings.allowed_lateness",
                        "must be a duration like 5m",
                    )),
                }
            }
        }
        if errors.is_empty() {
            Ok(Rules { thresholds, settings })
        } else {
            Err(errors)
        }
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
    let severity = match r.severity.as_deref() {
        None | Some("warning") => Severity::Warning,
        Some("info") => Severity::Info,
        Some("critical") => Severity::Critical,
        Some(_) => {
            errors.push(FieldError::new("severity", "must be info, warning or critical"));
            Severity::Warning
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
            severity,
            devices: r.devices.unwrap_or_else(|| "*".into()),
            recommendation: r.recommendation,
        })
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_contract_example() {
        let rules = Rules::from_toml(
            r#"
            [[rules]]
            name = "overheat"
            metric = "temperature"
            above = 80.0
            clear = 75.0
            for = "30s"
            severity = "critical"
            devices = "pump-*"
            "#,
        )
        .unwrap();
        let r = &rules.thresholds[0];
        assert_eq!(
            (r.direction, r.threshold, r.clear, r.for_ms),
            (Direction::Above, 80.0, 75.0, 30_000)
        );
        assert_eq!(r.severity, Severity::Critical);
        assert!(r.applies_to("pump-3") && !r.applies_to("fan-3"));
        assert!(r.breached(80.1) && !r.breached(80.0));
        assert!(r.cleared(74.9) && !r.cleared(75.0));
    }

    #[test]
    fn below_rules_mirror_above_rules() {
        let rules = Rules::from_toml("[[rules]]\nname='cold'\nmetric='t'\nbelow=5.0\nclear=7.0\n").unwrap();
        let r = &rules.thresholds[0];
        assert!(r.breached(4.9) && !r.breached(5.0));
        assert!(r.cleared(7.1) && !r.cleared(6.0));
        assert_eq!(r.severity, Severity::Warning);
    }

    #[test]
    fn reports_each_bad_rule_with_index_and_field() {
        let errs = Rules::from_toml(
            r#"
            [[rules]]
            name = "ok"
            metric = "t"
            above = 1.0
            [[rules]]
            name = "both"
            metric = "t"
            above = 1.0
            below = 0.0
            [[rules]]
            name = "bad"
            metric = "t!"
            above = 10.0
            clear = 12.0
            for = "soon"
            severity = "panic"
            [[rules]]
            name = "ok"
            metric = "t"
            below = 1.0
            "#,
        )
        .unwrap_err();
        let got: Vec<(usize, &str)> = errs
            .iter()
            .map(|e| (e.index.unwrap(), e.field.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                (1, "above"),
                (2, "metric"),
                (2, "clear"),
                (2, "for"),
                (2, "severity"),
                (3, "name")
            ]
        );
    }

    #[test]
    fn unknown_keys_and_bad_toml_are_errors() {
        assert!(Rules::from_toml("[[rules]]\nname='a'\nmetric='t'\nabove=1\nabvoe=2\n").is_err());
        assert!(Rules::from_toml("[[rules]\n").is_err());
    }

    #[test]
    fn built_in_defaults_parse_and_settings_apply() {
        assert_eq!(Rules::defaults().thresholds.len(), 2);
        let r = Rules::from_toml("[settings]\nwindow='10s'\nallowed_lateness='1m'\n").unwrap();
        assert_eq!(
            r.settings,
            Settings {
                window_ms: 10_000,
                allowed_lateness_ms: 60_000
            }
        );
        assert!(Rules::from_toml("[settings]\nwindow='10ms'\n").is_err());
    }
}
