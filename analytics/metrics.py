"""Breakdowns per feature, model and provider; provider health; untagged and unpriced traffic.

Every function takes a lazy frame of events (see `load.EVENT_SCHEMA`) and returns a lazy frame:
one chain of expressions per figure, collected by the caller. Conventions shared by all figures:

- an error is `status_code >= 400` or a non-null `error_type` (timeouts carry one);
- `cost_usd` is the sum of the known costs and stays null when no request in the group has a
  price, and `unpriced_requests` counts the successful requests without a price, so an unknown
  price is never read as a free request;
- percentiles interpolate linearly (numpy's default), so hand-computed answers match;
- a null feature is shown as `untagged`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import polars as pl

UNTAGGED = "untagged"
# Above this share of untagged requests the dashboard asks people to send `X-Lectr-Feature`.
TAGGING_PROMPT_SHARE = 0.2

# Provider health: the error rate of the last hour decides once it has this many requests
# (otherwise the last 24 hours do); thresholds between ok / degraded / failing.
HEALTH_MIN_REQUESTS = 5
HEALTH_DEGRADED = 0.05
HEALTH_FAILING = 0.25

IS_ERROR: pl.Expr = (pl.col("status_code") >= 400) | pl.col("error_type").is_not_null()
IS_UNPRICED: pl.Expr = pl.col("cost_usd").is_null() & ~IS_ERROR
FEATURE: pl.Expr = pl.col("feature").fill_null(UNTAGGED)
OVERHEAD_MS: pl.Expr = pl.col("latency_ms") - pl.col("upstream_ms")


def _p95(column: str | pl.Expr) -> pl.Expr:
    expr = pl.col(column) if isinstance(column, str) else column
    return expr.quantile(0.95, interpolation="linear")


def known_sum(column: str) -> pl.Expr:
    """Sum of the non-null values, or null when every value is null (unknown is not zero)."""
    return pl.when(pl.col(column).count() > 0).then(pl.col(column).sum())


def totals() -> list[pl.Expr]:
    """The aggregations every breakdown shares (requests, tokens, cost, latency, errors)."""
    return [
        pl.len().cast(pl.Int64).alias("requests"),
        IS_ERROR.sum().cast(pl.Int64).alias("errors"),
        IS_ERROR.mean().alias("error_rate"),
        pl.col("input_tokens").sum().alias("input_tokens"),
        pl.col("output_tokens").sum().alias("output_tokens"),
        pl.col("cached_input_tokens").sum().alias("cached_input_tokens"),
        known_sum("cost_usd").alias("cost_usd"),
        IS_UNPRICED.sum().cast(pl.Int64).alias("unpriced_requests"),
        pl.col("latency_ms").mean().alias("latency_ms_avg"),
        _p95("latency_ms").alias("latency_ms_p95"),
        _p95("ttft_ms").alias("ttft_ms_p95"),
        OVERHEAD_MS.mean().alias("overhead_ms_avg"),
        _p95(OVERHEAD_MS).alias("overhead_ms_p95"),
    ]


def _keys(by: str | Sequence[str]) -> list[str]:
    return [by] if isinstance(by, str) else list(by)


def _labelled(events: pl.LazyFrame) -> pl.LazyFrame:
    return events.with_columns(FEATURE.alias("feature"))


def breakdown(
    current: pl.LazyFrame, previous: pl.LazyFrame | None = None, by: str | Sequence[str] = "feature"
) -> pl.LazyFrame:
    """Requests, tokens, cost, share of cost, change, latency, TTFT, overhead and errors per `by`.

    Columns: the `by` keys, requests, errors, error_rate, input_tokens, output_tokens,
    cached_input_tokens, cost_usd, unpriced_requests, latency_ms_avg, latency_ms_p95,
    ttft_ms_p95, overhead_ms_avg, overhead_ms_p95, share (of the known cost), previous_cost_usd,
    change (relative, e.g. 0.25 for +25 %; null without a previous cost), previous_requests.
    Sorted by cost (unknown last), then requests. `previous` is the period of the same length
    just before (`split_periods`); None leaves the comparison columns null.
    """
    keys = _keys(by)
    if previous is None:
        before = pl.LazyFrame(
            schema={**current.select(keys).collect_schema(), "previous_cost_usd": pl.Float64,
                    "previous_requests": pl.Int64}
        )
    else:
        before = (
            _labelled(previous)
            .group_by(keys)
            .agg(known_sum("cost_usd").alias("previous_cost_usd"), pl.len().cast(pl.Int64).alias("previous_requests"))
        )
    return (
        _labelled(current)
        .group_by(keys)
        .agg(totals())
        .with_columns(share=pl.col("cost_usd") / pl.col("cost_usd").sum())
        .join(before, on=keys, how="left", nulls_equal=True)
        .with_columns(
            change=pl.when(pl.col("previous_cost_usd") > 0).then(
                pl.col("cost_usd") / pl.col("previous_cost_usd") - 1
            ),
            share=pl.when(pl.col("share").is_finite()).then(pl.col("share")),
        )
        .sort(["cost_usd", "requests", *keys], descending=[True, True] + [False] * len(keys), nulls_last=True)
    )


def by_feature(current: pl.LazyFrame, previous: pl.LazyFrame | None = None) -> pl.LazyFrame:
    """`breakdown` per feature (null feature → `untagged`)."""
    return breakdown(current, previous, "feature")


def by_model(current: pl.LazyFrame, previous: pl.LazyFrame | None = None) -> pl.LazyFrame:
    """`breakdown` per (provider, model): the model distribution table, filterable by provider."""
    return breakdown(current, previous, ["provider", "model"])


def by_provider(current: pl.LazyFrame, previous: pl.LazyFrame | None = None) -> pl.LazyFrame:
    """`breakdown` per provider (period-over-period cost per provider)."""
    return breakdown(current, previous, "provider")


def split_periods(
    events: pl.LazyFrame, start: dt.datetime, end: dt.datetime
) -> tuple[pl.LazyFrame, pl.LazyFrame]:
    """(current, previous): `[start, end)` and the period of the same length just before it.

    Load `[start - (end - start), end)` once and split it here.
    """
    before = start - (end - start)
    ts = pl.col("created_at")
    return (
        events.filter((ts >= start) & (ts < end)),
        events.filter((ts >= before) & (ts < start)),
    )


def provider_health(events: pl.LazyFrame, now: dt.datetime) -> pl.LazyFrame:
    """Recent error rate per provider from the org's own traffic: last hour and last 24 hours.

    Columns: provider, requests_1h, errors_1h, error_rate_1h, requests_24h, errors_24h,
    error_rate_24h, latency_ms_p95_1h, last_error_at, status (`ok` / `degraded` / `failing`,
    judged on the last hour once it has `HEALTH_MIN_REQUESTS`, else on 24 hours).
    """
    ts = pl.col("created_at")
    last_hour = ts >= now - dt.timedelta(hours=1)
    recent_rate = (
        pl.when(pl.col("requests_1h") >= HEALTH_MIN_REQUESTS)
        .then(pl.col("error_rate_1h"))
        .otherwise(pl.col("error_rate_24h"))
    )
    return (
        events.filter((ts >= now - dt.timedelta(hours=24)) & (ts <= now))
        .group_by("provider")
        .agg(
            last_hour.sum().cast(pl.Int64).alias("requests_1h"),
            (IS_ERROR & last_hour).sum().cast(pl.Int64).alias("errors_1h"),
            pl.len().cast(pl.Int64).alias("requests_24h"),
            IS_ERROR.sum().cast(pl.Int64).alias("errors_24h"),
            _p95(pl.col("latency_ms").filter(last_hour)).alias("latency_ms_p95_1h"),
            ts.filter(IS_ERROR).max().alias("last_error_at"),
        )
        .with_columns(
            error_rate_1h=pl.when(pl.col("requests_1h") > 0).then(pl.col("errors_1h") / pl.col("requests_1h")),
            error_rate_24h=pl.col("errors_24h") / pl.col("requests_24h"),
        )
        .with_columns(
            status=pl.when(recent_rate >= HEALTH_FAILING)
            .then(pl.lit("failing"))
            .when(recent_rate >= HEALTH_DEGRADED)
            .then(pl.lit("degraded"))
            .otherwise(pl.lit("ok"))
        )
        .select(
            "provider", "requests_1h", "errors_1h", "error_rate_1h", "requests_24h", "errors_24h",
            "error_rate_24h", "latency_ms_p95_1h", "last_error_at", "status",
        )
        .sort("provider")
    )


def untagged_share(events: pl.LazyFrame, threshold: float = TAGGING_PROMPT_SHARE) -> pl.LazyFrame:
    """One row: requests, untagged_requests, untagged_share, untagged_cost_usd,
    untagged_cost_share and show_tagging_prompt (untagged share of requests > `threshold`)."""
    untagged = pl.col("feature").is_null()
    return (
        events.select(
            pl.len().cast(pl.Int64).alias("requests"),
            untagged.sum().cast(pl.Int64).alias("untagged_requests"),
            pl.when(pl.col("cost_usd").filter(untagged).count() > 0)
            .then(pl.col("cost_usd").filter(untagged).sum())
            .alias("untagged_cost_usd"),
            known_sum("cost_usd").alias("cost_usd"),
        )
        .with_columns(
            untagged_share=pl.when(pl.col("requests") > 0).then(pl.col("untagged_requests") / pl.col("requests")),
            untagged_cost_share=pl.when(pl.col("cost_usd") > 0).then(
                pl.col("untagged_cost_usd") / pl.col("cost_usd")
            ),
        )
        .with_columns(show_tagging_prompt=pl.col("untagged_share").fill_null(0.0) > threshold)
        .select(
            "requests", "untagged_requests", "untagged_share", "untagged_cost_usd",
            "untagged_cost_share", "show_tagging_prompt",
        )
    )


def unpriced(events: pl.LazyFrame) -> pl.LazyFrame:
    """Successful requests Lectr could not price, per (provider, model): provider, model,
    requests, input_tokens, output_tokens. Their cost is unknown, not zero."""
    return (
        events.filter(IS_UNPRICED)
        .group_by("provider", "model")
        .agg(
            pl.len().cast(pl.Int64).alias("requests"),
            pl.col("input_tokens").sum(),
            pl.col("output_tokens").sum(),
        )
        .sort(["requests", "provider", "model"], descending=[True, False, False], nulls_last=True)
    )
