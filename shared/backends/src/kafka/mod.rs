//! `KafkaBus`: the [`EventBus`] on Kafka (cargo feature `kafka`, rdkafka / librdkafka).
//!
//! * Topics (CONTRACT §3) `telemetry`, `insights`, `alerts` (optionally prefixed), key = device
//!   id, created by `ensure_topic` with `IOTSTREAM_KAFKA_PARTITIONS` partitions.
//! * Publishing: one idempotent producer (`acks=all`), every record of a call enqueued at once
//!   and awaited together, so a call costs one linger (1 ms) and a few produce requests.
//! * Consuming: [`KafkaConsumer`], a group member that commits only what the caller says is
//!   done (at-least-once).
//! * Lag: what KEDA's Kafka scaler reads, high watermark minus the group's committed offset per
//!   partition (the low watermark when the group has none), summed. rdkafka's admin client
//!   cannot list group offsets, so a group-less consumer per group asks with OffsetFetch
//!   (`committed_offsets`) and ListOffsets (`fetch_watermarks`).
//! * Dead letters: `<topic>.dead-letter`, the original key and value, and the reason, source
//!   topic, partition and offset in headers (`iotstream-dead-letter-*`).
//!
//! librdkafka calls that block (metadata, commits, seeks, offset queries) run on the blocking
//! pool, never on the async workers.

mod consumer;
mod settings;

pub use consumer::KafkaConsumer;
pub use settings::KafkaSettings;

use crate::connect::BackendUrls;
use async_trait::async_trait;
use iotstream_core::ports::{Consumer, Delivered, EventBus, PortResult, Record};
use iotstream_core::{PortError, PortErrorKind};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Timeout of metadata and offset queries.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(10);
/// Suffix of dead-letter topics.
pub const DEAD_LETTER_SUFFIX: &str = ".dead-letter";

/// The Kafka bus. Cheap to clone.
#[derive(Clone)]
pub struct KafkaBus {
    settings: Arc<KafkaSettings>,
    /// Replaced when librdkafka reports a fatal error (an idempotent producer whose sequence
    /// state the broker lost, e.g. after a broker restart): a fatal producer never recovers.
    producer: Arc<std::sync::RwLock<FutureProducer>>,
    admin: Arc<AdminClient<DefaultClientContext>>,
    /// One group-less-subscription consumer per group, for lag queries.
    lag_clients: Arc<Mutex<HashMap<String, Arc<BaseConsumer>>>>,
}

impl std::fmt::Debug for KafkaBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaBus")
            .field("settings", &self.settings)
            .finish()
    }
}

/// Maps a librdkafka error: transport, timeouts, missing leaders and full queues are retryable;
/// bad configuration and authentication are `Config`; anything else `Internal`.
pub(crate) fn kafka_err(what: &str, e: &KafkaError) -> PortError {
    use RDKafkaErrorCode as C;
    let code = e.rdkafka_error_code();
    let kind = match code {
        Some(C::MessageTimedOut | C::RequestTimedOut | C::OperationTimedOut | C::TimedOutQueue) => {
            PortErrorKind::Timeout
        }
        Some(
            C::BrokerTransportFailure
            | C::AllBrokersDown
            | C::QueueFull
            | C::LeaderNotAvailable
            | C::NotLeaderForPartition
            | C::NotCoordinator
            | C::CoordinatorNotAvailable
            | C::CoordinatorLoadInProgress
            | C::NetworkException
            | C::UnknownTopicOrPartition
            | C::NotEnoughReplicas
            | C::NotEnoughReplicasAfterAppend
            | C::RebalanceInProgress
            | C::IllegalGeneration
            | C::UnknownMemberId
            | C::State
            | C::WaitCache
            | C::Resolve
            | C::UnknownTopic
            | C::UnknownPartition
            | C::NoOffset
            | C::Fenced,
        ) => PortErrorKind::Unavailable,
        Some(
            C::Authentication
            | C::SaslAuthenticationFailed
            | C::TopicAuthorizationFailed
            | C::GroupAuthorizationFailed
            | C::ClusterAuthorizationFailed
            | C::InvalidArgument,
        ) => PortErrorKind::Config,
        Some(C::MessageSizeTooLarge | C::InvalidMessage) => PortErrorKind::Invalid,
        _ => match e {
            KafkaError::ClientCreation(_) | KafkaError::ClientConfig(..) => PortErrorKind::Config,
            KafkaError::Canceled => PortErrorKind::Unavailable,
            _ => PortErrorKind::Unavailable,
        },
    };
    PortError::new(kind, format!("kafka {what}: {e}"))
}

/// Runs a blocking librdkafka call on the blocking pool.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> PortResult<T> + Send + 'static,
) -> PortResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| PortError::internal(format!("kafka task failed: {e}")))?
}

impl KafkaBus {
    /// Creates the clients for `url` (`kafka://host:port[,host:port]`) and the `IOTSTREAM_KAFKA_*`
    /// settings of `urls`. Connects lazily: a broker that is down at start makes calls fail
    /// (retryably) until it is up.
    pub fn connect(url: &str, urls: &BackendUrls) -> PortResult<Self> {
        let settings = KafkaSettings::parse(url, urls)?;
        let producer: FutureProducer = settings
            .producer()
            .create()
            .map_err(|e| kafka_err("producer", &e))?;
        let admin: AdminClient<DefaultClientContext> = settings
            .client()
            .create()
            .map_err(|e| kafka_err("admin client", &e))?;
        Ok(KafkaBus {
            settings: Arc::new(settings),
            producer: Arc::new(std::sync::RwLock::new(producer)),
            admin: Arc::new(admin),
            lag_clients: Arc::default(),
        })
    }

    pub fn settings(&self) -> &KafkaSettings {
        &self.settings
    }

    /// Partition count of a broker topic (0 when it does not exist).
    async fn partitions(&self, client: Arc<BaseConsumer>, topic: String) -> PortResult<i32> {
        blocking(move || {
            let md = client
                .fetch_metadata(Some(&topic), QUERY_TIMEOUT)
                .map_err(|e| kafka_err("metadata", &e))?;
            Ok(md
                .topics()
                .iter()
                .find(|t| t.name() == topic && t.error().is_none())
                .map_or(0, |t| t.partitions().len() as i32))
        })
        .await
    }

    fn lag_client(&self, group: &str) -> PortResult<Arc<BaseConsumer>> {
        let mut clients = self.lag_clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = clients.get(group) {
            return Ok(c.clone());
        }
        let mut config = self.settings.client();
        config
            .set("group.id", self.settings.group(group))
            .set("enable.auto.commit", "false");
        let c: Arc<BaseConsumer> = Arc::new(config.create().map_err(|e| kafka_err("lag client", &e))?);
        clients.insert(group.to_owned(), c.clone());
        Ok(c)
    }

    /// Publishes prepared records and waits for every acknowledgement.
    async fn send_all(&self, topic: &str, records: &[(&str, &[u8], Option<OwnedHeaders>)]) -> PortResult<()> {
        let producer = self.producer.read().unwrap_or_else(|p| p.into_inner()).clone();
        let result = send_with(&producer, topic, records).await;
        if result.is_err() && producer.client().fatal_error().is_some() {
            self.replace_producer(&producer);
        }
        result
    }

    /// Swaps in a new producer after a fatal error (once, whoever sees it first). The records
    /// of the failed call were not acknowledged, so their callers retry: the worst case is a
    /// duplicate on the topic, which consumers absorb.
    fn replace_producer(&self, failed: &FutureProducer) {
        let mut current = self.producer.write().unwrap_or_else(|p| p.into_inner());
        if !std::ptr::eq(current.client().native_ptr(), failed.client().native_ptr()) {
            return;
        }
        match self.settings.producer().create::<FutureProducer>() {
            Ok(fresh) => {
                tracing::warn!("kafka producer hit a fatal error; replaced it with a new one");
                *current = fresh;
            }
            Err(e) => tracing::error!(error = %e, "cannot recreate the kafka producer"),
        }
    }
}

async fn send_with(
    producer: &FutureProducer,
    topic: &str,
    records: &[(&str, &[u8], Option<OwnedHeaders>)],
) -> PortResult<()> {
    let mut pending = Vec::with_capacity(records.len());
    for (key, value, headers) in records {
        let mut record = FutureRecord::to(topic).key(*key).payload(*value);
        if let Some(h) = headers {
            record = record.headers(h.clone());
        }
        loop {
            match producer.send_result(record) {
                Ok(delivery) => {
                    pending.push(delivery);
                    break;
                }
                // The local queue is full: wait for what is in flight, then try again.
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    if let Some(first) = pending.pop() {
                        check(first.await)?;
                    } else {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
                Err((e, _)) => return Err(kafka_err("publish", &e)),
            }
        }
    }
    for d in futures::future::join_all(pending).await {
        check(d)?;
    }
    Ok(())
}

fn check(
    delivery: Result<
        rdkafka::producer::future_producer::OwnedDeliveryResult,
        futures::channel::oneshot::Canceled,
    >,
) -> PortResult<()> {
    match delivery {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((e, _))) => Err(kafka_err("publish", &e)),
        Err(_) => Err(PortError::unavailable("kafka publish: the producer was closed")),
    }
}

#[async_trait]
impl EventBus for KafkaBus {
    async fn ensure_topic(&self, topic: &str) -> PortResult<()> {
        let name = self.settings.topic(topic);
        let new = NewTopic::new(
            &name,
            self.settings.partitions,
            TopicReplication::Fixed(self.settings.replication),
        );
        let opts = AdminOptions::new().operation_timeout(Some(QUERY_TIMEOUT));
        let results = self
            .admin
            .create_topics([&new], &opts)
            .await
            .map_err(|e| kafka_err("create topic", &e))?;
        for r in results {
            match r {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((t, code)) => {
                    return Err(kafka_err(
                        &format!("create topic {t}"),
                        &KafkaError::AdminOp(code),
                    ));
                }
            }
        }
        // Creation is asynchronous on the broker: wait until its metadata shows the topic, so a
        // subscribe or publish right after finds it.
        let client = self.lag_client("iotstream-metadata")?;
        for _ in 0..100 {
            if self.partitions(client.clone(), name.clone()).await? > 0 {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(PortError::unavailable(format!(
            "kafka topic {name} did not appear in metadata"
        )))
    }

    async fn publish(&self, topic: &str, records: &[Record]) -> PortResult<()> {
        if records.is_empty() {
            return Ok(());
        }
        let name = self.settings.topic(topic);
        let prepared: Vec<(&str, &[u8], Option<OwnedHeaders>)> = records
            .iter()
            .map(|r| (r.key.as_str(), r.value.as_slice(), None))
            .collect();
        self.send_all(&name, &prepared).await
    }

    async fn subscribe(&self, group: &str, topic: &str) -> PortResult<Box<dyn Consumer>> {
        Ok(Box::new(KafkaConsumer::subscribe(
            self.settings.clone(),
            group,
            topic,
        )?))
    }

    async fn lag(&self, group: &str, topic: &str) -> PortResult<u64> {
        let name = self.settings.topic(topic);
        let client = self.lag_client(group)?;
        let partitions = self.partitions(client.clone(), name.clone()).await?;
        blocking(move || {
            let mut tpl = TopicPartitionList::new();
            for p in 0..partitions {
                tpl.add_partition(&name, p);
            }
            let committed = client
                .committed_offsets(tpl, QUERY_TIMEOUT)
                .map_err(|e| kafka_err("committed offsets", &e))?;
            let mut lag = 0u64;
            for p in 0..partitions {
                let (low, high) = client
                    .fetch_watermarks(&name, p, QUERY_TIMEOUT)
                    .map_err(|e| kafka_err("watermarks", &e))?;
                let done = match committed.find_partition(&name, p).map(|e| e.offset()) {
                    Some(Offset::Offset(o)) => o.max(low),
                    _ => low,
                };
                lag += (high - done).max(0) as u64;
            }
            Ok(lag)
        })
        .await
    }

    async fn dead_letter(&self, record: &Delivered, reason: &str) -> PortResult<()> {
        let topic = format!("{}{DEAD_LETTER_SUFFIX}", record.topic);
        self.ensure_topic(&topic).await?;
        let partition = record.partition.to_string();
        let offset = record.offset.to_string();
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "iotstream-dead-letter-reason",
                value: Some(reason),
            })
            .insert(Header {
                key: "iotstream-dead-letter-topic",
                value: Some(record.topic.as_str()),
            })
            .insert(Header {
                key: "iotstream-dead-letter-partition",
                value: Some(partition.as_str()),
            })
            .insert(Header {
                key: "iotstream-dead-letter-offset",
                value: Some(offset.as_str()),
            });
        let name = self.settings.topic(&topic);
        self.send_all(
            &name,
            &[(record.key.as_str(), record.value.as_slice(), Some(headers))],
        )
        .await
    }
}
