//! End to end through the real services (Kafka protocol broker, PostgreSQL, Redis, and the
//! Cosmos DB server when built with `cosmos`): readings posted to ingest went through Kafka,
//! produced rows in PostgreSQL (a forecast among them) and keys in Redis, and fired the webhook; `run` splits the
//! pipeline over processes. Fault tests live in `real_faults.rs`.
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
use common::*;
use serde_json::{Value, json};

/// Records in a topic of this test (what a group that never committed lags by).
async fn topic_records(env: &RealEnv, topic: &str) -> u64 {
    use iotstream_core::ports::EventBus;
    let urls = iotstream_backends::BackendUrls {
        settings: [(
            "IOTSTREAM_KAFKA_TOPIC_PREFIX".to_owned(),
            env.var("IOTSTREAM_KAFKA_TOPIC_PREFIX").to_owned(),
        )]
        .into(),
        ..Default::default()
    };
    let bus = iotstream_backends::kafka::KafkaBus::connect(env.var("IOTSTREAM_BUS_URL"), &urls).unwrap();
    bus.lag(&format!("probe-{}", env.tag), topic).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readings_flow_through_kafka_into_postgres_redis_and_the_webhook() {
    let env = RealEnv::new("e2e");
    let dir = tempfile::tempdir().unwrap();
    let (receiver, hook) = Receiver::start(0).await;
    let server = Server::start_with_env(dir.path(), &[], Some(&hook), &env.env()).await;
    let pump = env.device("pump");
    let token = env.provision(dir.path(), &pump);
    let now = iotstream_core::Ts::from_datetime(time::OffsetDateTime::now_utc()).millis();
    let readings: Vec<Value> = (0..20)
        .map(|i| json!({"deviceId": pump, "ts": now - 20_000 + i * 1000, "metrics": {"temperature": 70.0 + i as f64, "vibration": 0.01}, "id": format!("m{i}")}))
        .collect();
    assert_eq!(
        post(&server.client, &server.url, &token, &json!(readings)).await,
        202
    );
    // temperature 70..89: crosses the built-in overheat rule (above 80).

    receiver
        .wait_for(60, "alert.opened on the webhook", |r| {
            r.hooks().iter().any(|h| h.event == "alert.opened")
        })
        .await;
    let hook = receiver
        .hooks()
        .into_iter()
        .find(|h| h.event == "alert.opened")
        .unwrap();
    assert!(hook.signature_ok);
    assert_eq!(hook.body["alert"]["deviceId"], json!(pump));

    // PostgreSQL: latest state, aggregates, the alert.
    let latest = eventually(30, "latest state in PostgreSQL", || {
        env.sql(&format!(
            "SELECT last_seen FROM latest WHERE device_id = '{pump}'"
        ))
        .first()
        .filter(|t| t.parse::<i64>().ok() == Some(now - 1000))
        .cloned()
    })
    .await;
    assert_eq!(latest.parse::<i64>().unwrap(), now - 1000);
    let counted = eventually(30, "aggregates in PostgreSQL", || {
        let n = env.counted(&pump);
        (n == 20).then_some(n)
    })
    .await;
    assert_eq!(counted, 20);
    let alerts = env.sql(&format!("SELECT state FROM alerts WHERE device_id = '{pump}'"));
    assert_eq!(alerts, vec!["active".to_owned()]);
    // The forecast the rising trend made before the crossing: from the 10th reading (79 at
    // now - 11 s) the fit is good enough to say 80 is a second away.
    let forecast_at = eventually(30, "the forecast in PostgreSQL", || {
        env.sql(&format!(
            "SELECT at FROM forecasts WHERE device_id = '{pump}' AND rule = 'overheat'"
        ))
        .first()
        .cloned()
    })
    .await;
    assert_eq!(forecast_at.parse::<i64>().unwrap(), now - 11_000);

    // Redis: the latest state hash and the open alert.
    let prefix = env.var("IOTSTREAM_REDIS_PREFIX");
    // (The cache is written right after the database: poll, do not race it.)
    let ts = eventually(30, "latest state in Redis", || {
        let ts = env.redis(&["HGET", &format!("{prefix}latest:{pump}"), "@ts"]);
        (ts == vec![(now - 1000).to_string()]).then_some(ts)
    })
    .await;
    assert_eq!(ts, vec![(now - 1000).to_string()]);
    let active = env.redis(&["HLEN", &format!("{prefix}alerts:active")]);
    assert_eq!(active, vec!["1".to_owned()]);
    let forecasts = eventually(30, "the forecast in Redis", || {
        let n = env.redis(&["ZCARD", &format!("{prefix}forecasts:{pump}")]);
        (n == vec!["1".to_owned()]).then_some(n)
    })
    .await;
    assert_eq!(forecasts, vec!["1".to_owned()]);

    // Kafka: the readings went through the telemetry topic; every group caught up.
    assert_eq!(topic_records(&env, "telemetry").await, 20);
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
            .any(|l| l.starts_with("iotstream_consumer_lag{") && l.contains("iotstream-analyze")),
        "consumer lag is exported per group"
    );

    // The query API reads the same data (cache first, database behind it).
    let device = server.get(&format!("/api/devices/{pump}")).await;
    assert_eq!(device["metrics"]["temperature"].as_f64(), Some(89.0), "{device}");
    let forecasts = server.get(&format!("/api/forecasts?deviceId={pump}")).await;
    assert_eq!(
        forecasts["forecasts"].as_array().map(Vec::len),
        Some(1),
        "{forecasts}"
    );
    assert_eq!(forecasts["forecasts"][0]["rule"], "overheat", "{forecasts}");
    assert_eq!(server.readyz().await, 200);

    #[cfg(feature = "cosmos")]
    cosmos_has_the_readings(&env, &pump, now, 20).await;
}

/// Reads the device's readings back from the Cosmos DB server through the SDK.
#[cfg(feature = "cosmos")]
async fn cosmos_has_the_readings(env: &RealEnv, device: &str, now: i64, n: usize) {
    use iotstream_core::ports::TelemetryStore;
    let urls = iotstream_backends::BackendUrls {
        settings: [
            (
                "IOTSTREAM_COSMOS_KEY".to_owned(),
                env.var("IOTSTREAM_COSMOS_KEY").to_owned(),
            ),
            (
                "IOTSTREAM_COSMOS_DATABASE".to_owned(),
                env.var("IOTSTREAM_COSMOS_DATABASE").to_owned(),
            ),
        ]
        .into(),
        ..Default::default()
    };
    let store =
        iotstream_backends::cosmos::CosmosStore::connect(env.var("IOTSTREAM_TELEMETRY_STORE_URL"), &urls)
            .await
            .unwrap();
    let id = iotstream_core::DeviceId::parse(device).unwrap();
    let got = store
        .range(
            &id,
            iotstream_core::Ts(now - 60_000),
            iotstream_core::Ts(now + 1),
            1000,
        )
        .await
        .unwrap();
    assert_eq!(got.len(), n, "every reading is in Cosmos DB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn run_splits_the_pipeline_over_processes() {
    let env = RealEnv::new("run");
    let dir = tempfile::tempdir().unwrap();
    for _ in 0..2 {
        let (ok, out, err) = cli_env(dir.path(), &["migrate"], &env.env());
        assert!(ok && out.contains("migrated"), "migrate (idempotent): {err}");
    }
    let (receiver, hook) = Receiver::start(0).await;
    let front = Server::run(&["ingest", "web"], dir.path(), None, &env.env()).await;
    let _workers = Server::run(
        &["analyze", "process", "notify"],
        dir.path(),
        Some(&hook),
        &env.env(),
    )
    .await;
    let pump = env.device("pump");
    let token = env.provision(dir.path(), &pump);
    // The live stream of the web process, fed from PostgreSQL what another process wrote there.
    let mut live = reqwest::Client::new()
        .get(format!("{}/api/stream?token={ADMIN}&deviceId={pump}", front.url))
        .send()
        .await
        .unwrap();
    assert_eq!(live.status().as_u16(), 200);
    // Its poller's first round takes the state as it is; changes after it are events.
    tokio::time::sleep(std::time::Duration::from_millis(1_500)).await;
    let body = json!({"deviceId": pump, "metrics": {"temperature": 95.0}});
    assert_eq!(post(&front.client, &front.url, &token, &body).await, 202);
    receiver
        .wait_for(60, "alert.opened from the workers process", |r| {
            r.hooks().iter().any(|h| h.event == "alert.opened")
        })
        .await;
    let alerts = front
        .eventually("/api/alerts?state=active", 30, |v| {
            v["alerts"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x["deviceId"] == json!(pump)))
        })
        .await;
    assert_eq!(alerts["alerts"].as_array().map(Vec::len), Some(1), "{alerts}");
    let mut events = String::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while !events.contains("event: alert") {
        let chunk = tokio::time::timeout_at(deadline, live.chunk())
            .await
            .unwrap_or_else(|_| panic!("no alert event on /api/stream within 30 s: {events}"))
            .unwrap()
            .expect("the stream ended");
        events.push_str(&String::from_utf8_lossy(&chunk));
    }
    let alert_event = events.split("event: alert").nth(1).unwrap();
    assert!(
        alert_event.contains(&format!("\"deviceId\":\"{pump}\"")),
        "{events}"
    );
    assert!(alert_event.contains("\"state\":\"active\""), "{events}");
    // The workers process serves only the operations endpoints.
    let r = _workers
        .client
        .get(format!("{}/api/alerts", _workers.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    assert_eq!(_workers.readyz().await, 200);
}
