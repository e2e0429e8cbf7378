//! analyze's loop: restore checkpoint → poll → evaluate → publish → periodically checkpoint
//! (engine state + positions) and commit. After a crash, replay from the checkpoint re-publishes
//! identical outputs (deterministic ids), which downstream sinks absorb.

use super::{BATCH, POLL_WAIT, retry_until_ok, stopping};
use crate::app::{AppState, Config};
use anyhow::Context;
use iotstream_analyze::{Input, evaluate, publish};
use iotstream_core::engine::Engine;
use iotstream_core::ports::{Checkpoint, CheckpointStore, Consumer};
use iotstream_core::{groups, topics};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::watch;
use tokio::task::JoinHandle;

const CHECKPOINT: &str = "analyze";

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
    let engine = match checkpoints
        .load_checkpoint(CHECKPOINT)
        .await
        .context("cannot load the analyze checkpoint")?
    {
        Some(cp) => {
            consumer
                .seek(&cp.positions)
                .await
                .context("cannot seek to the analyze checkpoint")?;
            Engine::restore(cfg.rules.clone(), &cp.state).map_err(anyhow::Error::msg)?
        }
        None => Engine::new(cfg.rules.clone()),
    };
    let every = cfg.checkpoint_every;
    let mut interval = every;
    Ok(tokio::spawn(async move {
        let mut engine = engine;
        let mut dirty = false;
        let mut last = Instant::now();
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
                    let out = evaluate(&input, &mut engine);
                    if !retry_until_ok("analyze", &shutdown, || publish(&out, bus.as_ref())).await {
                        return; // state now includes an unpublished batch: do not checkpoint it
                    }
                    dirty = true;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "analyze poll failed");
                    tokio::time::sleep(POLL_WAIT).await;
                }
            }
            if dirty && last.elapsed() >= interval {
                let started = Instant::now();
                if checkpoint(&engine, consumer.as_mut(), checkpoints.as_ref()).await {
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
        if dirty {
            checkpoint(&engine, consumer.as_mut(), checkpoints.as_ref()).await;
        }
    }))
}

async fn checkpoint(engine: &Engine, consumer: &mut dyn Consumer, store: &dyn CheckpointStore) -> bool {
    let cp = Checkpoint {
        positions: consumer.positions(),
        state: engine.snapshot(),
    };
    metrics::gauge!("iotstream_analyze_checkpoint_bytes").set(cp.state.len() as f64);
    if let Err(e) = store.save_checkpoint(CHECKPOINT, &cp).await {
        tracing::warn!(error = %e, "analyze checkpoint failed; will retry");
        return false;
    }
    // Committed offsets only feed lag metrics and other runners; the checkpoint is what resumes.
    if let Err(e) = consumer.commit().await {
        tracing::warn!(error = %e, "analyze offset commit failed");
    }
    true
}

pub async fn wait_stop(shutdown: &watch::Receiver<bool>) {
    let mut rx = shutdown.clone();
    let _ = rx.wait_for(|s| *s).await;
}
