//! Port traits: what the functions need from the outside world. One module per engine implements
//! them in `iotstream-backends` (embedded, and later Kafka, Cosmos DB, PostgreSQL, Redis); each
//! port has one conformance suite that every engine passes.
//!
//! Async traits are boxed (`async_trait`) so that engines are chosen at run time behind
//! `Arc<dyn Port>`; the core itself stays free of any runtime.

use crate::device::DeviceId;
use crate::error::PortError;
use crate::model::{Aggregate, Alert, AlertEvent, AlertState, Forecast, LateReading, LatestState};
use crate::reading::Reading;
use crate::ts::Ts;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::time::Duration;

pub type PortResult<T> = Result<T, PortError>;

/// Raw readings, as received (Cosmos DB container `telemetry`, partition key `/deviceId`).
#[async_trait]
pub trait TelemetryStore: Send + Sync {
    /// Durably stores the readings, idempotently by `Reading::id`. Returns, in input order, true
    /// for each reading that was new. On `Ok`, every reading survives a crash.
    async fn put(&self, readings: &[Reading]) -> PortResult<Vec<bool>>;
    /// Which of these reading ids are already stored, in input order.
    async fn contains(&self, device_ids_and_ids: &[(DeviceId, String)]) -> PortResult<Vec<bool>>;
    /// A device's readings with `from <= ts < to`, oldest first, at most `limit`.
    async fn range(&self, device: &DeviceId, from: Ts, to: Ts, limit: usize) -> PortResult<Vec<Reading>>;
}

/// Where ingest hands readings: each new reading durably stored *and* published on the
/// `telemetry` topic (key = device id), idempotently by `Reading::id`. Returns, in input order,
/// true for each reading that was new. On `Ok`, every new reading survives a crash on both sides.
///
/// An engine that keeps the store in the bus implements it natively with one write; otherwise
/// `iotstream_backends::SplitSink` composes a [`TelemetryStore`] and an [`EventBus`].
#[async_trait]
pub trait TelemetrySink: Send + Sync {
    async fn accept(&self, readings: &[Reading]) -> PortResult<Vec<bool>>;

    /// How many `accept` calls may run at once. 1 (the default): one at a time, each call
    /// seeing everything earlier calls wrote. More: calls overlap (one group's lookup while an
    /// earlier one publishes or stores), so a reading sent twice at the same moment may be
    /// accepted twice, which analyze's dedup absorbs.
    fn concurrency(&self) -> usize {
        1
    }
}

/// A record to publish: `key` decides the partition (per-key order is kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub key: String,
    pub value: Vec<u8>,
}

/// A record as delivered to a consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
    pub key: String,
    pub value: Vec<u8>,
}

/// A record of a batch that can never be handled (it does not decode): the index of the
/// record in its batch and why. Runners set it aside with [`EventBus::dead_letter`] before they
/// commit past it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Poisoned {
    pub index: usize,
    pub reason: String,
}

/// A position in a topic partition: the offset of the next record to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Position {
    pub partition: u32,
    pub next_offset: u64,
}

/// A Kafka-shaped event bus: topics split into partitions by key hash, durable append,
/// consumer groups with committed offsets, at-least-once delivery.
#[async_trait]
pub trait EventBus: Send + Sync {
    /// Creates the topic if missing (idempotent).
    async fn ensure_topic(&self, topic: &str) -> PortResult<()>;
    /// Appends records durably. On `Ok`, they survive a crash and records with the same key keep
    /// their relative order.
    async fn publish(&self, topic: &str, records: &[Record]) -> PortResult<()>;
    /// Joins `group` on `topic`, starting from the group's committed offsets (or the beginning).
    async fn subscribe(&self, group: &str, topic: &str) -> PortResult<Box<dyn Consumer>>;
    /// Total lag of `group` on `topic`: high watermarks minus committed offsets, summed.
    async fn lag(&self, group: &str, topic: &str) -> PortResult<u64>;
    /// Sets aside a record that can never be handled (poison) on `<topic>.dead-letter`, with
    /// the reason. Engines with record headers (Kafka) put the reason and the record's origin
    /// there; this default wraps them with the record in a JSON envelope.
    async fn dead_letter(&self, record: &Delivered, reason: &str) -> PortResult<()> {
        let topic = format!("{}.dead-letter", record.topic);
        self.ensure_topic(&topic).await?;
        let envelope = serde_json::json!({
            "reason": reason,
            "topic": record.topic,
            "partition": record.partition,
            "offset": record.offset,
            "key": record.key,
            "value": String::from_utf8_lossy(&record.value),
        });
        let value = serde_json::to_vec(&envelope).unwrap_or_default();
        self.publish(
            &topic,
            &[Record {
                key: record.key.clone(),
                value,
            }],
        )
        .await
    }
}

/// One member of a consumer group.
#[async_trait]
pub trait Consumer: Send {
    /// Up to `max` records after the current positions, waiting at most `wait` for the first.
    async fn poll(&mut self, max: usize, wait: Duration) -> PortResult<Vec<Delivered>>;
    /// Commits the positions after everything returned by `poll` so far. Call it only once the
    /// side effects of those records are durable.
    async fn commit(&mut self) -> PortResult<()> {
        let all = self.positions();
        self.commit_at(&all).await
    }
    /// Commits the given positions (taken earlier from [`Consumer::positions`]) instead of the
    /// current ones, for a caller whose side effects are durable only up to that earlier point.
    /// Partitions not listed keep their committed offsets; partitions this consumer no longer
    /// owns are skipped.
    async fn commit_at(&mut self, positions: &[Position]) -> PortResult<()>;
    /// Moves the read position (e.g. to a checkpoint's offsets); committed offsets are unchanged.
    async fn seek(&mut self, positions: &[Position]) -> PortResult<()>;
    /// The current read positions of every partition this consumer owns.
    fn positions(&self) -> Vec<Position>;
}

/// A provisioned device. The key is derived (see `sas::derive_device_key`), so only the
/// generation is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceRecord {
    pub device_id: DeviceId,
    pub generation: u32,
    pub created_at: Ts,
}

/// Device provisioning.
#[async_trait]
pub trait DeviceRegistry: Send + Sync {
    /// Adds a device; `Ok(None)` when it already exists. A device removed before gets the next
    /// generation, so its old key stops working.
    async fn add_device(&self, device: &DeviceId, now: Ts) -> PortResult<Option<DeviceRecord>>;
    async fn get_device(&self, device: &DeviceId) -> PortResult<Option<DeviceRecord>>;
    async fn list_devices(&self) -> PortResult<Vec<DeviceRecord>>;
    /// True when the device existed.
    async fn remove_device(&self, device: &DeviceId) -> PortResult<bool>;
}

/// One point of an aggregated series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeriesPoint {
    pub ts: Ts,
    pub count: u64,
    pub min: f64,
    pub max: f64,
    pub mean: f64,
}

/// Result of acknowledging an alert.
#[derive(Debug, Clone, PartialEq)]
pub enum AckOutcome {
    NotFound,
    /// Already acknowledged or resolved: nothing changed.
    Unchanged(Alert),
    /// Acknowledged now; an `alert.acknowledged` notification was queued in the same transaction.
    Acknowledged(Alert),
}

/// Results: aggregates, alerts, latest device state, forecasts and late readings (PostgreSQL /
/// SQLite).
#[async_trait]
pub trait ResultsStore: Send + Sync {
    /// Upserts by (device, metric, window size, window start): a later emission of a window
    /// replaces it unless it holds fewer readings ([`Aggregate::supersedes`]), within one call
    /// too (a window only grows, so that one is stale: e.g. from an instance handing its
    /// partition over).
    async fn upsert_aggregates(&self, aggregates: &[Aggregate]) -> PortResult<()>;
    /// Keeps, per device, the newest state (by `last_seen`), merging metrics.
    async fn upsert_latest(&self, states: &[LatestState]) -> PortResult<()>;
    /// Applies alert transitions idempotently: replays and redeliveries change nothing, and a
    /// resolved alert never goes back to active.
    async fn apply_alert_events(&self, events: &[AlertEvent]) -> PortResult<()>;
    async fn latest(&self, device: &DeviceId) -> PortResult<Option<LatestState>>;
    async fn all_latest(&self) -> PortResult<Vec<LatestState>>;
    /// Aggregates of `[from, to)` re-bucketed into `step_ms` buckets, oldest first.
    async fn series(
        &self,
        device: &DeviceId,
        metric: &str,
        from: Ts,
        to: Ts,
        step_ms: i64,
    ) -> PortResult<Vec<SeriesPoint>>;
    /// Alerts, newest first, optionally of one state and one device.
    async fn alerts(
        &self,
        state: Option<AlertState>,
        device: Option<&DeviceId>,
        limit: usize,
    ) -> PortResult<Vec<Alert>>;
    async fn alert(&self, id: &str) -> PortResult<Option<Alert>>;
    async fn ack_alert(&self, id: &str, now: Ts) -> PortResult<AckOutcome>;
    /// Stores forecasts once each, keyed by (device, `at`, rule): a redelivered or replayed
    /// forecast changes nothing (the first one stored is kept).
    async fn insert_forecasts(&self, forecasts: &[Forecast]) -> PortResult<()>;
    /// Stores late readings once each, keyed by (device, reading id).
    async fn insert_late_readings(&self, late: &[LateReading]) -> PortResult<()>;
    /// Forecasts made (`at`) within `[from, to)`, of one device or all, newest first (then by
    /// device and rule, descending, bytewise), at most `limit`.
    async fn forecasts(
        &self,
        device: Option<&DeviceId>,
        from: Ts,
        to: Ts,
        limit: usize,
    ) -> PortResult<Vec<Forecast>>;
    /// Late readings with `ts` within `[from, to)`, of one device or all, newest first (then by
    /// device and reading id, descending, bytewise), at most `limit`.
    async fn late_readings(
        &self,
        device: Option<&DeviceId>,
        from: Ts,
        to: Ts,
        limit: usize,
    ) -> PortResult<Vec<LateReading>>;
}

/// A webhook delivery waiting in the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingDelivery {
    /// The delivery id (`X-Iotstream-Delivery`), stable across retries.
    pub id: String,
    pub event: AlertEvent,
    pub attempts: u32,
    pub next_attempt_at: Ts,
}

/// A delivery that ran out of retries.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetter {
    pub id: String,
    pub event: String,
    pub attempts: u32,
    pub last_error: String,
    pub dead_at: Ts,
}

/// What the outbox already knows of a batch of events ([`Outbox::screen`]).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Screened {
    /// Event ids it holds, whatever their status.
    pub held: HashSet<String>,
    /// Ids of the batch's alerts that have a pending delivery: their new events queue behind it.
    pub waiting: HashSet<String>,
}

/// How the first delivery of an event that was sent before it was queued ended
/// ([`Outbox::record`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Settled {
    Delivered,
    /// To be sent (again) at `at`, after `attempts` failed attempts (0: not tried yet).
    Pending {
        attempts: u32,
        at: Ts,
        error: Option<String>,
    },
    Dead {
        attempts: u32,
        error: String,
    },
}

/// Durable notification outbox: what notify must still deliver.
///
/// Order: a pending event is never due before an earlier pending event of its alert. An event
/// queued or recorded pending while its alert has pending events is due no earlier than the
/// latest of them, so the delivery loop sends the events of one alert in the order they came.
#[async_trait]
pub trait Outbox: Send + Sync {
    /// Queues events, ignoring ids already held. Returns how many were new.
    async fn enqueue(&self, events: &[AlertEvent], now: Ts) -> PortResult<usize>;
    /// Which of `events` it holds, and which of their alerts have a pending delivery.
    async fn screen(&self, events: &[AlertEvent]) -> PortResult<Screened>;
    /// Records events that were sent before being queued, with how that ended (one write),
    /// ignoring ids already held. Returns how many were new.
    async fn record(&self, settled: &[(AlertEvent, Settled)], now: Ts) -> PortResult<usize>;
    /// Deliveries due at `now`, by due time, then in the order they were queued (so the events
    /// of one alert keep their order).
    async fn due(&self, now: Ts, limit: usize) -> PortResult<Vec<PendingDelivery>>;
    /// When the next pending delivery is due, if any.
    async fn next_due(&self) -> PortResult<Option<Ts>>;
    /// Marks deliveries done, in one write (unknown or finished ids are ignored).
    async fn mark_delivered(&self, ids: &[String], now: Ts) -> PortResult<()>;
    async fn schedule_retry(&self, id: &str, attempts: u32, at: Ts, error: &str) -> PortResult<()>;
    async fn dead_letter(&self, id: &str, attempts: u32, error: &str, now: Ts) -> PortResult<()>;
    async fn dead_letters(&self, limit: usize) -> PortResult<Vec<DeadLetter>>;
}

/// A consumer's checkpoint: engine state and the input positions it reflects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub positions: Vec<Position>,
    pub state: Vec<u8>,
}

/// Durable checkpoints of stateful consumers (analyze), keyed by name.
#[async_trait]
pub trait CheckpointStore: Send + Sync {
    async fn load_checkpoint(&self, name: &str) -> PortResult<Option<Checkpoint>>;
    async fn save_checkpoint(&self, name: &str, checkpoint: &Checkpoint) -> PortResult<()>;
}

/// Hot, lossy state for fast reads (Redis / in-process). Losing it loses nothing: the results
/// store is the source of truth.
#[async_trait]
pub trait Cache: Send + Sync {
    async fn set_latest(&self, states: &[LatestState]) -> PortResult<()>;
    async fn get_latest(&self, device: &DeviceId) -> PortResult<Option<LatestState>>;
    /// Keeps recent window aggregates hot (an emission of a window replaces the cached one as in
    /// [`ResultsStore::upsert_aggregates`]). Optional:
    /// the in-process cache does not, the results store serves series.
    async fn put_aggregates(&self, _aggregates: &[Aggregate]) -> PortResult<()> {
        Ok(())
    }
    /// Keeps the open alerts hot and announces the changes to live subscribers. Optional.
    async fn put_alerts(&self, _events: &[AlertEvent]) -> PortResult<()> {
        Ok(())
    }
    /// Keeps each device's recent forecasts hot and announces them. Optional, like aggregates.
    async fn put_forecasts(&self, _forecasts: &[Forecast]) -> PortResult<()> {
        Ok(())
    }
    /// Keeps each device's recent late readings hot and announces them. Optional.
    async fn put_late_readings(&self, _late: &[LateReading]) -> PortResult<()> {
        Ok(())
    }
}

/// A webhook request, signed.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookRequest {
    pub delivery_id: String,
    pub event: String,
    pub body: Vec<u8>,
    /// `sha256=<hex>`.
    pub signature: String,
}

/// Sends one webhook request. `Err` with a retryable kind means "try again later".
#[async_trait]
pub trait Notifier: Send + Sync {
    async fn send(&self, request: &WebhookRequest) -> PortResult<()>;
}
