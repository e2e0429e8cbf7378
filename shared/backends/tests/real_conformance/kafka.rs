//! The Kafka engine's own checks (a module of `real_conformance`): the bus conformance suite,
//! the split sink over Kafka, dead letters with headers, a broker that is down, and a fenced
//! consumer that replaces itself.

use super::*;
use iotstream_backends::SplitSink;
use iotstream_backends::embedded::EmbeddedTelemetryStore;
use iotstream_backends::kafka::KafkaBus;
use iotstream_core::ports::{Delivered, Record, TelemetryStore};
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rdkafka::message::{Headers, Message};
use std::collections::BTreeSet;
use std::time::Duration;

fn bus() -> KafkaBus {
    KafkaBus::connect(&service("IOTSTREAM_TEST_BUS_URL"), &BackendUrls::default()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_bus_conforms() {
    conformance::bus::run(Arc::new(bus())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_sink_over_kafka_conforms() {
    let dir = tempfile::TempDir::new().unwrap();
    let prefix = format!("{}.", unique("sink"));
    let urls = BackendUrls {
        settings: [("IOTSTREAM_KAFKA_TOPIC_PREFIX".to_owned(), prefix)].into(),
        ..BackendUrls::default()
    };
    let bus: Arc<dyn EventBus> =
        Arc::new(KafkaBus::connect(&service("IOTSTREAM_TEST_BUS_URL"), &urls).unwrap());
    let store: Arc<dyn TelemetryStore> = Arc::new(EmbeddedTelemetryStore::open(dir.path()).await.unwrap());
    let sink = Arc::new(SplitSink {
        store: store.clone(),
        bus: bus.clone(),
    });
    conformance::sink::run(sink, store, bus).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_carry_the_reason_and_origin_in_headers() {
    let bus = bus();
    let topic = unique("dlq-src");
    let record = Delivered {
        topic: topic.clone(),
        partition: 2,
        offset: 41,
        key: "dev-1".into(),
        value: b"not json".to_vec(),
    };
    bus.dead_letter(&record, "expected value at line 1")
        .await
        .unwrap();
    let consumer: StreamConsumer = bus
        .settings()
        .consumer(&unique("dlq-reader"), "dlq")
        .create()
        .unwrap();
    consumer.subscribe(&[&format!("{topic}.dead-letter")]).unwrap();
    let m = tokio::time::timeout(Duration::from_secs(20), consumer.recv())
        .await
        .expect("the dead letter arrives")
        .unwrap();
    assert_eq!(m.payload(), Some(&b"not json"[..]));
    assert_eq!(m.key(), Some(&b"dev-1"[..]));
    let headers = m.headers().expect("headers");
    let get = |name: &str| {
        headers
            .iter()
            .find(|h| h.key == name)
            .and_then(|h| h.value)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    assert_eq!(
        get("iotstream-dead-letter-reason").as_deref(),
        Some("expected value at line 1")
    );
    assert_eq!(get("iotstream-dead-letter-topic"), Some(topic));
    assert_eq!(get("iotstream-dead-letter-partition").as_deref(), Some("2"));
    assert_eq!(get("iotstream-dead-letter-offset").as_deref(), Some("41"));
}

/// librdkafka makes a static member that the broker fences (FENCED_INSTANCE_ID, e.g. after
/// its session timed out during a broker stall) unusable for good; the consumer replaces
/// it and reads on from where it stood. On librdkafka's mock cluster, which can fail the
/// member's heartbeats on demand.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_consumer_replaces_itself_and_reads_on() {
    use rdkafka::mocking::MockCluster;
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("fenced", 2, 1).unwrap();
    // Heartbeats 3 s apart in a 6 s session: see the handover below.
    let urls = BackendUrls {
        settings: [
            ("IOTSTREAM_KAFKA_INSTANCE_ID", "fenced"),
            ("IOTSTREAM_KAFKA_PROPERTY_HEARTBEAT_INTERVAL_MS", "3000"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .into(),
        ..BackendUrls::default()
    };
    let bus = KafkaBus::connect(&format!("kafka://{}", cluster.bootstrap_servers()), &urls).unwrap();
    let send = |from: usize| {
        let records: Vec<Record> = (from..from + 5)
            .map(|i| Record {
                key: format!("dev-{i}"),
                value: format!("r{i}").into_bytes(),
            })
            .collect();
        let bus = bus.clone();
        async move { bus.publish("fenced", &records).await.unwrap() }
    };
    let values = |records: Vec<Delivered>| -> BTreeSet<String> {
        records
            .into_iter()
            .map(|d| String::from_utf8(d.value).unwrap())
            .collect()
    };
    let mut consumer = bus.subscribe("g", "fenced").await.unwrap();
    send(0).await;
    let first = conformance::bus::drain(consumer.as_mut(), 5).await;
    assert_eq!(values(first), (0..5).map(|i| format!("r{i}")).collect());

    cluster.request_errors(
        RDKafkaApiKey::Heartbeat,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_FENCED_INSTANCE_ID],
    );
    let deadline = std::time::Instant::now() + conformance::bus::PATIENCE;
    let err = loop {
        assert!(
            std::time::Instant::now() < deadline,
            "the member was never fenced"
        );
        if let Err(e) = consumer.poll(10, Duration::from_millis(200)).await {
            break e;
        }
    };
    assert!(
        err.is_retryable() && err.to_string().to_lowercase().contains("fatal"),
        "a retryable error that says the consumer hit a fatal error: {err}"
    );

    // Nothing was committed: the new member is given the partitions at the group's start,
    // and still returns only what this consumer had not returned yet.
    // A real broker lets the new member take the old one's place at once (same instance id).
    // The mock cluster has no static membership: the old member stays in the group until its
    // session times out, 6 s after its last good heartbeat, and the group elects a leader 5 s
    // after the new member joined. With heartbeats 1.5 s apart the old member was sometimes
    // still there at the election, which costs another round (10 s, and over 20 s once in
    // CI); 3 s apart, it is gone 3-4 s after the fence, before the election. The patience
    // stays generous all the same.
    send(5).await;
    let after = conformance::bus::drain_within(consumer.as_mut(), 5, Duration::from_secs(60)).await;
    assert_eq!(values(after), (5..10).map(|i| format!("r{i}")).collect());
}

#[tokio::test]
async fn a_broker_that_is_down_fails_publish_retryably() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let urls = BackendUrls {
        settings: [(
            "IOTSTREAM_KAFKA_PROPERTY_MESSAGE_TIMEOUT_MS".to_owned(),
            "1500".to_owned(),
        )]
        .into(),
        ..BackendUrls::default()
    };
    let bus = KafkaBus::connect(&format!("kafka://127.0.0.1:{port}"), &urls).unwrap();
    let err = bus
        .publish(
            "t",
            &[iotstream_core::ports::Record {
                key: "k".into(),
                value: b"v".to_vec(),
            }],
        )
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err}");
}
