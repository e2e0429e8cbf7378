-- Pending deliveries due at $1, by due time then queue order, at most $2.
SELECT id, body, attempts, next_attempt_at FROM outbox
WHERE status = 'pending' AND next_attempt_at <= $1
ORDER BY next_attempt_at, seq LIMIT $2
