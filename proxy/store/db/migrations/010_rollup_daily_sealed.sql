-- `rollup_daily` is sealed an hour at a time, once the hour is over, instead of merged into on
-- every flush.
--
-- Until 009 the writer's upsert merged each batch into the day's `rollup_daily` rows as well as
-- into its `rollup_hourly` rows: twelve histogram merges per group and flush instead of six, on
-- the largest histograms (a whole day's). That was about half of the upsert's time in Postgres
-- (bench/bench_rollup_upsert.py), for rows no reader needs before the day ends: a window that ends
-- today cuts today, so today's figures come from hourly rows.
--
-- From here on:
-- - `rollup_daily_sealed.through` is the watermark, an hour: `rollup_daily` holds exactly the
--   hourly rows before it, merged per day. Readers take the days before its day from
--   `rollup_daily` and every hour from its day's midnight on from `rollup_hourly`
--   (analytics/load_rollups.py), reading the watermark in the statement that reads the rows.
-- - A writer's transaction first reads the watermark FOR SHARE (proxy/store/db/rollups.py) and
--   adds to `rollup_daily` the part of its batch before it: late events (journal replays, spool
--   adoption, clocks behind) keep sealed hours exact.
-- - The seal (`proxy.store.db.rollups.seal`; each writer runs it when the hour changes) merges the
--   hours from the watermark to the last one over into `rollup_daily`, an hour per statement
--   (`rollup_hourly_hour` finds them), and moves the watermark past them.
--
-- Why nothing is counted twice or missed: the seal takes the watermark's row FOR NO KEY UPDATE
-- before it reads anything, which waits for every writer that holds it FOR SHARE (they commit
-- first: their hourly rows are then visible to the seal's statements, and their rows at or after
-- the watermark are not in `rollup_daily`), and makes every later writer wait until the seal
-- commits (they then read the new watermark and add to `rollup_daily` themselves for the hours
-- the seal merged; their rows are not in what the seal read). Writers hold no row of
-- `rollup_daily` when they wait there, so this cannot deadlock.
CREATE TABLE rollup_daily_sealed (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    through  timestamptz NOT NULL CHECK (through = date_trunc('hour', through, 'UTC'))
);
-- The seal takes over from this hour; the writers before this one had merged every batch into
-- `rollup_daily`, this hour's too, so today's rows are rebuilt from the hours before it below.
INSERT INTO rollup_daily_sealed (through) VALUES (date_trunc('hour', clock_timestamp(), 'UTC'));

CREATE INDEX rollup_hourly_hour ON rollup_hourly (hour);

-- 008's function, counting only the hours before the watermark (what `rollup_daily` holds).
CREATE OR REPLACE FUNCTION lectr_rollup_days(org_ids bigint[], since timestamptz, until timestamptz) RETURNS bigint
LANGUAGE plpgsql
SET work_mem = '256MB'
AS $$
DECLARE
    written bigint;
    sealed timestamptz;
BEGIN
    IF (isfinite(since) AND since <> date_trunc('day', since, 'UTC'))
       OR (isfinite(until) AND until <> date_trunc('day', until, 'UTC')) THEN
        RAISE EXCEPTION 'lectr_rollup_days: % and % must be UTC midnights', since, until;
    END IF;
    LOCK TABLE rollup_hourly, rollup_daily IN SHARE ROW EXCLUSIVE MODE;
    sealed := coalesce((SELECT through FROM rollup_daily_sealed), '-infinity');  -- after the lock

    DELETE FROM rollup_daily
    WHERE (org_ids IS NULL OR org_id = ANY (org_ids))
      AND day >= (since AT TIME ZONE 'UTC')::date AND day < (until AT TIME ZONE 'UTC')::date;

    WITH src AS (
        SELECT r.*, (r.hour AT TIME ZONE 'UTC')::date AS d, coalesce(r.feature, '') COLLATE "C" AS k_feature,
               coalesce(r.task, '') COLLATE "C" AS k_task, r.provider COLLATE "C" AS k_provider,
               coalesce(r.model, '') COLLATE "C" AS k_model, coalesce(r.routed_model, '') COLLATE "C" AS k_routed
        FROM rollup_hourly r
        WHERE (org_ids IS NULL OR r.org_id = ANY (org_ids)) AND r.hour >= since AND r.hour < until
          AND r.hour < sealed
    ),
    sums AS (
        SELECT org_id, d, k_feature, k_task, k_provider, k_model, k_routed,
               sum(requests)::bigint AS requests, sum(errors)::bigint AS errors,
               sum(status_2xx)::bigint AS status_2xx, sum(status_3xx)::bigint AS status_3xx,
               sum(status_4xx)::bigint AS status_4xx, sum(status_5xx)::bigint AS status_5xx,
               sum(status_429)::bigint AS status_429, sum(status_499)::bigint AS status_499,
               sum(status_other)::bigint AS status_other, sum(input_tokens)::bigint AS input_tokens,
               sum(output_tokens)::bigint AS output_tokens, sum(cached_input_tokens)::bigint AS cached_input_tokens,
               sum(cache_write_tokens)::bigint AS cache_write_tokens,
               sum(reasoning_tokens)::bigint AS reasoning_tokens, sum(with_usage)::bigint AS with_usage,
               sum(usage_estimated)::bigint AS usage_estimated, sum(cost_usd) AS cost_usd,
               sum(priced)::bigint AS priced, sum(unpriced)::bigint AS unpriced,
               sum(unpriced_input_tokens)::bigint AS unpriced_input_tokens,
               sum(unpriced_output_tokens)::bigint AS unpriced_output_tokens, sum(stream)::bigint AS stream,
               sum(latency_ms_sum) AS latency_ms_sum, sum(latency_ms_n)::bigint AS latency_ms_n,
               sum(ttft_ms_sum) AS ttft_ms_sum, sum(ttft_ms_n)::bigint AS ttft_ms_n,
               sum(upstream_ms_sum) AS upstream_ms_sum, sum(upstream_ms_n)::bigint AS upstream_ms_n,
               sum(overhead_ms_sum) AS overhead_ms_sum, sum(overhead_ms_n)::bigint AS overhead_ms_n,
               sum(message_count_sum)::bigint AS message_count_sum,
               sum(message_count_n)::bigint AS message_count_n, sum(request_bytes)::bigint AS request_bytes,
               sum(response_bytes)::bigint AS response_bytes, max(last_error_at) AS last_error_at
        FROM src
        GROUP BY org_id, d, k_feature, k_task, k_provider, k_model, k_routed
    ),
    buckets AS (
        SELECT org_id, d, k_feature, k_task, k_provider, k_model, k_routed, h.kind, h.b, sum(h.c)::bigint AS c
        FROM src CROSS JOIN LATERAL (
            SELECT 1, * FROM unnest(src.latency_ms_b, src.latency_ms_c)
            UNION ALL SELECT 2, * FROM unnest(src.ttft_ms_b, src.ttft_ms_c)
            UNION ALL SELECT 3, * FROM unnest(src.upstream_ms_b, src.upstream_ms_c)
            UNION ALL SELECT 4, * FROM unnest(src.overhead_ms_b, src.overhead_ms_c)
            UNION ALL SELECT 5, * FROM unnest(src.input_tokens_b, src.input_tokens_c)
            UNION ALL SELECT 6, * FROM unnest(src.output_tokens_b, src.output_tokens_c)
        ) AS h(kind, b, c)
        GROUP BY org_id, d, k_feature, k_task, k_provider, k_model, k_routed, h.kind, h.b
    ),
    histograms AS (
        SELECT org_id, d, k_feature, k_task, k_provider, k_model, k_routed,
               array_agg(b ORDER BY b) FILTER (WHERE kind = 1) AS latency_ms_b,
               array_agg(c ORDER BY b) FILTER (WHERE kind = 1) AS latency_ms_c,
               array_agg(b ORDER BY b) FILTER (WHERE kind = 2) AS ttft_ms_b,
               array_agg(c ORDER BY b) FILTER (WHERE kind = 2) AS ttft_ms_c,
               array_agg(b ORDER BY b) FILTER (WHERE kind = 3) AS upstream_ms_b,
               array_agg(c ORDER BY b) FILTER (WHERE kind = 3) AS upstream_ms_c,
               array_agg(b ORDER BY b) FILTER (WHERE kind = 4) AS overhead_ms_b,
               array_agg(c ORDER BY b) FILTER (WHERE kind = 4) AS overhead_ms_c,
               array_agg(b ORDER BY b) FILTER (WHERE kind = 5) AS input_tokens_b,
               array_agg(c ORDER BY b) FILTER (WHERE kind = 5) AS input_tokens_c,
               array_agg(b ORDER BY b) FILTER (WHERE kind = 6) AS output_tokens_b,
               array_agg(c ORDER BY b) FILTER (WHERE kind = 6) AS output_tokens_c
        FROM buckets
        GROUP BY org_id, d, k_feature, k_task, k_provider, k_model, k_routed
    ),
    inserted AS (
        INSERT INTO rollup_daily (
            org_id, day, feature, task, provider, model, routed_model, requests, errors, status_2xx, status_3xx,
            status_4xx, status_5xx, status_429, status_499, status_other, input_tokens, output_tokens,
            cached_input_tokens, cache_write_tokens, reasoning_tokens, with_usage, usage_estimated, cost_usd,
            priced, unpriced, unpriced_input_tokens, unpriced_output_tokens, stream, latency_ms_sum,
            latency_ms_n, ttft_ms_sum, ttft_ms_n, upstream_ms_sum, upstream_ms_n, overhead_ms_sum,
            overhead_ms_n, message_count_sum, message_count_n, request_bytes, response_bytes, last_error_at,
            latency_ms_b, latency_ms_c, ttft_ms_b, ttft_ms_c, upstream_ms_b, upstream_ms_c, overhead_ms_b,
            overhead_ms_c, input_tokens_b, input_tokens_c, output_tokens_b, output_tokens_c
        )
        SELECT s.org_id, s.d, nullif(s.k_feature, ''), nullif(s.k_task, ''), s.k_provider,
               nullif(s.k_model, ''), nullif(s.k_routed, ''), s.requests, s.errors, s.status_2xx, s.status_3xx,
               s.status_4xx, s.status_5xx, s.status_429, s.status_499, s.status_other, s.input_tokens,
               s.output_tokens, s.cached_input_tokens, s.cache_write_tokens, s.reasoning_tokens, s.with_usage,
               s.usage_estimated, s.cost_usd, s.priced, s.unpriced, s.unpriced_input_tokens,
               s.unpriced_output_tokens, s.stream, s.latency_ms_sum, s.latency_ms_n, s.ttft_ms_sum, s.ttft_ms_n,
               s.upstream_ms_sum, s.upstream_ms_n, s.overhead_ms_sum, s.overhead_ms_n, s.message_count_sum,
               s.message_count_n, s.request_bytes, s.response_bytes, s.last_error_at,
               coalesce(h.latency_ms_b, '{}'), coalesce(h.latency_ms_c, '{}'),
               coalesce(h.ttft_ms_b, '{}'), coalesce(h.ttft_ms_c, '{}'),
               coalesce(h.upstream_ms_b, '{}'), coalesce(h.upstream_ms_c, '{}'),
               coalesce(h.overhead_ms_b, '{}'), coalesce(h.overhead_ms_c, '{}'),
               coalesce(h.input_tokens_b, '{}'), coalesce(h.input_tokens_c, '{}'),
               coalesce(h.output_tokens_b, '{}'), coalesce(h.output_tokens_c, '{}')
        FROM sums s
        LEFT JOIN histograms h USING (org_id, d, k_feature, k_task, k_provider, k_model, k_routed)
        RETURNING 1
    )
    SELECT count(*) INTO written FROM inserted;
    RETURN written;
END
$$;

SELECT lectr_rollup_days(NULL, date_trunc('day', through, 'UTC'), 'infinity') FROM rollup_daily_sealed;
