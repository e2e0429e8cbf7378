//! `iotstream serve` (the Azure Functions custom handler) on the real services, with this test as
//! the Functions host: it posts the HTTP trigger's request to `/ingest`, reads each Kafka topic as
//! the host's Kafka trigger does (its own consumer group), and posts the records, wrapped in the
//! host's envelopes, to the function the topic triggers. What users see is read from `run web`
//! (PostgreSQL) and the webhook receiver. Then the handler is killed (-9) and a new one resumes
//! from analyze's checkpoint in PostgreSQL.
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
use iotstream_core::ports::{Consumer, Delivered, EventBus};
use serde_json::{Value, json};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `iotstream serve`, killed when dropped.
struct Handler {
    child: Child,
    url: String,
    /// `IOTSTREAM_METRICS_LISTEN`: the scrape target and probes beside the host's port.
    ops_url: String,
    client: reqwest::Client,
}

impl Drop for Handler {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Handler {
    /// Starts the handler as the host does (FUNCTIONS_CUSTOMHANDLER_PORT) and waits until its
    /// readiness probe answers.
    async fn start(dir: &std::path::Path, env: &RealEnv, hook: &str) -> Handler {
        let (port, ops) = (free_port(), free_port());
        let child = Command::new(bin())
            .arg("serve")
            .arg("--data-dir")
            .arg(dir)
            .env("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string())
            .env("IOTSTREAM_METRICS_LISTEN", format!("127.0.0.1:{ops}"))
            .env("IOTSTREAM_ADMIN_TOKEN", ADMIN)
            .env("IOTSTREAM_WEBHOOK_URL", hook)
            .env("IOTSTREAM_WEBHOOK_SECRET", SECRET)
            .envs(env.env())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let h = Handler {
            child,
            url: format!("http://127.0.0.1:{port}"),
            ops_url: format!("http://127.0.0.1:{ops}"),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while h.client.get(&h.url).send().await.is_err() {
            assert!(Instant::now() < deadline, "serve did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        h
    }

    /// `GET` on the operations address: (status, body).
    async fn ops(&self, path: &str) -> (u16, String) {
        let r = self
            .client
            .get(format!("{}{path}", self.ops_url))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    async fn invoke(&self, function: &str, body: &Value) -> Value {
        let r = self
            .client
            .post(format!("{}/{function}", self.url))
            .json(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "/{function}");
        r.json().await.unwrap()
    }

    /// A client's `POST /api/telemetry` as the HTTP trigger hands it over; returns `res`.
    async fn ingest(&self, token: &str, body: &Value) -> Value {
        let req = json!({
            "Url": "https://iotstream-fn.azurewebsites.net/api/telemetry", "Method": "POST",
            "Query": {}, "Params": {},
            "Headers": {"Content-Type": ["application/json"], "Authorization": [token]},
            "Body": body.to_string(),
        });
        let reply = self
            .invoke("ingest", &json!({"Data": {"req": req}, "Metadata": {}}))
            .await;
        reply["Outputs"]["res"].clone()
    }
}

/// The host's side of Kafka: one consumer group per function, like the extension's triggers.
struct Host {
    bus: iotstream_backends::kafka::KafkaBus,
    prefix: String,
}

impl Host {
    fn new(env: &RealEnv) -> Host {
        let prefix = env.var("IOTSTREAM_KAFKA_TOPIC_PREFIX").to_owned();
        let urls = iotstream_backends::BackendUrls {
            settings: [
                ("IOTSTREAM_KAFKA_TOPIC_PREFIX".to_owned(), prefix.clone()),
                (
                    "IOTSTREAM_KAFKA_GROUP_PREFIX".to_owned(),
                    format!("host.{}", env.var("IOTSTREAM_KAFKA_GROUP_PREFIX")),
                ),
            ]
            .into(),
            ..Default::default()
        };
        let bus = iotstream_backends::kafka::KafkaBus::connect(env.var("IOTSTREAM_BUS_URL"), &urls).unwrap();
        Host { bus, prefix }
    }

    async fn trigger(&self, function: &str, topic: &str) -> Box<dyn Consumer> {
        self.bus.subscribe(function, topic).await.unwrap()
    }

    /// The host's invocation body for records: envelopes with the topic's real (prefixed) name.
    fn invocation(&self, records: &[Delivered]) -> Value {
        let envelopes: Vec<String> = records
            .iter()
            .map(|r| {
                json!({
                    "Offset": r.offset, "Partition": r.partition,
                    "Topic": format!("{}{}", self.prefix, r.topic),
                    "Timestamp": "2026-12-01T10:00:00.000Z", "Key": r.key,
                    "Value": String::from_utf8_lossy(&r.value), "LeaderEpoch": 0,
                    "IsPartitionEOF": false, "Headers": []
                })
                .to_string()
            })
            .collect();
        json!({"Data": {"events": Value::from(envelopes).to_string()}, "Metadata": {"sys": {"MethodName": "x"}}})
    }
}

/// Polls `consumer` until `done` holds for what it returned, failing after `secs`.
async fn until(
    consumer: &mut dyn Consumer,
    secs: u64,
    what: &str,
    done: impl Fn(&[Delivered]) -> bool,
) -> Vec<Delivered> {
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done(&got) {
        assert!(Instant::now() < deadline, "{what}: got {} records", got.len());
        // A consumer left unpolled for a while (this host has several) is put out of its
        // group; it rejoins at the committed offsets, as the extension's would.
        match consumer.poll(500, Duration::from_millis(500)).await {
            Ok(records) => got.extend(records),
            Err(e) => eprintln!("host poll: {e} (rejoining)"),
        }
    }
    got
}

/// What the host does after an invocation answered 200: commit the batch's offsets.
async fn committed(consumer: &mut dyn Consumer) {
    consumer.commit().await.unwrap();
}

fn text(r: &Delivered) -> String {
    String::from_utf8_lossy(&r.value).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_functions_host_drives_serve_end_to_end_and_a_killed_handler_resumes_from_its_checkpoint() {
    let env = RealEnv::new("serve");
    let dir = tempfile::tempdir().unwrap();
    let (ok, _, err) = cli_env(dir.path(), &["migrate"], &env.env());
    assert!(ok, "migrate: {err}");
    let (receiver, hook) = Receiver::start(0).await;
    let pump = env.device("pump");
    let token = env.provision(dir.path(), &pump);
    let web = Server::run(&["web"], dir.path(), None, &env.env()).await;
    let handler = Handler::start(dir.path(), &env, &hook).await;
    let host = Host::new(&env);

    let t0 = iotstream_core::Ts::from_system_time(std::time::SystemTime::now()).millis() - 30_000;
    let reading =
        |i: i64, v: f64| json!({"deviceId": pump, "ts": t0 + i * 1_000, "metrics": {"temperature": v}});
    let res = handler
        .ingest(
            &token,
            &json!([reading(0, 70.0), reading(1, 85.0), reading(2, 86.0)]),
        )
        .await;
    assert_eq!(res["statusCode"], "202", "{res}");
    let res = handler
        .ingest("SharedAccessSignature sr=nope", &reading(3, 1.0))
        .await;
    assert_eq!(
        res["statusCode"], "401",
        "the client's error comes back as res: {res}"
    );

    let mut analyze = host.trigger("analyze", "telemetry").await;
    let batch = until(analyze.as_mut(), 30, "3 readings on telemetry", |r| r.len() >= 3).await;
    handler.invoke("analyze", &host.invocation(&batch)).await;
    committed(analyze.as_mut()).await;
    // What Prometheus scrapes from the pod: the readings ingested and analysed through the host,
    // and the probes, on the metrics address (the host's port is 127.0.0.1 only).
    let (status, scraped) = handler.ops("/metrics").await;
    assert_eq!(status, 200, "{scraped}");
    for line in [
        "iotstream_ingest_readings_total 3",
        "iotstream_analyze_readings_total 3",
    ] {
        assert!(
            scraped.lines().any(|l| l == line),
            "no `{line}` in /metrics:\n{scraped}"
        );
    }
    assert_eq!(handler.ops("/readyz").await.0, 200);
    assert_eq!(
        handler.ops("/api/alerts").await.0,
        404,
        "only the operations routes there"
    );

    let mut process_alerts = host.trigger("process", "alerts").await;
    let alerts = until(process_alerts.as_mut(), 30, "alert.opened", |r| {
        r.iter().any(|x| text(x).contains("alert.opened"))
    })
    .await;
    handler.invoke("process-alerts", &host.invocation(&alerts)).await;
    committed(process_alerts.as_mut()).await;
    let mut notify = host.trigger("notify", "alerts").await;
    let to_notify = until(notify.as_mut(), 30, "alerts for notify", |r| !r.is_empty()).await;
    handler.invoke("notify", &host.invocation(&to_notify)).await;
    committed(notify.as_mut()).await;
    // The tick publishes the device's latest state a second later, with no further record.
    let mut process = host.trigger("process", "insights").await;
    let insights = until(process.as_mut(), 30, "the latest state", |r| {
        r.iter().any(|x| text(x).contains(r#""kind":"latest""#))
    })
    .await;
    handler.invoke("process", &host.invocation(&insights)).await;
    committed(process.as_mut()).await;

    // What a user sees: the alert and the latest value through the query API (PostgreSQL), the
    // readings (the telemetry store), one signed webhook.
    let active = web
        .eventually("/api/alerts?state=active", 30, |v| {
            v["alerts"].as_array().is_some_and(|a| !a.is_empty())
        })
        .await;
    let alert = &active["alerts"][0];
    assert_eq!(
        (alert["deviceId"].as_str(), alert["rule"].as_str()),
        (Some(pump.as_str()), Some("overheat"))
    );
    let device = web
        .eventually(&format!("/api/devices/{pump}"), 30, |v| {
            v["metrics"]["temperature"] == json!(86.0)
        })
        .await;
    assert_eq!(device["deviceId"], json!(pump));
    let stored = web.get(&format!("/api/devices/{pump}/readings")).await;
    assert_eq!(stored["readings"].as_array().map(Vec::len), Some(3), "{stored}");
    receiver
        .wait_for(30, "the webhook", |r| {
            r.hooks().iter().any(|h| h.event == "alert.opened")
        })
        .await;
    assert!(receiver.hooks().iter().all(|h| h.signature_ok));

    // The handler crashes; the host starts another, which finds analyze's state in its
    // checkpoint: the overheat it opened before is resolved, with the same id.
    drop(handler);
    let handler = Handler::start(dir.path(), &env, &hook).await;
    let res = handler.ingest(&token, &reading(4, 60.0)).await;
    assert_eq!(res["statusCode"], "202", "{res}");
    let batch = until(analyze.as_mut(), 30, "the new reading", |r| !r.is_empty()).await;
    handler.invoke("analyze", &host.invocation(&batch)).await;
    let alerts = until(process_alerts.as_mut(), 30, "alert.resolved", |r| {
        r.iter().any(|x| text(x).contains("alert.resolved"))
    })
    .await;
    handler.invoke("process-alerts", &host.invocation(&alerts)).await;
    let resolved = web
        .eventually("/api/alerts?state=resolved", 30, |v| {
            v["alerts"].as_array().is_some_and(|a| !a.is_empty())
        })
        .await;
    assert_eq!(resolved["alerts"][0]["id"], alert["id"], "{resolved}");
    let to_notify = until(notify.as_mut(), 30, "the resolution for notify", |r| {
        !r.is_empty()
    })
    .await;
    handler.invoke("notify", &host.invocation(&to_notify)).await;
    receiver
        .wait_for(30, "the resolution's webhook", |r| {
            r.hooks().iter().any(|h| h.event == "alert.resolved")
        })
        .await;
    let opened = receiver
        .hooks()
        .iter()
        .filter(|h| h.event == "alert.opened")
        .count();
    assert_eq!(opened, 1, "one alert, delivered once");
}
