-- Marks a device ($1) removed; the row stays so that re-adding it takes the next generation.
UPDATE devices SET removed = TRUE WHERE device_id = $1 AND NOT removed
