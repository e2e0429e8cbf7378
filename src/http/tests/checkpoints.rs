//! analyze saves its checkpoints in the background: a checkpoint store that takes seconds per
//! save (a stalled database commit) does not hold the analysis, or the alerts, up behind it.

use super::*;
use async_trait::async_trait;
use iotstream_core::ports::{Checkpoint, CheckpointStore, PortResult};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Saves like the store it wraps, after `delay`; counts saves started and finished.
struct SlowCheckpoints {
    inner: Arc<dyn CheckpointStore>,
    delay: Duration,
    started: AtomicUsize,
    finished: AtomicUsize,
}

#[async_trait]
impl CheckpointStore for SlowCheckpoints {
    async fn load_checkpoint(&self, name: &str) -> PortResult<Option<Checkpoint>> {
        self.inner.load_checkpoint(name).await
    }

    async fn save_checkpoint(&self, name: &str, checkpoint: &Checkpoint) -> PortResult<()> {
        self.started.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        let saved = self.inner.save_checkpoint(name, checkpoint).await;
        self.finished.fetch_add(1, Ordering::SeqCst);
        saved
    }
}

#[tokio::test]
async fn an_alert_does_not_wait_for_a_slow_checkpoint_save() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let slow: Arc<std::sync::OnceLock<Arc<SlowCheckpoints>>> = Arc::default();
    let handle = slow.clone();
    let app = start_in(dir, cfg, move |b| {
        let s = Arc::new(SlowCheckpoints {
            inner: b.checkpoints.clone(),
            delay: Duration::from_secs(6),
            started: AtomicUsize::new(0),
            finished: AtomicUsize::new(0),
        });
        b.checkpoints = s.clone();
        handle.set(s).ok();
    })
    .await;
    let slow = slow.get().unwrap().clone();
    let token = app.device("pump-1").await;
    let reading = |v: f64| json!({"deviceId": "pump-1", "metrics": {"temperature": v}}).to_string();

    // A first reading makes the state dirty: a checkpoint save starts and takes 6 s.
    let r = app.post(Some(&token), "application/json", reading(20.0)).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.json);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while slow.started.load(Ordering::SeqCst) == 0 {
        assert!(std::time::Instant::now() < deadline, "no checkpoint save started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let sent = std::time::Instant::now();
    let r = app.post(Some(&token), "application/json", reading(91.0)).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.json);
    app.eventually("/api/alerts?state=active", |j| {
        j["alerts"].as_array().is_some_and(|a| !a.is_empty())
    })
    .await;

    assert_eq!(
        slow.finished.load(Ordering::SeqCst),
        0,
        "the alert came while the save was still running"
    );
    assert!(
        sent.elapsed() < Duration::from_secs(3),
        "took {:?}",
        sent.elapsed()
    );
    // The save completes and the pipeline shuts down cleanly with its final checkpoint.
    let dir = app.shutdown().await;
    assert!(slow.finished.load(Ordering::SeqCst) >= 1);
    drop(dir);
}
