//! analyze scaled out on Kafka: two replicas share the `telemetry` topic, each owning some
//! partitions and checkpointing them (`analyze/p<N>`). One replica stops (as KEDA scales it in)
//! and the other takes its partitions over from their checkpoints; then it comes back and the
//! partitions are split again. Through both handovers: nothing acknowledged is lost, nothing is
//! analysed twice, no alert is opened twice, and every webhook event is delivered.
//!
//! Needs `scripts/services` (run by `scripts/test`); a missing service FAILS the test.
#![cfg(all(
    feature = "integration",
    feature = "kafka",
    feature = "postgres",
    feature = "redis"
))]

mod common;

use common::real::*;
use common::workload::*;
use common::*;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn analyze_replicas_share_the_topic_and_hand_partitions_over_with_their_state() {
    let mut env = RealEnv::new("scale");
    let dir = tempfile::tempdir().unwrap();
    env.set("IOTSTREAM_RULES", rules_file(dir.path()));
    let (receiver, hook) = Receiver::start(0).await;
    let front = Server::run(&["ingest", "web"], dir.path(), None, &env.env()).await;
    let _rest = Server::run(&["process", "notify"], dir.path(), Some(&hook), &env.env()).await;
    let _a = Server::run(&["analyze"], dir.path(), None, &env.env()).await;
    let mut b = Server::run(&["analyze"], dir.path(), None, &env.env()).await;
    // Enough devices to land on every partition.
    let devices: Vec<String> = (0..8).map(|i| env.device(&format!("s{i}"))).collect();
    let start = start_ms();
    let total = 150;
    let failures = Arc::new(AtomicUsize::new(0));
    let senders: Vec<_> = devices
        .iter()
        .map(|d| {
            let token = env.provision(dir.path(), d);
            tokio::spawn(send_all(
                front.url.clone(),
                d.clone(),
                token,
                start,
                total,
                failures.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    b.terminate();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let _b = Server::run(&["analyze"], dir.path(), None, &env.env()).await;
    for s in senders {
        s.await.unwrap();
    }
    verify(&env, &devices, start, total, &receiver, &[]).await;
    let names: BTreeSet<String> = env
        .sql("SELECT name FROM checkpoints WHERE name LIKE 'analyze/p%'")
        .into_iter()
        .collect();
    assert!(names.len() >= 2, "one checkpoint per partition: {names:?}");
}
