//! `iotstream simulate`: synthetic sensors with labelled anomalies.
//!
//! - Online (`--target URL`): the simulator's devices send to an ingest endpoint in real time,
//!   `--rate` readings per second in all, `--batch` readings per request; it reports sent,
//!   accepted and rejected readings and request latency percentiles, and, with an admin token,
//!   scores the alerts the server opened against its labels.
//! - Offline (`--offline`): the same signals straight through the analyze engine in event time
//!   (`--duration` of event time, in seconds of CPU), scored against the labels: the detection
//!   precision, recall and delay of every detector kind.
//!
//! Devices are provisioned by the simulator itself: through the registry in `--data-dir`, or
//! through the admin API with `--admin-token`.

use crate::devices::{provision, token};
use crate::secrets::master_key;
use anyhow::{Context, bail};
use clap::Args;
use iotstream_core::sim::{Detection, KindReport, SimConfig, Simulator, evaluate, run_offline, sim_rules};
use iotstream_core::ts::parse_duration_ms;
use iotstream_core::{DeviceId, Reading, Ts};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, Semaphore};

#[derive(Args, Debug)]
pub struct SimulateArgs {
    /// Base URL of the ingest endpoint, e.g. http://127.0.0.1:7071.
    #[arg(long)]
    pub target: Option<String>,
    /// Number of simulated devices.
    #[arg(long, default_value_t = 10)]
    pub devices: u32,
    /// Readings per second, all devices together (online).
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
    /// How long to run (online: wall time; offline: event time).
    #[arg(long, default_value = "1m")]
    pub duration: String,
    /// Readings per request (each request carries one device's readings).
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Probability, per reading of a device, that an anomaly starts.
    #[arg(long, default_value_t = 0.001)]
    pub anomaly_rate: f64,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Provision devices through the admin API (online).
    #[arg(long, env = "IOTSTREAM_ADMIN_TOKEN")]
    pub admin_token: Option<String>,
    /// Provision devices in this embedded store (online, same machine).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Run through the engine in event time instead of sending, and score detection.
    #[arg(long)]
    pub offline: bool,
    /// Offline: time between two readings of a device.
    #[arg(long, default_value = "10s")]
    pub interval: String,
}

const PREFIX: &str = "simulated-";

pub async fn run(a: SimulateArgs) -> anyhow::Result<()> {
    let duration_ms = parse_duration_ms(&a.duration)
        .filter(|ms| *ms > 0)
        .with_context(|| format!("--duration {:?}: use a duration like 30s, 10m or 2d", a.duration))?;
    if !(0.0..=1.0).contains(&a.anomaly_rate) {
        bail!("--anomaly-rate must be between 0 and 1");
    }
    if a.devices == 0 || a.devices > 100_000 {
        bail!("--devices must be between 1 and 100000");
    }
    if a.offline {
        let interval_ms = parse_duration_ms(&a.interval)
            .filter(|ms| *ms >= 1_000)
            .context("--interval must be a duration of at least 1s")?;
        let cfg = config(&a, interval_ms, crate::app::now());
        let started = Instant::now();
        let (reports, labels, readings) = run_offline(cfg, sim_rules(), duration_ms);
        print_report(
            json!({"mode": "offline", "readings": readings, "labels": labels.len(),
                   "seconds": started.elapsed().as_secs_f64()}),
            &reports,
        );
        return Ok(());
    }
    let Some(target) = a.target.clone() else {
        bail!("simulate needs --target URL (or --offline)");
    };
    if !(a.rate > 0.0 && a.rate <= 1_000_000.0) {
        bail!("--rate must be between 0 and 1000000 readings per second");
    }
    if a.batch == 0 || a.batch > 10_000 {
        bail!("--batch must be between 1 and 10000");
    }
    online(a, target.trim_end_matches('/').to_owned(), duration_ms).await
}

fn config(a: &SimulateArgs, interval_ms: i64, start: Ts) -> SimConfig {
    SimConfig {
        devices: a.devices,
        interval_ms,
        start,
        anomaly_rate: a.anomaly_rate,
        seed: a.seed,
        prefix: PREFIX.into(),
    }
}

fn print_report(mut head: Value, reports: &[KindReport]) {
    head["detection"] = serde_json::to_value(reports).expect("reports serialise");
    println!("{head}");
    for r in reports {
        eprintln!(
            "{:12} labels {:5}  caught {:5}  precision {:.3}  recall {:.3}  median delay {}",
            r.kind,
            r.labels,
            r.detected,
            r.precision,
            r.recall,
            r.median_delay_ms
                .map_or("-".into(), |ms| format!("{:.0}s", ms as f64 / 1000.0))
        );
    }
}

#[derive(Default)]
struct Tally {
    sent: u64,
    accepted: u64,
    duplicates: u64,
    rejected: HashMap<String, u64>,
    latencies_ms: Vec<f64>,
}

async fn online(a: SimulateArgs, target: String, duration_ms: i64) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let interval_ms = ((1000.0 * a.devices as f64 / a.rate).round() as i64).max(1);
    let mut sim = Simulator::new(config(&a, interval_ms, crate::app::now()));
    let ids: Vec<DeviceId> = sim.devices().cloned().collect();
    let tokens = Arc::new(credentials(&a, &client, &target, &ids).await?);
    let url = format!("{target}/api/telemetry");
    let tally = Arc::new(Mutex::new(Tally::default()));
    let inflight = Arc::new(Semaphore::new(64));
    let started = Instant::now();
    let start_ms = sim.now().millis();
    let mut pending: HashMap<DeviceId, Vec<Reading>> = HashMap::new();
    let mut tasks = tokio::task::JoinSet::new();
    while sim.now().millis() - start_ms < duration_ms {
        let due = Duration::from_millis((sim.now().millis() - start_ms) as u64);
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            tokio::time::sleep(wait).await;
        }
        for r in sim.round() {
            let list = pending.entry(r.device_id.clone()).or_default();
            list.push(r);
            if list.len() >= a.batch {
                let batch = std::mem::take(list);
                let permit = inflight.clone().acquire_owned().await?;
                let (client, url, tokens, tally) =
                    (client.clone(), url.clone(), tokens.clone(), tally.clone());
                tasks.spawn(async move {
                    send(&client, &url, &tokens, batch, &tally).await;
                    drop(permit);
                });
            }
        }
    }
    while tasks.join_next().await.is_some() {}
    let tally = std::mem::take(&mut *tally.lock().await);
    let mut lat = tally.latencies_ms;
    lat.sort_by(f64::total_cmp);
    let pct = |q: f64| {
        lat.get(((q * lat.len() as f64).ceil() as usize).max(1) - 1)
            .copied()
    };
    let head = json!({
        "mode": "online", "target": target, "sent": tally.sent, "accepted": tally.accepted,
        "duplicates": tally.duplicates, "rejected": tally.rejected,
        "seconds": started.elapsed().as_secs_f64(),
        "latencyMs": {"p50": pct(0.5), "p95": pct(0.95), "p99": pct(0.99)},
        "labels": sim.labels(),
    });
    eprintln!(
        "sent {} readings, accepted {}, rejected {:?}; request latency p50 {:?} ms, p99 {:?} ms",
        tally.sent,
        tally.accepted,
        tally.rejected,
        pct(0.5),
        pct(0.99)
    );
    let reports = match &a.admin_token {
        Some(admin) => {
            // Let the pipeline catch up, then score the alerts it opened for our devices.
            tokio::time::sleep(Duration::from_secs(3)).await;
            let detections = server_detections(&client, &target, admin).await?;
            evaluate(sim.labels(), &detections, interval_ms)
        }
        None => Vec::new(),
    };
    print_report(head, &reports);
    Ok(())
}

async fn send(
    client: &reqwest::Client,
    url: &str,
    tokens: &HashMap<DeviceId, String>,
    batch: Vec<Reading>,
    tally: &Mutex<Tally>,
) {
    let device = batch[0].device_id.clone();
    let body: Vec<Value> = batch
        .iter()
        .map(|r| json!({"deviceId": r.device_id, "ts": r.ts.millis(), "metrics": r.metrics, "id": r.message_id}))
        .collect();
    let started = Instant::now();
    let res = client
        .post(url)
        .header("Authorization", &tokens[&device])
        .json(&body)
        .send()
        .await;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    let mut t = tally.lock().await;
    t.sent += batch.len() as u64;
    t.latencies_ms.push(ms);
    match res {
        Ok(r) if r.status().as_u16() == 202 => {
            let v: Value = r.json().await.unwrap_or_default();
            t.accepted += v["accepted"].as_u64().unwrap_or(0);
            t.duplicates += v["duplicates"].as_u64().unwrap_or(0);
        }
        Ok(r) => *t.rejected.entry(r.status().as_u16().to_string()).or_default() += batch.len() as u64,
        Err(e) => {
            let kind = if e.is_timeout() { "timeout" } else { "connection" };
            *t.rejected.entry(kind.into()).or_default() += batch.len() as u64;
        }
    }
}

/// A SAS token per device: from the registry in `--data-dir`, or by (re)provisioning each
/// device through the admin API.
async fn credentials(
    a: &SimulateArgs,
    client: &reqwest::Client,
    target: &str,
    ids: &[DeviceId],
) -> anyhow::Result<HashMap<DeviceId, String>> {
    let mut tokens = HashMap::new();
    if let Some(dir) = &a.data_dir {
        let urls = iotstream_backends::BackendUrls::default();
        let registry = iotstream_backends::connect_registry(dir, &urls).await?;
        let master = master_key(dir)?;
        for id in ids {
            provision(&registry, &master, id).await?;
            tokens.insert(
                id.clone(),
                token(&registry, &master, id, "30d", "simulator").await?,
            );
        }
        return Ok(tokens);
    }
    let Some(admin) = &a.admin_token else {
        bail!("simulate needs --data-dir or --admin-token to provision its devices");
    };
    let auth = format!("Bearer {admin}");
    for id in ids {
        let add = || {
            client
                .post(format!("{target}/api/devices"))
                .header("Authorization", &auth)
                .json(&json!({"deviceId": id}))
                .send()
        };
        let mut res = add().await.with_context(|| format!("cannot reach {target}"))?;
        if res.status().as_u16() == 409 {
            // Exists from an earlier run: its key is not retrievable, so re-provision it.
            client
                .delete(format!("{target}/api/devices/{id}"))
                .header("Authorization", &auth)
                .send()
                .await?;
            res = add().await?;
        }
        if res.status().as_u16() != 201 {
            bail!(
                "cannot provision {id}: HTTP {} {}",
                res.status(),
                res.text().await.unwrap_or_default()
            );
        }
        let v: Value = res.json().await?;
        let key = v["primaryKey"].as_str().context("no primaryKey in the answer")?;
        let key = iotstream_core::sas::decode_key(key).context("the primaryKey is not base64")?;
        let expiry = crate::app::now().millis() / 1000 + 30 * 86_400;
        tokens.insert(
            id.clone(),
            iotstream_core::sas::make_token("simulator", id, &key, expiry),
        );
    }
    Ok(tokens)
}

/// The alerts the server opened for simulated devices, as detections at their opening time.
async fn server_detections(
    client: &reqwest::Client,
    target: &str,
    admin: &str,
) -> anyhow::Result<Vec<Detection>> {
    let v: Value = client
        .get(format!("{target}/api/alerts?limit=10000"))
        .header("Authorization", format!("Bearer {admin}"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let alerts = v["alerts"].as_array().cloned().unwrap_or_default();
    Ok(alerts
        .iter()
        .filter(|a| a["deviceId"].as_str().is_some_and(|d| d.starts_with(PREFIX)))
        .filter_map(|a| {
            Some(Detection {
                kind: a["kind"].as_str()?.to_owned(),
                device_id: DeviceId::parse(a["deviceId"].as_str()?).ok()?,
                metric: a["metric"].as_str()?.to_owned(),
                at: Ts::parse_rfc3339(a["openedAt"].as_str()?)?,
            })
        })
        .collect())
}
