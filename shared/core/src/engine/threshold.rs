//! Threshold rules (`[[rules]]`): normal → pending (breach held for less than `for`, or fewer
//! than `count` readings in a row) → active → resolved (value back past `clear`), one alert per
//! (device, rule) episode; and trend forecasts of the crossing before it happens.

use super::alerting::{Episode, Opening, fmt_num, human_ms};
use super::detect::{Fit, Trend, score};
use crate::DeviceId;
use crate::model::{AlertEvent, Evidence, Forecast, Insight};
use crate::rules::{Direction, Settings, ThresholdRule};
use crate::ts::Ts;
use serde::{Deserialize, Serialize};

/// Forecasts need a fit at least this good.
const MIN_R_SQUARED: f64 = 0.7;
/// ... of at least this many readings.
const FIT_MIN_READINGS: u32 = 10;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ThresholdState {
    /// Index in `Rules::thresholds`; re-bound by name on restore.
    #[serde(skip)]
    pub rule_idx: u16,
    pub rule: Box<str>,
    pub episode: Episode,
    pending_since: Option<i64>,
    in_a_row: u32,
    forecast_on: bool,
}

/// One reading's context for the rules of its (device, metric).
pub struct Ctx<'a> {
    pub device: &'a DeviceId,
    pub reading_id: &'a str,
    pub ts: Ts,
    pub value: f64,
    /// The metric's expected level, when a baseline has been learned.
    pub baseline: Option<f64>,
    pub settings: &'a Settings,
}

impl ThresholdState {
    pub fn new(rule_idx: u16, rule: &ThresholdRule) -> Self {
        ThresholdState {
            rule_idx,
            rule: rule.name.as_str().into(),
            ..Default::default()
        }
    }

    /// Advances on one value. Inline for the common case (no breach, no open alert), which
    /// is most values of most metrics.
    #[inline]
    pub fn step(&mut self, rule: &ThresholdRule, c: &Ctx<'_>, alerts: &mut Vec<AlertEvent>) {
        if !rule.breached(c.value) && !self.episode.is_active() {
            (self.in_a_row, self.pending_since) = (0, None);
            return;
        }
        self.step_breached_or_open(rule, c, alerts);
    }

    fn step_breached_or_open(&mut self, rule: &ThresholdRule, c: &Ctx<'_>, alerts: &mut Vec<AlertEvent>) {
        let ts = c.ts.millis();
        if rule.breached(c.value) {
            self.forecast_on = false;
            if self.episode.is_active() {
                self.episode.holding();
                self.episode
                    .update_peak(c.value, rule.direction == Direction::Above, alerts);
                return;
            }
            self.in_a_row = self.in_a_row.saturating_add(1);
            let since = *self.pending_since.get_or_insert(ts);
            if ts - since >= rule.for_ms && self.in_a_row >= rule.count {
                self.open(rule, c, since, alerts);
            }
            return;
        }
        (self.in_a_row, self.pending_since) = (0, None);
        if !self.episode.is_active() {
            return;
        }
        if !rule.cleared(c.value) {
            self.episode.holding();
            return;
        }
        let (device, value) = (c.device, c.value);
        self.episode.clear(
            c.ts,
            value,
            c.settings,
            |a| {
                format!(
                    "{} on {device} is back to {} ({} {}), resolving {}",
                    rule.metric,
                    fmt_num(value),
                    past_word(rule.direction),
                    fmt_num(rule.clear),
                    a.rule
                )
            },
            alerts,
        );
    }

    fn open(&mut self, rule: &ThresholdRule, c: &Ctx<'_>, since: i64, alerts: &mut Vec<AlertEvent>) {
        let held = c.ts.millis() - since;
        let mut message = format!(
            "{} on {} is {} ({} {})",
            rule.metric,
            c.device,
            fmt_num(c.value),
            side_word(rule.direction),
            fmt_num(rule.threshold)
        );
        if rule.for_ms > 0 {
            message.push_str(&format!(" for {}", human_ms(held)));
        }
        if rule.count > 1 {
            message.push_str(&format!(", {} readings in a row", self.in_a_row));
        }
        let advice = rule
            .recommendation
            .clone()
            .unwrap_or_else(|| match rule.direction {
                Direction::Above => format!(
                    "find what drives {} up on {} and reduce it",
                    rule.metric, c.device
                ),
                Direction::Below => format!(
                    "find what holds {} down on {} and restore it",
                    rule.metric, c.device
                ),
            });
        let recommendation = format!(
            "{advice}; the alert resolves when {} is {} {}",
            rule.metric,
            past_word(rule.direction),
            fmt_num(rule.clear)
        );
        let score = match c.baseline {
            Some(b) if (rule.threshold - b).abs() > 1e-12 => score((c.value - b) / (rule.threshold - b), 1.0),
            _ => 1.0,
        };
        self.episode.open(
            Opening {
                device: c.device,
                rule: &rule.name,
                scope: "",
                kind: "threshold",
                severity: rule.severity,
                metric: &rule.metric,
                threshold: rule.threshold,
                ts: c.ts,
                reading_id: c.reading_id,
                evidence: Evidence {
                    value: c.value,
                    baseline: c.baseline,
                    score,
                    statistic: held as f64 / 1000.0,
                },
                message,
                recommendation,
            },
            c.settings,
            alerts,
        );
    }

    /// Emits a forecast when the trend will cross the threshold within the horizon; once per
    /// approach (re-armed when the trend turns away or the alert opens).
    #[inline]
    pub fn forecast(&mut self, rule: &ThresholdRule, c: &Ctx<'_>, trend: &Trend, out: &mut Vec<Insight>) {
        let horizon = c.settings.forecast_horizon_ms;
        if horizon == 0 || self.episode.is_active() || rule.breached(c.value) {
            return;
        }
        let Some(fit) = trend.fit(c.ts.millis(), FIT_MIN_READINGS) else {
            return;
        };
        let level = fit.level();
        // On noise the slope's sign is a coin toss: `&` and a select, not branches.
        let toward = match rule.direction {
            Direction::Above => (fit.slope > 0.0) & (level < rule.threshold),
            Direction::Below => (fit.slope < 0.0) & (level > rule.threshold),
        };
        let eta = ((rule.threshold - level) / fit.slope * 1000.0) as i64;
        let eta_ms = if toward { eta } else { i64::MAX };
        if self.forecast_on {
            if eta_ms > 2 * horizon {
                self.forecast_on = false;
            }
            return;
        }
        if !(toward & (eta_ms <= horizon)) || fit.r_squared() < MIN_R_SQUARED {
            return;
        }
        self.forecast_on = true;
        push_forecast(rule, c, &fit, level, eta_ms, out);
    }
}

/// The forecast insight (out of line: it is rare, and formatting is long).
fn push_forecast(
    rule: &ThresholdRule,
    c: &Ctx<'_>,
    fit: &Fit,
    level: f64,
    eta_ms: i64,
    out: &mut Vec<Insight>,
) {
    let per_minute = fit.slope * 60.0;
    out.push(Insight::Forecast(Forecast {
        device_id: c.device.clone(),
        metric: rule.metric.clone(),
        rule: rule.name.clone(),
        threshold: rule.threshold,
        value: level,
        slope_per_minute: per_minute,
        eta: Ts(c.ts.millis() + eta_ms),
        eta_seconds: eta_ms / 1000,
        at: c.ts,
        r_squared: fit.r_squared(),
        message: format!(
            "{} on {} will cross {} in about {} ({} {} per minute, now {}); rule {}",
            rule.metric,
            c.device,
            fmt_num(rule.threshold),
            about(eta_ms),
            if per_minute >= 0.0 { "rising" } else { "falling" },
            fmt_num(per_minute.abs()),
            fmt_num(level),
            rule.name
        ),
    }));
}

fn side_word(d: Direction) -> &'static str {
    match d {
        Direction::Above => "above",
        Direction::Below => "below",
    }
}

fn past_word(d: Direction) -> &'static str {
    match d {
        Direction::Above => "below",
        Direction::Below => "above",
    }
}

/// "about 12 minutes" rather than "11m47s": forecasts are not that precise.
fn about(ms: i64) -> String {
    let s = (ms / 1000).max(1);
    match s {
        _ if s < 120 => format!("{s} seconds"),
        _ if s < 7200 => format!("{} minutes", (s + 30) / 60),
        _ => format!("{} hours", (s + 1800) / 3600),
    }
}
