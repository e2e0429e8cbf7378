-- Stores forecasts, one per element of the arrays (device, at, rule, the forecast as JSON);
-- a key already stored, or repeated within the arrays, is ignored.
INSERT INTO forecasts (device_id, at, rule, body)
SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[])
ON CONFLICT DO NOTHING
