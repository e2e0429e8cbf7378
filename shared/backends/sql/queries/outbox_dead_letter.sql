-- A pending delivery ($4) that ran out of retries: attempts ($1), last error ($2), when ($3).
UPDATE outbox SET status = 'dead', attempts = $1, last_error = $2, finished_at = $3
WHERE id = $4 AND status = 'pending'
