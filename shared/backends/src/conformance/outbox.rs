//! [`Outbox`] conformance: dedup, due ordering, retries, delivery and dead letters.

use super::{alert, event, unique, unique_device};
use iotstream_core::ports::{Outbox, PendingDelivery};
use iotstream_core::{AlertEvent, AlertEventKind, Ts};
use std::sync::Arc;

/// Outbox checks use times in 1970 so that rows of other suites (2025) are never due.
pub const T0: i64 = 1_000_000;

/// Runs every outbox check on fresh event ids.
pub async fn run(outbox: Arc<dyn Outbox>) {
    lifecycle(&*outbox).await;
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
