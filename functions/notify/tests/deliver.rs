//! `deliver_due` on the embedded outbox: bursts larger than one chunk, failures in the middle of
//! a burst, and an outbox that fails while a chunk is out.

use async_trait::async_trait;
use iotstream_backends::conformance::{alert, event};
use iotstream_backends::embedded::EmbeddedResults;
use iotstream_core::AlertEventKind;
use iotstream_core::ports::{DeadLetter, Notifier, Outbox, PendingDelivery, PortResult, WebhookRequest};
use iotstream_core::{AlertEvent, DeviceId, PortError, Ts};
use iotstream_notify::{CONCURRENCY, Deps, RetryPolicy, deliver_due};
use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

const NOW: i64 = 1_795_600_800_000;

/// Records every delivery id it is sent; fails the ones of `failing` alerts.
#[derive(Default)]
struct Receiver {
    got: Mutex<Vec<String>>,
    failing: HashSet<String>,
}

#[async_trait]
impl Notifier for Receiver {
    async fn send(&self, r: &WebhookRequest) -> Result<(), PortError> {
        let alert = r.delivery_id.split(':').next().unwrap_or_default();
        if self.failing.contains(alert) {
            return Err(PortError::unavailable("503 from the receiver"));
        }
        self.got.lock().unwrap().push(r.delivery_id.clone());
        Ok(())
    }
}

/// `n` alerts of distinct devices, opened; alert 0 also resolved (two events, in order).
fn burst(n: usize) -> Vec<AlertEvent> {
    let mut events = Vec::new();
    for i in 0..n {
        let device = DeviceId::parse(&format!("dev-{i}")).unwrap();
        let a = alert(&format!("a{i}"), &device, NOW - 1_000, 90.0);
        events.push(event(AlertEventKind::Opened, &a, NOW - 1_000, 90.0));
        if i == 0 {
            events.push(event(AlertEventKind::Resolved, &a, NOW - 500, 70.0));
        }
    }
    events
}

async fn outbox_with(events: &[AlertEvent]) -> (tempfile::TempDir, EmbeddedResults) {
    let dir = tempfile::tempdir().unwrap();
    let outbox = EmbeddedResults::open(dir.path()).await.unwrap();
    outbox.enqueue(events, Ts(NOW - 1_000)).await.unwrap();
    (dir, outbox)
}

fn deps<'a>(outbox: &'a dyn Outbox, receiver: &'a Receiver) -> Deps<'a> {
    Deps {
        outbox,
        notifier: receiver,
        secret: b"s",
        policy: RetryPolicy::default(),
    }
}

#[tokio::test]
async fn a_burst_of_several_chunks_is_delivered_and_marked_in_one_pass() {
    let n = CONCURRENCY * 3 + 5;
    let events = burst(n);
    let (_dir, outbox) = outbox_with(&events).await;
    let receiver = Receiver::default();

    let report = deliver_due(&deps(&outbox, &receiver), Ts(NOW), || 0.5)
        .await
        .unwrap();

    assert_eq!(report.delivered, n + 1, "{report:?}");
    assert_eq!((report.retried, report.dead), (0, 0));
    let got = receiver.got.lock().unwrap().clone();
    let unique: HashSet<&String> = got.iter().collect();
    assert_eq!(unique.len(), n + 1, "every event sent once");
    let opened = got.iter().position(|id| id == "a0:opened").unwrap();
    let resolved = got.iter().position(|id| id == "a0:resolved").unwrap();
    assert!(opened < resolved, "one alert's events in order: {got:?}");
    // Everything was marked delivered: nothing is due any more, and a second pass sends nothing.
    assert!(outbox.due(Ts(NOW + 3_600_000), 1_000).await.unwrap().is_empty());
    deliver_due(&deps(&outbox, &receiver), Ts(NOW + 1), || 0.5)
        .await
        .unwrap();
    assert_eq!(receiver.got.lock().unwrap().len(), n + 1, "nothing re-sent");
}

#[tokio::test]
async fn a_failing_receiver_in_a_later_chunk_is_retried_and_the_rest_are_delivered() {
    let n = CONCURRENCY * 2 + 1;
    let events = burst(n);
    let (_dir, outbox) = outbox_with(&events).await;
    let last = format!("a{}", n - 1);
    let receiver = Receiver {
        failing: [last.clone(), "a0".to_owned()].into(),
        ..Default::default()
    };

    let report = deliver_due(&deps(&outbox, &receiver), Ts(NOW), || 0.0)
        .await
        .unwrap();

    assert_eq!(report.delivered, n - 2, "{report:?}");
    assert_eq!(report.retried, 2, "one per failing alert: {report:?}");
    // Due again later: the failed event and the event waiting behind it (a0's resolution).
    let due: Vec<PendingDelivery> = outbox.due(Ts(NOW + 3_600_000), 1_000).await.unwrap();
    let mut ids: Vec<&str> = due.iter().map(|p| p.id.as_str()).collect();
    ids.sort_unstable();
    let last_opened = format!("{last}:opened");
    assert_eq!(ids, ["a0:opened", "a0:resolved", last_opened.as_str()]);
    let attempts: Vec<u32> = due.iter().map(|p| p.attempts).collect();
    assert_eq!(attempts.iter().filter(|&&a| a == 1).count(), 2, "{due:?}");
}

/// The embedded outbox, except that the first `mark_delivered` fails (the database went away
/// while a chunk was out).
struct MarkFailsOnce {
    inner: EmbeddedResults,
    marks: AtomicUsize,
}

#[async_trait]
impl Outbox for MarkFailsOnce {
    async fn enqueue(&self, events: &[AlertEvent], now: Ts) -> PortResult<usize> {
        self.inner.enqueue(events, now).await
    }
    async fn due(&self, now: Ts, limit: usize) -> PortResult<Vec<PendingDelivery>> {
        self.inner.due(now, limit).await
    }
    async fn next_due(&self) -> PortResult<Option<Ts>> {
        self.inner.next_due().await
    }
    async fn mark_delivered(&self, ids: &[String], now: Ts) -> PortResult<()> {
        if self.marks.fetch_add(1, Ordering::SeqCst) == 0 {
            return Err(PortError::unavailable("database is down"));
        }
        self.inner.mark_delivered(ids, now).await
    }
    async fn schedule_retry(&self, id: &str, attempts: u32, at: Ts, error: &str) -> PortResult<()> {
        self.inner.schedule_retry(id, attempts, at, error).await
    }
    async fn dead_letter(&self, id: &str, attempts: u32, error: &str, now: Ts) -> PortResult<()> {
        self.inner.dead_letter(id, attempts, error, now).await
    }
    async fn dead_letters(&self, limit: usize) -> PortResult<Vec<DeadLetter>> {
        self.inner.dead_letters(limit).await
    }
}

#[tokio::test]
async fn when_marking_fails_the_pass_fails_and_the_unmarked_deliveries_are_sent_again() {
    let n = CONCURRENCY * 3;
    let (_dir, inner) = outbox_with(&burst(n)).await;
    let outbox = MarkFailsOnce {
        inner,
        marks: AtomicUsize::new(0),
    };
    let receiver = Receiver::default();

    let err = deliver_due(&deps(&outbox, &receiver), Ts(NOW), || 0.5)
        .await
        .expect_err("the failed write is reported");
    assert!(err.to_string().contains("database is down"), "{err}");
    // The first chunk was sent, the second went out while the first's write failed; nothing was
    // marked, so all of it is due again and the next pass re-sends it (same delivery ids).
    let sent_first = receiver.got.lock().unwrap().len();
    assert_eq!(
        sent_first,
        2 * CONCURRENCY + 1,
        "two chunks out (alert 0 has two events)"
    );
    assert_eq!(outbox.due(Ts(NOW), 1_000).await.unwrap().len(), n + 1);

    let report = deliver_due(&deps(&outbox, &receiver), Ts(NOW + 1), || 0.5)
        .await
        .unwrap();
    assert_eq!(report.delivered, n + 1, "{report:?}");
    assert!(outbox.due(Ts(NOW + 3_600_000), 1_000).await.unwrap().is_empty());
    let got = receiver.got.lock().unwrap().clone();
    let unique: HashSet<&String> = got.iter().collect();
    assert_eq!(unique.len(), n + 1);
    assert_eq!(
        got.len(),
        n + 1 + sent_first,
        "at-least-once: the unmarked ones twice, no more"
    );
}
