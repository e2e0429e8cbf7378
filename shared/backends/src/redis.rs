//! `RedisCache`: the [`Cache`] on Redis (cargo feature `redis`).
//!
//! | key (prefix `iotstream:` by default)   | type   | what                                       | TTL |
//! |----------------------------------------|--------|--------------------------------------------|-----|
//! | `latest:<device>`                      | hash   | `@ts` = last seen (ms), one field per metric | `latest_ttl` (1 day) |
//! | `agg:<device>:<metric>:<window ms>`    | zset   | recent window aggregates of one window kind (JSON), score = window start | `aggregates_ttl` (1 h), last 120 windows |
//! | `forecasts:<device>`                   | zset   | recent forecasts (JSON), score = `at`     | `latest_ttl`, last 50 |
//! | `late:<device>`                        | zset   | recent late readings (JSON), score = `ts` | `latest_ttl`, last 50 |
//! | `alerts:active`                        | hash   | alert id → alert JSON, open alerts only    | none |
//! | `alerts:resolved:<id>`                 | string | tombstone: a replayed `opened` cannot resurrect a resolved alert | 1 day |
//! | channel `live`                         | pub/sub| one JSON message per write batch (`{"kind": ..., "devices": [...]}`) | |
//!
//! Every write is one Lua script call per batch (atomic, one round trip), so merge rules hold
//! under concurrent writers: `latest` follows [`crate::semantics::merge_latest`] exactly (newer
//! `last_seen` wins per metric, metrics union). Values are written as Rust's shortest exact
//! float text and never parsed by Lua, so they round-trip bit for bit. Forecasts and late
//! readings are members by their JSON: a redelivered one (the same bytes) is one member.
//!
//! **Degraded mode.** Redis is never the source of truth. The connection is lazy and reconnects
//! by itself (`ConnectionManager`); every call has a short timeout, and after a failure the cache
//! stays "open" (answers `Unavailable` at once, without waiting on a dead server) for
//! [`RETRY_AFTER`], then tries again. Failures are counted in `iotstream_cache_errors_total` by
//! callers and `iotstream_cache_up` reports the state.

use async_trait::async_trait;
use iotstream_core::ports::{Cache, PortResult};
use iotstream_core::{
    Aggregate, AlertEvent, AlertEventKind, DeviceId, Forecast, LateReading, LatestState, PortError, Ts,
};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Timeout of one Redis call.
pub const CALL_TIMEOUT: Duration = Duration::from_millis(500);
/// How long the cache skips Redis after a failure.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);
/// Recent windows kept per (device, metric).
pub const RECENT_WINDOWS: usize = 120;
/// Recent forecasts, and recent late readings, kept per device.
pub const RECENT_INSIGHTS: usize = 50;

const MERGE_LATEST: &str = r"
local ttl = tonumber(ARGV[1])
local i = 2
for k = 1, #KEYS do
  local ts = ARGV[i]
  local n = tonumber(ARGV[i + 1])
  local cur = redis.call('HGET', KEYS[k], '@ts')
  local newer = (cur == false) or (tonumber(ts) >= tonumber(cur))
  if newer then redis.call('HSET', KEYS[k], '@ts', ts) end
  for j = 0, n - 1 do
    local f, v = ARGV[i + 2 + 2 * j], ARGV[i + 3 + 2 * j]
    if newer then redis.call('HSET', KEYS[k], f, v) else redis.call('HSETNX', KEYS[k], f, v) end
  end
  if ttl > 0 then redis.call('PEXPIRE', KEYS[k], ttl) end
  i = i + 2 + 2 * n
end
return #KEYS
";

// Per window (KEYS: a sorted set per device, metric and window size; ARGV per window: start,
// count, body): the body replaces the cached emission of that window unless it has fewer
// readings (`Aggregate::supersedes`); the newest windows are kept.
const PUT_AGGREGATES: &str = r"
local ttl, keep = tonumber(ARGV[1]), tonumber(ARGV[2])
for k = 1, #KEYS do
  local score, count, body = ARGV[3 * k], tonumber(ARGV[1 + 3 * k]), ARGV[2 + 3 * k]
  local cached = redis.call('ZRANGEBYSCORE', KEYS[k], score, score)
  if #cached == 0 or count >= cjson.decode(cached[1]).count then
    redis.call('ZREMRANGEBYSCORE', KEYS[k], score, score)
    redis.call('ZADD', KEYS[k], score, body)
  end
  redis.call('ZREMRANGEBYRANK', KEYS[k], 0, -keep - 1)
  if ttl > 0 then redis.call('PEXPIRE', KEYS[k], ttl) end
end
return #KEYS
";

// Adds each body to its sorted set (the same body twice is one member), keeps the newest.
const PUT_RECENT: &str = r"
local ttl, keep = tonumber(ARGV[1]), tonumber(ARGV[2])
for k = 1, #KEYS do
  redis.call('ZADD', KEYS[k], ARGV[1 + 2 * k], ARGV[2 + 2 * k])
  redis.call('ZREMRANGEBYRANK', KEYS[k], 0, -keep - 1)
  if ttl > 0 then redis.call('PEXPIRE', KEYS[k], ttl) end
end
return #KEYS
";

// KEYS[1] = active hash; per event: ARGV kind, id, body; tombstones under KEYS[2] .. id.
const PUT_ALERTS: &str = r"
local n = 0
for i = 1, #ARGV, 3 do
  local kind, id, body = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local tomb = KEYS[2] .. id
  if kind == 'resolved' then
    redis.call('HDEL', KEYS[1], id)
    redis.call('SET', tomb, '1', 'EX', 86400)
  elseif redis.call('EXISTS', tomb) == 0 then
    redis.call('HSET', KEYS[1], id, body)
  end
  n = n + 1
end
return n
";

/// Redis settings.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    pub prefix: String,
    pub latest_ttl: Duration,
    pub aggregates_ttl: Duration,
}

impl Default for RedisSettings {
    fn default() -> Self {
        RedisSettings {
            prefix: "iotstream:".into(),
            latest_ttl: Duration::from_secs(24 * 3600),
            aggregates_ttl: Duration::from_secs(3600),
        }
    }
}

/// The Redis cache. Cheap to share behind an `Arc`.
pub struct RedisCache {
    conn: ConnectionManager,
    settings: RedisSettings,
    /// Set after a failure: until then, calls fail at once.
    open_until: Mutex<Option<Instant>>,
    scripts: [redis::Script; 4],
}

impl std::fmt::Debug for RedisCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCache")
            .field("prefix", &self.settings.prefix)
            .finish()
    }
}

impl RedisCache {
    /// A cache on `url` (`redis://[:password@]host:port[/db]`, `rediss://` for TLS). Does not
    /// connect yet: a Redis that is down at start only degrades the cache.
    pub fn new(url: &str, settings: RedisSettings) -> PortResult<Self> {
        // rustls is compiled with two crypto providers here (ring, and aws-lc-rs for other
        // crates), so it cannot choose one by itself and a rediss:// connection would panic:
        // name one for the process. Err means one is installed already, which is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = redis::Client::open(url)
            .map_err(|e| PortError::config(format!("cache URL is not a Redis URL: {}", e.category())))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CALL_TIMEOUT))
            .set_response_timeout(Some(CALL_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let conn = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| PortError::config(format!("cannot set up the Redis client: {}", e.category())))?;
        Ok(RedisCache {
            conn,
            settings,
            open_until: Mutex::new(None),
            scripts: [
                redis::Script::new(MERGE_LATEST),
                redis::Script::new(PUT_AGGREGATES),
                redis::Script::new(PUT_ALERTS),
                redis::Script::new(PUT_RECENT),
            ],
        })
    }

    fn key(&self, parts: &[&str]) -> String {
        let mut k = self.settings.prefix.clone();
        k.push_str(&parts.join(":"));
        k
    }

    /// Runs one call with the timeout and the failure switch.
    async fn call<T: redis::FromRedisValue>(&self, inv: redis::ScriptInvocation<'_>) -> PortResult<T> {
        self.guard()?;
        let mut conn = self.conn.clone();
        let out = tokio::time::timeout(CALL_TIMEOUT, inv.invoke_async(&mut conn)).await;
        self.settle(out)
    }

    async fn cmd<T: redis::FromRedisValue>(&self, cmd: redis::Cmd) -> PortResult<T> {
        self.guard()?;
        let mut conn = self.conn.clone();
        let out = tokio::time::timeout(CALL_TIMEOUT, cmd.query_async(&mut conn)).await;
        self.settle(out)
    }

    fn guard(&self) -> PortResult<()> {
        let open = self.open_until.lock().unwrap_or_else(|p| p.into_inner());
        match *open {
            Some(until) if Instant::now() < until => {
                Err(PortError::unavailable("redis is down (retrying shortly)"))
            }
            _ => Ok(()),
        }
    }

    fn settle<T>(&self, out: Result<redis::RedisResult<T>, tokio::time::error::Elapsed>) -> PortResult<T> {
        let result = match out {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(PortError::unavailable(format!(
                "redis error: {} ({})",
                e.category(),
                e.detail().unwrap_or("")
            ))),
            Err(_) => Err(PortError::new(
                iotstream_core::PortErrorKind::Timeout,
                "redis call timed out",
            )),
        };
        let mut open = self.open_until.lock().unwrap_or_else(|p| p.into_inner());
        match &result {
            Ok(_) => {
                if open.take().is_some() {
                    tracing::info!("redis is back: the cache is live again");
                }
                metrics::gauge!("iotstream_cache_up").set(1.0);
            }
            Err(e) => {
                if open.is_none() {
                    tracing::warn!(error = %e, "redis failed: the cache is degraded (the database serves reads)");
                }
                *open = Some(Instant::now() + RETRY_AFTER);
                metrics::gauge!("iotstream_cache_up").set(0.0);
            }
        }
        result
    }

    /// Live-update notice on the `live` channel.
    async fn publish(&self, kind: &str, devices: Vec<&str>) -> PortResult<()> {
        let msg = serde_json::json!({ "kind": kind, "devices": devices }).to_string();
        let mut cmd = redis::cmd("PUBLISH");
        cmd.arg(self.key(&["live"])).arg(msg);
        self.cmd::<i64>(cmd).await.map(|_| ())
    }

    /// The channel live updates are published on.
    pub fn live_channel(&self) -> String {
        self.key(&["live"])
    }

    /// Recent aggregates of one device, metric and window size, oldest first.
    pub async fn recent_aggregates(
        &self,
        device: &DeviceId,
        metric: &str,
        window_ms: i64,
    ) -> PortResult<Vec<Aggregate>> {
        let mut cmd = redis::cmd("ZRANGE");
        cmd.arg(self.key(&["agg", device.as_str(), metric, &window_ms.to_string()]))
            .arg(0)
            .arg(-1);
        let bodies: Vec<String> = self.cmd(cmd).await?;
        bodies
            .iter()
            .map(|b| {
                serde_json::from_str(b).map_err(|e| PortError::internal(format!("cached aggregate: {e}")))
            })
            .collect()
    }

    /// A device's recent forecasts, oldest first.
    pub async fn recent_forecasts(&self, device: &DeviceId) -> PortResult<Vec<Forecast>> {
        self.recent("forecasts", device).await
    }

    /// A device's recent late readings, oldest first.
    pub async fn recent_late_readings(&self, device: &DeviceId) -> PortResult<Vec<LateReading>> {
        self.recent("late", device).await
    }

    async fn recent<T: serde::de::DeserializeOwned>(
        &self,
        kind: &str,
        device: &DeviceId,
    ) -> PortResult<Vec<T>> {
        let mut cmd = redis::cmd("ZRANGE");
        cmd.arg(self.key(&[kind, device.as_str()])).arg(0).arg(-1);
        let bodies: Vec<String> = self.cmd(cmd).await?;
        bodies
            .iter()
            .map(|b| serde_json::from_str(b).map_err(|e| PortError::internal(format!("cached {kind}: {e}"))))
            .collect()
    }

    /// Adds (score, JSON) members to `<kind>:<device>` sorted sets, keeping the newest
    /// [`RECENT_INSIGHTS`], and announces the devices on the live channel.
    async fn put_recent<T: serde::Serialize>(
        &self,
        kind: &str,
        items: &[T],
        member: impl Fn(&T) -> (&DeviceId, i64),
    ) -> PortResult<()> {
        if items.is_empty() {
            return Ok(());
        }
        for chunk in items.chunks(256) {
            let mut inv = self.scripts[3].prepare_invoke();
            inv.arg(ms(self.settings.latest_ttl)).arg(RECENT_INSIGHTS);
            for item in chunk {
                let (device, score) = member(item);
                let body = serde_json::to_string(item)
                    .map_err(|e| PortError::invalid(format!("cannot encode {kind}: {e}")))?;
                inv.key(self.key(&[kind, device.as_str()]));
                inv.arg(score).arg(body);
            }
            self.call::<i64>(inv).await?;
        }
        let devices: Vec<&str> = items.iter().map(|i| member(i).0.as_str()).collect();
        self.publish(kind, devices).await
    }

    /// Open (active or acknowledged) alerts as cached, by id.
    pub async fn active_alerts(&self) -> PortResult<BTreeMap<String, iotstream_core::Alert>> {
        let mut cmd = redis::cmd("HGETALL");
        cmd.arg(self.key(&["alerts", "active"]));
        let map: BTreeMap<String, String> = self.cmd(cmd).await?;
        map.into_iter()
            .map(|(id, b)| {
                serde_json::from_str(&b)
                    .map(|a| (id, a))
                    .map_err(|e| PortError::internal(format!("cached alert: {e}")))
            })
            .collect()
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[async_trait]
impl Cache for RedisCache {
    async fn set_latest(&self, states: &[LatestState]) -> PortResult<()> {
        for chunk in states.chunks(256) {
            let mut inv = self.scripts[0].prepare_invoke();
            inv.arg(ms(self.settings.latest_ttl));
            for s in chunk {
                inv.key(self.key(&["latest", s.device_id.as_str()]));
                inv.arg(s.last_seen.millis()).arg(s.metrics.len());
                for (name, value) in &s.metrics {
                    inv.arg(name.as_str()).arg(value.to_string());
                }
            }
            self.call::<i64>(inv).await?;
        }
        let devices: Vec<&str> = states.iter().map(|s| s.device_id.as_str()).collect();
        self.publish("latest", devices).await
    }

    async fn get_latest(&self, device: &DeviceId) -> PortResult<Option<LatestState>> {
        let mut cmd = redis::cmd("HGETALL");
        cmd.arg(self.key(&["latest", device.as_str()]));
        let map: BTreeMap<String, String> = self.cmd(cmd).await?;
        let Some(ts) = map.get("@ts") else {
            return Ok(None);
        };
        let bad = |what: &str| PortError::internal(format!("cached latest state of {device}: bad {what}"));
        let last_seen = Ts(ts.parse().map_err(|_| bad("@ts"))?);
        let mut metrics = BTreeMap::new();
        for (k, v) in map.iter().filter(|(k, _)| !k.starts_with('@')) {
            metrics.insert(k.clone(), v.parse::<f64>().map_err(|_| bad(k))?);
        }
        Ok(Some(LatestState {
            device_id: device.clone(),
            last_seen,
            metrics,
        }))
    }

    async fn put_aggregates(&self, aggregates: &[Aggregate]) -> PortResult<()> {
        for chunk in aggregates.chunks(256) {
            let mut inv = self.scripts[1].prepare_invoke();
            inv.arg(ms(self.settings.aggregates_ttl)).arg(RECENT_WINDOWS);
            for a in chunk {
                let body = serde_json::to_string(a)
                    .map_err(|e| PortError::invalid(format!("cannot encode aggregate: {e}")))?;
                let size = a.window_ms.to_string();
                inv.key(self.key(&["agg", a.device_id.as_str(), &a.metric, &size]));
                inv.arg(a.window_start.millis()).arg(a.count).arg(body);
            }
            self.call::<i64>(inv).await?;
        }
        Ok(())
    }

    async fn put_alerts(&self, events: &[AlertEvent]) -> PortResult<()> {
        for chunk in events.chunks(256) {
            let mut inv = self.scripts[2].prepare_invoke();
            inv.key(self.key(&["alerts", "active"]));
            inv.key(self.key(&["alerts", "resolved", ""]));
            for e in chunk {
                let kind = if e.event == AlertEventKind::Resolved {
                    "resolved"
                } else {
                    "open"
                };
                let body = serde_json::to_string(&e.alert)
                    .map_err(|err| PortError::invalid(format!("cannot encode alert: {err}")))?;
                inv.arg(kind).arg(e.alert.id.as_str()).arg(body);
            }
            self.call::<i64>(inv).await?;
        }
        let devices: Vec<&str> = events.iter().map(|e| e.alert.device_id.as_str()).collect();
        self.publish("alerts", devices).await
    }

    async fn put_forecasts(&self, forecasts: &[Forecast]) -> PortResult<()> {
        self.put_recent("forecasts", forecasts, |f| (&f.device_id, f.at.millis()))
            .await
    }

    async fn put_late_readings(&self, late: &[LateReading]) -> PortResult<()> {
        self.put_recent("late", late, |l| (&l.device_id, l.ts.millis()))
            .await
    }
}
