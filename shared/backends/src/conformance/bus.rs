//! [`EventBus`] / [`Consumer`] conformance: Kafka semantics.

use super::unique;
use iotstream_core::ports::{Consumer, Delivered, EventBus, Position, Record};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a check waits for records it knows are there (a real broker needs group joins).
pub const PATIENCE: Duration = Duration::from_secs(20);

/// Runs every bus check, each on fresh topics and groups.
pub async fn run(bus: Arc<dyn EventBus>) {
    per_key_order_and_dense_offsets(&*bus).await;
    committed_offsets_survive_resubscribe(&*bus).await;
    uncommitted_records_are_redelivered(&*bus).await;
    commit_at_commits_earlier_positions_only(&*bus).await;
    independent_groups_each_get_everything(&*bus).await;
    lag_counts_published_minus_committed(&*bus).await;
    poll_wakes_up_on_publish(bus.clone()).await;
    poll_respects_max_and_wait(&*bus).await;
    seek_moves_read_positions(&*bus).await;
    dead_letters_land_on_their_own_topic(&*bus).await;
}

fn rec(key: &str, value: String) -> Record {
    Record {
        key: key.to_owned(),
        value: value.into_bytes(),
    }
}

fn values(records: &[Delivered]) -> Vec<String> {
    records
        .iter()
        .map(|d| String::from_utf8_lossy(&d.value).into_owned())
        .collect()
}

/// A fresh topic (created) and group name.
async fn fresh(bus: &dyn EventBus, what: &str) -> (String, String) {
    let topic = unique(&format!("conf-{what}"));
    bus.ensure_topic(&topic).await.expect("ensure_topic");
    bus.ensure_topic(&topic)
        .await
        .expect("ensure_topic is idempotent");
    (topic, unique(&format!("conf-{what}-group")))
}

/// Polls until `n` records arrived (panics after [`PATIENCE`]), then checks nothing more comes.
pub async fn drain(consumer: &mut dyn Consumer, n: usize) -> Vec<Delivered> {
    drain_within(consumer, n, PATIENCE).await
}

/// [`drain`] with its own patience.
pub async fn drain_within(consumer: &mut dyn Consumer, n: usize, patience: Duration) -> Vec<Delivered> {
    let start = Instant::now();
    let mut got = Vec::new();
    while got.len() < n {
        assert!(
            start.elapsed() < patience,
            "expected {n} records, got {} after {patience:?}",
            got.len()
        );
        got.extend(
            consumer
                .poll(n - got.len(), Duration::from_millis(500))
                .await
                .expect("poll"),
        );
    }
    assert_eq!(got.len(), n, "poll returned more than max");
    let extra = consumer
        .poll(100, Duration::from_millis(200))
        .await
        .expect("poll");
    assert!(extra.is_empty(), "unexpected extra records: {:?}", values(&extra));
    got
}

pub async fn per_key_order_and_dense_offsets(bus: &dyn EventBus) {
    let (topic, group) = fresh(bus, "order").await;
    let keys: Vec<String> = (0..10).map(|k| format!("device-{k}")).collect();
    // Three calls, keys interleaved inside each call.
    for call in 0..3 {
        let batch: Vec<Record> = (0..7)
            .flat_map(|i| keys.iter().map(move |k| (k, call * 7 + i)))
            .map(|(k, seq)| rec(k, format!("{k}#{seq}")))
            .collect();
        bus.publish(&topic, &batch).await.expect("publish");
    }
    bus.publish(&topic, &[])
        .await
        .expect("publishing nothing is fine");
    let mut consumer = bus.subscribe(&group, &topic).await.expect("subscribe");
    let got = drain(&mut *consumer, 210).await;
    let mut per_key: BTreeMap<&str, (u32, Vec<u32>)> = BTreeMap::new();
    let mut per_partition: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for d in &got {
        assert_eq!(d.topic, topic);
        let value = String::from_utf8(d.value.clone()).expect("utf8 value");
        let (key, seq) = value.split_once('#').expect("value shape");
        assert_eq!(key, d.key, "key delivered with its record");
        let entry = per_key
            .entry(keys.iter().find(|k| *k == key).expect("known key").as_str())
            .or_insert((d.partition, vec![]));
        assert_eq!(entry.0, d.partition, "key {key} moved between partitions");
        entry.1.push(seq.parse().expect("seq"));
        per_partition.entry(d.partition).or_default().push(d.offset);
    }
    for (key, (_, seqs)) in &per_key {
        assert_eq!(seqs, &(0..21).collect::<Vec<u32>>(), "order of key {key}");
    }
    for (p, offsets) in &per_partition {
        let dense: Vec<u64> = (0..offsets.len() as u64).collect();
        assert_eq!(
            offsets, &dense,
            "offsets of partition {p} are dense from 0, in order"
        );
    }
}

pub async fn committed_offsets_survive_resubscribe(bus: &dyn EventBus) {
    let (topic, group) = fresh(bus, "commit").await;
    let first: Vec<Record> = (0..10)
        .map(|i| rec(&format!("k{}", i % 3), format!("a{i}")))
        .collect();
    bus.publish(&topic, &first).await.expect("publish");
    {
        let mut c = bus.subscribe(&group, &topic).await.expect("subscribe");
        drain(&mut *c, 10).await;
        c.commit().await.expect("commit");
        c.commit().await.expect("a second commit is harmless");
    }
    let second: Vec<Record> = (0..5).map(|i| rec(&format!("k{i}"), format!("b{i}"))).collect();
    bus.publish(&topic, &second).await.expect("publish");
    let mut c = bus.subscribe(&group, &topic).await.expect("resubscribe");
    let mut got = values(&drain(&mut *c, 5).await);
    got.sort();
    assert_eq!(
        got,
        ["b0", "b1", "b2", "b3", "b4"],
        "a new member starts at the committed offsets"
    );
}

pub async fn uncommitted_records_are_redelivered(bus: &dyn EventBus) {
    let (topic, group) = fresh(bus, "redeliver").await;
    let batch: Vec<Record> = (0..6).map(|i| rec(&format!("k{i}"), format!("a{i}"))).collect();
    bus.publish(&topic, &batch).await.expect("publish");
    {
        let mut c = bus.subscribe(&group, &topic).await.expect("subscribe");
        drain(&mut *c, 6).await;
        c.commit().await.expect("commit");
        let more: Vec<Record> = (0..4).map(|i| rec(&format!("k{i}"), format!("b{i}"))).collect();
        bus.publish(&topic, &more).await.expect("publish");
        drain(&mut *c, 4).await;
        // Crash before committing: no commit.
    }
    resumes_at_the_b_records(
        bus,
        &group,
        &topic,
        "uncommitted records come again (at-least-once)",
    )
    .await;
}

/// `commit_at` commits positions taken earlier, not the current ones, and only the partitions
/// it lists (analyze commits exactly what its checkpoint saved).
pub async fn commit_at_commits_earlier_positions_only(bus: &dyn EventBus) {
    let (topic, group) = fresh(bus, "commit-at").await;
    let batch: Vec<Record> = (0..8).map(|i| rec(&format!("k{i}"), format!("a{i}"))).collect();
    bus.publish(&topic, &batch).await.expect("publish");
    {
        let mut c = bus.subscribe(&group, &topic).await.expect("subscribe");
        let first = drain(&mut *c, 8).await;
        let mut earlier = c.positions();
        earlier.sort_by_key(|p| p.partition);
        let more: Vec<Record> = (0..4).map(|i| rec(&format!("k{i}"), format!("b{i}"))).collect();
        bus.publish(&topic, &more).await.expect("publish");
        drain(&mut *c, 4).await;
        // Only the first partition that held one of the first records, at its earlier position.
        let one = first[0].partition;
        let only: Vec<Position> = earlier.iter().filter(|p| p.partition == one).copied().collect();
        c.commit_at(&only).await.expect("commit_at one partition");
        let held = first.iter().filter(|d| d.partition == one).count() as u64;
        assert_eq!(
            bus.lag(&group, &topic).await.expect("lag"),
            12 - held,
            "only the listed partition is committed, at the listed position"
        );
        c.commit_at(&earlier).await.expect("commit_at");
        c.commit_at(&earlier)
            .await
            .expect("a second commit_at is harmless");
    }
    resumes_at_the_b_records(
        bus,
        &group,
        &topic,
        "a new member starts at the positions committed, not at the later ones read",
    )
    .await;
}

/// A new member of `group` reads exactly the four records `b0`..`b3` (and nothing more).
async fn resumes_at_the_b_records(bus: &dyn EventBus, group: &str, topic: &str, why: &str) {
    let mut c = bus.subscribe(group, topic).await.expect("resubscribe");
    let mut got = values(&drain(&mut *c, 4).await);
    got.sort();
    assert_eq!(got, ["b0", "b1", "b2", "b3"], "{why}");
}

pub async fn independent_groups_each_get_everything(bus: &dyn EventBus) {
    let (topic, group_a) = fresh(bus, "groups").await;
    let group_b = unique("conf-groups-b");
    let batch: Vec<Record> = (0..12).map(|i| rec(&format!("k{i}"), format!("v{i}"))).collect();
    bus.publish(&topic, &batch).await.expect("publish");
    let mut a = bus.subscribe(&group_a, &topic).await.expect("subscribe a");
    drain(&mut *a, 12).await;
    a.commit().await.expect("commit a");
    let mut b = bus.subscribe(&group_b, &topic).await.expect("subscribe b");
    let mut got = values(&drain(&mut *b, 12).await);
    got.sort();
    let mut want: Vec<String> = (0..12).map(|i| format!("v{i}")).collect();
    want.sort();
    assert_eq!(got, want, "group b is not affected by group a's commits");
}

pub async fn lag_counts_published_minus_committed(bus: &dyn EventBus) {
    let (topic, group) = fresh(bus, "lag").await;
    assert_eq!(bus.lag(&group, &topic).await.expect("lag"), 0, "empty topic");
    let batch: Vec<Record> = (0..7).map(|i| rec(&format!("k{i}"), format!("v{i}"))).collect();
    bus.publish(&topic, &batch).await.expect("publish");
    assert_eq!(
        bus.lag(&group, &topic).await.expect("lag"),
        7,
        "nothing committed yet"
    );
    let mut c = bus.subscribe(&group, &topic).await.expect("subscribe");
    drain(&mut *c, 7).await;
    assert_eq!(
        bus.lag(&group, &topic).await.expect("lag"),
        7,
        "polled is not committed"
    );
    c.commit().await.expect("commit");
    assert_eq!(bus.lag(&group, &topic).await.expect("lag"), 0, "all committed");
    bus.publish(&topic, &batch[..3]).await.expect("publish");
    assert_eq!(bus.lag(&group, &topic).await.expect("lag"), 3);
    let other = unique("conf-lag-other");
    assert_eq!(
        bus.lag(&other, &topic).await.expect("lag"),
        10,
        "a group that never committed"
    );
}

pub async fn poll_wakes_up_on_publish(bus: Arc<dyn EventBus>) {
    let (topic, group) = fresh(&*bus, "wake").await;
    let mut c = bus.subscribe(&group, &topic).await.expect("subscribe");
    // Let the consumer settle (a real broker assigns partitions on the first polls).
    let none = c.poll(10, Duration::from_millis(300)).await.expect("poll");
    assert!(none.is_empty());
    let publisher = {
        let (bus, topic) = (bus.clone(), topic.clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            bus.publish(&topic, &[rec("k", "wake".into())])
                .await
                .expect("publish");
        })
    };
    let start = Instant::now();
    let got = c.poll(10, Duration::from_secs(5)).await.expect("poll");
    let took = start.elapsed();
    publisher.await.expect("publisher task");
    assert_eq!(values(&got), ["wake"]);
    assert!(
        took < Duration::from_secs(2),
        "poll took {took:?}: it must return when a record arrives"
    );
}

pub async fn poll_respects_max_and_wait(bus: &dyn EventBus) {
    let (topic, group) = fresh(bus, "max").await;
    let mut c = bus.subscribe(&group, &topic).await.expect("subscribe");
    let start = Instant::now();
    let none = c.poll(10, Duration::from_millis(300)).await.expect("poll");
    let took = start.elapsed();
    assert!(none.is_empty(), "empty topic");
    assert!(
        took >= Duration::from_millis(250),
        "poll waited only {took:?} of 300 ms"
    );
    assert!(took < Duration::from_secs(3), "poll waited {took:?} for 300 ms");
    let batch: Vec<Record> = (0..9).map(|i| rec("same-key", format!("v{i}"))).collect();
    bus.publish(&topic, &batch).await.expect("publish");
    let mut got = Vec::new();
    let start = Instant::now();
    while got.len() < 9 && start.elapsed() < PATIENCE {
        let part = c.poll(4, Duration::from_millis(500)).await.expect("poll");
        assert!(part.len() <= 4, "poll returned {} records for max 4", part.len());
        got.extend(part);
    }
    let want: Vec<String> = (0..9).map(|i| format!("v{i}")).collect();
    assert_eq!(values(&got), want, "one key, in order, across several polls");
    assert!(c.poll(0, Duration::ZERO).await.expect("poll 0").is_empty());
}

pub async fn seek_moves_read_positions(bus: &dyn EventBus) {
    let (topic, group) = fresh(bus, "seek").await;
    // Three keys for ten records: some partition holds at least four.
    let batch: Vec<Record> = (0..10)
        .map(|i| rec(&format!("k{}", i % 3), format!("v{i}")))
        .collect();
    bus.publish(&topic, &batch).await.expect("publish");
    let mut c = bus.subscribe(&group, &topic).await.expect("subscribe");
    let first = drain(&mut *c, 10).await;
    let mut start_of: BTreeMap<u32, u64> = BTreeMap::new();
    let mut end_of: BTreeMap<u32, u64> = BTreeMap::new();
    for d in &first {
        let s = start_of.entry(d.partition).or_insert(d.offset);
        *s = (*s).min(d.offset);
        let e = end_of.entry(d.partition).or_insert(d.offset + 1);
        *e = (*e).max(d.offset + 1);
    }
    for (p, end) in &end_of {
        let pos = c.positions().into_iter().find(|x| x.partition == *p);
        assert_eq!(
            pos.map(|x| x.next_offset),
            Some(*end),
            "position of partition {p} after polling"
        );
    }
    let back: Vec<Position> = start_of
        .iter()
        .map(|(p, o)| Position {
            partition: *p,
            next_offset: *o,
        })
        .collect();
    c.seek(&back).await.expect("seek back");
    let mut again = values(&drain(&mut *c, 10).await);
    let mut want = values(&first);
    again.sort();
    want.sort();
    assert_eq!(again, want, "seeking back re-reads the same records");
    assert_eq!(
        bus.lag(&group, &topic).await.expect("lag"),
        10,
        "seek does not commit"
    );
    // Seek one partition forward past its first record.
    let (p, o) = start_of
        .iter()
        .find(|(p, o)| end_of[*p] > **o + 1)
        .map(|(p, o)| (*p, *o))
        .expect("a partition with 2+ records");
    let mut all = start_of.clone();
    all.insert(p, o + 1);
    let positions: Vec<Position> = all
        .iter()
        .map(|(p, o)| Position {
            partition: *p,
            next_offset: *o,
        })
        .collect();
    c.seek(&positions).await.expect("seek");
    let skipped = drain(&mut *c, 9).await;
    assert!(
        skipped.iter().all(|d| !(d.partition == p && d.offset == o)),
        "the skipped record is not read"
    );
}

/// A poison record set aside lands, with its key, on `<topic>.dead-letter`, where a consumer
/// (an operator's tool) can read it; the source topic is untouched.
pub async fn dead_letters_land_on_their_own_topic(bus: &dyn EventBus) {
    let (topic, group) = fresh(bus, "dlq").await;
    let poison = Delivered {
        topic: topic.clone(),
        partition: 0,
        offset: 3,
        key: "dev-9".into(),
        value: b"{not json".to_vec(),
    };
    bus.dead_letter(&poison, "not a reading")
        .await
        .expect("dead_letter");
    bus.dead_letter(&poison, "not a reading")
        .await
        .expect("dead_letter again");
    let mut c = bus
        .subscribe(&group, &format!("{topic}.dead-letter"))
        .await
        .expect("subscribe to the dead letters");
    let got = drain(&mut *c, 2).await;
    assert!(got.iter().all(|d| d.key == "dev-9"), "keys kept: {got:?}");
    assert_eq!(
        bus.lag(&group, &topic).await.expect("lag"),
        0,
        "the source topic is untouched"
    );
}
