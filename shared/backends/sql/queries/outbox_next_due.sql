-- When the next pending delivery is due (NULL when none is).
SELECT MIN(next_attempt_at) FROM outbox WHERE status = 'pending'
