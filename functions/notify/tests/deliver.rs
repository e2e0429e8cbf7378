//! `deliver_due` on the embedded outbox: bursts larger than one chunk, failures in the middle of
//! a burst, and an outbox that fails while a chunk is out.

mod common;

use common::{Flaky, NOW, Receiver, burst, deps, outbox_with};
use iotstream_core::Ts;
use iotstream_core::ports::{Outbox, PendingDelivery};
use iotstream_notify::{CONCURRENCY, deliver_due};
use std::collections::HashSet;

#[tokio::test]
async fn a_burst_of_several_chunks_is_delivered_and_marked_in_one_pass() {
    let n = CONCURRENCY * 3 + 5;
    let events = burst(n);
    let (_dir, outbox) = outbox_with(&events).await;
    let receiver = Receiver::default();

    let report = deliver_due(&deps(&outbox, &receiver), Ts(NOW), || 0.5)
        .await
        .unwrap();

    assert_eq!(report.delivered, n + 1, "{report:?}");
    assert_eq!((report.retried, report.dead), (0, 0));
    let got = receiver.got.lock().unwrap().clone();
    let unique: HashSet<&String> = got.iter().collect();
    assert_eq!(unique.len(), n + 1, "every event sent once");
    let opened = got.iter().position(|id| id == "a0:opened").unwrap();
    let resolved = got.iter().position(|id| id == "a0:resolved").unwrap();
    assert!(opened < resolved, "one alert's events in order: {got:?}");
    // Everything was marked delivered: nothing is due any more, and a second pass sends nothing.
    assert!(outbox.due(Ts(NOW + 3_600_000), 1_000).await.unwrap().is_empty());
    deliver_due(&deps(&outbox, &receiver), Ts(NOW + 1), || 0.5)
        .await
        .unwrap();
    assert_eq!(receiver.got.lock().unwrap().len(), n + 1, "nothing re-sent");
}

#[tokio::test]
async fn a_failing_receiver_in_a_later_chunk_is_retried_and_the_rest_are_delivered() {
    let n = CONCURRENCY * 2 + 1;
    let events = burst(n);
    let (_dir, outbox) = outbox_with(&events).await;
    let last = format!("a{}", n - 1);
    let receiver = Receiver::failing(&[&last, "a0"]);

    let report = deliver_due(&deps(&outbox, &receiver), Ts(NOW), || 0.0)
        .await
        .unwrap();

    assert_eq!(report.delivered, n - 2, "{report:?}");
    assert_eq!(report.retried, 2, "one per failing alert: {report:?}");
    // Due again later: the failed event and the event waiting behind it (a0's resolution).
    let due: Vec<PendingDelivery> = outbox.due(Ts(NOW + 3_600_000), 1_000).await.unwrap();
    let mut ids: Vec<&str> = due.iter().map(|p| p.id.as_str()).collect();
    ids.sort_unstable();
    let last_opened = format!("{last}:opened");
    assert_eq!(ids, ["a0:opened", "a0:resolved", last_opened.as_str()]);
    let attempts: Vec<u32> = due.iter().map(|p| p.attempts).collect();
    assert_eq!(attempts.iter().filter(|&&a| a == 1).count(), 2, "{due:?}");
}

#[tokio::test]
async fn when_marking_fails_the_pass_fails_and_the_unmarked_deliveries_are_sent_again() {
    let n = CONCURRENCY * 3;
    let (_dir, inner) = outbox_with(&burst(n)).await;
    let outbox = Flaky::new(inner);
    outbox.fail_next("mark_delivered", 1);
    let receiver = Receiver::default();

    let err = deliver_due(&deps(&outbox, &receiver), Ts(NOW), || 0.5)
        .await
        .expect_err("the failed write is reported");
    assert!(err.to_string().contains("database is down"), "{err}");
    // The first chunk was sent, the second went out while the first's write failed; nothing was
    // marked, so all of it is due again and the next pass re-sends it (same delivery ids).
    let sent_first = receiver.got.lock().unwrap().len();
    assert_eq!(
        sent_first,
        2 * CONCURRENCY + 1,
        "two chunks out (alert 0 has two events)"
    );
    assert_eq!(outbox.due(Ts(NOW), 1_000).await.unwrap().len(), n + 1);

    let report = deliver_due(&deps(&outbox, &receiver), Ts(NOW + 1), || 0.5)
        .await
        .unwrap();
    assert_eq!(report.delivered, n + 1, "{report:?}");
    assert!(outbox.due(Ts(NOW + 3_600_000), 1_000).await.unwrap().is_empty());
    let got = receiver.got.lock().unwrap().clone();
    let unique: HashSet<&String> = got.iter().collect();
    assert_eq!(unique.len(), n + 1);
    assert_eq!(
        got.len(),
        n + 1 + sent_first,
        "at-least-once: the unmarked ones twice, no more"
    );
}
