//! analyze behind the Functions host: the host's Kafka trigger owns the consumer and commits a
//! batch's offsets once the invocation answers 200, so the engine state those offsets reflect
//! must be durable by then. Each partition has its own engine and lock (the host invokes one
//! partition's batches in order, partitions in parallel), and every invocation ends with the
//! partition's checkpoint: the same `analyze/p<N>` entry, in the same format, as the runner's
//! (`src/workers/partitions.rs`), so a deployment can move between `run analyze` and `serve`.
//!
//! - A partition seen for the first time loads its checkpoint (a record below the checkpoint's
//!   position is already reflected and skipped).
//! - A batch that starts past where this instance left off was read by another instance
//!   meanwhile (a rebalance): the stale state is dropped and the checkpoint loaded.
//! - A batch that starts below it is a redelivery (the host did not see the 200): records the
//!   state reflects are skipped, the rest analysed.
//! - A batch past the loaded checkpoint's position means offsets were committed without the state
//!   (a host with `CommitOnFailure: true`, or a checkpoint deleted): it is analysed, and the gap
//!   is logged and counted (`iotstream_analyze_gaps_total`).
//! - A failure after the engine advanced (only a stop in the middle: backends that are down are
//!   retried) drops the partition's state, so the host's redelivery starts from the checkpoint.
//!
//! Processing time (silence, partial windows, latest state) needs no record: [`tick_loop`] ticks
//! every partition once a second, publishes, and checkpoints when an alert changed. The host does
//! not say when a rebalance moved a partition away, so before a tick's alerts go out the
//! partition's checkpoint is read: if another instance has saved past this one's position, the
//! partition is dropped here instead (its devices are quiet here, not silent).

use super::{Failure, Handler};
use crate::workers::partitions::{absorb, key, position};
use iotstream_analyze::{Input, evaluate, publish, tick};
use iotstream_core::engine::Engine;
use iotstream_core::ports::{Checkpoint, Delivered, Position};
use iotstream_core::rules::Rules;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// One partition's engine and the offset of its next record.
pub(super) struct Part {
    engine: Engine,
    next: u64,
}

type Slot = Arc<tokio::sync::Mutex<Option<Part>>>;

pub struct Analyzer {
    rules: Rules,
    parts: Mutex<BTreeMap<u32, Slot>>,
}

impl Analyzer {
    pub fn new(rules: Rules) -> Analyzer {
        Analyzer {
            rules,
            parts: Mutex::default(),
        }
    }

    fn slot(&self, partition: u32) -> Slot {
        let mut parts = self.parts.lock().expect("partitions");
        parts.entry(partition).or_default().clone()
    }

    fn slots(&self) -> Vec<(u32, Slot)> {
        let parts = self.parts.lock().expect("partitions");
        parts.iter().map(|(p, s)| (*p, s.clone())).collect()
    }

    /// Analyses an invocation's records, partition by partition; returns lines for the host's log.
    pub(super) async fn invoke(&self, h: &Handler, records: Vec<Delivered>) -> Result<Vec<String>, Failure> {
        let mut groups: BTreeMap<u32, Vec<Delivered>> = BTreeMap::new();
        for r in records {
            groups.entry(r.partition).or_default().push(r);
        }
        let mut logs = Vec::new();
        for (partition, mut records) in groups {
            records.sort_by_key(|r| r.offset);
            let slot = self.slot(partition);
            let mut guard = slot.lock().await;
            let result = self.partition(h, partition, &mut guard, records, &mut logs).await;
            if result.is_err() {
                *guard = None;
            }
            result?;
        }
        Ok(logs)
    }

    async fn partition(
        &self,
        h: &Handler,
        partition: u32,
        held: &mut Option<Part>,
        records: Vec<Delivered>,
        logs: &mut Vec<String>,
    ) -> Result<(), Failure> {
        let first = records.first().map_or(0, |r| r.offset);
        if held.as_ref().is_some_and(|part| first > part.next) {
            logs.push(format!(
                "partition {partition} resumes at offset {first}, past this instance's {}: another instance read it meanwhile; reloading its checkpoint",
                held.as_ref().map_or(0, |p| p.next)
            ));
            *held = None;
        }
        if held.is_none() {
            *held = Some(self.load(h, partition, first, logs).await?);
        }
        let part = held.as_mut().expect("loaded above");
        let records: Vec<Delivered> = records.into_iter().filter(|r| r.offset >= part.next).collect();
        let Some(last) = records.last().map(|r| r.offset) else {
            return Ok(()); // a redelivery of what the state reflects
        };
        let input = Input::decode(&records);
        h.dead_letter("analyze", &records, &input.poisoned).await?;
        let out = evaluate(&input, partition, &mut part.engine, crate::app::now());
        iotstream_analyze::record_alert_delay("evaluated", &out.alerts);
        let bus = h.app.backends.bus.clone();
        h.retry("analyze", || publish(&out, bus.as_ref())).await?;
        part.next = last + 1;
        save(h, partition, part).await
    }

    /// The partition's checkpoint, or a fresh engine when it has none.
    async fn load(
        &self,
        h: &Handler,
        partition: u32,
        first: u64,
        logs: &mut Vec<String>,
    ) -> Result<Part, Failure> {
        let store = h.app.backends.checkpoints.clone();
        let name = key(partition);
        let loaded = h.retry("analyze", || store.load_checkpoint(&name)).await?;
        let mut engine = Engine::new(self.rules.clone());
        let Some(next) = absorb(&mut engine, loaded, partition) else {
            return Ok(Part { engine, next: 0 });
        };
        if first > next {
            metrics::counter!("iotstream_analyze_gaps_total").increment(1);
            let line = format!(
                "partition {partition}: the host delivers offset {first} but the checkpoint ends at {next}: records {next}..{first} were committed without being analysed (is CommitOnFailure false in host.json?)"
            );
            tracing::error!("{line}");
            logs.push(line);
        }
        Ok(Part { engine, next })
    }

    /// Ticks every partition this instance holds (skipping one an invocation is using: it is
    /// ticked a second later).
    async fn tick_all(&self, h: &Handler) -> Result<(), Failure> {
        for (partition, slot) in self.slots() {
            let Ok(mut guard) = slot.try_lock() else {
                continue;
            };
            let Some(part) = guard.as_mut() else {
                continue;
            };
            let out = tick(&mut part.engine, crate::app::now());
            if !out.alerts.is_empty() && moved_on(h, partition, part).await? {
                // Another instance owns the partition now (a rebalance the host did not tell
                // this one about): its devices are quiet *here*, not silent.
                tracing::info!(
                    partition,
                    "another instance analyses this partition now; dropping its state here"
                );
                *guard = None;
                continue;
            }
            let bus = h.app.backends.bus.clone();
            let mut result = h.retry("analyze", || publish(&out, bus.as_ref())).await;
            if result.is_ok() && !out.alerts.is_empty() {
                result = save(h, partition, part).await;
            }
            if result.is_err() {
                *guard = None;
                return result;
            }
        }
        Ok(())
    }
}

/// True when the partition's checkpoint is past this instance's state: another instance has
/// analysed records of it since.
async fn moved_on(h: &Handler, partition: u32, part: &Part) -> Result<bool, Failure> {
    let store = h.app.backends.checkpoints.clone();
    let name = key(partition);
    let saved = h.retry("analyze", || store.load_checkpoint(&name)).await?;
    Ok(saved.is_some_and(|cp| position(&cp, partition) > part.next))
}

async fn save(h: &Handler, partition: u32, part: &Part) -> Result<(), Failure> {
    let checkpoint = Checkpoint {
        positions: vec![Position {
            partition,
            next_offset: part.next,
        }],
        state: part.engine.snapshot_partition(partition),
    };
    let store = h.app.backends.checkpoints.clone();
    let name = key(partition);
    h.retry("analyze", || store.save_checkpoint(&name, &checkpoint))
        .await
}

/// How often the engines' processing-time work runs.
const TICK: Duration = Duration::from_secs(1);

pub async fn tick_loop(h: Arc<Handler>, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        if h.analyze.tick_all(&h).await.is_err() {
            return;
        }
    }
}
