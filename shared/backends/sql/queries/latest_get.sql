-- A device's ($1) latest state.
SELECT device_id, last_seen, metrics FROM latest WHERE device_id = $1
