//! Kafka client settings: the bootstrap servers from `kafka://host:port[,host:port]` and the
//! `IOTSTREAM_KAFKA_*` settings, turned into librdkafka properties.
//!
//! | setting | default | librdkafka |
//! |---|---|---|
//! | `IOTSTREAM_KAFKA_SECURITY_PROTOCOL` | `plaintext` (`sasl_ssl` with a SASL password) | `security.protocol` |
//! | `IOTSTREAM_KAFKA_SASL_MECHANISM` | `PLAIN` | `sasl.mechanism` (`PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512`, `OAUTHBEARER`) |
//! | `IOTSTREAM_KAFKA_SASL_USERNAME`, `IOTSTREAM_KAFKA_SASL_PASSWORD` | none | `sasl.username`, `sasl.password` |
//! | `IOTSTREAM_KAFKA_EVENTHUBS_CONNECTION_STRING` | none | Event Hubs: `SASL_SSL`, `PLAIN`, user `$ConnectionString` |
//! | `IOTSTREAM_KAFKA_SSL_CA_LOCATION` | system store | `ssl.ca.location` |
//! | `IOTSTREAM_KAFKA_TOPIC_PREFIX` | none | prefixed to `telemetry`, `insights`, `alerts` |
//! | `IOTSTREAM_KAFKA_GROUP_PREFIX` | none | prefixed to the consumer groups (two pipelines sharing a cluster) |
//! | `IOTSTREAM_KAFKA_INSTANCE_ID` | none | static group membership: a restarted member with the same id gets its partitions back at once |
//! | `IOTSTREAM_KAFKA_PARTITIONS`, `IOTSTREAM_KAFKA_REPLICATION` | 4, 1 | topics created by `migrate`/`up` |
//! | `IOTSTREAM_KAFKA_LINGER_MS` | 1 | `linger.ms` |
//! | `IOTSTREAM_KAFKA_COMPRESSION` | `none` | `compression.type` (`lz4`, `zstd`, `gzip`) |
//! | `IOTSTREAM_KAFKA_PROPERTY_<NAME>` | | any librdkafka property, `_` for `.` and `__` for `_` (e.g. `..._PROPERTY_SOCKET_KEEPALIVE_ENABLE=true`, `..._PROPERTY_LOG__LEVEL=7`) |
//!
//! A `PROPERTY` setting wins over iotstream's own tuning (`session.timeout.ms`,
//! `fetch.wait.max.ms`, `message.timeout.ms`, ...), except for the properties in [`PINNED`]: those
//! carry a guarantee (offsets committed only after the sinks hold the data, every acknowledged
//! reading on every in-sync replica once) or have their own setting above, and setting one is a
//! configuration error that says why.
//!
//! Confluent Cloud: `SASL_SSL` + `PLAIN` with the API key and secret as username and password.
//! Secrets are never logged: [`KafkaSettings`]' `Debug` shows property names only.

use crate::connect::BackendUrls;
use iotstream_core::PortError;
use rdkafka::ClientConfig;

/// librdkafka properties a `PROPERTY` setting may not change, each with the reason given.
pub const PINNED: &[(&str, &str)] = &[
    (
        "enable.auto.commit",
        "iotstream commits offsets itself, after the sinks hold the data",
    ),
    (
        "enable.auto.offset.store",
        "iotstream commits offsets itself, after the sinks hold the data",
    ),
    (
        "auto.offset.reset",
        "a new consumer group starts at the earliest record, so no acknowledged reading is skipped",
    ),
    (
        "enable.partition.eof",
        "iotstream's consumers do not read end-of-partition events",
    ),
    (
        "enable.idempotence",
        "a retried publish must never duplicate or reorder readings",
    ),
    ("acks", "an acknowledged reading is on every in-sync replica"),
    (
        "request.required.acks",
        "an acknowledged reading is on every in-sync replica",
    ),
    (
        "bootstrap.servers",
        "the bus URL (kafka://host:port,...) names the brokers",
    ),
    (
        "metadata.broker.list",
        "the bus URL (kafka://host:port,...) names the brokers",
    ),
    ("group.id", "use IOTSTREAM_KAFKA_GROUP_PREFIX"),
    ("group.instance.id", "use IOTSTREAM_KAFKA_INSTANCE_ID"),
    ("security.protocol", "use IOTSTREAM_KAFKA_SECURITY_PROTOCOL"),
    ("sasl.mechanism", "use IOTSTREAM_KAFKA_SASL_MECHANISM"),
    ("sasl.mechanisms", "use IOTSTREAM_KAFKA_SASL_MECHANISM"),
    ("sasl.username", "use IOTSTREAM_KAFKA_SASL_USERNAME"),
    ("sasl.password", "use IOTSTREAM_KAFKA_SASL_PASSWORD"),
    ("ssl.ca.location", "use IOTSTREAM_KAFKA_SSL_CA_LOCATION"),
    ("linger.ms", "use IOTSTREAM_KAFKA_LINGER_MS"),
    ("queue.buffering.max.ms", "use IOTSTREAM_KAFKA_LINGER_MS"),
    ("compression.type", "use IOTSTREAM_KAFKA_COMPRESSION"),
    ("compression.codec", "use IOTSTREAM_KAFKA_COMPRESSION"),
];

/// Client properties shared by the producer, consumers and admin client.
#[derive(Clone)]
pub struct KafkaSettings {
    /// Connection properties (brokers, security), from the URL and the dedicated settings.
    pub properties: Vec<(String, String)>,
    /// `IOTSTREAM_KAFKA_PROPERTY_*`: applied last, over iotstream's own tuning.
    pub overrides: Vec<(String, String)>,
    pub topic_prefix: String,
    pub group_prefix: String,
    /// Static group membership (`group.instance.id` = `<instance>.<group>.<topic>`): a member
    /// restarted with the same instance id takes its partitions back at once, without a
    /// rebalance (e.g. the pod name of a StatefulSet).
    pub instance_id: Option<String>,
    pub partitions: i32,
    pub replication: i32,
    pub linger_ms: u32,
    pub compression: String,
}

impl std::fmt::Debug for KafkaSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = (self.properties.iter().chain(&self.overrides))
            .map(|(k, _)| k.as_str())
            .collect();
        f.debug_struct("KafkaSettings")
            .field("properties", &names)
            .field("topic_prefix", &self.topic_prefix)
            .field("partitions", &self.partitions)
            .finish()
    }
}

fn number<T: std::str::FromStr>(urls: &BackendUrls, name: &str, default: T) -> Result<T, PortError> {
    match urls.setting(name) {
        None => Ok(default),
        Some(v) => v
            .parse()
            .map_err(|_| PortError::config(format!("{name} must be a whole number, not {v:?}"))),
    }
}

impl KafkaSettings {
    /// Parses the URL and settings.
    pub fn parse(url: &str, urls: &BackendUrls) -> Result<KafkaSettings, PortError> {
        let servers = url
            .trim()
            .strip_prefix("kafka://")
            .ok_or_else(|| PortError::config("bus URL must look like kafka://host:port[,host:port]"))?
            .trim_end_matches('/');
        if servers.is_empty() || servers.split(',').any(|s| !s.contains(':')) {
            return Err(PortError::config(
                "bus URL must name brokers as host:port, like kafka://broker-1:9092,broker-2:9092",
            ));
        }
        let mut props = vec![("bootstrap.servers".to_owned(), servers.to_owned())];
        let mut protocol = urls
            .setting("IOTSTREAM_KAFKA_SECURITY_PROTOCOL")
            .map(str::to_owned);
        let mut mechanism = urls.setting("IOTSTREAM_KAFKA_SASL_MECHANISM").map(str::to_owned);
        let mut username = urls.setting("IOTSTREAM_KAFKA_SASL_USERNAME").map(str::to_owned);
        let mut password = urls.setting("IOTSTREAM_KAFKA_SASL_PASSWORD").map(str::to_owned);
        if let Some(cs) = urls.setting("IOTSTREAM_KAFKA_EVENTHUBS_CONNECTION_STRING") {
            protocol.get_or_insert_with(|| "sasl_ssl".into());
            mechanism.get_or_insert_with(|| "PLAIN".into());
            username = Some("$ConnectionString".into());
            password = Some(cs.to_owned());
        }
        if password.is_some() {
            protocol.get_or_insert_with(|| "sasl_ssl".into());
            mechanism.get_or_insert_with(|| "PLAIN".into());
        }
        let protocol = protocol
            .unwrap_or_else(|| "plaintext".into())
            .to_ascii_lowercase();
        if !["plaintext", "ssl", "sasl_plaintext", "sasl_ssl"].contains(&protocol.as_str()) {
            return Err(PortError::config(format!(
                "IOTSTREAM_KAFKA_SECURITY_PROTOCOL {protocol:?}: use plaintext, ssl, sasl_plaintext or sasl_ssl"
            )));
        }
        if protocol.starts_with("sasl") {
            let mechanism = mechanism.unwrap_or_else(|| "PLAIN".into()).to_ascii_uppercase();
            if mechanism != "OAUTHBEARER" && (username.is_none() || password.is_none()) {
                return Err(PortError::config(format!(
                    "Kafka SASL {mechanism} needs IOTSTREAM_KAFKA_SASL_USERNAME and IOTSTREAM_KAFKA_SASL_PASSWORD"
                )));
            }
            props.push(("sasl.mechanism".into(), mechanism));
            if let Some(u) = username {
                props.push(("sasl.username".into(), u));
            }
            if let Some(p) = password {
                props.push(("sasl.password".into(), p));
            }
        }
        props.push(("security.protocol".into(), protocol));
        if let Some(ca) = urls.setting("IOTSTREAM_KAFKA_SSL_CA_LOCATION") {
            props.push(("ssl.ca.location".into(), ca.to_owned()));
        }
        let mut overrides = Vec::new();
        for (k, v) in &urls.settings {
            if let Some(name) = k.strip_prefix("IOTSTREAM_KAFKA_PROPERTY_") {
                let name = name
                    .to_ascii_lowercase()
                    .replace("__", "\0")
                    .replace('_', ".")
                    .replace('\0', "_");
                if let Some((_, why)) = PINNED.iter().find(|(p, _)| *p == name) {
                    return Err(PortError::config(format!(
                        "{k} sets the Kafka property {name}, which iotstream does not let a setting change: {why}"
                    )));
                }
                overrides.push((name, v.clone()));
            }
        }
        let compression = urls
            .setting("IOTSTREAM_KAFKA_COMPRESSION")
            .unwrap_or("none")
            .to_ascii_lowercase();
        if !["none", "gzip", "snappy", "lz4", "zstd"].contains(&compression.as_str()) {
            return Err(PortError::config(format!(
                "IOTSTREAM_KAFKA_COMPRESSION {compression:?}: use none, gzip, snappy, lz4 or zstd"
            )));
        }
        let partitions = number(urls, "IOTSTREAM_KAFKA_PARTITIONS", 4)?;
        let replication = number(urls, "IOTSTREAM_KAFKA_REPLICATION", 1)?;
        if partitions < 1 || replication < 1 {
            return Err(PortError::config(
                "IOTSTREAM_KAFKA_PARTITIONS and IOTSTREAM_KAFKA_REPLICATION must be at least 1",
            ));
        }
        Ok(KafkaSettings {
            properties: props,
            overrides,
            topic_prefix: urls
                .setting("IOTSTREAM_KAFKA_TOPIC_PREFIX")
                .unwrap_or("")
                .to_owned(),
            group_prefix: urls
                .setting("IOTSTREAM_KAFKA_GROUP_PREFIX")
                .unwrap_or("")
                .to_owned(),
            instance_id: urls.setting("IOTSTREAM_KAFKA_INSTANCE_ID").map(str::to_owned),
            partitions,
            replication,
            linger_ms: number(urls, "IOTSTREAM_KAFKA_LINGER_MS", 1)?,
            compression,
        })
    }

    /// A client configuration with the shared properties.
    pub fn client(&self) -> ClientConfig {
        self.tuned(ClientConfig::new())
    }

    /// `c` with the connection properties, then the `PROPERTY` overrides: what every client
    /// is made of, `c` holding iotstream's tuning for its kind.
    fn tuned(&self, mut c: ClientConfig) -> ClientConfig {
        // Errors only by default: librdkafka warns on every reconnect attempt while a broker
        // is down (IOTSTREAM_KAFKA_PROPERTY_LOG__LEVEL=7 and ..._DEBUG=cgrp,fetch to diagnose).
        c.set("log_level", "3");
        for (k, v) in self.properties.iter().chain(&self.overrides) {
            c.set(k, v);
        }
        c
    }

    /// The producer: idempotent (no duplicates or reordering from retries), acks from every
    /// in-sync replica, batches of up to 1 MB lingering `linger_ms` (1 ms: callers hand over whole
    /// batches already — ingest's group commit, analyze's output — so linger only has to coalesce
    /// concurrent callers; each extra millisecond is added to every hop of the alert path; the
    /// measurements are in BENCHMARKS.md), 30 s to deliver before publish fails (ingest then
    /// answers 503 and nothing is acknowledged). Keys are hashed with murmur2 like the Java
    /// client, so a device lands on the same partition whichever client published it.
    pub fn producer(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", self.linger_ms.to_string())
            .set("batch.size", "1000000")
            .set("batch.num.messages", "10000")
            .set("queue.buffering.max.messages", "1000000")
            .set("message.timeout.ms", "30000")
            .set("compression.type", &self.compression)
            .set("partitioner", "murmur2_random");
        self.tuned(c)
    }

    /// A group member: manual commits only, from the earliest offset when the group has none,
    /// short fetch waits (the alert path) and a short session (a killed member's partitions
    /// move within seconds).
    pub fn consumer(&self, group: &str, topic: &str) -> ClientConfig {
        let mut c = ClientConfig::new();
        if let Some(id) = &self.instance_id {
            c.set("group.instance.id", format!("{id}.{group}.{topic}"));
        }
        c.set("group.id", self.group(group))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            .set("fetch.wait.max.ms", "20")
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "1500")
            .set("max.poll.interval.ms", "15000")
            .set("topic.metadata.refresh.interval.ms", "5000");
        self.tuned(c)
    }

    /// The name of a consumer group on the broker.
    pub fn group(&self, name: &str) -> String {
        format!("{}{name}", self.group_prefix)
    }

    /// The name of a topic on the broker.
    pub fn topic(&self, name: &str) -> String {
        format!("{}{name}", self.topic_prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn urls(pairs: &[(&str, &str)]) -> BackendUrls {
        BackendUrls {
            settings: pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..BackendUrls::default()
        }
    }

    fn prop<'a>(s: &'a KafkaSettings, name: &str) -> Option<&'a str> {
        (s.properties.iter().chain(&s.overrides))
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn plaintext_by_default() {
        let s = KafkaSettings::parse("kafka://a:9092,b:9092", &urls(&[])).unwrap();
        assert_eq!(prop(&s, "bootstrap.servers"), Some("a:9092,b:9092"));
        assert_eq!(prop(&s, "security.protocol"), Some("plaintext"));
        assert_eq!((s.partitions, s.replication), (4, 1));
    }

    #[test]
    fn event_hubs_connection_string_sets_sasl_ssl_and_stays_out_of_debug() {
        let cs = "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=k;SharedAccessKey=SECRET";
        let s = KafkaSettings::parse(
            "kafka://ns.servicebus.windows.net:9093",
            &urls(&[("IOTSTREAM_KAFKA_EVENTHUBS_CONNECTION_STRING", cs)]),
        )
        .unwrap();
        assert_eq!(prop(&s, "security.protocol"), Some("sasl_ssl"));
        assert_eq!(prop(&s, "sasl.mechanism"), Some("PLAIN"));
        assert_eq!(prop(&s, "sasl.username"), Some("$ConnectionString"));
        assert_eq!(prop(&s, "sasl.password"), Some(cs));
        assert!(!format!("{s:?}").contains("SECRET"));
    }

    /// librdkafka refuses `sasl_ssl` when it was built without TLS ("OpenSSL not available at
    /// build time"): the Event Hubs and Confluent settings must make clients it accepts.
    #[test]
    fn tls_settings_make_clients_librdkafka_accepts() {
        use rdkafka::consumer::BaseConsumer;
        use rdkafka::producer::BaseProducer;
        let cs = "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=k;SharedAccessKey=SECRET";
        for settings in [
            vec![("IOTSTREAM_KAFKA_EVENTHUBS_CONNECTION_STRING", cs)],
            vec![
                ("IOTSTREAM_KAFKA_SASL_USERNAME", "KEY"),
                ("IOTSTREAM_KAFKA_SASL_PASSWORD", "SECRET"),
                ("IOTSTREAM_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512"),
            ],
            vec![("IOTSTREAM_KAFKA_SECURITY_PROTOCOL", "ssl")],
        ] {
            let s = KafkaSettings::parse("kafka://127.0.0.1:9", &urls(&settings)).unwrap();
            if let Err(e) = s.producer().create::<BaseProducer>() {
                panic!("producer with {settings:?}: {e}");
            }
            if let Err(e) = s.consumer("analyze", "telemetry").create::<BaseConsumer>() {
                panic!("consumer with {settings:?}: {e}");
            }
        }
    }

    #[test]
    fn confluent_style_sasl_and_passthrough_properties() {
        let s = KafkaSettings::parse(
            "kafka://pkc.confluent.cloud:9092",
            &urls(&[
                ("IOTSTREAM_KAFKA_SASL_USERNAME", "KEY"),
                ("IOTSTREAM_KAFKA_SASL_PASSWORD", "SECRET"),
                ("IOTSTREAM_KAFKA_PROPERTY_CLIENT_ID", "iot"),
                ("IOTSTREAM_KAFKA_PROPERTY_LOG__LEVEL", "7"),
                ("IOTSTREAM_KAFKA_TOPIC_PREFIX", "prod."),
            ]),
        )
        .unwrap();
        assert_eq!(prop(&s, "security.protocol"), Some("sasl_ssl"));
        assert_eq!(prop(&s, "client.id"), Some("iot"));
        assert_eq!(prop(&s, "log_level"), Some("7"));
        assert_eq!(s.topic("telemetry"), "prod.telemetry");
    }

    #[test]
    fn a_property_setting_wins_over_the_tuning_of_every_client() {
        let s = KafkaSettings::parse(
            "kafka://a:9092",
            &urls(&[
                ("IOTSTREAM_KAFKA_PROPERTY_SESSION_TIMEOUT_MS", "45000"),
                ("IOTSTREAM_KAFKA_PROPERTY_FETCH_WAIT_MAX_MS", "100"),
                ("IOTSTREAM_KAFKA_PROPERTY_MESSAGE_TIMEOUT_MS", "1500"),
                ("IOTSTREAM_KAFKA_PROPERTY_LOG__LEVEL", "7"),
            ]),
        )
        .unwrap();
        let consumer = s.consumer("analyze", "telemetry");
        assert_eq!(consumer.get("session.timeout.ms"), Some("45000"));
        assert_eq!(consumer.get("fetch.wait.max.ms"), Some("100"));
        assert_eq!(
            consumer.get("heartbeat.interval.ms"),
            Some("1500"),
            "the rest stays"
        );
        assert_eq!(consumer.get("enable.auto.commit"), Some("false"));
        let producer = s.producer();
        assert_eq!(producer.get("message.timeout.ms"), Some("1500"));
        assert_eq!(producer.get("acks"), Some("all"));
        for c in [consumer, producer, s.client()] {
            assert_eq!(c.get("log_level"), Some("7"));
            assert_eq!(c.get("bootstrap.servers"), Some("a:9092"));
        }
    }

    #[test]
    fn a_property_setting_cannot_change_a_pinned_property_and_is_told_why() {
        for (setting, says) in [
            (
                "IOTSTREAM_KAFKA_PROPERTY_ENABLE_AUTO_COMMIT",
                "after the sinks hold the data",
            ),
            ("IOTSTREAM_KAFKA_PROPERTY_ACKS", "every in-sync replica"),
            (
                "IOTSTREAM_KAFKA_PROPERTY_AUTO_OFFSET_RESET",
                "no acknowledged reading is skipped",
            ),
            (
                "IOTSTREAM_KAFKA_PROPERTY_GROUP_ID",
                "IOTSTREAM_KAFKA_GROUP_PREFIX",
            ),
            ("IOTSTREAM_KAFKA_PROPERTY_LINGER_MS", "IOTSTREAM_KAFKA_LINGER_MS"),
            (
                "IOTSTREAM_KAFKA_PROPERTY_SASL_PASSWORD",
                "IOTSTREAM_KAFKA_SASL_PASSWORD",
            ),
        ] {
            let e = KafkaSettings::parse("kafka://a:9092", &urls(&[(setting, "x")])).unwrap_err();
            assert_eq!(e.kind, iotstream_core::PortErrorKind::Config, "{setting}");
            let msg = e.to_string();
            assert!(msg.contains(setting) && msg.contains(says), "{msg}");
            assert!(
                !msg.contains("\"x\""),
                "the value is never echoed (it may be a secret): {msg}"
            );
        }
    }

    #[test]
    fn bad_settings_are_config_errors() {
        for (url, pairs) in [
            ("kafka://", vec![]),
            ("kafka://host-without-port", vec![]),
            ("kafka://a:1", vec![("IOTSTREAM_KAFKA_SECURITY_PROTOCOL", "tls")]),
            (
                "kafka://a:1",
                vec![("IOTSTREAM_KAFKA_SECURITY_PROTOCOL", "sasl_ssl")],
            ),
            ("kafka://a:1", vec![("IOTSTREAM_KAFKA_PARTITIONS", "zero")]),
            ("kafka://a:1", vec![("IOTSTREAM_KAFKA_PARTITIONS", "0")]),
            ("kafka://a:1", vec![("IOTSTREAM_KAFKA_COMPRESSION", "brotli")]),
        ] {
            let e = KafkaSettings::parse(url, &urls(&pairs)).unwrap_err();
            assert_eq!(e.kind, iotstream_core::PortErrorKind::Config, "{url} {pairs:?}");
        }
    }
}
