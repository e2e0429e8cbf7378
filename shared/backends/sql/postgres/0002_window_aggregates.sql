-- Windows have kinds (tumbling, hopping) and more statistics: aggregates are keyed by
-- (device, metric, window size, window start), like the embedded engine's `window_aggregates`.
-- The old table's rows are all 1-minute tumbling windows and move over as such.
CREATE TABLE IF NOT EXISTS window_aggregates (
    device_id    TEXT COLLATE "C" NOT NULL,
    metric       TEXT COLLATE "C" NOT NULL,
    window_ms    BIGINT NOT NULL,
    window_start BIGINT NOT NULL,
    hop_ms       BIGINT NOT NULL,
    count        BIGINT NOT NULL,
    min          DOUBLE PRECISION NOT NULL,
    max          DOUBLE PRECISION NOT NULL,
    sum          DOUBLE PRECISION NOT NULL,
    stddev       DOUBLE PRECISION NOT NULL,
    p50          DOUBLE PRECISION,
    p95          DOUBLE PRECISION,
    p99          DOUBLE PRECISION,
    PRIMARY KEY (device_id, metric, window_ms, window_start)
);
-- Retention deletes by window start.
CREATE INDEX IF NOT EXISTS window_aggregates_by_window ON window_aggregates (window_start);

INSERT INTO window_aggregates
    SELECT device_id, metric, window_ms, window_start, window_ms, count, min, max, sum, 0, NULL, NULL, NULL
    FROM aggregates
ON CONFLICT DO NOTHING;
DROP TABLE aggregates;
