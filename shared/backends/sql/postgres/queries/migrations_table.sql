-- The record of applied migrations.
CREATE TABLE IF NOT EXISTS iotstream_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
)
