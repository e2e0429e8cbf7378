//! Every conformance suite against the embedded engines, plus embedded-only checks:
//! durability across a reopen, log trimming, and engine selection.

use iotstream_backends::conformance::{self, alert, event, latest, unique_device};
use iotstream_backends::embedded::{EmbeddedBus, EmbeddedResults, EmbeddedTelemetryStore};
use iotstream_backends::{BackendUrls, LogBus, LogTelemetryStore, MemoryCache, SplitSink, connect};
use iotstream_core::Reading;
use iotstream_core::ports::TelemetryStore;
use iotstream_core::ports::{Checkpoint, EventBus, Position, Record};
use iotstream_core::{AlertEventKind, PortErrorKind, Ts};
use std::sync::Arc;
use std::time::Duration;
use tempfile::TempDir;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bus_conforms() {
    let dir = TempDir::new().unwrap();
    conformance::bus::run(Arc::new(EmbeddedBus::open(dir.path()).await.unwrap())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bus_with_one_partition_conforms() {
    let dir = TempDir::new().unwrap();
    conformance::bus::run(Arc::new(
        EmbeddedBus::open_with_partitions(dir.path(), 1).await.unwrap(),
    ))
    .await;
}

#[tokio::test]
async fn telemetry_store_conforms() {
    let dir = TempDir::new().unwrap();
    conformance::store::run(Arc::new(EmbeddedTelemetryStore::open(dir.path()).await.unwrap())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_bus_conforms_with_one_and_four_partitions() {
    let dir = TempDir::new().unwrap();
    conformance::bus::run(Arc::new(LogBus::open(dir.path()).unwrap())).await;
    let dir = TempDir::new().unwrap();
    conformance::bus::run(Arc::new(LogBus::open_with_partitions(dir.path(), 4).unwrap())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_store_conforms_as_store_and_sink() {
    let dir = TempDir::new().unwrap();
    let bus = LogBus::open(dir.path()).unwrap();
    let store = Arc::new(LogTelemetryStore::open(bus.clone()).unwrap());
    conformance::store::run(store.clone()).await;
    conformance::sink::run(store.clone(), store, Arc::new(bus)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_sink_conforms_over_a_separate_store_and_bus() {
    let dir = TempDir::new().unwrap();
    let store: Arc<dyn TelemetryStore> = Arc::new(EmbeddedTelemetryStore::open(dir.path()).await.unwrap());
    let bus: Arc<dyn EventBus> = Arc::new(LogBus::open(dir.path()).unwrap());
    let sink = Arc::new(SplitSink {
        store: store.clone(),
        bus: bus.clone(),
    });
    conformance::sink::run(sink, store, bus).await;
}

#[tokio::test]
async fn log_store_index_is_rebuilt_on_reopen() {
    let dir = TempDir::new().unwrap();
    let device = unique_device("reopen");
    let m = conformance::metrics(&[("t", 1.5)]);
    let r = Reading {
        id: iotstream_core::reading::reading_key(&device, Some("m1"), Ts(5), &m),
        device_id: device.clone(),
        ts: Ts(5),
        metrics: m,
        message_id: Some("m1".into()),
    };
    {
        let store = LogTelemetryStore::open(LogBus::open(dir.path()).unwrap()).unwrap();
        assert_eq!(store.put(std::slice::from_ref(&r)).await.unwrap(), vec![true]);
    }
    let store = LogTelemetryStore::open(LogBus::open(dir.path()).unwrap()).unwrap();
    assert_eq!(
        store.put(std::slice::from_ref(&r)).await.unwrap(),
        vec![false],
        "still a duplicate"
    );
    assert_eq!(store.range(&device, Ts(0), Ts(10), 10).await.unwrap(), vec![r]);
}

#[tokio::test]
async fn results_conform() {
    let dir = TempDir::new().unwrap();
    let results = Arc::new(EmbeddedResults::open(dir.path()).await.unwrap());
    conformance::devices::run(results.clone()).await;
    conformance::results::run(results.clone(), results.clone()).await;
    conformance::outbox::run(results.clone()).await;
    conformance::checkpoints::run(results).await;
}

#[tokio::test]
async fn memory_cache_conforms() {
    conformance::cache::run(Arc::new(MemoryCache::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_defaults_to_embedded_and_passes_everything() {
    let dir = TempDir::new().unwrap();
    let data = dir.path().join("nested/data");
    let backends = connect(&data, &BackendUrls::default()).await.unwrap();
    for file in ["log", "results.db"] {
        assert!(data.join(file).exists(), "{file} created");
    }
    conformance::run_all(&backends).await;
}

#[tokio::test]
async fn connect_rejects_engines_not_built_and_unknown_schemes() {
    let dir = TempDir::new().unwrap();
    // Builds with the real engines (scripts/test's second pass) have nothing to refuse here.
    if !iotstream_backends::connect::Engine::Kafka.compiled() {
        let urls = BackendUrls {
            bus: Some("kafka://localhost:9092".into()),
            ..BackendUrls::default()
        };
        let err = connect(dir.path(), &urls)
            .await
            .err()
            .expect("kafka is not built");
        assert_eq!(err.kind, PortErrorKind::Config);
        assert!(err.message.contains("cargo feature `kafka`"), "{err}");
    }
    let urls = BackendUrls {
        database: Some("mysql://x/db".into()),
        ..BackendUrls::default()
    };
    let err = connect(dir.path(), &urls).await.err().expect("unknown scheme");
    assert!(
        err.message.contains("mysql") && err.message.contains("postgres://"),
        "{err}"
    );
}

/// Everything written before the engines are dropped is there after reopening the directory.
#[tokio::test]
async fn everything_survives_a_reopen() {
    let dir = TempDir::new().unwrap();
    let device = unique_device("durable");
    let a = alert("durable-alert", &device, 1_000, 85.0);
    let reading = conformance::store::reading(&device, 1_000, 21.5);
    let checkpoint = Checkpoint {
        positions: vec![Position {
            partition: 0,
            next_offset: 3,
        }],
        state: b"state".to_vec(),
    };
    {
        let b = connect(dir.path(), &BackendUrls::default()).await.unwrap();
        let records: Vec<Record> = (0..10)
            .map(|i| Record {
                key: format!("k{}", i % 3),
                value: format!("v{i}").into_bytes(),
            })
            .collect();
        b.bus.publish("durable-events", &records).await.unwrap();
        let mut c = b.bus.subscribe("g", "durable-events").await.unwrap();
        let got = conformance::bus::drain(&mut *c, 10).await;
        assert_eq!(got.len(), 10);
        c.commit().await.unwrap();
        b.bus.publish("durable-events", &records[..4]).await.unwrap();
        assert_eq!(b.store.put(std::slice::from_ref(&reading)).await.unwrap(), [true]);
        b.devices.add_device(&device, Ts(5)).await.unwrap().unwrap();
        b.results
            .apply_alert_events(&[event(AlertEventKind::Opened, &a, 1_000, 85.0)])
            .await
            .unwrap();
        b.results.ack_alert(&a.id, Ts(2_000)).await.unwrap();
        b.results
            .upsert_latest(&[latest(&device, 1_000, &[("t", 21.5)])])
            .await
            .unwrap();
        b.checkpoints
            .save_checkpoint("analyze", &checkpoint)
            .await
            .unwrap();
    }
    let b = connect(dir.path(), &BackendUrls::default()).await.unwrap();
    assert_eq!(
        b.bus.lag("g", "durable-events").await.unwrap(),
        4,
        "messages and offsets kept"
    );
    let mut c = b.bus.subscribe("g", "durable-events").await.unwrap();
    assert_eq!(
        conformance::bus::drain(&mut *c, 4).await.len(),
        4,
        "resumes at the committed offsets"
    );
    b.bus
        .publish(
            "durable-events",
            &[Record {
                key: "k0".into(),
                value: b"after".to_vec(),
            }],
        )
        .await
        .unwrap();
    let next = conformance::bus::drain(&mut *c, 1).await;
    assert!(
        next[0].offset >= 4,
        "offsets continue after a reopen, never restart"
    );
    assert_eq!(
        b.store.range(&device, Ts(0), Ts(10_000), 10).await.unwrap(),
        std::slice::from_ref(&reading)
    );
    assert_eq!(
        b.store.put(&[reading]).await.unwrap(),
        [false],
        "still a duplicate"
    );
    assert_eq!(
        b.devices.get_device(&device).await.unwrap().map(|d| d.generation),
        Some(1)
    );
    let stored = b.results.alert(&a.id).await.unwrap().unwrap();
    assert_eq!(stored.acknowledged_at, Some(Ts(2_000)));
    let due = b.outbox.due(Ts(10_000), 10).await.unwrap();
    assert_eq!(due.len(), 1, "the ack notification is still queued");
    assert_eq!(
        b.results.latest(&device).await.unwrap().unwrap().metrics["t"],
        21.5
    );
    assert_eq!(
        b.checkpoints.load_checkpoint("analyze").await.unwrap(),
        Some(checkpoint)
    );
}

#[tokio::test]
async fn trim_deletes_only_what_every_group_committed() {
    let dir = TempDir::new().unwrap();
    let bus = EmbeddedBus::open_with_partitions(dir.path(), 1).await.unwrap();
    let records: Vec<Record> = (0..10)
        .map(|i| Record {
            key: "k".into(),
            value: vec![i],
        })
        .collect();
    bus.publish("t", &records).await.unwrap();
    assert_eq!(
        bus.trim_below_committed("t").await.unwrap(),
        0,
        "no group committed yet"
    );
    let mut a = bus.subscribe("a", "t").await.unwrap();
    assert_eq!(a.poll(6, Duration::from_secs(1)).await.unwrap().len(), 6);
    a.commit().await.unwrap();
    let mut b = bus.subscribe("b", "t").await.unwrap();
    assert_eq!(b.poll(3, Duration::from_secs(1)).await.unwrap().len(), 3);
    b.commit().await.unwrap();
    assert_eq!(
        bus.trim_below_committed("t").await.unwrap(),
        3,
        "below the slowest group"
    );
    assert_eq!(bus.high_watermarks("t").await.unwrap(), [10]);
    let mut late = bus.subscribe("late", "t").await.unwrap();
    let got = late.poll(100, Duration::from_secs(1)).await.unwrap();
    assert_eq!(
        got.first().map(|d| d.offset),
        Some(3),
        "a new group starts at the oldest kept record"
    );
    b.poll(100, Duration::from_secs(1)).await.unwrap();
    b.commit().await.unwrap();
    assert_eq!(bus.trim_below_committed("t").await.unwrap(), 3);
    bus.publish("t", &records[..1]).await.unwrap();
    assert_eq!(
        bus.high_watermarks("t").await.unwrap(),
        [11],
        "offsets never restart after a trim"
    );
}

#[tokio::test]
async fn a_second_bus_on_the_same_file_sees_records_within_the_recheck() {
    let dir = TempDir::new().unwrap();
    let writer = EmbeddedBus::open(dir.path()).await.unwrap();
    let reader = EmbeddedBus::open(dir.path()).await.unwrap();
    let mut c = reader.subscribe("g", "t").await.unwrap();
    let publisher = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        writer
            .publish(
                "t",
                &[Record {
                    key: "k".into(),
                    value: b"x".to_vec(),
                }],
            )
            .await
            .unwrap();
    });
    let start = std::time::Instant::now();
    let got = c.poll(10, Duration::from_secs(5)).await.unwrap();
    publisher.await.unwrap();
    assert_eq!(got.len(), 1);
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "took {:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn invalid_names_and_seeks_are_rejected() {
    let dir = TempDir::new().unwrap();
    let bus = EmbeddedBus::open_with_partitions(dir.path(), 2).await.unwrap();
    let err = bus
        .publish(
            "bad topic",
            &[Record {
                key: "k".into(),
                value: vec![],
            }],
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind, PortErrorKind::Invalid);
    let mut c = bus.subscribe("g", "t").await.unwrap();
    let err = c
        .seek(&[Position {
            partition: 2,
            next_offset: 0,
        }])
        .await
        .unwrap_err();
    assert_eq!(err.kind, PortErrorKind::Invalid);
    assert_eq!(c.positions().len(), 2);
}

/// One process owns a log directory: a second opener gets a clear error instead of racing the
/// writer (and possibly cutting frames it is about to acknowledge).
#[tokio::test]
async fn a_log_directory_has_one_owner() {
    let dir = TempDir::new().unwrap();
    let first = LogBus::open(dir.path()).unwrap();
    let err = LogBus::open(dir.path()).err().expect("second owner refused");
    assert_eq!(err.kind, PortErrorKind::Unavailable);
    assert!(
        err.message.contains("in use by another iotstream process"),
        "{err}"
    );
    drop(first);
    LogBus::open(dir.path()).expect("free again once the owner is gone");
}

/// Retention deletes only what is both old enough and analysed, forgets those readings, keeps
/// everything else (also across a reopen), and never touches a topic nobody consumed.
#[tokio::test]
async fn retention_deletes_old_analysed_segments_and_nothing_else() {
    use iotstream_core::ports::EventBus;
    use std::time::{Duration, SystemTime};
    let dir = TempDir::new().unwrap();
    let device = unique_device("ret");
    let readings: Vec<Reading> = (0..300i64)
        .map(|i| {
            let m = conformance::metrics(&[("t", i as f64)]);
            let id = iotstream_core::reading::reading_key(&device, None, Ts(i), &m);
            Reading {
                id,
                device_id: device.clone(),
                ts: Ts(i),
                metrics: m,
                message_id: None,
            }
        })
        .collect();
    let future = SystemTime::now() + Duration::from_secs(3600);
    let kept_before_reopen = {
        let bus = LogBus::open_with(dir.path(), 1, 4096).unwrap();
        let store = LogTelemetryStore::open(bus.clone()).unwrap();
        for chunk in readings.chunks(10) {
            store.put(chunk).await.unwrap();
        }
        assert_eq!(
            store.retain(future).unwrap(),
            0,
            "nothing is analysed yet: nothing goes"
        );
        let mut analyze = bus.subscribe("iotstream-analyze", "telemetry").await.unwrap();
        let mut got = 0;
        while got < 150 {
            got += analyze
                .poll(150 - got, Duration::from_secs(1))
                .await
                .unwrap()
                .len();
        }
        analyze.commit().await.unwrap();
        let too_recent = SystemTime::now() - Duration::from_secs(3600);
        assert_eq!(store.retain(too_recent).unwrap(), 0, "analysed but recent: kept");
        let deleted = store.retain(future).unwrap() as usize;
        assert!(
            deleted > 0 && deleted <= 150,
            "only analysed readings go: {deleted}"
        );
        let kept = store.range(&device, Ts(0), Ts(1000), 1000).await.unwrap();
        assert_eq!(kept.len(), 300 - deleted);
        assert_eq!(kept[0].ts, Ts(deleted as i64), "the oldest go first");
        assert_eq!(
            store.put(&readings[deleted..deleted + 1]).await.unwrap(),
            [false],
            "kept ones still dedup"
        );
        assert_eq!(bus.trim_consumed("nobody-reads-this", future).unwrap(), 0);
        kept.len()
    };
    let store = LogTelemetryStore::open(LogBus::open_with(dir.path(), 1, 4096).unwrap()).unwrap();
    assert_eq!(
        store.range(&device, Ts(0), Ts(1000), 1000).await.unwrap().len(),
        kept_before_reopen
    );
}

/// Pruning the results database deletes only what is finished and old: old aggregates, old
/// resolved alerts, old forecasts, readings that arrived late long ago, old delivered
/// deliveries; never open alerts or pending deliveries.
#[tokio::test]
async fn results_prune_deletes_only_finished_old_rows() {
    use iotstream_core::ports::{Outbox, ResultsStore};
    let dir = TempDir::new().unwrap();
    let results = EmbeddedResults::open(dir.path()).await.unwrap();
    let d = unique_device("prune");
    let agg = |ws: i64| conformance::results::agg(&d, "t", ws, 1, 1.0, 1.0, 1.0);
    results.upsert_aggregates(&[agg(0), agg(600_000)]).await.unwrap();
    let old_resolved = alert("old-resolved", &d, 1_000, 85.0);
    let old_open = alert("old-open", &d, 2_000, 85.0);
    let new_resolved = alert("new-resolved", &d, 900_000, 85.0);
    let mut events = Vec::new();
    for a in [&old_resolved, &old_open, &new_resolved] {
        events.push(event(AlertEventKind::Opened, a, a.opened_at.millis(), 85.0));
    }
    events.push(event(AlertEventKind::Resolved, &old_resolved, 3_000, 70.0));
    events.push(event(AlertEventKind::Resolved, &new_resolved, 901_000, 70.0));
    results.apply_alert_events(&events).await.unwrap();
    results.enqueue(&events[..2], Ts(1_000)).await.unwrap();
    results
        .mark_delivered(std::slice::from_ref(&events[0].id), Ts(1_500))
        .await
        .unwrap();

    use conformance::insights::{forecast, late};
    results
        .insert_forecasts(&[forecast(&d, "r", 1_000), forecast(&d, "r", 600_000)])
        .await
        .unwrap();
    let arrived_recently = late(&d, "recent", 0, 600_000, &["t"]);
    results
        .insert_late_readings(&[late(&d, "long-ago", 0, 1_000, &["t"]), arrived_recently.clone()])
        .await
        .unwrap();

    let deleted = results.prune(Ts(500_000)).await.unwrap();
    assert_eq!(
        deleted, 5,
        "one aggregate, one resolved alert, one delivered row, one forecast, one late reading"
    );
    let all = (Ts(i64::MIN), Ts(i64::MAX));
    assert_eq!(
        results.forecasts(Some(&d), all.0, all.1, 10).await.unwrap(),
        vec![forecast(&d, "r", 600_000)]
    );
    assert_eq!(
        results.late_readings(Some(&d), all.0, all.1, 10).await.unwrap(),
        vec![arrived_recently],
        "late readings go by when they arrived, not by their (old) timestamp"
    );
    let series = results
        .series(&d, "t", Ts(0), Ts(1_000_000), 60_000)
        .await
        .unwrap();
    assert_eq!(series.iter().map(|p| p.ts).collect::<Vec<_>>(), vec![Ts(600_000)]);
    assert!(results.alert("old-resolved").await.unwrap().is_none());
    assert!(
        results.alert("old-open").await.unwrap().is_some(),
        "open alerts stay"
    );
    assert!(results.alert("new-resolved").await.unwrap().is_some());
    let due = results.due(Ts(i64::MAX / 2), 10).await.unwrap();
    assert_eq!(
        due.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(),
        vec![events[1].id.as_str()],
        "pending stays"
    );
}
