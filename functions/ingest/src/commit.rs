//! Group commit: concurrent requests queue their readings; one task takes everything queued,
//! writes it with one bus append and one store write, and answers every request. Under load the
//! groups grow by themselves (whatever queues while one group is written forms the next), so the
//! durable-write cost is shared by many requests without a timer delaying any of them.
//!
//! The sink decides how readings become durable (see `TelemetrySink`): the embedded log stores
//! and publishes in one append, one group at a time; Kafka + Cosmos DB publish first, then store,
//! with up to `TelemetrySink::concurrency` groups overlapping (the next group forms and goes out
//! while earlier ones wait for acknowledgements or their store write).

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

/// Forms groups and commits them, up to the sink's [`TelemetrySink::concurrency`] at once:
/// while all are busy, requests queue and the next group grows.
async fn run(mut rx: mpsc::Receiver<Job>, sink: Arc<dyn TelemetrySink>, max: usize) {
    let slots = Arc::new(tokio::sync::Semaphore::new(sink.concurrency().max(1)));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = rx.recv().await else {
            return;
        };
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
        let sink = sink.clone();
        tokio::spawn(async move {
            commit_group(sink.as_ref(), group, size).await;
            drop(slot);
        });
    }
}

async fn commit_group(sink: &dyn TelemetrySink, group: Vec<Job>, size: usize) {
    metrics::histogram!("iotstream_ingest_group_readings").record(size as f64);
    // Move the readings out of the jobs: one batch for the sink, no copies.
    let mut readings = Vec::with_capacity(size);
    let mut waiting = Vec::with_capacity(group.len());
    for job in group {
        waiting.push((job.readings.len(), job.reply));
        readings.extend(job.readings);
    }
    let started = std::time::Instant::now();
    let accepted = sink.accept(&readings).await;
    metrics::histogram!("iotstream_ingest_commit_seconds").record(started.elapsed().as_secs_f64());
    match accepted {
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

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;
    use iotstream_core::ports::PortResult;
    use std::sync::Mutex;
    use std::time::Duration;

    /// A sink whose calls wait until released, one release per call, in any order; it
    /// records which readings each call got.
    struct Gate {
        concurrency: usize,
        calls: Mutex<Vec<Vec<String>>>,
        release: tokio::sync::Semaphore,
    }

    #[async_trait]
    impl TelemetrySink for Gate {
        async fn accept(&self, readings: &[Reading]) -> PortResult<Vec<bool>> {
            self.calls
                .lock()
                .unwrap()
                .push(readings.iter().map(|r| r.id.clone()).collect());
            self.release.acquire().await.expect("open").forget();
            Ok(vec![true; readings.len()])
        }

        fn concurrency(&self) -> usize {
            self.concurrency
        }
    }

    fn reading(id: &str) -> Reading {
        serde_json::from_value(serde_json::json!({
            "id": id, "deviceId": "dev-1", "ts": 1_795_600_800_000i64, "metrics": {"t": 1.0}
        }))
        .unwrap()
    }

    fn gate(concurrency: usize) -> Arc<Gate> {
        Arc::new(Gate {
            concurrency,
            calls: Mutex::default(),
            release: tokio::sync::Semaphore::new(0),
        })
    }

    async fn calls_reach(gate: &Gate, n: usize) -> bool {
        for _ in 0..100 {
            if gate.calls.lock().unwrap().len() >= n {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        false
    }

    #[tokio::test]
    async fn with_a_concurrent_sink_a_later_group_commits_while_an_earlier_one_waits() {
        let sink = gate(2);
        let committer = GroupCommitter::spawn(sink.clone(), 100, 1_000);
        let first = tokio::spawn({
            let c = committer.clone();
            async move { c.commit(vec![reading("a")]).await }
        });
        assert!(calls_reach(&sink, 1).await);
        let second = tokio::spawn({
            let c = committer.clone();
            async move { c.commit(vec![reading("b"), reading("c")]).await }
        });
        assert!(
            calls_reach(&sink, 2).await,
            "the second group did not wait for the first"
        );
        sink.release.add_permits(2);
        let (a, b) = (first.await.unwrap().unwrap(), second.await.unwrap().unwrap());
        assert_eq!((a.accepted, b.accepted), (1, 2));
    }

    #[tokio::test]
    async fn with_a_sequential_sink_requests_queue_into_the_next_group() {
        let sink = gate(1);
        let committer = GroupCommitter::spawn(sink.clone(), 100, 1_000);
        let mut requests = Vec::new();
        for id in ["a", "b", "c"] {
            let c = committer.clone();
            requests.push(tokio::spawn(async move { c.commit(vec![reading(id)]).await }));
            if id == "a" {
                assert!(calls_reach(&sink, 1).await);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(sink.calls.lock().unwrap().len(), 1, "one group at a time");
        sink.release.add_permits(2);
        for r in requests {
            assert_eq!(r.await.unwrap().unwrap().accepted, 1);
        }
        let calls = sink.calls.lock().unwrap().clone();
        assert_eq!(
            calls,
            [vec!["a"], vec!["b", "c"]],
            "b and c formed the next group"
        );
    }
}
