"""Cached loaders: every figure a page shows, computed by `analytics` for one org and period.

The dashboard computes nothing itself. Each page asks for one bundle (`overview`, `features`,
`providers`, …) keyed by (org id, period, window end); the bundle slices the org's rollup frames
(`analytics.load_rollups`) and collects its figures with `pl.collect_all`. Only the request log
reads raw events (`dashboard.request_log`).

Four rollup loads, run at once (threads; each mostly waits for Postgres): `current` and
`previous` are cached together (every page but the recommendations shows both), `recent` and
`health` on their own, started beside them so that the next page finds them loaded:

- `current`: the period, and before it the anomalies' history, with the latency and TTFT
  histograms, cut where the period starts; whole days as one row each (`rollup_daily`) when the
  period's charts are daily (30 and 90 days), else hours;
- `previous`: the period of the same length before, sums only (it feeds `change`), whole days
  as day rows;
- `recent`: the recommendations' last `RECOMMEND_DAYS` days, with the token histograms, whole
  days as day rows;
- `health`: the provider health's last 24 hours (`analytics.load_health`).

Each frame lives in `st.cache_resource`: `st.cache_data` pickles and copies its value on every
hit; a polars frame is immutable, so sharing one object between sessions is safe. The figures
(small frames) live in `st.cache_data`, as Streamlit intends for data.

The window end is the current time rounded up to the minute, so every rerun within a minute
hits the cache and a new minute brings new events. It lies after every event written so far, so
the hour it falls in comes whole from the rollups. The periods charted by the day and the
recommendations' week start on the hour (`period_start`, `recent_start`); the other cuts (the
shorter periods' start, the health windows) share the end's minute and read at most half an
hour of raw events each.
"""

from __future__ import annotations

import datetime as dt
import importlib
import threading
from concurrent.futures import Future, ThreadPoolExecutor
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

    @property
    def daily(self) -> bool:
        """Whether the period's charts are by the day (then whole days load as one row each)."""
        return self.every.endswith("d")


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
# ADBC driver, Altair and its schema, pandas for styled tables, and genai-prices, ~0.3-0.4 s, which
# the recommendations reprice with on their first card).
WARM_MODULES = ("adbc_driver_postgresql.dbapi", "altair", "pandas", "genai_prices")


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


# Histograms per load (each costs load time): the pages show latency and TTFT percentiles (not
# the overhead's, whose p95 stays null here); the recommendations read token sizes.
CURRENT_HISTOGRAMS = ("latency_ms", "ttft_ms")


def _day(at: dt.datetime) -> dt.datetime:
    return at.replace(hour=0, minute=0, second=0, microsecond=0)


def period_start(period: str, end: dt.datetime) -> dt.datetime:
    """Where the period ending at `end` starts (the previous period is as long, just before).

    The period's length before `end`, except that a period charted by the day starts on the hour
    (the top of the hour `end` falls in, less the length): a daily chart cannot show the minutes,
    and both periods then begin and end on whole rollup hours, so neither load reads raw events
    at those edges (up to half an hour of events each: 3 of the 6 raw edges of a bundle). The
    period holds the minutes of the current hour more than its length (at most 0.05 % of 30
    days' `change`), the previous period exactly its length.
    """
    spec = PERIODS[period]
    return (end.replace(minute=0, second=0, microsecond=0) if spec.daily else end) - spec.length


def current_span(period: str, end: dt.datetime) -> tuple[dt.datetime, list[dt.datetime]]:
    """(where the `current` load starts, where it is cut): the period, and the anomalies'
    history from the start of the day `ANOMALY_HISTORY` before it; cut at the period start.
    (The provider health, whose windows start mid-hour, has a load of its own: `_health`.)"""
    start = period_start(period, end)
    return min(start, _day(start - ANOMALY_HISTORY)), [start]


def _load_current(org_id: int, period: str, end: dt.datetime) -> pl.DataFrame:
    since, cuts = current_span(period, end)
    return analytics.load_rollups(database().url, org_id, since, end, cuts=cuts, histograms=CURRENT_HISTOGRAMS,
                                  days=PERIODS[period].daily).collect()


def _load_previous(url: str, org_id: int, period: str, end: dt.datetime) -> pl.DataFrame:
    start = period_start(period, end)
    return analytics.load_rollups(url, org_id, start - PERIODS[period].length, start, histograms=(),
                                  days=True).collect()


# Loads run here beside the script thread: each mostly waits for Postgres and decodes Arrow with
# the GIL released. A load calls no Streamlit function (its thread has no script context).
_LOADS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="lectr-load")


@st.cache_resource(ttl=TTL, max_entries=16, show_spinner=False)
def _frames(org_id: int, period: str, end: dt.datetime) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(`current`, `previous`), loaded at once, so the page waits for the longer load, not for
    both; the recommendations' `recent` starts beside them (the next page likely wants it)."""
    previous = _LOADS.submit(_load_previous, database().url, org_id, period, end)
    _recent_load(org_id, end)
    _health_load(org_id, end)
    current = _load_current(org_id, period, end)
    return current, previous.result()


def _current(org_id: int, period: str, end: dt.datetime) -> pl.DataFrame:
    return _frames(org_id, period, end)[0]


def _previous(org_id: int, period: str, end: dt.datetime) -> pl.DataFrame:
    return _frames(org_id, period, end)[1]


def recent_start(end: dt.datetime) -> dt.datetime:
    """Where the recommendations' window starts: `RECOMMEND_DAYS` days before the top of the hour
    `end` falls in, so it starts on a whole rollup hour and the load reads no raw events there
    (a week's token sizes do not turn on the minutes). The cards scale the window's own length
    (`recent_days`) to a month."""
    return end.replace(minute=0, second=0, microsecond=0) - dt.timedelta(days=RECOMMEND_DAYS)


def recent_days(end: dt.datetime) -> float:
    """The length of the recommendations' window in days (`RECOMMEND_DAYS` and the minutes of
    the current hour)."""
    return (end - recent_start(end)) / dt.timedelta(days=1)


def _load_recent(url: str, org_id: int, end: dt.datetime) -> pl.DataFrame:
    return analytics.load_rollups(url, org_id, recent_start(end), end, histograms=analytics.RECOMMEND_HISTOGRAMS,
                                  days=True).collect()


@st.cache_resource(ttl=TTL, max_entries=16, show_spinner=False)
def _recent_load(org_id: int, end: dt.datetime) -> Future[pl.DataFrame]:
    """The recommendations' last `RECOMMEND_DAYS` days, loading in the background."""
    return _LOADS.submit(_load_recent, database().url, org_id, end)


def _result(load: Any, org_id: int, end: dt.datetime) -> pl.DataFrame:
    """The frame of a background load (`load`: a cached function returning its future); a failed
    load is not kept, so the next rerun tries again."""
    try:
        return load(org_id, end).result()
    except Exception:
        load.clear()
        raise


def _recent(org_id: int, end: dt.datetime) -> pl.DataFrame:
    return _result(_recent_load, org_id, end)


def _collect_health(url: str, org_id: int, end: dt.datetime) -> pl.DataFrame:
    return analytics.load_health(url, org_id, end).collect()


@st.cache_resource(ttl=TTL, max_entries=16, show_spinner=False)
def _health_load(org_id: int, end: dt.datetime) -> Future[pl.DataFrame]:
    """The provider health's 24 hours (`analytics.load_health`), loading in the background."""
    return _LOADS.submit(_collect_health, database().url, org_id, end)


def _health(org_id: int, end: dt.datetime) -> pl.DataFrame:
    return _result(_health_load, org_id, end)


def _periods(org_id: int, period: str, end: dt.datetime) -> tuple[pl.LazyFrame, pl.LazyFrame, dt.datetime]:
    """(current, previous, start): the period and the one of the same length before it."""
    start = period_start(period, end)
    current = analytics.window(_current(org_id, period, end).lazy(), start, end)
    return current, _previous(org_id, period, end).lazy(), start


def _whole(frame: pl.LazyFrame) -> pl.LazyFrame:
    """All events under one key, so `analytics.breakdown` yields the org's totals as one row."""
    return frame.with_columns(pl.lit("all").alias("scope"))


def _first_row(frame: pl.DataFrame) -> dict[str, Any] | None:
    return frame.row(0, named=True) if frame.height else None


@st.cache_data(ttl=TTL, show_spinner=False)
def has_traffic(org_id: int) -> bool:
    """Whether the org has ever sent a request (decides between a chart and the quickstart)."""
    with database().read() as conn:
        row = conn.execute(
            "SELECT EXISTS (SELECT 1 FROM rollup_hourly WHERE org_id = %s)"
            " OR EXISTS (SELECT 1 FROM events WHERE org_id = %s)", (org_id, org_id),
        ).fetchone()
    return bool(row and row[0])


@dataclass(frozen=True, slots=True)
class Reach:
    raw: dt.datetime | None  # the oldest raw event still stored: how far back the request log goes
    rollups: dt.datetime | None  # the oldest rollup hour: how far back the figures go


@st.cache_data(ttl=TTL, show_spinner=False)
def reach(org_id: int) -> Reach:
    """How far back raw events and rollups go (`LECTR_RETENTION_MONTHS` may drop raw events
    long before `LECTR_ROLLUP_RETENTION_MONTHS` drops rollups)."""
    with database().read() as conn:
        raw = analytics.raw_reach(conn, org_id)
        row = conn.execute("SELECT min(hour) FROM rollup_hourly WHERE org_id = %s", (org_id,)).fetchone()
    return Reach(raw, row[0] if row else None)


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
    series: pl.DataFrame  # `sums_series` per feature (the chart shows cost)


@st.cache_data(ttl=TTL, show_spinner=False)
def features(org_id: int, period: str, end: dt.datetime) -> FeaturesData:
    current, previous, start = _periods(org_id, period, end)
    table, series = pl.collect_all([
        analytics.by_feature(current, previous),
        analytics.sums_series(current, PERIODS[period].every, by="feature", start=start, end=end),
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
    models, by_provider, cost, health, unpriced = pl.collect_all([
        analytics.by_model(current, previous),
        analytics.by_provider(current, previous),
        analytics.cost_by_provider(current, PERIODS[period].every, start=start, end=end),
        analytics.provider_health(_health(org_id, end).lazy(), end),
        analytics.unpriced(current),
    ])
    return ProvidersData(models, by_provider, cost, health, unpriced)


@dataclass(frozen=True, slots=True)
class FilterOptions:
    features: list[str]
    tasks: list[str]
    providers: list[str]
    models: list[str]
    statuses: list[str | int]  # classes ("4xx") and the codes the rollups count (429, 499)


def _keys(frame: pl.DataFrame, column: str, null_label: str | None = None) -> list[Any]:
    """The distinct keys of a breakdown, a null key shown as `null_label` (or left out)."""
    values = frame[column].to_list()
    named = sorted(v for v in values if v is not None)
    return [*named, null_label] if null_label is not None and None in values else named


# The status filters the request log offers for the rollups' status counts (codes in between
# are reachable through "Successful" / "Failed").
STATUS_COUNTS = {"status_429": 429, "status_499": 499}
STATUS_CLASSES = {"status_2xx": "2xx", "status_3xx": "3xx", "status_4xx": "4xx", "status_5xx": "5xx"}


@st.cache_data(ttl=TTL, show_spinner=False)
def filter_options(org_id: int, period: str, end: dt.datetime) -> FilterOptions:
    """The values the request log's filters offer: what the org sent in the period."""
    current, _, _ = _periods(org_id, period, end)
    by_feature, by_task, by_model, statuses = pl.collect_all([
        current.select(analytics.FEATURE.alias("feature")).unique(),
        current.select("task").unique(),
        current.select("provider", "model").unique(),
        current.select(pl.col([*STATUS_CLASSES, *STATUS_COUNTS]).sum()),
    ])
    seen = statuses.row(0, named=True) if statuses.height else {}
    return FilterOptions(
        _keys(by_feature, "feature"), _keys(by_task, "task", NO_TASK), _keys(by_model, "provider"),
        _keys(by_model, "model"),
        [label for column, label in STATUS_CLASSES.items() if seen.get(column)]
        + [code for column, code in STATUS_COUNTS.items() if seen.get(column)],
    )


@dataclass(frozen=True, slots=True)
class RecommendationsData:
    cards: list[dict[str, Any]]  # `recommendations`, largest saving first
    protected: pl.DataFrame  # `protected_features`
    window_days: int


@st.cache_data(ttl=TTL, show_spinner=False)
def recommendations(org_id: int, period: str, end: dt.datetime) -> RecommendationsData:
    """Cards over the last `RECOMMEND_DAYS` days whatever the period, as `lectr recommend` does
    (from the top of the hour: `recent_start`)."""
    recent = _recent(org_id, end).lazy()
    bases = analytics.azure_base_models(database().url, org_id, recent)
    cards = analytics.recommendations(recent, recent_days(end), bases)
    return RecommendationsData(cards.to_dicts(), analytics.protected_features(recent).collect(), RECOMMEND_DAYS)


@st.cache_data(ttl=TTL, show_spinner=False)
def anomalies(org_id: int, period: str, end: dt.datetime) -> pl.DataFrame:
    """`analytics.anomalies` whose bucket falls in the period (with history loaded before it)."""
    start = period_start(period, end)
    found = analytics.anomalies(_current(org_id, period, end).lazy(), daily=PERIODS[period].daily)
    # Daily buckets that overlap the period count too (the day the period starts in).
    return found.filter(pl.col("bucket") >= _day(start)).collect()


@st.cache_data(ttl=TTL, show_spinner=False)
def end_users(org_id: int, period: str, end: dt.datetime) -> pl.DataFrame:
    """One row per (end user, feature) over the period (`analytics.end_users.load_end_users`: the
    daily end-user rollup, raw events only for the partial days at the edges)."""
    from analytics.end_users import load_end_users

    return load_end_users(database().url, org_id, period_start(period, end), end).collect()
