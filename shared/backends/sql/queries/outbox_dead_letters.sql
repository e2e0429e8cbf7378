-- Dead letters, newest first, at most $1.
SELECT id, event, attempts, last_error, finished_at FROM outbox
WHERE status = 'dead' ORDER BY finished_at DESC, id LIMIT $1
