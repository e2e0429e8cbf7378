//! Readings: parsed from the wire (JSON object, JSON array, NDJSON) into valid values, or a list of
//! per-reading errors. A request is all-or-nothing, so parsing returns every error it finds.

use crate::device::DeviceId;
use crate::error::FieldError;
use crate::ts::Ts;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Limits on one request (CONTRACT §2.2).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_readings: usize,
    pub max_metrics: usize,
    /// How far in the future a reading's `ts` may be.
    pub max_future_ms: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_readings: 10_000,
            max_metrics: 64,
            max_future_ms: 5 * 60_000,
        }
    }
}

/// A metric name: 1-64 characters of `[A-Za-z0-9_.-]`.
pub struct MetricName;

impl MetricName {
    pub fn check(s: &str) -> Result<(), String> {
        if s.is_empty() || s.len() > 64 {
            return Err("metric names must be 1-64 characters".into());
        }
        if let Some(c) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
        {
            return Err(format!(
                "character {c:?} is not allowed in a metric name (use A-Z a-z 0-9 _ . -)"
            ));
        }
        Ok(())
    }
}

/// A valid reading. `id` is the storage key: 32 hex characters derived from the device and the
/// client's message id, or, without one, from `ts` and `metrics` (so a re-send has the same id).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Reading {
    pub id: String,
    pub device_id: DeviceId,
    pub ts: Ts,
    pub metrics: Metrics,
    /// The client's own message id, when it sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
}

/// What a reading looks like on the wire, before validation.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireReading {
    device_id: Option<serde_json::Value>,
    ts: Option<serde_json::Value>,
    metrics: Option<serde_json::Value>,
    id: Option<serde_json::Value>,
}

/// Why a body could not be parsed at all (as opposed to invalid readings).
#[derive(Debug, Clone, PartialEq)]
pub enum BodyError {
    /// Not JSON / NDJSON; the message says where.
    Malformed(String),
    /// More readings than the limit.
    TooMany { count: usize, limit: usize },
    /// No readings at all.
    Empty,
    /// One or more readings are invalid.
    Invalid(Vec<FieldError>),
}

/// The content types ingest understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    Json,
    Ndjson,
}

impl BodyFormat {
    /// From a `Content-Type` header value (parameters such as `charset` are ignored).
    pub fn from_content_type(ct: &str) -> Option<Self> {
        let essence = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        match essence.as_str() {
            "application/json" => Some(BodyFormat::Json),
            "application/x-ndjson" | "application/ndjson" | "application/jsonl" => Some(BodyFormat::Ndjson),
            _ => None,
        }
    }
}

/// Parses and validates a request body. `now` is the server time used for readings without `ts`
/// and for the future-time check.
pub fn parse_body(
    body: &[u8],
    format: BodyFormat,
    now: Ts,
    limits: &Limits,
) -> Result<Vec<Reading>, BodyError> {
    match fast::parse(body, format == BodyFormat::Ndjson, now, limits) {
        Some(readings) => Ok(readings),
        None => parse_body_detailed(body, format, now, limits),
    }
}

/// The detailed path: every error of every reading, with its index and field.
fn parse_body_detailed(
    body: &[u8],
    format: BodyFormat,
    now: Ts,
    limits: &Limits,
) -> Result<Vec<Reading>, BodyError> {
    let values: Vec<serde_json::Value> = match format {
        BodyFormat::Json => match serde_json::from_slice::<serde_json::Value>(body) {
            Ok(serde_json::Value::Array(items)) => items,
            Ok(v @ serde_json::Value::Object(_)) => vec![v],
            Ok(_) => {
                return Err(BodyError::Malformed(
                    "expected a reading object or an array of readings".into(),
                ));
            }
            Err(e) => return Err(BodyError::Malformed(format!("invalid JSON: {e}"))),
        },
        BodyFormat::Ndjson => {
            let mut out = Vec::new();
            for (line_no, line) in body.split(|&b| b == b'\n').enumerate() {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                if out.len() >= limits.max_readings {
                    // Count the rest cheaply for the error message.
                    let count = body
                        .split(|&b| b == b'\n')
                        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
                        .count();
                    return Err(BodyError::TooMany {
                        count,
                        limit: limits.max_readings,
                    });
                }
                match serde_json::from_slice(line) {
                    Ok(v) => out.push(v),
                    Err(e) => {
                        return Err(BodyError::Malformed(format!(
                            "line {}: invalid JSON: {e}",
                            line_no + 1
                        )));
                    }
                }
            }
            out
        }
    };
    if values.is_empty() {
        return Err(BodyError::Empty);
    }
    if values.len() > limits.max_readings {
        return Err(BodyError::TooMany {
            count: values.len(),
            limit: limits.max_readings,
        });
    }
    let mut readings = Vec::with_capacity(values.len());
    let mut errors = Vec::new();
    for (i, v) in values.into_iter().enumerate() {
        match Reading::from_wire(v, now, limits) {
            Ok(r) => readings.push(r),
            Err(errs) => errors.extend(errs.into_iter().map(|e| e.at(i))),
        }
    }
    if errors.is_empty() {
        Ok(readings)
    } else {
        Err(BodyError::Invalid(errors))
    }
}

impl Reading {
    /// Validates one wire reading, collecting every field error.
    pub fn from_wire(value: serde_json::Value, now: Ts, limits: &Limits) -> Result<Reading, Vec<FieldError>> {
        let wire: WireReading = match serde_json::from_value(value) {
            Ok(w) => w,
            Err(_) => return Err(vec![FieldError::new("$", "a reading must be a JSON object")]),
        };
        let mut errors = Vec::new();
        let device_id = match wire.device_id {
            Some(serde_json::Value::String(s)) => match DeviceId::parse(&s) {
                Ok(d) => Some(d),
                Err(m) => {
                    errors.push(FieldError::new("deviceId", m));
                    None
                }
            },
            Some(_) => {
                errors.push(FieldError::new("deviceId", "must be a string"));
                None
            }
            None => {
                errors.push(FieldError::new("deviceId", "is required"));
                None
            }
        };
        let ts = match wire.ts {
            None | Some(serde_json::Value::Null) => Some(now),
            Some(serde_json::Value::String(s)) => match Ts::parse_rfc3339(&s) {
                Some(t) => Some(t),
                None => {
                    errors.push(FieldError::new(
                        "ts",
                        "must be an RFC 3339 timestamp or epoch milliseconds",
                    ));
                    None
                }
            },
            Some(serde_json::Value::Number(n)) => match n.as_i64() {
                Some(ms) if (0..=253_402_300_799_999).contains(&ms) => Some(Ts(ms)),
                _ => {
                    errors.push(FieldError::new(
                        "ts",
                        "epoch milliseconds must be a non-negative integer",
                    ));
                    None
                }
            },
            Some(_) => {
                errors.push(FieldError::new(
                    "ts",
                    "must be an RFC 3339 timestamp or epoch milliseconds",
                ));
                None
            }
        };
        if let Some(t) = ts
            && t.millis() > now.millis() + limits.max_future_ms
        {
            errors.push(FieldError::new("ts", "is more than 5 minutes in the future"));
        }
        let metrics = parse_metrics(wire.metrics, limits, &mut errors);
        let message_id = match wire.id {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(s))
                if (1..=128).contains(&s.len()) && !s.chars().any(char::is_control) =>
            {
                Some(s)
            }
            Some(_) => {
                errors.push(FieldError::new(
                    "id",
                    "must be a string of 1-128 printable characters",
                ));
                None
            }
        };
        match (device_id, ts, metrics) {
            (Some(device_id), Some(ts), Some(metrics)) if errors.is_empty() => {
                let id = reading_key(&device_id, message_id.as_deref(), ts, &metrics);
                Ok(Reading {
                    id,
                    device_id,
                    ts,
                    metrics,
                    message_id,
                })
            }
            _ => Err(errors),
        }
    }
}

fn parse_metrics(
    value: Option<serde_json::Value>,
    limits: &Limits,
    errors: &mut Vec<FieldError>,
) -> Option<Metrics> {
    let map = match value {
        Some(serde_json::Value::Object(m)) => m,
        Some(_) => {
            errors.push(FieldError::new(
                "metrics",
                "must be an object of metric names to numbers",
            ));
            return None;
        }
        None => {
            errors.push(FieldError::new("metrics", "is required"));
            return None;
        }
    };
    if map.is_empty() || map.len() > limits.max_metrics {
        errors.push(FieldError::new(
            "metrics",
            format!("must have 1-{} entries", limits.max_metrics),
        ));
        return None;
    }
    let before = errors.len();
    let mut out = Metrics::with_capacity(map.len());
    for (name, v) in map {
        if let Err(m) = MetricName::check(&name) {
            errors.push(FieldError::new(format!("metrics.{name}"), m));
            continue;
        }
        match v.as_f64() {
            Some(x) if x.is_finite() => {
                out.insert(name, x);
            }
            _ => errors.push(FieldError::new(
                format!("metrics.{name}"),
                "must be a finite number",
            )),
        }
    }
    (errors.len() == before).then_some(out)
}

/// The storage and dedup key of a reading (CONTRACT §2.2: same device and id, or same device, ts and
/// metrics when there is no id). 128 bits of SHA-256, hex.
pub fn reading_key(device: &DeviceId, message_id: Option<&str>, ts: Ts, metrics: &Metrics) -> String {
    let mut h = Sha256::new();
    h.update(device.as_str().as_bytes());
    h.update([0]);
    match message_id {
        Some(m) => {
            h.update(b"m");
            h.update(m.as_bytes());
        }
        None => {
            h.update(b"v");
            h.update(ts.millis().to_be_bytes());
            for (k, v) in metrics {
                h.update(k.as_bytes());
                h.update([0]);
                h.update(v.to_bits().to_be_bytes());
            }
        }
    }
    hex(&h.finalize()[..16])
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 15) as usize] as char);
    }
    out
}

mod fast;
mod metrics;
pub use metrics::Metrics;
#[cfg(test)]
mod tests;
