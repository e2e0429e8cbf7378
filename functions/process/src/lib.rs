//! **process**: stores what analyze found.
//!
//! - Trigger: the `insights` and `alerts` topics, consumer group `iotstream-process`.
//! - Outputs: aggregates, each device's latest state and alerts in the results database
//!   (PostgreSQL / embedded SQLite); latest state in the cache (Redis / in-process).
//! - Delivery: at-least-once; offsets are committed after the database writes. A cache failure
//!   is logged and counted, never fatal: the database is the source of truth.
//! - Idempotency keys: (device, metric, window start) for aggregates; device id + newest
//!   `lastSeen` for latest state; alert id with monotonic state for alerts.

use iotstream_core::model::{AlertEvent, Insight, LatestState};
use iotstream_core::ports::{Cache, Delivered, Poisoned, ResultsStore};
use iotstream_core::{Aggregate, PortError};
use std::collections::HashMap;

pub struct Deps<'a> {
    pub results: &'a dyn ResultsStore,
    pub cache: &'a dyn Cache,
}

/// A batch from `insights`, coalesced: the last emission of each window and one merged latest
/// state per device.
#[derive(Debug, Default)]
pub struct Insights {
    pub aggregates: Vec<Aggregate>,
    pub latest: Vec<LatestState>,
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
                        Some(&i) => out.aggregates[i] = a,
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
                // Forecasts and late readings are for live consumers of the insights topic
                // (and replay); the results database keeps aggregates and latest state.
                Ok(Insight::Forecast(_)) => metrics::counter!("iotstream_forecasts_total").increment(1),
                Ok(Insight::Late(_)) => metrics::counter!("iotstream_late_readings_total").increment(1),
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
    // The cache after the database: it only ever holds what the truth already has.
    if !input.latest.is_empty() {
        cached(deps.cache.set_latest(&input.latest).await);
    }
    if !input.aggregates.is_empty() {
        cached(deps.cache.put_aggregates(&input.aggregates).await);
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
