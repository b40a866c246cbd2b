"""Rollups recomputed from raw events in SQL, for tests whose events are inserted directly.

`refill(conn, org_id)` replaces the org's `rollup_hourly` rows with a `GROUP BY` over its events
(buckets from `lectr_bucket`), following the definitions of migration 005's comments, and its
`rollup_daily` rows with those merged per day (`lectr_rollup_days`, migration 008). It is an
independent second implementation of the hourly rollup: tests compare what analytics read from
it with figures computed from the raw events themselves. Idempotent, so it is also safe where the
writer already keeps the rollups.
"""

from __future__ import annotations

from typing import Any

import psycopg

_HISTOGRAMS = {
    "latency_ms": "latency_ms",
    "ttft_ms": "ttft_ms",
    "upstream_ms": "upstream_ms",
    "overhead_ms": "latency_ms - upstream_ms",
    "input_tokens": "input_tokens",
    "output_tokens": "output_tokens",
}
_ERROR = "(status_code >= 400 OR error_type IS NOT NULL)"
_UNPRICED = f"(cost_usd IS NULL AND NOT {_ERROR})"


def _aggregates() -> list[str]:
    """The inner select list: the key, the sums in `_COLUMNS` order, then each histogram's values."""
    return [
        "org_id", "date_trunc('hour', created_at, 'UTC')", "nullif(feature, '')", "nullif(task, '')", "provider",
        "nullif(model, '')", "nullif(routed_model, '')",
        "count(*)", f"count(*) FILTER (WHERE {_ERROR})",
        "count(*) FILTER (WHERE status_code BETWEEN 200 AND 299)",
        "count(*) FILTER (WHERE status_code BETWEEN 300 AND 399)",
        "count(*) FILTER (WHERE status_code BETWEEN 400 AND 499)",
        "count(*) FILTER (WHERE status_code BETWEEN 500 AND 599)",
        "count(*) FILTER (WHERE status_code = 429)", "count(*) FILTER (WHERE status_code = 499)",
        "count(*) FILTER (WHERE status_code NOT BETWEEN 200 AND 599)",
        "coalesce(sum(input_tokens), 0)", "coalesce(sum(output_tokens), 0)", "coalesce(sum(cached_input_tokens), 0)",
        "coalesce(sum(cache_write_tokens), 0)", "coalesce(sum(reasoning_tokens), 0)",
        "count(*) FILTER (WHERE input_tokens IS NOT NULL OR output_tokens IS NOT NULL)",
        "count(*) FILTER (WHERE usage_estimated)", "coalesce(sum(cost_usd), 0)", "count(cost_usd)",
        f"count(*) FILTER (WHERE {_UNPRICED})",
        f"coalesce(sum(input_tokens) FILTER (WHERE {_UNPRICED}), 0)",
        f"coalesce(sum(output_tokens) FILTER (WHERE {_UNPRICED}), 0)",
        "count(*) FILTER (WHERE stream)",
        "coalesce(sum(latency_ms), 0)", "count(latency_ms)", "coalesce(sum(ttft_ms), 0)", "count(ttft_ms)",
        "coalesce(sum(upstream_ms), 0)", "count(upstream_ms)",
        "coalesce(sum(latency_ms - upstream_ms), 0)", "count(latency_ms - upstream_ms)",
        "coalesce(sum(message_count), 0)", "count(message_count)", "coalesce(sum(request_bytes), 0)",
        "coalesce(sum(response_bytes), 0)", f"max(created_at) FILTER (WHERE {_ERROR})",
        *(f"array_agg(({expr})::float8) FILTER (WHERE {expr} IS NOT NULL)" for expr in _HISTOGRAMS.values()),
    ]


_COLUMNS = (
    "org_id, hour, feature, task, provider, model, routed_model, requests, errors, status_2xx, status_3xx,"
    " status_4xx, status_5xx, status_429, status_499, status_other, input_tokens, output_tokens,"
    " cached_input_tokens, cache_write_tokens, reasoning_tokens, with_usage, usage_estimated, cost_usd, priced,"
    " unpriced, unpriced_input_tokens, unpriced_output_tokens, stream, latency_ms_sum, latency_ms_n, ttft_ms_sum,"
    " ttft_ms_n, upstream_ms_sum, upstream_ms_n, overhead_ms_sum, overhead_ms_n, message_count_sum,"
    " message_count_n, request_bytes, response_bytes, last_error_at"
)


def _histogram(values: str) -> str:
    """The bucket and count arrays of the values array `g.<values>`."""
    buckets = f"(SELECT lectr_bucket(v) AS b, count(*) AS c FROM unnest(g.{values}) AS v GROUP BY 1) AS x"
    return (
        f"(SELECT coalesce(array_agg(b ORDER BY b), '{{}}')::int[] FROM {buckets}),"
        f" (SELECT coalesce(array_agg(c ORDER BY b), '{{}}')::bigint[] FROM {buckets})"
    )


def refill(conn: psycopg.Connection[Any], org_id: int) -> None:
    """Replace the org's hourly rollups with the ones its raw events make."""
    aggregates = _aggregates()
    sums = len(aggregates) - len(_HISTOGRAMS)
    inner = ", ".join(f"{expr} AS c{i}" for i, expr in enumerate(aggregates))
    histograms = ", ".join(_histogram(f"c{sums + i}") for i in range(len(_HISTOGRAMS)))
    query = f"""
        INSERT INTO rollup_hourly ({_COLUMNS}, {", ".join(f"{h}_b, {h}_c" for h in _HISTOGRAMS)})
        SELECT {", ".join(f"g.c{i}" for i in range(sums))}, {histograms}
        FROM (SELECT {inner} FROM events WHERE org_id = %(org)s GROUP BY 1, 2, 3, 4, 5, 6, 7) AS g
    """
    with conn.transaction():
        conn.execute("DELETE FROM rollup_hourly WHERE org_id = %s", (org_id,))
        conn.execute(query, {"org": org_id})  # type: ignore[arg-type]
        conn.execute("SELECT lectr_rollup_days(ARRAY[%s]::bigint[], '-infinity', 'infinity')", (org_id,))
