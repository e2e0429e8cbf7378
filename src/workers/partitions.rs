//! analyze's state, checkpointed per bus partition, so several analyze instances can share the
//! `telemetry` topic (Kafka assigns each partition to one of them) and a partition's state moves
//! with it on a rebalance.
//!
//! - The first records of a partition this instance has not owned yet load the partition's
//!   checkpoint (`analyze/p<N>`: the state of its devices and the position it reflects), absorb
//!   it into the engine, seek past it, and drop records the state already reflects.
//! - A checkpoint saves one entry per owned partition, then commits offsets. The state is
//!   snapshotted at once; the loop saves it in the background and reads on meanwhile.
//! - A partition that is no longer in the consumer's positions (revoked by a rebalance) is
//!   released: its devices' state is dropped; its new owner resumes from its last checkpoint and
//!   re-publishes what followed, which the idempotent sinks absorb.
//! - A partition whose records resume past where this instance left off was read by another
//!   owner meanwhile (it went away and came back between two checkpoints, so the release above
//!   never ran): its state here is stale, so it is dropped and the checkpoint loaded instead.

use iotstream_core::PortError;
use iotstream_core::engine::Engine;
use iotstream_core::ports::{Checkpoint, CheckpointStore, Consumer, Delivered, Position};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Retries `op` while it fails (a backend that is down), until shutdown.
async fn retrying<T, F, Fut>(shutdown: &watch::Receiver<bool>, mut op: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, PortError>>,
{
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) => pause(shutdown, &e).await?,
        }
    }
}

/// Logs a failed call, waits a second (the worker's retry pace), fails when shutting down.
async fn pause(shutdown: &watch::Receiver<bool>, e: &PortError) -> anyhow::Result<()> {
    metrics::counter!("iotstream_worker_retries_total", "worker" => "analyze").increment(1);
    tracing::warn!(error = %e, "analyze cannot load a partition's checkpoint yet; retrying");
    if *shutdown.borrow() {
        anyhow::bail!("stopping while loading a partition's checkpoint");
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    Ok(())
}

/// The checkpoint entry of a partition's analyze state. `run analyze` and `serve` share it, and its
/// format, so either runner can take over the other's partitions.
pub fn key(partition: u32) -> String {
    format!("analyze/p{partition}")
}

/// The offset of the partition's first record a checkpoint does not reflect.
pub fn position(cp: &Checkpoint, partition: u32) -> u64 {
    cp.positions
        .iter()
        .find(|x| x.partition == partition)
        .map_or(0, |x| x.next_offset)
}

/// Absorbs a partition's checkpoint into `engine`; returns the offset it resumes from, or `None`
/// when there is none or this build cannot read it (an older format: the partition's state
/// starts afresh rather than refuse to run).
pub fn absorb(engine: &mut Engine, loaded: Option<Checkpoint>, partition: u32) -> Option<u64> {
    let cp = loaded?;
    match engine.absorb_at(&cp.state, crate::app::now()) {
        Ok(()) => Some(position(&cp, partition)),
        Err(e) => {
            tracing::warn!(partition, error = %e, "ignoring an unreadable analyze checkpoint");
            None
        }
    }
}

/// Owned partitions and the offset below which their records are already in the engine state.
#[derive(Default)]
pub struct Owned {
    from: BTreeMap<u32, u64>,
    /// Partitions whose checkpoint was just loaded: their next records may start past `from`
    /// (offsets that hold no record), which is not a sign of another owner.
    loaded: BTreeSet<u32>,
}

impl Owned {
    /// Loads the checkpoints of partitions seen for the first time, then returns the batch's
    /// records grouped by partition (in order), without those the state already reflects.
    /// A checkpoint store or bus that is down is retried (the batch waits in memory); an error
    /// comes back only when shutdown came first.
    pub async fn admit(
        &mut self,
        records: Vec<Delivered>,
        engine: &mut Engine,
        consumer: &mut dyn Consumer,
        store: &dyn CheckpointStore,
        shutdown: &watch::Receiver<bool>,
    ) -> anyhow::Result<Vec<(u32, Vec<Delivered>)>> {
        let mut groups: BTreeMap<u32, Vec<Delivered>> = BTreeMap::new();
        for r in records {
            groups.entry(r.partition).or_default().push(r);
        }
        let mut again: Vec<u32> = Vec::new();
        for (&p, rs) in &groups {
            if let Some(&from) = self.from.get(&p) {
                let first = rs.first().map_or(from, |r| r.offset);
                if first <= from || self.loaded.contains(&p) {
                    continue;
                }
                tracing::info!(
                    partition = p,
                    from,
                    first,
                    "analyze got a partition back that another instance read meanwhile; reloading its checkpoint"
                );
                engine.release_partition(p);
                self.from.remove(&p);
            }
            let name = key(p);
            let loaded = retrying(shutdown, || store.load_checkpoint(&name)).await?;
            let from = absorb(engine, loaded, p).unwrap_or(0);
            // Records from past the checkpoint's position (the consumer kept reading while the
            // partition was away, or ahead of what was checkpointed): go back to the position;
            // this batch's records of the partition come again after it.
            if rs.first().is_some_and(|r| r.offset > from) && from > 0 {
                let back = [Position {
                    partition: p,
                    next_offset: from,
                }];
                loop {
                    match consumer.seek(&back).await {
                        Ok(()) => break,
                        Err(e) => pause(shutdown, &e).await?,
                    }
                }
                again.push(p);
            }
            tracing::debug!(partition = p, from, "analyze owns a partition");
            self.from.insert(p, from);
            self.loaded.insert(p);
        }
        let mut admitted = Vec::with_capacity(groups.len());
        for (p, mut rs) in groups {
            if again.contains(&p) {
                continue;
            }
            let from = self.from.get_mut(&p).expect("owned above");
            rs.retain(|r| r.offset >= *from);
            if let Some(last) = rs.last() {
                // The caller analyses these next: the state reflects them from then on.
                *from = last.offset + 1;
                self.loaded.remove(&p);
                admitted.push((p, rs));
            }
        }
        Ok(admitted)
    }

    /// Saves a checkpoint per owned partition and commits; releases revoked partitions. False
    /// when a checkpoint could not be saved (nothing is committed then). The loop does the same
    /// in two halves: [`Owned::snapshot`], then a [`Saving`] in the background.
    pub async fn checkpoint(
        &mut self,
        engine: &mut Engine,
        consumer: &mut dyn Consumer,
        store: &dyn CheckpointStore,
    ) -> bool {
        let checkpoints = self.snapshot(engine, consumer);
        if !save(store, &checkpoints).await {
            return false;
        }
        commit(consumer, &positions_of(&checkpoints)).await;
        true
    }

    /// Releases revoked partitions, then takes each owned partition's checkpoint at the
    /// consumer's position: what [`save`] writes. Synchronous, so the state is the one those
    /// positions reflect.
    pub fn snapshot(&mut self, engine: &mut Engine, consumer: &dyn Consumer) -> Vec<(String, Checkpoint)> {
        let positions = consumer.positions();
        let revoked: Vec<u32> = self
            .from
            .keys()
            .copied()
            .filter(|p| !positions.iter().any(|x| x.partition == *p))
            .collect();
        for p in revoked {
            tracing::info!(partition = p, "analyze released a partition");
            engine.release_partition(p);
            self.from.remove(&p);
            self.loaded.remove(&p);
        }
        positions
            .iter()
            .filter(|x| self.from.contains_key(&x.partition))
            .map(|pos| {
                let cp = Checkpoint {
                    positions: vec![*pos],
                    state: engine.snapshot_partition(pos.partition),
                };
                (key(pos.partition), cp)
            })
            .collect()
    }
}

/// Saves checkpoints taken by [`Owned::snapshot`], all at once (one database round trip's
/// time, not one per partition); false when one could not be saved.
async fn save(store: &dyn CheckpointStore, checkpoints: &[(String, Checkpoint)]) -> bool {
    let saves = checkpoints
        .iter()
        .map(|(name, cp)| store.save_checkpoint(name, cp));
    if let Some(e) = futures::future::join_all(saves)
        .await
        .into_iter()
        .find_map(Result::err)
    {
        tracing::warn!(error = %e, "analyze checkpoint failed; will retry");
        return false;
    }
    let bytes: usize = checkpoints.iter().map(|(_, cp)| cp.state.len()).sum();
    metrics::gauge!("iotstream_analyze_checkpoint_bytes").set(bytes as f64);
    true
}

/// A checkpoint being saved in the background (see [`save`]), so that a slow database commit
/// does not hold up the analysis, and the alerts, behind it.
pub struct Saving {
    task: JoinHandle<bool>,
    /// What the save commits once it is done.
    positions: Vec<Position>,
    /// How long taking the snapshot took, in the loop.
    pub snapshot_took: Duration,
    started: Instant,
}

impl Saving {
    pub fn start(
        store: Arc<dyn CheckpointStore>,
        checkpoints: Vec<(String, Checkpoint)>,
        snapshot_took: Duration,
    ) -> Saving {
        let positions = positions_of(&checkpoints);
        let started = Instant::now();
        let task = tokio::spawn(async move {
            let saved = save(store.as_ref(), &checkpoints).await;
            super::analyze::step_done("checkpoint", started);
            saved
        });
        Saving {
            task,
            positions,
            snapshot_took,
            started,
        }
    }

    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Waits for the save; commits what it saved when it succeeded. Returns whether it did and
    /// how long the save took.
    pub async fn finish(self, consumer: &mut dyn Consumer) -> (bool, Duration) {
        let saved = self.task.await.unwrap_or(false);
        let took = self.started.elapsed();
        if saved {
            commit(consumer, &self.positions).await;
        }
        (saved, took)
    }
}

/// The positions `checkpoints` reflect.
fn positions_of(checkpoints: &[(String, Checkpoint)]) -> Vec<Position> {
    checkpoints
        .iter()
        .flat_map(|(_, cp)| cp.positions.iter().copied())
        .collect()
}

/// Commits the `positions` saved checkpoints reflect, after a [`save`], and nothing past
/// them: records analysed while the checkpoint was being saved, and partitions assigned since
/// the snapshot, stay uncommitted. So a partition's committed offset is never ahead of its
/// checkpoint, and a new owner that finds no checkpoint reads it from where the committed
/// offset says without missing records no checkpoint covers. Committed offsets also feed lag
/// metrics and KEDA.
async fn commit(consumer: &mut dyn Consumer, positions: &[Position]) {
    if let Err(e) = consumer.commit_at(positions).await {
        tracing::warn!(error = %e, "analyze offset commit failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iotstream_backends::{EmbeddedBus, EmbeddedResults};
    use iotstream_core::model::Insight;
    use iotstream_core::ports::EventBus;
    use iotstream_core::rules::Rules;
    use iotstream_core::{DeviceId, Reading, Ts};

    /// 2026-11-25T10:00:00Z.
    const T0: i64 = 1_795_600_800_000;

    /// Records of partition 0: one reading of device `d1` per offset, a second apart.
    fn records(offsets: std::ops::Range<u64>) -> Vec<Delivered> {
        offsets
            .map(|o| {
                let r = Reading {
                    id: format!("r{o}"),
                    device_id: DeviceId::parse("d1").unwrap(),
                    ts: Ts::from_millis(T0 + o as i64 * 1_000),
                    metrics: iotstream_core::Metrics::from_iter([(
                        "temperature".to_owned(),
                        20.0 + o as f64,
                    )]),
                    message_id: None,
                };
                Delivered {
                    topic: "telemetry".into(),
                    partition: 0,
                    offset: o,
                    key: "d1".into(),
                    value: serde_json::to_vec(&r).unwrap(),
                }
            })
            .collect()
    }

    fn analyse(engine: &mut Engine, rs: &[Delivered]) {
        let readings: Vec<Reading> = rs
            .iter()
            .map(|r| serde_json::from_slice(&r.value).unwrap())
            .collect();
        let partition = rs.first().map_or(0, |r| r.partition);
        engine.process_in(&readings, partition, Ts::from_millis(T0 + 60_000));
    }

    /// Readings counted in the engine's 1-minute temperature windows.
    fn counted(engine: &mut Engine) -> u64 {
        engine
            .finish()
            .insights
            .iter()
            .filter_map(|i| match i {
                Insight::Aggregate(a) if a.metric == "temperature" && a.window_ms == 60_000 => Some(a.count),
                _ => None,
            })
            .sum()
    }

    struct Instance {
        engine: Engine,
        owned: Owned,
        consumer: Box<dyn Consumer>,
        store: EmbeddedResults,
        shutdown: watch::Receiver<bool>,
        _dir: tempfile::TempDir,
    }

    impl Instance {
        async fn new() -> (Instance, watch::Sender<bool>) {
            let dir = tempfile::tempdir().unwrap();
            let store = EmbeddedResults::open(dir.path()).await.unwrap();
            let bus = EmbeddedBus::open(dir.path()).await.unwrap();
            let consumer = bus.subscribe("analyze", "telemetry").await.unwrap();
            let (tx, shutdown) = watch::channel(false);
            let me = Instance {
                engine: Engine::new(Rules::defaults()),
                owned: Owned::default(),
                consumer,
                store,
                shutdown,
                _dir: dir,
            };
            (me, tx)
        }

        /// Admits a batch and analyses what was admitted; returns the admitted offsets.
        async fn take(&mut self, batch: Vec<Delivered>) -> Vec<u64> {
            let groups = self
                .owned
                .admit(
                    batch,
                    &mut self.engine,
                    self.consumer.as_mut(),
                    &self.store,
                    &self.shutdown,
                )
                .await
                .unwrap();
            let mut offsets = Vec::new();
            for (_, rs) in groups {
                analyse(&mut self.engine, &rs);
                offsets.extend(rs.iter().map(|r| r.offset));
            }
            offsets
        }
    }

    #[tokio::test]
    async fn redelivered_records_the_state_already_holds_are_dropped() {
        let (mut me, _tx) = Instance::new().await;
        assert_eq!(me.take(records(0..4)).await, vec![0, 1, 2, 3]);
        assert_eq!(me.take(records(2..6)).await, vec![4, 5]);
        assert_eq!(counted(&mut me.engine), 6);
    }

    /// The partition went to another instance and came back before this one checkpointed (so
    /// it was never released here): its records resume past where this instance left off. The
    /// stale state must give way to the other owner's checkpoint, or the readings that owner
    /// analysed would be missing from every window from then on.
    #[tokio::test]
    async fn a_partition_another_owner_read_meanwhile_resumes_from_its_checkpoint() {
        let (mut me, _tx) = Instance::new().await;
        assert_eq!(me.take(records(0..4)).await, vec![0, 1, 2, 3]);
        let mut other = Engine::new(Rules::defaults());
        analyse(&mut other, &records(0..8));
        let cp = Checkpoint {
            positions: vec![Position {
                partition: 0,
                next_offset: 8,
            }],
            state: other.snapshot_partition(0),
        };
        me.store.save_checkpoint("analyze/p0", &cp).await.unwrap();
        assert_eq!(me.take(records(8..10)).await, vec![8, 9]);
        assert_eq!(
            counted(&mut me.engine),
            10,
            "each reading counted once, the other owner's too"
        );
    }

    /// A reading of `device` at second `i`, as ingest publishes it.
    fn record(device: &str, i: i64) -> iotstream_core::ports::Record {
        let r = Reading {
            id: format!("{device}-{i}"),
            device_id: DeviceId::parse(device).unwrap(),
            ts: Ts::from_millis(T0 + i * 1_000),
            metrics: iotstream_core::Metrics::from_iter([("temperature".to_owned(), 20.0)]),
            message_id: None,
        };
        iotstream_core::ports::Record {
            key: device.to_owned(),
            value: serde_json::to_vec(&r).unwrap(),
        }
    }

    /// A background save commits the positions it saved, not those read while it ran: records
    /// analysed meanwhile, and partitions first read since, stay uncommitted until a checkpoint
    /// covers them. Otherwise a new owner that finds no checkpoint for such a partition would
    /// start past records no state holds any more, and their readings would be lost.
    #[tokio::test]
    async fn a_background_save_commits_what_it_saved_and_nothing_read_since() {
        let (mut me, _tx) = Instance::new().await;
        let bus = EmbeddedBus::open_with_partitions(me._dir.path(), 2)
            .await
            .unwrap();
        me.consumer = bus.subscribe("analyze2", "telemetry2").await.unwrap();
        let first: Vec<_> = (0..4).map(|i| record("d1", i)).collect();
        bus.publish("telemetry2", &first).await.unwrap();
        let got = me.consumer.poll(100, Duration::from_secs(5)).await.unwrap();
        assert_eq!(me.take(got).await.len(), 4);
        let snapshot = me.owned.snapshot(&mut me.engine, me.consumer.as_ref());
        let store: Arc<dyn CheckpointStore> = Arc::new(me.store.clone());
        let saving = Saving::start(store, snapshot, Duration::ZERO);

        // Eight more devices: some land on the partition d1 is not on.
        let more: Vec<_> = (0..8).map(|i| record(&format!("e{i}"), 10)).collect();
        bus.publish("telemetry2", &more).await.unwrap();
        let got = me.consumer.poll(100, Duration::from_secs(5)).await.unwrap();
        let partitions: BTreeSet<u32> = got.iter().map(|r| r.partition).collect();
        assert_eq!(partitions.len(), 2, "both partitions read: {partitions:?}");
        assert_eq!(me.take(got).await.len(), 8);

        let (saved, _) = saving.finish(me.consumer.as_mut()).await;
        assert!(saved);
        assert_eq!(
            bus.lag("analyze2", "telemetry2").await.unwrap(),
            8,
            "only the 4 records the checkpoint holds are committed"
        );
        let p = first_partition(&bus, "d1").await;
        let cp = me.store.load_checkpoint(&key(p)).await.unwrap().expect("saved");
        assert_eq!(
            cp.positions,
            vec![Position {
                partition: p,
                next_offset: 4
            }]
        );
    }

    /// The partition `device`'s records land on, read from a fresh group.
    async fn first_partition(bus: &EmbeddedBus, device: &str) -> u32 {
        let mut c = bus.subscribe("probe", "telemetry2").await.unwrap();
        let got = c.poll(100, Duration::from_secs(5)).await.unwrap();
        got.iter().find(|r| r.key == device).expect("published").partition
    }
}
