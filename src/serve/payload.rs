//! The Functions host's invocation payloads, decoded (reference/azure-functions.md §1.4-§2.4):
//! `{"Data": {...}, "Metadata": {...}}` in, `{"Outputs": {...}, "Logs": [...], "ReturnValue": null}`
//! out. Pure: no I/O, so every shape the host sends is a unit test.
//!
//! What the host does to values, and what this undoes:
//! - a string trigger value arrives JSON-encoded a second time (a JSON string holding JSON text);
//! - a Kafka batch (`cardinality: many`, `dataType: string`) is a JSON array of strings, each the
//!   JSON text of an envelope `{Offset, Partition, Topic, Timestamp, Key, Value, Headers}` whose
//!   `Value` is the record's text;
//! - an HTTP trigger's request is `{Url, Method, Query, Headers: {name: [values]}, Body}`, `Body`
//!   present only when the request had a body, base64 for binary content types.

use base64::Engine as _;
use iotstream_core::ports::Delivered;
use serde::Deserialize;
use serde_json::{Map, Value};

/// An invocation request.
#[derive(Debug, Deserialize)]
pub struct Invocation {
    #[serde(rename = "Data", alias = "data", default)]
    pub data: Map<String, Value>,
}

/// Why a payload cannot be handled: the host was configured differently from `functions/`.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PayloadError(pub String);

fn bad(msg: impl Into<String>) -> PayloadError {
    PayloadError(msg.into())
}

impl Invocation {
    pub fn parse(body: &[u8]) -> Result<Invocation, PayloadError> {
        serde_json::from_slice(body).map_err(|e| {
            bad(format!(
                "not a Functions invocation request (Data, Metadata): {e}"
            ))
        })
    }

    /// The value of the single input binding (trigger), whatever its name in function.json. Taken,
    /// not copied: a Kafka batch can be megabytes.
    fn into_trigger(mut self, preferred: &str) -> Result<Value, PayloadError> {
        if let Some(v) = self.data.remove(preferred) {
            return Ok(v);
        }
        match self.data.len() {
            1 => Ok(self.data.into_iter().next().expect("one value").1),
            0 => Err(bad("the invocation has no trigger data (Data is empty)")),
            _ => Err(bad(format!(
                "the invocation has several inputs and none is named {preferred:?}"
            ))),
        }
    }

    /// The records of a Kafka trigger, in the order the host gave them.
    pub fn kafka_records(self) -> Result<Vec<Delivered>, PayloadError> {
        let value = unwrap_text(self.into_trigger("events")?);
        let items = match value {
            Value::Array(items) => items,
            one @ Value::Object(_) => vec![one],
            other => {
                return Err(bad(format!(
                    "a Kafka trigger's data must be an event or a list of events, not {}",
                    kind(&other)
                )));
            }
        };
        items
            .into_iter()
            .enumerate()
            .map(|(i, item)| envelope(unwrap_text(item)).map_err(|e| bad(format!("event {i}: {}", e.0))))
            .collect()
    }

    /// The request of an HTTP trigger.
    pub fn http_request(self) -> Result<HttpRequest, PayloadError> {
        let value = unwrap_text(self.into_trigger("req")?);
        let wire: WireRequest = serde_json::from_value(value)
            .map_err(|e| bad(format!("an HTTP trigger's request must have Url and Method: {e}")))?;
        let mut headers = Vec::new();
        for (name, values) in wire.headers {
            match values {
                Value::Array(vs) => {
                    for v in vs {
                        headers.push((name.clone(), text_of(v)));
                    }
                }
                v => headers.push((name, text_of(v))),
            }
        }
        let binary = headers.iter().any(|(n, v)| {
            n.eq_ignore_ascii_case("content-type")
                && (v.starts_with("application/octet-stream") || v.starts_with("multipart/"))
        });
        let body = match wire.body {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(s)) if binary => base64::engine::general_purpose::STANDARD
                .decode(s.as_bytes())
                .map_err(|e| bad(format!("a binary request body must be base64: {e}")))?,
            Some(Value::String(s)) => s.into_bytes(),
            // A JSON body the host parsed (older hosts): its text again.
            Some(other) => other.to_string().into_bytes(),
        };
        let path =
            path_of(&wire.url).ok_or_else(|| bad(format!("Url {:?} is not an absolute URL", wire.url)))?;
        Ok(HttpRequest {
            method: wire.method,
            path,
            headers,
            body,
        })
    }
}

/// An HTTP trigger's request, ready to be replayed against the HTTP API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    pub method: String,
    /// Path and query, e.g. `/api/telemetry`.
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

#[derive(Deserialize)]
struct WireRequest {
    #[serde(rename = "Url", alias = "url")]
    url: String,
    #[serde(rename = "Method", alias = "method")]
    method: String,
    #[serde(rename = "Headers", alias = "headers", default)]
    headers: Map<String, Value>,
    #[serde(rename = "Body", alias = "body", default)]
    body: Option<Value>,
}

/// `/api/telemetry?x=1` of `http://localhost:7071/api/telemetry?x=1`.
fn path_of(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let path = rest.find('/').map_or("/", |i| &rest[i..]);
    Some(path.to_string())
}

/// A JSON string holding JSON text (the host's second encoding) becomes that JSON; anything
/// else stays as it is.
fn unwrap_text(v: Value) -> Value {
    match v {
        Value::String(s) => match serde_json::from_str::<Value>(&s) {
            Ok(inner @ (Value::Array(_) | Value::Object(_) | Value::String(_))) => unwrap_text(inner),
            _ => Value::String(s),
        },
        other => other,
    }
}

fn text_of(v: Value) -> String {
    match v {
        Value::String(s) => s,
        other => other.to_string(),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string (set \"dataType\": \"string\" in function.json)",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// One Kafka event envelope (`KafkaEventData`).
fn envelope(v: Value) -> Result<Delivered, PayloadError> {
    let Value::Object(mut o) = v else {
        return Err(bad(format!(
            "an event must be the extension's envelope (Offset, Partition, Topic, Value), not {}",
            kind(&v)
        )));
    };
    let mut field = |name: &str| {
        let lower = name.to_ascii_lowercase();
        o.remove(name).or_else(|| o.remove(&lower))
    };
    let number = |v: Option<Value>, name: &str| -> Result<u64, PayloadError> {
        match v {
            Some(Value::Number(n)) => n.as_u64(),
            Some(Value::String(s)) => s.parse().ok(),
            _ => None,
        }
        .ok_or_else(|| bad(format!("{name} must be a whole number of at least 0")))
    };
    let offset = number(field("Offset"), "Offset")?;
    let partition = number(field("Partition"), "Partition")?;
    let partition = u32::try_from(partition).map_err(|_| bad("Partition is too large"))?;
    let topic = match field("Topic") {
        Some(Value::String(t)) if !t.is_empty() => t,
        _ => return Err(bad("Topic must be the topic's name")),
    };
    let key = match field("Key") {
        Some(Value::String(k)) => k,
        _ => String::new(),
    };
    let value = match field("Value") {
        Some(Value::String(s)) => s.into_bytes(),
        // A value the serializer kept as JSON: its text.
        Some(v @ (Value::Object(_) | Value::Array(_) | Value::Number(_) | Value::Bool(_))) => {
            v.to_string().into_bytes()
        }
        _ => return Err(bad("Value is missing (a tombstone carries no record)")),
    };
    Ok(Delivered {
        topic,
        partition,
        offset,
        key,
        value,
    })
}

/// The response body: what to log under the invocation and the outputs (HTTP response).
pub fn response(outputs: Value, logs: &[String]) -> Value {
    serde_json::json!({"Outputs": outputs, "Logs": logs, "ReturnValue": null})
}

#[cfg(test)]
mod tests;
