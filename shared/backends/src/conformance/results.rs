//! [`ResultsStore`] conformance: aggregates and series, latest state, and (in
//! [`super::alerts`]) alert transitions and `ack_alert` with its outbox event, (in
//! [`super::insights`]) forecasts and late readings.

use super::alerts::{
    ack_queues_the_notification_atomically, alert_transitions_are_idempotent,
    alerts_list_newest_first_with_filters, updates_keep_the_most_extreme_peak_of_open_alerts,
};
use super::insights::{
    forecasts_are_stored_once_and_listed_newest_first, late_readings_are_stored_once_and_listed_newest_first,
};
use super::{latest, unique_device};
use iotstream_core::ports::{Outbox, ResultsStore, SeriesPoint};
use iotstream_core::{Aggregate, DeviceId, PortErrorKind, Ts};
use std::sync::Arc;

/// A base time aligned to 2 minutes (2025-11-25T10:00:00Z).
pub const T: i64 = 1_764_064_800_000;

/// Runs every results check on fresh devices and alert ids. `outbox` must be the outbox of the
/// same engine (same database) as `results`.
pub async fn run(results: Arc<dyn ResultsStore>, outbox: Arc<dyn Outbox>) {
    series_rebuckets_upserted_aggregates(&*results).await;
    window_kinds_are_kept_apart_and_series_read_the_finest_tumbling_one(&*results).await;
    latest_state_merges(&*results).await;
    alert_transitions_are_idempotent(&*results).await;
    alerts_list_newest_first_with_filters(&*results).await;
    ack_queues_the_notification_atomically(&*results, &*outbox).await;
    updates_keep_the_most_extreme_peak_of_open_alerts(&*results).await;
    forecasts_are_stored_once_and_listed_newest_first(&*results).await;
    late_readings_are_stored_once_and_listed_newest_first(&*results).await;
}

pub fn agg(device: &DeviceId, metric: &str, ws: i64, count: u64, min: f64, max: f64, sum: f64) -> Aggregate {
    Aggregate {
        device_id: device.clone(),
        metric: metric.into(),
        window_start: Ts(ws),
        window_ms: 60_000,
        hop_ms: 60_000,
        count,
        min,
        max,
        sum,
        stddev: 0.0,
        p50: Some(min),
        p95: None,
        p99: None,
        partial: false,
    }
}

fn point(ts: i64, count: u64, min: f64, max: f64, mean: f64) -> SeriesPoint {
    SeriesPoint {
        ts: Ts(ts),
        count,
        min,
        max,
        mean,
    }
}

pub async fn series_rebuckets_upserted_aggregates(results: &dyn ResultsStore) {
    let d = unique_device("conf-series");
    let other = unique_device("conf-series-other");
    let m = "temperature";
    results
        .upsert_aggregates(&[
            agg(&d, m, T, 1, 0.0, 100.0, 500.0),
            agg(&other, m, T, 7, 7.0, 7.0, 49.0),
        ])
        .await
        .expect("upsert");
    results
        .upsert_aggregates(&[
            agg(&d, m, T, 2, 1.0, 3.0, 4.0), // more readings: replaces the first emission
            agg(&d, m, T + 60_000, 1, 0.5, 0.5, 0.5),
            agg(&d, m, T + 120_000, 3, 2.0, 8.0, 15.0),
            agg(&d, m, T + 180_000, 1, 10.0, 10.0, 10.0),
            agg(&d, m, T + 240_000, 4, -1.0, 1.0, 0.0),
            agg(&d, "humidity", T, 100, 50.0, 60.0, 5_500.0),
        ])
        .await
        .expect("upsert");
    results.upsert_aggregates(&[]).await.expect("upsert nothing");
    let series = |from: i64, to: i64, step: i64| results.series(&d, m, Ts(from), Ts(to), step);
    assert_eq!(
        series(T, T + 240_000, 120_000).await.expect("series"),
        [point(T, 3, 0.5, 3.0, 1.5), point(T + 120_000, 4, 2.0, 10.0, 6.25)],
        "2-minute buckets of [T, T+4m): counts add, min/max combine, mean = sum of sums / count"
    );
    assert_eq!(
        series(T + 60_000, T + 300_000, 120_000).await.expect("series"),
        [
            point(T, 1, 0.5, 0.5, 0.5),
            point(T + 120_000, 4, 2.0, 10.0, 6.25),
            point(T + 240_000, 4, -1.0, 1.0, 0.0)
        ],
        "windows before `from` are left out; buckets are floor(window_start / step) * step"
    );
    assert_eq!(
        series(T, T + 120_000, 60_000).await.expect("series"),
        [point(T, 2, 1.0, 3.0, 2.0), point(T + 60_000, 1, 0.5, 0.5, 0.5)],
        "step = window: the stored (replaced) windows as they are"
    );
    assert_eq!(
        results
            .series(&d, m, Ts(T), Ts(T + 600_000), 3_600_000)
            .await
            .expect("series"),
        [point(
            T.div_euclid(3_600_000) * 3_600_000,
            11,
            -1.0,
            10.0,
            29.5 / 11.0
        )]
    );
    assert!(
        series(T + 300_000, T + 900_000, 60_000)
            .await
            .expect("series")
            .is_empty()
    );
    let err = series(T, T + 60_000, 0).await.expect_err("step 0");
    assert_eq!(err.kind, PortErrorKind::Invalid);
    // A window never goes back to fewer readings: a stale emission (an instance handing its
    // partition over, a replay from an older checkpoint) is ignored.
    results
        .upsert_aggregates(&[agg(&d, m, T, 1, 9.0, 9.0, 9.0)])
        .await
        .expect("upsert");
    assert_eq!(
        series(T, T + 60_000, 60_000).await.expect("series"),
        [point(T, 2, 1.0, 3.0, 2.0)],
        "the stored window with more readings stays"
    );
    // The same within one batch: a new owner's final window, then a partial one the previous
    // owner published late. The fuller one is stored, in whichever order they come.
    for batch in [
        [
            agg(&d, m, T + 360_000, 60, 1.0, 9.0, 300.0),
            agg(&d, m, T + 360_000, 54, 1.0, 9.0, 270.0),
        ],
        [
            agg(&d, m, T + 420_000, 54, 1.0, 9.0, 270.0),
            agg(&d, m, T + 420_000, 60, 1.0, 9.0, 300.0),
        ],
    ] {
        results.upsert_aggregates(&batch).await.expect("upsert");
        let ws = batch[0].window_start.millis();
        assert_eq!(
            series(ws, ws + 60_000, 60_000).await.expect("series"),
            [point(ws, 60, 1.0, 9.0, 5.0)],
            "the emission with the most readings wins within a batch"
        );
    }
}

/// Tumbling and hopping windows with the same start are different rows; a series counts each
/// reading once (from the finest tumbling window), whatever else is stored.
pub async fn window_kinds_are_kept_apart_and_series_read_the_finest_tumbling_one(results: &dyn ResultsStore) {
    let d = unique_device("kinds");
    let one = |ws: i64, count: u64, max: f64| agg(&d, "t", ws, count, 1.0, max, count as f64);
    let mut five = agg(&d, "t", T, 10, 0.5, 50.0, 100.0);
    (five.window_ms, five.hop_ms, five.stddev, five.p95) = (300_000, 60_000, 2.5, Some(49.0));
    let mut ten = agg(&d, "t", T, 20, 0.5, 60.0, 200.0);
    (ten.window_ms, ten.hop_ms) = (600_000, 600_000);
    results
        .upsert_aggregates(&[one(T, 2, 5.0), five.clone(), ten, one(T + 60_000, 3, 7.0)])
        .await
        .unwrap();
    let got = results
        .series(&d, "t", Ts(T), Ts(T + 600_000), 600_000)
        .await
        .unwrap();
    assert_eq!(
        got,
        vec![point(T, 5, 1.0, 7.0, 1.0)],
        "the 1-minute windows only: neither the hopping nor the coarser tumbling window is counted"
    );
    // Upserting a later emission of the hopping window replaces it, not the tumbling one.
    five.count = 11;
    results.upsert_aggregates(&[five]).await.unwrap();
    let again = results
        .series(&d, "t", Ts(T), Ts(T + 60_000), 60_000)
        .await
        .unwrap();
    assert_eq!(again, vec![point(T, 2, 1.0, 5.0, 1.0)]);
}

pub async fn latest_state_merges(results: &dyn ResultsStore) {
    let d = unique_device("conf-latest");
    let other = unique_device("conf-latest-other");
    assert_eq!(results.latest(&d).await.expect("latest"), None);
    let exact = [
        ("h", 0.1 + 0.2),
        ("tiny", 1e-7),
        ("big", f64::MAX),
        ("neg", -273.15),
        ("b", 2.0),
    ];
    results
        .upsert_latest(&[latest(&d, T, &exact)])
        .await
        .expect("upsert");
    assert_eq!(
        results.latest(&d).await.expect("latest"),
        Some(latest(&d, T, &exact)),
        "values round-trip exactly"
    );
    results
        .upsert_latest(&[latest(&d, T + 100, &[("b", 3.0), ("c", 4.0)])])
        .await
        .expect("upsert newer");
    let merged = [
        ("h", 0.1 + 0.2),
        ("tiny", 1e-7),
        ("big", f64::MAX),
        ("neg", -273.15),
        ("b", 3.0),
        ("c", 4.0),
    ];
    assert_eq!(
        results.latest(&d).await.expect("latest"),
        Some(latest(&d, T + 100, &merged)),
        "newer metrics win, metrics only in the older state stay"
    );
    results
        .upsert_latest(&[latest(&d, T + 50, &[("c", 9.0), ("d", 5.0)])])
        .await
        .expect("upsert older");
    let with_d = [
        ("h", 0.1 + 0.2),
        ("tiny", 1e-7),
        ("big", f64::MAX),
        ("neg", -273.15),
        ("b", 3.0),
        ("c", 4.0),
        ("d", 5.0),
    ];
    assert_eq!(
        results.latest(&d).await.expect("latest"),
        Some(latest(&d, T + 100, &with_d)),
        "an older state keeps last_seen and only adds metrics the stored state lacks"
    );
    results
        .upsert_latest(&[
            latest(&other, 10, &[("x", 1.0)]),
            latest(&other, 20, &[("y", 2.0)]),
            latest(&other, 5, &[("x", 7.0)]),
        ])
        .await
        .expect("upsert batch");
    let want_other = latest(&other, 20, &[("x", 1.0), ("y", 2.0)]);
    assert_eq!(
        results.latest(&other).await.expect("latest"),
        Some(want_other.clone()),
        "repeats in one batch merge"
    );
    let all = results.all_latest().await.expect("all_latest");
    assert!(all.contains(&want_other) && all.contains(&latest(&d, T + 100, &with_d)));
}
