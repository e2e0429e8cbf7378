//! The built-in detectors through the engine: alerts with evidence and advice, and forecasts.

use super::super::detect::tests::Noise;
use super::*;

/// A device reporting `metric` every 10 s from `start`, with `f(i)` as the i-th value.
fn series(device: &str, metric: &str, n: i64, mut f: impl FnMut(i64) -> f64) -> Vec<Reading> {
    (0..n)
        .map(|i| at(device, NOW.millis() + i * 10_000, &[(metric, f(i))]))
        .collect()
}

fn events(out: &Output, rule: &str) -> Vec<(AlertEventKind, i64)> {
    out.alerts
        .iter()
        .filter(|e| e.alert.rule == rule)
        .map(|e| {
            (
                e.event,
                (e.alert.resolved_at.unwrap_or(e.alert.opened_at).millis() - NOW.millis()) / 10_000,
            )
        })
        .collect()
}

#[test]
fn a_spike_opens_an_alert_with_evidence_and_resolves_after_quiet() {
    let mut e = Engine::new(Rules::from_toml("").unwrap());
    let mut n = Noise::new(7);
    let input = series("m1", "pressure", 200, |i| {
        if i == 100 { 140.0 } else { 101.0 + 0.3 * n.normal() }
    });
    let out = run(&mut e, &input);
    assert_eq!(
        events(&out, "spike"),
        vec![(AlertEventKind::Opened, 101), (AlertEventKind::Resolved, 107)],
        "confirmed on the next reading; resolved after 1 min quiet"
    );
    let a = &out.alerts[0].alert;
    assert_eq!(
        (a.kind.as_str(), a.metric.as_str(), a.value),
        ("spike", "pressure", 140.0)
    );
    let ev = a.evidence.as_ref().unwrap();
    assert!(
        (ev.baseline.unwrap() - 101.0).abs() < 0.5 && ev.statistic > 50.0 && ev.score > 0.99,
        "{ev:?}"
    );
    assert!(a.message.contains("spiked up to 140"), "{}", a.message);
    assert!(a.recommendation.contains("cabling"), "{}", a.recommendation);
    assert!(
        events(&out, "level_shift").is_empty(),
        "one spike is not a level shift"
    );
}

#[test]
fn a_level_shift_opens_one_alert_with_old_and_new_level() {
    let mut e = Engine::new(Rules::from_toml("").unwrap());
    let mut n = Noise::new(8);
    let input = series(
        "m1",
        "flow",
        300,
        |i| if i < 150 { 20.0 } else { 23.0 } + n.normal(),
    );
    let out = run(&mut e, &input);
    let got = events(&out, "level_shift");
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0].0, AlertEventKind::Opened);
    assert!((150..165).contains(&got[0].1), "detected at reading {}", got[0].1);
    let ev = out
        .alerts
        .iter()
        .find(|a| a.alert.rule == "level_shift")
        .unwrap()
        .alert
        .evidence
        .clone()
        .unwrap();
    assert!(
        (ev.baseline.unwrap() - 20.0).abs() < 0.8 && (ev.value - 23.0).abs() < 1.5,
        "{ev:?}"
    );
    assert!(events(&out, "spike").is_empty(), "a 3-sigma step is not a spike");
}

#[test]
fn rate_of_change_needs_a_limit_and_fires_while_too_fast() {
    let rules = "[[detectors]]\nkind='rate'\nmetrics='temperature'\nmax_change=3.0\nper='1m'\n";
    let mut e = Engine::new(Rules::from_toml(rules).unwrap());
    // Steady, then +1 per 10 s (6/min) for 12 readings, then steady.
    let input = series("m1", "temperature", 40, |i| 50.0 + (i.clamp(10, 22) - 10) as f64);
    let out = run(&mut e, &input);
    let got = events(&out, "rate");
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(
        (got[0].0, got[1].0),
        (AlertEventKind::Opened, AlertEventKind::Resolved)
    );
    assert!(
        (13..=17).contains(&got[0].1) && (24..=31).contains(&got[1].1),
        "{got:?}"
    );
    let a = &out.alerts[0].alert;
    assert_eq!(a.threshold, 3.0);
    assert!(
        a.message.contains("rising") && a.message.contains("per 1m (limit 3)"),
        "{}",
        a.message
    );
    assert!(
        Rules::from_toml("[[detectors]]\nkind='rate'\n").is_err(),
        "max_change is required"
    );
}

#[test]
fn a_stuck_sensor_is_flagged_after_the_duration_and_clears_when_it_moves() {
    let rules = "[[detectors]]\nkind='flatline'\nfor='5m'\n";
    let mut e = Engine::new(Rules::from_toml(rules).unwrap());
    let mut n = Noise::new(9);
    let input = series("m1", "humidity", 120, |i| {
        if (40..90).contains(&i) {
            45.0
        } else {
            45.0 + n.normal()
        }
    });
    let out = run(&mut e, &input);
    assert_eq!(
        events(&out, "flatline"),
        vec![(AlertEventKind::Opened, 70), (AlertEventKind::Resolved, 90)]
    );
    assert!(
        out.alerts[0]
            .alert
            .message
            .contains("has not changed from 45 for 5m"),
        "{}",
        out.alerts[0].alert.message
    );
}

#[test]
fn silence_is_driven_by_processing_time_and_ends_with_the_next_reading() {
    let rules = "[[detectors]]\nkind='silence'\nfor='2m'\n";
    let mut e = Engine::new(Rules::from_toml(rules).unwrap());
    let r = at("m1", 0, &[("t", 1.0)]);
    e.process(std::slice::from_ref(&r), Ts(1_000_000));
    assert!(e.tick(Ts(1_000_000 + 119_000)).alerts.is_empty());
    let out = e.tick(Ts(1_000_000 + 120_000));
    assert_eq!(out.alerts.len(), 1);
    let a = &out.alerts[0].alert;
    assert_eq!(
        (a.kind.as_str(), a.metric.as_str(), a.state),
        ("silence", "*", AlertState::Active)
    );
    assert!(a.message.contains("m1 has sent nothing for 2m"), "{}", a.message);
    assert!(
        e.tick(Ts(1_000_000 + 300_000)).alerts.is_empty(),
        "one alert per silence"
    );
    let out = e.process(&[at("m1", 1, &[("t", 1.0)])], Ts(1_000_000 + 301_000));
    assert_eq!(out.alerts[0].event, AlertEventKind::Resolved);
    assert_eq!(out.alerts[0].alert.id, a.id);

    // A new owner of the device's partition (after a restart or a rebalance) restarts the
    // silence clock: no false alarm while it catches up, a real silence still reported.
    let mut next = Engine::new(Rules::from_toml(rules).unwrap());
    next.absorb_at(&e.snapshot(), Ts(5_000_000)).unwrap();
    assert!(next.tick(Ts(5_000_000 + 60_000)).alerts.is_empty());
    assert_eq!(next.tick(Ts(5_000_000 + 120_000)).alerts.len(), 1);
}

#[test]
fn a_rising_trend_is_forecast_before_it_crosses_the_threshold() {
    let rules = "[[rules]]\nname='overheat'\nmetric='temperature'\nabove=80.0\n";
    let mut e = Engine::new(Rules::from_toml(rules).unwrap());
    let mut n = Noise::new(10);
    // +0.5 per minute from 60: crosses 80 after 40 minutes (reading 240).
    let input = series("m1", "temperature", 300, |i| {
        60.0 + 0.5 * (i as f64 / 6.0) + 0.1 * n.normal()
    });
    let out = run(&mut e, &input);
    let forecasts: Vec<_> = out
        .insights
        .iter()
        .filter_map(|i| match i {
            Insight::Forecast(f) => Some(f.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(forecasts.len(), 1, "once per approach");
    let f = &forecasts[0];
    let crossing = NOW.millis() + 240 * 10_000;
    assert!(f.at.millis() < crossing, "made before the crossing");
    assert!(
        (f.eta.millis() - crossing).abs() < 120_000,
        "eta {} vs {crossing}",
        f.eta.millis()
    );
    assert!((f.slope_per_minute - 0.5).abs() < 0.05, "{f:?}");
    assert!(
        f.message
            .starts_with("temperature on m1 will cross 80 in about 30 minutes"),
        "{}",
        f.message
    );
    assert!(
        out.alerts.iter().any(|a| a.alert.rule == "overheat"),
        "and then it does cross"
    );
}

#[test]
fn scores_rate_each_value_and_peak_at_anomalies() {
    let mut e = Engine::new(Rules::from_toml("").unwrap()).with_scores();
    let mut n = Noise::new(11);
    let input = series("m1", "pressure", 100, |i| {
        if i == 60 { 130.0 } else { 101.0 + 0.3 * n.normal() }
    });
    let out = run(&mut e, &input);
    assert_eq!(out.scores.len(), 100);
    assert!(out.scores[60].score > 0.99, "{:?}", out.scores[60]);
    let calm = out
        .scores
        .iter()
        .enumerate()
        .filter(|(i, s)| *i != 60 && s.score > 0.5)
        .count();
    assert_eq!(calm, 0, "normal readings score low");
}

#[test]
fn detectors_are_configured_per_metric_and_device_and_can_be_turned_off() {
    let rules = Rules::from_toml(
        "[[detectors]]\nkind='spike'\nmetrics='door'\nenabled=false\n\
         [[detectors]]\nkind='spike'\ndevices='lab-*'\nthreshold=3.0\n",
    )
    .unwrap();
    let plan = |d: &str, m: &str| crate::rules::DetectorPlan::resolve(&rules.detectors, d, m);
    assert_eq!(plan("x", "door").spike(), None);
    let lab = plan("lab-1", "door").spike().unwrap();
    assert_eq!(
        rules.detectors[lab as usize].threshold, 3.0,
        "the later, narrower entry wins"
    );
    assert!(plan("x", "temp").spike().is_some() && plan("x", "temp").flatline().is_some());
    let off = Rules::from_toml("[settings]\nbuiltin_detectors=false\n").unwrap();
    assert!(off.detectors.is_empty());
}
