//! [`LogTelemetryStore`]: the telemetry store kept in the `telemetry` topic's log.
//!
//! `put` appends the new readings to the log (so storing *is* publishing: one flush, atomic) and
//! indexes them; `contains` and `range` are answered from the index, reading record bodies from
//! the log by position. The index is rebuilt by scanning the log when the store opens.

use super::bus::LogBus;
use async_trait::async_trait;
use iotstream_core::ports::{PortResult, TelemetrySink, TelemetryStore};
use iotstream_core::{DeviceId, PortError, Reading, Ts, topics};
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

/// The keys are already 128-bit hashes: folding them to 64 bits is all the hashing a table
/// needs (SipHash here cost a tenth of ingest's CPU at 200k readings/s).
#[derive(Default, Clone, Copy)]
struct PreHashed(u64);

impl std::hash::Hasher for PreHashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    fn write_u128(&mut self, v: u128) {
        self.0 = (v as u64) ^ ((v >> 64) as u64);
    }
}

type IdSet = HashSet<u128, std::hash::BuildHasherDefault<PreHashed>>;

#[derive(Default)]
struct Index {
    ids: IdSet,
    /// Per device: (ts, partition, byte position) of each reading.
    by_device: HashMap<DeviceId, Vec<(i64, u32, u64)>>,
}

pub struct LogTelemetryStore {
    bus: LogBus,
    /// Serialises writers so the dedup check and the append are one step.
    index: Mutex<Index>,
    write: tokio::sync::Mutex<()>,
}

/// The dedup key: 128-bit FNV-1a over device and id (ids are unique per device, and
/// case-sensitive).
fn id_key(device: &DeviceId, id: &str) -> u128 {
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013B;
    let h = device.as_str().bytes().chain([0u8]).chain(id.bytes());
    h.fold(0x6c62_272e_07bb_0142_62b8_2175_6295_c58d_u128, |h, b| {
        (h ^ u128::from(b)).wrapping_mul(PRIME)
    })
}

impl LogTelemetryStore {
    /// Opens the store on the bus's `telemetry` topic, indexing what the log holds.
    pub fn open(bus: LogBus) -> PortResult<LogTelemetryStore> {
        let topic = bus.topic(topics::TELEMETRY)?;
        let mut index = Index::default();
        for (p, log) in topic.partitions.iter().enumerate() {
            let (mut from, mut pos) = (0, 0);
            loop {
                let (records, next) = log.read(from, pos, 10_000);
                let Some(last) = records.last() else { break };
                (from, pos) = (last.offset + 1, next);
                for r in &records {
                    match serde_json::from_slice::<Reading>(&r.value) {
                        Ok(reading) => index.add(&reading, p as u32, r.pos),
                        Err(e) => {
                            tracing::warn!(offset = r.offset, error = %e, "unreadable reading in the log")
                        }
                    }
                }
            }
        }
        Ok(LogTelemetryStore {
            bus,
            index: Mutex::new(index),
            write: tokio::sync::Mutex::new(()),
        })
    }
}

impl LogTelemetryStore {
    /// Retention: deletes the oldest sealed segments of the telemetry log that every consumer
    /// group (analyze) has committed past and that were last written before `older_than`, and
    /// forgets their readings (range queries no longer return them; a re-send of one would be
    /// taken as new). Blocking. Returns how many readings were deleted.
    pub fn retain(&self, older_than: std::time::SystemTime) -> PortResult<u64> {
        let cuts = self.bus.trim(topics::TELEMETRY, older_than)?;
        if cuts.iter().all(Option::is_none) {
            return Ok(0);
        }
        let topic = self.bus.topic(topics::TELEMETRY)?;
        let mut doomed_ids = Vec::new();
        for (p, cut) in cuts.iter().enumerate() {
            let Some((start, end)) = *cut else { continue };
            let (mut from, mut pos) = (0, start);
            while pos < end {
                let (records, next) = topic.partitions[p].read(from, pos, 10_000);
                let Some(last) = records.last() else { break };
                (from, pos) = (last.offset + 1, next);
                for r in records.iter().filter(|r| r.pos < end) {
                    if let Ok(reading) = serde_json::from_slice::<Reading>(&r.value) {
                        doomed_ids.push(id_key(&reading.device_id, &reading.id));
                    }
                }
            }
        }
        {
            let mut index = self.index.lock().expect("store index");
            for id in &doomed_ids {
                index.ids.remove(id);
            }
            for entries in index.by_device.values_mut() {
                entries.retain(|&(_, p, pos)| cuts[p as usize].is_none_or(|(_, end)| pos >= end));
            }
            index.by_device.retain(|_, v| !v.is_empty());
        }
        self.bus.delete(topics::TELEMETRY, &cuts)?;
        Ok(doomed_ids.len() as u64)
    }
}

impl Index {
    fn add(&mut self, r: &Reading, partition: u32, pos: u64) {
        self.ids.insert(id_key(&r.device_id, &r.id));
        self.place(r, partition, pos);
    }

    /// Records where a reading is, without cloning the device id for a known device.
    fn place(&mut self, r: &Reading, partition: u32, pos: u64) {
        let entry = (r.ts.millis(), partition, pos);
        match self.by_device.get_mut(&r.device_id) {
            Some(v) => v.push(entry),
            None => {
                self.by_device.insert(r.device_id.clone(), vec![entry]);
            }
        }
    }
}

#[async_trait]
impl TelemetryStore for LogTelemetryStore {
    async fn put(&self, readings: &[Reading]) -> PortResult<Vec<bool>> {
        let _writer = self.write.lock().await;
        // Claim the ids up front (one hash insert per reading, which also catches duplicates
        // within the batch); give them back if the append fails.
        let mut fresh = Vec::with_capacity(readings.len());
        let flags: Vec<bool> = {
            let mut index = self.index.lock().expect("store index");
            readings
                .iter()
                .map(|r| {
                    let new = index.ids.insert(id_key(&r.device_id, &r.id));
                    if new {
                        fresh.push(r);
                    }
                    new
                })
                .collect()
        };
        if fresh.is_empty() {
            return Ok(flags);
        }
        let records = fresh
            .iter()
            .map(|r| {
                (
                    r.device_id.as_str().as_bytes().to_vec(),
                    serde_json::to_vec(r).expect("reading"),
                )
            })
            .collect();
        let placed = self.bus.append(topics::TELEMETRY, records).await;
        let mut index = self.index.lock().expect("store index");
        match placed {
            Ok(placed) => {
                for (r, (p, _, pos)) in fresh.iter().zip(placed) {
                    index.place(r, p as u32, pos);
                }
                Ok(flags)
            }
            Err(e) => {
                for r in &fresh {
                    index.ids.remove(&id_key(&r.device_id, &r.id));
                }
                Err(e)
            }
        }
    }

    async fn contains(&self, keys: &[(DeviceId, String)]) -> PortResult<Vec<bool>> {
        let index = self.index.lock().expect("store index");
        Ok(keys
            .iter()
            .map(|(device, id)| index.ids.contains(&id_key(device, id)))
            .collect())
    }

    async fn range(&self, device: &DeviceId, from: Ts, to: Ts, limit: usize) -> PortResult<Vec<Reading>> {
        let mut hits: Vec<(i64, u32, u64)> = {
            let index = self.index.lock().expect("store index");
            index
                .by_device
                .get(device)
                .map(|v| {
                    v.iter()
                        .filter(|(ts, _, _)| *ts >= from.millis() && *ts < to.millis())
                        .copied()
                        .collect()
                })
                .unwrap_or_default()
        };
        hits.sort_unstable();
        hits.truncate(limit);
        let topic = self.bus.topic(topics::TELEMETRY)?;
        hits.iter()
            // A reading retention deleted after the index was read is simply gone.
            .filter_map(|&(_, p, pos)| topic.partitions[p as usize].read_at(pos))
            .map(|rec| {
                serde_json::from_slice(&rec.value)
                    .map_err(|e| PortError::internal(format!("corrupt reading: {e}")))
            })
            .collect()
    }
}

/// Storing is publishing here: ingest's one durable write.
#[async_trait]
impl TelemetrySink for LogTelemetryStore {
    async fn accept(&self, readings: &[Reading]) -> PortResult<Vec<bool>> {
        self.put(readings).await
    }
}
