//! A digest of every output of the analysis engine over three simulator runs, for changes
//! that must not change what the engine produces (performance work): run it before and after,
//! and the digests must match.
//!
//! The runs: the simulator's rules (12 devices, one day of a reading every 10 s, a checkpoint
//! restore mid-way), the built-in rules (30 devices), and an allowed lateness of 30 s with a
//! reading held back one round every fifth round (out of order, re-sorted). Each hashes (SHA-256)
//! every `process`, `tick` and `finish` output, scores included, and the checkpoints.
//!
//! `CARGO_TARGET_DIR=$HOME/.cache/iotstream-target cargo run --release -p iotstream-core --example engine_digest`

use iotstream_core::Ts;
use iotstream_core::engine::Engine;
use iotstream_core::rules::{DEFAULT_RULES, Rules};
use iotstream_core::sim::{SimConfig, Simulator, sim_rules};
use sha2::{Digest, Sha256};

struct Run {
    name: &'static str,
    rules: Rules,
    devices: u32,
    rounds: u32,
    restore_at: u32,
    /// Hold one reading back a round, every fifth round.
    delay: bool,
}

fn run(r: Run) {
    let mut sim = Simulator::new(SimConfig {
        devices: r.devices,
        interval_ms: 10_000,
        start: Ts::from_millis(1_795_600_800_000),
        anomaly_rate: 0.002,
        seed: 7,
        prefix: "dev-".into(),
    });
    let mut engine = Engine::new(r.rules.clone()).with_scores();
    let mut h = Sha256::new();
    let (mut insights, mut alerts, mut scores) = (0, 0, 0);
    let mut held = None;
    for round in 0..r.rounds {
        let now = sim.now();
        let mut batch = sim.round();
        batch.extend(held.take());
        if r.delay && round % 5 == 0 && batch.len() > 2 {
            held = batch.pop();
        }
        let out = engine.process(&batch, now);
        let tick = engine.tick(now);
        insights += out.insights.len() + tick.insights.len();
        alerts += out.alerts.len() + tick.alerts.len();
        scores += out.scores.len();
        h.update(format!("{out:?}{tick:?}").as_bytes());
        if round == r.restore_at {
            let snapshot = engine.snapshot();
            h.update(&snapshot);
            engine = Engine::restore(r.rules.clone(), &snapshot)
                .expect("the engine restores its own checkpoint")
                .with_scores();
        }
    }
    let end = engine.finish();
    h.update(format!("{end:?}").as_bytes());
    h.update(engine.snapshot());
    println!(
        "{}: insights {insights} alerts {alerts} scores {scores} digest {:x}",
        r.name,
        h.finalize()
    );
}

fn main() {
    run(Run {
        name: "sim-rules",
        rules: sim_rules(),
        devices: 12,
        rounds: 8_640,
        restore_at: 4_000,
        delay: false,
    });
    run(Run {
        name: "defaults",
        rules: Rules::defaults(),
        devices: 30,
        rounds: 3_000,
        restore_at: 1_500,
        delay: false,
    });
    let lateness = format!("{DEFAULT_RULES}\n[settings]\nallowed_lateness = \"30s\"\n");
    run(Run {
        name: "lateness",
        rules: Rules::from_toml(&lateness).expect("valid rules"),
        devices: 12,
        rounds: 3_000,
        restore_at: 1_000,
        delay: true,
    });
}
