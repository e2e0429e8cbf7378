//! **notify**: delivers alert transitions to the webhook (CONTRACT §4).
//!
//! - Trigger: the `alerts` topic, consumer group `iotstream-notify`, which feeds a durable
//!   outbox ([`enqueue`]); a delivery loop drains the outbox ([`deliver_due`]).
//! - Outputs: `POST` to `IOTSTREAM_WEBHOOK_URL` with `X-Iotstream-Event`,
//!   `X-Iotstream-Delivery` (the event id, stable across retries and replays) and
//!   `X-Iotstream-Signature: sha256=<hex HMAC-SHA256(secret, body)>`.
//! - Delivery: each batch read from the topic is sent *before* it is queued ([`send_fresh`]):
//!   the webhook does not wait for a database commit. Then every new event is recorded in the
//!   durable outbox with its outcome ([`Sent::record`]: delivered, due for a retry, dead), and
//!   only then are the topic's offsets committed. Batches go out in slices of [`SLICE`]
//!   events. A crash in between re-sends the slice with the same delivery ids; nothing is lost.
//!   Failed events are retried from the outbox by a delivery loop ([`deliver_due`]) with
//!   exponential backoff and jitter, then dead-lettered; they survive restarts. While the endpoint fails ([`Health`]), batches are queued without a first try.
//! - Idempotency key: the event id (`<alert id>:<kind>`): the outbox ignores an id it has seen,
//!   and a batch skips the ids it holds.
//!
//! Order: the events of one alert go out in the order they were queued. A new event of an
//! alert with a pending delivery is queued behind it (the outbox's order rule); events of
//! different alerts go out concurrently. Acknowledgements are queued by the HTTP API and can
//! reach the endpoint before a `resolved` event sent in the same instant, so receivers should
//! trust `alert.state` and deduplicate on `X-Iotstream-Delivery`.

use futures::StreamExt;
use iotstream_core::ports::{
    Delivered, Notifier, Outbox, PendingDelivery, Poisoned, Settled, WebhookRequest,
};
use iotstream_core::{AlertEvent, PortError, Ts};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};

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
    /// Events queued without a try ([`send_fresh`]: behind an earlier event of their alert,
    /// or while the endpoint fails).
    pub queued: usize,
}

/// Whether the webhook endpoint is failing, from the outcomes of the last pass that sent
/// something. While it fails, [`send_fresh`] queues batches for the delivery loop instead
/// of holding the topic's consumer up with one more failing try per event.
#[derive(Debug, Default)]
pub struct Health(AtomicBool);

impl Health {
    pub fn failing(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    pub fn observe(&self, report: &Report) {
        if report.retried + report.dead > 0 {
            self.0.store(true, Ordering::Relaxed);
        } else if report.delivered > 0 {
            self.0.store(false, Ordering::Relaxed);
        }
    }
}

pub struct Deps<'a> {
    pub outbox: &'a dyn Outbox,
    pub notifier: &'a dyn Notifier,
    pub secret: &'a [u8],
    pub policy: RetryPolicy,
}

/// Requests in flight at once.
pub const CONCURRENCY: usize = 16;

/// Events of a batch from the topic sent before they are recorded ([`send_fresh`]): bursts up
/// to this size reach the endpoint without waiting for a database commit, and a crash re-sends
/// at most this many events.
pub const SLICE: usize = 64;

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
        let events: Vec<Vec<&AlertEvent>> = chunk
            .iter()
            .map(|g| g.iter().map(|p| &p.event).collect())
            .collect();
        let sending = futures::future::join_all(events.iter().map(|g| send_in_order(deps, g)));
        let (marked, outcomes) = tokio::join!(marking, sending);
        report.delivered += marked?;
        for (group, (ok, failure)) in chunk.iter().zip(outcomes) {
            delivered.extend(group[..ok].iter().map(|p| p.id.clone()));
            if let Some(e) = failure {
                let failed = &group[ok];
                let attempts = failed.attempts + 1;
                let Some(at) = on_failure(deps, &failed.id, attempts, &e, now, &mut jitter) else {
                    deps.outbox
                        .dead_letter(&failed.id, attempts, &e.message, now)
                        .await?;
                    report.dead += 1;
                    continue;
                };
                deps.outbox
                    .schedule_retry(&failed.id, attempts, at, &e.message)
                    .await?;
                // Later events of the same alert wait for it, keeping their own attempt counts.
                for later in &group[ok + 1..] {
                    deps.outbox
                        .schedule_retry(&later.id, later.attempts, at, WAITING)
                        .await?;
                }
                report.retried += 1;
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

/// Sends one alert's events in order; returns how many succeeded and the first failure.
async fn send_in_order(deps: &Deps<'_>, events: &[&AlertEvent]) -> (usize, Option<PortError>) {
    for (i, event) in events.iter().enumerate() {
        if let Err(e) = deps.notifier.send(&request(event, deps.secret)).await {
            return (i, Some(e));
        }
        record_alert_delay("delivered", [*event]);
    }
    (events.len(), None)
}

/// The error recorded on events that wait for an earlier event of their alert.
const WAITING: &str = "waiting for an earlier event of this alert";

/// Counts and logs a failed attempt (the `attempts`-th); returns when to try again, or `None`
/// when the delivery is dead.
fn on_failure(
    deps: &Deps<'_>,
    id: &str,
    attempts: u32,
    e: &PortError,
    now: Ts,
    jitter: &mut impl FnMut() -> f64,
) -> Option<Ts> {
    metrics::counter!("iotstream_webhook_failures_total").increment(1);
    if attempts >= deps.policy.max_attempts {
        tracing::error!(delivery = %id, attempts, error = %e.message, "webhook delivery dead-lettered");
        metrics::counter!("iotstream_webhook_dead_letters_total").increment(1);
        return None;
    }
    tracing::warn!(delivery = %id, attempts, error = %e.message, "webhook delivery failed; will retry");
    Some(now.plus_millis(deps.policy.delay_ms(attempts, jitter())))
}

/// What [`send_fresh`] did, and the outbox rows that record it.
#[derive(Debug, Default)]
pub struct Sent {
    pub report: Report,
    settled: Vec<(AlertEvent, Settled)>,
}

impl Sent {
    /// Records the batch in the outbox (one write); commit the batch's offsets only after this.
    /// Retry it on failure: the events are not sent again.
    pub async fn record(&self, outbox: &dyn Outbox, now: Ts) -> Result<(), PortError> {
        outbox.record(&self.settled, now).await.map(|_| ())
    }

    /// Whether it leaves deliveries for the delivery loop.
    pub fn leaves_pending(&self) -> bool {
        self.report.retried + self.report.queued > 0
    }
}

/// Sends a batch read from the `alerts` topic before it is queued (module doc): events the
/// outbox holds (and repeats within the batch) are skipped; events of an alert with a pending
/// delivery are queued behind it; the others go out at once, one alert's in order, up to
/// [`CONCURRENCY`] alerts at a time. [`Sent::record`] then records every new event with its
/// outcome.
///
/// With `queue_only` (the endpoint is failing, [`Health`]), nothing is sent: the batch is
/// queued for [`deliver_due`].
pub async fn send_fresh(
    deps: &Deps<'_>,
    events: &[AlertEvent],
    now: Ts,
    queue_only: bool,
    mut jitter: impl FnMut() -> f64,
) -> Result<Sent, PortError> {
    if events.is_empty() {
        return Ok(Sent::default());
    }
    if queue_only {
        let due_now = Settled::Pending {
            attempts: 0,
            at: now,
            error: None,
        };
        return Ok(Sent {
            report: Report {
                queued: events.len(),
                ..Report::default()
            },
            settled: events.iter().map(|e| (e.clone(), due_now.clone())).collect(),
        });
    }
    let screened = deps.outbox.screen(events).await?;
    let mut seen: HashSet<&str> = HashSet::new();
    let mut waiting: Vec<&AlertEvent> = Vec::new();
    let mut groups: Vec<Vec<&AlertEvent>> = Vec::new();
    for e in events {
        if screened.held.contains(&e.id) || !seen.insert(&e.id) {
            continue;
        }
        if screened.waiting.contains(&e.alert.id) {
            waiting.push(e);
        } else if let Some(g) = groups.iter_mut().find(|g| g[0].alert.id == e.alert.id) {
            g.push(e);
        } else {
            groups.push(vec![e]);
        }
    }
    let sends: Vec<_> = groups.iter().map(|g| send_in_order(deps, g)).collect();
    let outcomes: Vec<(usize, Option<PortError>)> =
        futures::stream::iter(sends).buffered(CONCURRENCY).collect().await;

    let mut sent = Sent::default();
    let (report, settled) = (&mut sent.report, &mut sent.settled);
    for (group, (ok, failure)) in groups.iter().zip(outcomes) {
        report.delivered += ok;
        settled.extend(group[..ok].iter().map(|e| ((*e).clone(), Settled::Delivered)));
        let Some(e) = failure else { continue };
        let (failed, later) = (group[ok], &group[ok + 1..]);
        let error = e.message.clone();
        let at = match on_failure(deps, &failed.id, 1, &e, now, &mut jitter) {
            None => {
                report.dead += 1;
                settled.push((failed.clone(), Settled::Dead { attempts: 1, error }));
                now
            }
            Some(at) => {
                report.retried += 1;
                settled.push((
                    failed.clone(),
                    Settled::Pending {
                        attempts: 1,
                        at,
                        error: Some(error),
                    },
                ));
                at
            }
        };
        report.queued += later.len();
        settled.extend(later.iter().map(|e| ((*e).clone(), pending_behind(at))));
    }
    report.queued += waiting.len();
    settled.extend(waiting.into_iter().map(|e| (e.clone(), pending_behind(now))));
    if report.delivered > 0 {
        metrics::counter!("iotstream_webhook_delivered_total").increment(report.delivered as u64);
    }
    Ok(sent)
}

/// A queued event that waits for an earlier one of its alert, due at `at` at the earliest.
fn pending_behind(at: Ts) -> Settled {
    Settled::Pending {
        attempts: 0,
        at,
        error: Some(WAITING.to_owned()),
    }
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
