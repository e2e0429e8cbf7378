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

use iotstream_core::PortError;
use iotstream_core::engine::Engine;
use iotstream_core::ports::{Checkpoint, CheckpointStore, Consumer, Delivered, Position};
use std::collections::BTreeMap;
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
            if self.from.contains_key(&p) {
                continue;
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
        }
        Ok(groups
            .into_iter()
            .filter(|(p, _)| !again.contains(p))
            .map(|(p, mut rs)| {
                let from = self.from[&p];
                rs.retain(|r| r.offset >= from);
                (p, rs)
            })
            .filter(|(_, rs)| !rs.is_empty())
            .collect())
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
