-- Every device's forecasts made (`at`) within [$1, $2), newest first, at most $3.
SELECT body FROM forecasts
WHERE at >= $1 AND at < $2
ORDER BY at DESC, device_id DESC, rule DESC LIMIT $3
