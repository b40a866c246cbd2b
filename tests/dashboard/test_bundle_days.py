"""The dashboard's 30-day bundles read whole days from the daily rollups: their figures over a
window that starts and ends mid-day must still equal the raw events' exactly."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import psycopg
import pytest

from analytics.load_rollups import whole_days
from dashboard import data
from proxy.store.db import connect, ensure_partitions
from proxy.store.orgs import create_org
from tests.analytics.test_rollup_exactness import COLUMNS, random_events
from tests.rollups_sql import refill


@pytest.fixture
def org_with_traffic(pg_url: str, end: dt.datetime) -> int:
    """An org with 3,000 random events over the 3 days before `end`, and its rollups."""
    with connect(pg_url) as conn:
        ensure_partitions(conn, end, months_back=1)
        org, _ = create_org(conn, f"days-{uuid.uuid4().hex[:8]}")
        with conn.cursor() as cur, cur.copy(f"COPY events ({', '.join(COLUMNS)}) FROM STDIN") as copy:
            for row in random_events(org.id, end - dt.timedelta(minutes=2), 3000, seed=8):
                copy.write_row(row)
        refill(conn, org.id)
    return org.id


def test_thirty_day_bundles_equal_raw_figures(app_env: None, db: psycopg.Connection[Any], org_with_traffic: int,
                                              end: dt.datetime) -> None:
    org_id = org_with_traffic
    start = data.period_start("30d", end)
    since, cuts = data.current_span("30d", end)
    assert data.PERIODS["30d"].daily and whole_days(since, end, cuts, end)
    raw = db.execute(
        "SELECT count(*), count(*) FILTER (WHERE status_code >= 400 OR error_type IS NOT NULL), sum(cost_usd),"
        " coalesce(sum(input_tokens), 0), coalesce(sum(output_tokens), 0),"
        " percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms)"
        " FROM events WHERE org_id = %s AND created_at >= %s AND created_at < %s", (org_id, start, end),
    ).fetchone()
    assert raw is not None
    requests, errors, cost, input_tokens, output_tokens, p95 = raw
    overview = data.overview(org_id, "30d", end)
    assert overview.totals is not None
    totals = overview.totals
    assert (totals["requests"], totals["errors"], totals["input_tokens"], totals["output_tokens"]) == (
        requests, errors, input_tokens, output_tokens)
    assert totals["cost_usd"] == float(cost)
    assert totals["latency_ms_p95"] == pytest.approx(p95, rel=0.02)
    daily = {row[0]: row[1:] for row in db.execute(
        "SELECT date_trunc('day', created_at, 'UTC'), count(*), sum(cost_usd) FROM events"
        " WHERE org_id = %s AND created_at >= %s AND created_at < %s GROUP BY 1", (org_id, start, end),
    ).fetchall()}
    series = overview.series.filter(overview.series["requests"] > 0)
    assert series.height == len(daily) >= 3
    for row in series.iter_rows(named=True):
        assert (row["requests"], row["cost_usd"]) == (daily[row["bucket"]][0], float(daily[row["bucket"]][1]))
    by_provider = {row[0]: row[1:] for row in db.execute(
        "SELECT provider, count(*), sum(cost_usd) FROM events WHERE org_id = %s AND created_at >= %s"
        " AND created_at < %s GROUP BY 1", (org_id, start, end),
    ).fetchall()}
    providers = data.providers(org_id, "30d", end).providers
    assert {row["provider"]: (row["requests"], row["cost_usd"]) for row in providers.iter_rows(named=True)} == {
        provider: (n, float(c)) for provider, (n, c) in by_provider.items()}


def test_periods_charted_by_the_day_start_on_the_hour() -> None:
    """30- and 90-day periods (daily charts) start on the hour, so the period and the previous one
    begin and end on whole rollup hours; shorter periods start to the minute."""
    end = dt.datetime(2026, 12, 3, 3, 15, tzinfo=dt.UTC)
    top = dt.datetime(2026, 12, 3, 3, tzinfo=dt.UTC)
    for period in ("30d", "90d"):
        assert data.period_start(period, end) == top - data.PERIODS[period].length
        since, cuts = data.current_span(period, end)
        assert all(cut == cut.replace(minute=0) for cut in cuts if cut <= end - dt.timedelta(days=2))
    for period in ("24h", "7d"):
        assert data.period_start(period, end) == end - data.PERIODS[period].length
