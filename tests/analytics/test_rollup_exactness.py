"""Figures from rollups against figures from the raw events, on the same random traffic.

The rollups are recomputed from the events in SQL (`tests.rollups_sql`, an implementation
independent of the polars one that aggregates the raw edges), the reference figures are SQL
over the raw events (`count`, `sum`, `percentile_cont`). Windows start and end mid-hour, so
every load mixes whole rollup hours, raw pieces and pieces derived by subtraction. Counts,
every token kind and cost (as exact decimals, and as the floats the figures show) must be
equal; percentiles within 2 % of `percentile_cont`. Loads with `days=True` read the whole days
of a window from `rollup_daily` (its rows rebuilt from the hourly ones by `lectr_rollup_days`),
and must give the same figures.
"""

from __future__ import annotations

import datetime as dt
import random
import uuid
from decimal import Decimal
from typing import Any

import polars as pl
import psycopg
import pytest

import analytics
from analytics.commands import report_frame
from analytics.load_rollups import HEALTH_FIGURES, whole_days
from analytics.rollups import COUNTS, DIMENSIONS
from tests.rollups_sql import refill

COLUMNS = (
    "id", "org_id", "created_at", "provider", "model", "routed_model", "feature", "task", "endpoint", "stream",
    "status_code", "error_type", "latency_ms", "ttft_ms", "upstream_ms", "input_tokens", "output_tokens",
    "cached_input_tokens", "cache_write_tokens", "reasoning_tokens", "usage_estimated", "cost_usd",
    "request_bytes", "response_bytes", "message_count",
)
ERROR = "(status_code >= 400 OR error_type IS NOT NULL)"
UNPRICED = f"(cost_usd IS NULL AND NOT {ERROR})"
# The reference for each rollup column, as SQL over raw events.
REFERENCE = {
    "requests": "count(*)", "errors": f"count(*) FILTER (WHERE {ERROR})",
    "status_2xx": "count(*) FILTER (WHERE status_code BETWEEN 200 AND 299)",
    "status_3xx": "count(*) FILTER (WHERE status_code BETWEEN 300 AND 399)",
    "status_4xx": "count(*) FILTER (WHERE status_code BETWEEN 400 AND 499)",
    "status_5xx": "count(*) FILTER (WHERE status_code BETWEEN 500 AND 599)",
    "status_429": "count(*) FILTER (WHERE status_code = 429)",
    "status_499": "count(*) FILTER (WHERE status_code = 499)",
    "status_other": "count(*) FILTER (WHERE status_code NOT BETWEEN 200 AND 599)",
    **{c: f"coalesce(sum({c}), 0)" for c in ("input_tokens", "output_tokens", "cached_input_tokens",
                                           "cache_write_tokens", "reasoning_tokens", "message_count",
                                           "request_bytes", "response_bytes")},
    "message_count_sum": "coalesce(sum(message_count), 0)", "message_count_n": "count(message_count)",
    "with_usage": "count(*) FILTER (WHERE input_tokens IS NOT NULL OR output_tokens IS NOT NULL)",
    "usage_estimated": "count(*) FILTER (WHERE usage_estimated)", "priced": "count(cost_usd)",
    "unpriced": f"count(*) FILTER (WHERE {UNPRICED})",
    "unpriced_input_tokens": f"coalesce(sum(input_tokens) FILTER (WHERE {UNPRICED}), 0)",
    "unpriced_output_tokens": f"coalesce(sum(output_tokens) FILTER (WHERE {UNPRICED}), 0)",
    "stream": "count(*) FILTER (WHERE stream)", "latency_ms_n": "count(latency_ms)", "ttft_ms_n": "count(ttft_ms)",
    "upstream_ms_n": "count(upstream_ms)", "overhead_ms_n": "count(latency_ms - upstream_ms)",
    "cost_usd": "coalesce(sum(cost_usd), 0)",
}


def _maybe(rng: random.Random, value: Any, none: float = 0.2) -> Any:
    return None if rng.random() < none else value


def random_events(org_id: int, end: dt.datetime, n: int, seed: int) -> list[tuple[Any, ...]]:
    """`n` events over the 3 days before `end`, every column varied, nulls included."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        status = rng.choice([200] * 12 + [201, 302, 400, 404, 429, 499, 500, 503, 102])
        latency = rng.lognormvariate(6.5, 1.0)
        rows.append((
            uuid.uuid4(), org_id, end - dt.timedelta(seconds=rng.uniform(0, 3 * 86400)),
            rng.choice(["openai", "groq", "azure"]), _maybe(rng, rng.choice(["gpt-4o", "llama-3.1-70b"]), 0.05),
            _maybe(rng, "gpt-4o-mini", 0.8), _maybe(rng, rng.choice(["chat", "search", "extract"])),
            _maybe(rng, rng.choice(["classification", "reasoning", "qa"]), 0.4), "chat/completions",
            rng.random() < 0.4, status, _maybe(rng, "timeout", 0.9), _maybe(rng, latency, 0.05),
            _maybe(rng, rng.uniform(80, 900), 0.6), _maybe(rng, latency * rng.uniform(0.6, 0.99), 0.1),
            _maybe(rng, int(rng.lognormvariate(7, 1.2))), _maybe(rng, int(rng.lognormvariate(4, 1.5))),
            _maybe(rng, rng.randrange(0, 2000), 0.5), _maybe(rng, rng.randrange(0, 500), 0.7),
            _maybe(rng, rng.randrange(0, 900), 0.7), rng.random() < 0.1,
            _maybe(rng, Decimal(rng.randrange(1, 10**11)) / 10**10, 0.25),
            _maybe(rng, rng.randrange(100, 90_000)), _maybe(rng, rng.randrange(100, 90_000)),
            _maybe(rng, rng.randrange(1, 30)),
        ))
    return rows


@pytest.fixture(scope="module")
def traffic(pg_url: str) -> tuple[int, dt.datetime]:
    """An org with 6,000 random events over 3 days ending a little before now, and its rollups."""
    from proxy.store.db import connect, ensure_partitions
    from proxy.store.orgs import create_org

    end = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(minutes=7)
    with connect(pg_url) as conn:
        ensure_partitions(conn, end, months_back=1)
        org, _ = create_org(conn, f"exact-{uuid.uuid4().hex[:8]}")
        with conn.cursor() as cur, cur.copy(f"COPY events ({', '.join(COLUMNS)}) FROM STDIN") as copy:
            for row in random_events(org.id, end, 6000, seed=16):
                copy.write_row(row)
        refill(conn, org.id)
    return org.id, end


def reference(conn: psycopg.Connection[Any], org_id: int, start: dt.datetime, end: dt.datetime,
              by: str | None = None) -> dict[Any, dict[str, Any]]:
    """REFERENCE per `by` (or one row under None) over the raw events of `[start, end)`."""
    key = f"{by}" if by else "NULL"
    select = ", ".join(f"{expr} AS {name}" for name, expr in REFERENCE.items())
    percentiles = ", ".join(
        f"percentile_cont(0.95) WITHIN GROUP (ORDER BY {expr}) AS {name}_p95"
        for name, expr in (("latency_ms", "latency_ms"), ("ttft_ms", "ttft_ms"),
                           ("overhead_ms", "latency_ms - upstream_ms"))
    )
    rows = conn.execute(
        f"SELECT {key} AS k, {select}, {percentiles} FROM events WHERE org_id = %s AND created_at >= %s"  # type: ignore[arg-type]
        f" AND created_at < %s GROUP BY 1",
        (org_id, start, end),
    ).fetchall()
    names = ["k", *REFERENCE, "latency_ms_p95", "ttft_ms_p95", "overhead_ms_p95"]
    return {row[0]: dict(zip(names, row, strict=True)) for row in rows}


def windows(end: dt.datetime) -> list[tuple[dt.datetime, dt.datetime, dt.datetime]]:
    """(start, cut, end) triples, all mid-hour, some cuts near an hour's start or end."""
    def ago(hours: float, minutes: float = 0, seconds: float = 0) -> dt.datetime:
        return end - dt.timedelta(hours=hours, minutes=minutes, seconds=seconds)

    return [
        (ago(48, 13), ago(24, 41), ago(5, 2)),
        (ago(50, 37), ago(3, 0, 17), end),
        (ago(2, 59), ago(1, 1), ago(0, 7)),
        (ago(30, 30), ago(29, 31), ago(29, 29)),
    ]


@pytest.mark.parametrize("case", range(4))
def test_rollup_frames_equal_raw_sums_in_every_column(db: psycopg.Connection[Any], traffic: tuple[int, dt.datetime],
                                                       case: int) -> None:
    org_id, end = traffic
    start, cut, stop = windows(end)[case]
    frame = analytics.load_rollups(db, org_id, start, stop, cuts=[cut], now=end).collect().lazy()
    for a, b in ((start, stop), (start, cut), (cut, stop)):
        got = analytics.window(frame, a, b).select(pl.col(*COUNTS, "cost_usd").sum()).collect().row(0, named=True)
        want = reference(db, org_id, a, b).get(None, dict.fromkeys(REFERENCE, 0))
        for column in REFERENCE:
            name = {"message_count": "message_count_sum"}.get(column, column)
            assert got[name] == want[column], (column, a, b)
        assert got["requests"] > 0


@pytest.mark.parametrize("by", ["feature", "provider"])
def test_breakdowns_equal_raw_figures(db: psycopg.Connection[Any], traffic: tuple[int, dt.datetime], by: str) -> None:
    org_id, end = traffic
    start, cut, stop = windows(end)[0]
    frame = analytics.load_rollups(db, org_id, start, stop, cuts=[cut], now=end)
    current, previous = analytics.window(frame, cut, stop), analytics.window(frame, start, cut)
    got = {r[by] if r[by] != analytics.UNTAGGED else None: r
           for r in analytics.breakdown(current, previous, by=by).collect().iter_rows(named=True)}
    want = reference(db, org_id, cut, stop, by)
    before = reference(db, org_id, start, cut, by)
    assert set(got) == set(want)
    for key, row in want.items():
        figure = got[key]
        assert (figure["requests"], figure["errors"], figure["unpriced_requests"]) == (
            row["requests"], row["errors"], row["unpriced"])
        assert (figure["input_tokens"], figure["output_tokens"], figure["cached_input_tokens"]) == (
            row["input_tokens"], row["output_tokens"], row["cached_input_tokens"])
        assert figure["cost_usd"] == float(row["cost_usd"])  # the exact sum, correctly rounded
        assert figure["previous_cost_usd"] == float(before[key]["cost_usd"])
        for p95 in ("latency_ms_p95", "ttft_ms_p95", "overhead_ms_p95"):
            assert figure[p95] == pytest.approx(row[p95], rel=0.02), (key, p95)


def test_time_series_buckets_equal_raw_figures(db: psycopg.Connection[Any], traffic: tuple[int, dt.datetime]) -> None:
    org_id, end = traffic
    start, _, stop = windows(end)[1]
    frame = analytics.load_rollups(db, org_id, start, stop, now=end)
    for every, trunc in (("1h", "hour"), ("6h", None), ("1d", "day")):
        got = analytics.timeseries(frame, every, start=start, end=stop).collect()
        bucket = (f"date_trunc('{trunc}', created_at, 'UTC')" if trunc else
                  "date_bin('6 hours', created_at, '2000-01-01 00:00+00')")
        rows = db.execute(
            f"SELECT {bucket} AS b, count(*), sum(cost_usd), coalesce(sum(input_tokens), 0),"  # type: ignore[arg-type]
            " percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms)"
            " FROM events WHERE org_id = %s AND created_at >= %s AND created_at < %s GROUP BY 1",
            (org_id, start, stop),
        ).fetchall()
        want = {b: (n, cost, tokens, p95) for b, n, cost, tokens, p95 in rows}
        assert got.filter(pl.col("requests") > 0).height == len(want)
        for row in got.filter(pl.col("requests") > 0).iter_rows(named=True):
            n, cost, tokens, p95 = want[row["bucket"]]
            known = None if cost is None else float(cost)  # a bucket with no price has an unknown cost
            assert (row["requests"], row["cost_usd"], row["input_tokens"]) == (n, known, tokens)
            assert row["latency_ms_p95"] == pytest.approx(p95, rel=0.02)


@pytest.mark.parametrize("load", ["load_rollups", "load_health"])
def test_provider_health_mid_hour(db: psycopg.Connection[Any], traffic: tuple[int, dt.datetime], load: str) -> None:
    """Exact through a full load cut at the health windows, and through `load_health`, whose raw
    edges carry only the columns the health reads (its other figures are null, never wrong)."""
    org_id, end = traffic
    now = end - dt.timedelta(hours=4, minutes=22, seconds=5)
    if load == "load_health":
        frame = analytics.load_health(db, org_id, now)
        loaded = frame.collect()
        assert loaded.height > 0
        assert loaded["input_tokens"].null_count() == loaded["cost_usd"].null_count() == loaded.height
        assert loaded["ttft_ms_b"].null_count() == loaded.height
        # Piece by piece, its figures are those of a full load over the same window and cuts.
        full = analytics.load_rollups(db, org_id, now - dt.timedelta(days=1), now, cuts=analytics.health_cuts(now),
                                      histograms=("latency_ms",), now=end).collect()
        columns = ["since", *DIMENSIONS, *HEALTH_FIGURES]
        assert loaded.select(columns).sort(columns[:6], nulls_last=True).to_dicts() == full.select(columns).sort(
            columns[:6], nulls_last=True).to_dicts()
    else:
        frame = analytics.load_rollups(db, org_id, now - dt.timedelta(days=1), now, cuts=analytics.health_cuts(now),
                                       now=end)
    got = {r["provider"]: r for r in analytics.provider_health(frame, now).collect().iter_rows(named=True)}
    for hours in (1, 24):
        rows = db.execute(
            f"SELECT provider, count(*), count(*) FILTER (WHERE {ERROR}), max(created_at) FILTER (WHERE {ERROR}),"  # type: ignore[arg-type]
            " percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms) FROM events"
            " WHERE org_id = %s AND created_at >= %s AND created_at < %s GROUP BY 1",
            (org_id, now - dt.timedelta(hours=hours), now),
        ).fetchall()
        for provider, n, errors, last_error, p95 in rows:
            row = got[provider]
            assert (row[f"requests_{hours}h"], row[f"errors_{hours}h"]) == (n, errors)
            if hours == 24:
                assert row["last_error_at"] == last_error
            else:
                assert row["latency_ms_p95_1h"] == pytest.approx(p95, rel=0.02)


def test_typical_sizes_within_two_percent(db: psycopg.Connection[Any], traffic: tuple[int, dt.datetime]) -> None:
    org_id, end = traffic
    start = end - dt.timedelta(days=2, minutes=45)
    frame = analytics.load_rollups(db, org_id, start, end, histograms=analytics.RECOMMEND_HISTOGRAMS, now=end)
    profile = analytics.usage_profile(frame.filter(pl.col("task").is_null())).collect()
    rows = db.execute(
        "SELECT coalesce(feature, 'untagged'), provider, coalesce(routed_model, model),"
        " percentile_cont(0.5) WITHIN GROUP (ORDER BY input_tokens),"
        " percentile_cont(0.5) WITHIN GROUP (ORDER BY output_tokens),"
        " percentile_cont(0.9) WITHIN GROUP (ORDER BY output_tokens), sum(input_tokens)"
        " FROM events WHERE org_id = %s AND created_at >= %s AND created_at < %s AND task IS NULL"
        " AND coalesce(routed_model, model) IS NOT NULL GROUP BY 1, 2, 3",
        (org_id, start, end),
    ).fetchall()
    assert len(rows) == profile.height > 5
    for feature, provider, model, prompt, response, response_p90, tokens in rows:
        got = profile.filter((pl.col("feature") == feature) & (pl.col("provider") == provider)
                             & (pl.col("model") == model)).row(0, named=True)
        assert got["input_tokens"] == tokens
        assert got["prompt_tokens_p50"] == pytest.approx(prompt, rel=0.02)
        assert got["response_tokens_p50"] == pytest.approx(response, rel=0.02)
        assert got["response_tokens_p90"] == pytest.approx(response_p90, rel=0.02)


def test_report_figures_equal_raw_figures(db: psycopg.Connection[Any], traffic: tuple[int, dt.datetime]) -> None:
    org_id, end = traffic
    features, _ = report_frame(db, org_id, 1, end)
    want = reference(db, org_id, end - dt.timedelta(days=1), end, "feature")
    before = reference(db, org_id, end - dt.timedelta(days=2), end - dt.timedelta(days=1), "feature")
    for row in features.iter_rows(named=True):
        key = None if row["feature"] == analytics.UNTAGGED else row["feature"]
        assert (row["requests"], row["errors"]) == (want[key]["requests"], want[key]["errors"])
        assert row["cost_usd"] == float(want[key]["cost_usd"])
        assert row["change"] == pytest.approx(float(want[key]["cost_usd"]) / float(before[key]["cost_usd"]) - 1)
        assert row["latency_ms_p95"] == pytest.approx(want[key]["latency_ms_p95"], rel=0.02)
    assert features["requests"].sum() == sum(r["requests"] for r in want.values())


def test_an_edge_hour_without_raw_events_counts_whole(db: psycopg.Connection[Any], traffic: tuple[int, dt.datetime],
                                                      ) -> None:
    """Raw events dropped by retention, rollups kept: the window's edge moves to the nearest hour
    boundary (the hour counts whole on the side of its longer piece), sums stay whole."""
    org_id, end = traffic
    hour = (end - dt.timedelta(hours=60)).replace(minute=0, second=0, microsecond=0)
    kept = db.execute("SELECT count(*) FROM events WHERE org_id = %s AND created_at >= %s AND created_at < %s",
                      (org_id, hour, hour + dt.timedelta(hours=1))).fetchone()
    # The load reads on a connection of its own: the deletion is committed, and undone after.
    db.execute("CREATE TEMP TABLE gone AS SELECT * FROM events WHERE org_id = %s AND created_at < %s",
               (org_id, hour + dt.timedelta(hours=1)))
    db.execute("DELETE FROM events WHERE org_id = %s AND created_at < %s", (org_id, hour + dt.timedelta(hours=1)))
    try:
        late = analytics.load_rollups(db, org_id, hour + dt.timedelta(minutes=50), end, now=end)
        early = analytics.load_rollups(db, org_id, hour + dt.timedelta(minutes=10), end, now=end)
        n_late = late.select(pl.col("requests").sum()).collect().item()
        n_early = early.select(pl.col("requests").sum()).collect().item()
    finally:
        db.execute("INSERT INTO events SELECT * FROM gone")
        db.execute("DROP TABLE gone")
    after = db.execute("SELECT count(*) FROM events WHERE org_id = %s AND created_at >= %s",
                       (org_id, hour + dt.timedelta(hours=1))).fetchone()
    assert kept is not None and after is not None and kept[0] > 0
    assert n_late == after[0]  # 50 minutes in: the hour's longer piece lies before the window
    assert n_early == after[0] + kept[0]  # 10 minutes in: the longer piece is inside, so the whole hour


def test_whole_days_from_the_daily_rollups_keep_windows_exact(db: psycopg.Connection[Any],
                                                              traffic: tuple[int, dt.datetime]) -> None:
    """A window that starts and ends mid-day, cut mid-day too, loaded with `days=True`: whole days
    from `rollup_daily`, the other hours from `rollup_hourly`, mid-hour edges from raw events.
    Every sum equals the raw one, per window, feature and day; percentiles within 2 %."""
    org_id, end = traffic
    start, stop = end - dt.timedelta(hours=70, minutes=17), end - dt.timedelta(minutes=3)
    cut = start + dt.timedelta(hours=13, minutes=29)
    runs = whole_days(start, stop, [cut], end)
    assert runs, "the window holds whole days"
    frame = analytics.load_rollups(db, org_id, start, stop, cuts=[cut], now=end, days=True).collect()
    for first, last in runs:  # each whole day is one row per group, at its midnight
        inside = frame.filter((pl.col("since") >= first) & (pl.col("since") < last))
        assert inside.height > 0 and set(inside["since"].dt.hour()) == {0}
        assert inside.height == inside.select(pl.struct("since", *DIMENSIONS).n_unique()).item()
    lazy = frame.lazy()
    for a, b in ((start, stop), (start, cut), (cut, stop)):
        got = analytics.window(lazy, a, b).select(pl.col(*COUNTS, "cost_usd").sum()).collect().row(0, named=True)
        want = reference(db, org_id, a, b)[None]
        for column in REFERENCE:
            assert got[{"message_count": "message_count_sum"}.get(column, column)] == want[column], (column, a, b)
    current, previous = analytics.window(lazy, cut, stop), analytics.window(lazy, start, cut)
    got_features = {r["feature"] if r["feature"] != analytics.UNTAGGED else None: r
                    for r in analytics.breakdown(current, previous, by="feature").collect().iter_rows(named=True)}
    want_features, before = reference(db, org_id, cut, stop, "feature"), reference(db, org_id, start, cut, "feature")
    assert set(got_features) == set(want_features)
    for key, row in want_features.items():
        figure = got_features[key]
        assert (figure["requests"], figure["errors"], figure["input_tokens"], figure["output_tokens"]) == (
            row["requests"], row["errors"], row["input_tokens"], row["output_tokens"])
        assert figure["cost_usd"] == float(row["cost_usd"])
        assert figure["previous_cost_usd"] == float(before[key]["cost_usd"])
        for p95 in ("latency_ms_p95", "ttft_ms_p95", "overhead_ms_p95"):
            assert figure[p95] == pytest.approx(row[p95], rel=0.02), (key, p95)
    series = analytics.timeseries(lazy, "1d", start=start, end=stop).filter(pl.col("requests") > 0).collect()
    rows = db.execute(
        "SELECT date_trunc('day', created_at, 'UTC'), count(*), sum(cost_usd), coalesce(sum(output_tokens), 0),"
        " percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms) FROM events"
        " WHERE org_id = %s AND created_at >= %s AND created_at < %s GROUP BY 1", (org_id, start, stop),
    ).fetchall()
    assert series.height == len(rows) >= 3
    want_days = {day: rest for day, *rest in rows}
    for row in series.iter_rows(named=True):
        n, cost, tokens, p95 = want_days[row["bucket"]]
        assert (row["requests"], row["cost_usd"], row["output_tokens"]) == (n, float(cost), tokens)
        assert row["latency_ms_p95"] == pytest.approx(p95, rel=0.02)


def test_report_over_whole_days_equals_raw_figures(db: psycopg.Connection[Any],
                                                   traffic: tuple[int, dt.datetime]) -> None:
    """`lectr report --days 2` mid-day: its windows hold whole days (read from `rollup_daily`)."""
    org_id, end = traffic
    assert whole_days(end - dt.timedelta(days=2), end, [], end)
    features, _ = report_frame(db, org_id, 2, end)
    want = reference(db, org_id, end - dt.timedelta(days=2), end, "feature")
    before = reference(db, org_id, end - dt.timedelta(days=4), end - dt.timedelta(days=2), "feature")
    assert features.height == len(want)
    for row in features.iter_rows(named=True):
        key = None if row["feature"] == analytics.UNTAGGED else row["feature"]
        assert (row["requests"], row["errors"], row["input_tokens"]) == (
            want[key]["requests"], want[key]["errors"], want[key]["input_tokens"])
        assert row["cost_usd"] == float(want[key]["cost_usd"])
        assert row["previous_cost_usd"] == float(before[key]["cost_usd"])
        assert row["latency_ms_p95"] == pytest.approx(want[key]["latency_ms_p95"], rel=0.02)
        assert row["ttft_ms_p95"] == pytest.approx(want[key]["ttft_ms_p95"], rel=0.02)
