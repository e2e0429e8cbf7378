//! analyze's loop: poll → (load the checkpoint of a newly owned partition) → evaluate → publish
//! → periodically checkpoint (per partition: its devices' state + its position; snapshotted in
//! the loop, saved in the background) and commit.
//! After a crash, replay from the checkpoints re-publishes identical outputs (deterministic
//! ids), which downstream sinks absorb.

use super::partitions::{Owned, Saving};
use super::{BATCH, POLL_WAIT, retry_until_ok, stopping};
use crate::app::{AppState, Config};
use anyhow::Context;
use iotstream_analyze::{Input, evaluate, publish, tick};
use iotstream_core::engine::Engine;
use iotstream_core::{groups, topics};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How often the engine's processing-time work runs (silence, partial windows, latest state).
const TICK: Duration = Duration::from_secs(1);

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
        let mut saving: Option<Saving> = None;
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
                        let started = Instant::now();
                        let out = evaluate(&input, partition, &mut engine, crate::app::now());
                        step_done("evaluate", started);
                        iotstream_analyze::record_alert_delay("evaluated", &out.alerts);
                        let started = Instant::now();
                        if !retry_until_ok("analyze", &shutdown, || publish(&out, bus.as_ref())).await {
                            return; // state now includes an unpublished batch: do not checkpoint it
                        }
                        step_done("publish", started);
                        dirty = true;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "analyze poll failed");
                    tokio::time::sleep(POLL_WAIT).await;
                }
            }
            let checkpoint_due = dirty && saving.is_none() && last.elapsed() >= interval;
            if ticked.elapsed() >= TICK || checkpoint_due {
                // Before a checkpoint too: what the checkpoint covers has been emitted.
                let out = tick(&mut engine, crate::app::now());
                ticked = Instant::now();
                if !retry_until_ok("analyze", &shutdown, || publish(&out, bus.as_ref())).await {
                    return;
                }
                dirty |= !out.alerts.is_empty();
            }
            // The checkpoint is snapshotted here and saved in the background, one save at a
            // time; what it saved is committed once it is done.
            if checkpoint_due {
                let started = Instant::now();
                let snapshot = owned.snapshot(&mut engine, consumer.as_ref());
                dirty = false;
                step_done("snapshot", started);
                saving = Some(Saving::start(checkpoints.clone(), snapshot, started.elapsed()));
            }
            if let Some(save) = saving.take_if(|s| s.is_finished()) {
                let snapshot_took = save.snapshot_took;
                let (saved, took) = save.finish(consumer.as_mut()).await;
                dirty |= !saved;
                // Checkpoints of a large state (tens of MB at 10,000s of devices) take a while:
                // space them so the snapshot costs at most ~5 % of analyze's time and the
                // database is not written continuously; a crash replays more.
                interval = every.max(snapshot_took * 20).max(took * 2);
                last = Instant::now();
            }
            if stopping(&shutdown) {
                break;
            }
        }
        if let Some(save) = saving.take() {
            save.finish(consumer.as_mut()).await;
        }
        let out = tick(&mut engine, crate::app::now());
        if publish(&out, bus.as_ref()).await.is_ok() && (dirty || !out.alerts.is_empty()) {
            owned
                .checkpoint(&mut engine, consumer.as_mut(), checkpoints.as_ref())
                .await;
        }
    }))
}

/// `iotstream_analyze_step_seconds{step}`: how long one step took (evaluate a partition's
/// batch, publish its outputs, snapshot the state, save the checkpoints in the background).
pub(super) fn step_done(step: &'static str, started: Instant) {
    metrics::histogram!("iotstream_analyze_step_seconds", "step" => step)
        .record(started.elapsed().as_secs_f64());
}

pub async fn wait_stop(shutdown: &watch::Receiver<bool>) {
    let mut rx = shutdown.clone();
    let _ = rx.wait_for(|s| *s).await;
}
