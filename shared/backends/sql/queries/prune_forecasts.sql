-- Retention: forecasts made before the cutoff ($1).
DELETE FROM forecasts WHERE at < $1
