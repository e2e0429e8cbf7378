//! The Kafka engine's own checks (a module of `real_conformance`): the bus conformance suite,
//! the split sink over Kafka, dead letters with headers, and a broker that is down.

use super::*;
use iotstream_backends::SplitSink;
use iotstream_backends::embedded::EmbeddedTelemetryStore;
use iotstream_backends::kafka::KafkaBus;
use iotstream_core::ports::{Delivered, TelemetryStore};
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rdkafka::message::{Headers, Message};
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
