//! Windows of one (device, metric), built from panes: every window size and hop is a multiple
//! of the pane (their greatest common divisor), so a tumbling or hopping window is the merge of
//! the panes it covers. Each pane holds count, min, max, Welford mean and M2, and a quantile
//! sketch, all mergeable.
//!
//! Input arrives in event-time order (the reorder buffer sees to it), so a window is final once
//! a reading at or past its end arrives: it is emitted then, exactly once. Until then `partial`
//! emissions (on ticks) show it filling.

use super::sketch::Sketch;
use crate::DeviceId;
use crate::model::Aggregate;
use crate::rules::{Settings, WindowSpec};
use crate::ts::Ts;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[repr(C)]
pub struct Pane {
    start: i64,
    count: u64,
    min: f64,
    max: f64,
    mean: f64,
    m2: f64,
    sketch: Sketch,
}

impl Default for Pane {
    fn default() -> Self {
        Pane::new(0)
    }
}

impl Pane {
    pub fn new(start: i64) -> Pane {
        Pane {
            start,
            count: 0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            mean: 0.0,
            m2: 0.0,
            sketch: Sketch::default(),
        }
    }

    /// Empties the pane for a new start, keeping the sketch's memory.
    fn reset(&mut self, start: i64) {
        (self.start, self.count, self.mean, self.m2) = (start, 0, 0.0, 0.0);
        (self.min, self.max) = (f64::INFINITY, f64::NEG_INFINITY);
        self.sketch.clear();
    }

    fn copy_from(&mut self, o: &Pane) {
        (self.start, self.count, self.mean, self.m2) = (o.start, o.count, o.mean, o.m2);
        (self.min, self.max) = (o.min, o.max);
        self.sketch.copy_from(&o.sketch);
    }

    #[inline]
    fn add(&mut self, x: f64) {
        self.count += 1;
        // `x` is finite (readings are) and so are `min` and `max` once set: plain comparisons,
        // which give what `f64::min`/`max` gave (`x` when smaller/larger, else the old value)
        // without their NaN handling.
        if x < self.min {
            self.min = x;
        }
        if x > self.max {
            self.max = x;
        }
        let d = x - self.mean;
        // Through i64: one instruction on x86-64 where u64 takes several (counts are < 2^63).
        self.mean += d / self.count as i64 as f64;
        self.m2 += d * (x - self.mean);
        self.sketch.add(x);
    }

    /// Chan et al.'s parallel merge of mean and M2.
    fn merge(&mut self, o: &Pane) {
        if o.count == 0 {
            return;
        }
        let n = self.count + o.count;
        let d = o.mean - self.mean;
        self.mean += d * o.count as f64 / n as f64;
        self.m2 += o.m2 + d * d * (self.count as f64) * (o.count as f64) / n as f64;
        self.count = n;
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
        self.sketch.merge(&o.sketch);
    }
}

/// The panes of one (device, metric) and how far its windows have been emitted. The pane being
/// filled lives inline (no pointer to chase for every value); closed ones wait in `closed`
/// while an open window still needs them, out of line with the rest of what only a pane's
/// close reads (a boxed struct encodes as its fields in place: checkpoints are the same bytes).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[repr(C)]
pub struct Windows {
    current: Pane,
    closed: Box<Closed>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Closed {
    /// Every window ending at or before this has been emitted final.
    through: i64,
    panes: VecDeque<Pane>,
}

/// Where emitted aggregates go, with the names they carry.
pub struct Sink<'a> {
    pub device: &'a DeviceId,
    /// The slot's field itself, not the name: reading the name (the box's pointer and length)
    /// would touch the slot's last cache line on every value, and only emitting a window needs it.
    #[allow(
        clippy::borrowed_box,
        reason = "a pointer to the field, read only when emitting"
    )]
    pub metric: &'a Box<str>,
    pub out: &'a mut Vec<crate::model::Insight>,
    /// Where windows are merged (memory reused across emissions).
    pub scratch: &'a mut Pane,
}

impl Windows {
    /// Adds an in-order value; first emits (final) every window that ends at or before `ts`.
    #[inline]
    pub fn add(&mut self, ts: i64, x: f64, settings: &Settings, sink: &mut Sink<'_>) {
        let pane_ms = settings.pane_ms();
        let current = self.current.start;
        // `ts - current` as u64 is exact once `ts >= current` (no saturating add needed).
        if self.current.count > 0 && ts >= current && (ts.wrapping_sub(current) as u64) < pane_ms as u64 {
            // The current pane's (most values): no 64-bit division to find the pane.
            self.current.add(x);
            return;
        }
        let start = ts.div_euclid(pane_ms) * pane_ms;
        if self.current.count == 0 {
            // The very first value.
            self.closed.through = start;
            self.current.reset(start);
        } else if start > self.current.start {
            self.close_until(start, settings, sink);
            let done = std::mem::replace(&mut self.current, Pane::new(start));
            self.closed.panes.push_back(done);
            let max = settings.max_window_ms();
            while self.closed.panes.front().is_some_and(|p| p.start + max <= start) {
                self.closed.panes.pop_front();
            }
        }
        // In order, so the value's pane is the current one (equal ts stay in it).
        self.current.add(x);
    }

    fn panes(&self) -> impl Iterator<Item = &Pane> {
        self.closed.panes.iter().chain(std::iter::once(&self.current))
    }

    /// Emits, final, every window ending in `(closed.through, until]` that holds data.
    fn close_until(&mut self, until: i64, settings: &Settings, sink: &mut Sink<'_>) {
        let last = self.current.start;
        let pane_ms = settings.pane_ms();
        for w in settings.windows() {
            // Ends past `last + pane + size` hold no data; stop there even after a long gap.
            let first = (self.closed.through.div_euclid(w.hop_ms) + 1) * w.hop_ms;
            let stop = until.min(last + pane_ms + w.size_ms);
            let mut end = first;
            while end <= stop {
                self.emit(end, w, false, sink);
                end += w.hop_ms;
            }
        }
        self.closed.through = until;
    }

    /// Emits the window `[end - size, end)` if it holds data.
    fn emit(&self, end: i64, w: &WindowSpec, partial: bool, sink: &mut Sink<'_>) {
        let from = end - w.size_ms;
        let mut any = false;
        for p in self
            .panes()
            .filter(|p| p.start >= from && p.start < end && p.count > 0)
        {
            if any {
                sink.scratch.merge(p);
            } else {
                sink.scratch.copy_from(p);
                any = true;
            }
        }
        if !any {
            return;
        }
        let m = &*sink.scratch;
        // The pane's count is the sketch's (every value goes to both): no walk to count it.
        let [p50, p95, p99] = m.sketch.quantiles_of(m.count, [0.50, 0.95, 0.99]);
        let within = |q: f64| q.clamp(m.min, m.max);
        sink.out.push(crate::model::Insight::Aggregate(Aggregate {
            device_id: sink.device.clone(),
            metric: sink.metric.to_string(),
            window_start: Ts(from),
            window_ms: w.size_ms,
            hop_ms: w.hop_ms,
            count: m.count,
            min: m.min,
            max: m.max,
            sum: m.mean * m.count as f64,
            stddev: (m.m2 / m.count as f64).max(0.0).sqrt(),
            p50: p50.map(within),
            p95: p95.map(within),
            p99: p99.map(within),
            partial,
        }));
    }

    /// Emits, as partial, the open tumbling window that holds the newest data (the caller knows
    /// whether anything arrived since the last call: `Slot::dirty`).
    pub fn emit_partial(&self, settings: &Settings, sink: &mut Sink<'_>) {
        if self.current.count == 0 {
            return;
        }
        let last = self.current.start;
        // Tumbling windows only: a hopping window already closes every hop.
        for w in settings.windows().iter().filter(|w| w.hop_ms == w.size_ms) {
            let end = (last.div_euclid(w.hop_ms) + 1) * w.hop_ms;
            self.emit(end, w, true, sink);
        }
    }

    /// Emits every window that holds data and is not yet final, as partial (end of a replay).
    pub fn emit_open(&self, settings: &Settings, sink: &mut Sink<'_>) {
        if self.current.count == 0 {
            return;
        }
        let last = self.current.start;
        for w in settings.windows() {
            let mut end = (self.closed.through.div_euclid(w.hop_ms) + 1) * w.hop_ms;
            // Windows [end - size, end) holding the newest pane end by `last + size`.
            while end <= last + w.size_ms {
                self.emit(end, w, true, sink);
                end += w.hop_ms;
            }
        }
    }
}
