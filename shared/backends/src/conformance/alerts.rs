//! Alert conformance of [`ResultsStore`]: idempotent transitions, listing, and `ack_alert`
//! queuing its notification in the [`Outbox`] atomically. Run by [`super::results::run`].

use super::results::T;
use super::{alert, event, unique, unique_device};
use iotstream_core::ports::{AckOutcome, Outbox, ResultsStore};
use iotstream_core::{AlertEvent, AlertEventKind, AlertState, Ts};

pub async fn alert_transitions_are_idempotent(results: &dyn ResultsStore) {
    use AlertEventKind::*;
    let d = unique_device("conf-alert");
    let a = alert(&unique("alert"), &d, T, 85.0);
    let opened = event(Opened, &a, T, 85.0);
    let acked = event(Acknowledged, &a, T + 1_000, 0.0);
    let resolved = event(Resolved, &a, T + 2_000, 70.0);
    results
        .apply_alert_events(std::slice::from_ref(&opened))
        .await
        .expect("open");
    assert_eq!(
        results.alert(&a.id).await.expect("alert"),
        Some(a.clone()),
        "opened alert stored as sent"
    );
    let mut replay = opened.clone();
    replay.alert.value = 99.0;
    results
        .apply_alert_events(&[replay, opened.clone()])
        .await
        .expect("redeliver");
    assert_eq!(
        results.alert(&a.id).await.expect("alert"),
        Some(a.clone()),
        "a redelivered open changes nothing"
    );
    results
        .apply_alert_events(std::slice::from_ref(&acked))
        .await
        .expect("ack");
    let mut want = a.clone();
    want.state = AlertState::Acknowledged;
    want.acknowledged_at = Some(Ts(T + 1_000));
    assert_eq!(results.alert(&a.id).await.expect("alert"), Some(want.clone()));
    results
        .apply_alert_events(std::slice::from_ref(&resolved))
        .await
        .expect("resolve");
    want.state = AlertState::Resolved;
    want.resolved_at = Some(Ts(T + 2_000));
    want.value = 70.0;
    assert_eq!(
        results.alert(&a.id).await.expect("alert"),
        Some(want.clone()),
        "resolve keeps acknowledged_at"
    );
    results
        .apply_alert_events(&[opened, acked, resolved])
        .await
        .expect("replay all");
    assert_eq!(
        results.alert(&a.id).await.expect("alert"),
        Some(want),
        "a resolved alert never goes back"
    );

    // Resolved without ever seeing Opened, then a late Opened.
    let b = alert(&unique("alert"), &d, T, 90.0);
    let b_resolved = event(Resolved, &b, T + 5_000, 60.0);
    results
        .apply_alert_events(std::slice::from_ref(&b_resolved))
        .await
        .expect("resolve unseen");
    results
        .apply_alert_events(&[event(Opened, &b, T, 90.0)])
        .await
        .expect("late open");
    assert_eq!(
        results.alert(&b.id).await.expect("alert"),
        Some(b_resolved.alert),
        "inserted as resolved, stays so"
    );

    // Opened and Resolved in one batch; an ack of an unseen alert.
    let c = alert(&unique("alert"), &d, T, 91.0);
    let c_resolved = event(Resolved, &c, T + 3_000, 50.0);
    results
        .apply_alert_events(&[event(Opened, &c, T, 91.0), c_resolved.clone()])
        .await
        .expect("batch");
    assert_eq!(
        results.alert(&c.id).await.expect("alert").map(|x| x.state),
        Some(AlertState::Resolved)
    );
    assert_eq!(results.alert(&c.id).await.expect("alert"), Some(c_resolved.alert));
    let e = alert(&unique("alert"), &d, T, 92.0);
    let e_acked = event(Acknowledged, &e, T + 4_000, 0.0);
    results
        .apply_alert_events(std::slice::from_ref(&e_acked))
        .await
        .expect("ack unseen");
    results
        .apply_alert_events(&[event(Opened, &e, T, 92.0)])
        .await
        .expect("late open");
    assert_eq!(
        results.alert(&e.id).await.expect("alert"),
        Some(e_acked.alert),
        "an ack is not lost to a late open"
    );
    assert_eq!(results.alert(&unique("alert")).await.expect("alert"), None);
}

pub async fn alerts_list_newest_first_with_filters(results: &dyn ResultsStore) {
    use AlertEventKind::*;
    let d = unique_device("conf-alerts");
    let other = unique_device("conf-alerts-other");
    let base = unique("alert");
    let mk = |n: &str, at: i64| alert(&format!("{base}-{n}"), &d, at, 85.0);
    let (a1, a2, a3, a4) = (
        mk("a1", T + 1_000),
        mk("a2", T + 3_000),
        mk("a3", T + 2_000),
        mk("a4", T + 3_000),
    );
    let o = alert(&unique("alert"), &other, T + 9_000, 85.0);
    let events: Vec<AlertEvent> = [&a1, &a2, &a3, &a4, &o]
        .iter()
        .map(|a| event(Opened, a, 0, 0.0))
        .collect();
    results.apply_alert_events(&events).await.expect("open");
    results
        .apply_alert_events(&[event(Resolved, &a3, T + 5_000, 1.0)])
        .await
        .expect("resolve a3");
    let ids = |v: Vec<iotstream_core::Alert>| v.into_iter().map(|a| a.id).collect::<Vec<_>>();
    let (i1, i2, i3, i4) = (a1.id.as_str(), a2.id.as_str(), a3.id.as_str(), a4.id.as_str());
    assert_eq!(
        ids(results.alerts(None, Some(&d), 10).await.expect("alerts")),
        [i4, i2, i3, i1],
        "newest opened_at first, ties by id descending"
    );
    assert_eq!(
        ids(results.alerts(None, Some(&d), 2).await.expect("alerts")),
        [i4, i2],
        "limit"
    );
    assert_eq!(
        ids(results
            .alerts(Some(AlertState::Resolved), Some(&d), 10)
            .await
            .expect("alerts")),
        [i3]
    );
    assert_eq!(
        ids(results
            .alerts(Some(AlertState::Active), Some(&d), 10)
            .await
            .expect("alerts")),
        [i4, i2, i1]
    );
    assert_eq!(
        ids(results.alerts(None, Some(&other), 10).await.expect("alerts")),
        [o.id.as_str()]
    );
    let active = results
        .alerts(Some(AlertState::Active), None, 100_000)
        .await
        .expect("alerts");
    assert!(
        active.iter().all(|a| a.state == AlertState::Active),
        "state filter"
    );
    let ours: Vec<String> = active
        .into_iter()
        .filter(|a| a.device_id == d)
        .map(|a| a.id)
        .collect();
    assert_eq!(ours, [i4, i2, i1]);
}

pub async fn ack_queues_the_notification_atomically(results: &dyn ResultsStore, outbox: &dyn Outbox) {
    use AlertEventKind::*;
    let d = unique_device("conf-ack");
    assert_eq!(
        results.ack_alert(&unique("alert"), Ts(T)).await.expect("ack"),
        AckOutcome::NotFound
    );
    let a = alert(&unique("alert"), &d, T, 85.0);
    results
        .apply_alert_events(&[event(Opened, &a, T, 85.0)])
        .await
        .expect("open");
    let now = Ts(T + 5_000);
    let mut want = a.clone();
    want.state = AlertState::Acknowledged;
    want.acknowledged_at = Some(now);
    assert_eq!(
        results.ack_alert(&a.id, now).await.expect("ack"),
        AckOutcome::Acknowledged(want.clone())
    );
    assert_eq!(results.alert(&a.id).await.expect("alert"), Some(want.clone()));
    let queued: Vec<_> = outbox
        .due(now, 100_000)
        .await
        .expect("due")
        .into_iter()
        .filter(|p| p.event.alert.id == a.id)
        .collect();
    assert_eq!(queued.len(), 1, "exactly one notification queued: {queued:?}");
    let expected = AlertEvent::new(Acknowledged, want.clone());
    assert_eq!(queued[0].id, expected.id);
    assert_eq!(queued[0].event, expected);
    assert_eq!(queued[0].attempts, 0);
    assert!(queued[0].next_attempt_at <= now);
    assert_eq!(
        results.ack_alert(&a.id, Ts(T + 6_000)).await.expect("ack again"),
        AckOutcome::Unchanged(want.clone())
    );
    let queued_again = outbox.due(Ts(T + 6_000), 100_000).await.expect("due");
    assert_eq!(
        queued_again.iter().filter(|p| p.event.alert.id == a.id).count(),
        1,
        "no second notification"
    );
    let b = alert(&unique("alert"), &d, T, 85.0);
    let resolved = event(Resolved, &b, T + 1_000, 10.0);
    results
        .apply_alert_events(std::slice::from_ref(&resolved))
        .await
        .expect("resolve");
    assert_eq!(
        results.ack_alert(&b.id, now).await.expect("ack resolved"),
        AckOutcome::Unchanged(resolved.alert)
    );
    let acked = results
        .alerts(Some(AlertState::Acknowledged), Some(&d), 10)
        .await
        .expect("alerts");
    assert_eq!(acked, [want]);
}

/// `alert.updated` moves an open alert's peak further from the threshold, never back, and never
/// touches a resolved alert.
pub async fn updates_keep_the_most_extreme_peak_of_open_alerts(results: &dyn ResultsStore) {
    let d = unique_device("peak");
    let a = alert(&super::unique("peak-alert"), &d, 1_000, 85.0);
    let apply = |kind, value| event(kind, &a, 2_000, value);
    results
        .apply_alert_events(&[apply(AlertEventKind::Opened, 85.0)])
        .await
        .expect("open");
    results
        .apply_alert_events(&[
            apply(AlertEventKind::Updated, 90.0),
            apply(AlertEventKind::Updated, 88.0),
        ])
        .await
        .expect("update");
    let stored = results.alert(&a.id).await.expect("read").expect("stored");
    assert_eq!(
        (stored.peak, stored.value, stored.state),
        (Some(90.0), 85.0, AlertState::Active)
    );
    results
        .apply_alert_events(&[apply(AlertEventKind::Resolved, 70.0)])
        .await
        .expect("resolve");
    results
        .apply_alert_events(&[apply(AlertEventKind::Updated, 99.0)])
        .await
        .expect("late update");
    let stored = results.alert(&a.id).await.expect("read").expect("stored");
    assert_eq!(
        (stored.peak, stored.state),
        (Some(90.0), AlertState::Resolved),
        "a resolved alert stays as it was"
    );
}
