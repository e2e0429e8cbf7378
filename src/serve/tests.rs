//! The custom handler on the embedded engines, driven as the Functions host drives it: the test
//! reads each topic as the host's Kafka trigger would and posts the records, wrapped in the host's
//! envelopes, to the function that topic triggers. (The same flow on Kafka, Cosmos DB, PostgreSQL
//! and Redis: `tests/serve.rs`.)

use super::*;
use crate::http::tests::config;
use axum::http::StatusCode;
use iotstream_core::ports::Consumer;
use iotstream_core::sas::{decode_key, make_token};
use iotstream_core::{DeviceId, topics};
use std::sync::Mutex;
use std::time::Duration;

struct Serve {
    pipeline: Pipeline,
    router: Router,
    handler: Arc<Handler>,
}

async fn serve_in(dir: &std::path::Path, webhook: Option<crate::app::Webhook>) -> Serve {
    serve_with(dir, |cfg| cfg.webhook = webhook).await
}

async fn serve_with(dir: &std::path::Path, f: impl FnOnce(&mut crate::app::Config)) -> Serve {
    let mut cfg = config(dir);
    f(&mut cfg);
    let (pipeline, handler) = start(cfg).await.unwrap();
    Serve {
        router: router(handler.clone()),
        pipeline,
        handler,
    }
}

impl Serve {
    /// Stops the handler and lets go of the data directory (a restarted instance opens it).
    async fn stop(self) {
        let Serve {
            pipeline,
            router,
            handler,
        } = self;
        drop((router, handler));
        pipeline.shutdown().await;
    }

    async fn post(&self, route: &str, body: Value) -> (StatusCode, Value) {
        let req = Request::post(route).body(Body::from(body.to_string())).unwrap();
        let res = self.router.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    /// A device and a SAS token for it.
    async fn device(&self, id: &str) -> String {
        let registry = self.handler.app.devices();
        let master = &self.handler.app.master_key;
        let id = DeviceId::parse(id).unwrap();
        let p = crate::devices::provision(&registry, master, &id)
            .await
            .unwrap()
            .unwrap();
        make_token(
            "hub",
            &id,
            &decode_key(&p.primary_key).unwrap(),
            i64::from(u32::MAX),
        )
    }

    /// What the HTTP trigger sends for a client's `POST /api/telemetry` (from a host whose
    /// `routePrefix` is `iot`: the function is the telemetry endpoint whatever its URL).
    async fn ingest(&self, token: Option<&str>, body: Option<Value>) -> Value {
        let mut headers = json!({"Content-Type": ["application/json"]});
        if let Some(t) = token {
            headers["Authorization"] = json!([t]);
        }
        let mut req = json!({"Url": "https://fn.example/iot/telemetry?code=x", "Method": "POST", "Query": {}, "Headers": headers});
        if let Some(b) = body {
            req["Body"] = Value::String(b.to_string());
        }
        let (status, reply) = self
            .post("/ingest", json!({"Data": {"req": req}, "Metadata": {}}))
            .await;
        assert_eq!(status, StatusCode::OK, "the invocation itself succeeds: {reply}");
        reply["Outputs"]["res"].clone()
    }

    async fn subscribe(&self, topic: &str) -> Box<dyn Consumer> {
        self.handler
            .app
            .backends
            .bus
            .subscribe("test-host", topic)
            .await
            .unwrap()
    }
}

/// The host's invocation body for Kafka records: a list of envelope texts, encoded again.
fn kafka_invocation(records: &[Delivered]) -> Value {
    let envelopes: Vec<String> = records
        .iter()
        .map(|r| {
            json!({
                "Offset": r.offset, "Partition": r.partition, "Topic": r.topic,
                "Timestamp": "2026-12-01T10:00:00Z", "Key": r.key,
                "Value": String::from_utf8_lossy(&r.value), "Headers": []
            })
            .to_string()
        })
        .collect();
    json!({"Data": {"events": Value::from(envelopes).to_string()}, "Metadata": {"sys": {}}})
}

/// At least `n` records from `consumer` (the host's trigger), failing after 10 s.
async fn take(consumer: &mut dyn Consumer, n: usize) -> Vec<Delivered> {
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while out.len() < n {
        assert!(
            std::time::Instant::now() < deadline,
            "{} of {n} records",
            out.len()
        );
        out.extend(consumer.poll(100, Duration::from_millis(200)).await.unwrap());
    }
    out
}

/// Readings a second apart from `from` seconds after a minute ago (one test's readings never
/// go back in time).
fn readings(device: &str, from: i64, values: &[f64]) -> Value {
    static T0: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    let t0 = *T0.get_or_init(|| crate::app::now().millis() - 60_000);
    let list: Vec<Value> = values
        .iter()
        .zip(from..)
        .map(|(v, i)| json!({"deviceId": device, "ts": t0 + i * 1_000, "metrics": {"temperature": v}}))
        .collect();
    Value::from(list)
}

#[tokio::test]
async fn the_readiness_probe_and_ingest_answer_as_the_host_expects() {
    let dir = tempfile::tempdir().unwrap();
    let s = serve_in(dir.path(), None).await;
    let res = s
        .router
        .clone()
        .oneshot(Request::get("/").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK, "any answer on / means ready");

    let token = s.device("pump-1").await;
    let res = s.ingest(Some(&token), Some(readings("pump-1", 0, &[70.0]))).await;
    assert_eq!(res["statusCode"], "202", "{res}");
    let body: Value = serde_json::from_str(res["body"].as_str().unwrap()).unwrap();
    assert_eq!(body, json!({"accepted": 1, "duplicates": 0}));
    assert_eq!(res["headers"]["content-type"], "application/json");
    let mut telemetry = s.subscribe(topics::TELEMETRY).await;
    assert_eq!(
        take(telemetry.as_mut(), 1).await.len(),
        1,
        "a 202 put the reading on the bus"
    );

    // The client's errors come back in `res`, with the contract's body; the invocation is fine.
    let forged = make_token(
        "hub",
        &DeviceId::parse("pump-1").unwrap(),
        &[9; 32],
        i64::from(u32::MAX),
    );
    let res = s.ingest(Some(&forged), Some(readings("pump-1", 1, &[1.0]))).await;
    assert_eq!(res["statusCode"], "401", "{res}");
    let body: Value = serde_json::from_str(res["body"].as_str().unwrap()).unwrap();
    assert!(
        body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    let res = s.ingest(Some(&token), None).await;
    assert_eq!(res["statusCode"], "400", "no Body: {res}");

    // A body that is not an invocation is the host's configuration error, said in Logs.
    let (status, reply) = s
        .post("/ingest", json!({"Data": {"req": {"Method": "POST"}}}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(reply["Logs"][0].as_str().unwrap().contains("Url"), "{reply}");
    s.stop().await;
}

#[tokio::test]
async fn analyze_alerts_once_per_record_and_resumes_from_its_checkpoint_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let s = serve_in(dir.path(), None).await;
    let token = s.device("pump-1").await;
    s.ingest(Some(&token), Some(readings("pump-1", 0, &[70.0, 85.0, 86.0])))
        .await;
    let mut telemetry = s.subscribe(topics::TELEMETRY).await;
    let batch = take(telemetry.as_mut(), 3).await;
    let mut alerts = s.subscribe(topics::ALERTS).await;

    let (status, reply) = s.post("/analyze", kafka_invocation(&batch)).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let opened = take(alerts.as_mut(), 1).await;
    let event: Value = serde_json::from_slice(&opened[0].value).unwrap();
    assert_eq!(
        (event["event"].as_str(), event["alert"]["rule"].as_str()),
        (Some("alert.opened"), Some("overheat"))
    );
    let name = format!("analyze/p{}", batch[0].partition);
    let cp = s
        .handler
        .app
        .backends
        .checkpoints
        .load_checkpoint(&name)
        .await
        .unwrap();
    let cp = cp.expect("the invocation checkpointed its partition");
    assert_eq!(cp.positions[0].next_offset, batch[2].offset + 1);

    // The host delivers the batch again (it did not see the 200): nothing is analysed twice.
    let (status, _) = s.post("/analyze", kafka_invocation(&batch)).await;
    assert_eq!(status, StatusCode::OK);
    let again = alerts.poll(10, Duration::from_millis(1_500)).await.unwrap();
    assert!(
        again
            .iter()
            .all(|r| !String::from_utf8_lossy(&r.value).contains("alert.opened")),
        "opened twice"
    );

    // A new instance (restart, rescheduled pod) resumes from the checkpoint: the alert it
    // opened before resolves, with the same id.
    drop((telemetry, alerts));
    s.stop().await;
    let s = serve_in(dir.path(), None).await;
    // (The registry survived: the old token still works.)
    s.ingest(Some(&token), Some(readings("pump-1", 3, &[60.0]))).await;
    let mut telemetry = s.subscribe(topics::TELEMETRY).await;
    let all = take(telemetry.as_mut(), 4).await;
    let (status, reply) = s.post("/analyze", kafka_invocation(&all[3..])).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let mut alerts = s.subscribe(topics::ALERTS).await;
    let events = take(alerts.as_mut(), 2).await;
    let resolved: Value = serde_json::from_slice(&events.last().unwrap().value).unwrap();
    assert_eq!(resolved["event"], "alert.resolved", "{resolved}");
    assert_eq!(
        resolved["alert"]["id"], event["alert"]["id"],
        "the same alert, from the checkpoint"
    );
    s.stop().await;
}

#[tokio::test]
async fn analyze_ticks_without_records_reports_gaps_and_sets_poison_aside() {
    let dir = tempfile::tempdir().unwrap();
    let s = serve_in(dir.path(), None).await;
    let token = s.device("pump-1").await;
    s.ingest(Some(&token), Some(readings("pump-1", 0, &[70.0, 71.0])))
        .await;
    let mut telemetry = s.subscribe(topics::TELEMETRY).await;
    let batch = take(telemetry.as_mut(), 2).await;
    let mut insights = s.subscribe(topics::INSIGHTS).await;
    let (status, _) = s.post("/analyze", kafka_invocation(&batch[..1])).await;
    assert_eq!(status, StatusCode::OK);
    // The latest state comes from the tick, a second later, with no further invocation.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let got = take(insights.as_mut(), 1).await;
        if got
            .iter()
            .any(|r| String::from_utf8_lossy(&r.value).contains(r#""kind":"latest""#))
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no latest state from the tick"
        );
    }
    drop((telemetry, insights));

    // Offsets the host committed without the state (here: a record skipped) are reported.
    let mut poison = batch[1].clone();
    poison.offset += 5;
    poison.value = b"not a reading".to_vec();
    s.stop().await;
    let s2 = serve_in(dir.path(), None).await;
    let (status, reply) = s2.post("/analyze", kafka_invocation(&[poison])).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let log = reply["Logs"][0].as_str().unwrap_or_default();
    assert!(log.contains("committed without being analysed"), "{reply}");
    let mut dead = s2.subscribe("telemetry.dead-letter").await;
    let set_aside = take(dead.as_mut(), 1).await;
    assert!(String::from_utf8_lossy(&set_aside[0].value).contains("not a reading"));
    s2.stop().await;
}

/// A webhook receiver: every body it got.
async fn receiver() -> (String, Arc<Mutex<Vec<Value>>>) {
    let got = Arc::new(Mutex::new(Vec::new()));
    let sink = got.clone();
    let app = Router::new().route(
        "/hook",
        post(move |body: Bytes| {
            let sink = sink.clone();
            async move {
                sink.lock()
                    .unwrap()
                    .push(serde_json::from_slice(&body).unwrap_or(Value::Null));
                StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, got)
}

#[tokio::test]
async fn process_stores_and_notify_delivers_each_alert_once() {
    let dir = tempfile::tempdir().unwrap();
    let (url, got) = receiver().await;
    let webhook = crate::app::Webhook {
        url,
        secret: crate::secrets::Secret::from(b"hook-secret".to_vec()),
    };
    let s = serve_in(dir.path(), Some(webhook)).await;
    let token = s.device("pump-1").await;
    s.ingest(Some(&token), Some(readings("pump-1", 0, &[85.0]))).await;
    let mut telemetry = s.subscribe(topics::TELEMETRY).await;
    let mut alerts = s.subscribe(topics::ALERTS).await;
    s.post("/analyze", kafka_invocation(&take(telemetry.as_mut(), 1).await))
        .await;
    let events = take(alerts.as_mut(), 1).await;
    let id: Value = serde_json::from_slice(&events[0].value).unwrap();
    let id = id["alert"]["id"].as_str().unwrap().to_string();

    let (status, _) = s.post("/process-alerts", kafka_invocation(&events)).await;
    assert_eq!(status, StatusCode::OK);
    let stored = s.handler.app.results().alert(&id).await.unwrap().expect("stored");
    assert_eq!(stored.rule, "overheat");

    for _ in 0..2 {
        let (status, reply) = s.post("/notify", kafka_invocation(&events)).await;
        assert_eq!(status, StatusCode::OK, "{reply}");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = got.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "delivered once, though invoked twice: {got:?}");
    assert_eq!(got[0]["alert"]["id"], id.as_str());
    s.stop().await;
}

#[tokio::test]
async fn notify_without_a_webhook_and_a_payload_of_another_shape_fail_the_invocation_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let s = serve_in(dir.path(), None).await;
    let one = Delivered {
        topic: topics::ALERTS.into(),
        partition: 0,
        offset: 0,
        key: "pump-1".into(),
        value: b"{}".to_vec(),
    };
    let (status, reply) = s.post("/notify", kafka_invocation(&[one])).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        reply["Logs"][0]
            .as_str()
            .unwrap()
            .contains("IOTSTREAM_WEBHOOK_URL"),
        "{reply}"
    );
    let (status, reply) = s
        .post("/analyze", json!({"Data": {"events": "[\"eyJ4IjoxfQ==\"]"}}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(reply["Logs"][0].as_str().unwrap().contains("dataType"), "{reply}");
    let (status, _) = s.post("/process", json!("not an invocation")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    s.stop().await;
}

/// The function app's files (host.json, `functions/*/function.json`) and this handler agree: each
/// function's folder name is a route here, each Kafka trigger hands over what [`payload`]
/// decodes, and the host commits a batch's offsets only after a 200.
#[tokio::test]
async fn the_function_app_files_match_the_handler() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let host: Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("host.json")).unwrap()).unwrap();
    assert_eq!(
        host["customHandler"]["description"]["arguments"],
        json!(["serve"])
    );
    let kafka = &host["extensions"]["kafka"];
    assert_eq!(
        kafka["CommitOnFailure"],
        json!(false),
        "a failed invocation must not commit"
    );
    assert_eq!(kafka["MaxRetries"], json!(-1), "and is retried until it succeeds");

    let dir = tempfile::tempdir().unwrap();
    let s = serve_in(dir.path(), None).await;
    let mut functions = Vec::new();
    for entry in std::fs::read_dir(root.join("functions")).unwrap() {
        let path = entry.unwrap().path().join("function.json");
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let name = path
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        let f: Value = serde_json::from_str(&text).unwrap();
        let trigger = &f["bindings"][0];
        match trigger["type"].as_str() {
            Some("httpTrigger") => assert_eq!(trigger["name"], "req", "{name}"),
            Some("kafkaTrigger") => {
                assert_eq!(
                    (trigger["cardinality"].as_str(), trigger["dataType"].as_str()),
                    (Some("many"), Some("string")),
                    "{name}: envelopes come only with dataType string"
                );
                assert!(
                    trigger["consumerGroup"]
                        .as_str()
                        .is_some_and(|g| g.starts_with("iotstream-"))
                );
                // The extension's values (`SaslSsl`, `Plain`, ...) are not librdkafka's: the
                // binding's settings must not be ones iotstream's own Kafka clients read.
                let read_by_iotstream = include_str!("../../shared/backends/src/kafka/settings.rs");
                for key in [
                    "brokerList",
                    "protocol",
                    "authenticationMode",
                    "username",
                    "password",
                ] {
                    let setting = trigger[key]
                        .as_str()
                        .and_then(|v| v.strip_prefix('%')?.strip_suffix('%'))
                        .unwrap_or_else(|| panic!("{name}: {key} is not a %setting%"));
                    assert!(
                        !read_by_iotstream.contains(&format!("\"{setting}\"")),
                        "{name}: {key} is {setting}, which iotstream's Kafka clients read with another meaning"
                    );
                }
            }
            other => panic!("{name}: unexpected trigger {other:?}"),
        }
        let (status, _) = s.post(&format!("/{name}"), json!("not an invocation")).await;
        assert_eq!(
            status,
            StatusCode::BAD_REQUEST,
            "/{name} is a route of the handler"
        );
        functions.push(name);
    }
    functions.sort();
    assert_eq!(
        functions,
        ["analyze", "ingest", "notify", "process", "process-alerts"]
    );
    s.stop().await;
}

/// Silence needs no record: the tick raises it. Unless another instance has analysed the
/// partition since (the host moved it without telling this one): then its devices are quiet
/// here, not silent, and nothing is raised.
#[tokio::test]
async fn silence_comes_from_the_tick_but_not_for_a_partition_another_instance_took_over() {
    let silence = "[[detectors]]\nkind='silence'\nfor='1s'\n";
    for moved in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let s = serve_with(dir.path(), |cfg| {
            cfg.rules = iotstream_core::rules::Rules::from_toml(silence).unwrap();
        })
        .await;
        let token = s.device("pump-1").await;
        s.ingest(Some(&token), Some(readings("pump-1", 0, &[70.0]))).await;
        let mut telemetry = s.subscribe(topics::TELEMETRY).await;
        let batch = take(telemetry.as_mut(), 1).await;
        let (status, _) = s.post("/analyze", kafka_invocation(&batch)).await;
        assert_eq!(status, StatusCode::OK);
        if moved {
            let name = format!("analyze/p{}", batch[0].partition);
            let taken = iotstream_core::ports::Checkpoint {
                positions: vec![iotstream_core::ports::Position {
                    partition: batch[0].partition,
                    next_offset: batch[0].offset + 10,
                }],
                state: Vec::new(),
            };
            s.handler
                .app
                .backends
                .checkpoints
                .save_checkpoint(&name, &taken)
                .await
                .unwrap();
        }
        let mut alerts = s.subscribe(topics::ALERTS).await;
        let got = alerts.poll(10, Duration::from_secs(8)).await.unwrap();
        let silent = got
            .iter()
            .any(|r| String::from_utf8_lossy(&r.value).contains("silence"));
        assert_eq!(silent, !moved, "moved: {moved}, alerts: {got:?}");
        drop((telemetry, alerts));
        s.stop().await;
    }
}
