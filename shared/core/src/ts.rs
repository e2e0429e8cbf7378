//! Event and processing timestamps: UTC milliseconds since the Unix epoch.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// A point in time, UTC, millisecond precision. Serialised as RFC 3339 with milliseconds
/// (`2026-11-25T10:00:00.250Z`); deserialised from RFC 3339 or integer epoch milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Ts(pub i64);

impl Ts {
    pub const fn from_millis(ms: i64) -> Self {
        Ts(ms)
    }

    pub const fn millis(self) -> i64 {
        self.0
    }

    pub fn from_datetime(dt: OffsetDateTime) -> Self {
        Ts((dt.unix_timestamp_nanos() / 1_000_000) as i64)
    }

    /// Parses RFC 3339 (any offset, normalised to UTC).
    pub fn parse_rfc3339(s: &str) -> Option<Self> {
        OffsetDateTime::parse(s, &Rfc3339).ok().map(Self::from_datetime)
    }

    /// Floors to a multiple of `step_ms` (windows, series buckets).
    pub fn floor(self, step_ms: i64) -> Self {
        Ts(self.0.div_euclid(step_ms) * step_ms)
    }

    pub fn plus_millis(self, ms: i64) -> Self {
        Ts(self.0.saturating_add(ms))
    }

    pub fn to_rfc3339(self) -> String {
        let secs = self.0.div_euclid(1000);
        let ms = self.0.rem_euclid(1000);
        match OffsetDateTime::from_unix_timestamp(secs) {
            Ok(dt) => format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
                dt.year(),
                dt.month() as u8,
                dt.day(),
                dt.hour(),
                dt.minute(),
                dt.second(),
                ms
            ),
            Err(_) => self.0.to_string(),
        }
    }
}

impl fmt::Display for Ts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl Serialize for Ts {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> Deserialize<'de> for Ts {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Wire {
            Millis(i64),
            Text(String),
        }
        match Wire::deserialize(d)? {
            Wire::Millis(ms) => Ok(Ts(ms)),
            Wire::Text(s) => Ts::parse_rfc3339(&s).ok_or_else(|| {
                serde::de::Error::custom("expected an RFC 3339 timestamp or epoch milliseconds")
            }),
        }
    }
}

/// Parses a duration such as `30s`, `5m`, `1h`, `250ms`, `1d`, `0s` into milliseconds.
pub fn parse_duration_ms(s: &str) -> Option<i64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (num, unit) = s.split_at(split);
    let n: i64 = num.parse().ok()?;
    let mul = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    n.checked_mul(mul)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips_with_millis() {
        let t = Ts::parse_rfc3339("2026-11-25T10:00:00.250Z").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-11-25T10:00:00.250Z");
        let off = Ts::parse_rfc3339("2026-11-25T11:00:00.250+01:00").unwrap();
        assert_eq!(off, t);
    }

    #[test]
    fn deserialises_epoch_millis_and_text() {
        let a: Ts = serde_json::from_str("1764064800250").unwrap();
        let b: Ts = serde_json::from_str("\"2025-11-25T10:00:00.250Z\"").unwrap();
        assert_eq!(a, b);
        assert!(serde_json::from_str::<Ts>("\"yesterday\"").is_err());
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration_ms("30s"), Some(30_000));
        assert_eq!(parse_duration_ms("0s"), Some(0));
        assert_eq!(parse_duration_ms("5m"), Some(300_000));
        assert_eq!(parse_duration_ms("250ms"), Some(250));
        assert_eq!(parse_duration_ms("5"), None);
        assert_eq!(parse_duration_ms("s"), None);
        assert_eq!(parse_duration_ms("3 weeks"), None);
    }

    #[test]
    fn floor_handles_negative_times() {
        assert_eq!(Ts(61_000).floor(60_000), Ts(60_000));
        assert_eq!(Ts(-1).floor(60_000), Ts(-60_000));
    }
}
