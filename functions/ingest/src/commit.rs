//! Group commit: concurrent requests queue their readings; one task takes everything queued,
//! writes it with one bus append and one store write, and answers every request. Under load the
//! groups grow by themselves (whatever queues while one group is written forms the next), so the
//! durable-write cost is shared by many requests without a timer delaying any of them.
//!
//! The sink decides how readings become durable (see `TelemetrySink`): the embedded log stores
//! and publishes in one append; Kafka + Cosmos DB publish first, then store.

use iotstream_core::ports::TelemetrySink;
use iotstream_core::{PortError, Reading};
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

/// How long a request may wait for room in the in-flight budget before it is turned away.
pub const ADMIT_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Handle to the group-commit task; cheap to clone.
#[derive(Clone)]
pub struct GroupCommitter {
    tx: mpsc::Sender<Job>,
    /// Readings accepted but not yet durable: bounds ingest's memory under overload.
    budget: Arc<tokio::sync::Semaphore>,
    max_in_flight: usize,
}

/// Why a commit did not happen.
#[derive(Debug, Clone)]
pub enum CommitError {
    /// More readings are in flight than the budget allows: shed load (503, retry shortly).
    Overloaded,
    /// The sink failed: nothing from this request is acknowledged.
    Sink(PortError),
}

impl GroupCommitter {
    /// Starts the commit task. `max_group` bounds the readings written in one group.
    /// `max_in_flight` bounds the readings waiting to become durable across all requests.
    pub fn spawn(sink: Arc<dyn TelemetrySink>, max_group: usize, max_in_flight: usize) -> Self {
        let (tx, rx) = mpsc::channel(8_192);
        tokio::spawn(run(rx, sink, max_group));
        let budget = Arc::new(tokio::sync::Semaphore::new(max_in_flight));
        GroupCommitter {
            tx,
            budget,
            max_in_flight,
        }
    }

    /// Durably accepts the readings; resolves once the sink has made them durable.
    pub async fn commit(&self, readings: Vec<Reading>) -> Result<CommitOutcome, CommitError> {
        let n = readings.len().clamp(1, self.max_in_flight) as u32;
        let _permit = tokio::time::timeout(ADMIT_WAIT, self.budget.clone().acquire_many_owned(n))
            .await
            .map_err(|_| CommitError::Overloaded)?
            .map_err(|_| CommitError::Sink(PortError::unavailable("ingest is shutting down")))?;
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job { readings, reply })
            .await
            .map_err(|_| CommitError::Sink(PortError::unavailable("ingest is shutting down")))?;
        rx.await
            .map_err(|_| CommitError::Sink(PortError::unavailable("ingest commit task stopped")))?
            .map_err(CommitError::Sink)
    }
}

async fn run(mut rx: mpsc::Receiver<Job>, sink: Arc<dyn TelemetrySink>, max: usize) {
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
        // Move the readings out of the jobs: one batch for the sink, no copies.
        let mut readings = Vec::with_capacity(size);
        let mut waiting = Vec::with_capacity(group.len());
        for job in group {
            waiting.push((job.readings.len(), job.reply));
            readings.extend(job.readings);
        }
        match sink.accept(&readings).await {
            Ok(flags) => {
                let mut flags = flags.into_iter();
                for (n, reply) in waiting {
                    let accepted = flags.by_ref().take(n).filter(|new| *new).count();
                    let _ = reply.send(Ok(CommitOutcome {
                        accepted,
                        duplicates: n - accepted,
                    }));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, readings = size, "ingest group commit failed");
                for (_, reply) in waiting {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}
