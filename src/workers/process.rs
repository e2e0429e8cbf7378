//! process's loops: one consumer per input topic, same group; commit after the database writes.

use super::{CommitPacer, Next, retry_until_ok};
use crate::app::AppState;
use anyhow::Context;
use iotstream_core::ports::Consumer;
use iotstream_core::{AlertEvent, AlertEventKind, groups, topics};
use iotstream_process::{Deps, Insights, decode_alerts, handle_alerts, handle_insights};
use std::sync::Arc;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// With `console` (`iotstream up`), every alert the pipeline opens or resolves is also printed on
/// stdout, one line each: a newcomer sees what it finds without a webhook or a query.
/// (Acknowledgements are a person's own action through the API; they are not on this path.)
pub async fn spawn(
    state: &Arc<AppState>,
    console: bool,
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
        tokio::spawn(run(state.clone(), alerts, shutdown, Topic::Alerts { console })),
    ])
}

#[derive(Clone, Copy)]
enum Topic {
    Insights,
    Alerts { console: bool },
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
            Topic::Alerts { console } => {
                let (events, poisoned) = decode_alerts(&records);
                let ok = super::dead_letter_poison("process", bus, &records, &poisoned, &shutdown).await
                    && retry_until_ok("process", &shutdown, || handle_alerts(&events, &deps)).await;
                if ok && console {
                    for line in events.iter().filter_map(console_line) {
                        println!("{line}");
                    }
                }
                ok
            }
        };
        if !ok || !pacer.done(consumer.as_mut(), &shutdown).await {
            return;
        }
    }
}

/// An alert transition as one line for a person watching the terminal (peak updates are not
/// transitions, so they print nothing).
fn console_line(e: &AlertEvent) -> Option<String> {
    if e.event == AlertEventKind::Updated {
        return None;
    }
    let a = &e.alert;
    let at = match e.event {
        AlertEventKind::Resolved => a.resolved_at,
        AlertEventKind::Acknowledged => a.acknowledged_at,
        AlertEventKind::Opened | AlertEventKind::Updated => None,
    };
    Some(format!(
        "{} {} {} {} ({}): {}",
        at.unwrap_or(a.opened_at),
        e.event.as_str(),
        a.device_id,
        a.rule,
        a.severity.as_str(),
        a.message
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use iotstream_core::{Alert, AlertState, DeviceId, Severity, Ts};

    #[test]
    fn a_transition_is_one_line_with_its_time_device_rule_and_message() {
        let alert = Alert {
            id: "a1".into(),
            device_id: DeviceId::parse("pump-1").unwrap(),
            rule: "overheat".into(),
            severity: Severity::Critical,
            metric: "temperature".into(),
            value: 91.2,
            threshold: 80.0,
            state: AlertState::Resolved,
            opened_at: Ts(1_767_225_600_000),
            resolved_at: Some(Ts(1_767_225_660_000)),
            acknowledged_at: None,
            message: "temperature on pump-1 is back to 70".into(),
            recommendation: String::new(),
            peak: None,
            kind: "threshold".into(),
            evidence: None,
        };
        let line = |kind| console_line(&AlertEvent::new(kind, alert.clone()));
        assert_eq!(
            line(AlertEventKind::Resolved).unwrap(),
            "2026-01-01T00:01:00.000Z alert.resolved pump-1 overheat (critical): temperature on pump-1 is back to 70"
        );
        assert!(
            line(AlertEventKind::Opened)
                .unwrap()
                .starts_with("2026-01-01T00:00:00.000Z alert.opened")
        );
        assert_eq!(
            line(AlertEventKind::Updated),
            None,
            "a peak update is not a transition"
        );
    }
}
