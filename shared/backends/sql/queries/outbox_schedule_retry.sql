-- A failed attempt of a pending delivery ($4): attempts so far ($1), next try ($2), error ($3).
UPDATE outbox SET attempts = $1, next_attempt_at = $2, last_error = $3
WHERE id = $4 AND status = 'pending'
