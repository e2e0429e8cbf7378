-- Marks the pending deliveries among the ids in $2 delivered at $1.
UPDATE outbox SET status = 'delivered', finished_at = $1
WHERE status = 'pending' AND id = ANY($2::text[])
