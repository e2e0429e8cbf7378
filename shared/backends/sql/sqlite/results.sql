-- Embedded results database (results.db): devices, aggregates, latest state, alerts, forecasts,
-- late readings, the notification outbox and checkpoints. Applied at every open; every statement
-- is idempotent.

-- Devices. A removed device keeps its row (removed = 1) so re-adding it bumps the generation.
CREATE TABLE IF NOT EXISTS devices (
    device_id  TEXT PRIMARY KEY,
    generation INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    removed    INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;

-- Window aggregates, upserted by (device, metric, window size, window start): tumbling
-- windows have hop_ms = window_ms, hopping ones a smaller hop. Series read the finest tumbling
-- kind. (Before windows had kinds, the table was `aggregates`, keyed without the size.)
DROP TABLE IF EXISTS aggregates;
CREATE TABLE IF NOT EXISTS window_aggregates (
    device_id    TEXT NOT NULL,
    metric       TEXT NOT NULL,
    window_ms    INTEGER NOT NULL,
    window_start INTEGER NOT NULL,
    hop_ms       INTEGER NOT NULL,
    count        INTEGER NOT NULL,
    min          REAL NOT NULL,
    max          REAL NOT NULL,
    sum          REAL NOT NULL,
    stddev       REAL NOT NULL,
    p50          REAL,
    p95          REAL,
    p99          REAL,
    PRIMARY KEY (device_id, metric, window_ms, window_start)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS window_aggregates_by_window ON window_aggregates (window_start);

-- Latest known state per device; metrics is a JSON object merged with json_patch.
CREATE TABLE IF NOT EXISTS latest (
    device_id TEXT PRIMARY KEY,
    last_seen INTEGER NOT NULL,
    metrics   TEXT NOT NULL
) WITHOUT ROWID;

-- Alerts: the full alert as JSON plus the columns we filter and sort on.
CREATE TABLE IF NOT EXISTS alerts (
    id        TEXT PRIMARY KEY,
    device_id TEXT NOT NULL,
    state     TEXT NOT NULL,
    opened_at INTEGER NOT NULL,
    body      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS alerts_by_opened ON alerts (opened_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS alerts_by_state ON alerts (state, opened_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS alerts_by_device ON alerts (device_id, opened_at DESC, id DESC);

-- Forecasts (a threshold rule's metric trending toward its threshold): the insight as JSON plus
-- the columns we filter and sort on, stored once per (device, forecast time, rule) so that a
-- redelivered or replayed forecast is ignored.
CREATE TABLE IF NOT EXISTS forecasts (
    device_id TEXT NOT NULL,
    at        INTEGER NOT NULL,
    rule      TEXT NOT NULL,
    body      TEXT NOT NULL,
    PRIMARY KEY (device_id, at, rule)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS forecasts_by_at ON forecasts (at, device_id, rule);

-- Late readings (too late to analyse; the reading itself stays in the telemetry store), stored
-- once per (device, reading id). `watermark`, the device's clock when it arrived, drives retention.
CREATE TABLE IF NOT EXISTS late_readings (
    device_id  TEXT NOT NULL,
    reading_id TEXT NOT NULL,
    ts         INTEGER NOT NULL,
    watermark  INTEGER NOT NULL,
    body       TEXT NOT NULL,
    PRIMARY KEY (device_id, reading_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS late_readings_by_device ON late_readings (device_id, ts, reading_id);
CREATE INDEX IF NOT EXISTS late_readings_by_ts ON late_readings (ts, device_id, reading_id);
CREATE INDEX IF NOT EXISTS late_readings_by_watermark ON late_readings (watermark);

-- Webhook outbox. Delivered and dead rows stay (status) so a re-enqueued id is ignored.
CREATE TABLE IF NOT EXISTS outbox (
    id              TEXT PRIMARY KEY,
    event           TEXT NOT NULL,      -- alert.opened / alert.resolved / alert.acknowledged
    body            TEXT NOT NULL,      -- the AlertEvent as JSON
    status          TEXT NOT NULL,      -- pending / delivered / dead
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    last_error      TEXT,
    created_at      INTEGER NOT NULL,
    finished_at     INTEGER             -- delivered_at or dead_at
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (status, next_attempt_at, id);
-- An alert's pending deliveries, by the alert id inside the event body (see Outbox::screen, and
-- the order rule of Outbox::enqueue and Outbox::record).
CREATE INDEX IF NOT EXISTS outbox_pending_alert ON outbox (json_extract(body, '$.alert.id'))
    WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS outbox_dead ON outbox (status, finished_at DESC, id);

-- Checkpoints of stateful consumers.
CREATE TABLE IF NOT EXISTS checkpoints (
    name      TEXT PRIMARY KEY,
    positions TEXT NOT NULL,           -- JSON array of {partition, next_offset}
    state     BLOB NOT NULL
) WITHOUT ROWID;
