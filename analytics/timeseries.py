"""Time series for charts: cost, requests, latency and errors per hour or day, optionally per group.

Buckets with no traffic are filled (zero requests, zero cost, null latency) over the whole range
asked for, so a chart shows a quiet day as a dip rather than drawing a line straight across it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import polars as pl

from analytics.metrics import FEATURE, IS_ERROR, IS_UNPRICED, known_sum


def _bucket_range(
    events: pl.LazyFrame, every: str, start: dt.datetime | None, end: dt.datetime | None
) -> pl.LazyFrame:
    """Every bucket start from `start` (or the first event) to `end` (or the last event)."""
    ts = pl.col("created_at")
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


def timeseries(
    events: pl.LazyFrame,
    every: str = "1d",
    by: str | Sequence[str] | None = None,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
) -> pl.LazyFrame:
    """Per bucket (`every` is a polars duration: "1h", "1d", "1w"), and per `by` when given:

    bucket, [by...], requests, errors, error_rate, cost_usd (null when the bucket had requests
    but none with a known price), unpriced_requests, input_tokens, output_tokens,
    latency_ms_avg, latency_ms_p95. Buckets run from `start` to `end` when given, else from the
    first to the last event; empty ones are filled. Sorted by bucket, then `by`.
    """
    keys = [] if by is None else [by] if isinstance(by, str) else list(by)
    events = events.with_columns(FEATURE.alias("feature"), pl.col("created_at").dt.truncate(every).alias("bucket"))
    grid = _bucket_range(events, every, start, end)
    if keys:
        grid = grid.join(events.select(keys).unique(), how="cross")
    counted = ["requests", "errors", "unpriced_requests", "input_tokens", "output_tokens"]
    return (
        events.group_by("bucket", *keys)
        .agg(
            pl.len().cast(pl.Int64).alias("requests"),
            IS_ERROR.sum().cast(pl.Int64).alias("errors"),
            known_sum("cost_usd").alias("cost_usd"),
            IS_UNPRICED.sum().cast(pl.Int64).alias("unpriced_requests"),
            pl.col("input_tokens").sum(),
            pl.col("output_tokens").sum(),
            pl.col("latency_ms").mean().alias("latency_ms_avg"),
            pl.col("latency_ms").quantile(0.95, interpolation="linear").alias("latency_ms_p95"),
        )
        .join(grid, on=["bucket", *keys], how="right", nulls_equal=True)
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
    return timeseries(events, every, "provider", start, end).select("bucket", "provider", "cost_usd", "requests")
