-- Every device's late readings with `ts` within [$1, $2), newest first, at most $3.
SELECT body FROM late_readings
WHERE ts >= $1 AND ts < $2
ORDER BY ts DESC, device_id DESC, reading_id DESC LIMIT $3
