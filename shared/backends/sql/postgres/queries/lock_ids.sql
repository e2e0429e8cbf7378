-- Transaction-scoped advisory locks on the ids in $1 (text[]), taken in sorted order so that
-- writers locking overlapping sets cannot deadlock; ids with no row yet are locked too.
SELECT pg_advisory_xact_lock(h) FROM
    (SELECT DISTINCT hashtextextended(id, 0) AS h FROM unnest($1::text[]) AS id ORDER BY 1) AS locks
