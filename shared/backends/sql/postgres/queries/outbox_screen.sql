-- What the outbox knows of a batch: ('held', id) for each event id of $1 it holds, whatever its
-- status; ('waiting', alert id) for each alert id of $2 with a pending delivery.
SELECT 'held' AS what, id FROM outbox WHERE id = ANY($1::text[])
UNION
SELECT 'waiting', (body::jsonb) -> 'alert' ->> 'id' FROM outbox
WHERE status = 'pending' AND ((body::jsonb) -> 'alert' ->> 'id') = ANY($2::text[])
