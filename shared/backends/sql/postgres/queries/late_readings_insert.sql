-- Stores late readings, one per element of the arrays (device, reading id, ts, watermark, the
-- late reading as JSON); a key already stored, or repeated within the arrays, is ignored.
INSERT INTO late_readings (device_id, reading_id, ts, watermark, body)
SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::text[])
ON CONFLICT DO NOTHING
