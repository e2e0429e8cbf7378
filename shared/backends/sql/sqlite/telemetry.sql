-- Embedded telemetry store (telemetry.db). Applied at every open; every statement is idempotent.

-- Raw readings, clustered by (device_id, ts) so that appends stay local and range reads are one
-- index scan; idempotent by (device_id, id) (the Cosmos DB item key) through the unique index.
CREATE TABLE IF NOT EXISTS readings (
    device_id  TEXT NOT NULL,
    ts         INTEGER NOT NULL,   -- epoch milliseconds, UTC
    id         TEXT NOT NULL,
    metrics    TEXT NOT NULL,      -- JSON object of metric name -> number
    message_id TEXT,
    PRIMARY KEY (device_id, ts, id)
) WITHOUT ROWID;

CREATE UNIQUE INDEX IF NOT EXISTS readings_by_id ON readings (device_id, id);
