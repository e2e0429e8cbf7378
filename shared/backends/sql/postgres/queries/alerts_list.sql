-- Alerts, newest first: of one state ($1) and one device ($2) when given (a NULL switches the
-- filter off, so one statement and one plan serve every case), at most $3.
SELECT body FROM alerts
WHERE ($1::text IS NULL OR state = $1) AND ($2::text IS NULL OR device_id = $2)
ORDER BY opened_at DESC, id DESC LIMIT $3
