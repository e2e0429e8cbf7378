-- The latest state of the devices in $1 (read under their locks, merged in Rust).
SELECT device_id, last_seen, metrics FROM latest WHERE device_id = ANY($1::text[])
