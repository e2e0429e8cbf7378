//! The consumer of [`super::EmbeddedBus`]: one group member owning every partition of a topic.

use super::bus::{BusInner, RECHECK, high_watermarks};
use crate::error::db_err;
use crate::sqlite::{multi_row, to_u64};
use async_trait::async_trait;
use iotstream_core::PortError;
use iotstream_core::ports::{Consumer, Delivered, PortResult, Position};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

pub(super) struct EmbeddedConsumer {
    inner: Arc<BusInner>,
    group: String,
    topic: String,
    /// Next offset to read, per partition.
    positions: Vec<u64>,
    /// What is committed, per partition (to skip no-op commits).
    committed: Vec<u64>,
    /// Partition the next fetch starts with (round robin, so no partition starves).
    start: usize,
}

impl EmbeddedConsumer {
    pub(super) async fn new(
        inner: Arc<BusInner>,
        group: &str,
        topic: &str,
        partitions: u32,
    ) -> PortResult<Self> {
        let rows: Vec<(i64, i64)> =
            sqlx::query_as("SELECT partition, next_offset FROM offsets WHERE grp = ? AND topic = ?")
                .bind(group)
                .bind(topic)
                .fetch_all(&inner.db.read)
                .await
                .map_err(db_err)?;
        let mut committed = vec![0u64; partitions as usize];
        for (p, next) in rows {
            if let Some(c) = usize::try_from(p).ok().and_then(|p| committed.get_mut(p)) {
                *c = to_u64(next);
            }
        }
        Ok(EmbeddedConsumer {
            inner,
            group: group.to_owned(),
            topic: topic.to_owned(),
            positions: committed.clone(),
            committed,
            start: 0,
        })
    }

    /// Reads up to `max` records after the current positions, without waiting.
    async fn fetch(&mut self, max: usize) -> PortResult<Vec<Delivered>> {
        let n = self.positions.len();
        let marks = high_watermarks(&self.inner, &self.topic, n as u32).await?;
        let mut out = Vec::new();
        for k in 0..n {
            let p = (self.start + k) % n;
            let remaining = max - out.len();
            if remaining == 0 {
                break;
            }
            if marks[p] <= self.positions[p] {
                continue;
            }
            let rows: Vec<(i64, String, Vec<u8>)> = sqlx::query_as(
                "SELECT offset, key, value FROM messages \
                 WHERE topic = ? AND partition = ? AND offset >= ? ORDER BY offset LIMIT ?",
            )
            .bind(&self.topic)
            .bind(p as i64)
            .bind(self.positions[p] as i64)
            .bind(remaining as i64)
            .fetch_all(&self.inner.db.read)
            .await
            .map_err(db_err)?;
            if let Some((last, _, _)) = rows.last() {
                self.positions[p] = to_u64(*last) + 1;
            }
            out.extend(rows.into_iter().map(|(offset, key, value)| Delivered {
                topic: self.topic.clone(),
                partition: p as u32,
                offset: to_u64(offset),
                key,
                value,
            }));
        }
        self.start = (self.start + 1) % n.max(1);
        Ok(out)
    }
}

#[async_trait]
impl Consumer for EmbeddedConsumer {
    async fn poll(&mut self, max: usize, wait: Duration) -> PortResult<Vec<Delivered>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let deadline = Instant::now() + wait;
        let inner = self.inner.clone();
        loop {
            // Register for the wake-up before looking, so a publish in between is not missed.
            let published = inner.published.notified();
            tokio::pin!(published);
            published.as_mut().enable();
            let batch = self.fetch(max).await?;
            let now = Instant::now();
            if !batch.is_empty() || now >= deadline {
                return Ok(batch);
            }
            let nap = (deadline - now).min(RECHECK);
            let _ = tokio::time::timeout(nap, published).await;
        }
    }

    async fn commit_at(&mut self, positions: &[Position]) -> PortResult<()> {
        let changed: Vec<(usize, u64)> = positions
            .iter()
            .map(|pos| (pos.partition as usize, pos.next_offset))
            .filter(|(p, pos)| self.committed.get(*p).is_some_and(|c| c != pos))
            .collect();
        if changed.is_empty() {
            return Ok(());
        }
        let sql = multi_row(
            "INSERT INTO offsets (grp, topic, partition, next_offset) VALUES ",
            "(?,?,?,?)",
            changed.len(),
            " ON CONFLICT (grp, topic, partition) DO UPDATE SET next_offset = excluded.next_offset",
        );
        let mut q = sqlx::query(&sql);
        for (p, pos) in &changed {
            q = q
                .bind(&self.group)
                .bind(&self.topic)
                .bind(*p as i64)
                .bind(*pos as i64);
        }
        // One statement: atomic and durable on its own.
        q.execute(&self.inner.db.write).await.map_err(db_err)?;
        for (p, pos) in changed {
            self.committed[p] = pos;
        }
        Ok(())
    }

    async fn seek(&mut self, positions: &[Position]) -> PortResult<()> {
        let n = self.positions.len();
        if let Some(bad) = positions.iter().find(|pos| pos.partition as usize >= n) {
            return Err(PortError::invalid(format!(
                "topic {} has {n} partitions, cannot seek partition {}",
                self.topic, bad.partition
            )));
        }
        for pos in positions {
            self.positions[pos.partition as usize] = pos.next_offset;
        }
        Ok(())
    }

    fn positions(&self) -> Vec<Position> {
        self.positions
            .iter()
            .enumerate()
            .map(|(p, next)| Position {
                partition: p as u32,
                next_offset: *next,
            })
            .collect()
    }
}
