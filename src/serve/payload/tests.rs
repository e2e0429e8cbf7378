//! The host's payload shapes (reference/azure-functions.md §1.4-§2.4), built the way the host
//! builds them: values JSON-encoded into strings, envelopes inside strings inside a list.

use super::*;
use serde_json::json;

/// What `JsonConvert.SerializeObject(string)` does to a string value: JSON text in a string.
fn encoded(v: &Value) -> Value {
    Value::String(v.to_string())
}

fn envelope_text(partition: u32, offset: u64, value: &str) -> String {
    json!({
        "Offset": offset, "Partition": partition, "Topic": "telemetry",
        "Timestamp": "2026-12-01T10:00:00Z", "Value": value, "LeaderEpoch": 0,
        "IsPartitionEOF": false, "Key": "pump-1", "Headers": []
    })
    .to_string()
}

fn invocation(data: Value) -> Invocation {
    let body = json!({"Data": data, "Metadata": {"sys": {"MethodName": "analyze"}}});
    Invocation::parse(body.to_string().as_bytes()).unwrap()
}

#[test]
fn a_batch_of_envelopes_as_the_host_sends_it_gives_the_records_in_order() {
    let reading = r#"{"deviceId":"pump-1","metrics":{"temperature":81.5}}"#;
    let list = json!([envelope_text(2, 41, reading), envelope_text(2, 42, "{}")]);
    let inv = invocation(json!({"events": encoded(&list)}));
    let records = inv.kafka_records().unwrap();
    assert_eq!(records.len(), 2);
    assert_eq!(
        records[0],
        Delivered {
            topic: "telemetry".into(),
            partition: 2,
            offset: 41,
            key: "pump-1".into(),
            value: reading.as_bytes().to_vec(),
        }
    );
    assert_eq!(records[1].offset, 42);
}

#[test]
fn one_event_a_list_not_encoded_again_and_any_binding_name_are_read_too() {
    let single = envelope_text(0, 7, "{}");
    // cardinality one: the envelope's text, JSON-encoded once more.
    let r = invocation(json!({"event": encoded(&Value::String(single.clone()))}))
        .kafka_records()
        .unwrap();
    assert_eq!((r.len(), r[0].offset), (1, 7));
    // A host that left the list as JSON.
    let r = invocation(json!({"events": [single.clone(), single]}))
        .kafka_records()
        .unwrap();
    assert_eq!(r.len(), 2);
}

#[test]
fn a_payload_the_host_would_not_send_says_what_is_wrong() {
    let err = |data: Value| invocation(data).kafka_records().unwrap_err().0;
    assert!(err(json!({})).contains("no trigger data"), "{}", err(json!({})));
    assert!(err(json!({"events": 5})).contains("not a number"));
    assert!(err(json!({"a": "[]", "b": "[]"})).contains("several inputs"));
    let no_offset = json!([json!({"Partition": 0, "Topic": "t", "Value": "x"}).to_string()]);
    assert_eq!(
        err(json!({"events": encoded(&no_offset)})),
        "event 0: Offset must be a whole number of at least 0"
    );
    let tombstone = json!([json!({"Offset": 1, "Partition": 0, "Topic": "t", "Value": null}).to_string()]);
    assert!(err(json!({"events": encoded(&tombstone)})).contains("Value is missing"));
    // dataType binary: base64 values without an envelope.
    let binary = json!(["eyJ4IjoxfQ=="]);
    assert!(
        err(json!({"events": encoded(&binary)})).contains("dataType"),
        "{}",
        err(json!({"events": encoded(&binary)}))
    );
    assert!(
        Invocation::parse(b"[1, 2]")
            .unwrap_err()
            .0
            .contains("not a Functions invocation")
    );
}

#[test]
fn an_http_trigger_request_becomes_method_path_headers_and_body() {
    // The doc's example, with the current host's Query object and header arrays.
    let req = json!({
        "Url": "http://localhost:7071/api/telemetry?x=1",
        "Method": "POST",
        "Query": {"x": "1"},
        "Headers": {"Content-Type": ["application/json"], "Authorization": ["SharedAccessSignature sr=a"]},
        "Params": {},
        "Body": "{\"deviceId\":\"pump-1\"}"
    });
    let r = invocation(json!({"req": req})).http_request().unwrap();
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/api/telemetry?x=1");
    assert!(
        r.headers
            .contains(&("Content-Type".into(), "application/json".into()))
    );
    assert!(
        r.headers
            .contains(&("Authorization".into(), "SharedAccessSignature sr=a".into()))
    );
    assert_eq!(r.body, br#"{"deviceId":"pump-1"}"#);
}

#[test]
fn an_http_request_without_a_body_or_with_a_binary_one_is_read_as_the_host_means_it() {
    let no_body = json!({"Url": "https://h/api/telemetry", "Method": "POST", "Headers": {}});
    let r = invocation(json!({"req": no_body})).http_request().unwrap();
    assert!(r.body.is_empty(), "the host omits Body when Content-Length is 0");
    let binary = json!({
        "Url": "https://h/", "Method": "POST",
        "Headers": {"Content-Type": ["application/octet-stream"]}, "Body": "aGk="
    });
    let r = invocation(json!({"req": binary})).http_request().unwrap();
    assert_eq!((r.path.as_str(), r.body.as_slice()), ("/", b"hi".as_slice()));
    let bad_url = json!({"Url": "telemetry", "Method": "POST"});
    assert!(
        invocation(json!({"req": bad_url}))
            .http_request()
            .unwrap_err()
            .0
            .contains("absolute URL")
    );
}

/// The largest invocation the shipped host.json can send stays far under the handler's body
/// limit, so no batch of valid telemetry is refused and redelivered forever: a full batch
/// (`maxBatchSize`) of the largest readings ingest accepts (64 metrics of 64-character names and
/// 24-character numbers, a 128-character device id, a 128-character message id of quotes, which
/// every encoding escapes), as records are written (`serde_json` of the reading) and as the host
/// wraps them (envelope text, the list encoded once more).
#[test]
fn a_full_batch_of_the_largest_readings_fits_the_invocation_limit_with_room() {
    use iotstream_core::reading::{BodyFormat, Limits, parse_body};
    let host: Value = serde_json::from_str(include_str!("../../../host.json")).unwrap();
    let batch = host["extensions"]["kafka"]["maxBatchSize"].as_u64().unwrap();
    let limits = Limits::default();
    let metrics: Vec<String> = (0..limits.max_metrics)
        .map(|i| format!(r#""m{i:063}":-1.2345678901234567e-300"#))
        .collect();
    let body = format!(
        r#"{{"deviceId":"{}","ts":1795600800000,"metrics":{{{}}},"id":"{}"}}"#,
        "d".repeat(128),
        metrics.join(","),
        r#"\""#.repeat(128)
    );
    let now = iotstream_core::Ts::from_millis(1_795_600_800_000);
    let readings = parse_body(body.as_bytes(), BodyFormat::Json, now, &limits).unwrap();
    let value = serde_json::to_string(&readings[0]).unwrap();
    assert_eq!(readings[0].metrics.len(), limits.max_metrics);
    let list = Value::Array(
        (0..batch)
            .map(|offset| Value::String(envelope_text(0, offset, &value)))
            .collect(),
    );
    let invocation = json!({"Data": {"events": encoded(&list)}, "Metadata": {}}).to_string();
    assert!(
        invocation.len() * 4 < crate::serve::MAX_INVOCATION_BYTES,
        "{batch} of the largest readings make an invocation of {} bytes; the handler takes {}",
        invocation.len(),
        crate::serve::MAX_INVOCATION_BYTES
    );
    let records = Invocation::parse(invocation.as_bytes())
        .unwrap()
        .kafka_records()
        .unwrap();
    assert_eq!(records.len() as u64, batch);
    assert!(records.iter().all(|r| r.value == value.as_bytes()));
}
