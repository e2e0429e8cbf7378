//! A small mergeable quantile sketch in the manner of DDSketch (Masson et al., VLDB 2019):
//! values are counted in logarithmic bins, so any quantile comes back within a relative error
//! of [`ALPHA`] of a true value of that rank, and two sketches merge by adding bins (which is
//! how hopping windows are built from panes).
//!
//! The bin index uses the float's exponent plus its mantissa as a linear stand-in for `log2`
//! (no `ln` call on the hot path). Positive and negative values have their own bins; values
//! closer to zero than [`MIN_MAGNITUDE`] share one zero bin. A store never holds more than
//! [`MAX_BINS`] bins: past that the bins nearest zero collapse into one, which only coarsens the
//! smallest magnitudes (the low quantiles of positive data).

use super::bins::Bins;
use serde::{Deserialize, Serialize};

/// Relative accuracy of every quantile.
pub const ALPHA: f64 = 0.02;
/// Most bins per sign.
pub const MAX_BINS: usize = 128;
/// Magnitudes below this count as zero.
pub const MIN_MAGNITUDE: f64 = 1e-9;

/// Bin width in units of the linear log2 stand-in: `ln((1 + ALPHA) / (1 - ALPHA))`. The
/// stand-in's slope against `ln x` is at least 1 (at mantissa 1.0), so a bin never spans more
/// than a ratio of `gamma`. (A constant: `ln` is not free, and this runs for every value.)
const WIDTH: f64 = 0.040_005_334_613_699_206;
const INV_WIDTH: f64 = 1.0 / WIDTH;

fn width() -> f64 {
    WIDTH
}

/// `e + m` for `x = 2^e * (1 + m)`: a monotone, piecewise-linear `log2`.
#[inline]
fn log2_linear(x: f64) -> f64 {
    let bits = x.to_bits();
    let exp = ((bits >> 52) & 0x7ff) as i64 - 1023;
    let mantissa = f64::from_bits((bits & 0x000f_ffff_ffff_ffff) | 0x3ff0_0000_0000_0000) - 1.0;
    exp as f64 + mantissa
}

/// The inverse of [`log2_linear`].
fn exp2_linear(y: f64) -> f64 {
    // `floor` and `powi` are library calls, and a window's three quantiles need six of each:
    // the same values, computed inline (2^e of a normal exponent is its bits).
    let e = floor_i32(y);
    let scale = if (-1022..=1023).contains(&e) {
        f64::from_bits(((e + 1023) as u64) << 52)
    } else {
        2f64.powi(e)
    };
    (1.0 + (y - e as f64)) * scale
}

#[inline]
fn index(magnitude: f64) -> i32 {
    // A finite magnitude above `MIN_MAGNITUDE` puts this within -750..25,600.
    floor_small(log2_linear(magnitude) * INV_WIDTH)
}

/// 1.5 * 2^52: adding it rounds a float of magnitude below 2^51 to an integer, which then sits
/// in the sum's low mantissa bits.
const ROUNDER: f64 = 6_755_399_441_055_744.0;

/// `x.floor() as i32` for a finite `x` within ±2^30, in about 7 instructions where
/// [`floor_i32`] takes 16 (its saturating conversion guards against NaN and overflow, which this
/// domain excludes): round to nearest by adding [`ROUNDER`] (the low 32 bits of the sum are the
/// rounded integer, two's complement), then one down if that rounded up.
#[inline]
fn floor_small(x: f64) -> i32 {
    let y = x + ROUNDER;
    let rounded = y.to_bits() as u32 as i32;
    rounded - ((y - ROUNDER) > x) as i32
}

/// `x.floor() as i32` without the call: on the x86-64 baseline (no SSE4.1) `floor` is a
/// library function, and a window's three quantiles need six. Same result for every input,
/// NaN and out-of-range values included (`as` saturates). (The per-value bin index uses the
/// cheaper [`floor_small`].)
#[inline]
fn floor_i32(x: f64) -> i32 {
    let t = x as i32;
    if (t as f64) > x && t != i32::MIN { t - 1 } else { t }
}

/// `x.ceil() as u64` for `0 <= x < 2^53`, without the call: `ceil` is a software routine of
/// some 40 instructions on the x86-64 baseline, and a window's quantiles need three.
#[inline]
fn ceil_u64(x: f64) -> u64 {
    let t = x as u64;
    if (t as f64) < x { t + 1 } else { t }
}

/// The value a bin stands for: the harmonic-style midpoint keeps the relative error at most
/// `ALPHA` for anything in the bin.
fn value(index: i32) -> f64 {
    let lo = exp2_linear(index as f64 * width());
    let hi = exp2_linear((index + 1) as f64 * width());
    2.0 * lo * hi / (lo + hi)
}

/// Dense bins from `offset` up.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Store {
    offset: i32,
    bins: Bins,
}

// The pane's sketch sits between the lines every value touches: it must not grow.
#[cfg(target_pointer_width = "64")]
const _: () = assert!(
    std::mem::size_of::<Store>() <= 64,
    "a sketch store grew past 64 bytes"
);

impl Store {
    /// Adds `n` at bin `i`. The kept range is always the top `MAX_BINS` indices seen; anything
    /// below folds into the lowest kept bin, so the result does not depend on arrival order.
    #[inline]
    fn add(&mut self, i: i32, n: u32) {
        // Most values land in a bin the store already has: that case inline, the rest not.
        let k = i.wrapping_sub(self.offset) as u32 as usize;
        if !self.bins.try_add(k, n) {
            self.add_outside(i, n);
        }
    }

    /// [`Store::add`] of a bin below or above the ones held, to an empty store, or past what a
    /// one-byte counter holds.
    #[inline(never)]
    fn add_outside(&mut self, i: i32, n: u32) {
        let len = self.bins.len() as i32;
        if len == 0 {
            self.offset = i;
        }
        let top = (self.offset + len - 1).max(i);
        let lowest = top - (MAX_BINS as i32 - 1);
        let offset = self.offset.min(i).max(lowest);
        if offset <= self.offset && i >= offset {
            // No fold: the narrow counters may still hold it.
            let grow = (self.offset - offset) as usize;
            let need = (top - offset + 1) as usize;
            if self.bins.try_grow_narrow(grow, need, (i - offset) as usize, n) {
                self.offset = offset;
                return;
            }
        }
        // An empty store has its offset at `i` (above): nothing folds or grows below, and the
        // resize below makes its one bin.
        let bins = self.bins.wide();
        if offset > self.offset {
            let fold = ((offset - self.offset) as usize).min(bins.len());
            let folded: u32 = bins.drain(..fold).sum();
            self.offset += fold as i32;
            if bins.is_empty() {
                self.offset = offset;
                bins.push(0);
            }
            bins[0] += folded;
        } else if offset < self.offset {
            let grow = (self.offset - offset) as usize;
            bins.splice(0..0, std::iter::repeat_n(0, grow));
            self.offset = offset;
        }
        let need = (top - self.offset + 1) as usize;
        if bins.len() < need {
            bins.resize(need, 0);
        }
        bins[(i.max(self.offset) - self.offset) as usize] += n;
    }

    fn copy_from(&mut self, o: &Store) {
        self.offset = o.offset;
        self.bins.copy_from(&o.bins);
    }

    fn merge(&mut self, other: &Store) {
        for (k, n) in other.bins.counts().enumerate() {
            if n > 0 {
                self.add(other.offset + k as i32, n);
            }
        }
    }

    fn total(&self) -> u64 {
        self.bins.counts().map(u64::from).sum()
    }
}

/// The sketch: bins for positive values, negative values, and zero.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Sketch {
    pos: Store,
    neg: Negatives,
    zero: u32,
}

/// The negative values' store, allocated with the first negative value: most metrics never have
/// one, and inline it was 64 bytes of every pane between the bins a value touches and the rest of
/// its state. It encodes exactly as the store it stands for (one never used as an empty store),
/// so checkpoints are the same bytes as when it was inline.
#[derive(Debug, Clone, Default)]
struct Negatives(Option<Box<Store>>);

impl Negatives {
    fn store(&self) -> Option<&Store> {
        self.0.as_deref()
    }

    /// Out of line: the per-value path of a metric that is never negative stays small.
    #[inline(never)]
    fn add(&mut self, i: i32) {
        self.0.get_or_insert_default().add(i, 1);
    }

    fn copy_from(&mut self, o: &Negatives) {
        match (&mut self.0, o.store()) {
            (Some(s), Some(o)) => s.copy_from(o),
            (Some(s), None) => s.copy_from(&Store::default()),
            (None, Some(o)) => self.0 = Some(Box::new(o.clone())),
            (None, None) => {}
        }
    }

    fn clear(&mut self) {
        if let Some(s) = &mut self.0 {
            s.bins.clear();
        }
    }

    fn merge(&mut self, o: &Negatives) {
        if let Some(o) = o.store().filter(|o| !o.bins.is_empty()) {
            self.0.get_or_insert_default().merge(o);
        }
    }

    fn total(&self) -> u64 {
        self.store().map_or(0, Store::total)
    }
}

impl PartialEq for Negatives {
    /// As the stores they stand for: never used equals empty.
    fn eq(&self, o: &Negatives) -> bool {
        match (self.store(), o.store()) {
            (Some(a), Some(b)) => a == b,
            (Some(s), None) | (None, Some(s)) => *s == Store::default(),
            (None, None) => true,
        }
    }
}

impl Serialize for Negatives {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        match self.store() {
            Some(s) => s.serialize(ser),
            None => Store::default().serialize(ser),
        }
    }
}

impl<'de> Deserialize<'de> for Negatives {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        let s = Store::deserialize(de)?;
        Ok(Negatives((s != Store::default()).then(|| Box::new(s))))
    }
}

impl Sketch {
    #[inline]
    pub fn add(&mut self, x: f64) {
        if x > MIN_MAGNITUDE {
            self.pos.add(index(x), 1);
        } else if x < -MIN_MAGNITUDE {
            self.neg.add(index(-x));
        } else {
            self.zero += 1;
        }
    }

    /// Becomes a copy of `o`, reusing this sketch's memory.
    pub fn copy_from(&mut self, o: &Sketch) {
        self.pos.copy_from(&o.pos);
        self.neg.copy_from(&o.neg);
        self.zero = o.zero;
    }

    /// Empties the sketch, keeping its memory.
    pub fn clear(&mut self) {
        self.pos.bins.clear();
        self.neg.clear();
        self.zero = 0;
    }

    pub fn merge(&mut self, other: &Sketch) {
        self.pos.merge(&other.pos);
        self.neg.merge(&other.neg);
        self.zero += other.zero;
    }

    pub fn count(&self) -> u64 {
        self.pos.total() + self.neg.total() + self.zero as u64
    }

    /// The value at quantile `q` (0..=1), or `None` when empty, by the nearest-rank rule: the
    /// `ceil(q * n)`-th smallest item (the smallest for `q = 0`).
    pub fn quantile(&self, q: f64) -> Option<f64> {
        self.quantiles([q])[0]
    }

    /// [`Sketch::quantile`] of each of `qs`, which must be ascending, in one walk over the bins
    /// (a window reports three: one walk instead of three, and one count).
    pub fn quantiles<const N: usize>(&self, qs: [f64; N]) -> [Option<f64>; N] {
        self.quantiles_of(self.count(), qs)
    }

    /// [`Sketch::quantiles`] when the caller knows how many values the sketch holds (a pane
    /// counts them too): counting them here is a walk over every bin, half of the work.
    pub fn quantiles_of<const N: usize>(&self, n: u64, qs: [f64; N]) -> [Option<f64>; N] {
        debug_assert_eq!(n, self.count(), "the sketch holds {n} values");
        if n == 0 {
            return [None; N];
        }
        let ranks = qs.map(|q| ceil_u64(q.clamp(0.0, 1.0) * n as f64).max(1) - 1);
        debug_assert!(ranks.is_sorted(), "quantiles are asked for in ascending order");
        // First the bin each quantile falls in (`ZERO_BIN`, else `index * 2 + sign`), then
        // its value: computing a bin's value is a `powi` and a `floor`, for 3 bins, not all.
        let mut bins = [0i64; N];
        let (mut next, mut seen) = (0, 0u64);
        // Negative values, most negative first (highest magnitude index first).
        let empty = Bins::default();
        let neg = self.neg.store().map_or((0, &empty), |s| (s.offset, &s.bins));
        for (k, c) in neg.1.counts().enumerate().rev() {
            seen += c as u64;
            let bin = (neg.0 as i64 + k as i64) * 2 + 1;
            if fill(&mut bins, &mut next, &ranks, seen, bin) {
                break;
            }
        }
        seen += self.zero as u64;
        if next < N && !fill(&mut bins, &mut next, &ranks, seen, ZERO_BIN) {
            for (k, c) in self.pos.bins.counts().enumerate() {
                seen += c as u64;
                let bin = (self.pos.offset as i64 + k as i64) * 2;
                if fill(&mut bins, &mut next, &ranks, seen, bin) {
                    break;
                }
            }
        }
        let mut out = [None; N];
        for (o, &bin) in out.iter_mut().zip(&bins).take(next) {
            *o = Some(match bin {
                ZERO_BIN => 0.0,
                b if b & 1 == 1 => -value((b >> 1) as i32),
                b => value((b >> 1) as i32),
            });
        }
        out
    }
}

/// The zero bin, in [`Sketch::quantiles`]' encoding of bins.
const ZERO_BIN: i64 = i64::MIN;

/// Sets the quantiles from `next` on whose rank the first `seen` items reach to `bin`; true
/// once all are set.
#[inline]
fn fill<const N: usize>(
    bins: &mut [i64; N],
    next: &mut usize,
    ranks: &[u64; N],
    seen: u64,
    bin: i64,
) -> bool {
    while *next < N && seen > ranks[*next] {
        bins[*next] = bin;
        *next += 1;
    }
    *next == N
}

#[cfg(test)]
#[path = "sketch_tests.rs"]
mod tests;
