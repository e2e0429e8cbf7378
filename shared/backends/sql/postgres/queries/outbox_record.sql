-- Records deliveries, one per element of the arrays: $1 id, $2 event, $3 body, $4 alert id,
-- $5 status, $6 attempts, $7 next attempt at, $8 last error; created (and, unless pending,
-- finished) at $9. Ids already held are ignored, in-batch repeats too.
-- A pending row is due no earlier than the pending rows its alert already has, so the delivery
-- loop keeps an alert's events in order (index outbox_pending_alert). ORDER BY ordinality gives
-- seq the input order, which `due` relies on for rows due at the same time.
INSERT INTO outbox (id, event, body, status, attempts, next_attempt_at, last_error, created_at, finished_at)
SELECT u.id, u.event, u.body, u.status, u.attempts,
       CASE WHEN u.status = 'pending' THEN GREATEST(u.at, (
           SELECT max(o.next_attempt_at) FROM outbox o
           WHERE o.status = 'pending' AND ((o.body::jsonb) -> 'alert' ->> 'id') = u.alert_id))
       ELSE u.at END,
       u.err, $9, CASE WHEN u.status = 'pending' THEN NULL ELSE $9 END
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int[], $7::bigint[], $8::text[])
     WITH ORDINALITY AS u(id, event, body, alert_id, status, attempts, at, err, n)
ORDER BY u.n
ON CONFLICT (id) DO NOTHING
