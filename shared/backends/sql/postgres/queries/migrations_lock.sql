-- The session-wide lock that makes starting processes take turns migrating ($1: the lock's key).
SELECT pg_advisory_lock($1)
