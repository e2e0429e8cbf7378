-- Devices that are not removed, by id (bytewise: the column's collation is "C" in PostgreSQL).
SELECT device_id, generation, created_at FROM devices WHERE NOT removed ORDER BY device_id
