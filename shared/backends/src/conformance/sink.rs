//! The [`TelemetrySink`] suite: what ingest relies on when it answers 202.

use super::{metrics, unique_device};
use iotstream_core::ports::{EventBus, TelemetrySink, TelemetryStore};
use iotstream_core::{Reading, Ts, topics};
use std::sync::Arc;
use std::time::Duration;

fn reading(device: &iotstream_core::DeviceId, i: i64) -> Reading {
    let m: iotstream_core::Metrics = metrics(&[("t", i as f64)]);
    let id = iotstream_core::reading::reading_key(device, None, Ts(i), &m);
    Reading {
        id,
        device_id: device.clone(),
        ts: Ts(i),
        metrics: m,
        message_id: None,
    }
}

/// `accept` stores and publishes each new reading exactly once, flags duplicates (also within
/// one call), and leaves every accepted reading readable from the store and the bus.
pub async fn run(sink: Arc<dyn TelemetrySink>, store: Arc<dyn TelemetryStore>, bus: Arc<dyn EventBus>) {
    let device = unique_device("sink");
    let group = super::unique("sink-group");
    bus.ensure_topic(topics::TELEMETRY).await.unwrap();
    let mut consumer = bus.subscribe(&group, topics::TELEMETRY).await.unwrap();
    // Skip whatever the topic already holds (a shared broker): only this device counts.
    let a = reading(&device, 1);
    let b = reading(&device, 2);
    assert_eq!(
        sink.accept(&[a.clone(), b.clone(), a.clone()]).await.unwrap(),
        vec![true, true, false]
    );
    assert_eq!(
        sink.accept(&[b.clone(), reading(&device, 3)]).await.unwrap(),
        vec![false, true]
    );

    let stored = store.range(&device, Ts(0), Ts(10), 10).await.unwrap();
    assert_eq!(
        stored.iter().map(|r| r.ts.millis()).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert_eq!(stored[0], a, "stored exactly as accepted");

    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while seen.len() < 3 && tokio::time::Instant::now() < deadline {
        for d in consumer.poll(10_000, Duration::from_millis(200)).await.unwrap() {
            if d.key == device.as_str() {
                let r: Reading = serde_json::from_slice(&d.value).unwrap();
                seen.push(r.ts.millis());
            }
        }
    }
    assert_eq!(
        seen,
        vec![1, 2, 3],
        "each new reading published once, in order, keyed by device"
    );
    let more = consumer.poll(10_000, Duration::from_millis(100)).await.unwrap();
    assert!(
        more.iter().all(|d| d.key != device.as_str()),
        "duplicates are not published"
    );
}
