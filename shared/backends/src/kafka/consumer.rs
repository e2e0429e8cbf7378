//! `KafkaConsumer`: one member of a consumer group, implementing [`Consumer`].
//!
//! * Offsets are never committed automatically: `commit` commits the positions after what
//!   `poll` returned, for the partitions this member still owns (a partition taken away by a
//!   rebalance is re-read by its new owner from the last commit: at-least-once).
//! * `seek` moves partitions this member owns at once; for partitions not assigned yet (right
//!   after `subscribe`, while the group forms) it is remembered and applied when the first
//!   record of that partition arrives. Until the sought offset is reached, records of the
//!   partition from before the seek are dropped, never returned.
//! * A partition that comes back after a rebalance resumes where this member's reading stood,
//!   not at the group's (possibly older) committed offset: records already returned are never
//!   returned again by the same member, which is what analyze's in-memory state needs.
//! * A fatal error leaves a librdkafka consumer unusable for good: it delivers nothing more
//!   and never rejoins its group. librdkafka raises one when the broker fences a static member
//!   (`FENCED_INSTANCE_ID`), which happens to a member whose session timed out while the broker
//!   was unreachable or stalled (librdkafka issue #3437). The next call replaces the librdkafka
//!   consumer with a new member of the same group (same instance id), keeping this member's
//!   positions and seeks, and fails once (retryably) saying so; the caller's next calls read
//!   on as after a rebalance.

use super::{KafkaSettings, QUERY_TIMEOUT, blocking, kafka_err};
use async_trait::async_trait;
use iotstream_core::PortError;
use iotstream_core::ports::{Consumer, Delivered, PortResult, Position};
use rdkafka::consumer::{CommitMode, Consumer as _, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

pub struct KafkaConsumer {
    consumer: Arc<StreamConsumer>,
    /// What a replacement member is created from (see [`KafkaConsumer::renew_if_fatal`]).
    settings: Arc<KafkaSettings>,
    group: String,
    /// The topic as named on the broker (with the prefix) and as the caller knows it.
    broker_topic: String,
    topic: String,
    /// Next offset to read, per partition this member has read from or sought.
    positions: BTreeMap<u32, u64>,
    /// Seeks not confirmed yet, per partition.
    pending: BTreeMap<u32, Pending>,
}

/// A librdkafka group member of `group` subscribed to `topic`.
fn member(settings: &KafkaSettings, group: &str, topic: &str) -> PortResult<StreamConsumer> {
    let consumer: StreamConsumer = settings
        .consumer(group, topic)
        .create()
        .map_err(|e| kafka_err("consumer", &e))?;
    consumer
        .subscribe(&[&settings.topic(topic)])
        .map_err(|e| kafka_err("subscribe", &e))?;
    Ok(consumer)
}

impl KafkaConsumer {
    pub fn subscribe(settings: Arc<KafkaSettings>, group: &str, topic: &str) -> PortResult<Self> {
        let consumer = member(&settings, group, topic)?;
        Ok(KafkaConsumer {
            consumer: Arc::new(consumer),
            broker_topic: settings.topic(topic),
            settings,
            group: group.to_owned(),
            topic: topic.to_owned(),
            positions: BTreeMap::new(),
            pending: BTreeMap::new(),
        })
    }

    /// Replaces the librdkafka consumer when it has hit a fatal error (see the module doc), and
    /// then fails once, retryably, so the caller logs what happened and calls again. This
    /// member's positions are kept; seeks issued on the old consumer are issued again.
    fn renew_if_fatal(&mut self) -> PortResult<()> {
        let Some((_, reason)) = self.consumer.client().fatal_error() else {
            return Ok(());
        };
        let fresh = member(&self.settings, &self.group, &self.topic)?;
        let old = std::mem::replace(&mut self.consumer, Arc::new(fresh));
        for p in self.pending.values_mut() {
            p.issued = false;
        }
        // Dropping a librdkafka consumer waits for it to close: off the async workers.
        tokio::task::spawn_blocking(move || drop(old));
        Err(PortError::unavailable(format!(
            "kafka consumer of {} in group {} hit a fatal error ({reason}); replaced it with a new \
             group member (if this repeats, another consumer may use the same \
             IOTSTREAM_KAFKA_INSTANCE_ID)",
            self.topic, self.group
        )))
    }

    /// Partitions of our topic this member owns now.
    async fn assigned(&self) -> PortResult<HashSet<u32>> {
        let consumer = self.consumer.clone();
        let topic = self.broker_topic.clone();
        blocking(move || {
            let tpl = consumer.assignment().map_err(|e| kafka_err("assignment", &e))?;
            Ok(tpl
                .elements()
                .iter()
                .filter(|e| e.topic() == topic)
                .map(|e| e.partition() as u32)
                .collect())
        })
        .await
    }

    async fn seek_now(&self, partition: u32, offset: u64) -> PortResult<()> {
        let consumer = self.consumer.clone();
        let topic = self.broker_topic.clone();
        blocking(move || {
            consumer
                .seek(
                    &topic,
                    partition as i32,
                    Offset::Offset(offset as i64),
                    QUERY_TIMEOUT,
                )
                .map_err(|e| kafka_err("seek", &e))
        })
        .await
    }

    /// Accepts or drops one record: returns it when it is at or past the partition's pending
    /// seek (or there is none).
    async fn admit(&mut self, partition: u32, offset: u64) -> bool {
        if !self.pending.contains_key(&partition)
            && let Some(&next) = self.positions.get(&partition)
            && offset < next
        {
            // Already returned to the caller, who handles everything it is given: this is a
            // redelivery after a rebalance gave the partition back (its offset in the group was
            // behind ours, e.g. a commit skipped during the rebalance). A stateful caller
            // (analyze) must not see it twice; for the others it would only be wasted work.
            self.pending.insert(partition, Pending::new(next));
        }
        let Some(&Pending {
            want,
            issued,
            checked,
        }) = self.pending.get(&partition)
        else {
            return true;
        };
        if offset == want || (issued && offset > want) {
            self.pending.remove(&partition);
            return true;
        }
        if offset < want && !checked {
            // Behind: a redelivery, or a broker that lost the tail of the log it had
            // acknowledged (a single node without fsync), whose offsets are now reused by new
            // records. Only the latter leaves the log end behind our position: then the new
            // records must be read, not skipped.
            if let Ok(high) = self.high_watermark(partition).await
                && high < want
            {
                tracing::error!(
                    partition,
                    position = want,
                    log_end = high,
                    "kafka: the broker's log ends before what this consumer already read (records were lost by the broker); reading on from the log"
                );
                self.pending.remove(&partition);
                self.positions.insert(partition, offset);
                return true;
            }
            if let Some(p) = self.pending.get_mut(&partition) {
                p.checked = true;
            }
        }
        if offset < want && issued {
            return false; // fetched before the seek took effect
        }
        // Not sought yet (the partition was not assigned at `seek`), or still behind: seek now.
        let ok = self.seek_now(partition, want).await.is_ok();
        if let Some(p) = self.pending.get_mut(&partition) {
            p.issued = ok;
        }
        false
    }

    async fn high_watermark(&self, partition: u32) -> PortResult<u64> {
        let consumer = self.consumer.clone();
        let topic = self.broker_topic.clone();
        blocking(move || {
            consumer
                .fetch_watermarks(&topic, partition as i32, QUERY_TIMEOUT)
                .map(|(_, high)| high.max(0) as u64)
                .map_err(|e| kafka_err("watermarks", &e))
        })
        .await
    }
}

/// A seek not confirmed yet: the offset wanted, whether librdkafka was asked to seek, and
/// whether the log end was checked (once per seek).
#[derive(Debug, Clone, Copy)]
struct Pending {
    want: u64,
    issued: bool,
    checked: bool,
}

impl Pending {
    fn new(want: u64) -> Self {
        Pending {
            want,
            issued: false,
            checked: false,
        }
    }
}

#[async_trait]
impl Consumer for KafkaConsumer {
    async fn poll(&mut self, max: usize, wait: Duration) -> PortResult<Vec<Delivered>> {
        let mut out = Vec::new();
        if max == 0 {
            return Ok(out);
        }
        self.renew_if_fatal()?;
        let deadline = tokio::time::Instant::now() + wait;
        while out.len() < max {
            // Wait for the first record; after that, take only what is already fetched.
            let until = if out.is_empty() {
                deadline
            } else {
                tokio::time::Instant::now()
            };
            let msg = match tokio::time::timeout_at(until, self.consumer.recv()).await {
                Err(_) => break,
                Ok(Err(e)) if out.is_empty() => {
                    // A fatal error is reported once, by the replacement.
                    self.renew_if_fatal()?;
                    return Err(kafka_err("poll", &e));
                }
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "kafka poll error after a partial batch");
                    break;
                }
                Ok(Ok(m)) => {
                    let key = m
                        .key()
                        .map(|k| String::from_utf8_lossy(k).into_owned())
                        .unwrap_or_default();
                    let value = m.payload().map(<[u8]>::to_vec).unwrap_or_default();
                    (m.partition() as u32, m.offset().max(0) as u64, key, value)
                }
            };
            let (partition, offset, key, value) = msg;
            if !self.admit(partition, offset).await {
                continue;
            }
            self.positions.insert(partition, offset + 1);
            out.push(Delivered {
                topic: self.topic.clone(),
                partition,
                offset,
                key,
                value,
            });
        }
        Ok(out)
    }

    async fn commit_at(&mut self, positions: &[Position]) -> PortResult<()> {
        if positions.is_empty() {
            return Ok(());
        }
        self.renew_if_fatal()?;
        let assigned = self.assigned().await?;
        // Positions of partitions taken away by a rebalance are no longer ours to commit.
        self.positions.retain(|p, _| assigned.contains(p));
        let mut tpl = TopicPartitionList::new();
        for pos in positions.iter().filter(|x| assigned.contains(&x.partition)) {
            let offset = Offset::Offset(pos.next_offset as i64);
            tpl.add_partition_offset(&self.broker_topic, pos.partition as i32, offset)
                .map_err(|e| kafka_err("commit", &e))?;
        }
        if tpl.count() == 0 {
            return Ok(());
        }
        let consumer = self.consumer.clone();
        blocking(move || match consumer.commit(&tpl, CommitMode::Sync) {
            Ok(()) => Ok(()),
            // The group is rebalancing: these partitions may already belong to another member,
            // which will read them again from the last commit (at-least-once; the sinks are
            // idempotent). Retrying cannot succeed before the next poll rejoins the group.
            Err(e) if is_rebalance(&e) => {
                tracing::info!(error = %e, "offset commit skipped: the group is rebalancing; records will be redelivered");
                Ok(())
            }
            Err(e) => Err(kafka_err("commit", &e)),
        })
        .await
    }

    async fn seek(&mut self, positions: &[Position]) -> PortResult<()> {
        self.renew_if_fatal()?;
        let assigned = self.assigned().await?;
        for p in positions {
            let issued =
                assigned.contains(&p.partition) && self.seek_now(p.partition, p.next_offset).await.is_ok();
            self.pending.insert(
                p.partition,
                Pending {
                    issued,
                    ..Pending::new(p.next_offset)
                },
            );
            self.positions.insert(p.partition, p.next_offset);
        }
        Ok(())
    }

    fn positions(&self) -> Vec<Position> {
        self.positions
            .iter()
            .map(|(p, o)| Position {
                partition: *p,
                next_offset: *o,
            })
            .collect()
    }
}

fn is_rebalance(e: &rdkafka::error::KafkaError) -> bool {
    use rdkafka::error::RDKafkaErrorCode as C;
    matches!(
        e.rdkafka_error_code(),
        Some(C::IllegalGeneration | C::RebalanceInProgress | C::UnknownMemberId | C::FencedInstanceId)
    )
}

impl Drop for KafkaConsumer {
    fn drop(&mut self) {
        // Leave the group now rather than when the session times out, so a replacement gets the
        // partitions at once. Never blocks for long: librdkafka closes in the background.
        self.consumer.unsubscribe();
    }
}
