//! Every conformance suite against the real engines, plus their own checks (dead letters with
//! headers, Redis degraded mode and recovery, migrations). Needs the services of
//! `scripts/services` (run by `scripts/test`): the URLs come from `IOTSTREAM_TEST_*` variables,
//! and a missing one FAILS the test with the command to run, never skips it.
#![cfg(feature = "integration")]

use iotstream_backends::BackendUrls;
use iotstream_backends::conformance::{self, unique, unique_device};
use iotstream_core::ports::{Cache, EventBus};
use std::sync::Arc;

fn service(var: &str) -> String {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!(
            "{var} is not set: run these tests through `scripts/services run -- cargo test ...` \
             (or ./scripts/test), which starts PostgreSQL, Redis, the Kafka broker and the Cosmos DB server"
        ),
    }
}

#[cfg(feature = "postgres")]
mod postgres {
    use super::*;
    use iotstream_backends::postgres::PgResults;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_results_conform() {
        let db = Arc::new(
            PgResults::connect(&service("IOTSTREAM_TEST_DATABASE_URL"))
                .await
                .unwrap(),
        );
        conformance::devices::run(db.clone()).await;
        conformance::results::run(db.clone(), db.clone()).await;
        conformance::outbox::run(db.clone()).await;
        conformance::checkpoints::run(db).await;
    }

    #[tokio::test]
    async fn migrations_are_idempotent_and_concurrent_starts_are_safe() {
        let url = service("IOTSTREAM_TEST_DATABASE_URL");
        let (a, b) = tokio::join!(PgResults::connect(&url), PgResults::connect(&url));
        let (a, _b) = (a.unwrap(), b.unwrap());
        let versions: Vec<i32> =
            sqlx::query_scalar("SELECT version FROM iotstream_migrations ORDER BY version")
                .fetch_all(a.pool())
                .await
                .unwrap();
        assert_eq!(versions, vec![1, 2, 3, 4]);
    }

    #[tokio::test]
    async fn a_database_that_is_down_is_unavailable_not_a_hang() {
        // A closed port: every call fails fast and retryably.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let err = PgResults::connect(&format!("postgres://u:secret@127.0.0.1:{port}/x"))
            .await
            .unwrap_err();
        assert!(err.is_retryable(), "{err}");
        assert!(!err.message.contains("secret"), "the password leaked: {err}");
        // A one-shot command waits as long as it was told to, then fails the same way.
        let url = format!("postgres://u:secret@127.0.0.1:{port}/x");
        let started = std::time::Instant::now();
        let err = PgResults::connect_waiting(&url, std::time::Duration::from_secs(2))
            .await
            .unwrap_err();
        let waited = started.elapsed();
        assert!(err.message.contains("postgres unavailable"), "{err}");
        assert!(!err.message.contains("secret"), "the password leaked: {err}");
        assert!(
            waited >= std::time::Duration::from_millis(1_500) && waited < std::time::Duration::from_secs(10),
            "waited {waited:?} for a database that is down, told 2 s"
        );
    }

    #[tokio::test]
    async fn prune_deletes_only_old_finished_rows() {
        use iotstream_core::ports::{Outbox, ResultsStore};
        use iotstream_core::{AlertEventKind, Ts};
        let db = PgResults::connect(&service("IOTSTREAM_TEST_DATABASE_URL"))
            .await
            .unwrap();
        let d = unique_device("prune");
        let open = conformance::alert(&unique("prune-open"), &d, 1_000, 90.0);
        let done = conformance::alert(&unique("prune-done"), &d, 1_000, 90.0);
        db.apply_alert_events(&[
            conformance::event(AlertEventKind::Opened, &open, 1_000, 90.0),
            conformance::event(AlertEventKind::Resolved, &done, 2_000, 70.0),
        ])
        .await
        .unwrap();
        db.enqueue(
            &[conformance::event(AlertEventKind::Opened, &open, 1_000, 90.0)],
            Ts(1_000),
        )
        .await
        .unwrap();
        use conformance::insights::{forecast, late};
        db.insert_forecasts(&[forecast(&d, "r", 1_000), forecast(&d, "r", 9_000)])
            .await
            .unwrap();
        let arrived_recently = late(&d, "recent", 0, 9_000, &["t"]);
        db.insert_late_readings(&[late(&d, "long-ago", 0, 1_000, &["t"]), arrived_recently.clone()])
            .await
            .unwrap();
        db.prune(Ts(5_000)).await.unwrap();
        let all = (Ts(i64::MIN), Ts(i64::MAX));
        assert_eq!(
            db.forecasts(Some(&d), all.0, all.1, 10).await.unwrap(),
            vec![forecast(&d, "r", 9_000)],
            "old forecasts go"
        );
        assert_eq!(
            db.late_readings(Some(&d), all.0, all.1, 10).await.unwrap(),
            vec![arrived_recently],
            "late readings go by when they arrived, not by their (old) timestamp"
        );
        assert!(db.alert(&open.id).await.unwrap().is_some(), "open alerts stay");
        assert!(
            db.alert(&done.id).await.unwrap().is_none(),
            "old resolved alerts go"
        );
        assert_eq!(
            db.due(Ts(10_000), 10_000)
                .await
                .unwrap()
                .iter()
                .filter(|p| p.event.alert.id == open.id)
                .count(),
            1,
            "pending deliveries stay"
        );
    }
}

#[cfg(feature = "redis")]
mod redis_cache {
    use super::*;
    use iotstream_backends::redis::{RedisCache, RedisSettings};
    use iotstream_core::{AlertEventKind, PortErrorKind};
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    fn settings() -> RedisSettings {
        RedisSettings {
            prefix: format!("{}:", unique("test")),
            ..RedisSettings::default()
        }
    }

    #[tokio::test]
    async fn redis_cache_conforms() {
        let cache = RedisCache::new(&service("IOTSTREAM_TEST_CACHE_URL"), settings()).unwrap();
        conformance::cache::run(Arc::new(cache)).await;
    }

    #[tokio::test]
    async fn recent_aggregates_and_active_alerts() {
        let cache = RedisCache::new(&service("IOTSTREAM_TEST_CACHE_URL"), settings()).unwrap();
        let d = unique_device("redis-agg");
        let agg = |ws: i64, count: u64| {
            iotstream_backends::conformance::results::agg(&d, "t", ws, count, 1.0, 2.0, 3.0)
        };
        cache
            .put_aggregates(&[agg(60_000, 1), agg(0, 1), agg(60_000, 2)])
            .await
            .unwrap();
        let mut hopping = agg(0, 9);
        (hopping.window_ms, hopping.hop_ms) = (300_000, 60_000);
        cache.put_aggregates(&[hopping.clone()]).await.unwrap();
        assert_eq!(
            cache.recent_aggregates(&d, "t", 300_000).await.unwrap(),
            vec![hopping],
            "window kinds are kept apart"
        );
        let got = cache.recent_aggregates(&d, "t", 60_000).await.unwrap();
        assert_eq!(
            got,
            vec![agg(0, 1), agg(60_000, 2)],
            "one per window, the fullest emission, oldest first"
        );
        // A stale emission (fewer readings, e.g. from an instance a partition was taken from)
        // never replaces a fuller one, in a later call or later in the same call.
        cache.put_aggregates(&[agg(60_000, 1)]).await.unwrap();
        cache.put_aggregates(&[agg(0, 5), agg(0, 3)]).await.unwrap();
        assert_eq!(
            cache.recent_aggregates(&d, "t", 60_000).await.unwrap(),
            vec![agg(0, 5), agg(60_000, 2)],
            "the emissions with the most readings stay"
        );

        let a = conformance::alert(&unique("redis-alert"), &d, 1_000, 90.0);
        cache
            .put_alerts(&[conformance::event(AlertEventKind::Opened, &a, 1_000, 90.0)])
            .await
            .unwrap();
        assert!(cache.active_alerts().await.unwrap().contains_key(&a.id));
        cache
            .put_alerts(&[conformance::event(AlertEventKind::Resolved, &a, 2_000, 70.0)])
            .await
            .unwrap();
        assert!(!cache.active_alerts().await.unwrap().contains_key(&a.id));
        cache
            .put_alerts(&[conformance::event(AlertEventKind::Opened, &a, 1_000, 90.0)])
            .await
            .unwrap();
        assert!(
            !cache.active_alerts().await.unwrap().contains_key(&a.id),
            "a replayed opening does not bring a resolved alert back"
        );
    }

    #[tokio::test]
    async fn recent_forecasts_and_late_readings() {
        use conformance::insights::{forecast, late};
        use iotstream_backends::redis::RECENT_INSIGHTS;
        let cache = RedisCache::new(&service("IOTSTREAM_TEST_CACHE_URL"), settings()).unwrap();
        let d = unique_device("redis-insights");
        let (first, second) = (forecast(&d, "overheat", 2_000), forecast(&d, "overheat", 9_000));
        cache
            .put_forecasts(&[second.clone(), first.clone()])
            .await
            .unwrap();
        cache
            .put_forecasts(std::slice::from_ref(&first))
            .await
            .expect("a redelivery");
        assert_eq!(
            cache.recent_forecasts(&d).await.unwrap(),
            vec![first, second],
            "oldest first, a redelivered forecast once"
        );
        let backlog: Vec<_> = (0..RECENT_INSIGHTS as i64 + 10)
            .map(|i| late(&d, &format!("r{i:03}"), i * 1_000, 100_000, &["t"]))
            .collect();
        cache.put_late_readings(&backlog).await.unwrap();
        assert_eq!(
            cache.recent_late_readings(&d).await.unwrap(),
            backlog[10..].to_vec(),
            "the newest {RECENT_INSIGHTS} are kept"
        );
        let other = unique_device("redis-insights-other");
        assert!(cache.recent_forecasts(&other).await.unwrap().is_empty());
        assert!(cache.recent_late_readings(&other).await.unwrap().is_empty());
    }

    fn start_redis(port: u16) -> Child {
        start_redis_with(port, &["--port", &port.to_string()])
    }

    /// A redis-server of the test's own, listening (`listen`: `--port` or `--tls-port` and the
    /// rest) on `port` of 127.0.0.1.
    fn start_redis_with(port: u16, listen: &[&str]) -> Child {
        let bin = service("IOTSTREAM_TEST_REDIS_SERVER");
        let child = Command::new(bin)
            .args(listen)
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "redis-server did not open {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        child
    }

    /// Redis down: calls fail fast with a retryable error (no hang), then the cache recovers
    /// by itself once Redis is back.
    #[tokio::test]
    async fn redis_down_degrades_fast_and_recovers_by_itself() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut server = start_redis(port);
        let cache = RedisCache::new(&format!("redis://127.0.0.1:{port}/0"), settings()).unwrap();
        let d = unique_device("redis-down");
        let s = conformance::latest(&d, 10, &[("t", 1.0)]);
        cache.set_latest(std::slice::from_ref(&s)).await.unwrap();

        server.kill().unwrap();
        server.wait().unwrap();
        let start = Instant::now();
        for _ in 0..20 {
            let e = cache.set_latest(std::slice::from_ref(&s)).await.unwrap_err();
            assert!(
                matches!(e.kind, PortErrorKind::Unavailable | PortErrorKind::Timeout),
                "{e}"
            );
        }
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "20 calls took {:?}: not failing fast",
            start.elapsed()
        );

        let mut server = start_redis(port);
        let start = Instant::now();
        loop {
            if cache.set_latest(std::slice::from_ref(&s)).await.is_ok() {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "the cache did not recover"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(
            cache.get_latest(&d).await.unwrap(),
            Some(s),
            "live again (a fresh Redis holds what was written since)"
        );
        server.kill().unwrap();
        let _ = server.wait();
    }

    /// Azure Managed Redis speaks TLS only, with the access key as password: a `rediss://` URL
    /// (its password percent-encoded, as infra/bicep writes it) works end to end, the server's
    /// certificate verified against the trusted CAs (the test CA of SSL_CERT_FILE). A wrong
    /// password is refused.
    #[tokio::test]
    async fn redis_over_tls_with_a_password_in_the_url() {
        let ca = std::path::PathBuf::from(service("SSL_CERT_FILE"));
        let tls = ca.parent().expect("the test CA's directory");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let (cert, key) = (tls.join("server.pem"), tls.join("server-key.pem"));
        let mut server = start_redis_with(
            port,
            &[
                "--port",
                "0",
                "--tls-port",
                &port.to_string(),
                "--tls-cert-file",
                cert.to_str().unwrap(),
                "--tls-key-file",
                key.to_str().unwrap(),
                "--tls-auth-clients",
                "no",
                "--requirepass",
                "k3y+/=",
            ],
        );
        let url = format!("rediss://:k3y%2B%2F%3D@localhost:{port}/0");
        let cache = RedisCache::new(&url, settings()).unwrap();
        let d = unique_device("redis-tls");
        let s = conformance::latest(&d, 10, &[("t", 1.0)]);
        cache.set_latest(std::slice::from_ref(&s)).await.unwrap();
        assert_eq!(cache.get_latest(&d).await.unwrap(), Some(s.clone()));

        let wrong = RedisCache::new(&format!("rediss://:nope@localhost:{port}/0"), settings()).unwrap();
        assert!(wrong.set_latest(std::slice::from_ref(&s)).await.is_err());
        server.kill().unwrap();
        let _ = server.wait();
    }
}

#[cfg(feature = "kafka")]
#[path = "real_conformance/kafka.rs"]
mod kafka;

#[cfg(feature = "cosmos")]
#[path = "real_conformance/cosmos_entra.rs"]
mod cosmos_entra;

#[cfg(feature = "cosmos")]
mod cosmos {
    use super::*;
    use iotstream_backends::cosmos::CosmosStore;

    fn urls() -> BackendUrls {
        BackendUrls {
            settings: [
                (
                    "IOTSTREAM_COSMOS_KEY".to_owned(),
                    service("IOTSTREAM_TEST_COSMOS_KEY"),
                ),
                (
                    "IOTSTREAM_COSMOS_DATABASE".to_owned(),
                    service("IOTSTREAM_TEST_COSMOS_DATABASE"),
                ),
            ]
            .into(),
            ..BackendUrls::default()
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cosmos_store_conforms() {
        let store = CosmosStore::connect(&service("IOTSTREAM_TEST_TELEMETRY_STORE_URL"), &urls())
            .await
            .unwrap();
        conformance::store::run(Arc::new(store)).await;
    }

    #[cfg(feature = "kafka")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn split_sink_over_cosmos_and_kafka_conforms() {
        use iotstream_backends::SplitSink;
        use iotstream_backends::kafka::KafkaBus;
        use iotstream_core::ports::TelemetryStore;
        let mut urls = urls();
        urls.settings.insert(
            "IOTSTREAM_KAFKA_TOPIC_PREFIX".into(),
            format!("{}.", unique("cosmos-sink")),
        );
        let store: Arc<dyn TelemetryStore> = Arc::new(
            CosmosStore::connect(&service("IOTSTREAM_TEST_TELEMETRY_STORE_URL"), &urls)
                .await
                .unwrap(),
        );
        let bus: Arc<dyn EventBus> =
            Arc::new(KafkaBus::connect(&service("IOTSTREAM_TEST_BUS_URL"), &urls).unwrap());
        let sink = Arc::new(SplitSink {
            store: store.clone(),
            bus: bus.clone(),
        });
        conformance::sink::run(sink, store, bus).await;
    }

    #[tokio::test]
    async fn a_store_that_is_down_is_unavailable() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let err = CosmosStore::connect(&format!("cosmos://127.0.0.1:{port}"), &urls())
            .await
            .unwrap_err();
        assert!(err.is_retryable(), "{err}");
        assert!(
            !err.message.contains(&service("IOTSTREAM_TEST_COSMOS_KEY")),
            "the key leaked"
        );
    }
}
