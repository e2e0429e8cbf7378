//! Ingest hot path, per request: body parsing and SAS authentication.
//!
//! * `parse_body/single_json`: one reading as a JSON object (the CONTRACT example shape).
//! * `parse_body/array_json_1000`: a JSON array of 1,000 readings.
//! * `parse_body/ndjson_1000`: the same 1,000 readings as NDJSON.
//! * `sas/parse_verify`: `SasToken::parse` of an `Authorization` header, then `verify` with the
//!   device key (derived once, outside the loop).
//! * `sas/derive_parse_verify`: the same plus `derive_device_key` per request, as ingest does
//!   when it has no key cache.
//!
//! Throughput is reported per element: readings for `parse_body`, tokens for `sas`.
//! Every body is checked to parse into the expected number of readings before it is measured.
//!
//! Run (short):
//! `CARGO_TARGET_DIR=$HOME/.cache/iotstream-target cargo bench -p iotstream-core --bench ingest_path -- --warm-up-time 1 --measurement-time 3`

use criterion::{Criterion, Throughput, black_box, criterion_group, criterion_main};
use iotstream_core::reading::{BodyFormat, Limits, parse_body};
use iotstream_core::sas::{SasToken, derive_device_key, make_token};
use iotstream_core::{DeviceId, Ts};
use std::fmt::Write as _;

/// 2026-11-25T10:00:00Z in epoch milliseconds.
const T0_MS: i64 = 1_795_600_800_000;
/// Server time of the request: a few minutes after the readings.
const NOW: Ts = Ts::from_millis(T0_MS + 180_000);

const SINGLE: &str = r#"{"deviceId":"pump-17","ts":"2026-11-25T10:00:00.250Z","metrics":{"temperature":81.5,"vibration":0.02},"id":"m-1"}"#;

/// One reading in the wire shape: 100 devices, RFC 3339 ts, 2-4 metrics, client message ids.
fn wire_reading(i: usize) -> String {
    let ts_ms = 250 + 10 * i; // within the first 10 s after T0
    let mut s = format!(
        r#"{{"deviceId":"pump-{}","ts":"2026-11-25T10:00:{:02}.{:03}Z","metrics":{{"temperature":{:.1},"vibration":{:.3}"#,
        i % 100,
        ts_ms / 1000,
        ts_ms % 1000,
        60.0 + (i % 37) as f64 * 0.7,
        0.01 + (i % 13) as f64 * 0.011,
    );
    if i.is_multiple_of(2) {
        write!(s, r#","pressure":{:.2}"#, 101.0 + (i % 7) as f64 * 0.13).unwrap();
    }
    if i.is_multiple_of(3) {
        write!(s, r#","humidity":{:.1}"#, 40.0 + (i % 11) as f64).unwrap();
    }
    write!(s, r#"}},"id":"m-{i}"}}"#).unwrap();
    s
}

fn json_array(n: usize) -> Vec<u8> {
    let items: Vec<String> = (0..n).map(wire_reading).collect();
    format!("[{}]", items.join(",")).into_bytes()
}

fn ndjson(n: usize) -> Vec<u8> {
    let mut s = String::new();
    for i in 0..n {
        s.push_str(&wire_reading(i));
        s.push('\n');
    }
    s.into_bytes()
}

fn bench_parse(c: &mut Criterion) {
    let limits = Limits::default();
    let cases: [(&str, Vec<u8>, BodyFormat, u64); 3] = [
        ("single_json", SINGLE.as_bytes().to_vec(), BodyFormat::Json, 1),
        ("array_json_1000", json_array(1000), BodyFormat::Json, 1000),
        ("ndjson_1000", ndjson(1000), BodyFormat::Ndjson, 1000),
    ];
    let mut g = c.benchmark_group("parse_body");
    for (name, body, format, n) in &cases {
        let parsed = parse_body(body, *format, NOW, &limits)
            .unwrap_or_else(|e| panic!("{name}: the bench body must be valid: {e:?}"));
        assert_eq!(parsed.len() as u64, *n, "{name}: reading count");
        g.throughput(Throughput::Elements(*n));
        // Bodies of 1,000 take about a millisecond: fewer samples fit a short measurement time.
        g.sample_size(if *n > 1 { 50 } else { 100 });
        g.bench_function(*name, |b| {
            b.iter(|| parse_body(black_box(body), *format, NOW, &limits))
        });
    }
    g.finish();
}

fn bench_sas(c: &mut Criterion) {
    let master = b"bench-master-secret-0123456789abcdef";
    let device = DeviceId::parse("pump-17").unwrap();
    let key = derive_device_key(master, &device, 0);
    let now_secs = T0_MS / 1000;
    let header = make_token("myhub.azure-devices.net", &device, &key, now_secs + 3600);
    SasToken::parse(&header)
        .and_then(|t| t.verify(&key, now_secs))
        .expect("the bench token must verify");

    let mut g = c.benchmark_group("sas");
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse_verify", |b| {
        b.iter(|| {
            let token = SasToken::parse(black_box(&header)).unwrap();
            token.verify(black_box(&key), now_secs)
        })
    });
    g.bench_function("derive_parse_verify", |b| {
        b.iter(|| {
            let token = SasToken::parse(black_box(&header)).unwrap();
            let key = derive_device_key(black_box(master), &token.device_id, 0);
            token.verify(&key, now_secs)
        })
    });
    g.finish();
}

criterion_group!(benches, bench_parse, bench_sas);
criterion_main!(benches);
