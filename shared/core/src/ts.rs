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

    /// A system clock reading (times before the epoch become the epoch).
    pub fn from_system_time(t: std::time::SystemTime) -> Self {
        let since = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        Ts(since.as_millis() as i64)
    }

    /// Parses RFC 3339 (any offset, normalised to UTC).
    pub fn parse_rfc3339(s: &str) -> Option<Self> {
        Self::parse_canonical(s).or_else(|| OffsetDateTime::parse(s, &Rfc3339).ok().map(Self::from_datetime))
    }

    /// Floors to a multiple of `step_ms` (windows, series buckets).
    pub fn floor(self, step_ms: i64) -> Self {
        Ts(self.0.div_euclid(step_ms) * step_ms)
    }

    pub fn plus_millis(self, ms: i64) -> Self {
        Ts(self.0.saturating_add(ms))
    }

    /// `YYYY-MM-DDTHH:MM:SS.mmmZ`, formatted by hand: it runs for every reading on the bus.
    pub fn to_rfc3339(self) -> String {
        let secs = self.0.div_euclid(1000);
        let ms = self.0.rem_euclid(1000) as u32;
        let days = secs.div_euclid(86_400);
        let sod = secs.rem_euclid(86_400) as u32;
        let (y, m, d) = civil_from_days(days);
        if !(0..=9999).contains(&y) {
            return self.0.to_string();
        }
        fn push(out: &mut String, n: u32, width: usize) {
            let digits = [
                b'0' + (n / 1000 % 10) as u8,
                b'0' + (n / 100 % 10) as u8,
                b'0' + (n / 10 % 10) as u8,
                b'0' + (n % 10) as u8,
            ];
            out.push_str(std::str::from_utf8(&digits[4 - width..]).expect("ascii digits"));
        }
        let mut out = String::with_capacity(24);
        push(&mut out, y as u32, 4);
        out.push('-');
        push(&mut out, m, 2);
        out.push('-');
        push(&mut out, d, 2);
        out.push('T');
        push(&mut out, sod / 3600, 2);
        out.push(':');
        push(&mut out, sod / 60 % 60, 2);
        out.push(':');
        push(&mut out, sod % 60, 2);
        out.push('.');
        push(&mut out, ms, 3);
        out.push('Z');
        out
    }

    /// The canonical shape `YYYY-MM-DDTHH:MM:SS[.fff]Z`, parsed without the general parser;
    /// `None` for anything else (which then takes the general path).
    fn parse_canonical(s: &str) -> Option<Self> {
        let b = s.as_bytes();
        if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
            return None;
        }
        let num = |r: std::ops::Range<usize>| -> Option<i64> {
            b[r].iter().try_fold(0i64, |acc, &c| {
                c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0'))
            })
        };
        let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
        let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
        let ms = match &b[19..] {
            [b'Z'] => 0,
            [b'.', rest @ .., b'Z']
                if (1..=9).contains(&rest.len()) && rest.iter().all(u8::is_ascii_digit) =>
            {
                let digits = &rest[..rest.len().min(3)];
                let v = digits.iter().fold(0i64, |acc, &c| acc * 10 + i64::from(c - b'0'));
                v * 10i64.pow(3 - digits.len() as u32)
            }
            _ => return None,
        };
        let days_in_month = match mo {
            1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
            4 | 6 | 9 | 11 => 30,
            2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
            2 => 28,
            _ => return None,
        };
        if d < 1 || d > days_in_month || h > 23 || mi > 59 || sec > 59 {
            return None;
        }
        let days = days_from_civil(y, mo as u32, d as u32);
        Some(Ts(((days * 86_400 + h * 3600 + mi * 60 + sec) * 1000) + ms))
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01 (inverse of [`days_from_civil`]).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
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
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Ts;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an RFC 3339 timestamp or epoch milliseconds")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Ts, E> {
                Ok(Ts(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Ts, E> {
                i64::try_from(v).map(Ts).map_err(E::custom)
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Ts, E> {
                Ts::parse_rfc3339(v)
                    .ok_or_else(|| E::custom("expected an RFC 3339 timestamp or epoch milliseconds"))
            }
        }
        d.deserialize_any(V)
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

    /// The hand-written paths agree with the `time` crate everywhere that matters.
    #[test]
    fn fast_format_and_parse_agree_with_the_time_crate() {
        let samples = [
            0i64,
            1,
            999,
            86_399_999,
            951_782_400_000,
            1_709_208_000_123,
            1_764_064_800_250,
            4_102_444_799_999,
            253_402_300_799_999,
        ];
        for ms in samples
            .iter()
            .copied()
            .chain((0..2000).map(|i| i * 1_234_567_891 % 253_402_300_799_999))
        {
            let t = Ts(ms);
            let dt = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap();
            let expected = format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
                dt.year(),
                dt.month() as u8,
                dt.day(),
                dt.hour(),
                dt.minute(),
                dt.second(),
                ms.rem_euclid(1000)
            );
            assert_eq!(t.to_rfc3339(), expected);
            assert_eq!(Ts::parse_canonical(&expected), Some(t));
            assert_eq!(
                OffsetDateTime::parse(&expected, &Rfc3339)
                    .ok()
                    .map(Ts::from_datetime),
                Some(t)
            );
        }
        assert_eq!(
            Ts::parse_rfc3339("2024-02-29T12:00:00Z"),
            Some(Ts(1_709_208_000_000))
        );
        assert_eq!(
            Ts::parse_canonical("2023-02-29T12:00:00Z"),
            None,
            "not a leap year"
        );
        assert_eq!(Ts::parse_rfc3339("2023-02-29T12:00:00Z"), None);
        assert_eq!(
            Ts::parse_canonical("2024-01-01T00:00:00.5Z"),
            Some(Ts(1_704_067_200_500))
        );
        assert_eq!(
            Ts::parse_canonical("2024-01-01T00:00:00+01:00"),
            None,
            "offsets take the general path"
        );
        assert_eq!(
            Ts::parse_rfc3339("2024-01-01T01:00:00+01:00"),
            Some(Ts(1_704_067_200_000))
        );
    }

    #[test]
    fn floor_handles_negative_times() {
        assert_eq!(Ts(61_000).floor(60_000), Ts(60_000));
        assert_eq!(Ts(-1).floor(60_000), Ts(-60_000));
    }
}
