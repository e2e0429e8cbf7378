//! **process**: stores what analyze found.
//!
//! - Trigger: the `insights` and `alerts` topics, consumer group `iotstream-process`.
//! - Outputs: aggregates, each device's latest state, forecasts, late readings and alerts in
//!   the results database (PostgreSQL / embedded SQLite); in the cache (Redis / in-process)
//!   latest state, recent aggregates, forecasts and late readings, and the open alerts.
//! - Delivery: at-least-once; offsets are committed after the database writes. A cache failure
//!   is logged and counted, never fatal: the database is the source of truth.
//! - Idempotency keys: (device, metric, window size, window start) for aggregates; device id +
//!   newest `lastSeen` for latest state; (device, `at`, rule) for forecasts; (device, reading
//!   id) for late readings; alert id with monotonic state for alerts.

use iotstream_core::model::{AlertEvent, Forecast, Insight, LateReading, LatestState};
use iotstream_core::ports::{Cache, Delivered, Poisoned, ResultsStore};
use iotstream_core::{Aggregate, PortError};
use std::collections::HashMap;

pub struct Deps<'a> {
    pub results: &'a dyn ResultsStore,
    pub cache: &'a dyn Cache,
}

/// A batch from `insights`, coalesced: the fullest emission of each window (the later of equals,
/// [`Aggregate::supersedes`]) and one merged latest
/// state per device; forecasts and late readings as they came (the store keeps one per key).
#[derive(Debug, Default)]
pub struct Insights {
    pub aggregates: Vec<Aggregate>,
    pub latest: Vec<LatestState>,
    pub forecasts: Vec<Forecast>,
    pub late: Vec<LateReading>,
    /// Records that do not decode, for the dead-letter topic.
    pub poisoned: Vec<Poisoned>,
}

impl Insights {
    pub fn decode(records: &[Delivered]) -> Insights {
        let mut aggs: HashMap<(String, String, i64, i64), usize> = HashMap::new();
        let mut latest: HashMap<String, usize> = HashMap::new();
        let mut out = Insights::default();
        for (index, r) in records.iter().enumerate() {
            match serde_json::from_slice::<Insight>(&r.value) {
                Ok(Insight::Aggregate(a)) => {
                    let key = (
                        a.device_id.to_string(),
                        a.metric.clone(),
                        a.window_ms,
                        a.window_start.millis(),
                    );
                    match aggs.get(&key) {
                        Some(&i) if a.supersedes(&out.aggregates[i]) => out.aggregates[i] = a,
                        Some(_) => {}
                        None => {
                            aggs.insert(key, out.aggregates.len());
                            out.aggregates.push(a);
                        }
                    }
                }
                Ok(Insight::Latest(l)) => match latest.get(l.device_id.as_str()) {
                    Some(&i) => merge_latest(&mut out.latest[i], l),
                    None => {
                        latest.insert(l.device_id.to_string(), out.latest.len());
                        out.latest.push(l);
                    }
                },
                Ok(Insight::Forecast(f)) => {
                    metrics::counter!("iotstream_forecasts_total").increment(1);
                    out.forecasts.push(f);
                }
                Ok(Insight::Late(l)) => {
                    metrics::counter!("iotstream_late_readings_total").increment(1);
                    out.late.push(l);
                }
                Err(e) => out.poisoned.push(poison(index, r, &e)),
            }
        }
        out
    }
}

/// Newer values win; metrics only the older state has are kept.
fn merge_latest(into: &mut LatestState, newer: LatestState) {
    if newer.last_seen >= into.last_seen {
        into.last_seen = newer.last_seen;
        into.metrics.extend(newer.metrics);
    } else {
        for (k, v) in newer.metrics {
            into.metrics.entry(k).or_insert(v);
        }
    }
}

/// Decodes `alerts` records: the events, and the records that do not decode.
pub fn decode_alerts(records: &[Delivered]) -> (Vec<AlertEvent>, Vec<Poisoned>) {
    let mut events = Vec::with_capacity(records.len());
    let mut poisoned = Vec::new();
    for (index, r) in records.iter().enumerate() {
        match serde_json::from_slice::<AlertEvent>(&r.value) {
            Ok(e) => events.push(e),
            Err(e) => poisoned.push(poison(index, r, &e)),
        }
    }
    (events, poisoned)
}

fn poison(index: usize, r: &Delivered, e: &serde_json::Error) -> Poisoned {
    metrics::counter!("iotstream_process_poison_total").increment(1);
    tracing::warn!(topic = %r.topic, partition = r.partition, offset = r.offset, error = %e, "skipping an undecodable record");
    Poisoned {
        index,
        reason: format!("undecodable {}: {e}", r.topic),
    }
}

/// Stores a batch of insights. Safe to call again with the same batch.
pub async fn handle_insights(input: &Insights, deps: &Deps<'_>) -> Result<(), PortError> {
    if !input.aggregates.is_empty() {
        deps.results.upsert_aggregates(&input.aggregates).await?;
    }
    if !input.latest.is_empty() {
        deps.results.upsert_latest(&input.latest).await?;
    }
    if !input.forecasts.is_empty() {
        deps.results.insert_forecasts(&input.forecasts).await?;
    }
    if !input.late.is_empty() {
        deps.results.insert_late_readings(&input.late).await?;
    }
    // The cache after the database: it only ever holds what the truth already has.
    if !input.latest.is_empty() {
        cached(deps.cache.set_latest(&input.latest).await);
    }
    if !input.aggregates.is_empty() {
        cached(deps.cache.put_aggregates(&input.aggregates).await);
    }
    if !input.forecasts.is_empty() {
        cached(deps.cache.put_forecasts(&input.forecasts).await);
    }
    if !input.late.is_empty() {
        cached(deps.cache.put_late_readings(&input.late).await);
    }
    Ok(())
}

/// A cache write's outcome: failures are counted and logged (at debug level: the cache logs
/// once when it goes down and once when it is back), never fatal.
fn cached(result: Result<(), PortError>) {
    if let Err(e) = result {
        metrics::counter!("iotstream_cache_errors_total").increment(1);
        tracing::debug!(error = %e, "cache write failed; serving from the database");
    }
}

/// Stores alert transitions. Safe to call again with the same batch.
pub async fn handle_alerts(events: &[AlertEvent], deps: &Deps<'_>) -> Result<(), PortError> {
    if events.is_empty() {
        return Ok(());
    }
    deps.results.apply_alert_events(events).await?;
    cached(deps.cache.put_alerts(events).await);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use iotstream_backends::conformance::insights::{forecast, late};
    use iotstream_backends::{EmbeddedResults, MemoryCache};
    use iotstream_core::{DeviceId, Ts};

    fn record(offset: u64, insight: &Insight) -> Delivered {
        Delivered {
            topic: "insights".into(),
            partition: 0,
            offset,
            key: insight.device_id().to_string(),
            value: serde_json::to_vec(insight).unwrap(),
        }
    }

    /// Forecasts and late readings reach the results store, once each however often the batch
    /// is delivered; a record that does not decode is set aside, not stored.
    #[tokio::test]
    async fn forecasts_and_late_readings_are_stored_once_per_redelivery() {
        let dir = tempfile::tempdir().unwrap();
        let results = EmbeddedResults::open(dir.path()).await.unwrap();
        let cache = MemoryCache::new();
        let deps = Deps {
            results: &results,
            cache: &cache,
        };
        let d = DeviceId::parse("pump-1").unwrap();
        let f = forecast(&d, "overheat", 60_000);
        let l = late(&d, "r-1", 1_000, 5_000, &["temperature"]);
        let mut records = vec![
            record(0, &Insight::Forecast(f.clone())),
            record(1, &Insight::Late(l.clone())),
            record(2, &Insight::Forecast(f.clone())),
        ];
        records.push(Delivered {
            value: b"{not json".to_vec(),
            ..record(3, &Insight::Late(l.clone()))
        });
        let input = Insights::decode(&records);
        assert_eq!(
            input.poisoned.iter().map(|p| p.index).collect::<Vec<_>>(),
            vec![3]
        );
        for _ in 0..2 {
            handle_insights(&input, &deps).await.unwrap();
        }
        let all = (Ts(i64::MIN), Ts(i64::MAX));
        assert_eq!(
            results.forecasts(Some(&d), all.0, all.1, 10).await.unwrap(),
            vec![f]
        );
        assert_eq!(
            results.late_readings(None, all.0, all.1, 10).await.unwrap(),
            vec![l]
        );
    }

    /// Two instances owned a partition at once for a moment (a rebalance): the new owner's
    /// final window and the old owner's partial one, with fewer readings, reach process in one
    /// batch, in either order. The final one is kept; keeping the later one would lose its
    /// readings for good (a final window is emitted once).
    #[test]
    fn a_stale_partial_window_never_replaces_a_fuller_one_in_a_batch() {
        let d = DeviceId::parse("pump-1").unwrap();
        let window = |count: u64, partial: bool| Aggregate {
            partial,
            ..iotstream_backends::conformance::results::agg(
                &d,
                "temperature",
                60_000,
                count,
                1.0,
                9.0,
                count as f64,
            )
        };
        let (fuller, stale) = (window(60, false), window(54, true));
        for batch in [[&fuller, &stale], [&stale, &fuller]] {
            let records: Vec<Delivered> = batch
                .iter()
                .enumerate()
                .map(|(i, a)| record(i as u64, &Insight::Aggregate((*a).clone())))
                .collect();
            assert_eq!(Insights::decode(&records).aggregates, vec![fuller.clone()]);
        }
    }
}
