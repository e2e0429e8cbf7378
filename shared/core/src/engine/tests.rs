//! The engine on hand-made inputs: thresholds, windows, event time, dedup, checkpoints.

use super::*;
use crate::model::{Aggregate, AlertEventKind, AlertState};
use crate::reading::reading_key;
use crate::rules::Rules;
use crate::{DeviceId, Metrics, Ts};
use proptest::prelude::*;

mod detectors;
mod state;

const RULES: &str = r#"
[settings]
builtin_detectors = false

[[rules]]
name = "overheat"
metric = "temperature"
above = 80.0
clear = 75.0
for = "30s"
severity = "critical"
devices = "pump-*"
"#;

pub(super) const NOW: Ts = Ts(1_795_600_800_000);

pub(super) fn at(device: &str, ts_ms: i64, metrics: &[(&str, f64)]) -> Reading {
    let device_id = DeviceId::parse(device).unwrap();
    let metrics: Metrics = metrics.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    let ts = Ts(ts_ms);
    Reading {
        id: reading_key(&device_id, None, ts, &metrics),
        device_id,
        ts,
        metrics,
        message_id: None,
    }
}

fn reading(device: &str, ts_s: i64, temperature: f64) -> Reading {
    at(device, ts_s * 1000, &[("temperature", temperature)])
}

fn engine_with(toml: &str) -> Engine {
    Engine::new(Rules::from_toml(toml).unwrap())
}

fn engine() -> Engine {
    engine_with(RULES)
}

fn run(e: &mut Engine, readings: &[Reading]) -> Output {
    e.process(readings, NOW)
}

fn kinds(out: &Output) -> Vec<(AlertEventKind, i64)> {
    out.alerts
        .iter()
        .map(|e| (e.event, e.alert.opened_at.millis() / 1000))
        .collect()
}

pub(super) fn aggregates(out: &Output) -> Vec<Aggregate> {
    out.insights
        .iter()
        .filter_map(|i| match i {
            Insight::Aggregate(a) => Some(a.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn opens_only_after_the_breach_holds_for_the_duration() {
    let mut e = engine();
    let out = run(&mut e, &[reading("pump-1", 0, 85.0), reading("pump-1", 20, 86.0)]);
    assert!(out.alerts.is_empty(), "20 s < 30 s");
    let out = run(&mut e, &[reading("pump-1", 30, 91.2)]);
    assert_eq!(kinds(&out), vec![(AlertEventKind::Opened, 30)]);
    let a = &out.alerts[0].alert;
    assert_eq!((a.value, a.threshold, a.state), (91.2, 80.0, AlertState::Active));
    assert_eq!(a.kind, "threshold");
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
    let ev = a.evidence.as_ref().unwrap();
    assert_eq!((ev.value, ev.statistic), (91.2, 30.0));
}

#[test]
fn a_dip_below_the_threshold_restarts_the_duration() {
    let mut e = engine();
    let out = run(
        &mut e,
        &[
            reading("pump-1", 0, 85.0),
            reading("pump-1", 25, 79.0),
            reading("pump-1", 40, 85.0),
            reading("pump-1", 60, 85.0),
        ],
    );
    assert!(out.alerts.is_empty());
    let out = run(&mut e, &[reading("pump-1", 70, 85.0)]);
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
        events.extend(run(&mut e, &[reading("pump-1", t, v)]).alerts);
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
    assert_eq!(events[2].alert.resolved_at, Some(Ts(80_000)));
    assert_eq!(events[0].alert.id, events[2].alert.id);
    assert_ne!(
        events[0].id, events[2].id,
        "each transition has its own delivery id"
    );
}

#[test]
fn count_requires_n_breaching_readings_in_a_row() {
    let mut e = engine_with(
        "[settings]\nbuiltin_detectors=false\n[[rules]]\nname='p'\nmetric='temperature'\nabove=10.0\ncount=3\n",
    );
    let vals = [11.0, 12.0, 5.0, 11.0, 11.0, 11.0];
    let input: Vec<Reading> = vals
        .iter()
        .enumerate()
        .map(|(i, v)| reading("d", i as i64, *v))
        .collect();
    let out = run(&mut e, &input);
    assert_eq!(kinds(&out), vec![(AlertEventKind::Opened, 5)]);
    assert!(
        out.alerts[0].alert.message.contains("3 readings in a row"),
        "{}",
        out.alerts[0].alert.message
    );
}

#[test]
fn device_globs_limit_rules() {
    let mut e = engine();
    let out = run(&mut e, &[reading("fan-1", 0, 99.0), reading("fan-1", 60, 99.0)]);
    assert!(out.alerts.is_empty());
}

#[test]
fn a_flapping_alert_stays_open_until_clear_for_the_flap_window() {
    let mut e = engine_with(
        "[settings]\nbuiltin_detectors=false\nflap_max=3\nflap_window='10m'\n\
         [[rules]]\nname='hot'\nmetric='temperature'\nabove=80.0\n",
    );
    // Toggles every 10 s for 2 minutes, then stays normal.
    let mut input: Vec<Reading> = (0..12)
        .map(|i| reading("d", i * 10, if i % 2 == 0 { 90.0 } else { 70.0 }))
        .collect();
    input.extend((12..80).map(|i| reading("d", i * 10, 70.0)));
    let out = run(&mut e, &input);
    let got = kinds(&out);
    let opened = got.iter().filter(|k| k.0 == AlertEventKind::Opened).count();
    assert_eq!(opened, 3, "opens are limited once flapping: {got:?}");
    let resolved: Vec<_> = out
        .alerts
        .iter()
        .filter(|a| a.event == AlertEventKind::Resolved)
        .collect();
    assert_eq!(resolved.len(), 3);
    // The third episode opened at 40 s (flapping) and resolves 10 min after the last breach
    // cleared (at 110 s), not at the first clear reading.
    assert_eq!(resolved[2].alert.resolved_at, Some(Ts(710_000)));
    let third = out
        .alerts
        .iter()
        .filter(|a| a.event == AlertEventKind::Opened)
        .nth(2)
        .unwrap();
    assert!(
        third.alert.message.contains("flapping"),
        "{}",
        third.alert.message
    );
}

#[test]
fn windows_close_final_when_the_clock_passes_their_end() {
    let mut e = engine_with(
        "[settings]\nbuiltin_detectors=false\n[[windows]]\nsize='1m'\n[[windows]]\nsize='2m'\nhop='1m'\n",
    );
    let out = run(
        &mut e,
        &[
            reading("d", 0, 10.0),
            reading("d", 30, 20.0),
            reading("d", 59, 60.0),
            reading("d", 60, 5.0),
        ],
    );
    let got: Vec<_> = aggregates(&out)
        .iter()
        .map(|a| {
            (
                a.window_start.millis() / 1000,
                a.window_ms / 1000,
                a.count,
                a.min,
                a.max,
                a.mean(),
                a.partial,
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (0, 60, 3, 10.0, 60.0, 30.0, false),
            (-60, 120, 3, 10.0, 60.0, 30.0, false)
        ],
        "the reading at 60 s closes [0,60) and the 2-minute window [-60,60)"
    );
    let a = &aggregates(&out)[0];
    assert!((a.stddev - (((20.0f64).powi(2) + 10f64.powi(2) + 30f64.powi(2)) / 3.0).sqrt()).abs() < 1e-9);
    assert!(
        (a.p50.unwrap() - 20.0).abs() <= 0.4 && (a.p99.unwrap() - 60.0).abs() <= 1.2,
        "{a:?}"
    );
    assert_eq!(a.hop_ms, 60_000);

    let out = run(&mut e, &[reading("d", 130, 7.0)]);
    let got: Vec<_> = aggregates(&out)
        .iter()
        .map(|a| (a.window_start.millis() / 1000, a.window_ms / 1000, a.count, a.sum))
        .collect();
    assert_eq!(got, vec![(60, 60, 1, 5.0), (0, 120, 4, 95.0)]);
}

#[test]
fn ticks_emit_partial_windows_and_latest_state_of_changed_devices_only() {
    let mut e = engine();
    run(&mut e, &[reading("pump-1", 0, 70.0), reading("pump-1", 10, 72.0)]);
    let out = e.tick(NOW);
    let aggs = aggregates(&out);
    assert_eq!(
        aggs.len(),
        1,
        "the 1m window in progress (the 5m one closes every minute): {aggs:?}"
    );
    assert!(aggs.iter().all(|a| a.partial && a.count == 2));
    let latest: Vec<_> = out
        .insights
        .iter()
        .filter_map(|i| match i {
            Insight::Latest(l) => Some(l.metrics["temperature"]),
            _ => None,
        })
        .collect();
    assert_eq!(latest, vec![72.0]);
    assert!(e.tick(NOW).insights.is_empty(), "nothing changed since");
    let end = e.finish();
    assert!(aggregates(&end).iter().all(|a| a.partial) && !aggregates(&end).is_empty());
}

#[test]
fn with_no_lateness_an_older_value_is_late_and_reported() {
    let mut e = engine();
    run(&mut e, &[reading("pump-1", 600, 70.0)]);
    let out = run(&mut e, &[reading("pump-1", 100, 99.0)]);
    assert_eq!(out.stats.late, 1);
    let late: Vec<_> = out
        .insights
        .iter()
        .filter_map(|i| match i {
            Insight::Late(l) => Some((l.ts, l.metrics.clone(), l.watermark)),
            _ => None,
        })
        .collect();
    assert_eq!(
        late,
        vec![(Ts(100_000), vec!["temperature".to_owned()], Ts(600_000))]
    );
    assert!(out.alerts.is_empty() && aggregates(&out).is_empty());
}

#[test]
fn the_reorder_buffer_sorts_readings_within_the_allowed_lateness() {
    let toml = format!("{RULES}\n").replace(
        "builtin_detectors = false",
        "builtin_detectors = false\nallowed_lateness = '30s'",
    );
    let mut e = engine_with(&toml);
    // 40 s breach then back, delivered out of order within 30 s.
    let out = run(
        &mut e,
        &[
            reading("pump-1", 0, 90.0),
            reading("pump-1", 20, 90.0),
            reading("pump-1", 10, 90.0),
            reading("pump-1", 40, 90.0),
            reading("pump-1", 35, 90.0),
            reading("pump-1", 100, 60.0),
            reading("pump-1", 50, 10.0), // 50 < 100 - 30: late
        ],
    );
    assert_eq!((out.stats.out_of_order, out.stats.late), (2, 1));
    assert_eq!(
        kinds(&out),
        vec![(AlertEventKind::Opened, 35)],
        "opened by the reading at 35 s, sorted"
    );
    let end = e.finish();
    assert_eq!(
        end.alerts.len(),
        1,
        "the buffered 100 s reading resolves it at the end"
    );
}

/// A consumer group rebalance redelivers a backlog from the last commit, after newer readings:
/// the backlog is late, and it must not push the newest ids out of the dedup memory (their
/// redelivery would be counted twice).
#[test]
fn a_redelivered_backlog_counts_nothing_twice() {
    let mut e = engine();
    let input: Vec<Reading> = (0..40).map(|i| reading("pump-1", i, 60.0)).collect();
    run(&mut e, &input);
    let again = run(&mut e, &input[5..]); // the whole backlog again, newest last
    assert_eq!(again.stats.processed + again.stats.duplicates, 35);
    assert!(
        aggregates(&again).is_empty(),
        "nothing re-counted: {:?}",
        aggregates(&again)
    );
    assert_eq!(
        again.stats.duplicates, DEDUP_WINDOW as u64,
        "the most recent ones are remembered"
    );
    assert_eq!(
        again.stats.late,
        35 - DEDUP_WINDOW as u64,
        "the older ones are late"
    );
    let end = e.finish();
    let counted: u64 = aggregates(&end)
        .iter()
        .filter(|a| a.window_ms == 60_000)
        .map(|a| a.count)
        .sum();
    assert_eq!(counted, 40);
}

#[test]
fn redelivered_readings_are_skipped() {
    let mut e = engine();
    let r = reading("pump-1", 0, 10.0);
    run(&mut e, std::slice::from_ref(&r));
    let out = run(&mut e, &[r.clone(), r]);
    assert_eq!((out.stats.duplicates, out.stats.processed), (2, 0));
    assert!(out.insights.is_empty());
}

/// Readings without `ts` all take the server time; two episodes at one timestamp are still two
/// alerts.
#[test]
fn two_episodes_at_the_same_timestamp_are_two_alerts() {
    let mut e = engine_with(
        "[settings]\nbuiltin_detectors=false\n[[rules]]\nname='hot'\nmetric='temperature'\nabove=80.0\n",
    );
    let mk = |v: f64, msg: &str| {
        let device_id = DeviceId::parse("d").unwrap();
        let metrics = Metrics::from_iter([("temperature".to_owned(), v)]);
        Reading {
            id: reading_key(&device_id, Some(msg), Ts(5), &metrics),
            device_id,
            ts: Ts(5),
            metrics,
            message_id: Some(msg.into()),
        }
    };
    let out = run(&mut e, &[mk(91.0, "a"), mk(70.0, "b"), mk(91.0, "c")]);
    let opened: Vec<&str> = out
        .alerts
        .iter()
        .filter(|a| a.event == AlertEventKind::Opened)
        .map(|a| a.alert.id.as_str())
        .collect();
    assert_eq!(opened.len(), 2);
    assert_ne!(opened[0], opened[1]);
}
