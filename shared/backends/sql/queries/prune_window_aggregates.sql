-- Retention: windows that started before the cutoff ($1).
DELETE FROM window_aggregates WHERE window_start < $1
