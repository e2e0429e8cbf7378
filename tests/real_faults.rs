//! Faults on the real services: PostgreSQL and Redis cut off mid-stream (through a TCP proxy),
//! the Kafka broker restarted mid-stream, and the workers process killed with SIGKILL mid-batch.
//! In every case: nothing acknowledged is lost, nothing is analysed twice, no alert is opened
//! twice, and no webhook event is lost.
//!
//! Needs `scripts/services` (run by `scripts/test`); a missing service FAILS the test.
#![cfg(all(
    feature = "integration",
    feature = "kafka",
    feature = "postgres",
    feature = "redis"
))]

mod common;

use common::real::*;
use common::workload::*;
use common::*;
use serde_json::json;
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

/// kill -9 of the process running analyze, process and notify, twice, while devices send
/// through a separate ingest process.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_killed_9_mid_batch_loses_nothing_and_duplicates_no_alert() {
    let mut env = RealEnv::new("kill");
    let dir = tempfile::tempdir().unwrap();
    env.set("IOTSTREAM_RULES", rules_file(dir.path()));
    // Static membership: the restarted workers take their partitions back at once. (noida-db
    // 0.2.3 never expires a killed member that led the group, so without it the group would
    // wait forever; Kafka evicts it after the 6 s session timeout.)
    env.set("IOTSTREAM_KAFKA_INSTANCE_ID", "workers".into());
    let (receiver, hook) = Receiver::start(0).await;
    let front = Server::run(&["ingest", "web"], dir.path(), None, &env.env()).await;
    let mut workers = Server::run(
        &["analyze", "process", "notify"],
        dir.path(),
        Some(&hook),
        &env.env(),
    )
    .await;
    let devices: Vec<String> = (0..3).map(|i| env.device(&format!("k{i}"))).collect();
    let start = start_ms();
    let total = 150;
    let failures = Arc::new(AtomicUsize::new(0));
    let senders: Vec<_> = devices
        .iter()
        .map(|d| {
            let token = env.provision(dir.path(), d);
            tokio::spawn(send_all(
                front.url.clone(),
                d.clone(),
                token,
                start,
                total,
                failures.clone(),
            ))
        })
        .collect();
    let mut kills = Vec::new();
    for pause in [700, 1100] {
        tokio::time::sleep(Duration::from_millis(pause)).await;
        let killed = std::time::Instant::now();
        workers.kill9();
        workers = Server::run(
            &["analyze", "process", "notify"],
            dir.path(),
            Some(&hook),
            &env.env(),
        )
        .await;
        kills.push((killed, std::time::Instant::now()));
    }
    for s in senders {
        s.await.unwrap();
    }
    verify(&env, &devices, start, total, &receiver, &kills).await;
}

/// PostgreSQL cut off mid-stream: ingest keeps accepting (the sink is Kafka + the store) or
/// answers 503, nothing acknowledged is lost, and the workers catch up once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_outage_loses_nothing_acknowledged() {
    let mut env = RealEnv::new("pgdown");
    let dir = tempfile::tempdir().unwrap();
    env.set("IOTSTREAM_RULES", rules_file(dir.path()));
    let direct = env.var("IOTSTREAM_DATABASE_URL").to_owned();
    let proxy = Proxy::start(&host_port(&direct)).await;
    let devices: Vec<String> = (0..2).map(|i| env.device(&format!("p{i}"))).collect();
    let tokens: Vec<String> = devices.iter().map(|d| env.provision(dir.path(), d)).collect();
    // The server reaches PostgreSQL only through the proxy; the test's own probes go direct.
    let mut server_env = env
        .env()
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect::<Vec<_>>();
    for (k, v) in &mut server_env {
        if k == "IOTSTREAM_DATABASE_URL" {
            *v = via(&direct, &format!("127.0.0.1:{}", proxy.port));
        }
    }
    let server_env: Vec<(&str, &str)> = server_env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let (receiver, hook) = Receiver::start(0).await;
    let server = Server::start_with_env(dir.path(), &[], Some(&hook), &server_env).await;
    let start = start_ms();
    let total = 120;
    let failures = Arc::new(AtomicUsize::new(0));
    let senders: Vec<_> = devices
        .iter()
        .zip(&tokens)
        .map(|(d, t)| {
            tokio::spawn(send_all(
                server.url.clone(),
                d.clone(),
                t.clone(),
                start,
                total,
                failures.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    proxy.down();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(server.readyz().await, 503, "not ready while the database is away");
    tokio::time::sleep(Duration::from_secs(2)).await;
    proxy.up();
    for s in senders {
        s.await.unwrap();
    }
    verify(&env, &devices, start, total, &receiver, &[]).await;
}

/// Redis cut off mid-stream: ingest never fails, results keep flowing into PostgreSQL, reads
/// fall back to the database, cache failures are counted, and the cache is live again once
/// Redis is back, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_outage_degrades_and_recovers_by_itself() {
    let mut env = RealEnv::new("redisdown");
    let dir = tempfile::tempdir().unwrap();
    let direct = env.var("IOTSTREAM_CACHE_URL").to_owned();
    let proxy = Proxy::start(&host_port(&direct)).await;
    let prefix = env.var("IOTSTREAM_REDIS_PREFIX").to_owned();
    env.set(
        "IOTSTREAM_CACHE_URL",
        via(&direct, &format!("127.0.0.1:{}", proxy.port)),
    );
    let server = Server::start_with_env(dir.path(), &[], None, &env.env()).await;
    let d = env.device("r");
    let token = env.provision(dir.path(), &d);
    let now = iotstream_core::Ts::from_datetime(time::OffsetDateTime::now_utc()).millis();
    let send =
        |i: i64| json!({"deviceId": d, "ts": now - 10_000 + i, "metrics": {"temperature": 20.0 + i as f64}});
    assert_eq!(post(&server.client, &server.url, &token, &send(0)).await, 202);
    let key = format!("{prefix}latest:{d}");
    let redis_ts = || {
        redis_at(&direct, &["HGET", &key, "@ts"])
            .first()
            .cloned()
            .unwrap_or_default()
    };
    let ts_of = |i: i64| (now - 10_000 + i).to_string();
    eventually(30, "the first state in Redis", || {
        (redis_ts() == ts_of(0)).then_some(())
    })
    .await;

    proxy.down();
    for i in 1..=5 {
        assert_eq!(
            post(&server.client, &server.url, &token, &send(i)).await,
            202,
            "ingest does not need Redis"
        );
    }
    eventually(30, "results still reach PostgreSQL", || {
        (env.sql(&format!("SELECT last_seen FROM latest WHERE device_id = '{d}'")) == vec![ts_of(5)])
            .then_some(())
    })
    .await;
    assert_eq!(redis_ts(), ts_of(0), "Redis was away");
    let device = server.get(&format!("/api/devices/{d}")).await;
    assert_eq!(
        device["metrics"]["temperature"].as_f64(),
        Some(25.0),
        "reads fall back to the database"
    );
    let metrics = server
        .client
        .get(format!("{}/metrics", server.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("iotstream_cache_errors_total") && !l.ends_with(" 0")),
        "cache failures are counted: {metrics}"
    );

    proxy.up();
    // No restart: as traffic goes on, writes reach Redis again once it answers.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut i = 6;
    loop {
        assert_eq!(post(&server.client, &server.url, &token, &send(i)).await, 202);
        tokio::time::sleep(Duration::from_millis(300)).await;
        if redis_ts() == ts_of(i) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the cache did not recover by itself"
        );
        i += 1;
    }
}

/// A private noida-db broker on its own port and data directory.
struct Broker {
    bin: String,
    port: u16,
    data: std::path::PathBuf,
    child: std::process::Child,
}

impl Broker {
    fn start(dir: &Path) -> Broker {
        let bin = std::env::var("IOTSTREAM_TEST_NOIDA")
            .expect("IOTSTREAM_TEST_NOIDA is not set: run through scripts/services or ./scripts/test");
        let (port, data) = (free_port(), dir.join("broker"));
        let child = Self::spawn(&bin, port, &data);
        Broker {
            bin,
            port,
            data,
            child,
        }
    }

    fn spawn(bin: &str, port: u16, data: &Path) -> std::process::Child {
        let child = std::process::Command::new(bin)
            .args(["start", "--data-dir"])
            .arg(data)
            .args([
                "--host",
                "127.0.0.1",
                "--only",
                "kafka",
                "--kafka-port",
                &port.to_string(),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("noida-db starts");
        let t = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "noida-db did not open {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        child
    }

    fn signal(&self, sig: &str) {
        let ok = std::process::Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig}");
    }

    /// SIGTERM, wait, start again on the same port and data directory.
    fn restart(&mut self) {
        self.signal("-TERM");
        let _ = self.child.wait();
        std::thread::sleep(Duration::from_secs(1));
        self.child = Self::spawn(&self.bin, self.port, &self.data);
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `up` on a private broker with devices sending; returns what the checks need.
async fn on_private_broker(
    name: &str,
    dir: &Path,
) -> (
    RealEnv,
    Broker,
    Server,
    Receiver,
    Vec<String>,
    Vec<tokio::task::JoinHandle<()>>,
    i64,
) {
    let mut env = RealEnv::new(name);
    env.set("IOTSTREAM_RULES", rules_file(dir));
    // Static membership, as in the kill -9 test: a consumer whose session expired during the
    // outage rejoins under a new member id, and noida-db 0.2.3 never evicts the old one, which
    // would wedge the group (Kafka evicts it after the session timeout).
    env.set("IOTSTREAM_KAFKA_INSTANCE_ID", format!("{name}-up"));
    let broker = Broker::start(dir);
    env.set("IOTSTREAM_BUS_URL", format!("kafka://127.0.0.1:{}", broker.port));
    let (receiver, hook) = Receiver::start(0).await;
    let server = Server::start_with_env(dir, &[], Some(&hook), &env.env()).await;
    let devices: Vec<String> = (0..2).map(|i| env.device(&format!("b{i}"))).collect();
    let start = start_ms();
    let failures = Arc::new(AtomicUsize::new(0));
    let senders = devices
        .iter()
        .map(|d| {
            let token = env.provision(dir, d);
            tokio::spawn(send_all(
                server.url.clone(),
                d.clone(),
                token,
                start,
                BROKER_TOTAL,
                failures.clone(),
            ))
        })
        .collect();
    (env, broker, server, receiver, devices, senders, start)
}

const BROKER_TOTAL: usize = 120;

/// The broker frozen mid-stream (SIGSTOP for longer than the consumers' session timeout, then
/// SIGCONT): producers wait or fail and are retried, the groups rebalance; nothing
/// acknowledged is lost, nothing is analysed or alerted twice, every webhook event arrives.
/// In about 60 % of the runs on noida-db 0.2.3 (20 of 33 measured) the broker fences a static
/// member whose session timed out, which librdkafka makes fatal: that consumer (one of
/// process's, once analyze's) must replace itself, or its partitions are never read again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broker_stall_mid_stream_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let (env, broker, _server, receiver, devices, senders, start) =
        on_private_broker("stall", dir.path()).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    broker.signal("-STOP");
    tokio::time::sleep(Duration::from_secs(8)).await;
    broker.signal("-CONT");
    for s in senders {
        s.await.unwrap();
    }
    verify(&env, &devices, start, BROKER_TOTAL, &receiver, &[]).await;
}

/// The broker restarted mid-stream (SIGTERM, same port and data directory). noida-db 0.2.3 can
/// lose the tail of a partition it had acknowledged when it restarts (measured: consumers then
/// see "offset reset ... requested offset not available"), so what a broker must keep is not
/// asserted here (the stall test above asserts it); what iotstream itself guarantees is:
/// every acknowledged reading is in the telemetry store exactly once, no reading is analysed
/// twice, no alert or webhook event is duplicated, and the pipeline works on after the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broker_restart_mid_stream_keeps_every_acknowledged_reading() {
    let dir = tempfile::tempdir().unwrap();
    let (env, mut broker, server, receiver, devices, senders, start) =
        on_private_broker("restart", dir.path()).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    broker.restart();
    for s in senders {
        s.await.unwrap();
    }
    for d in &devices {
        let stored = server
            .get(&format!("/api/devices/{d}/readings?limit=100000"))
            .await;
        let ids: Vec<&str> = stored["readings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["messageId"].as_str().unwrap())
            .collect();
        let unique: BTreeSet<&str> = ids.iter().copied().collect();
        assert_eq!(ids.len(), unique.len(), "{d}: a reading was stored twice");
        assert_eq!(
            unique.len(),
            BROKER_TOTAL,
            "{d}: every acknowledged reading is stored"
        );
        let counted = env.counted(d);
        assert!(
            counted <= BROKER_TOTAL as i64,
            "{d}: {counted} analysed for {BROKER_TOTAL}: analysed twice"
        );
    }
    let list = devices
        .iter()
        .map(|d| format!("'{d}'"))
        .collect::<Vec<_>>()
        .join(",");
    let ids = env.sql(&format!("SELECT id FROM alerts WHERE device_id IN ({list})"));
    let unique: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(ids.len(), unique.len(), "an alert was stored twice");
    let mut want_events = BTreeSet::new();
    for d in &devices {
        want_events.extend(expected(d, start, BROKER_TOTAL).1);
    }
    for h in receiver.hooks() {
        assert!(
            want_events.contains(&h.delivery),
            "unexpected event {}",
            h.delivery
        );
    }
    // The pipeline works on: a new device's overheat reaches the webhook.
    let late = env.device("after");
    let token = env.provision(dir.path(), &late);
    let hot = json!({"deviceId": late, "metrics": {"temperature": 99.0}});
    assert_eq!(post(&server.client, &server.url, &token, &hot).await, 202);
    receiver
        .wait_for(60, "an alert after the restart", |r| {
            r.hooks()
                .iter()
                .any(|h| h.body["alert"]["deviceId"] == json!(late))
        })
        .await;
}
