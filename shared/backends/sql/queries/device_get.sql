-- One device that is not removed, by id ($1).
SELECT device_id, generation, created_at FROM devices WHERE device_id = $1 AND NOT removed
