//! Group commit: concurrent requests queue their readings; one task takes everything queued,
//! writes it with one bus append and one store write, and answers every request. Under load the
//! groups grow by themselves (whatever queues while one group is written forms the next), so the
//! durable-write cost is shared by many requests without a timer delaying any of them.
//!
//! Order matters for "nothing acknowledged is lost": readings are published on the bus *before*
//! they are written to the store, and only readings the store does not already hold are
//! published. A crash between the two writes leaves a reading on the bus that the store lacks;
//! the client got no 202 and re-sends it, the store still lacks it, so it is published again and
//! analyze drops the second copy by id. The opposite order could store a reading that is never
//! published, and a re-send would then be taken for a duplicate.

use iotstream_core::ports::{EventBus, Record, TelemetryStore};
use iotstream_core::{PortError, Reading, topics};
use std::collections::HashSet;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Counts for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitOutcome {
    pub accepted: usize,
    pub duplicates: usize,
}

struct Job {
    readings: Vec<Reading>,
    reply: oneshot::Sender<Result<CommitOutcome, PortError>>,
}

/// Handle to the group-commit task; cheap to clone.
#[derive(Clone)]
pub struct GroupCommitter {
    tx: mpsc::Sender<Job>,
}

impl GroupCommitter {
    /// Starts the commit task. `max_group` bounds the readings written in one group.
    pub fn spawn(store: Arc<dyn TelemetryStore>, bus: Arc<dyn EventBus>, max_group: usize) -> Self {
        let (tx, rx) = mpsc::channel(8_192);
        tokio::spawn(run(rx, store, bus, max_group));
        GroupCommitter { tx }
    }

    /// Durably accepts the readings; resolves once they are on the bus and in the store.
    pub async fn commit(&self, readings: Vec<Reading>) -> Result<CommitOutcome, PortError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job { readings, reply })
            .await
            .map_err(|_| PortError::unavailable("ingest is shutting down"))?;
        rx.await
            .map_err(|_| PortError::unavailable("ingest commit task stopped"))?
    }
}

async fn run(
    mut rx: mpsc::Receiver<Job>,
    store: Arc<dyn TelemetryStore>,
    bus: Arc<dyn EventBus>,
    max: usize,
) {
    while let Some(first) = rx.recv().await {
        let mut group = vec![first];
        let mut size = group[0].readings.len();
        while size < max {
            match rx.try_recv() {
                Ok(job) => {
                    size += job.readings.len();
                    group.push(job);
                }
                Err(_) => break,
            }
        }
        metrics::histogram!("iotstream_ingest_group_readings").record(size as f64);
        match write_group(&group, store.as_ref(), bus.as_ref()).await {
            Ok(per_job) => {
                for (job, outcome) in group.into_iter().zip(per_job) {
                    let _ = job.reply.send(Ok(outcome));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, readings = size, "ingest group commit failed");
                for job in group {
                    let _ = job.reply.send(Err(e.clone()));
                }
            }
        }
    }
}

async fn write_group(
    group: &[Job],
    store: &dyn TelemetryStore,
    bus: &dyn EventBus,
) -> Result<Vec<CommitOutcome>, PortError> {
    let keys: Vec<_> = group
        .iter()
        .flat_map(|j| j.readings.iter().map(|r| (r.device_id.clone(), r.id.clone())))
        .collect();
    let stored = store.contains(&keys).await?;
    let mut seen = HashSet::with_capacity(keys.len());
    let mut fresh: Vec<Reading> = Vec::new();
    let mut outcomes = Vec::with_capacity(group.len());
    let mut i = 0;
    for job in group {
        let mut outcome = CommitOutcome {
            accepted: 0,
            duplicates: 0,
        };
        for r in &job.readings {
            if stored[i] || !seen.insert((&r.device_id, &r.id)) {
                outcome.duplicates += 1;
            } else {
                outcome.accepted += 1;
                fresh.push(r.clone());
            }
            i += 1;
        }
        outcomes.push(outcome);
    }
    if !fresh.is_empty() {
        let records: Vec<Record> = fresh
            .iter()
            .map(|r| Record {
                key: r.device_id.to_string(),
                value: serde_json::to_vec(r).expect("readings serialise"),
            })
            .collect();
        bus.publish(topics::TELEMETRY, &records).await?;
        store.put(&fresh).await?;
    }
    Ok(outcomes)
}
