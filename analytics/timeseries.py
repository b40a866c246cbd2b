"""Time series for charts: cost, requests, latency and errors per bucket of an hour or more,
optionally per group, from rollup frames (a row's bucket is its hour, truncated).

Buckets with no traffic are filled (zero requests, zero cost, null latency) over the whole range
asked for, so a chart shows a quiet day as a dip rather than drawing a line straight across it.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence

import polars as pl

from analytics.metrics import FEATURE, count
from analytics.rollups import cost, mean, with_quantiles


def _bucket_range(
    events: pl.LazyFrame, every: str, start: dt.datetime | None, end: dt.datetime | None
) -> pl.LazyFrame:
    """Every bucket start from `start` (or the first row) to `end` (or the last row)."""
    ts = pl.col("since")
    first = pl.lit(start, pl.Datetime("us", "UTC")) if start is not None else ts.min()
    # `end` is exclusive: the last bucket is the one holding the instant just before it.
    last = pl.lit(end - dt.timedelta(microseconds=1), pl.Datetime("us", "UTC")) if end is not None else ts.max()
    return (
        events.select(first.dt.truncate(every).alias("lo"), last.dt.truncate(every).alias("hi"))
        .filter(pl.col("lo").is_not_null() & pl.col("hi").is_not_null())
        .select(pl.datetime_ranges("lo", "hi", every, time_zone="UTC").alias("bucket"))
        .explode("bucket")
        .drop_nulls()
    )


def _shorter_than_an_hour(every: str) -> bool:
    """Whether a polars duration such as "30m", "1h" or "1d" is less than an hour."""
    match = re.fullmatch(r"(\d+)(ns|us|ms|s|m|h|d|w|mo|q|y)", every)
    if match is None:
        raise ValueError(f"unsupported bucket size {every!r}; use e.g. '1h', '6h' or '1d'")
    return match[2] in {"ns", "us", "ms", "s", "m"} and not (match[2] == "m" and int(match[1]) % 60 == 0)


def timeseries(
    events: pl.LazyFrame,
    every: str = "1d",
    by: str | Sequence[str] | None = None,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
) -> pl.LazyFrame:
    """Per bucket (`every` is a polars duration of an hour or more: "1h", "6h", "1d", "1w"), and
    per `by` when given:

    bucket, [by...], requests, errors, error_rate, cost_usd (null when the bucket had requests
    but none with a known price), unpriced_requests, input_tokens, output_tokens,
    latency_ms_avg, latency_ms_p95. Buckets run from `start` to `end` when given, else from the
    first to the last row; empty ones are filled. The first and last buckets hold what the
    frame holds of them (a window starting mid-hour starts mid-bucket). Sorted by bucket, then `by`.
    """
    return _series(events, every, by, (start, end), True)


def sums_series(
    events: pl.LazyFrame,
    every: str = "1d",
    by: str | Sequence[str] | None = None,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
) -> pl.LazyFrame:
    """`timeseries` without the p95 (`latency_ms_p95` null): for charts and checks of costs,
    counts and rates, which would otherwise pay for merging a histogram per bucket and group."""
    return _series(events, every, by, (start, end), False)


def _series(
    events: pl.LazyFrame,
    every: str,
    by: str | Sequence[str] | None,
    bounds: tuple[dt.datetime | None, dt.datetime | None],
    p95: bool,
) -> pl.LazyFrame:
    keys = [] if by is None else [by] if isinstance(by, str) else list(by)
    if _shorter_than_an_hour(every):
        raise ValueError(f"buckets of {every!r} are finer than the rollups' hour")
    events = events.with_columns(FEATURE.alias("feature"), pl.col("hour").dt.truncate(every).alias("bucket"))
    grid = _bucket_range(events, every, *bounds)
    if keys:
        grid = grid.join(events.select(keys).unique(), how="cross")
    counted = ["requests", "errors", "unpriced_requests", "input_tokens", "output_tokens"]
    sums = events.group_by("bucket", *keys).agg(
        count("requests").alias("requests"),
        count("errors").alias("errors"),
        cost().alias("cost_usd"),
        count("unpriced").alias("unpriced_requests"),
        count("input_tokens").alias("input_tokens"),
        count("output_tokens").alias("output_tokens"),
        mean("latency_ms").alias("latency_ms_avg"),
    )
    if p95:
        sums = with_quantiles(sums, events, ["bucket", *keys], {"latency_ms_p95": ("latency_ms", 0.95)})
    else:
        sums = sums.with_columns(pl.lit(None, pl.Float64).alias("latency_ms_p95"))
    return (
        sums.join(grid, on=["bucket", *keys], how="right", nulls_equal=True)
        .with_columns(pl.col(counted).fill_null(0))
        .with_columns(
            error_rate=pl.when(pl.col("requests") > 0).then(pl.col("errors") / pl.col("requests")),
            cost_usd=pl.when(pl.col("requests") == 0).then(0.0).otherwise(pl.col("cost_usd")),
        )
        .select(
            "bucket", *keys, "requests", "errors", "error_rate", "cost_usd", "unpriced_requests",
            "input_tokens", "output_tokens", "latency_ms_avg", "latency_ms_p95",
        )
        .sort("bucket", *keys, nulls_last=True)
    )


def cost_by_provider(
    events: pl.LazyFrame, every: str = "1d", start: dt.datetime | None = None, end: dt.datetime | None = None
) -> pl.LazyFrame:
    """Cost per provider over time (bucket, provider, cost_usd, requests): the stacked chart."""
    return sums_series(events, every, "provider", start, end).select("bucket", "provider", "cost_usd", "requests")
