-- Queues deliveries, one per element of the arrays (id, event, body), due at $4; ids already
-- queued, delivered or dead are ignored. ORDER BY ordinality: identity values (seq) follow the
-- input order, which `due` relies on.
INSERT INTO outbox (id, event, body, status, attempts, next_attempt_at, created_at)
SELECT id, event, body, 'pending', 0, $4, $4
FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS u(id, event, body, n)
ORDER BY n
ON CONFLICT (id) DO NOTHING
