//! The workload of the real-engine fault and scale tests: devices sending alternating hot and
//! cool readings, what the engine should find in them, and the checks that nothing was lost,
//! analysed twice or alerted twice.
#![allow(dead_code)]

use super::Receiver;
use super::real::*;
use iotstream_core::engine::Engine;
use iotstream_core::rules::Rules;
use iotstream_core::{DeviceId, Reading};
use iotstream_notify::{CONCURRENCY, SLICE};
use serde_json::{Value, json};
use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Flap suppression off (it would hold the alternating alerts open), built-in detectors on.
pub const RULES: &str = "[settings]\nflap_max=1000000\n[[rules]]\nname='overheat'\nmetric='temperature'\nabove=80.0\nclear=75.0\nfor='0s'\nseverity='critical'\n";

/// Reading `i` of a device: runs of 7 hot and 5 cool readings, one second apart in event time,
/// so alerts open and resolve many times.
pub fn reading(device: &str, start: i64, i: usize) -> Value {
    let value = if i % 12 < 7 {
        85.0 + (i % 5) as f64
    } else {
        60.0 + (i % 3) as f64
    };
    json!({"deviceId": device, "id": format!("{device}-{i}"), "ts": start + i as i64 * 1000, "metrics": {"temperature": value}})
}

/// Sends readings 0..total of `device` in requests of 3, in order; a request that is not
/// acknowledged (503, connection failure, timeout) is re-sent until it is. Counts attempts
/// that failed in `failures`.
pub async fn send_all(
    url: String,
    device: String,
    token: String,
    start: i64,
    total: usize,
    failures: Arc<AtomicUsize>,
) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(40))
        .build()
        .unwrap();
    let mut i = 0;
    while i < total {
        let batch: Vec<Value> = (i..(i + 3).min(total))
            .map(|k| reading(&device, start, k))
            .collect();
        loop {
            match post(&client, &url, &token, &json!(batch)).await {
                202 => break,
                _ => {
                    failures.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        i += batch.len();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// What the engine finds in a device's readings, offline: alert ids and webhook event ids.
pub fn expected(device: &str, start: i64, total: usize) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut engine = Engine::new(Rules::from_toml(RULES).unwrap());
    let id = DeviceId::parse(device).unwrap();
    let readings: Vec<Reading> = (0..total)
        .map(|i| {
            let v = reading(device, start, i);
            let metrics = iotstream_core::Metrics::from_iter([(
                "temperature".to_owned(),
                v["metrics"]["temperature"].as_f64().unwrap(),
            )]);
            let ts = iotstream_core::Ts(v["ts"].as_i64().unwrap());
            Reading {
                id: iotstream_core::reading::reading_key(&id, v["id"].as_str(), ts, &metrics),
                device_id: id.clone(),
                ts,
                metrics,
                message_id: v["id"].as_str().map(str::to_owned),
            }
        })
        .collect();
    let mut alerts = BTreeSet::new();
    let mut events = BTreeSet::new();
    for e in engine.process(&readings, iotstream_core::Ts(0)).alerts {
        if e.event != iotstream_core::AlertEventKind::Updated {
            alerts.insert(e.alert.id.clone());
            events.insert(e.id);
        }
    }
    (alerts, events)
}

/// Every reading analysed exactly once (aggregates count each once), exactly the alerts the
/// input implies (none twice), and every webhook event delivered (a redelivery repeats its id).
/// `crashes`: when the test killed the process running notify, and when its successor was up.
/// A webhook event is delivered at least once: a crash re-sends what was in flight (at most one
/// slice of fresh events and the delivery loop's last two chunks, `iotstream_notify`'s module
/// doc), with the same delivery id. So an event delivered twice was first received before a
/// successor was up and again after that crash's kill, and there are at most that many per
/// crash; without crashes, only a group handover can re-send (a few).
pub async fn verify(
    env: &RealEnv,
    devices: &[String],
    start: i64,
    total: usize,
    receiver: &Receiver,
    crashes: &[(Instant, Instant)],
) {
    let mut want_alerts = BTreeSet::new();
    let mut want_events = BTreeSet::new();
    for d in devices {
        let windows = || {
            env.sql(&format!(
                "SELECT window_start || ' ' || count FROM window_aggregates WHERE device_id = '{d}' AND metric = 'temperature' AND window_ms = 60000 ORDER BY window_start"
            ))
        };
        eventually_or(
            90,
            || {
                let n = env.counted(d);
                assert!(
                    n <= total as i64,
                    "{d}: {n} readings counted for {total} sent: analysed twice: {:?}",
                    windows()
                );
                if std::env::var_os("IOTSTREAM_TEST_DEBUG").is_some() {
                    eprintln!("{d}: {n} of {total} analysed");
                }
                (n == total as i64).then_some(())
            },
            // The windows say which part is missing: a whole window, or its last readings.
            || {
                let late = env.sql(&format!(
                    "SELECT ts || ' at ' || watermark FROM late_readings WHERE device_id = '{d}' ORDER BY ts"
                ));
                format!(
                    "{d}: all {total} readings (sent from {start}) analysed once; its windows: {:?}; late readings (ts at watermark): {late:?}",
                    windows()
                )
            },
        )
        .await;
        let (a, e) = expected(d, start, total);
        want_alerts.extend(a);
        want_events.extend(e);
    }
    let list = devices
        .iter()
        .map(|d| format!("'{d}'"))
        .collect::<Vec<_>>()
        .join(",");
    let got = eventually(60, "every alert stored", || {
        let ids = env.sql(&format!("SELECT id FROM alerts WHERE device_id IN ({list})"));
        (ids.len() >= want_alerts.len()).then_some(ids)
    })
    .await;
    let got_set: BTreeSet<String> = got.iter().cloned().collect();
    assert_eq!(got.len(), got_set.len());
    assert_eq!(got_set, want_alerts, "exactly the alerts the input implies");
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let delivered: BTreeSet<String> = receiver.hooks().iter().map(|h| h.delivery.clone()).collect();
        let missing: Vec<&String> = want_events.difference(&delivered).collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} of {} webhook events never arrived, e.g. {:?}",
            missing.len(),
            want_events.len(),
            &missing[..missing.len().min(3)]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut per_delivery: HashMap<String, Vec<Instant>> = HashMap::new();
    for h in receiver.hooks() {
        assert!(h.signature_ok);
        assert!(
            want_events.contains(&h.delivery),
            "unexpected event {}",
            h.delivery
        );
        per_delivery.entry(h.delivery).or_default().push(h.at);
    }
    let redelivered: Vec<(&String, &Vec<Instant>)> =
        per_delivery.iter().filter(|(_, at)| at.len() > 1).collect();
    let allowed = if crashes.is_empty() {
        2 * CONCURRENCY
    } else {
        crashes.len() * (SLICE + 2 * CONCURRENCY)
    };
    if std::env::var_os("IOTSTREAM_TEST_DEBUG").is_some() {
        eprintln!(
            "{} of {} events delivered more than once ({} crashes, at most {allowed} allowed)",
            redelivered.len(),
            per_delivery.len(),
            crashes.len()
        );
    }
    assert!(
        redelivered.len() <= allowed,
        "{} events delivered more than once, at most {allowed} expected",
        redelivered.len()
    );
    if let Some(&(first_crash, _)) = crashes.first() {
        for (id, at) in &redelivered {
            let (first, last) = (at.iter().min().unwrap(), at.iter().max().unwrap());
            // The kill is not instant, and the old process's last requests may be received
            // a moment after it: its successor being up bounds them.
            assert!(
                crashes.iter().any(|(killed, up)| first <= up && last >= killed),
                "{id} was delivered {} times without a crash in between (received {:?} to {:?} after the first crash)",
                at.len(),
                first.saturating_duration_since(first_crash),
                last.saturating_duration_since(first_crash),
            );
        }
    }
}

pub fn rules_file(dir: &Path) -> String {
    let p = dir.join("rules.toml");
    std::fs::write(&p, RULES).unwrap();
    p.to_str().unwrap().to_owned()
}

pub fn start_ms() -> i64 {
    (iotstream_core::Ts::from_datetime(time::OffsetDateTime::now_utc()).millis() / 60_000 - 3) * 60_000
}
