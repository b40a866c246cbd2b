"""Rollup rows for a long, busy history, made directly instead of from 100 M inserted events.

How the rows are built (the figures in `bench/README.md` depend on it):

1. A sample of `SAMPLE` events is drawn with `bench_analytics.synthetic_events` (the same eleven
   traffic shapes: features, providers, tasks, errors, streams, unpriced models) and aggregated
   with `analytics.rollup`, so every shape has its real per-request means (tokens, cost,
   latency, TTFT, overhead, status classes) and its histograms' bucket probabilities.
2. Every hour of the history gets, per shape, a Poisson number of events around the shape's
   share of the hourly rate (with a day/night swing). Sums are the sample's per-request means
   times that number; each histogram is a multinomial draw of that many values over the
   sample's bucket probabilities, so a row has as many distinct buckets as real traffic of
   that size would give it.
3. The hours a dashboard load cuts mid-hour get real events instead (inserted into `events`)
   and their rollup rows from `analytics.rollup` over those events, so the raw edges cost what
   they would cost at this rate.
4. The daily rollups (`rollup_daily`) are then built from all those hourly rows by
   `lectr_rollup_days`, the SQL function `lectr rollup rebuild` and the upgrade use
   (`days_from_hours`).
"""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Iterable
from typing import Any

import numpy as np
import polars as pl
import psycopg
from bench_analytics import insert, synthetic_events

import analytics
from analytics.rollups import COUNTS, DIMENSIONS, FLOAT_SUMS, HISTOGRAMS, ROLLUP_SCHEMA

SAMPLE = 400_000
HOUR = dt.timedelta(hours=1)
ROW_COLUMNS = ["hour", *DIMENSIONS, *COUNTS, *FLOAT_SUMS, "cost_usd", "last_error_at",
               *(f"{h}_{p}" for h in HISTOGRAMS for p in "bc")]


def _profiles(org_id: int, seed: int) -> tuple[pl.DataFrame, dict[str, np.ndarray], np.ndarray]:
    """Per shape: sums per request (frame), bucket probabilities per histogram, buckets used."""
    sample = synthetic_events(SAMPLE, org_id, dt.datetime(2026, 1, 1, tzinfo=dt.UTC), 1, seed=seed)
    rows = analytics.rollup(sample.lazy()).collect()
    merged = analytics.rollups.merge(rows.lazy(), DIMENSIONS).collect().sort(DIMENSIONS, nulls_last=True)
    positive = [int(b) for h in HISTOGRAMS for b in merged[f"{h}_b"].explode().drop_nulls() if b > -32768]
    buckets = np.arange(min(positive + [0]), max(positive + [0]) + 1)
    probabilities = {}
    for name in HISTOGRAMS:
        table = np.zeros((merged.height, len(buckets) + 1))  # the last column: the ZERO bucket
        for i, (b, c) in enumerate(zip(merged[f"{name}_b"], merged[f"{name}_c"], strict=True)):
            for index, count in zip(b, c, strict=True):
                table[i, len(buckets) if index == -32768 else index - buckets[0]] += count
        probabilities[name] = table
    return merged, probabilities, buckets


def _lists(counts: np.ndarray, buckets: np.ndarray) -> tuple[list[list[int]], list[list[int]]]:
    """Per row of a (rows × buckets+1) count matrix: the non-empty buckets and their counts."""
    indices = np.append(buckets, -32768)
    order = np.argsort(indices)  # ZERO first: bucket indices ascending
    sorted_counts, sorted_indices = counts[:, order], indices[order]
    out_b, out_c = [], []
    for row in sorted_counts:
        nonzero = np.nonzero(row)[0]
        out_b.append(sorted_indices[nonzero].tolist())
        out_c.append(row[nonzero].astype(np.int64).tolist())
    return out_b, out_c


def synthetic_rollups(
    org_id: int, hours: list[dt.datetime], per_hour: float, seed: int = 11
) -> pl.DataFrame:
    """Rollup rows (ROLLUP_SCHEMA minus `since`) for `hours`, `per_hour` events an hour on average."""
    rng = np.random.default_rng(seed)
    merged, probabilities, buckets = _profiles(org_id, seed)
    share = merged["requests"].to_numpy() / merged["requests"].sum()
    hour_of_day = np.array([h.hour for h in hours])
    swing = 1 + 0.5 * np.sin((hour_of_day - 9) / 24 * 2 * np.pi)  # busier by day (UTC)
    frames = []
    for i in range(merged.height):
        profile = merged.row(i, named=True)
        n = rng.poisson(per_hour * share[i] * swing)
        scale = n / profile["requests"]
        columns: dict[str, Any] = {"hour": hours, **{d: [profile[d]] * len(hours) for d in DIMENSIONS}}
        for c in COUNTS:
            columns[c] = np.rint(profile[c] * scale).astype(np.int64)
        columns["requests"] = n
        for c in FLOAT_SUMS:
            columns[c] = profile[c] * scale
        columns["cost_usd"] = [str(round(float(profile["cost_usd"]) * s, 10)) for s in scale]
        columns["last_error_at"] = [h + dt.timedelta(minutes=59) if e else None
                                    for h, e in zip(hours, columns["errors"], strict=True)]
        for name in HISTOGRAMS:
            p = probabilities[name][i]
            total = p.sum()
            if total == 0:
                columns[f"{name}_b"], columns[f"{name}_c"] = [[]] * len(hours), [[]] * len(hours)
                continue
            draws = rng.multinomial(np.rint(n * total / profile["requests"]).astype(np.int64), p / total)
            columns[f"{name}_b"], columns[f"{name}_c"] = _lists(draws, buckets)
        frames.append(pl.DataFrame(columns).with_columns(pl.col("cost_usd").str.to_decimal(scale=10)))
    schema = {c: ROLLUP_SCHEMA[c] for c in ROW_COLUMNS}
    return pl.concat([f.select(pl.col(c).cast(t) for c, t in schema.items()) for f in frames])


def copy_rollups(conn: psycopg.Connection[Any], org_id: int, rows: pl.DataFrame) -> None:
    """COPY rollup rows into `rollup_hourly` (arrays in Postgres' text form)."""
    lists = [f"{h}_{p}" for h in HISTOGRAMS for p in "bc"]
    text = rows.select(ROW_COLUMNS).with_columns(
        pl.format("{{{}}}", pl.col(c).list.eval(pl.element().cast(pl.String)).list.join(",")).alias(c)
        for c in lists
    ).with_columns(pl.lit(org_id).alias("org_id"))
    buf = io.BytesIO()
    text.select(["org_id", *ROW_COLUMNS]).write_csv(
        buf, include_header=False, datetime_format="%Y-%m-%dT%H:%M:%S%.f%z", null_value=""
    )
    with conn.cursor() as cur, cur.copy(
        f"COPY rollup_hourly (org_id, {', '.join(ROW_COLUMNS)}) FROM STDIN (FORMAT csv)"
    ) as copy:
        copy.write(buf.getbuffer())


def real_hours(conn: psycopg.Connection[Any], org_id: int, hours: Iterable[dt.datetime], per_hour: float,
               seed: int = 5) -> int:
    """Real events for `hours` (the ones a load cuts), in `events` and, aggregated, in the rollups."""
    written = 0
    for i, hour in enumerate(sorted(set(hours))):
        # In time order, as the writer inserts them (events arrive as they happen).
        frame = synthetic_events(int(per_hour), org_id, hour + HOUR, 1 / 24, seed=seed + i).sort("created_at")
        insert(conn, frame)
        copy_rollups(conn, org_id, analytics.rollup(frame.lazy()).drop("since").collect())
        written += frame.height
    return written


def rollup_events(conn: psycopg.Connection[Any], org_id: int, frame: pl.DataFrame) -> None:
    """The rollup rows of inserted events, hourly and daily, as the writer would have kept them."""
    copy_rollups(conn, org_id, analytics.rollup(frame.lazy()).drop("since").collect())
    days_from_hours(conn, org_id)


def days_from_hours(conn: psycopg.Connection[Any], org_id: int) -> int:
    """The org's `rollup_daily` rows, merged from its `rollup_hourly` rows; rows written."""
    from proxy.store.db.rollups import rebuild_daily

    written = rebuild_daily(conn, [org_id])
    conn.execute("ANALYZE rollup_daily")
    return written
