-- Adds a device ($1) at $2: generation 1 when new, the next generation when it was removed,
-- no row returned when it exists (one statement, so concurrent adds cannot both succeed).
INSERT INTO devices (device_id, generation, created_at, removed) VALUES ($1, 1, $2, FALSE)
ON CONFLICT (device_id) DO UPDATE SET generation = devices.generation + 1,
    created_at = excluded.created_at, removed = FALSE
    WHERE devices.removed
RETURNING generation
