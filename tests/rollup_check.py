"""Checks that the rollups agree with the raw events, and random traffic to check them on.

`assert_rollups_match_events` compares every rollup row (hourly, daily, daily per end user) with a
GROUP BY over `events` written here independently of the writer, of `lectr_rollup_rebuild` and of
`lectr_rollup_days`: counters, token sums and cost exactly, float sums to 1e-9, histograms bucket
for bucket, their totals with the counts of known values. `rollup_daily` holds the events before
its watermark (migration 010), and is compared with those. `assert_quantiles` merges an
org's hourly histograms and compares their quantiles with Postgres' `percentile_cont`.
"""

from __future__ import annotations

import datetime as dt
import math
import random
from decimal import Decimal
from typing import Any

import psycopg

from proxy.accounting.histogram import Histogram
from proxy.accounting.record import Event

KEY = "org_id, hour, feature, task, provider, model, routed_model"
EXACT = (
    "requests", "errors", "status_2xx", "status_3xx", "status_4xx", "status_5xx", "status_429", "status_499",
    "status_other", "input_tokens", "output_tokens", "cached_input_tokens", "cache_write_tokens", "reasoning_tokens",
    "with_usage", "usage_estimated", "cost_usd", "priced", "unpriced", "unpriced_input_tokens",
    "unpriced_output_tokens", "stream", "latency_ms_n", "ttft_ms_n", "upstream_ms_n", "overhead_ms_n",
    "message_count_sum", "message_count_n", "request_bytes", "response_bytes", "last_error_at",
)
FLOATS = ("latency_ms_sum", "ttft_ms_sum", "upstream_ms_sum", "overhead_ms_sum")
HISTOGRAMS = ("latency_ms", "ttft_ms", "upstream_ms", "overhead_ms", "input_tokens", "output_tokens")

_RAW_HOURLY = """
SELECT org_id, {period} AS hour, nullif(feature, '') AS feature,
       nullif(task, '') AS task, provider, nullif(model, '') AS model, nullif(routed_model, '') AS routed_model,
       count(*) AS requests,
       count(*) FILTER (WHERE status_code >= 400 OR error_type IS NOT NULL) AS errors,
       count(*) FILTER (WHERE status_code / 100 = 2) AS status_2xx,
       count(*) FILTER (WHERE status_code / 100 = 3) AS status_3xx,
       count(*) FILTER (WHERE status_code / 100 = 4) AS status_4xx,
       count(*) FILTER (WHERE status_code / 100 = 5) AS status_5xx,
       count(*) FILTER (WHERE status_code = 429) AS status_429,
       count(*) FILTER (WHERE status_code = 499) AS status_499,
       count(*) FILTER (WHERE status_code NOT BETWEEN 200 AND 599) AS status_other,
       coalesce(sum(input_tokens), 0) AS input_tokens, coalesce(sum(output_tokens), 0) AS output_tokens,
       coalesce(sum(cached_input_tokens), 0) AS cached_input_tokens,
       coalesce(sum(cache_write_tokens), 0) AS cache_write_tokens,
       coalesce(sum(reasoning_tokens), 0) AS reasoning_tokens,
       count(*) - count(*) FILTER (WHERE input_tokens IS NULL AND output_tokens IS NULL) AS with_usage,
       count(*) FILTER (WHERE usage_estimated) AS usage_estimated,
       coalesce(sum(cost_usd), 0) AS cost_usd, count(cost_usd) AS priced,
       count(*) FILTER (WHERE cost_usd IS NULL AND status_code < 400 AND error_type IS NULL) AS unpriced,
       coalesce(sum(input_tokens) FILTER (WHERE cost_usd IS NULL AND status_code < 400 AND error_type IS NULL), 0)
           AS unpriced_input_tokens,
       coalesce(sum(output_tokens) FILTER (WHERE cost_usd IS NULL AND status_code < 400 AND error_type IS NULL), 0)
           AS unpriced_output_tokens,
       count(*) FILTER (WHERE stream) AS stream,
       count(latency_ms) AS latency_ms_n, count(ttft_ms) AS ttft_ms_n, count(upstream_ms) AS upstream_ms_n,
       count(latency_ms - upstream_ms) AS overhead_ms_n, count(input_tokens) AS input_tokens_n,
       count(output_tokens) AS output_tokens_n,
       coalesce(sum(message_count), 0) AS message_count_sum, count(message_count) AS message_count_n,
       coalesce(sum(request_bytes), 0) AS request_bytes, coalesce(sum(response_bytes), 0) AS response_bytes,
       max(created_at) FILTER (WHERE status_code >= 400 OR error_type IS NOT NULL) AS last_error_at,
       coalesce(sum(latency_ms), 0) AS latency_ms_sum, coalesce(sum(ttft_ms), 0) AS ttft_ms_sum,
       coalesce(sum(upstream_ms), 0) AS upstream_ms_sum, coalesce(sum(latency_ms - upstream_ms), 0) AS overhead_ms_sum
FROM events WHERE org_id = ANY (%s) AND created_at < %s
GROUP BY 1, 2, 3, 4, 5, 6, 7
"""
# Every known value's bucket, by lectr_bucket (what proxy/accounting/histogram.py computes in Python).
_RAW_BUCKETS = """
SELECT org_id, {period}, nullif(feature, ''), nullif(task, ''), provider,
       nullif(model, ''), nullif(routed_model, ''), kind, b, count(*)
FROM events CROSS JOIN LATERAL (VALUES ('latency_ms', lectr_bucket(latency_ms)), ('ttft_ms', lectr_bucket(ttft_ms)),
    ('upstream_ms', lectr_bucket(upstream_ms)), ('overhead_ms', lectr_bucket(latency_ms - upstream_ms)),
    ('input_tokens', lectr_bucket(input_tokens)), ('output_tokens', lectr_bucket(output_tokens))) AS h(kind, b)
WHERE org_id = ANY (%s) AND created_at < %s AND b IS NOT NULL
GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9
ORDER BY 9
"""
_RAW_DAILY = """
SELECT org_id, (created_at AT TIME ZONE 'UTC')::date AS day, end_user, nullif(feature, '') AS feature,
       count(*) AS requests, count(*) FILTER (WHERE status_code >= 400 OR error_type IS NOT NULL) AS errors,
       coalesce(sum(input_tokens), 0) AS input_tokens, coalesce(sum(output_tokens), 0) AS output_tokens,
       coalesce(sum(cached_input_tokens), 0) AS cached_input_tokens,
       coalesce(sum(cache_write_tokens), 0) AS cache_write_tokens,
       coalesce(sum(reasoning_tokens), 0) AS reasoning_tokens, coalesce(sum(cost_usd), 0) AS cost_usd,
       count(*) FILTER (WHERE cost_usd IS NULL AND status_code < 400 AND error_type IS NULL) AS unpriced,
       count(latency_ms) AS latency_ms_n, coalesce(sum(latency_ms), 0) AS latency_ms_sum
FROM events WHERE org_id = ANY (%s) AND end_user IS NOT NULL
GROUP BY 1, 2, 3, 4
"""


def _keyed(cur: psycopg.Cursor[Any], sql: str, params: Any, key: int) -> dict[tuple[Any, ...], dict[str, Any]]:
    cur.execute(sql, params)
    names = [column.name for column in cur.description or ()]
    found: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in cur.fetchall():
        record = dict(zip(names, row, strict=True))
        found[tuple(row[:key])] = record
    return found


# The period of an event: its UTC hour (rollup_hourly), or its UTC day (rollup_daily).
HOUR = "date_trunc('hour', created_at, 'UTC')"
DAY = "(created_at AT TIME ZONE 'UTC')::date"


def rollup_rows(
    conn: psycopg.Connection[Any], org_ids: list[int], table: str = "rollup_hourly"
) -> dict[tuple[Any, ...], dict[str, Any]]:
    """The rows of `rollup_hourly` or `rollup_daily` keyed by group (the day's column named `hour`)."""
    period = "day AS hour" if table == "rollup_daily" else "hour"
    with conn.cursor() as cur:
        return _keyed(cur, f"SELECT *, {period} FROM {table} WHERE org_id = ANY (%s) ORDER BY {KEY}", (org_ids,), 7)


def sealed_through(conn: psycopg.Connection[Any]) -> dt.datetime:
    """The watermark of `rollup_daily` (migration 010): it holds the events of the hours before it."""
    row = conn.execute("SELECT through FROM rollup_daily_sealed").fetchone()
    assert row is not None, "rollup_daily_sealed holds its one row"
    return row[0]


def daily_rows(conn: psycopg.Connection[Any], org_ids: list[int]) -> dict[tuple[Any, ...], dict[str, Any]]:
    with conn.cursor() as cur:
        return _keyed(cur, "SELECT * FROM rollup_daily_end_user WHERE org_id = ANY (%s)", (org_ids,), 4)


def assert_rollups_match_events(conn: psycopg.Connection[Any], org_ids: list[int]) -> int:
    """Every rollup row equals the GROUP BY of its raw events, and there is no other; returns
    the number of events checked."""
    _assert_table_matches(conn, org_ids, "rollup_hourly", HOUR)
    _assert_table_matches(conn, org_ids, "rollup_daily", DAY, sealed_through(conn))
    with conn.cursor() as cur:
        raw = _keyed(cur, _RAW_HOURLY.format(period=HOUR), (org_ids, "infinity"), 7)
        raw_daily = _keyed(cur, _RAW_DAILY, (org_ids,), 4)
    rolled_daily = daily_rows(conn, org_ids)
    assert sorted(rolled_daily, key=repr) == sorted(raw_daily, key=repr)
    for key, want in raw_daily.items():
        got = rolled_daily[key]
        for name, value in want.items():
            if name == "latency_ms_sum":
                assert math.isclose(got[name], value, rel_tol=1e-9, abs_tol=1e-6), (key, name)
            else:
                assert got[name] == value, (key, name, got[name], value)
    return sum(int(record["requests"]) for record in raw.values())


def _assert_table_matches(conn: psycopg.Connection[Any], org_ids: list[int], table: str, period: str,
                          before: dt.datetime | str = "infinity") -> None:
    """`table`'s rows equal the GROUP BY of the events before `before` per group and `period`, and
    there is no other."""
    with conn.cursor() as cur:
        raw = _keyed(cur, _RAW_HOURLY.format(period=period), (org_ids, before), 7)
    rolled = rollup_rows(conn, org_ids, table)
    buckets_of: dict[tuple[Any, ...], tuple[list[int], list[int]]] = {}
    for *key, kind, bucket, count in conn.execute(_RAW_BUCKETS.format(period=period),
                                                  (org_ids, before)).fetchall():
        found = buckets_of.setdefault((tuple(key), kind), ([], []))
        found[0].append(bucket)
        found[1].append(count)
    assert sorted(rolled, key=repr) == sorted(raw, key=repr), f"{table}'s groups differ from the events'"
    for key, want in raw.items():
        got = rolled[key]
        for name in EXACT:
            assert got[name] == want[name], (table, key, name, got[name], want[name])
        for name in FLOATS:
            assert math.isclose(got[name], want[name], rel_tol=1e-9, abs_tol=1e-6), (table, key, name, got[name],
                                                                                    want[name])
        for name in HISTOGRAMS:
            buckets, counts = got[f"{name}_b"], got[f"{name}_c"]
            assert (buckets, counts) == buckets_of.get((key, name), ([], [])), (table, key, name)
            assert sum(counts) == want[f"{name}_n"], (table, key, name, sum(counts), want[f"{name}_n"])


def assert_quantiles(conn: psycopg.Connection[Any], org_id: int) -> None:
    """An org's merged histograms, hourly and daily, give quantiles within 2 % of percentile_cont
    over its events."""
    for table in ("rollup_hourly", "rollup_daily"):
        _assert_table_quantiles(conn, org_id, table)


def _assert_table_quantiles(conn: psycopg.Connection[Any], org_id: int, table: str) -> None:
    expressions = {
        "latency_ms": "latency_ms", "ttft_ms": "ttft_ms", "upstream_ms": "upstream_ms",
        "overhead_ms": "latency_ms - upstream_ms", "input_tokens": "input_tokens", "output_tokens": "output_tokens",
    }
    before = sealed_through(conn) if table == "rollup_daily" else "infinity"  # what the table holds
    rows = conn.execute(
        "SELECT " + ", ".join(f"{name}_b, {name}_c" for name in expressions) + f" FROM {table} WHERE org_id = %s",
        (org_id,),
    ).fetchall()
    if not rows:  # (rollup_daily when every event is after the watermark)
        found = conn.execute("SELECT count(*) FROM events WHERE org_id = %s AND created_at < %s", (org_id, before))
        assert (found.fetchone() or (0,))[0] == 0, table
        return
    for index, (name, expression) in enumerate(expressions.items()):
        merged = Histogram()
        for row in rows:
            merged.merge(Histogram.from_arrays(row[2 * index], row[2 * index + 1]))
        for q in (0.01, 0.25, 0.5, 0.9, 0.95, 0.99):
            (want,) = conn.execute(
                f"SELECT percentile_cont(%s) WITHIN GROUP (ORDER BY {expression}) FROM events WHERE org_id = %s"
                " AND created_at < %s",
                (q, org_id, before),
            ).fetchone() or (None,)
            got = merged.quantile(q)
            if want is None:
                assert got is None, (table, name, q)
                continue
            assert got is not None, (table, name, q)
            if want <= 0:  # overheads below zero (upstream timed past latency) share the zero bucket
                assert got == 0.0 or abs(got - want) <= 0.02 * abs(want), (table, name, q, got, want)
            else:
                assert abs(got - want) <= 0.02 * want, (table, name, q, got, want)


FEATURES = (None, "", "support", "search", "classify", "über-feature")
TASKS = (None, "classification", "reasoning", "generation")
MODELS = (("openai", "gpt-4o", None), ("openai", "gpt-4o-mini", "gpt-4o"), ("anthropic", "claude-3-5-haiku", None),
          ("groq", None, None), ("gemini", "gemini-1.5-flash", "gemini-1.5-pro"))
STATUSES = (200, 200, 200, 200, 201, 204, 302, 399, 400, 401, 429, 429, 499, 500, 503, 504, 599, 600, 101, 0)
UTC_PLUS_530 = dt.timezone(dt.timedelta(hours=5, minutes=30))


def random_events(rng: random.Random, org_ids: list[int], n: int, *, hours: int = 60) -> list[Event]:
    """Events with every dimension, status and figure drawn at random, nulls included; costs with
    more decimals than Postgres keeps (it rounds them), some in another time zone."""
    now = dt.datetime.now(dt.UTC)
    events = []
    for _ in range(n):
        provider, model, routed = rng.choice(MODELS)
        status = rng.choice(STATUSES)
        created = now - dt.timedelta(seconds=rng.uniform(0, hours * 3600))
        if rng.random() < 0.2:
            created = created.astimezone(UTC_PLUS_530)
        event = Event(
            org_id=rng.choice(org_ids), created_at=created, provider=provider, endpoint="chat/completions",
            status_code=status, model=model, routed_model=routed, feature=rng.choice(FEATURES),
            task=rng.choice(TASKS), stream=rng.random() < 0.4,
            end_user=rng.choice((None, None, "alice", "bob", "", "carol")),
        )
        if rng.random() < 0.15 or status >= 400:
            event.error_type = rng.choice((None, "upstream_error", "timeout"))
        if status < 400 and rng.random() < 0.05:
            event.error_type = "stream_error"  # an error on a 200
        if rng.random() < 0.9:
            event.latency_ms = rng.lognormvariate(6, 1.2)
        if rng.random() < 0.85:
            event.upstream_ms = (event.latency_ms or 500.0) * rng.uniform(0.7, 1.02)
        if event.stream and rng.random() < 0.9:
            event.ttft_ms = rng.lognormvariate(5, 0.8)
        if rng.random() < 0.8:
            event.input_tokens = int(rng.paretovariate(1.2) * 50)
        if rng.random() < 0.75:
            event.output_tokens = rng.choice((0, int(rng.lognormvariate(4, 1.5))))
        for name in ("cached_input_tokens", "cache_write_tokens", "reasoning_tokens"):
            if rng.random() < 0.5:
                setattr(event, name, rng.randint(0, 400))
        event.usage_estimated = rng.random() < 0.1
        event.price_source = "test"  # the writer does not price it again
        if rng.random() < 0.7:
            event.cost_usd = Decimal(rng.randint(0, 10**16)) / Decimal(10**18) * rng.choice((1, 7, 13))
        if rng.random() < 0.9:
            event.request_bytes, event.response_bytes = rng.randint(10, 10**6), rng.randint(0, 10**6)
        if rng.random() < 0.8:
            event.message_count = rng.randint(1, 40)
        events.append(event)
    return events
