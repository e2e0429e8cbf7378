//! analyze's loop: poll → (load the checkpoint of a newly owned partition) → evaluate → publish
//! → periodically checkpoint (per partition: its devices' state + its position) and commit.
//! After a crash, replay from the checkpoints re-publishes identical outputs (deterministic
//! ids), which downstream sinks absorb.

use super::partitions::Owned;
use super::{BATCH, POLL_WAIT, retry_until_ok, stopping};
use crate::app::{AppState, Config};
use anyhow::Context;
use iotstream_analyze::{Input, evaluate, publish, tick};
use iotstream_core::engine::Engine;
use iotstream_core::{groups, topics};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How often the engine's processing-time work runs (silence, partial windows, latest state).
const TICK: std::time::Duration = std::time::Duration::from_secs(1);

pub async fn spawn(
    state: &Arc<AppState>,
    cfg: &Config,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<JoinHandle<()>> {
    let bus = state.backends.bus.clone();
    let checkpoints = state.backends.checkpoints.clone();
    let mut consumer = bus
        .subscribe(groups::ANALYZE, topics::TELEMETRY)
        .await
        .context("analyze cannot subscribe")?;
    let mut engine = Engine::new(cfg.rules.clone());
    let mut owned = Owned::default();
    let every = cfg.checkpoint_every;
    let mut interval = every;
    Ok(tokio::spawn(async move {
        let mut dirty = false;
        let mut last = Instant::now();
        let mut ticked = Instant::now();
        // Input rate, smoothed over recent batches: decides how long a small batch may linger.
        let (mut rate, mut polled_at) = (0.0f64, Instant::now());
        loop {
            // Never cancelled mid-poll: records it returns are always handled, then shutdown is
            // checked between batches.
            let linger = super::analyze_linger(rate);
            let batch = super::poll_lingering(consumer.as_mut(), BATCH, POLL_WAIT, linger).await;
            let elapsed = polled_at.elapsed().as_secs_f64().max(1e-3);
            polled_at = Instant::now();
            let n = batch.as_ref().map_or(0, Vec::len) as f64;
            rate = 0.8 * rate + 0.2 * (n / elapsed);
            match batch {
                Ok(records) if !records.is_empty() => {
                    let admitted = owned
                        .admit(
                            records,
                            &mut engine,
                            consumer.as_mut(),
                            checkpoints.as_ref(),
                            &shutdown,
                        )
                        .await;
                    let Ok(groups) = admitted else {
                        // Shutdown came while a checkpoint could not be loaded: nothing of this
                        // batch was analysed or committed; it comes again after the restart.
                        return;
                    };
                    for (partition, records) in groups {
                        let input = Input::decode(&records);
                        if !super::dead_letter_poison(
                            "analyze",
                            bus.as_ref(),
                            &records,
                            &input.poisoned,
                            &shutdown,
                        )
                        .await
                        {
                            return;
                        }
                        let out = evaluate(&input, partition, &mut engine, crate::app::now());
                        if !retry_until_ok("analyze", &shutdown, || publish(&out, bus.as_ref())).await {
                            return; // state now includes an unpublished batch: do not checkpoint it
                        }
                        dirty = true;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "analyze poll failed");
                    tokio::time::sleep(POLL_WAIT).await;
                }
            }
            let checkpoint_due = dirty && last.elapsed() >= interval;
            if ticked.elapsed() >= TICK || checkpoint_due {
                // Before a checkpoint too: what the checkpoint covers has been emitted.
                let out = tick(&mut engine, crate::app::now());
                ticked = Instant::now();
                if !retry_until_ok("analyze", &shutdown, || publish(&out, bus.as_ref())).await {
                    return;
                }
                dirty |= !out.alerts.is_empty();
            }
            if checkpoint_due {
                let started = Instant::now();
                if owned
                    .checkpoint(&mut engine, consumer.as_mut(), checkpoints.as_ref())
                    .await
                {
                    dirty = false;
                }
                // Checkpoints of a large state (tens of MB at 10,000s of devices) take a while:
                // space them so they cost at most ~5 % of analyze's time; a crash replays more.
                interval = every.max(started.elapsed() * 20);
                last = Instant::now();
            }
            if stopping(&shutdown) {
                break;
            }
        }
        let out = tick(&mut engine, crate::app::now());
        if publish(&out, bus.as_ref()).await.is_ok() && (dirty || !out.alerts.is_empty()) {
            owned
                .checkpoint(&mut engine, consumer.as_mut(), checkpoints.as_ref())
                .await;
        }
    }))
}

pub async fn wait_stop(shutdown: &watch::Receiver<bool>) {
    let mut rx = shutdown.clone();
    let _ = rx.wait_for(|s| *s).await;
}
