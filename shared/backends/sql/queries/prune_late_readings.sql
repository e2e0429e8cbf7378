-- Retention: late readings that arrived (the device's clock then) before the cutoff ($1).
DELETE FROM late_readings WHERE watermark < $1
