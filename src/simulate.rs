//! `iotstream up --simulate N`: N simulated sensors sending to this server over HTTP with real
//! SAS tokens, so a newcomer sees readings, aggregates and alerts flow without any device.
//!
//! Each device reports once a second: `temperature` follows a slow cycle (an hour) around 60 °C
//! with noise and, now and then, an excursion 28 °C up, above 80, for 20-60 s (the built-in
//! `overheat` rule; the level-shift detector reports the jump too); `vibration` is low with rare
//! one-reading bursts (the spike detector). Nothing else: the alerts a newcomer sees are the ones the signal
//! was made to cause, not false alarms (`the_demo_signal_raises_only_the_alerts_it_is_made_for`).
//! `iotstream simulate` adds labelled anomalies of every kind and detection scoring on top.

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

/// One simulated device's signal. The cycle follows the clock (and the device's number), so a
/// restarted `up` carries on where the last one left off instead of jumping to another point of
/// the cycle, which the level-shift detector would rightly report.
struct Signal {
    rng: rand::rngs::StdRng,
    phase: f64,
    n: u64,
    /// Readings left in the current excursion.
    excursion: u32,
}

/// Period of the temperature cycle, in seconds of the clock: slow, like a real one. (A cycle of
/// minutes is a ramp of several noise widths a minute, which the level-shift detector rightly
/// reports as shifts, on every device.)
const CYCLE: f64 = 3_600.0;

impl Signal {
    /// Device number `device`; `seed` for the noise and the excursions.
    fn new(device: u32, seed: u64) -> Signal {
        Signal {
            rng: rand::SeedableRng::seed_from_u64(seed),
            phase: f64::from(device) * 0.7,
            n: 0,
            excursion: 0,
        }
    }

    /// The reading at `t` seconds since the epoch: (temperature, vibration, in an excursion).
    fn next(&mut self, t: f64) -> (f64, f64, bool) {
        self.n += 1;
        let rng = &mut self.rng;
        if self.excursion == 0 && rng.random_bool(0.004) {
            self.excursion = 20 + rng.random_range(0..40);
        }
        let base =
            60.0 + 6.0 * (t / CYCLE * std::f64::consts::TAU + self.phase).sin() + rng.random_range(-1.5..1.5);
        let hot = self.excursion > 0;
        self.excursion = self.excursion.saturating_sub(1);
        let temperature = if hot { base + 28.0 } else { base };
        let vibration: f64 = if rng.random_bool(0.002) {
            0.6 + rng.random_range(0.0..0.3)
        } else {
            0.05 + rng.random_range(0.0..0.03)
        };
        (
            (temperature * 100.0).round() / 100.0,
            (vibration * 1000.0).round() / 1000.0,
            hot,
        )
    }
}

async fn device(client: reqwest::Client, url: String, id: DeviceId, token: String, seed: u32) {
    // Message ids unique to this run: a restart with the same data directory must not send ids
    // the store already holds (ingest would count every reading as a re-send).
    let run = crate::app::now().millis();
    let mut signal = Signal::new(seed, u64::from(seed) ^ run as u64);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let (temperature, vibration, _) = signal.next(crate::app::now().millis() as f64 / 1000.0);
        let body = serde_json::json!({
            "deviceId": id,
            "id": format!("{id}-{run}-{}", signal.n),
            "metrics": {"temperature": temperature, "vibration": vibration},
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

#[cfg(test)]
mod tests {
    use super::*;
    use iotstream_core::Ts;
    use iotstream_core::engine::Engine;
    use iotstream_core::model::AlertEventKind;
    use iotstream_core::reading::{BodyFormat, Limits, parse_body};
    use iotstream_core::rules::Rules;

    /// Two hours of 10 demo devices through the engine with the built-in rules: overheat and
    /// spikes show up, and every level shift is an excursion's jump up or back, reported within
    /// 10 s of it (no alarms from the cycle, no late ones).
    #[test]
    fn the_demo_signal_raises_only_the_alerts_it_is_made_for() {
        let mut engine = Engine::new(Rules::defaults());
        let mut signals: Vec<Signal> = (1..=10).map(|d| Signal::new(d, u64::from(d))).collect();
        // Per device, the last second it was in an excursion.
        let mut hot_at = vec![i64::MIN; signals.len()];
        let (mut opened, mut unexplained) = (std::collections::BTreeMap::new(), Vec::new());
        let t0 = 1_767_225_600_000i64;
        for second in 0..7_200i64 {
            let mut body = String::new();
            for (d, s) in signals.iter_mut().enumerate() {
                let (temperature, vibration, hot) = s.next((t0 / 1000 + second) as f64);
                if hot {
                    hot_at[d] = second;
                }
                body.push_str(&format!(
                    "{{\"deviceId\":\"sim-{d}\",\"ts\":{},\"metrics\":{{\"temperature\":{temperature},\"vibration\":{vibration}}}}}\n",
                    t0 + second * 1000
                ));
            }
            let now = Ts(t0 + second * 1000 + 100);
            let readings = parse_body(body.as_bytes(), BodyFormat::Ndjson, now, &Limits::default()).unwrap();
            let mut out = engine.process(&readings, now);
            out.alerts.extend(engine.tick(now).alerts);
            for e in out.alerts.iter().filter(|e| e.event == AlertEventKind::Opened) {
                *opened.entry(e.alert.kind.clone()).or_insert(0) += 1;
            }
            // An excursion's level shifts: its jump up, and its jump back, found within a few
            // readings of it, also when the excursion ended while the detector was re-learning
            // the level it had adopted (it used to take up to two minutes then).
            for e in out.alerts.iter().filter(|e| {
                e.alert.kind == "level_shift"
                    && matches!(e.event, AlertEventKind::Opened | AlertEventKind::Updated)
            }) {
                let d: usize = e.alert.device_id.as_str()[4..].parse().unwrap();
                if second - hot_at[d] > 10 {
                    unexplained.push(format!(
                        "{} at {second} s ({} s after an excursion): {}",
                        e.alert.device_id,
                        second - hot_at[d],
                        e.alert.message
                    ));
                }
            }
        }
        assert!(opened.get("threshold").copied().unwrap_or(0) >= 10, "{opened:?}");
        assert!(opened.get("spike").copied().unwrap_or(0) >= 5, "{opened:?}");
        assert!(
            unexplained.is_empty(),
            "level shifts late or without an excursion: {unexplained:?} ({opened:?})"
        );
    }

    /// Two runs of `up` (different seeds) put a device at the same point of its cycle at the same
    /// time: they differ by noise only (outside excursions), so a restart is no level shift.
    #[test]
    fn a_restarted_device_carries_on_its_cycle() {
        let t = 1_767_225_600.0;
        let (mut first, mut second) = (Signal::new(3, 1), Signal::new(3, 2));
        for s in 0..3_600 {
            let (a, _, hot_a) = first.next(t + f64::from(s));
            let (b, _, hot_b) = second.next(t + f64::from(s));
            if !hot_a && !hot_b {
                assert!((a - b).abs() <= 3.01, "{a} against {b} at {s} s");
            }
        }
    }
}
