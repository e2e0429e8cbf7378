-- Every device's latest state, by device id (bytewise: the column's collation is "C" in PostgreSQL).
SELECT device_id, last_seen, metrics FROM latest ORDER BY device_id
