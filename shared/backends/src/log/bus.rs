//! [`LogBus`]: the [`EventBus`] port on partition logs.

use super::partition::PartitionLog;
use async_trait::async_trait;
use iotstream_core::PortError;
use iotstream_core::ports::{Consumer, Delivered, EventBus, PortResult, Position, Record};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};
use tokio::sync::watch;

/// Partitions of a new topic. One process consumes them all, so one partition per topic keeps
/// one flush per append; more exist for Kafka parity and tests.
pub const DEFAULT_PARTITIONS: u32 = 1;
/// How often a waiting consumer re-checks the durable end, as a safety net for a missed wake-up
/// (only the owning process appends; see [`LogBus::open`]).
const RECHECK: Duration = Duration::from_millis(50);

pub(super) struct Topic {
    dir: PathBuf,
    pub(super) partitions: Vec<PartitionLog>,
    appended: watch::Sender<u64>,
}

#[derive(Clone)]
pub struct LogBus {
    /// Held for the bus's life: one process owns a log directory (a second writer, or a reader
    /// recovering a torn tail, would corrupt it).
    _lock: Arc<std::fs::File>,
    dir: PathBuf,
    default_partitions: u32,
    segment_bytes: u64,
    topics: Arc<RwLock<HashMap<String, Arc<Topic>>>>,
}

/// Stable FNV-1a, so a key always lands on the same partition.
pub fn partition_for(key: &[u8], partitions: usize) -> usize {
    let mut hash: u32 = 0x811c_9dc5;
    for b in key {
        hash ^= u32::from(*b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash as usize % partitions.max(1)
}

fn check_name(kind: &str, name: &str) -> PortResult<()> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && name != "."
        && name != "..";
    if ok {
        Ok(())
    } else {
        Err(PortError::invalid(format!(
            "invalid {kind} name {name:?}: use A-Z a-z 0-9 . _ -"
        )))
    }
}

fn io(what: &str, path: &Path, e: std::io::Error) -> PortError {
    PortError::unavailable(format!("{what} {}: {e}", path.display()))
}

impl LogBus {
    /// Opens `<data_dir>/log`, creating it if missing.
    pub fn open(data_dir: &Path) -> PortResult<LogBus> {
        Self::open_with_partitions(data_dir, DEFAULT_PARTITIONS)
    }

    pub fn open_with_partitions(data_dir: &Path, partitions: u32) -> PortResult<LogBus> {
        Self::open_with(data_dir, partitions, super::partition::SEGMENT_BYTES)
    }

    /// Opens with a partition count for new topics and a segment size (retention deletes whole
    /// segments; tests use small ones).
    pub fn open_with(data_dir: &Path, partitions: u32, segment_bytes: u64) -> PortResult<LogBus> {
        let dir = data_dir.join("log");
        std::fs::create_dir_all(&dir).map_err(|e| io("cannot create", &dir, e))?;
        let lock_path = dir.join("LOCK");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| io("cannot open", &lock_path, e))?;
        if lock.try_lock().is_err() {
            return Err(PortError::unavailable(format!(
                "the embedded log in {} is in use by another iotstream process; stop it first \
                 (devices can be managed while it runs: `iotstream devices ...` or the admin API)",
                dir.display()
            )));
        }
        Ok(LogBus {
            _lock: Arc::new(lock),
            dir,
            default_partitions: partitions.max(1),
            segment_bytes,
            topics: Arc::default(),
        })
    }

    /// The topic, opened (and created when missing).
    pub(super) fn topic(&self, name: &str) -> PortResult<Arc<Topic>> {
        if let Some(t) = self.topics.read().expect("topics").get(name) {
            return Ok(t.clone());
        }
        check_name("topic", name)?;
        let mut topics = self.topics.write().expect("topics");
        if let Some(t) = topics.get(name) {
            return Ok(t.clone());
        }
        let dir = self.dir.join(name);
        std::fs::create_dir_all(dir.join("groups")).map_err(|e| io("cannot create", &dir, e))?;
        let meta = dir.join("partitions");
        let count: u32 = match std::fs::read_to_string(&meta) {
            Ok(s) => s
                .trim()
                .parse()
                .map_err(|_| PortError::internal(format!("corrupt {}", meta.display())))?,
            Err(_) => {
                write_atomic(&meta, self.default_partitions.to_string().as_bytes())?;
                self.default_partitions
            }
        };
        let partitions = (0..count)
            .map(|p| PartitionLog::open(&dir.join(p.to_string()), self.segment_bytes))
            .collect::<PortResult<Vec<_>>>()?;
        let topic = Arc::new(Topic {
            dir,
            partitions,
            appended: watch::channel(0).0,
        });
        topics.insert(name.to_owned(), topic.clone());
        Ok(topic)
    }

    /// Appends `(key, value)` pairs, grouped per partition; returns (partition, offset, position)
    /// of each, in input order.
    pub(super) async fn append(
        &self,
        topic: &str,
        records: Vec<(Vec<u8>, Vec<u8>)>,
    ) -> PortResult<Vec<(usize, u64, u64)>> {
        let t = self.topic(topic)?;
        let t2 = t.clone();
        let placed = tokio::task::spawn_blocking(move || {
            let n = t2.partitions.len();
            let mut by_partition: Vec<Vec<usize>> = vec![Vec::new(); n];
            for (i, (k, _)) in records.iter().enumerate() {
                by_partition[partition_for(k, n)].push(i);
            }
            let mut placed = vec![(0usize, 0u64, 0u64); records.len()];
            for (p, idxs) in by_partition.iter().enumerate().filter(|(_, v)| !v.is_empty()) {
                let refs: Vec<(&[u8], &[u8])> = idxs
                    .iter()
                    .map(|&i| (records[i].0.as_slice(), records[i].1.as_slice()))
                    .collect();
                let at = t2.partitions[p].append(&refs)?;
                for (&i, (offset, pos)) in idxs.iter().zip(at) {
                    placed[i] = (p, offset, pos);
                }
            }
            Ok::<_, PortError>(placed)
        })
        .await
        .map_err(|e| PortError::internal(format!("log append task failed: {e}")))??;
        t.appended.send_modify(|v| *v += 1);
        Ok(placed)
    }

    /// Per partition, the lowest offset committed by any group of the topic; `None` when no
    /// group has committed yet (then nothing counts as consumed).
    pub(super) fn min_committed(&self, topic: &Topic) -> PortResult<Option<Vec<u64>>> {
        let groups = topic.dir.join("groups");
        let mut min: Option<Vec<u64>> = None;
        let entries = std::fs::read_dir(&groups).map_err(|e| io("cannot list", &groups, e))?;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(group) = name.to_str().filter(|n| !n.ends_with(".tmp")) else {
                continue;
            };
            let c = self.committed(topic, group)?;
            min = Some(match min {
                None => c,
                Some(m) => m.iter().zip(&c).map(|(a, b)| *a.min(b)).collect(),
            });
        }
        Ok(min)
    }

    /// Retention for a topic: deletes, per partition, the oldest sealed segments that every
    /// consumer group has committed past and that were last written before `older_than`.
    /// Returns, per partition, the position below which records are gone (to prune indexes).
    pub(super) fn trim(&self, topic: &str, older_than: SystemTime) -> PortResult<Vec<Option<(u64, u64)>>> {
        let t = self.topic(topic)?;
        let Some(committed) = self.min_committed(&t)? else {
            return Ok(vec![None; t.partitions.len()]);
        };
        t.partitions
            .iter()
            .zip(committed)
            .map(|(log, done)| {
                let doomed = log
                    .sealed()
                    .into_iter()
                    .take_while(|s| s.end_offset <= done && s.modified < older_than)
                    .last();
                Ok(doomed.map(|s| (log.sealed()[0].base_pos, s.end_pos)))
            })
            .collect()
    }

    /// Deletes what [`Self::trim`] selected.
    pub(super) fn delete(&self, topic: &str, cuts: &[Option<(u64, u64)>]) -> PortResult<usize> {
        let t = self.topic(topic)?;
        let mut n = 0;
        for (log, cut) in t.partitions.iter().zip(cuts) {
            if let Some((_, end)) = cut {
                n += log.delete_before(*end)?;
            }
        }
        Ok(n)
    }

    /// Retention for a bus-only topic (insights, alerts): deletes fully consumed old segments.
    pub fn trim_consumed(&self, topic: &str, older_than: SystemTime) -> PortResult<usize> {
        let cuts = self.trim(topic, older_than)?;
        self.delete(topic, &cuts)
    }

    fn committed(&self, topic: &Topic, group: &str) -> PortResult<Vec<u64>> {
        check_name("group", group)?;
        let path = topic.dir.join("groups").join(group);
        let n = topic.partitions.len();
        match std::fs::read(&path) {
            Ok(bytes) => {
                let v: Vec<u64> = serde_json::from_slice(&bytes)
                    .map_err(|_| PortError::internal(format!("corrupt offsets file {}", path.display())))?;
                Ok((0..n).map(|p| v.get(p).copied().unwrap_or(0)).collect())
            }
            Err(_) => Ok(vec![0; n]),
        }
    }
}

/// Replaces a file's content atomically and durably (temp file, fsync, rename, fsync dir).
fn write_atomic(path: &Path, bytes: &[u8]) -> PortResult<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(|e| io("cannot write", &tmp, e))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_data())
        .map_err(|e| io("cannot write", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io("cannot rename", path, e))?;
    if let Some(dir) = path.parent()
        && let Ok(d) = std::fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
    Ok(())
}

#[async_trait]
impl EventBus for LogBus {
    async fn ensure_topic(&self, topic: &str) -> PortResult<()> {
        self.topic(topic).map(|_| ())
    }

    async fn publish(&self, topic: &str, records: &[Record]) -> PortResult<()> {
        if records.is_empty() {
            return Ok(());
        }
        let owned = records
            .iter()
            .map(|r| (r.key.as_bytes().to_vec(), r.value.clone()))
            .collect();
        self.append(topic, owned).await.map(|_| ())
    }

    async fn subscribe(&self, group: &str, topic: &str) -> PortResult<Box<dyn Consumer>> {
        let t = self.topic(topic)?;
        let committed = self.committed(&t, group)?;
        let cursors = committed
            .iter()
            .enumerate()
            .map(|(p, &o)| (o, t.partitions[p].seek_pos(o)))
            .collect();
        Ok(Box::new(LogConsumer {
            rx: t.appended.subscribe(),
            topic: t,
            topic_name: topic.to_owned(),
            group: group.to_owned(),
            cursors,
            committed,
            start: 0,
        }))
    }

    async fn lag(&self, group: &str, topic: &str) -> PortResult<u64> {
        let t = self.topic(topic)?;
        let committed = self.committed(&t, group)?;
        Ok(t.partitions
            .iter()
            .zip(committed)
            .map(|(p, c)| p.high_watermark().saturating_sub(c))
            .sum())
    }
}

struct LogConsumer {
    topic: Arc<Topic>,
    topic_name: String,
    group: String,
    rx: watch::Receiver<u64>,
    /// (next offset, byte position to scan from) per partition.
    cursors: Vec<(u64, u64)>,
    committed: Vec<u64>,
    /// Partition the next fetch starts with, so none starves.
    start: usize,
}

impl LogConsumer {
    fn fetch(&mut self, max: usize) -> Vec<Delivered> {
        let n = self.cursors.len();
        let mut out = Vec::new();
        for k in 0..n {
            let p = (self.start + k) % n;
            if out.len() >= max {
                break;
            }
            let (from, pos) = self.cursors[p];
            let (records, next_pos) = self.topic.partitions[p].read(from, pos, max - out.len());
            if let Some(last) = records.last() {
                self.cursors[p] = (last.offset + 1, next_pos);
            }
            out.extend(records.into_iter().map(|r| Delivered {
                topic: self.topic_name.clone(),
                partition: p as u32,
                offset: r.offset,
                key: String::from_utf8_lossy(&r.key).into_owned(),
                value: r.value,
            }));
        }
        self.start = (self.start + 1) % n.max(1);
        out
    }
}

#[async_trait]
impl Consumer for LogConsumer {
    async fn poll(&mut self, max: usize, wait: Duration) -> PortResult<Vec<Delivered>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            self.rx.borrow_and_update();
            let got = self.fetch(max.max(1));
            if !got.is_empty() || tokio::time::Instant::now() >= deadline {
                return Ok(got);
            }
            let until = deadline.min(tokio::time::Instant::now() + RECHECK);
            let _ = tokio::time::timeout_at(until, self.rx.changed()).await;
        }
    }

    async fn commit_at(&mut self, positions: &[Position]) -> PortResult<()> {
        let mut next = self.committed.clone();
        for pos in positions {
            if let Some(c) = next.get_mut(pos.partition as usize) {
                *c = pos.next_offset;
            }
        }
        if next == self.committed {
            return Ok(());
        }
        let path = self.topic.dir.join("groups").join(&self.group);
        let bytes = serde_json::to_vec(&next).expect("offsets");
        tokio::task::spawn_blocking(move || write_atomic(&path, &bytes))
            .await
            .map_err(|e| PortError::internal(format!("offset commit task failed: {e}")))??;
        self.committed = next;
        Ok(())
    }

    async fn seek(&mut self, positions: &[Position]) -> PortResult<()> {
        for p in positions {
            let i = p.partition as usize;
            let log = self
                .topic
                .partitions
                .get(i)
                .ok_or_else(|| PortError::invalid(format!("topic has no partition {}", p.partition)))?;
            self.cursors[i] = (p.next_offset, log.seek_pos(p.next_offset));
        }
        Ok(())
    }

    fn positions(&self) -> Vec<Position> {
        self.cursors
            .iter()
            .enumerate()
            .map(|(p, (o, _))| Position {
                partition: p as u32,
                next_offset: *o,
            })
            .collect()
    }
}
