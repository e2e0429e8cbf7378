//! Checkpoint encoding helpers. The state is encoded with postcard (compact, fast), which
//! cannot carry fields that skip themselves when empty; the few values that have such fields
//! (an open alert, a buffered reading: rare) are embedded as JSON bytes instead.

pub mod json {
    use serde::de::DeserializeOwned;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<T: Serialize, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        let bytes = serde_json::to_vec(v).map_err(serde::ser::Error::custom)?;
        s.serialize_bytes(&bytes)
    }

    pub fn deserialize<'de, T: DeserializeOwned, D: Deserializer<'de>>(d: D) -> Result<T, D::Error> {
        let bytes: Vec<u8> = Vec::deserialize(d)?;
        serde_json::from_slice(&bytes).map_err(serde::de::Error::custom)
    }
}
