//! The threshold rule state machine: normal → pending (breach held for less than `for`) →
//! active → resolved (value back past `clear`), one alert per (device, rule) episode.

use crate::model::{Alert, AlertEvent, AlertEventKind, AlertState};
use crate::reading::Reading;
use crate::rules::{Direction, ThresholdRule};
use crate::ts::Ts;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub enum RuleState {
    #[default]
    Normal,
    /// In breach since `since`, waiting for `for` to pass.
    Pending { since: Ts },
    /// An alert is open.
    Active { alert: Box<Alert> },
}

/// Advances one rule on one in-order value; returns the transition, if any.
pub fn step(
    state: &mut RuleState,
    rule: &ThresholdRule,
    reading: &Reading,
    value: f64,
) -> Option<AlertEvent> {
    let ts = reading.ts;
    match state {
        RuleState::Normal | RuleState::Pending { .. } if !rule.breached(value) => {
            *state = RuleState::Normal;
            None
        }
        RuleState::Normal | RuleState::Pending { .. } => {
            let since = match state {
                RuleState::Pending { since } => *since,
                _ => ts,
            };
            if ts.millis() - since.millis() >= rule.for_ms {
                let alert = open(rule, reading, value, since);
                let event = AlertEvent::new(AlertEventKind::Opened, alert.clone());
                *state = RuleState::Active {
                    alert: Box::new(alert),
                };
                Some(event)
            } else {
                *state = RuleState::Pending { since };
                None
            }
        }
        RuleState::Active { alert, .. } if rule.cleared(value) => {
            let mut resolved = (**alert).clone();
            resolved.state = AlertState::Resolved;
            resolved.resolved_at = Some(ts);
            resolved.value = value;
            resolved.message = format!(
                "{} on {} is back to {} ({} {}), resolving {}",
                rule.metric,
                reading.device_id,
                fmt_num(value),
                past_word(rule.direction),
                fmt_num(rule.clear),
                rule.name
            );
            *state = RuleState::Normal;
            Some(AlertEvent::new(AlertEventKind::Resolved, resolved))
        }
        RuleState::Active { alert } => {
            // Firing again while open updates the alert (a new peak) rather than opening
            // another. One event per new peak, never coalesced per batch, so the output does
            // not depend on how the input was batched (replay equals live).
            let beyond = match rule.direction {
                Direction::Above => value > alert.peak.unwrap_or(alert.value),
                Direction::Below => value < alert.peak.unwrap_or(alert.value),
            };
            beyond.then(|| {
                alert.peak = Some(value);
                AlertEvent::new(AlertEventKind::Updated, (**alert).clone())
            })
        }
    }
}

fn open(rule: &ThresholdRule, reading: &Reading, value: f64, since: Ts) -> Alert {
    let device = &reading.device_id;
    let held = if rule.for_ms > 0 {
        format!(" for {}s", (reading.ts.millis() - since.millis()) / 1000)
    } else {
        String::new()
    };
    let message = format!(
        "{} on {} is {} ({} {}){held}",
        rule.metric,
        device,
        fmt_num(value),
        side_word(rule.direction),
        fmt_num(rule.threshold)
    );
    let advice = rule
        .recommendation
        .clone()
        .unwrap_or_else(|| match rule.direction {
            Direction::Above => format!("find what drives {} up on {device} and reduce it", rule.metric),
            Direction::Below => format!("find what holds {} down on {device} and restore it", rule.metric),
        });
    let recommendation = format!(
        "{advice}; the alert resolves when {} is {} {}",
        rule.metric,
        past_word(rule.direction),
        fmt_num(rule.clear)
    );
    Alert {
        id: alert_id(device.as_str(), &rule.name, &reading.id),
        device_id: device.clone(),
        rule: rule.name.clone(),
        severity: rule.severity,
        metric: rule.metric.clone(),
        value,
        threshold: rule.threshold,
        state: AlertState::Active,
        opened_at: reading.ts,
        resolved_at: None,
        acknowledged_at: None,
        message,
        recommendation,
        peak: Some(value),
    }
}

/// Deterministic alert id from the reading that opened it: the same input always opens the
/// same alert id, and two episodes never share one (even with equal timestamps).
pub fn alert_id(device: &str, rule: &str, opening_reading: &str) -> String {
    let mut h = Sha256::new();
    h.update(device.as_bytes());
    h.update([0]);
    h.update(rule.as_bytes());
    h.update([0]);
    h.update(opening_reading.as_bytes());
    crate::reading::hex(&h.finalize()[..12])
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

/// Numbers as people write them: no trailing `.0` noise beyond what the value needs.
fn fmt_num(x: f64) -> String {
    let s = format!("{x:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_owned()
}
