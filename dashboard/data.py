"""Cached loaders: every figure a page shows, computed by `analytics` for one org and period.

The dashboard computes nothing itself. Each page asks for one bundle (`overview`, `features`,
`providers`, …) keyed by (org id, period, window end); the bundle loads the org's events once
through `analytics.load_events` and collects its figures with `pl.collect_all`.

Two caches, on purpose:

- the raw events of a window live in `st.cache_resource` (`_window`): `st.cache_data` pickles
  and copies its value on every hit, which for a million-row frame costs more than the page;
  a polars frame is immutable, so sharing one object between sessions is safe;
- the figures (small frames) live in `st.cache_data`, as Streamlit intends for data.

The window end is the current time rounded up to the minute, so every rerun within a minute
hits the cache and a new minute brings new events.
"""

from __future__ import annotations

import datetime as dt
import importlib
import threading
from dataclasses import dataclass
from typing import Any

import polars as pl
import streamlit as st

import analytics
from analytics.commands import RECOMMEND_DAYS
from dashboard.db import database
from dashboard.request_log import NO_TASK

TTL = dt.timedelta(seconds=60)
# Cost anomalies compare a day with the 7 days before it: load at least this much before a period.
ANOMALY_HISTORY = dt.timedelta(days=8)


@dataclass(frozen=True, slots=True)
class Period:
    label: str
    length: dt.timedelta
    every: str  # chart bucket, a polars duration


PERIODS: dict[str, Period] = {
    "24h": Period("Last 24 hours", dt.timedelta(hours=24), "1h"),
    "7d": Period("Last 7 days", dt.timedelta(days=7), "6h"),
    "30d": Period("Last 30 days", dt.timedelta(days=30), "1d"),
    "90d": Period("Last 90 days", dt.timedelta(days=90), "1d"),
}
DEFAULT_PERIOD = "7d"


def window_end(now: dt.datetime | None = None) -> dt.datetime:
    """Now, rounded up to the next whole minute (UTC): the end of every window in this minute."""
    now = now or dt.datetime.now(dt.UTC)
    return now.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)


# Slow first imports a signed-in page needs (≈2-3 s together on a cold process: pyarrow and the
# ADBC driver, Altair and its schema, pandas for styled tables).
WARM_MODULES = ("adbc_driver_postgresql.dbapi", "altair", "pandas")


def _import_all(modules: tuple[str, ...]) -> None:
    for module in modules:
        importlib.import_module(module)


@st.cache_resource(show_spinner=False)
def warm_up() -> threading.Thread:
    """Import `WARM_MODULES` in the background, once per server, while someone types their key,
    so the first page after sign-in does not pay for them."""
    thread = threading.Thread(target=_import_all, args=(WARM_MODULES,), name="lectr-warm-up", daemon=True)
    thread.start()
    return thread


@st.cache_resource(ttl=TTL, max_entries=16, show_spinner=False)
def _window(org_id: int, start: dt.datetime, end: dt.datetime) -> pl.DataFrame:
    """The org's events with `start <= created_at < end` (the columns the figures read)."""
    return analytics.load_events(database().url, org_id, start, end).collect()


def span(period: str) -> dt.timedelta:
    """How far back one load for `period` reaches: the period and the one before it (changes),
    the anomalies' history, and the recommendations' window. Every page of a period slices this
    one load, so moving between pages never queries Postgres again within the minute."""
    length = PERIODS[period].length
    return max(2 * length, length + ANOMALY_HISTORY, dt.timedelta(days=RECOMMEND_DAYS + 1))


def events(org_id: int, period: str, end: dt.datetime, start: dt.datetime | None = None) -> pl.LazyFrame:
    """The period's load (cached), narrowed to `start` when given."""
    frame = _window(org_id, end - span(period), end).lazy()
    return frame if start is None else frame.filter(pl.col("created_at") >= start)


def _periods(org_id: int, period: str, end: dt.datetime) -> tuple[pl.LazyFrame, pl.LazyFrame, dt.datetime]:
    """(current, previous, start): the period and the one of the same length before it."""
    length = PERIODS[period].length
    start = end - length
    current, previous = analytics.split_periods(events(org_id, period, end), start, end)
    return current, previous, start


def _whole(frame: pl.LazyFrame) -> pl.LazyFrame:
    """All events under one key, so `analytics.breakdown` yields the org's totals as one row."""
    return frame.with_columns(pl.lit("all").alias("scope"))


def _first_row(frame: pl.DataFrame) -> dict[str, Any] | None:
    return frame.row(0, named=True) if frame.height else None


@st.cache_data(ttl=TTL, show_spinner=False)
def has_traffic(org_id: int) -> bool:
    """Whether the org has ever sent a request (decides between a chart and the quickstart)."""
    with database().read() as conn:
        row = conn.execute("SELECT EXISTS (SELECT 1 FROM events WHERE org_id = %s)", (org_id,)).fetchone()
    return bool(row and row[0])


@dataclass(frozen=True, slots=True)
class OverviewData:
    totals: dict[str, Any] | None  # one `breakdown` row for the period, compared with the previous
    previous: dict[str, Any] | None  # the same row for the previous period
    series: pl.DataFrame  # `timeseries` over the period
    untagged: dict[str, Any]  # `untagged_share`


@st.cache_data(ttl=TTL, show_spinner=False)
def overview(org_id: int, period: str, end: dt.datetime) -> OverviewData:
    current, previous, start = _periods(org_id, period, end)
    totals, before, series, untagged = pl.collect_all([
        analytics.breakdown(_whole(current), _whole(previous), by="scope"),
        analytics.breakdown(_whole(previous), by="scope"),
        analytics.timeseries(current, PERIODS[period].every, start=start, end=end),
        analytics.untagged_share(current),
    ])
    return OverviewData(_first_row(totals), _first_row(before), series, untagged.row(0, named=True))


@dataclass(frozen=True, slots=True)
class FeaturesData:
    table: pl.DataFrame  # `by_feature`, current vs previous
    series: pl.DataFrame  # `timeseries` per feature


@st.cache_data(ttl=TTL, show_spinner=False)
def features(org_id: int, period: str, end: dt.datetime) -> FeaturesData:
    current, previous, start = _periods(org_id, period, end)
    table, series = pl.collect_all([
        analytics.by_feature(current, previous),
        analytics.timeseries(current, PERIODS[period].every, by="feature", start=start, end=end),
    ])
    return FeaturesData(table, series)


@dataclass(frozen=True, slots=True)
class ProvidersData:
    models: pl.DataFrame  # `by_model`
    providers: pl.DataFrame  # `by_provider`
    cost: pl.DataFrame  # `cost_by_provider`
    health: pl.DataFrame  # `provider_health` at the window end
    unpriced: pl.DataFrame  # `unpriced`


@st.cache_data(ttl=TTL, show_spinner=False)
def providers(org_id: int, period: str, end: dt.datetime) -> ProvidersData:
    current, previous, start = _periods(org_id, period, end)
    recent = events(org_id, period, end, start - PERIODS[period].length)
    models, by_provider, cost, health, unpriced = pl.collect_all([
        analytics.by_model(current, previous),
        analytics.by_provider(current, previous),
        analytics.cost_by_provider(current, PERIODS[period].every, start=start, end=end),
        analytics.provider_health(recent, min(end, dt.datetime.now(dt.UTC))),
        analytics.unpriced(current),
    ])
    return ProvidersData(models, by_provider, cost, health, unpriced)


@dataclass(frozen=True, slots=True)
class FilterOptions:
    features: list[str]
    tasks: list[str]
    providers: list[str]
    models: list[str]
    statuses: list[int]


def _keys(frame: pl.DataFrame, column: str, null_label: str | None = None) -> list[Any]:
    """The distinct keys of a breakdown, a null key shown as `null_label` (or left out)."""
    values = frame[column].to_list()
    named = sorted(v for v in values if v is not None)
    return [*named, null_label] if null_label is not None and None in values else named


@st.cache_data(ttl=TTL, show_spinner=False)
def filter_options(org_id: int, period: str, end: dt.datetime) -> FilterOptions:
    """The values the request log's filters offer: what the org sent in the period."""
    current, _, _ = _periods(org_id, period, end)
    by_feature, by_task, by_model, by_status = pl.collect_all([
        analytics.by_feature(current),
        analytics.breakdown(current, by="task"),
        analytics.by_model(current),
        analytics.breakdown(current, by="status_code"),
    ])
    return FilterOptions(
        _keys(by_feature, "feature"), _keys(by_task, "task", NO_TASK), _keys(by_model, "provider"),
        _keys(by_model, "model"), _keys(by_status, "status_code"),
    )


@dataclass(frozen=True, slots=True)
class RecommendationsData:
    cards: list[dict[str, Any]]  # `recommendations`, largest saving first
    protected: pl.DataFrame  # `protected_features`
    window_days: int


@st.cache_data(ttl=TTL, show_spinner=False)
def recommendations(org_id: int, period: str, end: dt.datetime) -> RecommendationsData:
    """Cards over the last `RECOMMEND_DAYS` days whatever the period, as `lectr recommend` does."""
    recent = events(org_id, period, end, end - dt.timedelta(days=RECOMMEND_DAYS))
    cards = analytics.recommendations(recent, RECOMMEND_DAYS)
    return RecommendationsData(cards.to_dicts(), analytics.protected_features(recent).collect(), RECOMMEND_DAYS)


@st.cache_data(ttl=TTL, show_spinner=False)
def anomalies(org_id: int, period: str, end: dt.datetime) -> pl.DataFrame:
    """`analytics.anomalies` whose bucket falls in the period (with history loaded before it)."""
    start = end - PERIODS[period].length
    found = analytics.anomalies(events(org_id, period, end, start - ANOMALY_HISTORY))
    # Daily buckets that overlap the period count too (the day the period starts in).
    first = start.replace(hour=0, minute=0, second=0, microsecond=0)
    return found.filter(pl.col("bucket") >= first).collect()


@st.cache_data(ttl=TTL, show_spinner=False)
def end_users(org_id: int, period: str, end: dt.datetime) -> pl.DataFrame:
    """One row per (end user, feature) over the period (`analytics.end_users.load_end_users`: the
    daily end-user rollup, raw events only for the partial days at the edges)."""
    from analytics.end_users import load_end_users

    return load_end_users(database().url, org_id, end - PERIODS[period].length, end).collect()
