//! notify's loops: the `alerts` consumer sends each batch, records it in the outbox, then
//! commits its offsets; the delivery loop retries what the outbox holds, waking when something
//! is queued and when the next retry is due.

use super::analyze::wait_stop;
use super::{CommitPacer, Next, retry_until, retry_until_ok};
use crate::app::{AppState, Config, Webhook};
use anyhow::Context;
use iotstream_core::ports::Notifier;
use iotstream_core::{groups, topics};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub async fn spawn(
    state: &Arc<AppState>,
    cfg: &Config,
    webhook: &Webhook,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<Vec<JoinHandle<()>>> {
    let consumer = state
        .backends
        .bus
        .subscribe(groups::NOTIFY, topics::ALERTS)
        .await
        .context("notify cannot subscribe")?;
    let (sender, deliver) = spawn_delivery(state, cfg, webhook, shutdown.clone())?;
    let consume = tokio::spawn(run_consumer(state.clone(), consumer, sender, shutdown));
    Ok(vec![consume, deliver])
}

/// The delivery loop alone (`serve`, where the Functions host consumes `alerts`), and the sender
/// fresh events go out with.
pub fn spawn_delivery(
    state: &Arc<AppState>,
    cfg: &Config,
    webhook: &Webhook,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<(Sender, JoinHandle<()>)> {
    let notifier: Arc<dyn Notifier> = Arc::new(
        iotstream_backends::WebhookNotifier::with_timeout(&webhook.url, Duration::from_secs(10))
            .context("invalid IOTSTREAM_WEBHOOK_URL")?,
    );
    let sender = Sender {
        notifier,
        secret: webhook.secret.clone(),
        policy: cfg.retry,
        health: Arc::new(iotstream_notify::Health::default()),
    };
    let deliver = tokio::spawn(run_delivery(state.clone(), sender.clone(), shutdown));
    Ok((sender, deliver))
}

/// What both loops send with.
#[derive(Clone)]
pub struct Sender {
    notifier: Arc<dyn Notifier>,
    secret: crate::secrets::Secret,
    policy: iotstream_notify::RetryPolicy,
    health: Arc<iotstream_notify::Health>,
}

impl Sender {
    /// Sends a batch's fresh events, then records them in the outbox, slice by slice: the
    /// webhook does not wait for a commit. A crash before a slice's record re-sends that slice
    /// (same delivery ids): the caller has not committed the batch, and slices recorded already
    /// are skipped when it comes again. Retries while a backend fails; false when stopping.
    pub async fn send_all(
        &self,
        state: &AppState,
        events: &[iotstream_core::AlertEvent],
        shutdown: &watch::Receiver<bool>,
    ) -> bool {
        let outbox = state.backends.outbox.clone();
        let deps = self.deps(outbox.as_ref());
        for slice in events.chunks(iotstream_notify::SLICE) {
            let sent = retry_until("notify", shutdown, || {
                let queue_only = self.health.failing();
                iotstream_notify::send_fresh(&deps, slice, crate::app::now(), queue_only, rand::random::<f64>)
            })
            .await;
            let Some(sent) = sent else {
                return false;
            };
            self.health.observe(&sent.report);
            let recorded = retry_until_ok("notify", shutdown, || {
                sent.record(outbox.as_ref(), crate::app::now())
            })
            .await;
            if !recorded {
                return false;
            }
            iotstream_notify::record_alert_delay("recorded", slice);
            if sent.leaves_pending() {
                state.wake_notifier();
            }
        }
        true
    }

    fn deps<'a>(&'a self, outbox: &'a dyn iotstream_core::ports::Outbox) -> iotstream_notify::Deps<'a> {
        iotstream_notify::Deps {
            outbox,
            notifier: self.notifier.as_ref(),
            secret: self.secret.expose(),
            policy: self.policy,
        }
    }
}

async fn run_consumer(
    state: Arc<AppState>,
    mut consumer: Box<dyn iotstream_core::ports::Consumer>,
    sender: Sender,
    shutdown: watch::Receiver<bool>,
) {
    let mut pacer = CommitPacer::new();
    loop {
        // No linger: notify is on the alert path.
        let records =
            match super::next_batch("notify", consumer.as_mut(), &mut pacer, &shutdown, Duration::ZERO).await
            {
                Next::Stop => return,
                Next::Again => continue,
                Next::Handle(records) => records,
            };
        let (events, poisoned) = iotstream_notify::decode(&records);
        iotstream_notify::record_alert_delay("received", &events);
        let bus = state.backends.bus.as_ref();
        if !super::dead_letter_poison("notify", bus, &records, &poisoned, &shutdown).await {
            return;
        }
        if !sender.send_all(&state, &events, &shutdown).await {
            return;
        }
        if !pacer.done(consumer.as_mut(), &shutdown).await {
            return;
        }
    }
}

async fn run_delivery(state: Arc<AppState>, sender: Sender, shutdown: watch::Receiver<bool>) {
    let outbox = state.backends.outbox.clone();
    let deps = sender.deps(outbox.as_ref());
    let jitter = rand::random::<f64>;
    loop {
        if super::stopping(&shutdown) {
            return;
        }
        let wait = match iotstream_notify::deliver_due(&deps, crate::app::now(), jitter).await {
            // Back off instead of spinning while the outbox fails.
            Err(e) => {
                tracing::warn!(error = %e, "outbox unavailable");
                Duration::from_secs(1)
            }
            Ok(report) => {
                sender.health.observe(&report);
                let now = crate::app::now();
                match outbox.next_due().await {
                    Ok(Some(t)) if t <= now => continue,
                    Ok(Some(t)) => Duration::from_millis((t.millis() - now.millis()).min(60_000) as u64),
                    Ok(None) => Duration::from_secs(60),
                    Err(_) => Duration::from_secs(1),
                }
            }
        };
        tokio::select! {
            _ = state.notify_wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
            _ = wait_stop(&shutdown) => return,
        }
    }
}
