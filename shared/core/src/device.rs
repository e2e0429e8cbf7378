//! Device identifiers.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A device id: 1-128 characters of `[A-Za-z0-9_.:-]` (CONTRACT §2.2). Valid by construction.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct DeviceId(String);

impl DeviceId {
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.is_empty() || s.len() > 128 {
            return Err("must be 1-128 characters".into());
        }
        if let Some(c) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-')))
        {
            return Err(format!(
                "character {c:?} is not allowed (use A-Z a-z 0-9 _ . : -)"
            ));
        }
        Ok(DeviceId(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for DeviceId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        DeviceId::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A shell-style glob over device ids: `*` matches any run, `?` one character. Device ids are
/// ASCII, so this works on bytes and allocates nothing (it runs for every reading and rule).
pub fn glob_match(pattern: &str, text: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_contract_alphabet() {
        assert!(DeviceId::parse("pump-17").is_ok());
        assert!(DeviceId::parse("site.a:pump_17-x").is_ok());
        assert!(DeviceId::parse(&"a".repeat(128)).is_ok());
    }

    #[test]
    fn rejects_empty_long_and_odd_characters() {
        assert!(DeviceId::parse("").is_err());
        assert!(DeviceId::parse(&"a".repeat(129)).is_err());
        assert!(DeviceId::parse("pump/17").unwrap_err().contains("'/'"));
        assert!(DeviceId::parse("pump 17").is_err());
    }

    #[test]
    fn globs_match_like_a_shell() {
        assert!(glob_match("pump-*", "pump-17"));
        assert!(glob_match("*", "anything"));
        assert!(glob_match("p?mp-*7", "pump-17"));
        assert!(!glob_match("pump-*", "fan-1"));
        assert!(!glob_match("pump-?", "pump-17"));
    }
}
