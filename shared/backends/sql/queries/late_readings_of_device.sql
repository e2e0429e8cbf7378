-- A device's ($1) late readings with `ts` within [$2, $3), newest first, at most $4.
SELECT body FROM late_readings
WHERE device_id = $1 AND ts >= $2 AND ts < $3
ORDER BY ts DESC, reading_id DESC LIMIT $4
