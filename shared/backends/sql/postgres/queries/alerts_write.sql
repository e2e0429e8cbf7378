-- Inserts or replaces alerts, one row per element of the arrays: id, device, state, opened at,
-- the alert as JSON.
INSERT INTO alerts (id, device_id, state, opened_at, body)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[])
ON CONFLICT (id) DO UPDATE SET device_id = excluded.device_id, state = excluded.state,
    opened_at = excluded.opened_at, body = excluded.body
