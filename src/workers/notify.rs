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
    let consume = tokio::spawn(run_consumer(
        state.clone(),
        consumer,
        sender.clone(),
        shutdown.clone(),
    ));
    let deliver = tokio::spawn(run_delivery(state.clone(), sender, shutdown));
    Ok(vec![consume, deliver])
}

/// What both loops send with.
#[derive(Clone)]
struct Sender {
    notifier: Arc<dyn Notifier>,
    secret: crate::secrets::Secret,
    policy: iotstream_notify::RetryPolicy,
    health: Arc<iotstream_notify::Health>,
}

impl Sender {
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
    let outbox = state.backends.outbox.clone();
    let deps = sender.deps(outbox.as_ref());
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
        // Send first, then record: the webhook does not wait for a commit. A crash before the
        // record re-sends the slice in flight (same delivery ids): the offsets are not
        // committed yet, and the recorded slices are skipped when the batch comes again.
        for slice in events.chunks(iotstream_notify::SLICE) {
            let sent = retry_until("notify", &shutdown, || {
                let queue_only = sender.health.failing();
                iotstream_notify::send_fresh(&deps, slice, crate::app::now(), queue_only, rand::random::<f64>)
            })
            .await;
            let Some(sent) = sent else {
                return;
            };
            sender.health.observe(&sent.report);
            let recorded = retry_until_ok("notify", &shutdown, || {
                sent.record(outbox.as_ref(), crate::app::now())
            })
            .await;
            if !recorded {
                return;
            }
            iotstream_notify::record_alert_delay("recorded", slice);
            if sent.leaves_pending() {
                state.wake_notifier();
            }
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
