-- PostgreSQL results database: the tables of sql/sqlite/results.sql with PostgreSQL types.
-- Applied once by the migration runner (src/postgres/migrate.rs), recorded in iotstream_migrations.
-- Times are epoch milliseconds (BIGINT) like the embedded engine, so both share the queries' shape.
-- Keys sort bytewise (COLLATE "C"), like SQLite, so listings come out in the same order.

-- Devices. A removed device keeps its row (removed) so re-adding it bumps the generation.
CREATE TABLE IF NOT EXISTS devices (
    device_id  TEXT COLLATE "C" PRIMARY KEY,
    generation INTEGER NOT NULL,
    created_at BIGINT NOT NULL,
    removed    BOOLEAN NOT NULL DEFAULT FALSE
);

-- Window aggregates, upserted by (device, metric, window start). New statistics (stddev,
-- percentiles, window kind) come as new nullable columns in a later migration.
CREATE TABLE IF NOT EXISTS aggregates (
    device_id    TEXT COLLATE "C" NOT NULL,
    metric       TEXT COLLATE "C" NOT NULL,
    window_start BIGINT NOT NULL,
    window_ms    BIGINT NOT NULL,
    count        BIGINT NOT NULL,
    min          DOUBLE PRECISION NOT NULL,
    max          DOUBLE PRECISION NOT NULL,
    sum          DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (device_id, metric, window_start)
);
-- Retention deletes by window start.
CREATE INDEX IF NOT EXISTS aggregates_by_window ON aggregates (window_start);

-- Latest known state per device; metrics is a JSON object as text (jsonb would turn values
-- into numerics, which do not round-trip every float), merged by the writer under a lock.
CREATE TABLE IF NOT EXISTS latest (
    device_id TEXT COLLATE "C" PRIMARY KEY,
    last_seen BIGINT NOT NULL,
    metrics   TEXT NOT NULL
);

-- Alerts: the full alert as JSON text (kept byte-exact) plus the columns we filter and sort on.
CREATE TABLE IF NOT EXISTS alerts (
    id        TEXT COLLATE "C" PRIMARY KEY,
    device_id TEXT COLLATE "C" NOT NULL,
    state     TEXT NOT NULL,
    opened_at BIGINT NOT NULL,
    body      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS alerts_by_opened ON alerts (opened_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS alerts_by_state ON alerts (state, opened_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS alerts_by_device ON alerts (device_id, opened_at DESC, id DESC);

-- Webhook outbox. Delivered and dead rows stay (status) so a re-enqueued id is ignored; seq
-- keeps the order events were queued in (the embedded engine's rowid).
CREATE TABLE IF NOT EXISTS outbox (
    id              TEXT COLLATE "C" PRIMARY KEY,
    seq             BIGINT GENERATED ALWAYS AS IDENTITY,
    event           TEXT NOT NULL,
    body            TEXT NOT NULL,
    status          TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    last_error      TEXT,
    created_at      BIGINT NOT NULL,
    finished_at     BIGINT
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (next_attempt_at, seq) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS outbox_dead ON outbox (finished_at DESC, id) WHERE status = 'dead';
CREATE INDEX IF NOT EXISTS outbox_finished ON outbox (finished_at) WHERE status <> 'pending';

-- Checkpoints of stateful consumers.
CREATE TABLE IF NOT EXISTS checkpoints (
    name      TEXT COLLATE "C" PRIMARY KEY,
    positions TEXT NOT NULL,
    state     BYTEA NOT NULL
);
