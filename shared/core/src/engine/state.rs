//! Per-device engine state: dedup memory, the reorder buffer (allowed lateness), the metric
//! slots, and silence; and how readings, ticks and the end of input change it.

use super::alerting::{Episode, Opening, human_ms};
use super::detect::score;
use super::detectors::threshold_of;
use super::ids::{Key, id_hash};
use super::slot::Slot;
use super::window::{Pane, Sink};
use super::{DEDUP_WINDOW, Output};
use crate::DeviceId;
use crate::model::{Evidence, Insight, LateReading, LatestState};
use crate::reading::Reading;
use crate::rules::{DetectorPlan, Rules};
use crate::ts::Ts;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;
use std::collections::{BTreeMap, VecDeque};

/// Per device: changed since the last tick, and per metric, a value since its last partial window.
pub(super) type Owed = Vec<(bool, Vec<bool>)>;

/// Everything the engine remembers. Devices live in a vector (stable order: first seen first),
/// found through an index rebuilt on restore.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct EngineState {
    pub(super) devices: Vec<Device>,
    /// Device by the hash of its id (the id itself is checked against the device's inline
    /// key); ids whose hash is taken by another id go to `collided`.
    #[serde(skip)]
    pub(super) index: FxHashMap<u64, u32>,
    #[serde(skip)]
    pub(super) collided: FxHashMap<DeviceId, u32>,
    /// Where windows are merged when emitted (memory reused).
    #[serde(skip)]
    pub(super) scratch: Pane,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[repr(C)]
pub(super) struct Device {
    /// The id's bytes, inline (checked on lookup without chasing a pointer).
    #[serde(skip)]
    key: Key<32>,
    /// Newest ts that arrived (the device's event-time clock); `i64::MIN` before any.
    newest: i64,
    /// Hashes of the last reading ids (a ring, inline: it is read for every reading).
    recent: [u64; DEDUP_WINDOW],
    recent_len: u8,
    recent_at: u8,
    /// Sorted by metric name (readings' metrics are too, so lookup is a merge walk).
    pub(super) slots: Vec<Slot>,
    /// Reorder buffer, sorted by ts (stable): readings wait here until the watermark passes.
    #[serde(with = "super::codec::json")]
    pending: VecDeque<Reading>,
    /// The bus partition the device's readings come from (its checkpoint goes with it).
    pub(super) partition: u32,
    /// Processing time of the last arrival, and that reading's id (silence).
    last_arrival: i64,
    last_id: SmallVec<[u8; 32]>,
    pub(super) id: DeviceId,
    silence: Episode,
    #[serde(skip)]
    silence_plan: Option<u16>,
    /// Changed since the last tick: partial windows and latest state to emit.
    #[serde(skip)]
    changed: bool,
}

impl Device {
    fn new(id: DeviceId) -> Device {
        Device {
            key: Key::new(id.as_str().as_bytes()),
            id,
            newest: i64::MIN,
            recent: [0; DEDUP_WINDOW],
            recent_len: 0,
            recent_at: 0,
            slots: Vec::with_capacity(4),
            pending: VecDeque::new(),
            partition: 0,
            last_arrival: i64::MIN,
            last_id: SmallVec::new(),
            silence: Episode::default(),
            silence_plan: None,
            changed: false,
        }
    }

    fn bind(&mut self, rules: &Rules) {
        self.key = Key::new(self.id.as_str().as_bytes());
        self.silence_plan = DetectorPlan::silence(&rules.detectors, self.id.as_str());
        for s in &mut self.slots {
            s.bind(rules, self.id.as_str());
        }
    }

    /// True when the id was not seen among the last [`DEDUP_WINDOW`] remembered ones; it is
    /// remembered when `remember` (a reading at or past the watermark: older ones are late, and
    /// remembering a redelivered backlog of them would push out the ids that matter).
    #[inline]
    fn first_time(&mut self, id: &str, remember: bool) -> bool {
        let h = id_hash(id);
        if self.recent[..self.recent_len as usize].contains(&h) {
            return false;
        }
        if !remember {
            return true;
        }
        self.recent[self.recent_at as usize] = h;
        self.recent_at = ((self.recent_at as usize + 1) % DEDUP_WINDOW) as u8;
        self.recent_len = (self.recent_len as usize + 1).min(DEDUP_WINDOW) as u8;
        true
    }

    /// Analyses one reading in event-time order: each metric goes to its slot, unless that
    /// metric already saw a newer value (then it is late for that metric).
    fn analyse(&mut self, rules: &Rules, r: &Reading, out: &mut Output, scoring: bool, scratch: &mut Pane) {
        let ts = r.ts.millis();
        let mut late: Vec<String> = Vec::new();
        let mut k = 0;
        for (name, &value) in &r.metrics {
            let name_b = name.as_bytes();
            // Usually the device sends the same metrics every time: the next slot is the one.
            let hit = k < self.slots.len() && self.slots[k].key.is(name_b, &self.slots[k].metric);
            while !hit && k < self.slots.len() && self.slots[k].metric.as_bytes() < name_b {
                k += 1;
            }
            if !hit && (k == self.slots.len() || self.slots[k].metric.as_bytes() != name_b) {
                let mut slot = Slot::new(name);
                slot.bind(rules, self.id.as_str());
                self.slots.insert(k, slot);
            }
            let slot = &mut self.slots[k];
            if slot.last.is_some_and(|(t, _)| ts < t) {
                late.push(name.clone());
                continue;
            }
            slot.step(
                rules,
                &super::slot::Value {
                    device: &self.id,
                    reading_id: &r.id,
                    ts: r.ts,
                    value,
                },
                out,
                scoring,
                scratch,
            );
            k += 1;
        }
        if !late.is_empty() {
            let watermark = self.newest.saturating_sub(rules.settings.allowed_lateness_ms);
            self.late(r, late, watermark, out);
        }
    }

    fn late(&self, r: &Reading, metrics: Vec<String>, watermark: i64, out: &mut Output) {
        out.stats.late += 1;
        out.insights.push(Insight::Late(LateReading {
            device_id: self.id.clone(),
            reading_id: r.id.clone(),
            ts: r.ts,
            metrics,
            watermark: Ts(watermark),
        }));
    }

    /// Applies buffered readings the watermark has passed (all of them with `all`).
    fn release(&mut self, rules: &Rules, all: bool, out: &mut Output, scoring: bool, scratch: &mut Pane) {
        let watermark = self.newest.saturating_sub(rules.settings.allowed_lateness_ms);
        while self
            .pending
            .front()
            .is_some_and(|r| all || r.ts.millis() <= watermark)
        {
            let r = self.pending.pop_front().expect("checked above");
            self.analyse(rules, &r, out, scoring, scratch);
        }
    }

    fn silence_open(&mut self, rules: &Rules, now: i64, out: &mut Output) {
        let Some(i) = self.silence_plan else { return };
        let d = &rules.detectors[i as usize];
        if self.silence.is_active() || self.last_arrival == i64::MIN || now - self.last_arrival < d.for_ms {
            return;
        }
        let silent = now - self.last_arrival;
        let message = format!(
            "{} has sent nothing for {} (last reading at {})",
            self.id,
            human_ms(silent),
            Ts(self.last_arrival).to_rfc3339()
        );
        let advice = "check the device's power and network link, then its credentials (an expired SAS token \
                      gets 401s); restart the device or its gateway if it does not come back";
        self.silence.open(
            Opening {
                device: &self.id,
                rule: &d.name,
                scope: "",
                kind: d.kind.as_str(),
                severity: d.severity,
                metric: "*",
                threshold: threshold_of(d),
                ts: Ts(now),
                reading_id: std::str::from_utf8(&self.last_id).unwrap_or_default(),
                evidence: Evidence {
                    value: silent as f64 / 1000.0,
                    baseline: None,
                    score: score(silent as f64, d.for_ms as f64),
                    statistic: silent as f64 / 1000.0,
                },
                message,
                recommendation: d.recommendation.clone().unwrap_or_else(|| advice.to_owned()),
            },
            &rules.settings,
            &mut out.alerts,
        );
    }

    fn emit_changes(&mut self, rules: &Rules, out: &mut Output, scratch: &mut Pane) {
        if !std::mem::take(&mut self.changed) {
            return;
        }
        for s in &mut self.slots {
            if !std::mem::take(&mut s.dirty) {
                continue;
            }
            s.windows.emit_partial(
                &rules.settings,
                &mut Sink {
                    device: &self.id,
                    metric: &s.metric,
                    out: &mut out.insights,
                    scratch,
                },
            );
        }
        self.latest(out);
    }

    fn latest(&self, out: &mut Output) {
        let metrics: BTreeMap<String, f64> = self
            .slots
            .iter()
            .filter_map(|s| s.last.map(|(_, v)| (s.metric.to_string(), v)))
            .collect();
        if let Some(last_seen) = self.slots.iter().filter_map(|s| s.last.map(|(t, _)| t)).max() {
            out.insights.push(Insight::Latest(LatestState {
                device_id: self.id.clone(),
                last_seen: Ts(last_seen),
                metrics,
            }));
        }
    }
}

impl EngineState {
    pub(super) fn bind(&mut self, rules: &Rules) {
        self.index.clear();
        self.collided.clear();
        for i in 0..self.devices.len() {
            self.devices[i].bind(rules);
            let id = self.devices[i].id.clone();
            self.insert_index(&id, i);
        }
    }

    fn insert_index(&mut self, id: &DeviceId, i: usize) {
        let h = key_hash(id.as_str().as_bytes());
        match self.index.entry(h) {
            std::collections::hash_map::Entry::Occupied(_) => {
                self.collided.insert(id.clone(), i as u32);
            }
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(i as u32);
            }
        }
    }

    #[inline]
    fn find(&self, id: &DeviceId) -> Option<usize> {
        let bytes = id.as_str().as_bytes();
        let &i = self.index.get(&key_hash(bytes))?;
        let d = &self.devices[i as usize];
        if d.key.is(bytes, d.id.as_str()) {
            Some(i as usize)
        } else {
            self.collided.get(id).map(|&i| i as usize)
        }
    }

    /// Takes devices from another state (a partition handed over); ones already here are kept.
    pub(super) fn absorb(&mut self, other: EngineState, rules: &Rules) {
        for mut d in other.devices {
            if self.find(&d.id).is_some() {
                continue;
            }
            d.bind(rules);
            let id = d.id.clone();
            self.devices.push(d);
            self.insert_index(&id, self.devices.len() - 1);
        }
    }

    /// Per device, whether it changed since the last tick, and per metric whether a value
    /// arrived since its last partial window: what the next tick owes (partial windows, latest
    /// state). A checkpoint keeps this, so the instance that resumes from it emits them at its
    /// first tick, as the one that wrote it would have at its next.
    pub(super) fn owed(&self) -> Owed {
        self.devices
            .iter()
            .map(|d| (d.changed, d.slots.iter().map(|s| s.dirty).collect()))
            .collect()
    }

    /// Restores [`EngineState::owed`]; `None` (a checkpoint written before it was kept) marks
    /// everything: emitting a window twice is harmless (the sinks keep the fuller one), never
    /// emitting it is not.
    pub(super) fn set_owed(&mut self, owed: Option<Owed>) -> Result<(), String> {
        let Some(owed) = owed else {
            for d in &mut self.devices {
                d.changed = true;
                d.slots.iter_mut().for_each(|s| s.dirty = true);
            }
            return Ok(());
        };
        let fits = owed.len() == self.devices.len()
            && owed
                .iter()
                .zip(&self.devices)
                .all(|(o, d)| o.1.len() == d.slots.len());
        if !fits {
            return Err(
                "invalid analyze checkpoint: what the next tick owes does not match the devices".into(),
            );
        }
        for (d, (changed, dirty)) in self.devices.iter_mut().zip(owed) {
            d.changed = changed;
            for (s, dirty) in d.slots.iter_mut().zip(dirty) {
                s.dirty = dirty;
            }
        }
        Ok(())
    }

    pub(super) fn restart_silence_clocks(&mut self, now: i64) {
        for d in &mut self.devices {
            if d.last_arrival != i64::MIN {
                d.last_arrival = d.last_arrival.max(now);
            }
        }
    }

    /// Keeps only the devices `keep` selects (the others: a partition handed away).
    pub(super) fn retain(&mut self, keep: impl Fn(&Device) -> bool, rules: &Rules) {
        self.devices.retain(keep);
        self.bind(rules);
    }

    /// A copy holding only the devices `keep` selects (for a checkpoint).
    pub(super) fn select(&self, keep: impl Fn(&Device) -> bool) -> EngineState {
        EngineState {
            devices: self.devices.iter().filter(|d| keep(d)).cloned().collect(),
            ..Default::default()
        }
    }

    /// Analyses one reading.
    pub(super) fn apply(
        &mut self,
        rules: &Rules,
        r: &Reading,
        partition: u32,
        now: i64,
        out: &mut Output,
        scoring: bool,
    ) {
        let i = match self.find(&r.device_id) {
            Some(i) => i,
            None => {
                let mut d = Device::new(r.device_id.clone());
                d.bind(rules);
                self.devices.push(d);
                self.insert_index(&r.device_id, self.devices.len() - 1);
                self.devices.len() - 1
            }
        };
        let (d, scratch) = (&mut self.devices[i], &mut self.scratch);
        let lateness = rules.settings.allowed_lateness_ms;
        if !d.first_time(&r.id, r.ts.millis() >= d.newest.saturating_sub(lateness)) {
            out.stats.duplicates += 1;
            return;
        }
        out.stats.processed += 1;
        d.changed = true;
        d.partition = partition;
        d.last_arrival = d.last_arrival.max(now);
        match <[u8; 32]>::try_from(r.id.as_bytes()) {
            // Ingest's ids are 32 hex digits: a fixed-size copy, no call to `memcpy`.
            Ok(id) => d.last_id = SmallVec::from_buf(id),
            Err(_) => {
                d.last_id.clear();
                d.last_id.extend_from_slice(r.id.as_bytes());
            }
        }
        if d.silence.is_active() {
            let (id, since) = (&d.id, d.silence.active.as_ref().map(|a| a.opened_at));
            let message = format!(
                "{id} is sending again (silent since {})",
                since.map(|t| t.to_rfc3339()).unwrap_or_default()
            );
            d.silence
                .clear(Ts(now), 0.0, &rules.settings, |_| message, &mut out.alerts);
        }
        let ts = r.ts.millis();
        if lateness == 0 {
            d.newest = d.newest.max(ts);
            d.analyse(rules, r, out, scoring, scratch);
            return;
        }
        let watermark = d.newest.saturating_sub(lateness);
        if ts < watermark {
            let metrics = r.metrics.keys().cloned().collect();
            d.late(r, metrics, watermark, out);
            return;
        }
        if ts < d.newest {
            out.stats.out_of_order += 1;
        }
        let at = d.pending.partition_point(|p| p.ts <= r.ts);
        d.pending.insert(at, r.clone());
        d.newest = d.newest.max(ts);
        d.release(rules, false, out, scoring, scratch);
    }

    /// Processing-time work: silence, flushing reorder buffers of idle devices, and partial
    /// windows plus latest state of devices that changed since the last tick.
    pub(super) fn tick(&mut self, rules: &Rules, now: i64, out: &mut Output) {
        let lateness = rules.settings.allowed_lateness_ms;
        for d in &mut self.devices {
            d.silence_open(rules, now, out);
            if lateness > 0 && !d.pending.is_empty() && now - d.last_arrival >= lateness {
                d.release(rules, true, out, false, &mut self.scratch);
            }
            d.emit_changes(rules, out, &mut self.scratch);
        }
    }

    /// End of input (replay): every buffered reading, every open window, every latest state.
    pub(super) fn finish(&mut self, rules: &Rules, out: &mut Output, scoring: bool) {
        for d in &mut self.devices {
            d.release(rules, true, out, scoring, &mut self.scratch);
            for s in &d.slots {
                s.windows.emit_open(
                    &rules.settings,
                    &mut Sink {
                        device: &d.id,
                        metric: &s.metric,
                        out: &mut out.insights,
                        scratch: &mut self.scratch,
                    },
                );
            }
            d.changed = false;
            d.latest(out);
        }
    }

    pub(super) fn slots(&self) -> usize {
        self.devices.iter().map(|d| d.slots.len()).sum()
    }
}

#[inline]
pub(super) fn key_hash(bytes: &[u8]) -> u64 {
    use std::hash::Hasher;
    let mut h = rustc_hash::FxHasher::default();
    h.write(bytes);
    h.finish()
}
