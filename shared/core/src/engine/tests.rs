use super::*;
use crate::model::{AlertEventKind, AlertState};
use crate::reading::reading_key;
use crate::rules::Rules;
use crate::{DeviceId, Ts};
use proptest::prelude::*;
use std::collections::BTreeMap;

const RULES: &str = r#"
[settings]
window = "1m"
allowed_lateness = "2m"

[[rules]]
name = "overheat"
metric = "temperature"
above = 80.0
clear = 75.0
for = "30s"
severity = "critical"
devices = "pump-*"
"#;

fn reading(device: &str, ts_s: i64, temperature: f64) -> Reading {
    let device_id = DeviceId::parse(device).unwrap();
    let metrics = BTreeMap::from([("temperature".to_owned(), temperature)]);
    let ts = Ts(ts_s * 1000);
    Reading {
        id: reading_key(&device_id, None, ts, &metrics),
        device_id,
        ts,
        metrics,
        message_id: None,
    }
}

fn engine() -> Engine {
    Engine::new(Rules::from_toml(RULES).unwrap())
}

fn kinds(out: &Output) -> Vec<(AlertEventKind, i64)> {
    out.alerts
        .iter()
        .map(|e| (e.event, e.alert.opened_at.millis() / 1000))
        .collect()
}

#[test]
fn opens_only_after_the_breach_holds_for_the_duration() {
    let mut e = engine();
    let out = e.process(&[reading("pump-1", 0, 85.0), reading("pump-1", 20, 86.0)]);
    assert!(out.alerts.is_empty(), "20 s < 30 s");
    let out = e.process(&[reading("pump-1", 30, 91.2)]);
    assert_eq!(kinds(&out), vec![(AlertEventKind::Opened, 30)]);
    let a = &out.alerts[0].alert;
    assert_eq!((a.value, a.threshold, a.state), (91.2, 80.0, AlertState::Active));
    assert!(
        a.message
            .contains("temperature on pump-1 is 91.2 (above 80) for 30s"),
        "{}",
        a.message
    );
    assert!(
        a.recommendation.contains("resolves when temperature is below 75"),
        "{}",
        a.recommendation
    );
}

#[test]
fn a_dip_below_the_threshold_restarts_the_duration() {
    let mut e = engine();
    let out = e.process(&[
        reading("pump-1", 0, 85.0),
        reading("pump-1", 25, 79.0),
        reading("pump-1", 40, 85.0),
        reading("pump-1", 60, 85.0),
    ]);
    assert!(out.alerts.is_empty());
    let out = e.process(&[reading("pump-1", 70, 85.0)]);
    assert_eq!(kinds(&out), vec![(AlertEventKind::Opened, 70)]);
}

#[test]
fn hysteresis_keeps_the_alert_until_the_clear_level_and_fires_once() {
    let mut e = engine();
    let mut events = Vec::new();
    for (t, v) in [
        (0, 90.0),
        (30, 90.0),
        (40, 95.0),
        (50, 78.0),
        (60, 85.0),
        (70, 76.0),
        (80, 74.0),
        (90, 70.0),
    ] {
        events.extend(e.process(&[reading("pump-1", t, v)]).alerts);
    }
    let got: Vec<_> = events.iter().map(|e| (e.event, e.alert.state)).collect();
    assert_eq!(
        got,
        vec![
            (AlertEventKind::Opened, AlertState::Active),
            (AlertEventKind::Updated, AlertState::Active),
            (AlertEventKind::Resolved, AlertState::Resolved)
        ],
        "firing again while open (95 > 90) updates the alert instead of opening another"
    );
    assert_eq!(events[1].alert.peak, Some(95.0));
    assert_eq!(
        events[2].alert.peak,
        Some(95.0),
        "the resolution carries the episode's peak"
    );
    let events: Vec<_> = events
        .into_iter()
        .filter(|e| e.event != AlertEventKind::Updated)
        .collect();
    assert_eq!(events[1].alert.resolved_at, Some(Ts(80_000)));
    assert_eq!(events[0].alert.id, events[1].alert.id);
    assert_ne!(
        events[0].id, events[1].id,
        "each transition has its own delivery id"
    );
}

#[test]
fn device_globs_limit_rules() {
    let mut e = engine();
    let out = e.process(&[reading("fan-1", 0, 99.0), reading("fan-1", 60, 99.0)]);
    assert!(out.alerts.is_empty());
}

#[test]
fn out_of_order_readings_aggregate_but_never_move_alert_state() {
    let mut e = engine();
    e.process(&[reading("pump-1", 100, 70.0)]);
    // Older readings in breach: aggregated, not alerted on.
    let out = e.process(&[
        reading("pump-1", 50, 99.0),
        reading("pump-1", 60, 99.0),
        reading("pump-1", 95, 99.0),
    ]);
    assert!(out.alerts.is_empty());
    assert_eq!(out.stats.out_of_order, 3);
    let aggs: Vec<_> = out
        .insights
        .iter()
        .filter_map(|i| match i {
            Insight::Aggregate(a) => Some((a.window_start.millis() / 1000, a.count, a.max)),
            _ => None,
        })
        .collect();
    assert_eq!(aggs, vec![(0, 1, 99.0), (60, 3, 99.0)]);
    assert!(
        !out.insights.iter().any(|i| matches!(i, Insight::Latest(_))),
        "latest state did not change"
    );
}

#[test]
fn readings_past_the_allowed_lateness_are_counted_late() {
    let mut e = engine();
    e.process(&[reading("pump-1", 600, 70.0)]);
    let out = e.process(&[reading("pump-1", 100, 70.0)]);
    assert_eq!(out.stats.late, 1);
    assert!(out.insights.is_empty());
}

#[test]
fn aggregates_are_per_window_with_count_min_max_mean() {
    let mut e = engine();
    let out = e.process(&[
        reading("pump-1", 0, 10.0),
        reading("pump-1", 30, 20.0),
        reading("pump-1", 59, 60.0),
        reading("pump-1", 60, 5.0),
    ]);
    let aggs: Vec<_> = out
        .insights
        .iter()
        .filter_map(|i| match i {
            Insight::Aggregate(a) => Some((a.window_start.millis(), a.count, a.min, a.max, a.mean())),
            _ => None,
        })
        .collect();
    assert_eq!(aggs, vec![(0, 3, 10.0, 60.0, 30.0), (60_000, 1, 5.0, 5.0, 5.0)]);
    let latest = out.insights.iter().find_map(|i| match i {
        Insight::Latest(l) => Some(l.clone()),
        _ => None,
    });
    assert_eq!(latest.unwrap().metrics["temperature"], 5.0);
}

#[test]
fn redelivered_readings_are_skipped() {
    let mut e = engine();
    let r = reading("pump-1", 0, 10.0);
    e.process(std::slice::from_ref(&r));
    let out = e.process(&[r.clone(), r]);
    assert_eq!((out.stats.duplicates, out.stats.processed), (2, 0));
    assert!(out.insights.is_empty());
}

#[test]
fn a_restored_engine_continues_exactly() {
    let input: Vec<Reading> = (0..40)
        .map(|i| reading("pump-1", i * 10, if i % 9 < 5 { 90.0 } else { 60.0 }))
        .collect();
    let mut first = engine();
    first.process(&input[..20]);
    let mut whole_again = engine();
    whole_again.process(&input[..20]);
    let snap = first.snapshot();
    let mut restored = Engine::restore(Rules::from_toml(RULES).unwrap(), &snap).unwrap();
    assert_eq!(restored.process(&input[20..]), whole_again.process(&input[20..]));
    assert!(Engine::restore(Rules::defaults(), b"not json").is_err());
}

proptest! {
    /// Replay is deterministic: the same input through two fresh engines gives identical output,
    /// however the input is split into batches.
    #[test]
    fn output_is_deterministic_across_batchings(values in prop::collection::vec(60.0f64..100.0, 1..80), cut in 0usize..80) {
        let input: Vec<Reading> = values.iter().enumerate().map(|(i, v)| reading("pump-1", i as i64 * 7, *v)).collect();
        let cut = cut.min(input.len());
        let mut a = engine();
        let all = a.process(&input);
        let mut b = engine();
        let mut split = b.process(&input[..cut]);
        let rest = b.process(&input[cut..]);
        split.alerts.extend(rest.alerts);
        prop_assert_eq!(all.alerts, split.alerts);
        prop_assert_eq!(a.snapshot().len(), b.snapshot().len());
    }
}

/// Readings without `ts` all take the server time; two episodes at one timestamp are still two
/// alerts.
#[test]
fn two_episodes_at_the_same_timestamp_are_two_alerts() {
    let rules = Rules::from_toml("[[rules]]\nname='hot'\nmetric='temperature'\nabove=80.0\n").unwrap();
    let mut e = Engine::new(rules);
    let mk = |v: f64, msg: &str| {
        let device_id = DeviceId::parse("d").unwrap();
        let metrics = BTreeMap::from([("temperature".to_owned(), v)]);
        Reading {
            id: reading_key(&device_id, Some(msg), Ts(5), &metrics),
            device_id,
            ts: Ts(5),
            metrics,
            message_id: Some(msg.into()),
        }
    };
    let out = e.process(&[mk(91.0, "a"), mk(70.0, "b"), mk(91.0, "c")]);
    let opened: Vec<&str> = out
        .alerts
        .iter()
        .filter(|a| a.event == AlertEventKind::Opened)
        .map(|a| a.alert.id.as_str())
        .collect();
    assert_eq!(opened.len(), 2);
    assert_ne!(opened[0], opened[1]);
}
