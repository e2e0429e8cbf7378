//! The sketch against exact quantiles, its bin arithmetic against the library functions it
//! replaces, and merging.

use super::*;
use proptest::prelude::*;

#[test]
fn floor_i32_is_floor_as_i32() {
    let mut xs = vec![
        0.0,
        -0.0,
        0.5,
        -0.5,
        1.0,
        -1.0,
        1.999_999,
        -1.000_001,
        2e9,
        -2e9,
        3e9,
        -3e9,
        -2_147_483_648.5,
        -2_147_483_649.5,
        2_147_483_647.5,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NAN,
        f64::MIN_POSITIVE,
        -f64::MIN_POSITIVE,
        1e-300,
        -1e-300,
    ];
    xs.extend((-2_000..2_000).map(|i| i as f64 * 0.37));
    for x in xs {
        assert_eq!(super::floor_i32(x), x.floor() as i32, "{x}");
    }
}

#[test]
fn ceil_u64_is_ceil_as_u64() {
    let mut xs = vec![
        0.0,
        -0.0,
        0.5,
        1.0,
        1.5,
        2.0,
        1e-300,
        0.999_999_999,
        (1u64 << 53) as f64,
    ];
    // The products a window's quantiles compute: q * n for every count up to 100,000.
    for n in 0..100_000u64 {
        xs.extend([0.5, 0.95, 0.99].map(|q| q * n as f64));
    }
    for x in xs {
        assert_eq!(super::ceil_u64(x), x.ceil() as u64, "{x}");
    }
}

#[test]
fn floor_small_is_floor_within_its_domain() {
    let edge = (1u32 << 30) as f64;
    let mut xs = vec![
        0.0,
        -0.0,
        0.5,
        -0.5,
        1.5,
        -1.5,
        2.5,
        -2.5,
        edge,
        -edge,
        edge - 0.5,
        0.5 - edge,
    ];
    xs.extend((-20_000..20_000).map(|i| i as f64 * 0.37));
    xs.extend((-2_000..2_000).map(|i| i as f64 * 0.5));
    xs.extend((-2_000..2_000).map(|i| i as f64 + 1e-9));
    xs.extend((-2_000..2_000).map(|i| i as f64 - 1e-12));
    // Every bin index the sketch can compute: magnitudes from its floor to the largest float.
    let mut m = super::MIN_MAGNITUDE;
    while m.is_finite() {
        xs.push(super::log2_linear(m) * super::INV_WIDTH);
        m *= 1.003;
    }
    for x in xs {
        assert_eq!(super::floor_small(x), x.floor() as i32, "{x}");
    }
}

fn exact(sorted: &[f64], q: f64) -> f64 {
    sorted[((q * sorted.len() as f64).ceil() as usize).max(1) - 1]
}

#[test]
fn the_bin_width_constant_matches_the_accuracy() {
    assert!((WIDTH - ((1.0 + ALPHA) / (1.0 - ALPHA)).ln()).abs() < 1e-15);
}

#[test]
fn quantiles_are_within_the_relative_accuracy() {
    let mut s = Sketch::default();
    let mut xs: Vec<f64> = (1..=10_000).map(|i| 20.0 + (i as f64).sqrt()).collect();
    for &x in &xs {
        s.add(x);
    }
    xs.sort_by(f64::total_cmp);
    for q in [0.0, 0.5, 0.95, 0.99, 1.0] {
        let (got, want) = (s.quantile(q).unwrap(), exact(&xs, q));
        assert!((got - want).abs() <= ALPHA * want, "q={q}: {got} vs {want}");
    }
    assert_eq!(s.count(), 10_000);
    assert_eq!(Sketch::default().quantile(0.5), None);
}

#[test]
fn negative_zero_and_positive_values_are_ordered() {
    let mut s = Sketch::default();
    for x in [-5.0, -1.0, 0.0, 0.0, 1.0, 5.0, 20.0] {
        s.add(x);
    }
    let q: Vec<f64> = [0.0, 0.2, 0.4, 0.6, 1.0]
        .iter()
        .map(|&q| s.quantile(q).unwrap())
        .collect();
    assert!((q[0] + 5.0).abs() < 0.1 && (q[1] + 1.0).abs() < 0.03);
    assert_eq!(q[2], 0.0);
    assert!((q[3] - 1.0).abs() < 0.03 && (q[4] - 20.0).abs() < 0.4, "{q:?}");
}

#[test]
fn a_wide_range_collapses_the_smallest_magnitudes_and_keeps_the_top_exact_enough() {
    let mut s = Sketch::default();
    for i in 0..2_000 {
        s.add(1e-6 * 1.01f64.powi(i)); // 1e-6 .. 4e2: far more than MAX_BINS bins
    }
    assert!(s.pos.bins.len() <= MAX_BINS);
    assert_eq!(s.count(), 2_000);
    let top = s.quantile(1.0).unwrap();
    let want = 1e-6 * 1.01f64.powi(1_999);
    assert!((top - want).abs() <= ALPHA * want, "{top} vs {want}");
}

/// The per-quantile walk `quantiles` replaced: the values must stay the same.
fn before(s: &Sketch, q: f64) -> Option<f64> {
    let n = s.count();
    if n == 0 {
        return None;
    }
    let rank = ((q.clamp(0.0, 1.0) * n as f64).ceil() as u64).max(1) - 1;
    let mut seen = 0u64;
    let neg = s.neg.store().cloned().unwrap_or_default();
    for (k, c) in neg.bins.counts().enumerate().rev() {
        seen += c as u64;
        if seen > rank {
            return Some(-value(neg.offset + k as i32));
        }
    }
    seen += s.zero as u64;
    if seen > rank {
        return Some(0.0);
    }
    for (k, c) in s.pos.bins.counts().enumerate() {
        seen += c as u64;
        if seen > rank {
            return Some(value(s.pos.offset + k as i32));
        }
    }
    None
}

#[test]
fn exp2_linear_is_the_one_with_floor_and_powi() {
    let before = |y: f64| {
        let e = y.floor();
        (1.0 + (y - e)) * 2f64.powi(e as i32)
    };
    for i in -30_000..30_000 {
        for y in [i as f64 * width(), i as f64 * 0.037, i as f64 / 16.0] {
            assert_eq!(exp2_linear(y).to_bits(), before(y).to_bits(), "{y}");
        }
    }
}

#[test]
fn quantiles_tell_the_zero_bin_from_every_other() {
    // -0.98 falls in the negative bin of index -1.
    for xs in [
        &[-0.98, 0.0, 0.0, 5.0][..],
        &[-1e-3, 0.0, 1e-3],
        &[0.0, 0.98, 1.0],
    ] {
        let mut s = Sketch::default();
        xs.iter().for_each(|&x| s.add(x));
        let qs = [0.0, 0.3, 0.6, 1.0];
        assert_eq!(s.quantiles(qs), qs.map(|q| before(&s, q)), "{xs:?}");
    }
}

proptest! {
    /// One walk for several quantiles gives what one walk per quantile gave.
    #[test]
    fn quantiles_in_one_walk_equal_one_walk_each(
        xs in prop::collection::vec(prop_oneof![-1e4f64..1e4, -2f64..2.0, Just(0.0), 1e3f64..1e3 + 1.0], 0..300),
    ) {
        let mut s = Sketch::default();
        xs.iter().for_each(|&x| s.add(x));
        let qs = [0.0, 0.01, 0.25, 0.5, 0.5, 0.95, 0.99, 1.0];
        let want = qs.map(|q| before(&s, q));
        prop_assert_eq!(s.quantiles(qs), want);
    }

    /// Merging the sketches of two halves equals sketching the whole.
    #[test]
    fn merge_equals_the_sketch_of_the_union(
        a in prop::collection::vec(-1e4f64..1e4, 1..300),
        b in prop::collection::vec(-1e4f64..1e4, 1..300),
    ) {
        let (mut sa, mut sb, mut all) = (Sketch::default(), Sketch::default(), Sketch::default());
        a.iter().for_each(|&x| { sa.add(x); all.add(x); });
        b.iter().for_each(|&x| { sb.add(x); all.add(x); });
        sa.merge(&sb);
        for q in [0.01, 0.5, 0.95, 0.99] {
            prop_assert_eq!(sa.quantile(q), all.quantile(q));
        }
    }
}

/// The negative store moved out of line (allocated on first use) must not change a checkpoint:
/// never used, used, and used then cleared, a sketch encodes as it did with the store inline,
/// and decodes to an equal sketch that encodes to the same bytes.
#[test]
fn the_out_of_line_negatives_encode_as_the_inline_store_did() {
    fn check(s: &Sketch) {
        let inline = (&s.pos, s.neg.store().cloned().unwrap_or_default(), s.zero);
        let bytes = postcard::to_stdvec(s).unwrap();
        assert_eq!(bytes, postcard::to_stdvec(&inline).unwrap());
        let back: Sketch = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(&back, s);
        assert_eq!(postcard::to_stdvec(&back).unwrap(), bytes);
    }
    let mut s = Sketch::default();
    assert!(
        s.neg.store().is_none(),
        "a sketch allocates no negative store until it needs one"
    );
    check(&s);
    for x in [-3.0, 2.0, -0.5, 7.0, 0.0] {
        s.add(x);
    }
    let lowest = s.quantile(0.0).unwrap();
    assert!(
        (lowest + 3.0).abs() <= 3.0 * ALPHA,
        "lowest {lowest}, expected -3 within 2 %"
    );
    check(&s);
    let mut copy = Sketch::default();
    copy.copy_from(&s);
    assert_eq!(copy, s);
    let mut merged = Sketch::default();
    merged.merge(&s);
    assert_eq!(merged.count(), 5);
    s.clear();
    check(&s);
    copy.copy_from(&Sketch::default());
    assert_eq!(copy.count(), 0);
    check(&copy);
}

/// What a store must hold after `adds`, by its definition: the top `MAX_BINS` indices seen,
/// everything below folded into the lowest kept one. (offset, counts)
fn by_definition(adds: &[(i32, u32)]) -> (i32, Vec<u32>) {
    let top = adds.iter().map(|a| a.0).max().unwrap();
    let lowest = top - (MAX_BINS as i32 - 1);
    let offset = adds.iter().map(|a| a.0).min().unwrap().max(lowest);
    let mut counts = vec![0; (top - offset + 1) as usize];
    for &(i, n) in adds {
        counts[(i.max(offset) - offset) as usize] += n;
    }
    (offset, counts)
}

proptest::proptest! {
    /// One-byte counters inline, four-byte ones on the heap, and the change from one to the
    /// other (a count past 255, a range past the inline bins, a fold past `MAX_BINS`): the same
    /// counts, and the same encoding, as four-byte counters throughout.
    #[test]
    fn narrow_and_wide_counters_hold_the_same_counts(
        adds in proptest::collection::vec((-100i32..100, 1u32..300), 1..400),
        spread in 1i32..4,
    ) {
        // Mostly small counts (which add up past 255), a few past 255 at once (as a merge adds).
        let adds: Vec<(i32, u32)> = adds
            .iter()
            .map(|&(i, n)| (i * spread, if (41..=290).contains(&n) { 1 } else { n }))
            .collect();
        let mut s = Store::default();
        for &(i, n) in &adds {
            s.add(i, n);
        }
        let (offset, counts) = by_definition(&adds);
        proptest::prop_assert_eq!(s.offset, offset);
        proptest::prop_assert_eq!(s.bins.counts().collect::<Vec<_>>(), counts.clone());
        let wide = postcard::to_allocvec(&(offset, &counts)).unwrap();
        proptest::prop_assert_eq!(postcard::to_allocvec(&s).unwrap(), wide.clone());
        let back: Store = postcard::from_bytes(&wide).unwrap();
        proptest::prop_assert_eq!(&back, &s);
        let mut copy = Store::default();
        copy.copy_from(&s);
        proptest::prop_assert_eq!(&copy, &s);
    }
}

proptest::proptest! {
    /// A merge holds exactly what adding the other store's counts one by one would: the same
    /// range, the same counts (folds, growth either side, and narrow and wide counters alike).
    #[test]
    fn a_merge_holds_the_counts_of_both_stores(
        a in proptest::collection::vec((-150i32..150, 1u32..300), 0..200),
        b in proptest::collection::vec((-150i32..150, 1u32..300), 0..200),
        width in proptest::sample::select(vec![4, 20, 60, 300]),
        shift in -100i32..100,
        big in proptest::bool::ANY,
    ) {
        // Ranges narrow enough for one-byte counters (4: sums past 255 only in the merge),
        // wider, and past `MAX_BINS` (folds); with `big`, a few counts past 255 at once.
        let scale = |v: &[(i32, u32)]| -> Vec<(i32, u32)> {
            v.iter()
                .map(|&(i, n)| (i.rem_euclid(width) + shift, match n {
                    0..=40 => n,
                    291.. if big => n,
                    _ => 1,
                }))
                .collect()
        };
        let (a, b) = (scale(&a), scale(&b));
        let (mut sa, mut sb) = (Store::default(), Store::default());
        a.iter().for_each(|&(i, n)| sa.add(i, n));
        b.iter().for_each(|&(i, n)| sb.add(i, n));
        sa.merge(&sb);
        let both: Vec<(i32, u32)> = a.iter().chain(&b).copied().collect();
        if both.is_empty() {
            proptest::prop_assert!(sa.bins.is_empty());
        } else {
            let (offset, counts) = by_definition(&both);
            proptest::prop_assert_eq!(sa.offset, offset);
            proptest::prop_assert_eq!(sa.bins.counts().collect::<Vec<_>>(), counts);
        }
    }
}

#[test]
fn a_pane_of_a_wide_ranging_metric_keeps_one_byte_counters_inline() {
    let mut s = Sketch::default();
    // ±50 % around 0.06: some 40 bins.
    for k in 0..60 {
        s.add(0.03 + 0.06 * (k as f64 / 60.0));
    }
    assert!(s.pos.bins.len() > 30, "{}", s.pos.bins.len());
    assert!(matches!(s.pos.bins, crate::engine::bins::Bins::Narrow { .. }));
    // 256 values in one bin do not fit a byte: the counters widen, the counts stay.
    for _ in 0..256 {
        s.add(0.05);
    }
    assert!(matches!(s.pos.bins, crate::engine::bins::Bins::Wide(_)));
    assert_eq!(s.count(), 316);
    s.clear();
    assert!(matches!(
        s.pos.bins,
        crate::engine::bins::Bins::Narrow { len: 0, .. }
    ));
}
