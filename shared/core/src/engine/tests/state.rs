//! Checkpoints, partitions, determinism and event-time ordering properties.

use super::*;

fn sample_input() -> Vec<Reading> {
    (0..400)
        .map(|i| {
            let v = if i % 90 < 5 { 90.0 } else { 60.0 + (i % 7) as f64 };
            at(
                if i % 2 == 0 { "pump-1" } else { "pump-2" },
                i * 5_000,
                &[("temperature", v), ("rpm", 1500.0 + i as f64)],
            )
        })
        .collect()
}

#[test]
fn a_restored_engine_continues_exactly() {
    let input = sample_input();
    let rules = || Rules::from_toml(&RULES.replace("builtin_detectors = false", "")).unwrap();
    let mut first = Engine::new(rules());
    let mut again = Engine::new(rules());
    run(&mut first, &input[..200]);
    run(&mut again, &input[..200]);
    let mut restored = Engine::restore(rules(), &first.snapshot()).unwrap();
    let (a, b) = (run(&mut restored, &input[200..]), run(&mut again, &input[200..]));
    assert_eq!(a.alerts, b.alerts);
    assert_eq!(a.insights.len(), b.insights.len());
    for (x, y) in a.insights.iter().zip(&b.insights) {
        assert_eq!(x, y);
    }
    assert_eq!(restored.finish(), again.finish());
    assert!(Engine::restore(Rules::defaults(), b"\x02not postcard").is_err());
    let err = Engine::restore(Rules::defaults(), b"{\"devices\":{}}")
        .err()
        .unwrap();
    assert!(err.contains("version"), "{err}");
}

/// What the next tick owes (partial windows and latest state of devices that changed since the
/// last one) survives a checkpoint: a device that went quiet just before its partition moved
/// still gets its last window published by the new owner.
#[test]
fn a_checkpoint_keeps_what_the_next_tick_owes() {
    let input = sample_input();
    let mut first = engine();
    run(&mut first, &input[..201]);
    let owed = first.snapshot();
    let mut restored = Engine::restore(Rules::from_toml(RULES).unwrap(), &owed).unwrap();
    let mut moved = engine();
    moved.absorb_at(&first.snapshot_where(&|_| true), NOW).unwrap();
    let due = first.tick(NOW);
    assert!(
        !aggregates(&due).is_empty() && due.insights.iter().any(|i| matches!(i, Insight::Latest(_))),
        "the tick owed partial windows and latest state: {due:?}"
    );
    assert_eq!(restored.tick(NOW), due);
    assert_eq!(moved.tick(NOW), due);
    // Once emitted, nothing is owed, before or after a checkpoint.
    let mut settled = Engine::restore(Rules::from_toml(RULES).unwrap(), &first.snapshot()).unwrap();
    assert!(first.tick(NOW).insights.is_empty());
    assert!(settled.tick(NOW).insights.is_empty());

    // A checkpoint written before the flags were kept (no trailer) owes every device's.
    let trailer = postcard::to_stdvec(&vec![(true, vec![true; 2]); first.devices()])
        .unwrap()
        .len();
    let older = &owed[..owed.len() - trailer];
    let mut old = Engine::restore(Rules::from_toml(RULES).unwrap(), older).unwrap();
    assert_eq!(old.tick(NOW), due);
    // A trailer that does not match the devices is refused, not guessed at.
    let mut bad = older.to_vec();
    bad.extend(postcard::to_stdvec(&vec![(true, vec![true; 2]); first.devices() + 1]).unwrap());
    let err = Engine::restore(Rules::from_toml(RULES).unwrap(), &bad)
        .err()
        .unwrap();
    assert!(err.contains("next tick owes"), "{err}");
    let mut garbage = older.to_vec();
    garbage.push(0xff);
    assert!(Engine::restore(Rules::from_toml(RULES).unwrap(), &garbage).is_err());
}

#[test]
fn partitions_of_the_state_move_between_instances_unchanged() {
    let input = sample_input();
    let mut whole = engine();
    run(&mut whole, &input[..200]);
    let is_one = |d: &DeviceId| d.as_str() == "pump-1";
    let mut a = engine();
    a.absorb(&whole.snapshot_where(&is_one)).unwrap();
    let mut b = engine();
    b.absorb(&whole.snapshot_where(&|d| !is_one(d))).unwrap();
    assert_eq!((a.devices(), b.devices()), (1, 1));
    let (ones, twos): (Vec<Reading>, Vec<Reading>) =
        input[200..].iter().cloned().partition(|r| is_one(&r.device_id));
    let mut split = run(&mut a, &ones).alerts;
    split.extend(run(&mut b, &twos).alerts);
    let mut all = run(&mut whole, &input[200..]).alerts;
    let key = |e: &AlertEvent| e.id.clone();
    split.sort_by_key(key);
    all.sort_by_key(key);
    assert_eq!(split, all);
    whole.release_where(&is_one);
    assert_eq!(whole.devices(), 1);
}

#[test]
fn state_is_tagged_with_the_partition_its_readings_come_from() {
    let input = sample_input();
    let (ones, twos): (Vec<Reading>, Vec<Reading>) = input
        .iter()
        .cloned()
        .partition(|r| r.device_id.as_str() == "pump-1");
    let mut e = engine();
    run(&mut e, &[]);
    e.process_in(&ones[..100], 3, NOW);
    e.process_in(&twos[..100], 5, NOW);
    let mut only3 = Engine::new(Rules::from_toml(RULES).unwrap());
    only3.absorb(&e.snapshot_partition(3)).unwrap();
    assert_eq!(only3.devices(), 1);
    let mut reference = engine();
    reference.process_in(&ones[..100], 3, NOW);
    assert_eq!(
        only3.process_in(&ones[100..], 3, NOW),
        reference.process_in(&ones[100..], 3, NOW)
    );
    e.release_partition(3);
    assert_eq!(e.devices(), 1);
    assert_eq!(
        Engine::new(Rules::defaults()).snapshot_partition(9).len(),
        e.snapshot_partition(9).len()
    );
}

proptest! {
    /// Replay is deterministic and batching does not matter: the same input through fresh
    /// engines gives identical output, byte for byte, however it is split.
    #[test]
    fn output_is_deterministic_across_batchings(values in prop::collection::vec(60.0f64..100.0, 1..120), cut in 0usize..120) {
        let input: Vec<Reading> = values.iter().enumerate().map(|(i, v)| reading("pump-1", i as i64 * 7, *v)).collect();
        let cut = cut.min(input.len());
        let mut a = engine();
        let mut all = run(&mut a, &input);
        all.insights.extend(a.finish().insights);
        let mut b = engine();
        let mut split = run(&mut b, &input[..cut]);
        let rest = run(&mut b, &input[cut..]);
        split.alerts.extend(rest.alerts);
        split.insights.extend(rest.insights);
        split.insights.extend(b.finish().insights);
        let bytes = |o: &Output| (serde_json::to_string(&o.alerts).unwrap(), serde_json::to_string(&o.insights).unwrap());
        prop_assert_eq!(bytes(&all), bytes(&split));
        prop_assert_eq!(a.snapshot(), b.snapshot());
    }

    /// Input shuffled within the allowed lateness gives the same aggregates and alerts as sorted
    /// input.
    #[test]
    fn input_shuffled_within_the_lateness_equals_sorted_input(
        values in prop::collection::vec(50.0f64..100.0, 5..150),
        jitter in prop::collection::vec(0i64..30_000, 150),
    ) {
        let toml = RULES.replace("builtin_detectors = false", "allowed_lateness = '30s'");
        let sorted: Vec<Reading> = values.iter().enumerate().map(|(i, v)| reading("pump-1", i as i64 * 4, *v)).collect();
        // Each reading is delayed by up to 30 s: arrival order sorts by ts + delay.
        let mut shuffled = sorted.clone();
        shuffled.sort_by_key(|r| r.ts.millis() + jitter[(r.ts.millis() / 4_000) as usize]);
        let collect = |input: &[Reading]| {
            let mut e = engine_with(&toml);
            let mut out = run(&mut e, input);
            let end = e.finish();
            out.alerts.extend(end.alerts);
            out.insights.extend(end.insights);
            let aggs = aggregates(&out);
            (out.alerts, aggs)
        };
        let (a1, g1) = collect(&sorted);
        let (a2, g2) = collect(&shuffled);
        prop_assert_eq!(a1, a2);
        prop_assert_eq!(g1, g2);
    }
}

/// Two ids whose hashes collide still get their own state (the index checks the id itself).
#[test]
fn devices_whose_index_hashes_collide_keep_separate_state() {
    let mut e = engine();
    run(&mut e, &[reading("pump-1", 0, 10.0)]);
    // Make `pump-2` look like a collision: point its hash at pump-1's slot in the index.
    let h2 = crate::engine::state::key_hash(b"pump-2");
    let i1 = e.state.index.values().copied().next().unwrap();
    e.state.index.insert(h2, i1);
    run(
        &mut e,
        &[
            reading("pump-2", 0, 20.0),
            reading("pump-1", 60, 11.0),
            reading("pump-2", 60, 21.0),
        ],
    );
    assert_eq!(e.devices(), 2);
    let out = e.finish();
    let mut latest: Vec<(String, f64)> = out
        .insights
        .iter()
        .filter_map(|i| match i {
            Insight::Latest(l) => Some((l.device_id.to_string(), l.metrics["temperature"])),
            _ => None,
        })
        .collect();
    latest.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        latest,
        vec![("pump-1".to_owned(), 11.0), ("pump-2".to_owned(), 21.0)]
    );
}
