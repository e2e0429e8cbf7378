//! The embedded runner: one task per consumer, each polling the bus, calling its function's
//! handler, and committing only after the handler's side effects are durable. The same handlers
//! run behind the Functions host and the Kafka consumers; only this loop is runner-specific.

mod analyze;
pub mod notify;
pub mod partitions;
mod process;

use crate::app::{AppState, Config};
use iotstream_core::PortError;
use iotstream_core::ports::Consumer;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Records per poll.
pub const BATCH: usize = 5_000;
/// How long a poll waits for the first record (the bus wakes it as soon as one arrives).
pub const POLL_WAIT: Duration = Duration::from_millis(500);

/// How long analyze lets a small batch grow before evaluating it: fewer, larger batches mean
/// fewer bus appends (disk flushes) downstream, for at most this much added alert latency.
/// Adaptive (measured, BENCHMARKS.md): below [`BUSY_RATE`] lingering gathers little and only adds
/// latency, above it the saved flushes keep the tail short.
pub fn analyze_linger(records_per_sec: f64) -> Duration {
    if records_per_sec > BUSY_RATE {
        Duration::from_millis(5)
    } else {
        Duration::from_millis(1)
    }
}

/// Input rate (records/s) above which analyze lingers longer.
pub const BUSY_RATE: f64 = 5_000.0;
/// The same for process, which is off the alert path: latest state and aggregates coalesce.
pub const PROCESS_LINGER: Duration = Duration::from_millis(50);

/// Polls like `Consumer::poll`, then, if the batch is small, waits `linger` once for more
/// (Kafka's `fetch.min.bytes` + `fetch.max.wait.ms`).
pub async fn poll_lingering(
    consumer: &mut dyn Consumer,
    max: usize,
    wait: Duration,
    linger: Duration,
) -> Result<Vec<iotstream_core::ports::Delivered>, PortError> {
    let mut batch = consumer.poll(max, wait).await?;
    if !batch.is_empty() && batch.len() < max / 2 && !linger.is_zero() {
        tokio::time::sleep(linger).await;
        // The first part is already taken from the consumer: never drop it for a failed top-up.
        if let Ok(more) = consumer.poll(max - batch.len(), Duration::ZERO).await {
            batch.extend(more);
        }
    }
    Ok(batch)
}

pub async fn spawn_all(
    state: &Arc<AppState>,
    cfg: &Config,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<Vec<JoinHandle<()>>> {
    let f = cfg.functions;
    let mut tasks = Vec::new();
    if f.analyze {
        tasks.push(analyze::spawn(state, cfg, shutdown.clone()).await?);
    }
    if f.process {
        let console = f == crate::app::Functions::ALL;
        tasks.extend(process::spawn(state, console, shutdown.clone()).await?);
    }
    // Retention runs beside the results writer (process): one pass per deployment of it.
    if f.process
        && let Some(task) = spawn_retention(state, cfg, shutdown.clone())
    {
        tasks.push(task);
    }
    if f.notify {
        match &cfg.webhook {
            Some(webhook) => tasks.extend(notify::spawn(state, cfg, webhook, shutdown).await?),
            None if f == crate::app::Functions::ALL => {
                tracing::info!("no IOTSTREAM_WEBHOOK_URL: alerts are stored and served, not pushed")
            }
            None => anyhow::bail!("notify needs IOTSTREAM_WEBHOOK_URL (and IOTSTREAM_WEBHOOK_SECRET)"),
        }
    }
    Ok(tasks)
}

/// Starts retention when the backends have it (the embedded store).
pub fn spawn_retention(
    state: &Arc<AppState>,
    cfg: &Config,
    shutdown: watch::Receiver<bool>,
) -> Option<JoinHandle<()>> {
    let retention = state.backends.retention.clone()?;
    Some(tokio::spawn(run_retention(retention, cfg.retention, shutdown)))
}

/// How often retention runs.
pub const RETENTION_EVERY: Duration = Duration::from_secs(60);

/// Deletes what is older than `keep` (and consumed) every [`RETENTION_EVERY`].
async fn run_retention(
    retention: Arc<iotstream_backends::retention::Retention>,
    keep: Duration,
    shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(RETENTION_EVERY) => {}
            _ = analyze::wait_stop(&shutdown) => return,
        }
        match retention.enforce(keep).await {
            Ok(r) => {
                metrics::counter!("iotstream_retention_deleted_readings_total").increment(r.readings);
                if r.readings > 0 || r.internal_segments > 0 {
                    tracing::info!(
                        readings = r.readings,
                        internal_segments = r.internal_segments,
                        "retention deleted old data"
                    );
                }
            }
            Err(e) => tracing::warn!(error = %e, "retention failed; will retry"),
        }
    }
}

/// Runs `op` until it succeeds, backing off from 50 ms to 5 s between tries. False when
/// shutdown came first: the caller then stops without committing, and the input is redelivered.
pub async fn retry_until_ok<F, Fut>(what: &str, shutdown: &watch::Receiver<bool>, op: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), PortError>>,
{
    retry_until(what, shutdown, op).await.is_some()
}

/// [`retry_until_ok`] for an `op` with a result: `None` when shutdown came first.
pub async fn retry_until<T, F, Fut>(what: &str, shutdown: &watch::Receiver<bool>, mut op: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, PortError>>,
{
    let mut delay = Duration::from_millis(50);
    loop {
        match op().await {
            Ok(value) => return Some(value),
            Err(e) => {
                metrics::counter!("iotstream_worker_retries_total", "worker" => what.to_owned()).increment(1);
                tracing::warn!(worker = what, error = %e, retry_in_ms = delay.as_millis() as u64, "side effect failed; retrying the batch");
                if *shutdown.borrow() {
                    return None;
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Sets the poisoned records of a batch aside on their dead-letter topic, retrying like
/// [`retry_until_ok`]; call it before committing past them. False when shutdown came first.
pub async fn dead_letter_poison(
    what: &str,
    bus: &dyn iotstream_core::ports::EventBus,
    records: &[iotstream_core::ports::Delivered],
    poisoned: &[iotstream_core::ports::Poisoned],
    shutdown: &watch::Receiver<bool>,
) -> bool {
    if poisoned.is_empty() {
        return true;
    }
    let ok = retry_until_ok(what, shutdown, || async {
        for p in poisoned {
            bus.dead_letter(&records[p.index], &p.reason).await?;
        }
        Ok(())
    })
    .await;
    if ok {
        metrics::counter!("iotstream_dead_lettered_records_total", "worker" => what.to_owned())
            .increment(poisoned.len() as u64);
    }
    ok
}

/// Commits the consumer's positions, retrying like [`retry_until_ok`].
pub async fn commit_until_ok(consumer: &mut dyn Consumer, shutdown: &watch::Receiver<bool>) -> bool {
    let mut delay = Duration::from_millis(50);
    loop {
        match consumer.commit().await {
            Ok(()) => return true,
            Err(e) => {
                tracing::warn!(error = %e, "offset commit failed; retrying");
                if *shutdown.borrow() {
                    return false;
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// How often a busy consumer commits. Committing after every batch would add a disk flush per
/// batch; committing less often only means more (idempotent) redelivery after a crash.
pub const COMMIT_EVERY: Duration = Duration::from_millis(200);

/// Commits a consumer's positions at most every [`COMMIT_EVERY`] while busy, at once when idle,
/// and before stopping. Call `done` after each batch's side effects are durable.
pub struct CommitPacer {
    last: std::time::Instant,
    dirty: bool,
}

impl CommitPacer {
    pub fn new() -> Self {
        CommitPacer {
            last: std::time::Instant::now(),
            dirty: false,
        }
    }

    /// A batch is fully handled; commit if it is time. False when shutdown interrupted it.
    pub async fn done(&mut self, consumer: &mut dyn Consumer, shutdown: &watch::Receiver<bool>) -> bool {
        self.dirty = true;
        if self.last.elapsed() < COMMIT_EVERY {
            return true;
        }
        self.flush(consumer, shutdown).await
    }

    /// Commits whatever is pending (idle or stopping).
    pub async fn flush(&mut self, consumer: &mut dyn Consumer, shutdown: &watch::Receiver<bool>) -> bool {
        if !self.dirty {
            return true;
        }
        let ok = commit_until_ok(consumer, shutdown).await;
        self.dirty = !ok;
        self.last = std::time::Instant::now();
        ok
    }
}

/// What a consumer loop does next.
pub enum Next {
    Stop,
    Handle(Vec<iotstream_core::ports::Delivered>),
    /// Nothing to handle (idle, or the poll failed and was backed off): poll again.
    Again,
}

/// The shared prologue of the process and notify loops: stop (after a final commit) when asked,
/// otherwise poll — never cancelled mid-poll, so what it returns is always handled — committing
/// when idle and backing off when the poll fails.
pub async fn next_batch(
    what: &str,
    consumer: &mut dyn Consumer,
    pacer: &mut CommitPacer,
    shutdown: &watch::Receiver<bool>,
    linger: Duration,
) -> Next {
    if stopping(shutdown) {
        pacer.flush(consumer, shutdown).await;
        return Next::Stop;
    }
    match poll_lingering(consumer, BATCH, POLL_WAIT, linger).await {
        Ok(r) if r.is_empty() => {
            pacer.flush(consumer, shutdown).await;
            Next::Again
        }
        Ok(r) => Next::Handle(r),
        Err(e) => {
            tracing::warn!(worker = what, error = %e, "poll failed");
            tokio::time::sleep(POLL_WAIT).await;
            Next::Again
        }
    }
}

pub fn stopping(shutdown: &watch::Receiver<bool>) -> bool {
    *shutdown.borrow()
}
