//! A sketch store's counters: one byte each and inline while every count fits in a byte and the
//! held range spans at most [`NARROW`] bins; four bytes each, on the heap, otherwise.
//!
//! Why: a pane of a wide-ranging metric (the benchmark's vibration, ±50 % noise) spans some 40
//! bins. With four-byte counters inline for only 12 of them, every such pane's bins lived on the
//! heap, and the bin a value lands in was one more cache miss behind a pointer: a third of the
//! engine's time at 10,000 devices (BENCHMARKS.md, "Session 16"). A pane of a 1 Hz sensor holds
//! at most 60 values, so one byte per counter nearly always does.
//!
//! Encoded as the sequence of counts, whatever the representation: checkpoints are the same
//! bytes as when the counters were a `SmallVec<[u32; 12]>`.

use serde::{Deserialize, Serialize};

/// Bins held with one-byte counters, inline.
pub const NARROW: usize = 54;

#[derive(Debug, Clone)]
pub(super) enum Bins {
    /// `n[k] == 0` for every `k >= len`.
    Narrow {
        len: u8,
        n: [u8; NARROW],
    },
    Wide(Vec<u32>),
}

impl Default for Bins {
    fn default() -> Self {
        Bins::Narrow {
            len: 0,
            n: [0; NARROW],
        }
    }
}

impl Bins {
    pub fn len(&self) -> usize {
        match self {
            Bins::Narrow { len, .. } => *len as usize,
            Bins::Wide(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The count of bin `k` (`k < len`).
    #[inline]
    pub fn get(&self, k: usize) -> u32 {
        match self {
            Bins::Narrow { n, .. } => n[k] as u32,
            Bins::Wide(v) => v[k],
        }
    }

    /// The counts, lowest bin first.
    pub fn counts(&self) -> impl DoubleEndedIterator<Item = u32> + ExactSizeIterator + '_ {
        (0..self.len()).map(|k| self.get(k))
    }

    /// Adds `add` to held bin `k` when that needs no change of range or width; false otherwise.
    #[inline]
    pub fn try_add(&mut self, k: usize, add: u32) -> bool {
        match self {
            Bins::Narrow { len, n } => {
                if k < *len as usize {
                    let sum = n[k] as u32 + add;
                    if sum <= u8::MAX as u32 {
                        n[k] = sum as u8;
                        return true;
                    }
                }
                false
            }
            Bins::Wide(v) => match v.get_mut(k) {
                Some(c) => {
                    *c += add;
                    true
                }
                None => false,
            },
        }
    }

    /// Narrow counters that grow to hold the range `[lo, lo + need)` (in units relative to the
    /// current first bin: `grow` new bins below it) and add `add` at `at` of the new range;
    /// false, and unchanged, when that does not fit one-byte counters.
    pub fn try_grow_narrow(&mut self, grow: usize, need: usize, at: usize, add: u32) -> bool {
        let Bins::Narrow { len, n } = self else {
            return false;
        };
        let old = *len as usize;
        if need > NARROW || old + grow > need || at >= need {
            return false;
        }
        let fits = add
            + if at >= grow && at - grow < old {
                n[at - grow] as u32
            } else {
                0
            };
        if fits > u8::MAX as u32 {
            return false;
        }
        if grow > 0 {
            n.copy_within(0..old, grow);
            n[..grow].fill(0);
        }
        *len = need as u8;
        n[at] = fits as u8;
        true
    }

    /// The counters as four-byte ones (converting in place).
    pub fn wide(&mut self) -> &mut Vec<u32> {
        if let Bins::Narrow { len, n } = self {
            let v = n[..*len as usize].iter().map(|&c| c as u32).collect();
            *self = Bins::Wide(v);
        }
        match self {
            Bins::Wide(v) => v,
            Bins::Narrow { .. } => unreachable!("converted above"),
        }
    }

    /// Empty and narrow again.
    pub fn clear(&mut self) {
        *self = Bins::default();
    }

    /// Becomes a copy of `o`, reusing this one's heap memory when both are wide.
    pub fn copy_from(&mut self, o: &Bins) {
        match (&mut *self, o) {
            (Bins::Wide(v), Bins::Wide(w)) => {
                v.clear();
                v.extend_from_slice(w);
            }
            _ => *self = o.clone(),
        }
    }

    /// Narrow when every count fits, else wide.
    fn from_counts(v: Vec<u32>) -> Bins {
        if v.len() <= NARROW && v.iter().all(|&c| c <= u8::MAX as u32) {
            let mut n = [0; NARROW];
            for (d, &c) in n.iter_mut().zip(&v) {
                *d = c as u8;
            }
            Bins::Narrow {
                len: v.len() as u8,
                n,
            }
        } else {
            Bins::Wide(v)
        }
    }
}

impl PartialEq for Bins {
    /// The same counts, whatever the width.
    fn eq(&self, o: &Bins) -> bool {
        self.len() == o.len() && self.counts().eq(o.counts())
    }
}

impl Serialize for Bins {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        ser.collect_seq(self.counts())
    }
}

impl<'de> Deserialize<'de> for Bins {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        Vec::<u32>::deserialize(de).map(Bins::from_counts)
    }
}
