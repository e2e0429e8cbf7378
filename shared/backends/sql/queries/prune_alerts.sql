-- Retention: resolved alerts opened before the cutoff ($1); open alerts stay.
DELETE FROM alerts WHERE state = 'resolved' AND opened_at < $1
