//! The merge and transition rules every engine must implement identically, as plain functions.
//! Engines that cannot express a rule in their query language (or the in-process cache) call
//! these; the conformance suites check that every engine behaves exactly like them.

use iotstream_core::ports::{Screened, SeriesPoint, Settled};
use iotstream_core::{Alert, AlertEvent, AlertEventKind, AlertState, LatestState, Ts};

/// The outbox row of a recorded delivery: (status, attempts, next attempt at, last error).
/// Rows that are not pending take `now` as their next attempt (unused) and finish at `now`.
pub fn outbox_row(settled: &Settled, now: Ts) -> (&'static str, u32, Ts, Option<&str>) {
    match settled {
        Settled::Delivered => ("delivered", 0, now, None),
        Settled::Pending { attempts, at, error } => ("pending", *attempts, *at, error.as_deref()),
        Settled::Dead { attempts, error } => ("dead", *attempts, now, Some(error.as_str())),
    }
}

/// [`Screened`] from the rows of a screening query: `("held", event id)` and
/// `("waiting", alert id)`.
pub fn screened(rows: Vec<(String, String)>) -> Screened {
    let mut screened = Screened::default();
    for (what, id) in rows {
        match what.as_str() {
            "held" => screened.held.insert(id),
            _ => screened.waiting.insert(id),
        };
    }
    screened
}

/// Merges `incoming` into the `stored` latest state of the same device: the result has the
/// newer `last_seen` (ties go to `incoming`), and the union of both metric maps where the
/// newer state's value wins for a metric both have.
pub fn merge_latest(stored: Option<&LatestState>, incoming: &LatestState) -> LatestState {
    let Some(stored) = stored else {
        return incoming.clone();
    };
    let (older, newer) = if incoming.last_seen >= stored.last_seen {
        (stored, incoming)
    } else {
        (incoming, stored)
    };
    let mut metrics = older.metrics.clone();
    metrics.extend(newer.metrics.iter().map(|(k, v)| (k.clone(), *v)));
    LatestState {
        device_id: newer.device_id.clone(),
        last_seen: newer.last_seen,
        metrics,
    }
}

/// Applies one alert transition to the stored alert with the event's id. Returns the alert to
/// store when something changes, `None` when the event changes nothing (replay, redelivery,
/// or a transition that no longer applies). The rules:
///
/// * `Opened`: inserts the alert as `active` when absent; otherwise nothing.
/// * `Resolved`: sets `resolved`, `resolved_at` and `value` (keeping `acknowledged_at`); when
///   absent, inserts the alert as resolved. A resolved alert never changes again, so a
///   redelivered `Opened` or `Acknowledged` cannot bring it back.
/// * `Acknowledged`: sets `acknowledged` and `acknowledged_at` only when the alert is `active`;
///   when absent, inserts it as acknowledged (so a later `Opened` cannot lose the ack).
/// * `Updated`: moves an open alert's `peak` further from the threshold; nothing otherwise.
pub fn apply_alert_event(stored: Option<&Alert>, event: &AlertEvent) -> Option<Alert> {
    let incoming = &event.alert;
    match (event.event, stored) {
        (AlertEventKind::Opened, None) => Some(Alert {
            state: AlertState::Active,
            ..incoming.clone()
        }),
        (AlertEventKind::Opened, Some(_)) => None,
        (AlertEventKind::Resolved, None) => Some(Alert {
            state: AlertState::Resolved,
            ..incoming.clone()
        }),
        (AlertEventKind::Resolved, Some(s)) if s.state != AlertState::Resolved => Some(Alert {
            state: AlertState::Resolved,
            resolved_at: incoming.resolved_at.or(s.resolved_at),
            value: incoming.value,
            ..s.clone()
        }),
        (AlertEventKind::Resolved, Some(_)) => None,
        (AlertEventKind::Acknowledged, None) => Some(Alert {
            state: AlertState::Acknowledged,
            ..incoming.clone()
        }),
        (AlertEventKind::Acknowledged, Some(s)) if s.state == AlertState::Active => Some(Alert {
            state: AlertState::Acknowledged,
            acknowledged_at: incoming.acknowledged_at.or(s.acknowledged_at),
            ..s.clone()
        }),
        (AlertEventKind::Acknowledged, Some(_)) => None,
        // Keeps the most extreme peak of an open alert; replays change nothing.
        (AlertEventKind::Updated, Some(s)) if s.state != AlertState::Resolved => {
            let more_extreme = |new: f64, old: f64| {
                if s.value >= s.threshold {
                    new > old
                } else {
                    new < old
                }
            };
            match (incoming.peak, s.peak) {
                (Some(new), Some(old)) if !more_extreme(new, old) => None,
                (Some(new), _) => Some(Alert {
                    peak: Some(new),
                    ..s.clone()
                }),
                (None, _) => None,
            }
        }
        (AlertEventKind::Updated, _) => None,
    }
}

/// One stored aggregate as `series` needs it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AggregateRow {
    pub window_start: Ts,
    pub count: u64,
    pub min: f64,
    pub max: f64,
    pub sum: f64,
}

/// Applies `events` in order to the stored alerts in `current` (by id, updated in place);
/// returns the ids that changed, which is what an engine writes back.
pub fn apply_alert_events(
    current: &mut std::collections::HashMap<String, Alert>,
    events: &[AlertEvent],
) -> std::collections::BTreeSet<String> {
    let mut changed = std::collections::BTreeSet::new();
    for event in events {
        if let Some(next) = apply_alert_event(current.get(&event.alert.id), event) {
            changed.insert(next.id.clone());
            current.insert(next.id.clone(), next);
        }
    }
    changed
}

/// Re-buckets aggregates (sorted by `window_start`) into `floor(window_start / step) * step`
/// buckets: counts add up, min of mins, max of maxes, mean = total sum / total count (0 when
/// the count is 0). Oldest bucket first. `step_ms` must be positive.
pub fn rebucket(rows: impl IntoIterator<Item = AggregateRow>, step_ms: i64) -> Vec<SeriesPoint> {
    let mut out: Vec<(SeriesPoint, f64)> = Vec::new();
    for row in rows {
        let ts = row.window_start.floor(step_ms);
        match out.last_mut() {
            Some((point, sum)) if point.ts == ts => {
                point.count += row.count;
                point.min = point.min.min(row.min);
                point.max = point.max.max(row.max);
                *sum += row.sum;
            }
            _ => out.push((
                SeriesPoint {
                    ts,
                    count: row.count,
                    min: row.min,
                    max: row.max,
                    mean: 0.0,
                },
                row.sum,
            )),
        }
    }
    out.into_iter()
        .map(|(mut point, sum)| {
            point.mean = if point.count == 0 {
                0.0
            } else {
                sum / point.count as f64
            };
            point
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use iotstream_core::DeviceId;
    use std::collections::BTreeMap;

    fn state(last_seen: i64, metrics: &[(&str, f64)]) -> LatestState {
        LatestState {
            device_id: DeviceId::parse("d").unwrap(),
            last_seen: Ts(last_seen),
            metrics: metrics
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect::<BTreeMap<_, _>>(),
        }
    }

    #[test]
    fn newer_metrics_win_and_older_only_metrics_stay() {
        let old = state(10, &[("a", 1.0), ("b", 2.0)]);
        let new = state(20, &[("b", 3.0), ("c", 4.0)]);
        let want = state(20, &[("a", 1.0), ("b", 3.0), ("c", 4.0)]);
        assert_eq!(merge_latest(Some(&old), &new), want);
        assert_eq!(merge_latest(Some(&new), &old), want);
        assert_eq!(merge_latest(None, &old), old);
    }

    #[test]
    fn rebucket_combines_windows() {
        let row = |ws, count, min, max, sum| AggregateRow {
            window_start: Ts(ws),
            count,
            min,
            max,
            sum,
        };
        let points = rebucket(
            [
                row(0, 2, 1.0, 3.0, 4.0),
                row(60, 1, 0.5, 0.5, 0.5),
                row(120, 0, 0.0, 0.0, 0.0),
            ],
            120,
        );
        assert_eq!(points.len(), 2);
        assert_eq!((points[0].count, points[0].min, points[0].max), (3, 0.5, 3.0));
        assert_eq!(points[0].mean, 1.5);
        assert_eq!((points[1].ts, points[1].count, points[1].mean), (Ts(120), 0, 0.0));
    }
}
