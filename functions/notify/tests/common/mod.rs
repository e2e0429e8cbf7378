//! What the notify tests share: a receiver that records what it gets, bursts of alert events,
//! and the embedded outbox.
#![allow(dead_code)] // each test file uses its own part

use async_trait::async_trait;
use iotstream_backends::conformance::{alert, event};
use iotstream_backends::embedded::EmbeddedResults;
use iotstream_core::AlertEventKind;
use iotstream_core::ports::{
    DeadLetter, Notifier, Outbox, PendingDelivery, PortResult, Screened, Settled, WebhookRequest,
};
use iotstream_core::{AlertEvent, DeviceId, PortError, Ts};
use iotstream_notify::{Deps, RetryPolicy};
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

pub const NOW: i64 = 1_795_600_800_000;

/// Records every delivery id it is sent; fails the ones of `failing` alerts.
#[derive(Default)]
pub struct Receiver {
    pub got: Mutex<Vec<String>>,
    pub failing: Mutex<HashSet<String>>,
}

impl Receiver {
    /// Fails every event of these alerts until [`Receiver::recover`].
    pub fn failing(alerts: &[&str]) -> Self {
        Receiver {
            failing: Mutex::new(alerts.iter().map(|a| (*a).to_owned()).collect()),
            ..Default::default()
        }
    }

    pub fn recover(&self) {
        self.failing.lock().unwrap().clear();
    }

    pub fn got(&self) -> Vec<String> {
        self.got.lock().unwrap().clone()
    }
}

#[async_trait]
impl Notifier for Receiver {
    async fn send(&self, r: &WebhookRequest) -> Result<(), PortError> {
        let alert = r.delivery_id.split(':').next().unwrap_or_default();
        if self.failing.lock().unwrap().contains(alert) {
            return Err(PortError::unavailable("503 from the receiver"));
        }
        self.got.lock().unwrap().push(r.delivery_id.clone());
        Ok(())
    }
}

/// `n` alerts of distinct devices, opened; alert 0 also resolved (two events, in order).
pub fn burst(n: usize) -> Vec<AlertEvent> {
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

pub async fn outbox_with(events: &[AlertEvent]) -> (tempfile::TempDir, EmbeddedResults) {
    let dir = tempfile::tempdir().unwrap();
    let outbox = EmbeddedResults::open(dir.path()).await.unwrap();
    outbox.enqueue(events, Ts(NOW - 1_000)).await.unwrap();
    (dir, outbox)
}

pub fn deps<'a>(outbox: &'a dyn Outbox, receiver: &'a Receiver) -> Deps<'a> {
    Deps {
        outbox,
        notifier: receiver,
        secret: b"s",
        policy: RetryPolicy::default(),
    }
}

/// The embedded outbox, except that the next calls of a method fail, as when the database goes
/// away: `fail_next("record", 1)`.
pub struct Flaky {
    pub inner: EmbeddedResults,
    failures: Mutex<HashMap<&'static str, usize>>,
}

impl Flaky {
    pub fn new(inner: EmbeddedResults) -> Self {
        Flaky {
            inner,
            failures: Mutex::default(),
        }
    }

    pub fn fail_next(&self, method: &'static str, times: usize) {
        self.failures.lock().unwrap().insert(method, times);
    }

    fn check(&self, method: &'static str) -> PortResult<()> {
        match self.failures.lock().unwrap().get_mut(method) {
            Some(n) if *n > 0 => {
                *n -= 1;
                Err(PortError::unavailable("database is down"))
            }
            _ => Ok(()),
        }
    }
}

#[async_trait]
impl Outbox for Flaky {
    async fn enqueue(&self, events: &[AlertEvent], now: Ts) -> PortResult<usize> {
        self.check("enqueue")?;
        self.inner.enqueue(events, now).await
    }
    async fn screen(&self, events: &[AlertEvent]) -> PortResult<Screened> {
        self.check("screen")?;
        self.inner.screen(events).await
    }
    async fn record(&self, settled: &[(AlertEvent, Settled)], now: Ts) -> PortResult<usize> {
        self.check("record")?;
        self.inner.record(settled, now).await
    }
    async fn due(&self, now: Ts, limit: usize) -> PortResult<Vec<PendingDelivery>> {
        self.check("due")?;
        self.inner.due(now, limit).await
    }
    async fn next_due(&self) -> PortResult<Option<Ts>> {
        self.inner.next_due().await
    }
    async fn mark_delivered(&self, ids: &[String], now: Ts) -> PortResult<()> {
        self.check("mark_delivered")?;
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
