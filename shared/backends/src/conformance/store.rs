//! [`TelemetryStore`] conformance: idempotent puts, lookups, time ranges.

use super::{metrics, unique, unique_device};
use iotstream_core::ports::TelemetryStore;
use iotstream_core::{DeviceId, Reading, Ts};
use std::sync::Arc;

/// Runs every telemetry store check, each on fresh devices.
pub async fn run(store: Arc<dyn TelemetryStore>) {
    put_reports_new_and_duplicates(&*store).await;
    contains_reports_stored_ids(&*store).await;
    range_is_half_open_ordered_and_limited(&*store).await;
    large_batches_are_idempotent(&*store).await;
}

/// A unique reading id shaped like real ones: 32 lowercase hex characters.
pub fn reading_id() -> String {
    let device = DeviceId::parse("ids").expect("valid id");
    iotstream_core::reading::reading_key(&device, Some(&unique("r")), Ts(0), &Default::default())
}

/// A reading with a unique id.
pub fn reading(device: &DeviceId, ts: i64, value: f64) -> Reading {
    Reading {
        id: reading_id(),
        device_id: device.clone(),
        ts: Ts(ts),
        metrics: metrics(&[("temperature", value), ("humidity", 0.1 + 0.2)]),
        message_id: None,
    }
}

pub async fn put_reports_new_and_duplicates(store: &dyn TelemetryStore) {
    let d = unique_device("conf-put");
    let r1 = reading(&d, 1_000, 1.0);
    let r2 = Reading {
        message_id: Some("client-msg-2".into()),
        ..reading(&d, 2_000, 2.0)
    };
    let r3 = reading(&d, 3_000, 3.0);
    // Ids of other shapes are stored and compared exactly too.
    let odd = Reading {
        id: "0123456789ABCDEF0123456789ABCDEF".into(),
        ..reading(&d, 4_500, 4.5)
    };
    let odd2 = Reading {
        id: unique("client-chosen"),
        ..reading(&d, 4_600, 4.6)
    };
    assert_eq!(
        store
            .put(&[odd.clone(), odd2.clone(), odd.clone()])
            .await
            .expect("put"),
        [true, true, false]
    );
    assert_eq!(
        store.put(std::slice::from_ref(&odd2)).await.expect("put"),
        [false]
    );
    assert_eq!(
        store
            .contains(&[(d.clone(), odd.id.to_lowercase()), (d.clone(), odd.id.clone())])
            .await
            .expect("contains"),
        [false, true],
        "ids are case-sensitive"
    );
    assert_eq!(store.put(&[]).await.expect("put nothing"), Vec::<bool>::new());
    let flags = store
        .put(&[r1.clone(), r2.clone(), r1.clone(), r3.clone()])
        .await
        .expect("put");
    assert_eq!(
        flags,
        [true, true, false, true],
        "the second copy in one batch is a duplicate"
    );
    let r4 = reading(&d, 4_000, 4.0);
    let flags = store
        .put(&[r4.clone(), r1.clone(), r4.clone(), r2.clone()])
        .await
        .expect("put again");
    assert_eq!(flags, [true, false, false, false]);
    // Same reading id under another device is a different reading (key is device + id).
    let other = unique_device("conf-put-other");
    let moved = Reading {
        device_id: other.clone(),
        ..r1.clone()
    };
    assert_eq!(store.put(&[moved]).await.expect("put"), [true]);
    let stored = store.range(&d, Ts(0), Ts(10_000), 100).await.expect("range");
    assert_eq!(
        stored,
        [r1, r2, r3, r4, odd, odd2],
        "stored exactly once each, fields intact"
    );
}

pub async fn contains_reports_stored_ids(store: &dyn TelemetryStore) {
    let d = unique_device("conf-contains");
    let other = unique_device("conf-contains-other");
    let r = reading(&d, 5_000, 5.0);
    store.put(std::slice::from_ref(&r)).await.expect("put");
    let asked = [
        (d.clone(), r.id.clone()),
        (d.clone(), unique("missing")),
        (other.clone(), r.id.clone()),
        (d.clone(), r.id.clone()),
    ];
    assert_eq!(
        store.contains(&asked).await.expect("contains"),
        [true, false, false, true]
    );
    assert!(store.contains(&[]).await.expect("contains nothing").is_empty());
}

pub async fn range_is_half_open_ordered_and_limited(store: &dyn TelemetryStore) {
    let d = unique_device("conf-range");
    let other = unique_device("conf-range-other");
    let rs: Vec<Reading> = [4_000, 1_000, 3_000, 2_000]
        .iter()
        .map(|t| reading(&d, *t, *t as f64))
        .collect();
    store.put(&rs).await.expect("put");
    store
        .put(&[reading(&other, 2_500, 9.0)])
        .await
        .expect("put other");
    let ts = |v: Vec<Reading>| v.iter().map(|r| r.ts.millis()).collect::<Vec<_>>();
    assert_eq!(
        ts(store.range(&d, Ts(0), Ts(i64::MAX), 100).await.expect("range")),
        [1_000, 2_000, 3_000, 4_000],
        "oldest first"
    );
    assert_eq!(
        ts(store.range(&d, Ts(2_000), Ts(4_000), 100).await.expect("range")),
        [2_000, 3_000],
        "from <= ts < to"
    );
    assert_eq!(
        ts(store.range(&d, Ts(1_500), Ts(4_001), 2).await.expect("range")),
        [2_000, 3_000],
        "limit keeps the oldest"
    );
    assert!(
        store
            .range(&d, Ts(5_000), Ts(9_000), 10)
            .await
            .expect("range")
            .is_empty()
    );
    assert!(
        store
            .range(&d, Ts(3_000), Ts(3_000), 10)
            .await
            .expect("range")
            .is_empty(),
        "empty interval"
    );
    assert!(
        store
            .range(&d, Ts(0), Ts(9_000), 0)
            .await
            .expect("range")
            .is_empty(),
        "limit 0"
    );
    assert_eq!(
        ts(store.range(&other, Ts(0), Ts(9_000), 10).await.expect("range")),
        [2_500],
        "per device"
    );
}

pub async fn large_batches_are_idempotent(store: &dyn TelemetryStore) {
    let d = unique_device("conf-large");
    let mut batch: Vec<Reading> = (0..2_345).map(|i| reading(&d, 10_000 + i, i as f64)).collect();
    batch.push(batch[0].clone());
    batch.push(batch[1_000].clone());
    let flags = store.put(&batch).await.expect("put");
    assert_eq!(flags.len(), batch.len());
    assert!(flags[..2_345].iter().all(|f| *f), "all distinct readings are new");
    assert_eq!(&flags[2_345..], [false, false], "in-batch repeats far apart");
    let again = store.put(&batch).await.expect("put again");
    assert!(again.iter().all(|f| !*f), "a re-sent batch is all duplicates");
    let stored = store.range(&d, Ts(0), Ts(i64::MAX), 10_000).await.expect("range");
    assert_eq!(stored.len(), 2_345);
}
