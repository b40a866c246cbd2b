"""Rollup frames: what every figure reads, one row per hour (or piece of an hour) and group.

A rollup frame has the columns of `rollup_hourly` (migration 005) plus `since`, the instant its
row starts: the hour itself for a whole hour, or a cut inside the hour for a piece of one
(`load.load_rollups` cuts an hour where a window starts or ends mid-hour, and fills the pieces
from raw events so the window is exact). A window `[start, end)` is then the rows with
`start <= since < end`, exact whenever `start` and `end` are hour boundaries or cuts.

Sums merge by addition. Histograms are DDSketch-style log buckets (`proxy.accounting.histogram`): two list
columns per figure, `<name>_b` (bucket indices) and `<name>_c` (their counts); `quantiles`
merges them per group with one explode and reads quantiles the way `proxy.accounting.histogram.quantile`
does (interpolated like Postgres' `percentile_cont`, within α = 1.5 % of exact).

`rollup(events)` aggregates raw events into the same rows, exactly as the writer does
(`proxy/accounting/rollup.py`): the raw edges of a window, and hand-built traffic in tests.
"""

from __future__ import annotations

import datetime as dt
import math
import sys
from collections.abc import Iterable, Mapping, Sequence

import polars as pl

from proxy.accounting.histogram import GAMMA, ZERO
from proxy.accounting.histogram import representative as representative_of

DIMENSIONS: tuple[str, ...] = ("feature", "task", "provider", "model", "routed_model")
HISTOGRAMS: tuple[str, ...] = ("latency_ms", "ttft_ms", "upstream_ms", "overhead_ms", "input_tokens", "output_tokens")
COUNTS: tuple[str, ...] = (
    "requests", "errors", "status_2xx", "status_3xx", "status_4xx", "status_5xx", "status_429", "status_499",
    "status_other", "input_tokens", "output_tokens", "cached_input_tokens", "cache_write_tokens",
    "reasoning_tokens", "with_usage", "usage_estimated", "priced", "unpriced", "unpriced_input_tokens",
    "unpriced_output_tokens", "stream", "latency_ms_n", "ttft_ms_n", "upstream_ms_n", "overhead_ms_n",
    "message_count_sum", "message_count_n", "request_bytes", "response_bytes",
)
FLOAT_SUMS: tuple[str, ...] = ("latency_ms_sum", "ttft_ms_sum", "upstream_ms_sum", "overhead_ms_sum")
# Costs stay exact decimals until a figure is final: numeric(30, 10) in Postgres, i128 here.
COST = pl.Decimal(38, 10)
UTC = pl.Datetime("us", "UTC")

ROLLUP_SCHEMA: Mapping[str, pl.DataType] = {
    "hour": UTC,
    "since": UTC,
    **{d: pl.String() for d in DIMENSIONS},
    **{c: pl.Int64() for c in COUNTS},
    **{c: pl.Float64() for c in FLOAT_SUMS},
    "cost_usd": COST,
    "last_error_at": UTC,
    **{f"{h}_{p}": pl.List(pl.Int32() if p == "b" else pl.Int64()) for h in HISTOGRAMS for p in "bc"},
}
_LOG_GAMMA = math.log(GAMMA)

# What `rollup` reads from an event (a column left out counts as null).
EVENT_COLUMNS: Mapping[str, pl.DataType] = {
    "created_at": UTC, **{d: pl.String() for d in DIMENSIONS}, "status_code": pl.Int64(), "error_type": pl.String(),
    **{c: pl.Int64() for c in ("input_tokens", "output_tokens", "cached_input_tokens", "cache_write_tokens",
                                "reasoning_tokens", "message_count", "request_bytes", "response_bytes")},
    "usage_estimated": pl.Boolean(), "stream": pl.Boolean(), "cost_usd": COST,
    **{c: pl.Float64() for c in ("latency_ms", "ttft_ms", "upstream_ms")},
}
IS_ERROR: pl.Expr = (pl.col("status_code") >= 400) | pl.col("error_type").is_not_null()


def bucket(value: pl.Expr) -> pl.Expr:
    """`proxy.accounting.histogram.bucket` as an expression: ceil(log_γ(v)), ZERO for v <= 0."""
    v = value.cast(pl.Float64)
    return pl.when(v <= 0).then(pl.lit(ZERO)).otherwise((v.log() / _LOG_GAMMA).ceil()).cast(pl.Int32)


def representative(index: pl.Expr) -> pl.Expr:
    """`proxy.accounting.histogram.representative` as an expression: 2·γ^i / (γ + 1), 0 for ZERO."""
    return pl.when(index == ZERO).then(0.0).otherwise(pl.lit(GAMMA).pow(index.cast(pl.Float64)) * (2 / (GAMMA + 1)))


def conform(frame: pl.LazyFrame, names: Iterable[str] | None = None) -> pl.LazyFrame:
    """Cast to `ROLLUP_SCHEMA`, in its order; missing columns become nulls (a histogram not
    loaded is null, so its quantiles are null rather than wrong). `names`: the frame's columns
    when the caller knows them (resolving a deep plan's schema costs tens of ms)."""
    present = set(names) if names is not None else set(frame.collect_schema().names())
    return frame.select(
        (pl.col(c) if c in present else pl.lit(None)).cast(t).alias(c) for c, t in ROLLUP_SCHEMA.items()
    )


def empty() -> pl.LazyFrame:
    return pl.LazyFrame(schema=dict(ROLLUP_SCHEMA))


def since(created_at: pl.Expr, cuts: Iterable[dt.datetime]) -> pl.Expr:
    """The start of the piece of its hour an instant falls in: the latest cut of that hour at or
    before it, else the hour. Cuts on an hour boundary change nothing."""
    hour = created_at.dt.truncate("1h")
    piece = hour
    for cut in sorted(set(cuts)):
        at = pl.lit(cut, UTC)
        piece = pl.when((hour == at.dt.truncate("1h")) & (created_at >= at)).then(at).otherwise(piece)
    return piece


def _histogram(events: pl.LazyFrame, keys: list[str], name: str, value: pl.Expr) -> pl.LazyFrame:
    """`<name>_b`, `<name>_c` per key: the known values' buckets, ascending, and their counts."""
    return (
        events.filter(value.is_not_null())
        .group_by(*keys, bucket(value).alias("b"))
        .agg(pl.len().cast(pl.Int64).alias("c"))
        .sort("b")
        .group_by(keys)
        .agg(pl.col("b").alias(f"{name}_b"), pl.col("c").alias(f"{name}_c"))
    )


def rollup(
    events: pl.LazyFrame, cuts: Iterable[dt.datetime] = (), histograms: Sequence[str] = HISTOGRAMS
) -> pl.LazyFrame:
    """Raw events (`load.EVENT_SCHEMA` columns; `cost_usd` decimal or float) → rollup rows per
    (hour, piece, dimensions), each figure defined as `proxy/accounting/rollup.py` defines it. Empty
    dimensions count as null (the rollups' key cannot tell '' from null). Only the `histograms`
    named are built (each is a grouping of its own); the others stay null, as unknown."""
    present = set(events.collect_schema().names())
    events = events.with_columns(pl.lit(None, t).alias(c) for c, t in EVENT_COLUMNS.items() if c not in present)
    status = pl.col("status_code")
    cost = pl.col("cost_usd").cast(COST)
    unpriced = cost.is_null() & ~IS_ERROR
    overhead = pl.col("latency_ms") - pl.col("upstream_ms")
    keys = ["hour", "since", *DIMENSIONS]
    prepared = events.with_columns(
        pl.col("created_at").dt.truncate("1h").alias("hour"),
        since(pl.col("created_at"), cuts).alias("since"),
        *(pl.when(pl.col(d) != "").then(pl.col(d)).alias(d) for d in DIMENSIONS),
    )

    def count(condition: pl.Expr) -> pl.Expr:
        return condition.sum().cast(pl.Int64)

    def total(column: str | pl.Expr, where: pl.Expr | None = None) -> pl.Expr:
        expr = pl.col(column) if isinstance(column, str) else column
        return (expr if where is None else expr.filter(where)).sum().cast(pl.Int64)

    sums = prepared.group_by(keys).agg(
        pl.len().cast(pl.Int64).alias("requests"),
        count(IS_ERROR).alias("errors"),
        count(status.is_between(200, 299)).alias("status_2xx"),
        count(status.is_between(300, 399)).alias("status_3xx"),
        count(status.is_between(400, 499)).alias("status_4xx"),
        count(status.is_between(500, 599)).alias("status_5xx"),
        count(status == 429).alias("status_429"),
        count(status == 499).alias("status_499"),
        count(~status.is_between(200, 599)).alias("status_other"),
        *(total(c).alias(c) for c in ("input_tokens", "output_tokens", "cached_input_tokens",
                                      "cache_write_tokens", "reasoning_tokens")),
        count(pl.col("input_tokens").is_not_null() | pl.col("output_tokens").is_not_null()).alias("with_usage"),
        count(pl.col("usage_estimated").fill_null(False)).alias("usage_estimated"),
        cost.sum().alias("cost_usd"),
        cost.count().cast(pl.Int64).alias("priced"),
        count(unpriced).alias("unpriced"),
        total("input_tokens", unpriced).alias("unpriced_input_tokens"),
        total("output_tokens", unpriced).alias("unpriced_output_tokens"),
        count(pl.col("stream").fill_null(False)).alias("stream"),
        *(e for c in ("latency_ms", "ttft_ms", "upstream_ms") for e in (
            pl.col(c).sum().cast(pl.Float64).alias(f"{c}_sum"), pl.col(c).count().cast(pl.Int64).alias(f"{c}_n"))),
        overhead.sum().cast(pl.Float64).alias("overhead_ms_sum"),
        overhead.count().cast(pl.Int64).alias("overhead_ms_n"),
        total("message_count").alias("message_count_sum"),
        pl.col("message_count").count().cast(pl.Int64).alias("message_count_n"),
        total("request_bytes").alias("request_bytes"),
        total("response_bytes").alias("response_bytes"),
        pl.col("created_at").filter(IS_ERROR).max().alias("last_error_at"),
    )
    for name in histograms:
        value = overhead if name == "overhead_ms" else pl.col(name)
        sums = sums.join(_histogram(prepared, keys, name, value), on=keys, how="left", nulls_equal=True)
    lists = [f"{h}_{p}" for h in histograms for p in "bc"]
    built = sums.with_columns(pl.col(lists).fill_null([])) if lists else sums
    return conform(built, [*keys, *COUNTS, *FLOAT_SUMS, "cost_usd", "last_error_at", *lists])


def merge(frame: pl.LazyFrame, keys: Sequence[str], histograms: Sequence[str] = HISTOGRAMS) -> pl.LazyFrame:
    """Rows with equal `keys` added into one: counts and sums added, the `histograms` merged
    bucket by bucket (buckets whose count adds up to zero dropped; the others come out null),
    `last_error_at` the latest. Rows may carry negative counts (`load` subtracts pieces from an
    hour this way)."""
    keys = list(keys)
    numbers = [*COUNTS, *FLOAT_SUMS, "cost_usd"]
    sums = frame.group_by(keys).agg(
        *(pl.col(c).sum() for c in numbers), pl.col("last_error_at").max()
    )
    for name in histograms:
        b, c = f"{name}_b", f"{name}_c"
        merged = (
            frame.select(*keys, b, c)
            .explode(b, c)
            .drop_nulls(b)
            .group_by(*keys, b)
            .agg(pl.col(c).sum())
            .filter(pl.col(c) != 0)
            .sort(b)
            .group_by(keys)
            .agg(b, c)
        )
        sums = sums.join(merged, on=keys, how="left", nulls_equal=True)
    lists = [f"{h}_{p}" for h in histograms for p in "bc"]
    built = sums.with_columns(pl.col(lists).fill_null([])) if lists else sums
    return conform(built, [*keys, *numbers, "last_error_at", *lists])


def window(frame: pl.LazyFrame, start: dt.datetime, end: dt.datetime) -> pl.LazyFrame:
    """The rows of `[start, end)`: exact when both are hour boundaries or cuts of the load."""
    return frame.filter((pl.col("since") >= start) & (pl.col("since") < end))


def quantiles(frame: pl.LazyFrame, keys: Sequence[str], histogram: str, wanted: Mapping[str, float]) -> pl.LazyFrame:
    """Per `keys`: the `histogram` merged over the rows, and each `wanted` quantile (name → q).

    The q-quantile interpolates between the representatives of the buckets holding ranks
    floor(q·(n-1)) and ceil(q·(n-1)), exactly as `proxy.accounting.histogram.quantile`. Groups
    without a value are absent (join them in: their quantile is unknown).

    Two ways to the same numbers, chosen by what the process has loaded: where numpy is imported
    already (the dashboard: Streamlit imports it), the lists of each key are concatenated and
    `_merged_quantiles` reads them with numpy inside the plan, 1.5-3.5x less CPU than polars
    expressions (most for many groups: a daily p95 per model over 90 days); a CLI process, whose
    few quantiles cost less than numpy's import (~0.15 s), stays in polars (`_polars_quantiles`).
    Tests run both on the same histograms.
    """
    wanted_keys = list(keys)
    keys = wanted_keys or ["_all"]
    if not wanted_keys:
        frame = frame.with_columns(pl.lit(0).alias("_all"))
    b, c = f"{histogram}_b", f"{histogram}_c"
    groups = frame.group_by(keys).agg(
        pl.col(b).list.explode(keep_nulls=False, empty_as_null=False),
        pl.col(c).list.explode(keep_nulls=False, empty_as_null=False),
    )
    if "numpy" in sys.modules:
        names = dict(wanted)
        schema = {**groups.select(keys).collect_schema(), **{name: pl.Float64() for name in names}}
        found = groups.map_batches(lambda df: _merged_quantiles(df, keys, (b, c), names), schema=schema)
    else:
        found = _polars_quantiles(groups, keys, (b, c), wanted)
    if wanted_keys:
        return found
    # No keys: one row, its quantiles null when nothing was measured.
    return pl.LazyFrame({"_all": [0]}).join(found, on="_all", how="left").drop("_all")


def _polars_quantiles(
    groups: pl.LazyFrame, keys: Sequence[str], columns: tuple[str, str], wanted: Mapping[str, float]
) -> pl.LazyFrame:
    """`quantiles` in polars expressions: one explode of the concatenated lists (an integer group
    id per bucket, not the key strings), counts summed per bucket, running totals in bucket order."""
    b, c = columns
    # Sorted: the same numbering in every branch of the plan.
    numbered = groups.sort(keys, nulls_last=True).with_row_index("_g")
    cumulated = (
        numbered.select("_g", b, c)
        .explode(b, c)
        .drop_nulls(b)
        .group_by("_g", b)
        .agg(pl.col(c).sum())
        .filter(pl.col(c) > 0)
        .with_columns(
            pl.col(c).cum_sum().over("_g", order_by=b).alias("_seen"),
            pl.col(c).sum().over("_g").alias("_total"),
            representative(pl.col(b)).alias("_value"),
        )
    )
    aggregations = []
    for name, q in wanted.items():
        rank = q * (pl.col("_total").first() - 1)
        low = pl.col("_value").filter(pl.col("_seen") > rank.floor()).min()
        high = pl.col("_value").filter(pl.col("_seen") > rank.ceil()).min()
        aggregations.append((low + (high - low) * (rank - rank.floor())).alias(name))
    return numbered.select(*keys, "_g").join(cumulated.group_by("_g").agg(aggregations), on="_g").drop("_g")


def _merged_quantiles(
    groups: pl.DataFrame, keys: Sequence[str], columns: tuple[str, str], wanted: Mapping[str, float]
) -> pl.DataFrame:
    """`quantiles` on collected rows: one per key, its buckets and counts as lists (any order,
    repeats allowed). The counts go into one dense (group × bucket) table (`np.bincount`: bucket
    indices are a few hundred consecutive integers, and `ZERO`), negative sums count as none, and
    each quantile is the first bucket whose running total passes its rank. Groups whose counts
    add up to nothing are dropped."""
    import numpy as np  # imported by the caller's process already (see `quantiles`)

    b, c = columns
    lengths = groups[b].list.len().fill_null(0).to_numpy()
    buckets = groups.select(pl.col(b).list.explode(keep_nulls=False, empty_as_null=False)).to_series().to_numpy()
    counts = groups.select(pl.col(c).list.explode(keep_nulls=False, empty_as_null=False)).to_series().to_numpy()
    zero = buckets == ZERO
    real = buckets[~zero]
    low = int(real.min()) if len(real) else 0
    span = int(real.max()) - low + 2 if len(real) else 1  # slot 0 is ZERO, slot i + 1 bucket low + i
    slots = np.repeat(np.arange(0, groups.height * span, span, dtype=np.int64), lengths)  # the group's first slot
    slots += buckets
    slots += 1 - low
    slots[zero] -= ZERO + 1 - low  # back to the group's first slot
    table = np.bincount(slots, weights=counts, minlength=groups.height * span).reshape(groups.height, span)
    np.maximum(table, 0, out=table)
    seen = np.cumsum(table, axis=1)
    total = seen[:, -1]
    present = np.flatnonzero(total > 0)
    seen, total = seen[present], total[present]
    # Python's float power, as `representative` and polars' `pow` compute it (numpy's differs in
    # the last bit for ~3 % of exponents): both ways give the same bits.
    value = np.array([0.0, *map(representative_of, range(low, low + span - 1))])
    out = groups[present].select(keys).to_dict(as_series=True)
    for name, q in wanted.items():
        rank = q * (total - 1)
        below = value[(seen > np.floor(rank)[:, None]).argmax(axis=1)]
        above = value[(seen > np.ceil(rank)[:, None]).argmax(axis=1)]
        out[name] = pl.Series(name, below + (above - below) * (rank - np.floor(rank)), pl.Float64)
    return pl.DataFrame(out)


def with_quantiles(
    sums: pl.LazyFrame, frame: pl.LazyFrame, keys: Sequence[str], wanted: Mapping[str, tuple[str, float]]
) -> pl.LazyFrame:
    """`sums` (one row per `keys`) with quantile columns joined in: name → (histogram, q)."""
    per_histogram: dict[str, dict[str, float]] = {}
    for name, (histogram, q) in wanted.items():
        per_histogram.setdefault(histogram, {})[name] = q
    for histogram, qs in per_histogram.items():
        found = quantiles(frame, keys, histogram, qs)
        sums = sums.join(found, on=list(keys), how="left", nulls_equal=True) if keys else sums.join(found, how="cross")
    return sums


def cost(column: str = "cost_usd", priced: str = "priced") -> pl.Expr:
    """The known cost as a float, null when no request of the group had a price (unknown is
    not zero). The decimal sum is exact; the float is its correctly rounded value."""
    return pl.when(pl.col(priced).sum() > 0).then(pl.col(column).sum().cast(pl.Float64))


def mean(name: str) -> pl.Expr:
    """The mean of a figure from its `_sum` and `_n` columns (null when nothing was measured)."""
    n = pl.col(f"{name}_n").sum()
    return pl.when(n > 0).then(pl.col(f"{name}_sum").sum() / n)
