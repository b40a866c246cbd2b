"""Breakdowns per feature, model and provider; provider health; untagged and unpriced traffic.

Every function takes a lazy rollup frame (`rollups.ROLLUP_SCHEMA`: one row per hour, or piece of
an hour, and group) and returns a lazy frame: one chain of expressions per figure, collected by
the caller. Conventions shared by all figures:

- an error is `status_code >= 400` or a non-null `error_type` (timeouts carry one), as the
  rollups count them;
- `cost_usd` is the sum of the known costs (exact decimals, a float at the end) and stays null
  when no request in the group has a price, and `unpriced_requests` counts the successful
  requests without a price, so an unknown price is never read as a free request;
- averages are exact (sums over counts); percentiles come from the merged log-bucket histograms,
  interpolated like `percentile_cont`, within 2 % of exact;
- a null feature is shown as `untagged`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import polars as pl

from analytics.rollups import cost, mean, window, with_quantiles

UNTAGGED = "untagged"
# Above this share of untagged requests the dashboard asks people to send `X-Lectr-Feature`.
TAGGING_PROMPT_SHARE = 0.2

# Provider health: the error rate of the last hour decides once it has this many requests
# (otherwise the last 24 hours do); thresholds between ok / degraded / failing.
HEALTH_MIN_REQUESTS = 5
HEALTH_DEGRADED = 0.05
HEALTH_FAILING = 0.25
HEALTH_WINDOWS = (dt.timedelta(hours=1), dt.timedelta(hours=24))

FEATURE: pl.Expr = pl.col("feature").fill_null(UNTAGGED)
# The percentiles every breakdown shows: column → (histogram, q).
P95S = {"latency_ms_p95": ("latency_ms", 0.95), "ttft_ms_p95": ("ttft_ms", 0.95),
        "overhead_ms_p95": ("overhead_ms", 0.95)}


def count(column: str) -> pl.Expr:
    return pl.col(column).sum().cast(pl.Int64)


def totals() -> list[pl.Expr]:
    """The sums every breakdown shares (requests, tokens, cost, latency, errors); the
    percentiles are joined in by `rollups.with_quantiles`."""
    return [
        count("requests").alias("requests"),
        count("errors").alias("errors"),
        (pl.col("errors").sum() / pl.col("requests").sum()).alias("error_rate"),
        count("input_tokens").alias("input_tokens"),
        count("output_tokens").alias("output_tokens"),
        count("cached_input_tokens").alias("cached_input_tokens"),
        cost().alias("cost_usd"),
        count("unpriced").alias("unpriced_requests"),
        mean("latency_ms").alias("latency_ms_avg"),
        mean("overhead_ms").alias("overhead_ms_avg"),
    ]


BREAKDOWN_COLUMNS = (
    "requests", "errors", "error_rate", "input_tokens", "output_tokens", "cached_input_tokens", "cost_usd",
    "unpriced_requests", "latency_ms_avg", "latency_ms_p95", "ttft_ms_p95", "overhead_ms_avg", "overhead_ms_p95",
)


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
            schema={**_labelled(current).select(keys).collect_schema(), "previous_cost_usd": pl.Float64,
                    "previous_requests": pl.Int64}
        )
    else:
        before = (
            _labelled(previous)
            .group_by(keys)
            .agg(cost().alias("previous_cost_usd"), count("requests").alias("previous_requests"))
        )
    labelled = _labelled(current)
    sums = labelled.group_by(keys).agg(totals())
    return (
        with_quantiles(sums, labelled, keys, P95S)
        .select(*keys, *BREAKDOWN_COLUMNS)
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

    Load `[start - (end - start), end)` once, cut at `start`, and split it here.
    """
    return window(events, start, end), window(events, start - (end - start), start)


def health_cuts(now: dt.datetime) -> list[dt.datetime]:
    """Where a frame for `provider_health(frame, now)` must be cut: the starts of its windows."""
    return [now - length for length in HEALTH_WINDOWS]


def provider_health(events: pl.LazyFrame, now: dt.datetime) -> pl.LazyFrame:
    """Recent error rate per provider from the org's own traffic: last hour and last 24 hours.

    `events` must reach 24 hours back from `now` and be cut at `health_cuts(now)` (so both
    windows are exact). Columns: provider, requests_1h, errors_1h, error_rate_1h, requests_24h,
    errors_24h, error_rate_24h, latency_ms_p95_1h, last_error_at, status (`ok` / `degraded` /
    `failing`, judged on the last hour once it has `HEALTH_MIN_REQUESTS`, else on 24 hours).
    """
    hour, day = (window(events, now - length, now) for length in HEALTH_WINDOWS)
    recent_rate = (
        pl.when(pl.col("requests_1h") >= HEALTH_MIN_REQUESTS)
        .then(pl.col("error_rate_1h"))
        .otherwise(pl.col("error_rate_24h"))
    )
    last_hour = with_quantiles(
        hour.group_by("provider").agg(count("requests").alias("requests_1h"), count("errors").alias("errors_1h")),
        hour, ["provider"], {"latency_ms_p95_1h": ("latency_ms", 0.95)},
    )
    return (
        day.group_by("provider")
        .agg(
            count("requests").alias("requests_24h"),
            count("errors").alias("errors_24h"),
            pl.col("last_error_at").max(),
        )
        .join(last_hour, on="provider", how="left")
        .with_columns(pl.col("requests_1h", "errors_1h").fill_null(0))
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
            count("requests").alias("requests"),
            pl.col("requests").filter(untagged).sum().cast(pl.Int64).alias("untagged_requests"),
            pl.when(pl.col("priced").filter(untagged).sum() > 0)
            .then(pl.col("cost_usd").filter(untagged).sum().cast(pl.Float64))
            .alias("untagged_cost_usd"),
            cost().alias("cost_usd"),
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
        events.filter(pl.col("unpriced") > 0)
        .group_by("provider", "model")
        .agg(
            count("unpriced").alias("requests"),
            count("unpriced_input_tokens").alias("input_tokens"),
            count("unpriced_output_tokens").alias("output_tokens"),
        )
        .sort(["requests", "provider", "model"], descending=[True, False, False], nulls_last=True)
    )
