//! Load generator for iotstream (see BENCHMARKS.md for how each figure is produced).
//!
//!     loadgen prepare --url U --admin-token T --devices N --out wrk.lua   # devices + a wrk script
//!     loadgen batch   --url U --admin-token T --devices N --batch K --concurrency C --seconds S
//!     loadgen latency --url U --admin-token T --devices N --rate R --seconds S --webhook-port P [--spread] [--warmup S]
//!
//! `latency` expects the server to send webhooks to `http://127.0.0.1:P/`; it sends readings at a
//! fixed rate, one in `--hot-every` (default 100) per device crossing the default `overheat` rule, and reports the time from
//! sending a reading to receiving its `alert.opened` webhook.

use iotstream_core::DeviceId;
use iotstream_core::sas::{decode_key, make_token};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_owned())
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

async fn provision(client: &reqwest::Client, url: &str, admin: &str, n: usize) -> Vec<(String, String)> {
    let run = now_ms() % 1_000_000;
    let mut out = Vec::new();
    for i in 0..n {
        let id = format!("load-{run}-{i}");
        let r: Value = client
            .post(format!("{url}/api/devices"))
            .bearer_auth(admin)
            .json(&json!({"deviceId": id}))
            .send()
            .await
            .expect("provision")
            .json()
            .await
            .expect("provision body");
        let key = decode_key(r["primaryKey"].as_str().expect("primaryKey")).expect("key");
        let token = make_token(
            "loadgen",
            &DeviceId::parse(&id).unwrap(),
            &key,
            now_ms() / 1000 + 86_400,
        );
        out.push((id, token));
    }
    out
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let mode = std::env::args().nth(1).unwrap_or_default();
    let url = arg("--url", "http://127.0.0.1:7071");
    let admin = arg("--admin-token", "");
    let devices: usize = arg("--devices", "64").parse().unwrap();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .build()
        .unwrap();
    match mode.as_str() {
        "prepare" => prepare(&client, &url, &admin, devices, &arg("--out", "wrk.lua")).await,
        "batch" => batch(&client, &url, &admin, devices).await,
        "latency" => latency(&client, &url, &admin, devices).await,
        _ => eprintln!("usage: loadgen prepare|batch|latency --url U --admin-token T [...]"),
    }
}

/// Writes a wrk script that sends single-reading requests, round-robin over the devices, each
/// with a unique message id (so none is a duplicate).
async fn prepare(client: &reqwest::Client, url: &str, admin: &str, n: usize, out: &str) {
    let devs = provision(client, url, admin, n).await;
    let mut lua = String::from("local devs = {\n");
    for (id, token) in &devs {
        lua.push_str(&format!("  {{\"{id}\", \"{token}\"}},\n"));
    }
    lua.push_str(
        r#"}
local counter = 0
local tid = 0
setup = function(thread) tid = tid + 1; thread:set("tid", tid) end
request = function()
  counter = counter + 1
  local d = devs[(counter % #devs) + 1]
  local body = '{"deviceId":"' .. d[1] .. '","id":"' .. tid .. '-' .. counter .. '","metrics":{"temperature":' .. (20 + counter % 50) .. ',"vibration":0.02}}'
  return wrk.format("POST", nil, {["Content-Type"] = "application/json", ["Authorization"] = d[2]}, body)
end
"#,
    );
    std::fs::write(out, lua).unwrap();
    eprintln!("wrote {out} for {} devices", devs.len());
}

async fn batch(client: &reqwest::Client, url: &str, admin: &str, n: usize) {
    let size: usize = arg("--batch", "1000").parse().unwrap();
    let conc: usize = arg("--concurrency", "8").parse().unwrap();
    let secs: u64 = arg("--seconds", "20").parse().unwrap();
    let devs = Arc::new(provision(client, url, admin, n).await);
    let readings = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..conc {
        let (client, url, devs, readings) = (client.clone(), url.to_owned(), devs.clone(), readings.clone());
        tasks.push(tokio::spawn(async move {
            let mut seq = 0u64;
            while Instant::now() < deadline {
                let (id, token) = &devs[(w + seq as usize * conc) % devs.len()];
                let base = now_ms() - 60_000;
                let body: String = (0..size)
                    .map(|i| {
                        format!(
                            "{{\"deviceId\":\"{id}\",\"id\":\"{w}-{seq}-{i}\",\"ts\":{},\"metrics\":{{\"temperature\":{}}}}}\n",
                            base + i as i64,
                            20 + i % 50
                        )
                    })
                    .collect();
                seq += 1;
                let r = client
                    .post(format!("{url}/api/telemetry"))
                    .header("Authorization", token)
                    .header("Content-Type", "application/x-ndjson")
                    .body(body)
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 202 => {
                        readings.fetch_add(size as u64, Ordering::Relaxed);
                    }
                    Ok(r) => eprintln!("status {}", r.status()),
                    Err(e) => eprintln!("error {e}"),
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let total = readings.load(Ordering::Relaxed);
    let secs = started.elapsed().as_secs_f64();
    println!(
        "batch: {total} readings in {secs:.1} s = {:.0} readings/s (batch {size}, concurrency {conc})",
        total as f64 / secs
    );
}

/// The default rules' `flap_max`: openings of one alert within `flap_window` (10 min) before it
/// is held as flapping.
const FLAP_MAX: u64 = 3;

/// `alert.opened` events that arrived again (redeliveries).
static DUPLICATES: AtomicU64 = AtomicU64::new(0);

async fn latency(client: &reqwest::Client, url: &str, admin: &str, n: usize) {
    let rate: f64 = arg("--rate", "1000").parse().unwrap();
    let secs: u64 = arg("--seconds", "20").parse().unwrap();
    let port: u16 = arg("--webhook-port", "9000").parse().unwrap();
    // Per device, one reading in `hot_every` crosses the threshold (opens an alert) and the next
    // one resolves it.
    let hot_every: u64 = arg("--hot-every", "100").parse().unwrap();
    // `--spread`: each device's hot readings are offset by its index, so alerts arrive evenly
    // instead of in bursts of one per device (the default, a worst case).
    let spread = std::env::args().any(|a| a == "--spread");
    // `--warmup S`: no hot reading in the first S seconds (consumer groups joining, pools
    // filling), so the figures are of the steady state; 0 (the default) measures from the start.
    let warmup: f64 = arg("--warmup", "0").parse().unwrap();
    let received: Arc<Mutex<HashMap<String, i64>>> = Arc::default();
    let rx = received.clone();
    let app = axum::Router::new().fallback(axum::routing::post(move |body: axum::body::Bytes| {
        let rx = rx.clone();
        async move {
            let at = now_ms();
            if let Ok(v) = serde_json::from_slice::<Value>(&body)
                && v["event"] == "alert.opened"
            {
                let key = format!(
                    "{}@{}",
                    v["alert"]["deviceId"].as_str().unwrap_or(""),
                    v["alert"]["openedAt"].as_str().unwrap_or("")
                );
                // At-least-once: a redelivery repeats an event; its latency is its first arrival.
                match rx.lock().unwrap().entry(key) {
                    std::collections::hash_map::Entry::Occupied(_) => {
                        DUPLICATES.fetch_add(1, Ordering::Relaxed);
                    }
                    std::collections::hash_map::Entry::Vacant(v) => {
                        v.insert(at);
                    }
                }
            }
            axum::http::StatusCode::NO_CONTENT
        }
    }));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("webhook port");
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let devs = Arc::new(provision(client, url, admin, n).await);
    let sent: Arc<Mutex<HashMap<String, i64>>> = Arc::default();
    let ok = Arc::new(AtomicU64::new(0));
    // `conns` workers, one connection each, send on a fixed schedule (open loop); a reading's
    // `ts` is its scheduled time, so latency includes any queueing on the client side too.
    let conns: usize = arg("--connections", "64").parse().unwrap();
    let per_worker = rate / conns as f64;
    let start = now_ms() + 200;
    let total = (rate * secs as f64) as u64;
    let mut tasks = Vec::new();
    for w in 0..conns {
        let (client, url, devs, sent, ok) = (
            client.clone(),
            url.to_owned(),
            devs.clone(),
            sent.clone(),
            ok.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut k: u64 = 0;
            loop {
                let i = k * conns as u64 + w as u64;
                if i >= total {
                    break;
                }
                let due = start + (k as f64 * 1000.0 / per_worker) as i64;
                let wait = due - now_ms();
                if wait > 0 {
                    tokio::time::sleep(Duration::from_millis(wait as u64)).await;
                }
                let dev = (i as usize) % devs.len();
                let (id, token) = &devs[dev];
                let offset = if spread { dev as u64 * hot_every / devs.len() as u64 } else { 0 };
                let warm = (rate * warmup) as u64;
                let round = i.saturating_sub(warm) / devs.len() as u64 + offset;
                let hot = i >= warm && round % hot_every == hot_every - 1;
                let temp = if hot { 90.0 } else { 60.0 };
                // Flap suppression (rules default: 3 openings per 10 min) holds a device's later
                // alerts open: only its first three hot readings open one.
                if temp > 80.0 && round / hot_every < FLAP_MAX {
                    sent.lock().unwrap().insert(format!("{id}@{}", iotstream_core::Ts(due).to_rfc3339()), due);
                }
                let body = json!({"deviceId": id, "id": format!("l{i}"), "ts": due, "metrics": {"temperature": temp}}).to_string();
                let r = client
                    .post(format!("{url}/api/telemetry"))
                    .header("Authorization", token)
                    .header("Content-Type", "application/json")
                    .body(body)
                    .send()
                    .await;
                if matches!(r, Ok(ref r) if r.status() == 202) {
                    ok.fetch_add(1, Ordering::Relaxed);
                }
                k += 1;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let i = total;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let sent = sent.lock().unwrap();
    let got = received.lock().unwrap();
    let mut lat: Vec<f64> = sent
        .iter()
        .filter_map(|(k, t)| got.get(k).map(|r| (r - t) as f64))
        .collect();
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    // Alerts come in bursts (every device's hot reading in the same round): the worst of each.
    let mut bursts: std::collections::BTreeMap<i64, (usize, i64)> = Default::default();
    for (k, t) in sent.iter() {
        if let Some(r) = got.get(k) {
            let b = bursts.entry((t - start) / 1000).or_default();
            *b = (b.0 + 1, b.1.max(r - t));
        }
    }
    let worst: Vec<String> = bursts
        .iter()
        .map(|(s, (n, max))| format!("+{s}s: {n} alerts, max {max} ms"))
        .collect();
    println!("bursts: {}", worst.join("; "));
    println!(
        "redelivered alert.opened events: {}",
        DUPLICATES.load(Ordering::Relaxed)
    );
    println!(
        "latency: {} readings sent at {rate}/s ({} accepted); {} of {} alerts delivered; reading→webhook p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        i,
        ok.load(Ordering::Relaxed),
        lat.len(),
        sent.len(),
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat.last().copied().unwrap_or(f64::NAN)
    );
}
