-- Retention: webhook deliveries that finished (delivered or dead) before the cutoff ($1);
-- pending ones stay.
DELETE FROM outbox WHERE status IN ('delivered', 'dead') AND finished_at < $1
