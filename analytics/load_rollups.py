"""Postgres → polars: one org's rollups for a window, exact even when the window starts or ends
mid-hour.

A window `[start, end)` reads:

- with `days=True`, the whole UTC days inside it that no boundary or cut falls inside from
  `rollup_daily` (one row per day and group, `hour` and `since` its midnight: the hourly rows of
  that day merged, so every figure is the same), for figures that bucket by a day or more, or not
  by time; a 90-day window then reads ~24x fewer rows and histogram buckets. `rollup_daily`
  holds the hours before the watermark `rollup_daily_sealed.through` (migration 010, an hour of
  today once the last hour is sealed), so only the days before the watermark's day come as days,
  and the hours from its midnight on as hours;
- the other whole hours from `rollup_hourly` (one row per hour and group, histograms as lists);
- for each hour that a window boundary or a `cut` falls inside (a cut is another boundary the
  caller will slice at, e.g. where the current period starts), the pieces of that hour. All
  pieces but the longest are aggregated from raw events (`rollups.rollup`, the writer's own
  definitions); the longest is the hour's rollup row minus them. So a cut costs at most half an
  hour of raw events, and every sum, count and histogram stays exact.

An instant at or after `now` needs no raw events: nothing can have started after it, so the
hour's rollup row is already the piece before it. When raw events of an hour are gone
(`LECTR_RETENTION_MONTHS` shorter than the rollups'), the hour counts whole on the side of its
longest piece: the window's edge moves to within half an hour, the numbers stay whole.

ADBC streams both queries as Arrow (list columns for the histograms), as `load.load_events` does.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl
import psycopg
from psycopg import sql

from analytics.load import _dsn, fetch
from analytics.metrics import HEALTH_WINDOWS, health_cuts
from analytics.rollups import (
    COUNTS,
    DIMENSIONS,
    FLOAT_SUMS,
    HISTOGRAMS,
    ROLLUP_SCHEMA,
    conform,
    merge,
    rollup,
    window,
)

HOUR = dt.timedelta(hours=1)
DAY = dt.timedelta(days=1)
# What `rollups.rollup` reads from a raw event, cost as text so it stays an exact decimal.
RAW_COLUMNS = (
    "created_at", *DIMENSIONS, "status_code", "error_type", "input_tokens", "output_tokens",
    "cached_input_tokens", "cache_write_tokens", "reasoning_tokens", "usage_estimated", "stream",
    "latency_ms", "ttft_ms", "upstream_ms", "message_count", "request_bytes", "response_bytes",
)
RAW_QUERY_COLUMNS = (*RAW_COLUMNS, "cost_usd")  # what an edge is read with (cost as text: `raw_query`)


def _hour(at: dt.datetime) -> dt.datetime:
    return at.replace(minute=0, second=0, microsecond=0)


Plan = dict[dt.datetime, tuple[list[tuple[dt.datetime, dt.datetime]], tuple[dt.datetime, dt.datetime]]]


def edge_plan(start: dt.datetime, end: dt.datetime, cuts: Iterable[dt.datetime], now: dt.datetime) -> Plan:
    """Per hour to cut: (the pieces to read raw, the piece derived by subtraction).

    The points are `start`, `end` and `cuts` inside the window that are not hour boundaries and
    lie before `now`; each hour holding some is split at them into pieces.
    """
    points = sorted({p for p in (start, end, *cuts) if start <= p <= end and p < now and p != _hour(p)})
    by_hour: dict[dt.datetime, list[dt.datetime]] = {}
    for point in points:
        by_hour.setdefault(_hour(point), []).append(point)
    plan = {}
    for hour, inside in by_hour.items():
        bounds = [hour, *inside, hour + HOUR]
        pieces = list(zip(bounds, bounds[1:], strict=False))
        longest = max(pieces, key=lambda p: p[1] - p[0])
        plan[hour] = ([p for p in pieces if p != longest], longest)
    return plan


def _midnight(at: dt.datetime) -> dt.datetime:
    return at.astimezone(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def whole_days(
    start: dt.datetime, end: dt.datetime, cuts: Iterable[dt.datetime], now: dt.datetime
) -> list[tuple[dt.datetime, dt.datetime]]:
    """The runs `[from, to)` of whole UTC days inside `[start, end)` that no cut falls strictly
    inside (a cut at or after `now` splits nothing: nothing has happened after it)."""
    points = sorted({p for p in cuts if start < p < end and p < now and p != _midnight(p)})
    first = _midnight(start) + (DAY if start != _midnight(start) else dt.timedelta(0))
    runs: list[tuple[dt.datetime, dt.datetime]] = []
    day = first
    while day + DAY <= end:
        if not any(day < p < day + DAY for p in points):
            if runs and runs[-1][1] == day:
                runs[-1] = (runs[-1][0], day + DAY)
            else:
                runs.append((day, day + DAY))
        day += DAY
    return runs


def _outside(start: dt.datetime, end: dt.datetime,
             runs: Sequence[tuple[dt.datetime, dt.datetime]]) -> list[tuple[dt.datetime, dt.datetime]]:
    """`[start, end)` less the `runs` (sorted, inside it): the ranges left, in order."""
    left, at = [], start
    for a, b in runs:
        if at < a:
            left.append((at, a))
        at = max(at, b)
    if at < end:
        left.append((at, end))
    return left


# `rollup_daily` holds the hourly rows before this hour (migration 010), so its days before this
# one's day are whole, and the rest comes from the hours from its midnight on. Read in the
# statement that reads the rows: one snapshot sees both. No watermark: every day comes as hours.
_SEALED = "coalesce((SELECT through FROM rollup_daily_sealed), '-infinity'::timestamptz)"
_SEALED_DAY = sql.SQL(f"(({_SEALED}) AT TIME ZONE 'UTC')::date")
_UNSEALED_FROM = sql.SQL(f"date_trunc('day', {_SEALED}, 'UTC')")


def rollup_query(
    org_id: int, start: dt.datetime, end: dt.datetime, histograms: Sequence[str],
    days: Sequence[tuple[dt.datetime, dt.datetime]] = (),
) -> str:
    """The rollup rows of every hour that overlaps `[start, end)` (values inlined, quoted by
    psycopg, so ADBC can stream the result with COPY; see `load.build_query`), except that the
    `days` runs come from `rollup_daily`, one row per day (its midnight as `hour`), as far as its
    rows are whole (the days before the watermark's, `_SEALED`); the later days of the runs come
    as hours."""
    columns = sql.SQL(", ").join(sql.SQL(c) for c in (
        *DIMENSIONS, *COUNTS, *FLOAT_SUMS, "cost_usd::text AS cost_usd", "last_error_at",
        *(f"{h}_{p}" for h in histograms for p in "bc"),
    ))

    def spans(column: str, ranges: Sequence[tuple[Any, Any]]) -> sql.Composable:
        return sql.SQL(" OR ").join(
            sql.SQL("({} >= {} AND {} < {})").format(sql.Identifier(column), sql.Literal(a), sql.Identifier(column),
                                                    sql.Literal(b))
            for a, b in ranges
        )

    hours = []
    if outside := _outside(_hour(start), end, days):
        hours.append(spans("hour", outside))
    if days:  # the days not whole in rollup_daily yet (from the watermark's day on) come as hours
        hours.append(sql.SQL("(hour >= {} AND ({}))").format(_UNSEALED_FROM, spans("hour", days)))
    parts = []
    if hours:
        parts.append(sql.SQL("SELECT hour, {} FROM rollup_hourly WHERE org_id = {} AND ({})").format(
            columns, sql.Literal(int(org_id)), sql.SQL(" OR ").join(hours)))
    if days:
        parts.append(sql.SQL(
            "SELECT (day::timestamp AT TIME ZONE 'UTC') AS hour, {} FROM rollup_daily WHERE org_id = {} AND day < {}"
            " AND ({})"
        ).format(columns, sql.Literal(int(org_id)), _SEALED_DAY, spans("day", [(a.date(), b.date()) for a, b in days])))
    if not parts:  # an empty window: no row, the columns typed
        parts.append(sql.SQL("SELECT hour, {} FROM rollup_hourly WHERE false").format(columns))
    return sql.SQL(" UNION ALL ").join(parts).as_string(None)


def raw_query(
    org_id: int, ranges: Sequence[tuple[dt.datetime, dt.datetime]], columns: Sequence[str] = RAW_QUERY_COLUMNS
) -> str:
    """The raw events of the given `[from, to)` ranges, with the `columns` (by default all that
    `rollups.rollup` reads; the cost as text, so it stays an exact decimal)."""
    spans = sql.SQL(" OR ").join(
        sql.SQL("(created_at >= {} AND created_at < {})").format(sql.Literal(a), sql.Literal(b)) for a, b in ranges
    )
    query = sql.SQL("SELECT {} FROM events WHERE org_id = {} AND ({})").format(
        sql.SQL(", ").join(sql.SQL("cost_usd::text AS cost_usd") if c == "cost_usd" else sql.Identifier(c)
                           for c in columns),
        sql.Literal(int(org_id)), spans,
    )
    return query.as_string(None)


def _decimal_cost(frame: pl.DataFrame) -> pl.DataFrame:
    if "cost_usd" not in frame.columns:
        return frame
    return frame.with_columns(pl.col("cost_usd").str.to_decimal(scale=10))


def _negated(frame: pl.LazyFrame, histograms: Sequence[str]) -> pl.LazyFrame:
    lists = [f"{h}_c" for h in histograms]
    return frame.with_columns(
        *(-pl.col(c) for c in (*COUNTS, *FLOAT_SUMS, "cost_usd")),
        *(pl.col(c).list.eval(-pl.element()) for c in lists),
        pl.lit(None, pl.Datetime("us", "UTC")).alias("last_error_at"),
    )


def assemble(
    hourly: pl.LazyFrame,
    raw: pl.LazyFrame,
    plan: Plan,
    start: dt.datetime,
    end: dt.datetime,
    histograms: Sequence[str] = HISTOGRAMS,
) -> pl.LazyFrame:
    """Whole hours from `hourly`, the cut hours as pieces (raw ones from `raw`, the longest by
    subtraction), sliced to `[start, end)`. Pure: `load_rollups` is this plus the two queries."""
    hourly = conform(hourly.with_columns(pl.col("hour").alias("since")))
    cut_hours = pl.LazyFrame(
        {"hour": list(plan), "_derived": [d[0] for _, d in plan.values()], "_until": [d[1] for _, d in plan.values()]},
        schema={"hour": pl.Datetime("us", "UTC"), "_derived": pl.Datetime("us", "UTC"),
                "_until": pl.Datetime("us", "UTC")},
    )
    whole = hourly.join(cut_hours, on="hour", how="anti")
    if plan:
        points = [b for pieces, _ in plan.values() for piece in pieces for b in piece]
        pieces = rollup(raw, points, histograms).collect().lazy()  # used twice below: aggregated once
        derived = pl.concat([
            hourly.join(cut_hours, on="hour", how="semi"),
            _negated(pieces, histograms),
        ]).join(cut_hours, on="hour").with_columns(pl.col("_derived").alias("since"))
        derived = (
            merge(derived, ["hour", "since", *DIMENSIONS], histograms)
            .join(cut_hours, on="hour")
            .with_columns(
                # The hour's last error belongs to the derived piece only if it falls inside it; else
                # it lies in a later raw piece, and the derived piece's own is found by
                # `_last_errors` where it matters (the piece that ends the window).
                last_error_at=pl.when(pl.col("last_error_at").is_between("_derived", "_until", closed="left"))
                .then(pl.col("last_error_at"))
            )
            .drop("_derived", "_until")
            .filter(pl.col("requests") != 0)
        )
        whole = pl.concat([whole, pieces, conform(derived, ROLLUP_SCHEMA)])
    return window(whole, start, end)


@dataclass(frozen=True, slots=True)
class _Load:
    """What a load reads beside its window: see `load_rollups`. `raw`: the raw columns its edges
    are read with (fewer columns, fewer figures right: `load_health`)."""

    cuts: list[dt.datetime]
    histograms: Sequence[str]
    now: dt.datetime
    days: bool
    raw: Sequence[str] = RAW_QUERY_COLUMNS


def load_rollups(
    source: psycopg.Connection[Any] | str,
    org_id: int,
    start: dt.datetime,
    end: dt.datetime,
    *,
    cuts: Iterable[dt.datetime] = (),
    histograms: Sequence[str] = HISTOGRAMS,
    now: dt.datetime | None = None,
    days: bool = False,
) -> pl.LazyFrame:
    """The org's rollup frame (`rollups.ROLLUP_SCHEMA`, in memory) for `[start, end)`, exact at `start`,
    `end` and every `cut`, so `rollups.window` can slice it there. `histograms` names the
    histograms to load (the others stay null: each costs load time); `now` (default: the clock)
    is the instant after which nothing has happened yet. `days`: whole UTC days may come as one
    row each (for figures bucketed by a day or more, or not by time: not hourly series)."""
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("start and end must be timezone-aware datetimes")
    unknown = [h for h in histograms if h not in HISTOGRAMS]
    if unknown:
        raise ValueError(f"unknown histograms: {unknown}")
    return _load(source, org_id, (start, end), _Load(list(cuts), histograms, now or dt.datetime.now(dt.UTC), days))


# What `metrics.provider_health` reads, and the raw columns that make those figures.
HEALTH_FIGURES = ("requests", "errors", "last_error_at", "latency_ms_sum", "latency_ms_n", "latency_ms_b",
                  "latency_ms_c")
HEALTH_RAW = ("created_at", *DIMENSIONS, "status_code", "error_type", "latency_ms")


def load_health(source: psycopg.Connection[Any] | str, org_id: int, end: dt.datetime) -> pl.LazyFrame:
    """The frame `metrics.provider_health(frame, end)` reads: the 24 hours before `end`, cut at
    `health_cuts(end)`, with only `HEALTH_FIGURES` (the others null). Its raw edges are read with
    the 9 columns those need (`HEALTH_RAW`) instead of 23: the provider health is the one figure
    of a long period's page that needs the minutes, and this keeps its cost off the period's load."""
    spec = _Load(health_cuts(end), ("latency_ms",), dt.datetime.now(dt.UTC), False, HEALTH_RAW)
    frame = _load(source, org_id, (end - max(HEALTH_WINDOWS), end), spec)
    return conform(frame, ["hour", "since", *DIMENSIONS, *HEALTH_FIGURES])


def _load(source: psycopg.Connection[Any] | str, org_id: int, span: tuple[dt.datetime, dt.datetime],
          spec: _Load) -> pl.LazyFrame:
    start, end = span
    histograms, cuts, now = spec.histograms, spec.cuts, spec.now
    plan = edge_plan(start, end, cuts, now)
    ranges = [piece for pieces, _ in plan.values() for piece in pieces]
    # The derived piece that ends the window, when a raw piece follows it: its last error may
    # hide behind the hour's (which lies after the window), so it is looked up.
    closing = plan.get(_hour(end), ([], (end, end)))[1]
    queries = [rollup_query(org_id, start, end, histograms, whole_days(start, end, cuts, now) if spec.days else ())]
    if ranges:
        queries.append(raw_query(org_id, ranges, spec.raw))
    if closing[1] == end and closing[0] < end:
        queries.append(_last_errors_query(org_id, closing))
    frames = fetch(_dsn(source), queries)
    hourly = _decimal_cost(frames[0])
    raw = _decimal_cost(frames[1]) if ranges else None
    last_errors = _last_errors(frames[-1]) if len(frames) > 1 + bool(ranges) else None
    raw_frame = raw.lazy() if raw is not None else pl.LazyFrame(schema={c: pl.Null for c in RAW_COLUMNS})
    frame = assemble(hourly.lazy(), raw_frame, plan, start, end, histograms)
    if last_errors is not None:
        frame = frame.join(last_errors.lazy(), on=["since", *DIMENSIONS], how="left", nulls_equal=True).with_columns(
            last_error_at=pl.when(pl.col("since") == closing[0]).then(pl.col("_last"))
            .otherwise(pl.col("last_error_at"))
        ).drop("_last")
    # Assembled once here: every figure built on the frame branches from it, and a lazy assembly
    # would run again in each branch (measured: 1.3 s of CPU for a report instead of 0.05 s).
    return frame.collect().lazy()


def _last_errors_query(org_id: int, piece: tuple[dt.datetime, dt.datetime]) -> str:
    """The latest error per group within `piece` (since, dimensions, _last), from raw events."""
    query = sql.SQL(
        "SELECT {}::timestamptz AS since, {}, max(created_at) AS _last FROM events WHERE org_id = {}"
        " AND created_at >= {} AND created_at < {} AND (status_code >= 400 OR error_type IS NOT NULL)"
        " GROUP BY {}"
    ).format(
        sql.Literal(piece[0]), sql.SQL(", ").join(sql.SQL("nullif({0}, '') AS {0}").format(sql.Identifier(d))
                                                  for d in DIMENSIONS),
        sql.Literal(int(org_id)), sql.Literal(piece[0]), sql.Literal(piece[1]),
        sql.SQL(", ").join(sql.SQL(str(i + 2)) for i in range(len(DIMENSIONS))),
    )
    return query.as_string(None)


def _last_errors(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.with_columns(pl.col("since").cast(pl.Datetime("us", "UTC")), pl.col(DIMENSIONS).cast(pl.String),
                              pl.col("_last").cast(pl.Datetime("us", "UTC")))


def raw_reach(source: psycopg.Connection[Any], org_id: int) -> dt.datetime | None:
    """The oldest raw event of the org still stored: how far back the request log reaches."""
    row = source.execute("SELECT min(created_at) FROM events WHERE org_id = %s", (org_id,)).fetchone()
    return row[0] if row else None


def azure_base_models(source: psycopg.Connection[Any] | str, org_id: int, frame: pl.LazyFrame) -> pl.DataFrame:
    """(provider, model, base_model): the model Azure reports for each deployment in `frame`.

    The rollups key Azure traffic by deployment name, which prices nothing; the events carry the
    model Azure answered with. One indexed look-up per deployment, the latest event in the day
    from the latest hour (or day) the rollups show it served, so the cost does not grow with the
    window or the traffic.
    """
    latest = (
        frame.filter(pl.col("provider") == "azure")
        .group_by(pl.coalesce("routed_model", "model").alias("model"))
        .agg(pl.col("hour").max())
        .drop_nulls("model")
        .collect()
    )
    schema = {"provider": pl.String, "model": pl.String, "base_model": pl.String}
    if latest.is_empty():
        return pl.DataFrame(schema=schema)
    query = """
        SELECT d.model, (
            SELECT coalesce(e.response_model, e.model) FROM events e
            WHERE e.org_id = %s AND e.provider = 'azure' AND coalesce(e.routed_model, e.model) = d.model
              AND e.created_at >= d.hour AND e.created_at < d.hour + interval '1 day'
            ORDER BY e.created_at DESC LIMIT 1)
        FROM unnest(%s::text[], %s::timestamptz[]) AS d(model, hour)
    """
    params = (org_id, latest["model"].to_list(), latest["hour"].to_list())
    if isinstance(source, str):
        with psycopg.connect(source, autocommit=True) as conn:
            rows = conn.execute(query, params).fetchall()
    else:
        rows = source.execute(query, params).fetchall()
    return pl.DataFrame(
        [("azure", model, base) for model, base in rows if base is not None], schema=schema, orient="row"
    )
