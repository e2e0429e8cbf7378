//! From detector signals to alerts: one [`Episode`] per (device, rule[, metric]) holds the open
//! alert, opens and resolves it, updates it while open, and suppresses flapping: an alert that
//! opened `flap_max` times within `flap_window` is marked flapping and resolves only after its
//! condition has stayed clear for a whole `flap_window`.

use crate::DeviceId;
use crate::model::{Alert, AlertEvent, AlertEventKind, AlertState, Evidence, Severity};
use crate::rules::Settings;
use crate::ts::Ts;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Episode {
    #[serde(with = "super::codec::json")]
    pub active: Option<Box<Alert>>,
    /// Opens counted since `opens_since` (flap accounting).
    opens: u32,
    opens_since: i64,
    flapping: bool,
    /// While flapping: since when the condition has been clear.
    clear_since: Option<i64>,
}

/// Everything needed to open an alert.
pub struct Opening<'a> {
    pub device: &'a DeviceId,
    pub rule: &'a str,
    /// Part of the alert id besides device and rule (the metric, for per-metric detectors).
    pub scope: &'a str,
    pub kind: &'static str,
    pub severity: Severity,
    pub metric: &'a str,
    pub threshold: f64,
    pub ts: Ts,
    pub reading_id: &'a str,
    pub evidence: Evidence,
    pub message: String,
    pub recommendation: String,
}

impl Episode {
    pub fn is_active(&self) -> bool {
        self.active.is_some()
    }

    pub fn open(&mut self, o: Opening<'_>, settings: &Settings, out: &mut Vec<AlertEvent>) {
        let ts = o.ts.millis();
        if self.opens == 0 || ts - self.opens_since > settings.flap_window_ms {
            (self.opens, self.opens_since) = (0, ts);
        }
        self.opens += 1;
        let mut message = o.message;
        if self.opens >= settings.flap_max {
            self.flapping = true;
            message.push_str(&format!(
                " (flapping: opened {} times in {}; it resolves after {} clear)",
                self.opens,
                human_ms(settings.flap_window_ms),
                human_ms(settings.flap_window_ms)
            ));
        }
        self.clear_since = None;
        let alert = Alert {
            id: alert_id(o.device.as_str(), o.rule, o.scope, o.reading_id),
            device_id: o.device.clone(),
            rule: o.rule.to_owned(),
            severity: o.severity,
            metric: o.metric.to_owned(),
            value: o.evidence.value,
            threshold: o.threshold,
            state: AlertState::Active,
            opened_at: o.ts,
            resolved_at: None,
            acknowledged_at: None,
            message,
            recommendation: o.recommendation,
            peak: Some(o.evidence.value),
            kind: o.kind.to_owned(),
            evidence: Some(o.evidence),
        };
        out.push(AlertEvent::new(AlertEventKind::Opened, alert.clone()));
        self.active = Some(Box::new(alert));
    }

    /// The condition still holds (or fired again): cancels a pending flapping resolution.
    #[inline]
    pub fn holding(&mut self) {
        self.clear_since = None;
    }

    /// Records a more extreme value while open (`alert.updated`, internal).
    pub fn update_peak(&mut self, value: f64, higher: bool, out: &mut Vec<AlertEvent>) {
        if let Some(alert) = self.active.as_mut() {
            let peak = alert.peak.unwrap_or(alert.value);
            if (higher && value > peak) || (!higher && value < peak) {
                alert.peak = Some(value);
                out.push(AlertEvent::new(AlertEventKind::Updated, (**alert).clone()));
            }
        }
    }

    /// Another detection while open (spikes, level shifts): always an `alert.updated` event
    /// (so every detection is visible on the alerts topic), with the peak kept extreme.
    pub fn touch(&mut self, value: f64, higher: bool, out: &mut Vec<AlertEvent>) {
        self.clear_since = None;
        if let Some(alert) = self.active.as_mut() {
            let peak = alert.peak.unwrap_or(alert.value);
            if (higher && value > peak) || (!higher && value < peak) {
                alert.peak = Some(value);
            }
            out.push(AlertEvent::new(AlertEventKind::Updated, (**alert).clone()));
        }
    }

    /// The condition has cleared at `ts`: resolves now, or, while flapping, once it has been
    /// clear for the flap window. `message` is built only when the alert resolves.
    pub fn clear(
        &mut self,
        ts: Ts,
        value: f64,
        settings: &Settings,
        message: impl FnOnce(&Alert) -> String,
        out: &mut Vec<AlertEvent>,
    ) {
        if self.active.is_none() {
            return;
        }
        if self.flapping {
            let since = *self.clear_since.get_or_insert(ts.millis());
            if ts.millis() - since < settings.flap_window_ms {
                return;
            }
            self.flapping = false;
            self.opens = 0;
        }
        let mut alert = self.active.take().expect("checked above");
        alert.state = AlertState::Resolved;
        alert.resolved_at = Some(ts);
        alert.value = value;
        alert.message = message(&alert);
        if let Some(e) = alert.evidence.as_mut() {
            e.value = value;
        }
        self.clear_since = None;
        out.push(AlertEvent::new(AlertEventKind::Resolved, *alert));
    }
}

/// Deterministic alert id from the reading that opened it: the same input always opens the
/// same alert id, and two episodes never share one (even with equal timestamps).
pub fn alert_id(device: &str, rule: &str, scope: &str, opening_reading: &str) -> String {
    let mut h = Sha256::new();
    h.update(device.as_bytes());
    h.update([0]);
    h.update(rule.as_bytes());
    if !scope.is_empty() {
        h.update([0]);
        h.update(scope.as_bytes());
    }
    h.update([0]);
    h.update(opening_reading.as_bytes());
    crate::reading::hex(&h.finalize()[..12])
}

/// Numbers as people write them: at most 3 decimals, no trailing zeros.
pub fn fmt_num(x: f64) -> String {
    // `{:.3}` rounds the float's exact decimal expansion, a general routine of some 1,400
    // instructions per number (a few per cent of the engine's work, in alert messages). When
    // `x * 1000` is not within a hair of a half it rounds the same way, and integers print fast.
    let scaled = x * 1000.0;
    if scaled.abs() < FAST_LIMIT && ((scaled - scaled.trunc()).abs() - 0.5).abs() > FAST_MARGIN {
        return thousandths(scaled.round() as i64);
    }
    exact_num(x)
}

/// Below 2^40 the product `x * 1000` is within 2^-13 of the true one, far inside the margin.
const FAST_LIMIT: f64 = (1u64 << 40) as f64;
const FAST_MARGIN: f64 = 1e-3;

/// `n / 1000` written with up to 3 decimals, trailing zeros dropped.
fn thousandths(n: i64) -> String {
    use std::fmt::Write as _;
    let (int, frac) = (n.unsigned_abs() / 1000, n.unsigned_abs() % 1000);
    let mut s = String::with_capacity(24);
    let sign = if n < 0 { "-" } else { "" };
    let _ = write!(s, "{sign}{int}");
    if frac != 0 {
        let _ = write!(s, ".{frac:03}");
        s.truncate(s.trim_end_matches('0').len());
    }
    s
}

/// [`fmt_num`] by the general routine (also for what the fast path leaves out).
fn exact_num(x: f64) -> String {
    let s = format!("{x:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0".into() } else { s.to_owned() }
}

/// `90s` → "1m30s"-style durations for messages.
pub fn human_ms(ms: i64) -> String {
    let s = ms / 1000;
    match s {
        _ if s < 60 => format!("{s}s"),
        _ if s < 3600 && s % 60 == 0 => format!("{}m", s / 60),
        _ if s < 3600 => format!("{}m{}s", s / 60, s % 60),
        _ if s % 3600 == 0 => format!("{}h", s / 3600),
        _ => format!("{}h{}m", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod fmt_tests {
    use super::{exact_num, fmt_num};
    use proptest::prelude::*;

    #[test]
    fn numbers_read_as_people_write_them() {
        for (x, want) in [
            (80.0, "80"),
            (83.214_9, "83.215"),
            (0.5, "0.5"),
            (-0.000_4, "0"),
            (-0.0, "0"),
            (-12.25, "-12.25"),
            (1e-9, "0"),
            (0.000_5, "0.001"),
            (1e12, "1000000000000"),
            (f64::INFINITY, "inf"),
        ] {
            assert_eq!(fmt_num(x), want, "{x}");
        }
    }

    #[test]
    fn halves_and_their_neighbours_match_the_exact_routine() {
        for k in -3_000i64..3_000 {
            let half = (k as f64 + 0.5) / 1000.0;
            for x in [half, half.next_up(), half.next_down(), k as f64 / 1000.0] {
                assert_eq!(fmt_num(x), exact_num(x), "{x:e}");
            }
        }
    }

    proptest! {
        #[test]
        fn the_fast_path_writes_what_the_exact_routine_writes(
            mantissa in -1.0f64..1.0,
            exp in -12i32..16,
        ) {
            let x = mantissa * 10f64.powi(exp);
            prop_assert_eq!(fmt_num(x), exact_num(x));
        }

        #[test]
        fn any_float_is_written_as_the_exact_routine_writes_it(bits in any::<u64>()) {
            let x = f64::from_bits(bits);
            prop_assert_eq!(fmt_num(x), exact_num(x));
        }
    }
}
