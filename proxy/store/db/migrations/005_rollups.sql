-- Rollups (SPEC §4): what analytics read instead of raw events, kept by the writer in the same
-- transaction as the events it adds. Sums merge by addition; histograms are log-bucket ones
-- (proxy/accounting/histogram.py: DDSketch's layout, α = 1.5 %) stored as two arrays, bucket indices
-- ascending (`*_b`) and their counts (`*_c`), merged with lectr_hist_merge.

-- The bucket of one value: ceil(log_γ(v)) with γ = (1 + α) / (1 - α), α = 0.015; -32768 for v <= 0.
CREATE FUNCTION lectr_bucket(v double precision) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT AS $$
    SELECT CASE WHEN v <= 0 THEN -32768 ELSE ceil(ln(v) / ln(1.015::float8 / 0.985::float8))::integer END
$$;

-- Two histograms added bucket by bucket (either may be null or empty).
CREATE FUNCTION lectr_hist_merge(b1 integer[], c1 bigint[], b2 integer[], c2 bigint[],
                                 OUT buckets integer[], OUT counts bigint[])
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(array_agg(b ORDER BY b), '{}'), coalesce(array_agg(c ORDER BY b), '{}')
    FROM (
        SELECT b, sum(c)::bigint AS c
        FROM (
            SELECT * FROM unnest(coalesce(b1, '{}'), coalesce(c1, '{}')) AS x(b, c)
            UNION ALL
            SELECT * FROM unnest(coalesce(b2, '{}'), coalesce(c2, '{}')) AS y(b, c)
        ) AS both_sides
        GROUP BY b
    ) AS merged
$$;

-- One row per org, UTC hour and (feature, task, provider, requested model, routed model).
CREATE TABLE rollup_hourly (
    org_id               bigint NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    hour                 timestamptz NOT NULL,            -- date_trunc('hour', created_at) in UTC
    feature              text,
    task                 text,
    provider             text NOT NULL,
    model                text,
    routed_model         text,
    requests             bigint NOT NULL DEFAULT 0,
    errors               bigint NOT NULL DEFAULT 0,      -- status >= 400 or an error_type (analytics' IS_ERROR)
    status_2xx           bigint NOT NULL DEFAULT 0,
    status_3xx           bigint NOT NULL DEFAULT 0,
    status_4xx           bigint NOT NULL DEFAULT 0,      -- 429 and 499 included, and counted below too
    status_5xx           bigint NOT NULL DEFAULT 0,
    status_429           bigint NOT NULL DEFAULT 0,
    status_499           bigint NOT NULL DEFAULT 0,
    status_other         bigint NOT NULL DEFAULT 0,      -- anything outside 200-599
    input_tokens         bigint NOT NULL DEFAULT 0,      -- sums of the non-null values
    output_tokens        bigint NOT NULL DEFAULT 0,
    cached_input_tokens  bigint NOT NULL DEFAULT 0,
    cache_write_tokens   bigint NOT NULL DEFAULT 0,
    reasoning_tokens     bigint NOT NULL DEFAULT 0,
    with_usage           bigint NOT NULL DEFAULT 0,      -- requests with input or output tokens known
    usage_estimated      bigint NOT NULL DEFAULT 0,
    cost_usd             numeric(30, 10) NOT NULL DEFAULT 0,
    priced               bigint NOT NULL DEFAULT 0,      -- requests with a cost
    unpriced             bigint NOT NULL DEFAULT 0,      -- cost null and not an error (analytics' IS_UNPRICED)
    unpriced_input_tokens  bigint NOT NULL DEFAULT 0,
    unpriced_output_tokens bigint NOT NULL DEFAULT 0,
    stream               bigint NOT NULL DEFAULT 0,
    latency_ms_sum       double precision NOT NULL DEFAULT 0,
    latency_ms_n         bigint NOT NULL DEFAULT 0,
    ttft_ms_sum          double precision NOT NULL DEFAULT 0,
    ttft_ms_n            bigint NOT NULL DEFAULT 0,
    upstream_ms_sum      double precision NOT NULL DEFAULT 0,
    upstream_ms_n        bigint NOT NULL DEFAULT 0,
    overhead_ms_sum      double precision NOT NULL DEFAULT 0,  -- latency - upstream, where both are known
    overhead_ms_n        bigint NOT NULL DEFAULT 0,
    message_count_sum    bigint NOT NULL DEFAULT 0,
    message_count_n      bigint NOT NULL DEFAULT 0,
    request_bytes        bigint NOT NULL DEFAULT 0,
    response_bytes       bigint NOT NULL DEFAULT 0,
    last_error_at        timestamptz,
    latency_ms_b         integer[] NOT NULL DEFAULT '{}',
    latency_ms_c         bigint[]  NOT NULL DEFAULT '{}',
    ttft_ms_b            integer[] NOT NULL DEFAULT '{}',
    ttft_ms_c            bigint[]  NOT NULL DEFAULT '{}',
    upstream_ms_b        integer[] NOT NULL DEFAULT '{}',
    upstream_ms_c        bigint[]  NOT NULL DEFAULT '{}',
    overhead_ms_b        integer[] NOT NULL DEFAULT '{}',
    overhead_ms_c        bigint[]  NOT NULL DEFAULT '{}',
    input_tokens_b       integer[] NOT NULL DEFAULT '{}',
    input_tokens_c       bigint[]  NOT NULL DEFAULT '{}',
    output_tokens_b      integer[] NOT NULL DEFAULT '{}',
    output_tokens_c      bigint[]  NOT NULL DEFAULT '{}'
);
-- NULL dimensions (untagged, no task, no routing) are one group each: the key coalesces them
-- (Postgres 14 has no UNIQUE NULLS NOT DISTINCT). Upserts name the same expressions.
CREATE UNIQUE INDEX rollup_hourly_key ON rollup_hourly (
    org_id, hour, (coalesce(feature, '')), (coalesce(task, '')), provider, (coalesce(model, '')),
    (coalesce(routed_model, ''))
);
CREATE INDEX rollup_hourly_org_hour ON rollup_hourly (org_id, hour);

-- One row per org, UTC day, end user and feature: who the org's customers are and what they cost.
CREATE TABLE rollup_daily_end_user (
    org_id               bigint NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    day                  date NOT NULL,
    end_user             text NOT NULL,
    feature              text,
    requests             bigint NOT NULL DEFAULT 0,
    errors               bigint NOT NULL DEFAULT 0,
    input_tokens         bigint NOT NULL DEFAULT 0,
    output_tokens        bigint NOT NULL DEFAULT 0,
    cached_input_tokens  bigint NOT NULL DEFAULT 0,
    cache_write_tokens   bigint NOT NULL DEFAULT 0,
    reasoning_tokens     bigint NOT NULL DEFAULT 0,
    cost_usd             numeric(30, 10) NOT NULL DEFAULT 0,
    unpriced             bigint NOT NULL DEFAULT 0,
    latency_ms_sum       double precision NOT NULL DEFAULT 0,
    latency_ms_n         bigint NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX rollup_daily_end_user_key ON rollup_daily_end_user (org_id, day, end_user, (coalesce(feature, '')));
CREATE INDEX rollup_daily_end_user_org_day ON rollup_daily_end_user (org_id, day);
