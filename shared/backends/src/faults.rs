//! Fault injection: a decorator that takes a port down on demand.
//!
//! A cross-cutting concern wraps the same trait it decorates: [`Faulty<T>`] implements
//! [`TelemetrySink`], [`TelemetryStore`], [`EventBus`] (and the [`Consumer`]s it hands out) and
//! [`ResultsStore`] by delegating to the engine inside, unless its [`Faults`] switch is on; then
//! every call fails with [`PortErrorKind::Unavailable`](iotstream_core::PortErrorKind) and the
//! engine is not touched. Tests use it to check what callers see when a backend is down:
//!
//! ```text
//! let sink_down = Faults::new();
//! backends.sink = sink_down.wrap(backends.sink);
//! sink_down.set_down(true);   // every sink call now fails with `Unavailable`
//! ```
//!
//! One [`Faults`] can switch several wrapped ports at once; give each port its own to fail
//! one at a time.

use async_trait::async_trait;
use iotstream_core::ports::{
    AckOutcome, Consumer, Delivered, DeviceRecord, DeviceRegistry, EventBus, PortResult, Position, Record,
    ResultsStore, SeriesPoint, TelemetrySink, TelemetryStore,
};
use iotstream_core::{
    Aggregate, Alert, AlertEvent, AlertState, DeviceId, Forecast, LateReading, LatestState, PortError,
    Reading, Ts,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The switch shared by the ports it wraps; off (healthy) when created.
#[derive(Debug)]
pub struct Faults {
    down: AtomicBool,
    /// While true, the telemetry sink holds every call (a slow disk or broker).
    stalled: tokio::sync::watch::Sender<bool>,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            down: AtomicBool::new(false),
            stalled: tokio::sync::watch::channel(false).0,
        }
    }
}

impl Faults {
    pub fn new() -> Arc<Faults> {
        Arc::new(Faults::default())
    }

    /// Turns the fault on (every call of a wrapped port fails) or off (calls go through).
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// Stalls (true) or releases (false) the wrapped telemetry sink: calls wait, then proceed.
    pub fn set_stalled(&self, stalled: bool) {
        self.stalled.send_replace(stalled);
    }

    async fn wait_unstalled(&self) {
        let mut rx = self.stalled.subscribe();
        let _ = rx.wait_for(|s| !*s).await;
    }

    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::SeqCst)
    }

    /// Wraps `inner` so that it fails while this switch is on.
    pub fn wrap<T: ?Sized>(self: &Arc<Self>, inner: Arc<T>) -> Arc<Faulty<T>> {
        Arc::new(Faulty {
            inner,
            faults: self.clone(),
        })
    }

    fn check(&self, port: &str) -> PortResult<()> {
        if self.is_down() {
            Err(PortError::unavailable(format!(
                "injected fault: the {port} is down"
            )))
        } else {
            Ok(())
        }
    }
}

/// A port that fails while its [`Faults`] switch is on and delegates otherwise.
pub struct Faulty<T: ?Sized> {
    inner: Arc<T>,
    faults: Arc<Faults>,
}

#[async_trait]
impl<T: TelemetrySink + ?Sized> TelemetrySink for Faulty<T> {
    async fn accept(&self, readings: &[Reading]) -> PortResult<Vec<bool>> {
        self.faults.wait_unstalled().await;
        self.faults.check("telemetry sink")?;
        self.inner.accept(readings).await
    }

    fn concurrency(&self) -> usize {
        self.inner.concurrency()
    }
}

#[async_trait]
impl<T: TelemetryStore + ?Sized> TelemetryStore for Faulty<T> {
    async fn put(&self, readings: &[Reading]) -> PortResult<Vec<bool>> {
        self.faults.check("telemetry store")?;
        self.inner.put(readings).await
    }

    async fn contains(&self, ids: &[(DeviceId, String)]) -> PortResult<Vec<bool>> {
        self.faults.check("telemetry store")?;
        self.inner.contains(ids).await
    }

    async fn range(&self, device: &DeviceId, from: Ts, to: Ts, limit: usize) -> PortResult<Vec<Reading>> {
        self.faults.check("telemetry store")?;
        self.inner.range(device, from, to, limit).await
    }
}

#[async_trait]
impl<T: EventBus + ?Sized> EventBus for Faulty<T> {
    async fn ensure_topic(&self, topic: &str) -> PortResult<()> {
        self.faults.check("bus")?;
        self.inner.ensure_topic(topic).await
    }

    async fn publish(&self, topic: &str, records: &[Record]) -> PortResult<()> {
        self.faults.check("bus")?;
        self.inner.publish(topic, records).await
    }

    /// The consumer fails with the bus: polls, commits and seeks all check the switch.
    async fn subscribe(&self, group: &str, topic: &str) -> PortResult<Box<dyn Consumer>> {
        self.faults.check("bus")?;
        let inner = self.inner.subscribe(group, topic).await?;
        Ok(Box::new(FaultyConsumer {
            inner,
            faults: self.faults.clone(),
        }))
    }

    async fn lag(&self, group: &str, topic: &str) -> PortResult<u64> {
        self.faults.check("bus")?;
        self.inner.lag(group, topic).await
    }
}

struct FaultyConsumer {
    inner: Box<dyn Consumer>,
    faults: Arc<Faults>,
}

#[async_trait]
impl Consumer for FaultyConsumer {
    async fn poll(&mut self, max: usize, wait: Duration) -> PortResult<Vec<Delivered>> {
        self.faults.check("bus")?;
        self.inner.poll(max, wait).await
    }

    async fn commit(&mut self) -> PortResult<()> {
        self.faults.check("bus")?;
        self.inner.commit().await
    }

    async fn commit_at(&mut self, positions: &[Position]) -> PortResult<()> {
        self.faults.check("bus")?;
        self.inner.commit_at(positions).await
    }

    async fn seek(&mut self, positions: &[Position]) -> PortResult<()> {
        self.faults.check("bus")?;
        self.inner.seek(positions).await
    }

    fn positions(&self) -> Vec<Position> {
        self.inner.positions()
    }
}

#[async_trait]
impl<T: ResultsStore + ?Sized> ResultsStore for Faulty<T> {
    async fn upsert_aggregates(&self, aggregates: &[Aggregate]) -> PortResult<()> {
        self.faults.check("results store")?;
        self.inner.upsert_aggregates(aggregates).await
    }

    async fn upsert_latest(&self, states: &[LatestState]) -> PortResult<()> {
        self.faults.check("results store")?;
        self.inner.upsert_latest(states).await
    }

    async fn apply_alert_events(&self, events: &[AlertEvent]) -> PortResult<()> {
        self.faults.check("results store")?;
        self.inner.apply_alert_events(events).await
    }

    async fn latest(&self, device: &DeviceId) -> PortResult<Option<LatestState>> {
        self.faults.check("results store")?;
        self.inner.latest(device).await
    }

    async fn all_latest(&self) -> PortResult<Vec<LatestState>> {
        self.faults.check("results store")?;
        self.inner.all_latest().await
    }

    async fn series(
        &self,
        device: &DeviceId,
        metric: &str,
        from: Ts,
        to: Ts,
        step_ms: i64,
    ) -> PortResult<Vec<SeriesPoint>> {
        self.faults.check("results store")?;
        self.inner.series(device, metric, from, to, step_ms).await
    }

    async fn alerts(
        &self,
        state: Option<AlertState>,
        device: Option<&DeviceId>,
        limit: usize,
    ) -> PortResult<Vec<Alert>> {
        self.faults.check("results store")?;
        self.inner.alerts(state, device, limit).await
    }

    async fn alert(&self, id: &str) -> PortResult<Option<Alert>> {
        self.faults.check("results store")?;
        self.inner.alert(id).await
    }

    async fn ack_alert(&self, id: &str, now: Ts) -> PortResult<AckOutcome> {
        self.faults.check("results store")?;
        self.inner.ack_alert(id, now).await
    }

    async fn insert_forecasts(&self, forecasts: &[Forecast]) -> PortResult<()> {
        self.faults.check("results store")?;
        self.inner.insert_forecasts(forecasts).await
    }

    async fn insert_late_readings(&self, late: &[LateReading]) -> PortResult<()> {
        self.faults.check("results store")?;
        self.inner.insert_late_readings(late).await
    }

    async fn forecasts(
        &self,
        device: Option<&DeviceId>,
        from: Ts,
        to: Ts,
        limit: usize,
    ) -> PortResult<Vec<Forecast>> {
        self.faults.check("results store")?;
        self.inner.forecasts(device, from, to, limit).await
    }

    async fn late_readings(
        &self,
        device: Option<&DeviceId>,
        from: Ts,
        to: Ts,
        limit: usize,
    ) -> PortResult<Vec<LateReading>> {
        self.faults.check("results store")?;
        self.inner.late_readings(device, from, to, limit).await
    }
}

#[async_trait]
impl<T: DeviceRegistry + ?Sized> DeviceRegistry for Faulty<T> {
    async fn add_device(&self, device: &DeviceId, now: Ts) -> PortResult<Option<DeviceRecord>> {
        self.faults.check("device registry")?;
        self.inner.add_device(device, now).await
    }

    async fn get_device(&self, device: &DeviceId) -> PortResult<Option<DeviceRecord>> {
        self.faults.check("device registry")?;
        self.inner.get_device(device).await
    }

    async fn list_devices(&self) -> PortResult<Vec<DeviceRecord>> {
        self.faults.check("device registry")?;
        self.inner.list_devices().await
    }

    async fn remove_device(&self, device: &DeviceId) -> PortResult<bool> {
        self.faults.check("device registry")?;
        self.inner.remove_device(device).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::{self, unique_device};
    use iotstream_core::PortErrorKind;
    use iotstream_core::topics;

    fn injected<T: std::fmt::Debug>(r: PortResult<T>) {
        let e = r.expect_err("a port that is down must fail");
        assert_eq!(e.kind, PortErrorKind::Unavailable, "{e}");
        assert!(e.message.contains("injected fault"), "{e}");
    }

    /// Up, the wrapped engines pass their conformance suites (the decorator changes nothing);
    /// down, every call fails as `Unavailable`, including a consumer taken while up; up again,
    /// they work again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn wrapped_ports_conform_while_up_and_fail_while_down() {
        let dir = tempfile::tempdir().unwrap();
        let b = crate::connect(dir.path(), &crate::BackendUrls::default())
            .await
            .unwrap();
        let faults = Faults::new();
        let sink: Arc<dyn TelemetrySink> = faults.wrap(b.sink.clone());
        let store: Arc<dyn TelemetryStore> = faults.wrap(b.store.clone());
        let bus: Arc<dyn EventBus> = faults.wrap(b.bus.clone());
        let results: Arc<dyn ResultsStore> = faults.wrap(b.results.clone());
        conformance::sink::run(sink.clone(), store.clone(), bus.clone()).await;
        conformance::store::run(store.clone()).await;
        conformance::results::run(results.clone(), b.outbox.clone()).await;

        let mut consumer = bus.subscribe("faults", topics::TELEMETRY).await.unwrap();
        let device = unique_device("faults");
        faults.set_down(true);
        injected(sink.accept(&[]).await);
        injected(store.contains(&[]).await);
        injected(store.range(&device, Ts(0), Ts(1), 1).await);
        injected(bus.publish(topics::TELEMETRY, &[]).await);
        injected(bus.subscribe("faults-2", topics::TELEMETRY).await.map(|_| ()));
        injected(consumer.poll(1, Duration::from_millis(1)).await);
        injected(consumer.commit().await);
        injected(results.alerts(None, None, 1).await);
        injected(results.latest(&device).await);
        injected(results.insert_forecasts(&[]).await);
        injected(results.insert_late_readings(&[]).await);
        injected(results.forecasts(None, Ts(0), Ts(1), 1).await);
        injected(results.late_readings(Some(&device), Ts(0), Ts(1), 1).await);

        faults.set_down(false);
        assert!(consumer.poll(1, Duration::from_millis(1)).await.is_ok());
        assert_eq!(results.latest(&device).await.unwrap(), None);
    }
}
