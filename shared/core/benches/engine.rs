//! The analysis engine (`Engine::process`) with the built-in default rules, at fleet scale.
//!
//! Load: 10,000 devices, each reading carries 4 metrics (`temperature`, `vibration`, `pressure`,
//! `humidity`). Readings arrive in realistic order: every device once per round, devices
//! interleaved (a fixed permutation), each device's `ts` 1 s after its previous one. Values are
//! mostly normal; every device overheats for 5 s every 10 min (opens and resolves `overheat`) and
//! vibrates for 15 s every 15 min (pending, then opens and resolves `high-vibration`), at
//! staggered phases: about 2.5% of readings breach a threshold and every batch carries some 25
//! alert transitions.
//!
//! One iteration is one `process` call on a batch of 5,000 readings (half a round); throughput
//! is readings per second. Batches are generated from an NDJSON body with `parse_body` outside
//! the timed region (`iter_custom`), and event time keeps advancing across iterations, so windows
//! roll and close as in production. Before measuring, the engine is warmed up with 7 minutes of
//! event time (420 rounds, 4.2M readings: longer than window plus allowed lateness and the dedup
//! memory), so state exists for every device and is at its steady-state size.
//!
//! After warm-up it prints, once, the engine state size per device-metric:
//! `engine.snapshot().len() / (devices * metrics)` (target: at most 2 KiB).
//!
//! Allocator: mimalloc, as in the `iotstream` binary.
//!
//! `IOTSTREAM_BENCH_DEVICES` changes the fleet size (e.g. 1000: the whole state fits in the
//! CPU caches, which shows how much of the cost is memory).
//! `IOTSTREAM_BENCH_TICK_EVERY` changes how many batches pass between ticks (default 200; a huge
//! number leaves ticks out, to see their share).
//!
//! Run (short):
//! `CARGO_TARGET_DIR=$HOME/.cache/iotstream-target cargo bench -p iotstream-core --bench engine -- --warm-up-time 1 --measurement-time 3`

use criterion::{Criterion, SamplingMode, Throughput, black_box, criterion_group, criterion_main};
use iotstream_core::engine::Engine;
use iotstream_core::model::AlertEventKind;
use iotstream_core::reading::{BodyFormat, Limits, parse_body};
use iotstream_core::rules::Rules;
use iotstream_core::{Reading, Ts};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const DEVICES_DEFAULT: u64 = 10_000;

/// Devices in the fleet: `IOTSTREAM_BENCH_DEVICES` overrides the default (to see how the
/// engine's speed depends on how much of its state fits in the CPU's caches).
fn devices() -> u64 {
    static N: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *N.get_or_init(|| {
        std::env::var("IOTSTREAM_BENCH_DEVICES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(DEVICES_DEFAULT)
    })
}
const METRICS: u64 = 4;
const BATCH: usize = 5_000;
/// Rounds (one reading per device, 1 s of event time) of warm-up; `IOTSTREAM_BENCH_WARM_ROUNDS`
/// overrides it (fewer rounds for valgrind, whose runs are ~50x slower).
const WARM_ROUNDS: u64 = 420;
/// Coprime with `DEVICES`: the order in which devices report within a round.
const STRIDE: u64 = 7_919;
/// The analyze worker ticks once a second; at 2M readings/s that is every 400 batches. Ticking
/// every 200 (twice as often) keeps the measurement on the safe side.
const TICK_EVERY: u64 = 200;
/// 2026-11-25T10:00:00Z in epoch milliseconds.
const T0_MS: i64 = 1_795_600_800_000;

/// SplitMix64: cheap, deterministic pseudo-randomness without a dependency.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Uniform in [-1, 1), from a seed.
fn noise(seed: u64) -> f64 {
    (mix(seed) >> 11) as f64 / (1u64 << 52) as f64 - 1.0
}

/// An endless, deterministic stream of readings from the fleet.
struct Fleet {
    /// Index of the next reading: `round * devices() + slot`.
    next: u64,
    limits: Limits,
    body: String,
}

impl Fleet {
    fn new() -> Self {
        Fleet {
            next: 0,
            limits: Limits {
                max_readings: BATCH,
                ..Limits::default()
            },
            body: String::new(),
        }
    }

    /// The next `BATCH` readings in arrival order, parsed from NDJSON as ingest would.
    fn next_batch(&mut self) -> Vec<Reading> {
        self.body.clear();
        let mut newest = 0;
        for i in self.next..self.next + BATCH as u64 {
            let (round, slot) = (i / devices(), i % devices());
            let device = slot * STRIDE % devices();
            // Per-device clock offset within the second; each device advances exactly 1 s/round.
            let ts = T0_MS + round as i64 * 1_000 + (mix(device) % 1_000) as i64;
            newest = newest.max(ts);
            let seed = (device << 32) ^ round;
            let overheating = (round + mix(device ^ 1) % 600) % 600 < 5;
            let shaking = (round + mix(device ^ 2) % 900) % 900 < 15;
            let temperature = if overheating {
                83.0 + 2.0 * noise(seed ^ 11)
            } else {
                58.0 + (device % 12) as f64 + 2.0 * noise(seed ^ 11)
            };
            let vibration = if shaking {
                0.62 + 0.05 * noise(seed ^ 12)
            } else {
                0.06 + 0.03 * noise(seed ^ 12)
            };
            let pressure = 101.3 + 0.4 * noise(seed ^ 13);
            let humidity = 45.0 + 5.0 * noise(seed ^ 14);
            writeln!(
                self.body,
                r#"{{"deviceId":"dev-{device:05}","ts":{ts},"metrics":{{"temperature":{temperature:.2},"vibration":{vibration:.3},"pressure":{pressure:.2},"humidity":{humidity:.1}}},"id":"r{round}"}}"#
            )
            .unwrap();
        }
        self.next += BATCH as u64;
        let now = Ts::from_millis(newest + 1_000);
        let readings = parse_body(self.body.as_bytes(), BodyFormat::Ndjson, now, &self.limits)
            .expect("generated readings are valid");
        assert_eq!(readings.len(), BATCH);
        readings
    }
}

/// Processing time of a batch: just after its newest reading.
fn now(batch: &[Reading]) -> Ts {
    Ts::from_millis(batch.iter().map(|r| r.ts.millis()).max().unwrap_or(0) + 100)
}

fn bench_engine(c: &mut Criterion) {
    let mut engine = Engine::new(Rules::defaults());
    let mut fleet = Fleet::new();

    // Warm-up: state for every device, windows and dedup memory at steady state.
    let (mut opened, mut resolved, mut processed, mut skipped) = (0usize, 0usize, 0u64, 0u64);
    let mut busy = Duration::ZERO;
    let warm_rounds = std::env::var("IOTSTREAM_BENCH_WARM_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(WARM_ROUNDS);
    let warm_batches = warm_rounds * devices() / BATCH as u64;
    for _ in 0..warm_batches {
        let batch = fleet.next_batch();
        let start = Instant::now();
        let out = engine.process(&batch, now(&batch));
        busy += start.elapsed();
        processed += out.stats.processed;
        skipped += out.stats.duplicates + out.stats.out_of_order + out.stats.late;
        for a in &out.alerts {
            match a.event {
                AlertEventKind::Opened => opened += 1,
                AlertEventKind::Resolved => resolved += 1,
                AlertEventKind::Acknowledged | AlertEventKind::Updated => {}
            }
        }
    }
    assert_eq!(engine.devices() as u64, devices());
    let batch = fleet.next_batch();
    engine.process(&batch, now(&batch));
    let start = Instant::now();
    let ticked = engine.tick(now(&batch));
    eprintln!(
        "engine tick (partial windows + latest state of every device that changed): {:.2?}, {} insights",
        start.elapsed(),
        ticked.insights.len()
    );
    let snapshot = engine.snapshot().len();
    eprintln!(
        "engine warm-up: {processed} readings in {:.2?} of process() ({:.0} readings/s), \
         {skipped} skipped (dup/out-of-order/late), alerts opened {opened}, resolved {resolved}",
        busy,
        processed as f64 / busy.as_secs_f64()
    );
    eprintln!(
        "engine state after warm-up: snapshot {snapshot} bytes for {} devices x {METRICS} \
         metrics = {} bytes per device-metric (target <= 2048)",
        devices(),
        snapshot as u64 / (devices() * METRICS)
    );

    let mut g = c.benchmark_group("engine");
    g.throughput(Throughput::Elements(BATCH as u64));
    // Iterations take milliseconds (plus untimed generation): flat sampling, fewer samples.
    g.sampling_mode(SamplingMode::Flat);
    g.sample_size(30);
    let mut batches = 0u64;
    let tick_every = std::env::var("IOTSTREAM_BENCH_TICK_EVERY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(TICK_EVERY);
    g.bench_function("process_10k_devices_4_metrics_batch_5000", |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            for _ in 0..iters {
                let batch = fleet.next_batch();
                let start = Instant::now();
                black_box(engine.process(black_box(&batch), now(&batch)));
                batches += 1;
                if batches.is_multiple_of(tick_every) {
                    black_box(engine.tick(now(&batch)));
                }
                timed += start.elapsed();
            }
            timed
        })
    });
    g.finish();
}

criterion_group!(benches, bench_engine);
criterion_main!(benches);
