//! `iotstream up --simulate N`: N simulated sensors sending to this server over HTTP with real
//! SAS tokens, so a newcomer sees readings, aggregates and alerts flow without any device.
//!
//! Each device reports once a second: `temperature` follows a slow cycle around 60 °C with noise
//! and, now and then, an excursion above 80 (the built-in `overheat` rule); `vibration` is low
//! with rare bursts above 0.5 (`high-vibration`). `iotstream simulate` (its own issue) adds
//! labelled anomalies and detection scoring on top.

use crate::secrets::Secret;
use iotstream_core::DeviceId;
use iotstream_core::ports::DeviceRegistry;
use iotstream_core::sas::{derive_device_key, make_token};
use rand::Rng;
use std::sync::Arc;
use std::time::Duration;

/// Provisions `sim-1..=sim-N` (reusing existing ones) and starts sending to `base_url`.
pub async fn start(
    n: u32,
    base_url: String,
    registry: Arc<dyn DeviceRegistry>,
    master: Secret,
) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    for i in 1..=n {
        let id = DeviceId::parse(&format!("sim-{i}")).map_err(anyhow::Error::msg)?;
        let now = crate::app::now();
        let rec = match registry.get_device(&id).await? {
            Some(r) => r,
            None => registry
                .add_device(&id, now)
                .await?
                .ok_or_else(|| anyhow::anyhow!("cannot add {id}"))?,
        };
        let key = derive_device_key(master.expose(), &id, rec.generation);
        let token = make_token("simulator", &id, &key, now.millis() / 1000 + 10 * 365 * 86_400);
        tokio::spawn(device(
            client.clone(),
            format!("{base_url}/api/telemetry"),
            id,
            token,
            i,
        ));
    }
    Ok(())
}

async fn device(client: reqwest::Client, url: String, id: DeviceId, token: String, seed: u32) {
    let phase = f64::from(seed) * 0.7;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut excursion = 0u32;
    let mut n: u64 = 0;
    loop {
        tick.tick().await;
        n += 1;
        let (temperature, vibration) = {
            let mut rng = rand::rng();
            if excursion == 0 && rng.random_bool(0.004) {
                excursion = 20 + rng.random_range(0..40);
            }
            let t = n as f64;
            let base =
                60.0 + 12.0 * (t / 300.0 * std::f64::consts::TAU + phase).sin() + rng.random_range(-1.5..1.5);
            let temperature = if excursion > 0 {
                excursion -= 1;
                base + 25.0
            } else {
                base
            };
            let burst = rng.random_bool(0.002);
            let vibration: f64 = if burst {
                0.6 + rng.random_range(0.0..0.3)
            } else {
                0.05 + rng.random_range(0.0..0.03)
            };
            (temperature, vibration)
        };
        let body = serde_json::json!({
            "deviceId": id,
            "id": format!("{id}-{n}"),
            "metrics": {"temperature": (temperature * 100.0).round() / 100.0, "vibration": (vibration * 1000.0).round() / 1000.0},
        });
        let sent = client
            .post(&url)
            .header("Authorization", &token)
            .json(&body)
            .send()
            .await;
        if let Err(e) = sent {
            tracing::debug!(device = %id, error = %e, "simulated reading not sent");
        }
    }
}
