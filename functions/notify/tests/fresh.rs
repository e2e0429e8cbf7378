//! `send_fresh` + `Sent::record` on the embedded outbox: a batch from the `alerts` topic goes
//! out before it is queued, then is recorded with its outcomes; what a crash in between, a
//! failing endpoint and a failing database do.

mod common;

use common::{Flaky, NOW, Receiver, burst, deps, outbox_with};
use iotstream_backends::conformance::{alert, event};
use iotstream_core::ports::Outbox;
use iotstream_core::{AlertEvent, AlertEventKind, DeviceId, Ts};
use iotstream_notify::{Deps, Health, Report, RetryPolicy, Sent, deliver_due, send_fresh};
use std::collections::HashSet;

const LATER: Ts = Ts(NOW + 3_600_000);

fn no_jitter() -> f64 {
    0.0
}

/// One step of notify's consumer on the embedded outbox: sends `events`, then records them.
async fn send_and_record(deps: &Deps<'_>, events: &[AlertEvent], at: Ts, queue_only: bool) -> Sent {
    let sent = send_fresh(deps, events, at, queue_only, no_jitter).await.unwrap();
    sent.record(deps.outbox, at).await.unwrap();
    sent
}

#[tokio::test]
async fn a_batch_is_sent_before_it_is_queued_then_recorded_as_delivered() {
    let (_dir, outbox) = outbox_with(&[]).await;
    let receiver = Receiver::default();
    let events = burst(20);

    let sent = send_fresh(&deps(&outbox, &receiver), &events, Ts(NOW), false, no_jitter)
        .await
        .unwrap();

    assert_eq!(
        sent.report,
        Report {
            delivered: 21,
            ..Report::default()
        }
    );
    let got = receiver.got();
    assert_eq!(got.len(), 21);
    let pos = |id: &str| got.iter().position(|g| g == id).unwrap();
    assert!(
        pos("a0:opened") < pos("a0:resolved"),
        "one alert's events in order: {got:?}"
    );
    let before = outbox.screen(&events).await.unwrap();
    assert!(
        before.held.is_empty(),
        "nothing was written before the webhook got it"
    );

    sent.record(&outbox, Ts(NOW)).await.unwrap();
    assert!(!sent.leaves_pending());
    assert_eq!(outbox.screen(&events).await.unwrap().held.len(), 21);
    assert!(
        outbox.due(LATER, 1_000).await.unwrap().is_empty(),
        "recorded delivered"
    );
    // The same batch again (Kafka redelivers after a rebalance): nothing is sent twice.
    let again = send_fresh(&deps(&outbox, &receiver), &events, Ts(NOW + 1), false, no_jitter)
        .await
        .unwrap();
    assert_eq!(again.report, Report::default());
    deliver_due(&deps(&outbox, &receiver), LATER, no_jitter)
        .await
        .unwrap();
    assert_eq!(
        receiver.got().len(),
        21,
        "neither path re-sends a recorded delivery"
    );
}

#[tokio::test]
async fn repeats_within_a_batch_are_sent_once() {
    let (_dir, outbox) = outbox_with(&[]).await;
    let receiver = Receiver::default();
    let mut events = burst(3);
    events.extend(burst(3));

    let sent = send_fresh(&deps(&outbox, &receiver), &events, Ts(NOW), false, no_jitter)
        .await
        .unwrap();

    assert_eq!(sent.report.delivered, 4);
    let got = receiver.got();
    assert_eq!(got.iter().collect::<HashSet<_>>().len(), got.len(), "{got:?}");
}

#[tokio::test]
async fn a_crash_before_the_record_resends_the_batch_with_the_same_delivery_ids() {
    let (_dir, outbox) = outbox_with(&[]).await;
    let receiver = Receiver::default();
    let events = burst(5);

    // Sent, then the process dies: no record, no offset commit, so the batch comes again.
    drop(send_fresh(&deps(&outbox, &receiver), &events, Ts(NOW), false, no_jitter).await);
    let sent = send_fresh(&deps(&outbox, &receiver), &events, Ts(NOW + 1), false, no_jitter)
        .await
        .unwrap();
    sent.record(&outbox, Ts(NOW + 1)).await.unwrap();

    let got = receiver.got();
    assert_eq!(got.len(), 12, "at least once: each event twice, no more");
    let mut ids: Vec<&String> = got.iter().collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 6, "the same delivery ids both times");
    assert!(outbox.due(LATER, 1_000).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_failure_is_recorded_for_a_retry_and_its_alerts_later_events_wait_behind_it() {
    let (_dir, outbox) = outbox_with(&[]).await;
    let receiver = Receiver::failing(&["a0"]);
    let events = burst(4);

    let sent = send_and_record(&deps(&outbox, &receiver), &events, Ts(NOW), false).await;

    assert_eq!(
        sent.report,
        Report {
            delivered: 3,
            retried: 1,
            dead: 0,
            queued: 1
        },
        "a0:opened failed; a0:resolved waits for it"
    );
    assert!(sent.leaves_pending());
    assert!(
        outbox.due(Ts(NOW), 1_000).await.unwrap().is_empty(),
        "the retry is not due yet"
    );
    let due = outbox.due(LATER, 1_000).await.unwrap();
    let rows: Vec<(&str, u32)> = due.iter().map(|p| (p.id.as_str(), p.attempts)).collect();
    assert_eq!(rows, [("a0:opened", 1), ("a0:resolved", 0)]);

    // A later batch brings the alert's acknowledgement: it is not sent ahead of the retry.
    let device = DeviceId::parse("dev-0").unwrap();
    let acked = event(
        AlertEventKind::Acknowledged,
        &alert("a0", &device, NOW - 1_000, 90.0),
        NOW,
        90.0,
    );
    let next = send_and_record(
        &deps(&outbox, &receiver),
        std::slice::from_ref(&acked),
        Ts(NOW + 10),
        false,
    )
    .await;
    assert_eq!(
        next.report,
        Report {
            queued: 1,
            ..Report::default()
        }
    );
    assert_eq!(receiver.got().len(), 3, "nothing of a0 went out");

    receiver.recover();
    let report = deliver_due(&deps(&outbox, &receiver), LATER, no_jitter)
        .await
        .unwrap();
    assert_eq!(report.delivered, 3);
    assert_eq!(
        &receiver.got()[3..],
        ["a0:opened", "a0:resolved", "a0:acknowledged"],
        "in the order they came"
    );
}

#[tokio::test]
async fn a_first_failure_is_dead_when_the_policy_allows_one_attempt() {
    let (_dir, outbox) = outbox_with(&[]).await;
    let receiver = Receiver::failing(&["a1"]);
    let deps = Deps {
        policy: RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        },
        ..deps(&outbox, &receiver)
    };

    let sent = send_and_record(&deps, &burst(2), Ts(NOW), false).await;

    assert_eq!(
        sent.report,
        Report {
            delivered: 2,
            dead: 1,
            ..Report::default()
        }
    );
    let dead = outbox.dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!((dead[0].id.as_str(), dead[0].attempts), ("a1:opened", 1));
    assert!(dead[0].last_error.contains("503"), "{:?}", dead[0]);
}

#[tokio::test]
async fn while_the_endpoint_fails_batches_are_queued_without_a_try() {
    let (_dir, outbox) = outbox_with(&[]).await;
    let receiver = Receiver::failing(&["a0"]);
    let health = Health::default();
    let first = send_and_record(&deps(&outbox, &receiver), &burst(1), Ts(NOW), health.failing()).await;
    health.observe(&first.report);
    assert!(health.failing());

    let events = burst(6)[2..].to_vec();
    let sent = send_and_record(&deps(&outbox, &receiver), &events, Ts(NOW + 10), health.failing()).await;
    assert_eq!(
        sent.report,
        Report {
            queued: 5,
            ..Report::default()
        }
    );
    assert_eq!(receiver.got().len(), 0, "no try while failing");
    assert_eq!(
        outbox.due(Ts(NOW + 10), 1_000).await.unwrap().len(),
        5,
        "queued, due now"
    );

    receiver.recover();
    let report = deliver_due(&deps(&outbox, &receiver), LATER, no_jitter)
        .await
        .unwrap();
    health.observe(&report);
    assert_eq!(report.delivered, 7);
    assert!(!health.failing(), "a pass that delivers clears it");
}

#[tokio::test]
async fn a_failing_outbox_fails_the_step_and_a_retried_record_sends_nothing_again() {
    let (_dir, inner) = outbox_with(&[]).await;
    let outbox = Flaky::new(inner);
    let receiver = Receiver::default();
    let events = burst(3);

    outbox.fail_next("screen", 1);
    let err = send_fresh(&deps(&outbox, &receiver), &events, Ts(NOW), false, no_jitter)
        .await
        .expect_err("screening failed");
    assert!(err.to_string().contains("database is down"), "{err}");
    assert!(receiver.got().is_empty(), "nothing is sent unscreened");

    let sent = send_fresh(&deps(&outbox, &receiver), &events, Ts(NOW), false, no_jitter)
        .await
        .unwrap();
    outbox.fail_next("record", 2);
    assert!(sent.record(&outbox, Ts(NOW)).await.is_err());
    assert!(sent.record(&outbox, Ts(NOW)).await.is_err());
    sent.record(&outbox, Ts(NOW)).await.unwrap();
    assert_eq!(receiver.got().len(), 4, "the record was retried, the webhook not");
    assert_eq!(outbox.inner.screen(&events).await.unwrap().held.len(), 4);
}
