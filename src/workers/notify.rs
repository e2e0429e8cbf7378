//! notify's loops: the `alerts` consumer fills the outbox; the delivery loop drains it, waking
//! when something is queued and when the next retry is due.

use super::analyze::wait_stop;
use super::{CommitPacer, Next, retry_until_ok};
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
    let enqueue = tokio::spawn(run_enqueue(state.clone(), consumer, shutdown.clone()));
    let deliver = tokio::spawn(run_delivery(
        state.clone(),
        notifier,
        webhook.secret.clone(),
        cfg.retry,
        shutdown,
    ));
    Ok(vec![enqueue, deliver])
}

async fn run_enqueue(
    state: Arc<AppState>,
    mut consumer: Box<dyn iotstream_core::ports::Consumer>,
    shutdown: watch::Receiver<bool>,
) {
    let outbox = state.backends.outbox.clone();
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
        let queued = retry_until_ok("notify", &shutdown, || async {
            iotstream_notify::enqueue_events(&events, outbox.as_ref(), crate::app::now())
                .await
                .map(|_| ())
        })
        .await;
        if !queued {
            return;
        }
        iotstream_notify::record_alert_delay("queued", &events);
        state.wake_notifier();
        if !pacer.done(consumer.as_mut(), &shutdown).await {
            return;
        }
    }
}

async fn run_delivery(
    state: Arc<AppState>,
    notifier: Arc<dyn Notifier>,
    secret: crate::secrets::Secret,
    policy: iotstream_notify::RetryPolicy,
    shutdown: watch::Receiver<bool>,
) {
    let outbox = state.backends.outbox.clone();
    let deps = iotstream_notify::Deps {
        outbox: outbox.as_ref(),
        notifier: notifier.as_ref(),
        secret: secret.expose(),
        policy,
    };
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
            Ok(_) => {
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
