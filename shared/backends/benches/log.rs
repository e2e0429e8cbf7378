//! The embedded durable log on the ingest hot path: one durable append per iteration.
//!
//! * `log/bus_publish_1000`: `EventBus::publish` of 1,000 records (~150-byte JSON values, 100
//!   device keys) to one topic of a [`LogBus`]: one `write` plus one `fdatasync` per call.
//! * `log/store_accept_1000`: `TelemetrySink::accept` (= `TelemetryStore::put`) of 1,000 new
//!   readings on a [`LogTelemetryStore`]: dedup check, JSON encoding, durable append, indexing.
//!   Every iteration's readings have fresh ids (generated with `parse_body` outside the timed
//!   region), so all 1,000 are stored each time; the index grows as in production.
//!
//! Throughput is records (readings) per second. The logs live in a temp dir under `$TMPDIR`
//! (default `/tmp`): put it on the disk you want to measure (on tmpfs `fdatasync` is free).
//! Each call runs on a tokio runtime with `Runtime::block_on` (the append itself runs on the
//! blocking pool, as in production).
//!
//! Run (short):
//! `CARGO_TARGET_DIR=$HOME/.cache/iotstream-target cargo bench -p iotstream-backends --bench log -- --warm-up-time 1 --measurement-time 3`

use criterion::{Criterion, SamplingMode, Throughput, black_box, criterion_group, criterion_main};
use iotstream_backends::{LogBus, LogTelemetryStore};
use iotstream_core::Ts;
use iotstream_core::ports::{EventBus, Record, TelemetrySink};
use iotstream_core::reading::{BodyFormat, Limits, parse_body};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

const N: usize = 1_000;
/// 2026-11-25T10:00:00Z in epoch milliseconds.
const T0_MS: i64 = 1_795_600_800_000;

/// A reading as NDJSON line `i` of batch `batch`: about 150 bytes.
fn wire_reading(batch: u64, i: usize) -> String {
    let ts = T0_MS + batch as i64 * 1_000 + (i % 1_000) as i64;
    format!(
        r#"{{"deviceId":"dev-{:05}","ts":{ts},"metrics":{{"temperature":{:.2},"vibration":{:.3},"pressure":{:.2},"humidity":{:.1},"rpm":{}}},"id":"b{batch}-{i}"}}"#,
        i % 100,
        60.0 + (i % 37) as f64 * 0.31,
        0.02 + (i % 13) as f64 * 0.007,
        101.0 + (i % 7) as f64 * 0.11,
        40.0 + (i % 11) as f64 * 1.3,
        1_450 + i % 50,
    )
}

fn readings(batch: u64) -> Vec<iotstream_core::Reading> {
    let mut body = String::new();
    for i in 0..N {
        writeln!(body, "{}", wire_reading(batch, i)).unwrap();
    }
    let now = Ts::from_millis(T0_MS + batch as i64 * 1_000 + 60_000);
    let out = parse_body(body.as_bytes(), BodyFormat::Ndjson, now, &Limits::default())
        .expect("generated readings are valid");
    assert_eq!(out.len(), N);
    out
}

fn bench_log(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let mut g = c.benchmark_group("log");
    g.throughput(Throughput::Elements(N as u64));
    // Each iteration waits for a disk flush: flat sampling, fewer samples.
    g.sampling_mode(SamplingMode::Flat);
    g.sample_size(30);

    let bus_dir = tempfile::tempdir().expect("temp dir");
    eprintln!("log bench: logs under {}", bus_dir.path().display());
    let bus = LogBus::open(bus_dir.path()).expect("open bus");
    rt.block_on(bus.ensure_topic("bench")).expect("topic");
    let records: Vec<Record> = (0..N)
        .map(|i| Record {
            key: format!("dev-{:05}", i % 100),
            value: wire_reading(0, i).into_bytes(),
        })
        .collect();
    let avg = records.iter().map(|r| r.value.len()).sum::<usize>() / N;
    eprintln!("log bench: publish values average {avg} bytes");
    g.bench_function("bus_publish_1000", |b| {
        b.iter(|| {
            rt.block_on(bus.publish("bench", black_box(&records)))
                .expect("publish")
        })
    });

    let store_dir = tempfile::tempdir().expect("temp dir");
    let store =
        LogTelemetryStore::open(LogBus::open(store_dir.path()).expect("open bus")).expect("open store");
    let mut batch = 0u64;
    g.bench_function("store_accept_1000", |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            for _ in 0..iters {
                batch += 1;
                let fresh = readings(batch);
                let start = Instant::now();
                let stored = rt.block_on(store.accept(black_box(&fresh))).expect("accept");
                timed += start.elapsed();
                assert!(stored.iter().all(|&new| new), "every reading is new");
            }
            timed
        })
    });
    g.finish();
}

criterion_group!(benches, bench_log);
criterion_main!(benches);
