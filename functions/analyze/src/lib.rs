//! **analyze**: detects threshold breaches and computes aggregates in event time.
//!
//! - Trigger: the `telemetry` topic, consumer group `iotstream-analyze` (key = device id, so a
//!   device's readings arrive in order on one partition).
//! - Outputs: [`Insight`]s on `insights` and [`AlertEvent`]s on `alerts`, keyed by device id.
//! - Delivery: at-least-once. The adapter checkpoints the engine state together with the input
//!   positions it reflects, and commits offsets only after the outputs of those positions are
//!   published; after a crash it restores the checkpoint and replays from its positions, which
//!   re-publishes identical outputs.
//! - Idempotency key: the reading id (the engine drops re-sent readings); outputs carry
//!   deterministic ids (alert id, event id, aggregate window), so sinks absorb replays.

use iotstream_core::engine::{Engine, Stats};
use iotstream_core::ports::{Delivered, EventBus, Poisoned, Record};
use iotstream_core::{AlertEvent, PortError, Reading, Ts, topics};

pub use iotstream_core::engine::Output as EngineOutput;

/// A batch of telemetry records, decoded. Records that are not valid readings are poison: they
/// are counted, listed in `poisoned` (for the dead-letter topic) and skipped (they cannot come
/// from ingest, which validates everything).
pub struct Input {
    pub readings: Vec<Reading>,
    pub poison: usize,
    pub poisoned: Vec<Poisoned>,
}

impl Input {
    pub fn decode(records: &[Delivered]) -> Input {
        let mut readings = Vec::with_capacity(records.len());
        let mut poisoned = Vec::new();
        for (index, r) in records.iter().enumerate() {
            match serde_json::from_slice::<Reading>(&r.value) {
                Ok(reading) => readings.push(reading),
                Err(e) => {
                    poisoned.push(Poisoned {
                        index,
                        reason: format!("not a reading: {e}"),
                    });
                    tracing::warn!(topic = %r.topic, partition = r.partition, offset = r.offset, error = %e, "skipping a record that is not a reading");
                }
            }
        }
        let poison = poisoned.len();
        if poison > 0 {
            metrics::counter!("iotstream_analyze_poison_total").increment(poison as u64);
        }
        Input {
            readings,
            poison,
            poisoned,
        }
    }
}

/// Runs the engine over a batch of one bus partition that arrived at `now`. Pure apart from the
/// engine state it advances.
pub fn evaluate(input: &Input, partition: u32, engine: &mut Engine, now: Ts) -> EngineOutput {
    let out = engine.process_in(&input.readings, partition, now);
    record_stats(&out.stats);
    out
}

/// The engine's processing-time work (silence, idle reorder buffers, partial windows, latest
/// state): run about once a second and before every checkpoint.
pub fn tick(engine: &mut Engine, now: Ts) -> EngineOutput {
    let out = engine.tick(now);
    record_stats(&out.stats);
    out
}

/// Publishes what the engine produced: alerts and insights at once (alerts are on the alert
/// path; waiting for the insights' acknowledgement first would add a round trip). Idempotent
/// downstream, so a retry after a failure is safe.
pub async fn publish(out: &EngineOutput, bus: &dyn EventBus) -> Result<(), PortError> {
    let insights: Vec<Record> = out
        .insights
        .iter()
        .map(|i| Record {
            key: i.device_id().to_string(),
            value: serde_json::to_vec(i).expect("insight"),
        })
        .collect();
    let alerts: Vec<Record> = out
        .alerts
        .iter()
        .map(|a| Record {
            key: a.alert.device_id.to_string(),
            value: serde_json::to_vec(a).expect("alert"),
        })
        .collect();
    let publish_insights = async {
        if insights.is_empty() {
            return Ok(());
        }
        bus.publish(topics::INSIGHTS, &insights).await
    };
    let publish_alerts = async {
        if alerts.is_empty() {
            return Ok(());
        }
        bus.publish(topics::ALERTS, &alerts).await?;
        record_alert_delay("published", &out.alerts);
        metrics::counter!("iotstream_alert_transitions_total").increment(alerts.len() as u64);
        Ok(())
    };
    tokio::try_join!(publish_alerts, publish_insights)?;
    Ok(())
}

/// Records `iotstream_alert_delay_seconds{stage}` for the `opened` events among `alerts`:
/// seconds from the reading that opened the alert to now (notify records the later stages).
pub fn record_alert_delay(stage: &'static str, alerts: &[AlertEvent]) {
    let now = Ts::from_system_time(std::time::SystemTime::now());
    for d in alerts.iter().filter_map(|a| a.opened_delay_secs(now)) {
        metrics::histogram!("iotstream_alert_delay_seconds", "stage" => stage).record(d);
    }
}

fn record_stats(s: &Stats) {
    metrics::counter!("iotstream_analyze_readings_total").increment(s.processed);
    metrics::counter!("iotstream_analyze_duplicates_total").increment(s.duplicates);
    metrics::counter!("iotstream_analyze_late_total").increment(s.late);
    metrics::counter!("iotstream_analyze_reordered_total").increment(s.out_of_order);
}
