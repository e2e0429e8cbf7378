-- The stored alerts (JSON) among the ids in $1.
SELECT body FROM alerts WHERE id = ANY($1::text[])
