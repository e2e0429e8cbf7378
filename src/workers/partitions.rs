//! analyze's state, checkpointed per bus partition, so several analyze instances can share the
//! `telemetry` topic (Kafka assigns each partition to one of them) and a partition's state moves
//! with it on a rebalance.
//!
//! - The first records of a partition this instance has not owned yet load the partition's
//!   checkpoint (`analyze/p<N>`: the state of its devices and the position it reflects), absorb
//!   it into the engine, seek past it, and drop records the state already reflects.
//! - A checkpoint saves one entry per owned partition, then commits offsets.
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
use std::time::Duration;
use tokio::sync::watch;

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

fn key(partition: u32) -> String {
    format!("analyze/p{partition}")
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
            let from = match loaded {
                Some(cp) => {
                    let at = cp
                        .positions
                        .iter()
                        .find(|x| x.partition == p)
                        .map_or(0, |x| x.next_offset);
                    match engine.absorb_at(&cp.state, crate::app::now()) {
                        Ok(()) => at,
                        Err(e) => {
                            // A checkpoint this build cannot read (an older format): start the
                            // partition's state afresh rather than refuse to run.
                            tracing::warn!(partition = p, error = %e, "ignoring an unreadable analyze checkpoint");
                            0
                        }
                    }
                }
                None => 0,
            };
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
    /// when a checkpoint could not be saved (nothing is committed then).
    pub async fn checkpoint(
        &mut self,
        engine: &mut Engine,
        consumer: &mut dyn Consumer,
        store: &dyn CheckpointStore,
    ) -> bool {
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
        let mut bytes = 0usize;
        for pos in positions.iter().filter(|x| self.from.contains_key(&x.partition)) {
            let cp = Checkpoint {
                positions: vec![*pos],
                state: engine.snapshot_partition(pos.partition),
            };
            bytes += cp.state.len();
            if let Err(e) = store.save_checkpoint(&key(pos.partition), &cp).await {
                tracing::warn!(error = %e, "analyze checkpoint failed; will retry");
                return false;
            }
        }
        metrics::gauge!("iotstream_analyze_checkpoint_bytes").set(bytes as f64);
        // Committed offsets feed lag metrics and KEDA; the checkpoints are what resumes.
        if let Err(e) = consumer.commit().await {
            tracing::warn!(error = %e, "analyze offset commit failed");
        }
        true
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
                    metrics: [("temperature".to_owned(), 20.0 + o as f64)].into(),
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
        engine.process_in(&readings, 0, Ts::from_millis(T0 + 60_000));
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
}
