-- Upserts window aggregates, one row per element of the arrays (at most one per key: PostgreSQL
-- refuses to update a row twice in one statement): device, metric, window size, window start,
-- hop, count, min, max, sum, stddev, p50, p95, p99. A window's count only grows (readings are
-- analysed in event-time order, each once), so an emission with fewer readings than the stored
-- one is stale (e.g. an instance handing a partition over) and is ignored.
INSERT INTO window_aggregates (device_id, metric, window_ms, window_start, hop_ms, count,
                               min, max, sum, stddev, p50, p95, p99)
SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[],
                     $6::bigint[], $7::float8[], $8::float8[], $9::float8[], $10::float8[],
                     $11::float8[], $12::float8[], $13::float8[])
ON CONFLICT (device_id, metric, window_ms, window_start) DO UPDATE SET
    hop_ms = excluded.hop_ms, count = excluded.count, min = excluded.min, max = excluded.max,
    sum = excluded.sum, stddev = excluded.stddev, p50 = excluded.p50, p95 = excluded.p95,
    p99 = excluded.p99
WHERE excluded.count >= window_aggregates.count
