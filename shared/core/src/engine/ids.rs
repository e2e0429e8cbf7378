//! The reading-id hash of the per-device dedup ring (stable across runs: checkpoints hold it),
//! and the key comparison of device and metric lookups.

/// `a == b` for short keys without a call to `memcmp`: most metric names and device ids are
/// 8 to 16 bytes, which two (overlapping) 8-byte words cover. Every value looks its metric up,
/// and every reading its device.
#[inline]
fn same_key(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    if (8..=16).contains(&n) {
        let word = |s: &[u8], at: usize| u64::from_le_bytes(s[at..at + 8].try_into().expect("8 bytes"));
        return word(a, 0) == word(b, 0) && word(a, n - 8) == word(b, n - 8);
    }
    a == b
}

/// A device id's or metric name's bytes inline, for lookups: no pointer to chase and, unlike a
/// small vector, no inline-or-heap branch on every use. A name longer than `N` keeps its first
/// `N` bytes here and is compared in full against the name its owner holds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Key<const N: usize> {
    len: u32,
    bytes: [u8; N],
}

impl<const N: usize> Default for Key<N> {
    fn default() -> Self {
        Key {
            len: 0,
            bytes: [0; N],
        }
    }
}

impl<const N: usize> Key<N> {
    pub fn new(name: &[u8]) -> Self {
        let mut bytes = [0; N];
        let n = name.len().min(N);
        bytes[..n].copy_from_slice(&name[..n]);
        // Names are bounded by the request limits, far below 4 GiB.
        let len = u32::try_from(name.len()).unwrap_or(u32::MAX);
        Key { len, bytes }
    }

    /// Whether `b` is this name; `full` is the whole name, read only when it is longer than `N`.
    #[inline]
    pub fn is(&self, b: &[u8], full: &str) -> bool {
        let n = b.len();
        if self.len as usize != n {
            return false;
        }
        if n > N {
            return full.as_bytes() == b;
        }
        same_key(&self.bytes[..n], b)
    }
}

/// The first 64 bits of a hex reading id (ids are 32 hex digits of a SHA-256); other ids are
/// hashed with FNV-1a. Stable across runs, which checkpoints need.
#[inline]
pub(super) fn id_hash(id: &str) -> u64 {
    if let Some(v) = id.as_bytes().first_chunk::<16>().and_then(hex16) {
        return v;
    }
    id.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// 16 hex digits as a number: the value `u64::from_str_radix(.., 16)` gives (which checkpoints
/// written before hold), without its generic radix handling (it was 7 % of the engine's
/// instructions), and on bytes, so an id with a multi-byte character near byte 16 cannot panic.
#[inline]
fn hex16(digits: &[u8; 16]) -> Option<u64> {
    // `from_str_radix` takes a leading `+`.
    if digits[0] == b'+' {
        return hex_digits(&digits[1..]);
    }
    let (hi, lo) = digits.split_at(8);
    let word = |s: &[u8]| u64::from_be_bytes(s.try_into().expect("8 bytes"));
    Some(hex8(word(hi))? << 32 | hex8(word(lo))?)
}

/// Hex digits as a number, one table lookup per digit and one check at the end.
fn hex_digits(digits: &[u8]) -> Option<u64> {
    let (mut v, mut bad) = (0u64, 0u8);
    for &c in digits {
        let d = HEX[c as usize];
        bad |= d;
        v = v << 4 | (d & 0x0f) as u64;
    }
    (bad & 0xf0 == 0).then_some(v)
}

/// 8 hex digits, the first in the top byte, as a number: all 8 at once in one word (a table
/// lookup per digit was a tenth of the engine's per-reading work outside the metrics).
#[inline]
fn hex8(w: u64) -> Option<u64> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // The top bit of each byte that is at least `c`: no byte carries into the next while every
    // byte is below 0x80, which is checked before the result is used.
    let at_least = |w: u64, c: u8| w.wrapping_add((0x80 - c as u64) * ONES) & HIGH;
    let lower = w | (0x20 * ONES);
    let digit = at_least(w, b'0') & !at_least(w, b'9' + 1);
    let letter = at_least(lower, b'a') & !at_least(lower, b'f' + 1);
    if w & HIGH != 0 || digit | letter != HIGH {
        return None;
    }
    // A digit's value is its low nibble; a letter's, its low nibble + 9. Then the 8 nibbles
    // are packed, the first the most significant.
    let v = (w & (0x0f * ONES)) + (letter >> 7) * 9;
    let v = (v | v >> 4) & 0x00ff_00ff_00ff_00ff;
    let v = (v | v >> 8) & 0x0000_ffff_0000_ffff;
    Some((v | v >> 16) & 0xffff_ffff)
}

/// A byte's value as a hex digit; 0xff for a byte that is not one.
const HEX: [u8; 256] = {
    let mut t = [0xffu8; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        t[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

#[cfg(test)]
mod tests {
    use super::{Key, hex_digits, hex16, id_hash, same_key};

    #[test]
    fn a_key_is_its_name_whatever_the_length() {
        let names: Vec<Vec<u8>> = (0..40u8)
            .map(|n| (0..n).map(|i| b'a' + i % 26).collect())
            .chain([
                b"temperature".to_vec(),
                b"temperaturf".to_vec(),
                b"dev-00123".to_vec(),
            ])
            .collect();
        for a in &names {
            let full = std::str::from_utf8(a).unwrap();
            let key = Key::<24>::new(a);
            for b in &names {
                assert_eq!(key.is(b, full), a == b, "{a:?} {b:?}");
                let mut c = b.clone();
                if let Some(last) = c.last_mut() {
                    // Differs from `b` only in its last byte: past the inline part for long names.
                    *last ^= 0x20;
                    assert_eq!(key.is(&c, full), *a == c, "{a:?} {c:?}");
                }
            }
        }
    }

    #[test]
    fn same_key_is_equality() {
        let keys: [&[u8]; 12] = [
            b"",
            b"a",
            b"temp",
            b"pressure",
            b"pressurf",
            b"humidity",
            b"temperature",
            b"temperaturf",
            b"uemperature",
            b"dev-00123",
            b"0123456789abcdef",
            b"0123456789abcdefg",
        ];
        for a in keys {
            for b in keys {
                assert_eq!(same_key(a, b), a == b, "{a:?} {b:?}");
            }
        }
        for n in 0..20 {
            let a: Vec<u8> = (0..n).collect();
            for i in 0..n as usize {
                let mut b = a.clone();
                b[i] ^= 0x40;
                assert!(!same_key(&a, &b), "{n} {i}");
            }
            assert!(same_key(&a, &a.clone()));
        }
    }

    /// The previous definition: checkpoints hold its values.
    fn before(id: &str) -> u64 {
        if id.len() >= 16
            && id.is_char_boundary(16)
            && let Ok(v) = u64::from_str_radix(&id[..16], 16)
        {
            return v;
        }
        id.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
        })
    }

    #[test]
    fn the_hash_of_every_kind_of_id_is_the_one_checkpoints_hold() {
        for id in [
            "0123456789abcdef0123456789abcdef",
            "FEDCBA9876543210fedcba9876543210",
            "ffffffffffffffffffffffffffffffff",
            "0000000000000000",
            "+123456789abcdef-and-more",
            "0123456789abcdeg0000",
            "r42",
            "",
            "0123456789abcdé0123",
            "0123456789abcdeé0123",
            "++23456789abcdef",
            "short-0123456789",
        ] {
            assert_eq!(id_hash(id), before(id), "{id:?}");
        }
        assert_eq!(hex16(b"00000000000000ff"), Some(255));
        assert_eq!(hex16(b"0000000000000x00"), None);
    }

    #[test]
    fn hex16_in_words_is_the_table_walk_for_every_byte_at_every_place() {
        let table = |d: &[u8; 16]| match d.strip_prefix(b"+") {
            Some(rest) => hex_digits(rest),
            None => hex_digits(d),
        };
        for base in [*b"0123456789abcdef", *b"FEDCBA9876543210", *b"+0aF9b8C7d6E5f40"] {
            assert_eq!(hex16(&base), table(&base));
            for at in 0..16 {
                for byte in 0..=255u8 {
                    let mut d = base;
                    d[at] = byte;
                    assert_eq!(hex16(&d), table(&d), "{d:?}");
                }
            }
        }
    }
}
