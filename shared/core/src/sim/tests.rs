//! The simulator is deterministic, and the engine's built-in detectors find its labelled
//! anomalies: precision and recall of at least 0.9 per kind at default settings.

use super::*;

fn config(devices: u32, seed: u64) -> SimConfig {
    SimConfig {
        devices,
        interval_ms: 10_000,
        start: Ts(1_795_600_800_000),
        anomaly_rate: 0.002,
        seed,
        prefix: "sim-".into(),
    }
}

#[test]
fn the_same_seed_gives_the_same_readings_and_labels() {
    let (mut a, mut b) = (Simulator::new(config(3, 9)), Simulator::new(config(3, 9)));
    for _ in 0..2_000 {
        assert_eq!(a.round(), b.round());
    }
    assert_eq!(a.labels(), b.labels());
    assert!(!a.labels().is_empty());
    let mut c = Simulator::new(config(3, 10));
    assert_ne!(c.round(), Simulator::new(config(3, 9)).round());
}

#[test]
fn every_detector_kind_finds_its_anomalies_with_precision_and_recall_of_at_least_0_9() {
    let (reports, labels, readings) = run_offline(config(12, 42), sim_rules(), 2 * 86_400_000);
    assert!(readings > 200_000);
    for r in &reports {
        eprintln!(
            "{:12} labels {:4} detected {:4} detections {:4} explained {:4} precision {:.3} recall {:.3} median delay {:?} ms",
            r.kind, r.labels, r.detected, r.detections, r.explained, r.precision, r.recall, r.median_delay_ms
        );
    }
    for r in &reports {
        assert!(
            r.labels >= 15,
            "{}: too few labels ({}) to judge",
            r.kind,
            r.labels
        );
        assert!(
            r.precision >= 0.9,
            "{} precision {:.3}: {r:?}",
            r.kind,
            r.precision
        );
        assert!(r.recall >= 0.9, "{} recall {:.3}: {r:?}", r.kind, r.recall);
    }
    assert_eq!(labels.len(), reports.iter().map(|r| r.labels).sum::<usize>());
}
