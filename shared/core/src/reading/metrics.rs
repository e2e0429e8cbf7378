//! A reading's metrics: names with values, sorted by name, each name once.

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// A reading's metrics by name, sorted by name, each name once (a later duplicate replaces an
/// earlier one, as in a map). A sorted vector rather than a `BTreeMap`: a reading carries a
/// handful of metrics, and walking them is part of every reading's analysis (the tree's walk was
/// about 4 % of the engine's instructions). On the wire it is a JSON object, as a map is; only an
/// object is accepted.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metrics(Vec<(String, f64)>);

impl Metrics {
    pub fn new() -> Self {
        Metrics(Vec::new())
    }

    pub fn with_capacity(n: usize) -> Self {
        Metrics(Vec::with_capacity(n))
    }

    /// Sets `name` to `value`; returns the value it replaces.
    pub fn insert(&mut self, name: String, value: f64) -> Option<f64> {
        // Input is usually sorted already (JSON objects parse into sorted maps): append.
        if self.0.last().is_none_or(|(last, _)| *last < name) {
            self.0.push((name, value));
            return None;
        }
        match self.0.binary_search_by(|(k, _)| k.as_str().cmp(&name)) {
            Ok(i) => Some(std::mem::replace(&mut self.0[i].1, value)),
            Err(i) => {
                self.0.insert(i, (name, value));
                None
            }
        }
    }

    pub fn get(&self, name: &str) -> Option<&f64> {
        let i = self.0.binary_search_by(|(k, _)| k.as_str().cmp(name)).ok()?;
        Some(&self.0[i].1)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Names and values, in name order.
    pub fn iter(&self) -> Iter<'_> {
        self.0.iter().map(|(k, v)| (k, v))
    }

    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.0.iter().map(|(k, _)| k)
    }
}

/// The iterator of [`Metrics::iter`].
pub type Iter<'a> =
    std::iter::Map<std::slice::Iter<'a, (String, f64)>, fn(&(String, f64)) -> (&String, &f64)>;

impl<'a> IntoIterator for &'a Metrics {
    type Item = (&'a String, &'a f64);
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

impl FromIterator<(String, f64)> for Metrics {
    fn from_iter<I: IntoIterator<Item = (String, f64)>>(iter: I) -> Self {
        let mut m = Metrics::new();
        for (k, v) in iter {
            m.insert(k, v);
        }
        m
    }
}

impl Serialize for Metrics {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Metrics {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MetricsVisitor;

        impl<'de> Visitor<'de> for MetricsVisitor {
            type Value = Metrics;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of metric names to numbers")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Metrics, A::Error> {
                let mut m = Metrics::with_capacity(access.size_hint().unwrap_or(0).min(64));
                while let Some((k, v)) = access.next_entry()? {
                    m.insert(k, v);
                }
                Ok(m)
            }
        }

        deserializer.deserialize_map(MetricsVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::Metrics;
    use std::collections::BTreeMap;

    /// Whatever the order and repeats of the input, the same as a `BTreeMap` (which it replaces):
    /// the same entries, the same order, the same JSON.
    #[test]
    fn it_is_a_sorted_map() {
        let inputs: [&[(&str, f64)]; 5] = [
            &[],
            &[("b", 2.0), ("a", 1.0), ("c", 3.0)],
            &[("a", 1.0), ("a", 5.0), ("b", 2.0)],
            &[("z", 1.0), ("y", 2.0), ("z", 3.0), ("x", 4.0), ("y", 5.0)],
            &[
                ("temperature", 81.5),
                ("humidity", 40.0),
                ("pressure", 101.3),
                ("vibration", 0.1),
            ],
        ];
        for pairs in inputs {
            let owned = pairs.iter().map(|&(k, v)| (k.to_owned(), v));
            let m: Metrics = owned.clone().collect();
            let b: BTreeMap<String, f64> = owned.collect();
            assert!(m.iter().eq(b.iter()), "{pairs:?}");
            assert!(m.keys().eq(b.keys()) && m.len() == b.len() && m.is_empty() == b.is_empty());
            for (k, v) in &b {
                assert_eq!(m.get(k), Some(v));
            }
            assert_eq!(m.get("missing"), None);
            assert_eq!(
                serde_json::to_string(&m).unwrap(),
                serde_json::to_string(&b).unwrap()
            );
            let text = format!(
                "{{{}}}",
                pairs
                    .iter()
                    .map(|(k, v)| format!("\"{k}\":{v}"))
                    .collect::<Vec<_>>()
                    .join(",")
            );
            let parsed: Metrics = serde_json::from_str(&text).unwrap();
            let parsed_b: BTreeMap<String, f64> = serde_json::from_str(&text).unwrap();
            assert!(parsed.iter().eq(parsed_b.iter()), "{text}");
        }
    }

    #[test]
    fn only_an_object_of_numbers_is_accepted() {
        for bad in [
            r#"[["a", 1.0]]"#,
            r#"[]"#,
            r#"{"a": "1"}"#,
            r#"{"a": null}"#,
            r#""a""#,
            "1",
        ] {
            assert!(serde_json::from_str::<Metrics>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn insert_returns_what_it_replaces() {
        let mut m = Metrics::new();
        assert_eq!(m.insert("b".into(), 1.0), None);
        assert_eq!(m.insert("a".into(), 2.0), None);
        assert_eq!(m.insert("b".into(), 3.0), Some(1.0));
        assert!(m.iter().eq([(&"a".to_owned(), &2.0), (&"b".to_owned(), &3.0)]));
    }
}
