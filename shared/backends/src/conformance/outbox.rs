//! [`Outbox`] conformance: dedup, due ordering, retries, delivery and dead letters; screening a
//! batch and recording deliveries sent before they were queued; one alert's events in order.

use super::{alert, event, unique, unique_device};
use iotstream_core::ports::{Outbox, PendingDelivery, Settled};
use iotstream_core::{AlertEvent, AlertEventKind, Ts};
use std::collections::HashSet;
use std::sync::Arc;

/// Outbox checks use times in 1970 so that rows of other suites (2025) are never due.
pub const T0: i64 = 1_000_000;

/// Runs every outbox check on fresh event ids.
pub async fn run(outbox: Arc<dyn Outbox>) {
    lifecycle(&*outbox).await;
    recording(&*outbox).await;
}

fn ours<'a>(due: &'a [PendingDelivery], events: &[&AlertEvent]) -> Vec<&'a PendingDelivery> {
    due.iter()
        .filter(|p| events.iter().any(|e| e.id == p.id))
        .collect()
}

pub async fn lifecycle(outbox: &dyn Outbox) {
    use AlertEventKind::*;
    let d = unique_device("conf-outbox");
    let base = unique("alert");
    // Ids chosen so that id order differs from enqueue order.
    let ev = |n: &str, kind| event(kind, &alert(&format!("{base}-{n}"), &d, T0, 85.0), T0, 85.0);
    let (e1, e2, e3, e4) = (
        ev("d", Opened),
        ev("b", Opened),
        ev("c", Resolved),
        ev("a", Opened),
    );
    assert_eq!(e3.id, format!("{base}-c:resolved"));
    assert_eq!(outbox.enqueue(&[], Ts(T0)).await.expect("enqueue nothing"), 0);
    assert_eq!(
        outbox
            .enqueue(&[e1.clone(), e2.clone(), e3.clone()], Ts(T0))
            .await
            .expect("enqueue"),
        3
    );
    assert_eq!(
        outbox
            .enqueue(&[e1.clone(), e4.clone(), e4.clone()], Ts(T0 + 10))
            .await
            .expect("enqueue"),
        1,
        "known ids (and in-batch repeats) are ignored"
    );
    let all = [&e1, &e2, &e3, &e4];
    assert!(
        ours(&outbox.due(Ts(T0 - 1), 100_000).await.expect("due"), &all).is_empty(),
        "nothing due yet"
    );
    let due = outbox.due(Ts(T0 + 10), 100_000).await.expect("due");
    let due_ids: Vec<&str> = ours(&due, &all).iter().map(|p| p.id.as_str()).collect();
    assert_eq!(
        due_ids,
        [&e1.id, &e2.id, &e3.id, &e4.id],
        "by next_attempt_at, then the order they were queued in (so one alert's events keep their order)"
    );
    let p1 = ours(&due, &[&e1])[0];
    assert_eq!(
        (&p1.event, p1.attempts, p1.next_attempt_at),
        (&e1, 0, Ts(T0)),
        "queued as sent"
    );
    if let Some(first) = outbox.next_due().await.expect("next_due") {
        assert!(first <= Ts(T0), "next_due is at most our oldest pending");
    } else {
        panic!("next_due is None with pending deliveries");
    }
    let everything = outbox.due(Ts(i64::MAX), 100_000).await.expect("due");
    if everything.len() == ours(&everything, &all).len() {
        // Nothing else pending in this store: next_due is exact.
        assert_eq!(outbox.next_due().await.expect("next_due"), Some(Ts(T0)));
    }

    outbox
        .schedule_retry(&e2.id, 1, Ts(T0 + 5_000), "webhook responded 500")
        .await
        .expect("retry");
    let due = outbox.due(Ts(T0 + 4_999), 100_000).await.expect("due");
    let due_ids: Vec<&str> = ours(&due, &all).iter().map(|p| p.id.as_str()).collect();
    assert_eq!(
        due_ids,
        [&e1.id, &e3.id, &e4.id],
        "a retry is not due before its time"
    );
    let due = outbox.due(Ts(T0 + 5_000), 100_000).await.expect("due");
    let due_ids: Vec<&str> = ours(&due, &all).iter().map(|p| p.id.as_str()).collect();
    assert_eq!(due_ids, [&e1.id, &e3.id, &e4.id, &e2.id]);
    let p2 = ours(&due, &[&e2])[0];
    assert_eq!((p2.attempts, p2.next_attempt_at), (1, Ts(T0 + 5_000)));
    assert_eq!(
        outbox.due(Ts(T0 + 5_000), 1).await.expect("due").len(),
        1,
        "limit"
    );

    outbox
        .mark_delivered(std::slice::from_ref(&e1.id), Ts(T0 + 20))
        .await
        .expect("delivered");
    outbox
        .dead_letter(&e3.id, 5, "webhook responded 410 Gone", Ts(T0 + 30))
        .await
        .expect("dead");
    outbox
        .dead_letter(&e4.id, 2, "webhook responded 400 Bad Request", Ts(T0 + 40))
        .await
        .expect("dead");
    let due = outbox.due(Ts(T0 + 10_000), 100_000).await.expect("due");
    let due_ids: Vec<&str> = ours(&due, &all).iter().map(|p| p.id.as_str()).collect();
    assert_eq!(
        due_ids,
        [&e2.id],
        "delivered and dead deliveries are no longer due"
    );
    assert_eq!(
        outbox
            .enqueue(&[e1.clone(), e3.clone(), e4.clone()], Ts(T0 + 50))
            .await
            .expect("enqueue"),
        0,
        "delivered and dead ids are not queued again"
    );
    let dead: Vec<_> = outbox
        .dead_letters(100_000)
        .await
        .expect("dead letters")
        .into_iter()
        .filter(|x| x.id == e3.id || x.id == e4.id)
        .collect();
    assert_eq!(dead.len(), 2);
    assert_eq!(
        (
            dead[0].id.as_str(),
            dead[0].event.as_str(),
            dead[0].attempts,
            dead[0].last_error.as_str(),
            dead[0].dead_at
        ),
        (
            e4.id.as_str(),
            "alert.opened",
            2,
            "webhook responded 400 Bad Request",
            Ts(T0 + 40)
        ),
        "newest dead letter first"
    );
    assert_eq!(
        (
            dead[1].id.as_str(),
            dead[1].event.as_str(),
            dead[1].attempts,
            dead[1].last_error.as_str(),
            dead[1].dead_at
        ),
        (
            e3.id.as_str(),
            "alert.resolved",
            5,
            "webhook responded 410 Gone",
            Ts(T0 + 30)
        )
    );
    outbox
        .mark_delivered(std::slice::from_ref(&e2.id), Ts(T0 + 60))
        .await
        .expect("delivered");
    assert!(ours(&outbox.due(Ts(i64::MAX), 100_000).await.expect("due"), &all).is_empty());
}

fn ids_of<'a>(due: &'a [PendingDelivery], events: &[&AlertEvent]) -> Vec<&'a str> {
    ours(due, events).iter().map(|p| p.id.as_str()).collect()
}

/// `screen` and `record` (notify sends a batch before it queues it), and the order rule: a
/// new event of an alert with a pending delivery is due no earlier than that delivery.
pub async fn recording(outbox: &dyn Outbox) {
    use AlertEventKind::*;
    let d = unique_device("conf-outbox-rec");
    let base = unique("alert");
    let a = |n: &str| alert(&format!("{base}-{n}"), &d, T0, 85.0);
    let ev = |kind, n: &str| event(kind, &a(n), T0, 85.0);
    let (ok, retry, behind, dead, fresh) = (
        ev(Opened, "ok"),
        ev(Opened, "retry"),
        ev(Resolved, "retry"),
        ev(Opened, "dead"),
        ev(Opened, "fresh"),
    );
    let nothing = outbox
        .screen(&[ok.clone(), retry.clone(), fresh.clone()])
        .await
        .expect("screen");
    assert!(
        nothing.held.is_empty() && nothing.waiting.is_empty(),
        "{nothing:?}"
    );
    assert!(outbox.screen(&[]).await.expect("screen nothing").held.is_empty());

    let retry_at = Ts(T0 + 5_000);
    let settled = [
        (ok.clone(), Settled::Delivered),
        (
            retry.clone(),
            Settled::Pending {
                attempts: 1,
                at: retry_at,
                error: Some("webhook responded 503".into()),
            },
        ),
        (
            behind.clone(),
            Settled::Pending {
                attempts: 0,
                at: retry_at,
                error: None,
            },
        ),
        (
            dead.clone(),
            Settled::Dead {
                attempts: 1,
                error: "webhook responded 410 Gone".into(),
            },
        ),
        (ok.clone(), Settled::Delivered),
    ];
    assert_eq!(outbox.record(&[], Ts(T0)).await.expect("record nothing"), 0);
    assert_eq!(
        outbox.record(&settled, Ts(T0 + 10)).await.expect("record"),
        4,
        "an in-batch repeat is ignored"
    );
    assert_eq!(
        outbox.record(&settled[..2], Ts(T0 + 20)).await.expect("record"),
        0,
        "held ids are ignored"
    );
    assert_eq!(
        outbox
            .enqueue(&[ok.clone(), dead.clone()], Ts(T0 + 20))
            .await
            .expect("enqueue"),
        0,
        "recorded ids are not queued again"
    );

    let all = [&ok, &retry, &behind, &dead, &fresh];
    assert!(
        ids_of(&outbox.due(Ts(T0 + 4_999), 100_000).await.expect("due"), &all).is_empty(),
        "delivered and dead rows are never due, a retry not before its time"
    );
    let due = outbox.due(retry_at, 100_000).await.expect("due");
    assert_eq!(
        ids_of(&due, &all),
        [&retry.id, &behind.id],
        "in the order recorded"
    );
    let attempts: Vec<(u32, Ts)> = ours(&due, &all)
        .iter()
        .map(|p| (p.attempts, p.next_attempt_at))
        .collect();
    assert_eq!(attempts, [(1, retry_at), (0, retry_at)]);
    let letter = outbox
        .dead_letters(100_000)
        .await
        .expect("dead letters")
        .into_iter()
        .find(|x| x.id == dead.id)
        .expect("a recorded dead delivery is a dead letter");
    assert_eq!(
        (letter.attempts, letter.last_error.as_str(), letter.dead_at),
        (1, "webhook responded 410 Gone", Ts(T0 + 10))
    );

    let screened = outbox
        .screen(&[
            ok.clone(),
            retry.clone(),
            behind.clone(),
            dead.clone(),
            fresh.clone(),
        ])
        .await
        .expect("screen");
    let held: HashSet<String> = [&ok, &retry, &behind, &dead].map(|e| e.id.clone()).into();
    assert_eq!(screened.held, held, "held in any status; never seen is not held");
    assert_eq!(
        screened.waiting,
        HashSet::from([retry.alert.id.clone()]),
        "only alerts with a pending delivery wait"
    );

    // The order rule, for queued and for recorded events: both are due behind the retry.
    let (acked, updated) = (ev(Acknowledged, "retry"), ev(Updated, "retry"));
    assert_eq!(
        outbox
            .enqueue(std::slice::from_ref(&acked), Ts(T0 + 100))
            .await
            .expect("enqueue"),
        1
    );
    let due_now = Settled::Pending {
        attempts: 0,
        at: Ts(T0 + 200),
        error: None,
    };
    assert_eq!(
        outbox
            .record(&[(updated.clone(), due_now)], Ts(T0 + 200))
            .await
            .expect("record"),
        1
    );
    let all = [&retry, &behind, &acked, &updated];
    assert!(
        ids_of(&outbox.due(Ts(T0 + 4_999), 100_000).await.expect("due"), &all).is_empty(),
        "nothing of the alert is due before its earlier pending delivery"
    );
    let due = outbox.due(retry_at, 100_000).await.expect("due");
    assert_eq!(
        ids_of(&due, &all),
        [&retry.id, &behind.id, &acked.id, &updated.id],
        "one alert's events due in the order they came"
    );

    let ids: Vec<String> = all.iter().map(|e| e.id.clone()).collect();
    outbox
        .mark_delivered(&ids, Ts(T0 + 6_000))
        .await
        .expect("delivered");
    assert!(
        outbox
            .screen(std::slice::from_ref(&retry))
            .await
            .expect("screen")
            .waiting
            .is_empty(),
        "a delivered alert no longer waits"
    );
}
