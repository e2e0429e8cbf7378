//! **notify**: delivers alert transitions to the webhook (CONTRACT §4).
//!
//! - Trigger: the `alerts` topic, consumer group `iotstream-notify`, which feeds a durable
//!   outbox ([`enqueue`]); a delivery loop drains the outbox ([`deliver_due`]).
//! - Outputs: `POST` to `IOTSTREAM_WEBHOOK_URL` with `X-Iotstream-Event`,
//!   `X-Iotstream-Delivery` (the event id, stable across retries and replays) and
//!   `X-Iotstream-Signature: sha256=<hex HMAC-SHA256(secret, body)>`.
//! - Delivery: offsets are committed once events are in the outbox; each event is sent until the
//!   endpoint answers 2xx, with exponential backoff and jitter, then dead-lettered. Pending
//!   deliveries live in the outbox, so they survive restarts.
//! - Idempotency key: the event id (`<alert id>:<kind>`): the outbox ignores an id it has seen.
//!
//! Order: events of one alert that are due together go out in order, and a later one waits
//! while an earlier one is retried; events of different alerts go out concurrently. An event
//! queued *while* an earlier one of its alert waits for a retry can still overtake it, so
//! receivers should trust `alert.state` and deduplicate on `X-Iotstream-Delivery`.

use iotstream_core::ports::{Delivered, Notifier, Outbox, PendingDelivery, Poisoned, WebhookRequest};
use iotstream_core::{AlertEvent, PortError, Ts};

/// Retry policy.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub base_ms: i64,
    pub max_delay_ms: i64,
}

impl Default for RetryPolicy {
    /// 12 attempts over about 20 minutes: 1 s, 2 s, 4 s ... capped at 5 minutes.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 12,
            base_ms: 1_000,
            max_delay_ms: 300_000,
        }
    }
}

impl RetryPolicy {
    /// Delay before the next attempt after `failures` failures, with "equal jitter": half the
    /// exponential delay fixed, half random (`jitter` in [0, 1)), so retries of many deliveries
    /// spread out instead of hammering a recovering endpoint together.
    pub fn delay_ms(&self, failures: u32, jitter: f64) -> i64 {
        let exp = self
            .base_ms
            .saturating_mul(1i64 << failures.saturating_sub(1).min(30));
        let capped = exp.min(self.max_delay_ms);
        capped / 2 + ((capped / 2) as f64 * jitter.clamp(0.0, 1.0)) as i64
    }
}

/// Decodes `alerts` records into the events the webhook carries, and the records that do not
/// decode (for the dead-letter topic).
pub fn decode(records: &[Delivered]) -> (Vec<AlertEvent>, Vec<Poisoned>) {
    let mut events = Vec::with_capacity(records.len());
    let mut poisoned = Vec::new();
    for (index, r) in records.iter().enumerate() {
        match serde_json::from_slice::<AlertEvent>(&r.value) {
            // Peak updates are for the results, not the webhook (CONTRACT §4 lists its events).
            Ok(e) if e.event == iotstream_core::AlertEventKind::Updated => {}
            Ok(e) => events.push(e),
            Err(e) => {
                metrics::counter!("iotstream_notify_poison_total").increment(1);
                tracing::warn!(offset = r.offset, error = %e, "skipping an undecodable alert event");
                poisoned.push(Poisoned {
                    index,
                    reason: format!("undecodable alert event: {e}"),
                });
            }
        }
    }
    (events, poisoned)
}

/// Decodes `alerts` records and queues them. Returns how many were new.
pub async fn enqueue(records: &[Delivered], outbox: &dyn Outbox, now: Ts) -> Result<usize, PortError> {
    enqueue_events(&decode(records).0, outbox, now).await
}

/// Queues decoded events. Returns how many were new.
pub async fn enqueue_events(events: &[AlertEvent], outbox: &dyn Outbox, now: Ts) -> Result<usize, PortError> {
    if events.is_empty() {
        return Ok(0);
    }
    outbox.enqueue(events, now).await
}

/// The signed webhook request for one event.
pub fn request(event: &AlertEvent, secret: &[u8]) -> WebhookRequest {
    let body = serde_json::to_vec(&event.webhook_body()).expect("webhook body");
    WebhookRequest {
        delivery_id: event.id.clone(),
        event: event.event.as_str().to_owned(),
        signature: iotstream_core::model::webhook_signature(secret, &body),
        body,
    }
}

/// Records `iotstream_alert_delay_seconds{stage}` for the `opened` events among `events`:
/// seconds from the reading that opened the alert to now.
pub fn record_alert_delay<'a>(stage: &'static str, events: impl IntoIterator<Item = &'a AlertEvent>) {
    let now = Ts::from_system_time(std::time::SystemTime::now());
    for d in events.into_iter().filter_map(|e| e.opened_delay_secs(now)) {
        metrics::histogram!("iotstream_alert_delay_seconds", "stage" => stage).record(d);
    }
}

/// What one pass of [`deliver_due`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    pub delivered: usize,
    pub retried: usize,
    pub dead: usize,
}

pub struct Deps<'a> {
    pub outbox: &'a dyn Outbox,
    pub notifier: &'a dyn Notifier,
    pub secret: &'a [u8],
    pub policy: RetryPolicy,
}

/// Requests in flight at once.
pub const CONCURRENCY: usize = 16;

/// Sends every delivery due at `now`: events of different alerts concurrently (up to
/// [`CONCURRENCY`]), events of one alert in order — a later event waits while an earlier one is
/// being retried. `jitter` yields numbers in [0, 1).
///
/// Successes are marked delivered one chunk at a time, each chunk's write overlapping the next
/// chunk's requests (a burst of alerts is not held up by one database commit per chunk). A
/// crash therefore re-sends at most the last two chunks' deliveries (same delivery ids).
pub async fn deliver_due(
    deps: &Deps<'_>,
    now: Ts,
    mut jitter: impl FnMut() -> f64,
) -> Result<Report, PortError> {
    let mut groups: Vec<Vec<PendingDelivery>> = Vec::new();
    for p in deps.outbox.due(now, 256).await? {
        match groups
            .iter_mut()
            .find(|g| g[0].event.alert.id == p.event.alert.id)
        {
            Some(g) => g.push(p),
            None => groups.push(vec![p]),
        }
    }
    let mut report = Report::default();
    let mut delivered: Vec<String> = Vec::new();
    for chunk in groups.chunks(CONCURRENCY) {
        let marking = mark_delivered(deps, std::mem::take(&mut delivered), now);
        let sending = futures::future::join_all(chunk.iter().map(|g| send_in_order(deps, g)));
        let (marked, outcomes) = tokio::join!(marking, sending);
        report.delivered += marked?;
        for (group, (ok, failure)) in chunk.iter().zip(outcomes) {
            delivered.extend(group[..ok].iter().map(|p| p.id.clone()));
            if let Some(e) = failure {
                let failed = &group[ok];
                let attempts = failed.attempts + 1;
                metrics::counter!("iotstream_webhook_failures_total").increment(1);
                if attempts >= deps.policy.max_attempts {
                    tracing::error!(delivery = %failed.id, attempts, error = %e.message, "webhook delivery dead-lettered");
                    deps.outbox
                        .dead_letter(&failed.id, attempts, &e.message, now)
                        .await?;
                    metrics::counter!("iotstream_webhook_dead_letters_total").increment(1);
                    report.dead += 1;
                } else {
                    let at = now.plus_millis(deps.policy.delay_ms(attempts, jitter()));
                    tracing::warn!(delivery = %failed.id, attempts, error = %e.message, "webhook delivery failed; will retry");
                    deps.outbox
                        .schedule_retry(&failed.id, attempts, at, &e.message)
                        .await?;
                    // Later events of the same alert wait for it, keeping their own attempt counts.
                    for later in &group[ok + 1..] {
                        deps.outbox
                            .schedule_retry(
                                &later.id,
                                later.attempts,
                                at,
                                "waiting for an earlier event of this alert",
                            )
                            .await?;
                    }
                    report.retried += 1;
                }
            }
        }
    }
    report.delivered += mark_delivered(deps, delivered, now).await?;
    Ok(report)
}

/// Marks sent deliveries delivered (one write); returns how many.
async fn mark_delivered(deps: &Deps<'_>, ids: Vec<String>, now: Ts) -> Result<usize, PortError> {
    if ids.is_empty() {
        return Ok(0);
    }
    deps.outbox.mark_delivered(&ids, now).await?;
    metrics::counter!("iotstream_webhook_delivered_total").increment(ids.len() as u64);
    Ok(ids.len())
}

/// Sends one alert's due events in order; returns how many succeeded and the first failure.
async fn send_in_order(deps: &Deps<'_>, group: &[PendingDelivery]) -> (usize, Option<PortError>) {
    for (i, p) in group.iter().enumerate() {
        if let Err(e) = deps.notifier.send(&request(&p.event, deps.secret)).await {
            return (i, Some(e));
        }
        record_alert_delay("delivered", [&p.event]);
    }
    (group.len(), None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_caps() {
        let p = RetryPolicy::default();
        assert_eq!(p.delay_ms(1, 0.0), 500);
        assert_eq!(p.delay_ms(1, 0.999_999), 999);
        assert_eq!(p.delay_ms(2, 0.0), 1_000);
        assert_eq!(p.delay_ms(4, 1.0), 8_000);
        assert_eq!(p.delay_ms(30, 1.0), 300_000);
        assert_eq!(p.delay_ms(200, 0.0), 150_000);
    }
}
