//! `GET /api/stream` (CONTRACT §2.3): Server-Sent Events of live updates — `alert` (an alert
//! opened, changed or closed: the alert as `GET /api/alerts` shows it), `latest` (a device's
//! latest values changed), `forecast` (a new trend forecast).
//!
//! Where they come from: one poller per web process reads the results store once a second,
//! while anyone listens, and sends what changed to every listener. It reads the same store the
//! query API reads, so it works the same in one process (`up`) and across processes (`run web`
//! beside `run process`), on every engine, without a message channel of its own; the price is up
//! to a second of delay and one query round a second per web process (not per listener).
//!
//! Auth: the admin token, as `Authorization: Bearer` or, for browsers' `EventSource` (which
//! cannot set headers), as `?token=`; compared in constant time. `?deviceId=` keeps one device's
//! updates. A listener that falls behind by more than [`BACKLOG`] updates gets a `lagged` event
//! (with how many it missed) and carries on: it should re-read the state it shows.

use super::error::ApiError;
use crate::app::AppState;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use iotstream_core::{AlertState, DeviceId, PortError, Ts};
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::broadcast;

/// Updates a listener may fall behind by before it is told it lagged.
pub const BACKLOG: usize = 4_096;
/// How often the store is read while anyone listens.
const EVERY: Duration = Duration::from_secs(1);

/// One update: the SSE event name, its device, and its JSON.
#[derive(Debug, Clone)]
struct Update {
    event: &'static str,
    device: DeviceId,
    data: Arc<str>,
}

/// The web process's poller and its listeners.
pub struct Hub {
    tx: broadcast::Sender<Update>,
    polling: AtomicBool,
}

impl Default for Hub {
    fn default() -> Self {
        Hub {
            tx: broadcast::channel(BACKLOG).0,
            polling: AtomicBool::new(false),
        }
    }
}

impl Hub {
    /// A new listener; starts the poller if it is not running.
    fn listen(state: &Arc<AppState>) -> broadcast::Receiver<Update> {
        let hub = &state.live;
        let rx = hub.tx.subscribe();
        if !hub.polling.swap(true, Ordering::SeqCst) {
            tokio::spawn(poll(Arc::downgrade(state)));
        }
        rx
    }
}

/// What the last round saw: alert JSON by id, last seen by device, newest forecast time.
#[derive(Default)]
struct Seen {
    alerts: HashMap<String, Arc<str>>,
    latest: HashMap<DeviceId, Ts>,
    forecasts_through: Option<Ts>,
}

async fn poll(state: std::sync::Weak<AppState>) {
    let mut seen: Option<Seen> = None;
    loop {
        let Some(state) = state.upgrade() else { return };
        if state.live.tx.receiver_count() == 0 {
            state.live.polling.store(false, Ordering::SeqCst);
            // A listener that came in since the count was read starts its own poller.
            if state.live.tx.receiver_count() == 0 || state.live.polling.swap(true, Ordering::SeqCst) {
                return;
            }
        }
        match round(&state, seen.as_ref()).await {
            Ok((next, updates)) => {
                for u in updates {
                    let _ = state.live.tx.send(u);
                }
                seen = Some(next);
            }
            Err(e) => tracing::warn!(error = %e, "live updates: cannot read the results store; retrying"),
        }
        drop(state);
        tokio::time::sleep(EVERY).await;
    }
}

/// Reads the store and returns what changed since `before` (nothing on the first round: a
/// listener reads the current state from the query API, then follows the changes).
async fn round(state: &AppState, before: Option<&Seen>) -> Result<(Seen, Vec<Update>), PortError> {
    let results = state.results();
    let mut now = Seen::default();
    let mut updates = Vec::new();
    let open = super::query::open_alerts(results.as_ref(), None).await?;
    for a in open {
        let json: Arc<str> = serde_json::to_string(&a).unwrap_or_default().into();
        if before.is_some_and(|b| b.alerts.get(&a.id) != Some(&json)) {
            updates.push(update("alert", &a.device_id, json.clone()));
        }
        now.alerts.insert(a.id, json);
    }
    if let Some(b) = before
        && b.alerts.keys().any(|id| !now.alerts.contains_key(id))
    {
        // Closed since: the newest resolved alerts hold them.
        for a in results.alerts(Some(AlertState::Resolved), None, 1_000).await? {
            if b.alerts.contains_key(&a.id) {
                let json = serde_json::to_string(&a).unwrap_or_default().into();
                updates.push(update("alert", &a.device_id, json));
            }
        }
    }
    for l in results.all_latest().await? {
        if before.is_some_and(|b| b.latest.get(&l.device_id) != Some(&l.last_seen)) {
            let json = serde_json::to_string(&l).unwrap_or_default().into();
            updates.push(update("latest", &l.device_id, json));
        }
        now.latest.insert(l.device_id, l.last_seen);
    }
    let since = before.and_then(|b| b.forecasts_through);
    let from = since.map_or(Ts(0), |t| t.plus_millis(1));
    let mut forecasts = results.forecasts(None, from, Ts(i64::MAX / 2), 1_000).await?;
    forecasts.reverse(); // oldest first
    now.forecasts_through = forecasts.iter().map(|f| f.at).max().or(since);
    if before.is_some() {
        for f in forecasts {
            let json = serde_json::to_string(&f).unwrap_or_default().into();
            updates.push(update("forecast", &f.device_id, json));
        }
    }
    Ok((now, updates))
}

fn update(event: &'static str, device: &DeviceId, data: Arc<str>) -> Update {
    Update {
        event,
        device: device.clone(),
        data,
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamQuery {
    token: Option<String>,
    device_id: Option<String>,
}

pub async fn stream(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    q: Result<Query<StreamQuery>, QueryRejection>,
) -> Response {
    let Ok(Query(q)) = q else {
        return ApiError::bad_request("invalid_query", "invalid stream query").into_response();
    };
    // `?token=` because a browser's EventSource cannot send the header.
    let admitted = super::is_admin(&state, super::bearer(&headers).or(q.token.as_deref()));
    if !admitted {
        return ApiError::unauthorized().into_response();
    }
    let device = match q.device_id.as_deref().map(DeviceId::parse) {
        None => None,
        Some(Ok(d)) => Some(d),
        Some(Err(m)) => {
            return ApiError::bad_request("invalid_query", format!("deviceId {m}")).into_response();
        }
    };
    let rx = Hub::listen(&state);
    let events = futures::stream::unfold((rx, device), |(mut rx, device)| async move {
        loop {
            let event = match rx.recv().await {
                Ok(u) if device.as_ref().is_some_and(|d| *d != u.device) => continue,
                Ok(u) => Event::default().event(u.event).data(&*u.data),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    Event::default().event("lagged").data(n.to_string())
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            };
            return Some((Ok::<_, std::convert::Infallible>(event), (rx, device)));
        }
    });
    Sse::new(events).keep_alive(KeepAlive::default()).into_response()
}
