-- A device's ($1) forecasts made (`at`) within [$2, $3), newest first, at most $4.
SELECT body FROM forecasts
WHERE device_id = $1 AND at >= $2 AND at < $3
ORDER BY at DESC, rule DESC LIMIT $4
