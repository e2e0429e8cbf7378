//! [`ResultsStore`] conformance for forecasts and late readings: stored once per key whatever
//! the redeliveries, listed newest first within `[from, to)`, per device or across devices,
//! values round-tripping exactly. Run by [`super::results::run`].

use super::results::T;
use super::unique_device;
use iotstream_core::ports::ResultsStore;
use iotstream_core::{DeviceId, Forecast, LateReading, Ts};

/// A forecast of `rule` made at `at`, with values that only round-trip if stored exactly.
pub fn forecast(device: &DeviceId, rule: &str, at: i64) -> Forecast {
    Forecast {
        device_id: device.clone(),
        metric: "temperature".into(),
        rule: rule.into(),
        threshold: 80.0,
        value: 0.1 + 0.2 + 70.0,
        slope_per_minute: 1e-7 + 0.5,
        eta: Ts(at + 1_200_000),
        eta_seconds: 1_200,
        at: Ts(at),
        r_squared: 0.987_654_321_012_345_6,
        message: format!("temperature on {device} will cross 80 in about 20 minutes; rule {rule}"),
    }
}

/// A reading `id` of `ts` that arrived late for `metrics`, when the device's clock was `watermark`.
pub fn late(device: &DeviceId, id: &str, ts: i64, watermark: i64, metrics: &[&str]) -> LateReading {
    LateReading {
        device_id: device.clone(),
        reading_id: id.into(),
        ts: Ts(ts),
        metrics: metrics.iter().map(|m| (*m).to_owned()).collect(),
        watermark: Ts(watermark),
    }
}

const ALL: (Ts, Ts) = (Ts(i64::MIN), Ts(i64::MAX));

pub async fn forecasts_are_stored_once_and_listed_newest_first(results: &dyn ResultsStore) {
    let d = unique_device("conf-forecast");
    let other = unique_device("conf-forecast-other");
    let first = forecast(&d, "overheat", T);
    let same_time = forecast(&d, "overcool", T);
    let later = forecast(&d, "overheat", T + 60_000);
    let elsewhere = forecast(&other, "overheat", T + 30_000);
    results
        .insert_forecasts(&[first.clone(), same_time.clone(), first.clone()])
        .await
        .expect("insert with a repeat in the batch");
    results
        .insert_forecasts(&[later.clone(), elsewhere.clone()])
        .await
        .expect("insert");
    let mut redelivered = first.clone();
    redelivered.message = "a later copy of the same forecast".into();
    results
        .insert_forecasts(&[redelivered, later.clone()])
        .await
        .expect("redelivery");
    results.insert_forecasts(&[]).await.expect("insert nothing");

    let of_d = |from: Ts, to: Ts, limit: usize| results.forecasts(Some(&d), from, to, limit);
    assert_eq!(
        of_d(ALL.0, ALL.1, 100).await.expect("forecasts"),
        [later.clone(), first.clone(), same_time.clone()],
        "one row per (device, at, rule), the first stored kept; newest first, then rule descending"
    );
    assert_eq!(
        of_d(Ts(T), Ts(T + 60_000), 100).await.expect("forecasts"),
        [first.clone(), same_time.clone()],
        "`from` is included, `to` is not"
    );
    assert_eq!(
        of_d(ALL.0, ALL.1, 2).await.expect("forecasts"),
        [later.clone(), first.clone()],
        "at most `limit`, the newest"
    );
    assert!(
        of_d(Ts(T + 60_001), ALL.1, 100)
            .await
            .expect("forecasts")
            .is_empty()
    );
    let everyone: Vec<Forecast> = results
        .forecasts(None, Ts(T), Ts(T + 60_001), 100_000)
        .await
        .expect("all forecasts")
        .into_iter()
        .filter(|f| f.device_id == d || f.device_id == other)
        .collect();
    assert_eq!(
        everyone,
        [later, elsewhere, first, same_time],
        "across devices: newest first"
    );
}

pub async fn late_readings_are_stored_once_and_listed_newest_first(results: &dyn ResultsStore) {
    let d = unique_device("conf-late");
    let other = unique_device("conf-late-other");
    let r1 = late(&d, "r1", T + 1_000, T + 9_000, &["temperature"]);
    let r2 = late(&d, "r2", T + 1_000, T + 9_000, &["temperature", "vibration"]);
    let r3 = late(&d, "r3", T + 2_000, T + 9_500, &["vibration"]);
    let elsewhere = late(&other, "r1", T + 1_500, T + 3_000, &["t"]);
    results
        .insert_late_readings(&[r1.clone(), r2.clone(), r1.clone()])
        .await
        .expect("insert with a repeat in the batch");
    results
        .insert_late_readings(&[r3.clone(), elsewhere.clone()])
        .await
        .expect("insert");
    let again = late(&d, "r1", T + 1_000, T + 12_000, &["temperature", "humidity"]);
    results
        .insert_late_readings(&[again, r3.clone()])
        .await
        .expect("redelivery");
    results.insert_late_readings(&[]).await.expect("insert nothing");

    let of_d = |from: Ts, to: Ts, limit: usize| results.late_readings(Some(&d), from, to, limit);
    assert_eq!(
        of_d(ALL.0, ALL.1, 100).await.expect("late readings"),
        [r3.clone(), r2.clone(), r1.clone()],
        "one row per (device, reading id), the first stored kept; newest ts first, then id descending"
    );
    assert_eq!(
        of_d(Ts(T + 1_000), Ts(T + 2_000), 100)
            .await
            .expect("late readings"),
        [r2.clone(), r1.clone()],
        "`from` is included, `to` is not"
    );
    assert_eq!(
        of_d(ALL.0, ALL.1, 1).await.expect("late readings"),
        std::slice::from_ref(&r3),
        "at most `limit`, the newest"
    );
    let everyone: Vec<LateReading> = results
        .late_readings(None, Ts(T), Ts(T + 2_001), 100_000)
        .await
        .expect("all late readings")
        .into_iter()
        .filter(|l| l.device_id == d || l.device_id == other)
        .collect();
    assert_eq!(
        everyone,
        [r3, elsewhere, r2, r1],
        "across devices: newest first, the same reading id on two devices kept apart"
    );
}
