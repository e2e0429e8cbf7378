//! What the pipeline produces: insights (aggregates, latest state) and alerts with their transitions.
//! These are the values on the `insights` and `alerts` topics and in the results database.

use crate::device::DeviceId;
use crate::ts::Ts;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    Active,
    Acknowledged,
    Resolved,
}

impl AlertState {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Active => "active",
            AlertState::Acknowledged => "acknowledged",
            AlertState::Resolved => "resolved",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(AlertState::Active),
            "acknowledged" => Some(AlertState::Acknowledged),
            "resolved" => Some(AlertState::Resolved),
            _ => None,
        }
    }
}

/// An alert: one per (device, rule) episode. `id` is deterministic (device, rule, opening
/// reading), so replaying the same input yields the same id and idempotent sinks absorb it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    pub id: String,
    pub device_id: DeviceId,
    pub rule: String,
    pub severity: Severity,
    pub metric: String,
    /// The value that opened (or, once resolved, that resolved) the alert.
    pub value: f64,
    pub threshold: f64,
    pub state: AlertState,
    pub opened_at: Ts,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<Ts>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acknowledged_at: Option<Ts>,
    pub message: String,
    pub recommendation: String,
    /// The most extreme value while the alert was open: a rule firing again while its alert is
    /// open updates the alert (`alert.updated` on the alerts topic) instead of opening another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak: Option<f64>,
    /// Which detector raised it: `threshold` (a `[[rules]]` entry), `spike`, `level_shift`,
    /// `rate`, `flatline` or `silence`.
    #[serde(default = "threshold_kind")]
    pub kind: String,
    /// What the detector saw when it opened the alert (and, once resolved, when it resolved).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<Evidence>,
}

fn threshold_kind() -> String {
    "threshold".into()
}

/// The numbers behind an alert, so an operator can judge it without opening a dashboard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Evidence {
    /// The value that triggered the transition.
    pub value: f64,
    /// What the detector expected instead (baseline level, previous level, reference value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<f64>,
    /// How anomalous, 0..1 (0.5 at the detector's threshold).
    pub score: f64,
    /// The detector's own statistic: robust z-score (spike), CUSUM sum in standard deviations
    /// (level_shift), change per period (rate), seconds unchanged (flatline), seconds without
    /// data (silence), seconds in breach (threshold).
    pub statistic: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AlertEventKind {
    #[serde(rename = "alert.opened")]
    Opened,
    #[serde(rename = "alert.resolved")]
    Resolved,
    #[serde(rename = "alert.acknowledged")]
    Acknowledged,
    /// The open alert's peak moved. Internal (results only): not sent to the webhook.
    #[serde(rename = "alert.updated")]
    Updated,
}

impl AlertEventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertEventKind::Opened => "alert.opened",
            AlertEventKind::Resolved => "alert.resolved",
            AlertEventKind::Acknowledged => "alert.acknowledged",
            AlertEventKind::Updated => "alert.updated",
        }
    }
}

/// An alert transition, as published on the `alerts` topic and delivered by the webhook.
/// `id` (`<alert id>:<kind>`) is the delivery id: stable across retries and replays.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertEvent {
    pub id: String,
    pub event: AlertEventKind,
    pub alert: Alert,
}

impl AlertEvent {
    pub fn new(event: AlertEventKind, alert: Alert) -> Self {
        let suffix = match event {
            AlertEventKind::Opened => "opened",
            AlertEventKind::Resolved => "resolved",
            AlertEventKind::Acknowledged => "acknowledged",
            AlertEventKind::Updated => "updated",
        };
        AlertEvent {
            id: format!("{}:{suffix}", alert.id),
            event,
            alert,
        }
    }

    /// For an `opened` event: seconds from the reading that opened the alert (its event time) to
    /// `now`. What the `iotstream_alert_delay_seconds` metric records at each stage.
    pub fn opened_delay_secs(&self, now: Ts) -> Option<f64> {
        (self.event == AlertEventKind::Opened)
            .then(|| (now.millis() - self.alert.opened_at.millis()).max(0) as f64 / 1000.0)
    }

    /// The webhook body of CONTRACT §4: `{"event": ..., "alert": {...}}`; signed with
    /// [`webhook_signature`].
    pub fn webhook_body(&self) -> serde_json::Value {
        serde_json::json!({ "event": self.event, "alert": self.alert })
    }
}

/// A per-device, per-metric window aggregate, keyed by (device, metric, window size, window
/// start). Emitted final when the device's clock passes the window's end, and (tumbling windows)
/// as `partial` while it fills, at most once a second: sinks upsert by key and keep the emission
/// with the most readings ([`Aggregate::supersedes`]), so the final one wins.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Aggregate {
    pub device_id: DeviceId,
    pub metric: String,
    pub window_start: Ts,
    pub window_ms: i64,
    /// How far consecutive windows of this kind start apart: `window_ms` for tumbling windows.
    #[serde(default)]
    pub hop_ms: i64,
    pub count: u64,
    pub min: f64,
    pub max: f64,
    pub sum: f64,
    /// Population standard deviation.
    #[serde(default)]
    pub stddev: f64,
    /// Quantiles from a mergeable sketch, within 2 % of a true value of that rank.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p50: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p95: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p99: Option<f64>,
    /// The window is still open: a later emission replaces this one.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub partial: bool,
}

impl Aggregate {
    /// Whether this emission of a window replaces `stored`, an emission of the same window
    /// received earlier: a window only gains readings (they are analysed in event-time order,
    /// each once), so one with fewer readings is stale whatever order it arrives in (e.g. a
    /// partial emission published by an instance a partition was just taken from, after its new
    /// owner's final one). Every sink applies this rule, within a batch too.
    pub fn supersedes(&self, stored: &Aggregate) -> bool {
        self.count >= stored.count
    }

    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum / self.count as f64
        }
    }
}

/// The latest known value of each metric of a device (last-known state, like a device twin's
/// reported properties).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LatestState {
    pub device_id: DeviceId,
    pub last_seen: Ts,
    pub metrics: BTreeMap<String, f64>,
}

/// A trend forecast: a threshold rule's metric is heading for its threshold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Forecast {
    pub device_id: DeviceId,
    pub metric: String,
    pub rule: String,
    pub threshold: f64,
    /// The trend's current level (smoothed value) and slope per minute.
    pub value: f64,
    pub slope_per_minute: f64,
    /// When the trend crosses the threshold, and how long from `at` that is.
    pub eta: Ts,
    pub eta_seconds: i64,
    /// Event time of the reading that made the forecast.
    pub at: Ts,
    /// Goodness of the linear fit over the recent readings (0..1).
    pub r_squared: f64,
    pub message: String,
}

/// A reading that came later than the allowed lateness: not analysed, kept in the telemetry
/// store and reported here (the late output).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LateReading {
    pub device_id: DeviceId,
    pub reading_id: String,
    pub ts: Ts,
    /// The metrics that were too late (a reading can be late for some metrics only).
    pub metrics: Vec<String>,
    /// The device's watermark when it arrived: readings older than this are late.
    pub watermark: Ts,
}

/// What analyze publishes on the `insights` topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Insight {
    Aggregate(Aggregate),
    Latest(LatestState),
    Forecast(Forecast),
    Late(LateReading),
}

impl Insight {
    pub fn device_id(&self) -> &DeviceId {
        match self {
            Insight::Aggregate(a) => &a.device_id,
            Insight::Latest(l) => &l.device_id,
            Insight::Forecast(f) => &f.device_id,
            Insight::Late(l) => &l.device_id,
        }
    }
}

/// `sha256=<lowercase hex of HMAC-SHA256(secret, body)>`: the `X-Iotstream-Signature` value
/// (CONTRACT §4), computed over the raw body bytes.
pub fn webhook_signature(secret: &[u8], body: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(body);
    format!("sha256={}", crate::reading::hex(&mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_webhook_signature_is_lowercase_hex_hmac_of_the_raw_body() {
        // RFC 4231 test case 2.
        assert_eq!(
            super::webhook_signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
