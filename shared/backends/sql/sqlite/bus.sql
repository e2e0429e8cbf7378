-- Embedded event bus (bus.db). Applied at every open; every statement is idempotent.

-- One row per topic; the partition count is fixed when the topic is created (like Kafka).
CREATE TABLE IF NOT EXISTS topics (
    name       TEXT PRIMARY KEY,
    partitions INTEGER NOT NULL
) WITHOUT ROWID;

-- High watermark per partition: the offset the next record will get. Kept here (not derived
-- from MAX(offset)) so that trimming the log never makes offsets restart.
CREATE TABLE IF NOT EXISTS partitions (
    topic       TEXT NOT NULL,
    partition   INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    PRIMARY KEY (topic, partition)
) WITHOUT ROWID;

-- The log: dense offsets per (topic, partition), starting at 0.
CREATE TABLE IF NOT EXISTS messages (
    topic     TEXT NOT NULL,
    partition INTEGER NOT NULL,
    offset    INTEGER NOT NULL,
    key       TEXT NOT NULL,
    value     BLOB NOT NULL,
    PRIMARY KEY (topic, partition, offset)
) WITHOUT ROWID;

-- Committed offsets per consumer group: the offset of the next record to read.
CREATE TABLE IF NOT EXISTS offsets (
    grp         TEXT NOT NULL,
    topic       TEXT NOT NULL,
    partition   INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    PRIMARY KEY (grp, topic, partition)
) WITHOUT ROWID;
