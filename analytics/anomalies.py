"""Anomalies: a value that leaves its own recent baseline.

Three series are watched: a feature's daily cost, a provider's hourly error rate and a model's
daily p95 latency. For each bucket the baseline is the median of the same series over the
`window` buckets before it (the bucket itself excluded, so a spike cannot hide in its own
baseline) and the spread is the median absolute deviation (MAD) of those values, scaled by
1.4826 to be comparable to a standard deviation. A bucket is an anomaly when it is above the
baseline by `z >= threshold` robust standard deviations *and* by a practical margin (a ratio or
an absolute difference), with enough history to trust the baseline. Median and MAD rather than
mean and σ: one earlier spike in the window would otherwise inflate the baseline and hide the
next one. Only rises are reported: a cheaper, faster, healthier day is not an alarm.
"""

from __future__ import annotations

import re

import polars as pl

from analytics.timeseries import sums_series, timeseries

MAD_TO_SIGMA = 1.4826
ANOMALY_SCHEMA: dict[str, pl.DataType] = {
    "kind": pl.String(), "feature": pl.String(), "provider": pl.String(), "model": pl.String(),
    "bucket": pl.Datetime("us", "UTC"), "value": pl.Float64(), "baseline": pl.Float64(),
    "mad": pl.Float64(), "ratio": pl.Float64(), "z": pl.Float64(), "history": pl.Int64(),
}


def _span(every: str, buckets: int) -> str:
    """`every` times `buckets` as a polars duration ("1d", 7 → "7d")."""
    match = re.fullmatch(r"(\d+)([a-z]+)", every)
    if match is None:
        raise ValueError(f"unsupported bucket size {every!r}; use e.g. '1h' or '1d'")
    return f"{int(match[1]) * buckets}{match[2]}"


def leave_baseline(
    series: pl.LazyFrame,
    keys: list[str],
    *,
    every: str,
    window: int,
    min_history: int = 3,
    threshold: float = 3.5,
    min_ratio: float = 1.0,
    min_delta: float = 0.0,
    floor: float = 0.0,
    noise: pl.Expr | None = None,
) -> pl.LazyFrame:
    """Buckets of `series` (keys, bucket, value) that rise above their trailing baseline.

    Adds baseline, mad, z, ratio (value / baseline, null at a zero baseline) and history (how
    many of the `window` buckets before had a value). `floor` is the smallest spread used, so
    a perfectly flat history does not turn every wobble into an infinite z; `noise`, an
    expression over the joined row (it may read `baseline`), raises the spread further, e.g. to
    the binomial noise of a rate measured on few requests.
    """
    past = series.select(*keys, pl.col("bucket").alias("past"), pl.col("value").alias("past_value"))
    baselines = (
        series.select(*keys, "bucket")
        .join(past, on=keys, how="inner", nulls_equal=True)
        .filter(
            (pl.col("past") < pl.col("bucket"))
            & (pl.col("past") >= pl.col("bucket").dt.offset_by(f"-{_span(every, window)}"))
        )
        .group_by(*keys, "bucket")
        .agg(
            pl.col("past_value").median().alias("baseline"),
            (pl.col("past_value") - pl.col("past_value").median()).abs().median().alias("mad"),
            pl.len().cast(pl.Int64).alias("history"),
        )
    )
    spread = pl.max_horizontal(pl.col("mad") * MAD_TO_SIGMA, pl.lit(floor), noise if noise is not None else 0.0)
    return (
        series.join(baselines, on=[*keys, "bucket"], how="inner", nulls_equal=True)
        .with_columns(
            z=pl.when(spread > 0).then((pl.col("value") - pl.col("baseline")) / spread),
            ratio=pl.when(pl.col("baseline") > 0).then(pl.col("value") / pl.col("baseline")),
        )
        .filter(
            (pl.col("history") >= min_history)
            & (pl.col("z") >= threshold)
            & (pl.col("value") - pl.col("baseline") >= min_delta)
            & (pl.col("ratio").is_null() | (pl.col("ratio") >= min_ratio))
        )
    )


def _shape(frame: pl.LazyFrame, kind: str) -> pl.LazyFrame:
    present = frame.collect_schema()  # once: resolving the plan's schema is not free
    return frame.select(
        (pl.lit(kind) if c == "kind" else pl.col(c) if c in present else pl.lit(None)).cast(t).alias(c)
        for c, t in ANOMALY_SCHEMA.items()
    )


def cost_anomalies(events: pl.LazyFrame, window: int = 7, threshold: float = 3.5) -> pl.LazyFrame:
    """Days on which a feature's cost left its trailing `window`-day baseline (at least 1.5×).
    Quiet days count as zero cost; days before a feature's first request do not count."""
    daily = (
        sums_series(events, "1d", by="feature")
        .with_columns(started=(pl.col("requests").cum_sum().over("feature", order_by="bucket") > 0))
        .filter(pl.col("started") & pl.col("cost_usd").is_not_null())
        .select("feature", "bucket", pl.col("cost_usd").alias("value"))
    )
    # A full window of history: with fewer days a weekday after a weekend looks like a spike.
    found = leave_baseline(daily, ["feature"], every="1d", window=window, min_history=window - 1,
                           threshold=threshold, min_ratio=1.5, floor=0.01)
    return _shape(found, "feature_cost").sort("bucket", "feature")


def error_rate_anomalies(
    events: pl.LazyFrame, every: str = "1h", window: int = 24, min_requests: int = 20, threshold: float = 3.5
) -> pl.LazyFrame:
    """Buckets in which a provider's error rate rose above its trailing baseline by at least 10
    points and 5 errors. The spread is at least the binomial noise of a rate over that bucket's
    requests, and buckets with fewer than `min_requests` requests are too noisy to judge or use."""
    rates = (
        sums_series(events, every, by="provider")
        .filter(pl.col("requests") >= min_requests)
        .select("provider", "bucket", "requests", pl.col("error_rate").alias("value"))
    )
    p = pl.col("baseline").clip(0.01, 0.99)
    binomial = (p * (1 - p) / pl.col("requests")).sqrt()
    found = leave_baseline(rates, ["provider"], every=every, window=window, threshold=threshold,
                           min_delta=0.10, floor=0.01, noise=binomial).filter(
        pl.col("value") * pl.col("requests") >= 5
    )
    return _shape(found, "provider_error_rate").sort("bucket", "provider")


def latency_anomalies(
    events: pl.LazyFrame, every: str = "1d", window: int = 7, min_requests: int = 50, threshold: float = 3.5
) -> pl.LazyFrame:
    """Buckets in which a model's p95 latency rose above its trailing baseline by at least 50 %."""
    p95 = (
        timeseries(events, every, by=["provider", "model"])
        .filter(pl.col("requests") >= min_requests)
        .select("provider", "model", "bucket", pl.col("latency_ms_p95").alias("value"))
    )
    found = leave_baseline(p95, ["provider", "model"], every=every, window=window, threshold=threshold,
                           min_ratio=1.5, floor=1.0)
    return _shape(found, "model_latency_p95").sort("bucket", "provider", "model")


def anomalies(events: pl.LazyFrame, daily: bool = False) -> pl.LazyFrame:
    """All three kinds with their defaults, newest first: kind, feature, provider, model, bucket
    (when), value, baseline, mad, ratio (how far, ×), z (how far, robust σ), history.

    `daily`: the frame holds day rows (`load_rollups(..., days=True)`), so error rates are judged
    per day against the 7 days before, like cost and latency, instead of per hour."""
    errors = error_rate_anomalies(events, every="1d", window=7) if daily else error_rate_anomalies(events)
    return pl.concat(
        [cost_anomalies(events), errors, latency_anomalies(events)], how="vertical"
    ).sort("bucket", "kind", descending=[True, False])
