-- Writes merged latest states, one row per element of the arrays: device, last seen, metrics
-- as JSON text.
INSERT INTO latest (device_id, last_seen, metrics)
SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[])
ON CONFLICT (device_id) DO UPDATE SET last_seen = excluded.last_seen, metrics = excluded.metrics
