//! process's loops: one consumer per input topic, same group; commit after the database writes.

use super::{CommitPacer, Next, retry_until_ok};
use crate::app::AppState;
use anyhow::Context;
use iotstream_core::ports::Consumer;
use iotstream_core::{groups, topics};
use iotstream_process::{Deps, Insights, decode_alerts, handle_alerts, handle_insights};
use std::sync::Arc;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub async fn spawn(
    state: &Arc<AppState>,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<Vec<JoinHandle<()>>> {
    let bus = &state.backends.bus;
    let insights = bus
        .subscribe(groups::PROCESS, topics::INSIGHTS)
        .await
        .context("process cannot subscribe")?;
    let alerts = bus
        .subscribe(groups::PROCESS, topics::ALERTS)
        .await
        .context("process cannot subscribe")?;
    Ok(vec![
        tokio::spawn(run(state.clone(), insights, shutdown.clone(), Topic::Insights)),
        tokio::spawn(run(state.clone(), alerts, shutdown, Topic::Alerts)),
    ])
}

#[derive(Clone, Copy)]
enum Topic {
    Insights,
    Alerts,
}

async fn run(
    state: Arc<AppState>,
    mut consumer: Box<dyn Consumer>,
    shutdown: watch::Receiver<bool>,
    topic: Topic,
) {
    let deps = Deps {
        results: state.backends.results.as_ref(),
        cache: state.backends.cache.as_ref(),
    };
    let mut pacer = CommitPacer::new();
    loop {
        let records = match super::next_batch(
            "process",
            consumer.as_mut(),
            &mut pacer,
            &shutdown,
            super::PROCESS_LINGER,
        )
        .await
        {
            Next::Stop => return,
            Next::Again => continue,
            Next::Handle(records) => records,
        };
        let bus = state.backends.bus.as_ref();
        let ok = match topic {
            Topic::Insights => {
                let input = Insights::decode(&records);
                super::dead_letter_poison("process", bus, &records, &input.poisoned, &shutdown).await
                    && retry_until_ok("process", &shutdown, || handle_insights(&input, &deps)).await
            }
            Topic::Alerts => {
                let (events, poisoned) = decode_alerts(&records);
                super::dead_letter_poison("process", bus, &records, &poisoned, &shutdown).await
                    && retry_until_ok("process", &shutdown, || handle_alerts(&events, &deps)).await
            }
        };
        if !ok || !pacer.done(consumer.as_mut(), &shutdown).await {
            return;
        }
    }
}
