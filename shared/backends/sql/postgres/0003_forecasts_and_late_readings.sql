-- Forecasts and late readings, the insights besides aggregates and latest state: the tables of
-- sql/sqlite/results.sql in PostgreSQL types. Each row keeps the insight as JSON text (byte-exact,
-- like alerts) plus the columns we filter and sort on; rows are inserted once per key, so a
-- redelivered or replayed insight is ignored.

-- Forecasts, once per (device, forecast time, rule).
CREATE TABLE IF NOT EXISTS forecasts (
    device_id TEXT COLLATE "C" NOT NULL,
    at        BIGINT NOT NULL,
    rule      TEXT COLLATE "C" NOT NULL,
    body      TEXT NOT NULL,
    PRIMARY KEY (device_id, at, rule)
);
-- Listing across devices, and retention.
CREATE INDEX IF NOT EXISTS forecasts_by_at ON forecasts (at, device_id, rule);

-- Late readings, once per (device, reading id); `watermark` (the device's clock when the reading
-- arrived) drives retention, so a backlog of old readings is kept as long as anything recent.
CREATE TABLE IF NOT EXISTS late_readings (
    device_id  TEXT COLLATE "C" NOT NULL,
    reading_id TEXT COLLATE "C" NOT NULL,
    ts         BIGINT NOT NULL,
    watermark  BIGINT NOT NULL,
    body       TEXT NOT NULL,
    PRIMARY KEY (device_id, reading_id)
);
CREATE INDEX IF NOT EXISTS late_readings_by_device ON late_readings (device_id, ts, reading_id);
CREATE INDEX IF NOT EXISTS late_readings_by_ts ON late_readings (ts, device_id, reading_id);
CREATE INDEX IF NOT EXISTS late_readings_by_watermark ON late_readings (watermark);
