-- The windows of a series: device ($1), metric ($2), window start in [$3, $4), read from the
-- finest tumbling window kind stored for that device and metric (so each reading counts once).
SELECT window_start, count, min, max, sum FROM window_aggregates
WHERE device_id = $1 AND metric = $2 AND window_start >= $3 AND window_start < $4
  AND window_ms = (SELECT MIN(window_ms) FROM window_aggregates
                   WHERE device_id = $1 AND metric = $2 AND hop_ms = window_ms)
ORDER BY window_start
