"""Analytics benchmark: 1,000,000 events in Postgres, then `report` and `recommend` end to end.

    python bench/bench_analytics.py [--rows 1000000] [--days 30] [--repeat 3]

Uses `DATABASE_URL` when set, otherwise an embedded Postgres in a temporary directory. The rows
are synthetic but shaped like real traffic (several features, all five providers, every task
type, errors, streaming, unpriced models) and are written with one `COPY ... (FORMAT csv)`, so
setting up a million rows takes seconds rather than minutes. Figures go to stdout; the latest
ones are recorded in `bench/README.md` under "Analytics".
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import psycopg

import analytics
from analytics.commands import RECOMMEND_DAYS, recommend, report
from proxy.config import Settings
from proxy.db import connect, database_url, ensure_partitions, migrate
from proxy.db.connection import stop_embedded
from proxy.orgs import create_org

# (provider, model, response_model, feature, task, typical prompt tokens, typical response tokens,
#  $ per input token, $ per output token, weight)
_SHAPES: list[tuple[str, str, str, str | None, str | None, int, int, float | None, float | None, int]] = [
    ("openai", "gpt-4o", "gpt-4o-2024-08-06", "ticket-classifier", "classification", 600, 8, 2.5e-6, 1e-5, 20),
    ("openai", "gpt-4o", "gpt-4o-2024-08-06", "chat", "generation", 1800, 350, 2.5e-6, 1e-5, 15),
    ("openai", "gpt-4.1", "gpt-4.1-2025-04-14", "search-summary", "summarisation", 6000, 250, 2e-6, 8e-6, 10),
    ("openai", "o3", "o3-2025-04-16", "planner", "reasoning", 2500, 1500, 2e-6, 8e-6, 5),
    (
        "anthropic",
        "claude-3-opus-20240229",
        "claude-3-opus-20240229",
        "contract-extract",
        "extraction",
        4000,
        900,
        1.5e-5,
        7.5e-5,
        6,
    ),
    ("anthropic", "claude-sonnet-4-20250514", "claude-sonnet-4-20250514", "chat", None, 1500, 300, 3e-6, 1.5e-5, 10),
    ("groq", "llama-3.1-70b-versatile", "llama-3.1-70b-versatile", "autocomplete", None, 300, 20, 5.9e-7, 7.9e-7, 12),
    ("gemini", "gemini-2.5-pro", "gemini-2.5-pro", "digest", "summarisation", 9000, 400, 1.25e-6, 1e-5, 6),
    ("azure", "prod-gpt4o", "gpt-4o-2024-08-06", "ticket-classifier", "classification", 600, 8, 2.5e-6, 1e-5, 8),
    ("openai", "ft:gpt-4o-mini:acme", "ft:gpt-4o-mini:acme", None, "misc", 500, 100, None, None, 4),
    ("openai", "gpt-4o-mini", "gpt-4o-mini-2024-07-18", None, None, 700, 120, 1.5e-7, 6e-7, 4),
]

COLUMNS = (
    "id, org_id, created_at, request_id, provider, provider_header, provider_unknown, model, response_model,"
    " feature, task, endpoint, stream, status_code, error_type, latency_ms, ttft_ms, upstream_ms,"
    " input_tokens, output_tokens, cached_input_tokens, usage_estimated, cost_usd, message_count"
)


def synthetic_events(n: int, org_id: int, end: dt.datetime, days: int, seed: int = 7) -> pl.DataFrame:
    """`n` events spread over the `days` before `end`, built with numpy (no Python loop per row)."""
    rng = np.random.default_rng(seed)
    shapes = pl.DataFrame(
        _SHAPES,
        schema=[
            "provider",
            "model",
            "response_model",
            "feature",
            "task",
            "prompt",
            "response",
            "price_in",
            "price_out",
            "weight",
        ],
        orient="row",
    ).with_row_index("shape")
    weights = shapes["weight"].to_numpy().astype(float)
    status = rng.choice([200, 429, 500, 504], size=n, p=[0.97, 0.015, 0.01, 0.005])
    seconds = rng.uniform(0, days * 86400, n)
    stream = rng.random(n) < 0.4
    noise = pl.DataFrame(
        {
            "shape": rng.choice(len(_SHAPES), size=n, p=weights / weights.sum()).astype(np.uint32),
            "id": [uuid.uuid4().hex for _ in range(n)],
            "created_at": np.datetime64(end.replace(tzinfo=None), "us") - (seconds * 1e6).astype("timedelta64[us]"),
            "status_code": status,
            "stream": stream,
            "prompt_noise": rng.lognormal(0, 0.4, n),
            "response_noise": rng.lognormal(0, 0.5, n),
            "speed": rng.uniform(8, 20, n),
            "overhead": rng.uniform(1, 6, n),
            "ttft": 150 + rng.exponential(200, n),
            "cached_share": rng.uniform(0, 0.3, n),
            "message_count": rng.integers(1, 12, n),
        }
    )
    ok = pl.col("status_code") < 400
    prompt = (pl.col("prompt") * pl.col("prompt_noise")).round().cast(pl.Int32)
    response = (pl.col("response") * pl.col("response_noise")).round().cast(pl.Int32)
    upstream = 200 + pl.col("response") * pl.col("response_noise") * pl.col("speed")
    return noise.join(shapes, on="shape", how="left").select(
        "id",
        pl.lit(org_id, pl.Int64).alias("org_id"),
        pl.col("created_at").dt.replace_time_zone("UTC"),
        pl.lit(None, pl.String).alias("request_id"),
        "provider",
        pl.when(pl.col("provider") == "azure").then(pl.lit("azure")).alias("provider_header"),
        pl.col("model").str.starts_with("ft:").alias("provider_unknown"),
        "model",
        "response_model",
        "feature",
        "task",
        pl.lit("chat/completions").alias("endpoint"),
        "stream",
        "status_code",
        pl.when(pl.col("status_code") == 504)
        .then(pl.lit("timeout"))
        .when(~ok)
        .then(pl.lit("upstream_error"))
        .alias("error_type"),
        (upstream + pl.col("overhead")).alias("latency_ms"),
        pl.when(pl.col("stream")).then(pl.col("ttft")).alias("ttft_ms"),
        upstream.alias("upstream_ms"),
        pl.when(ok).then(prompt).alias("input_tokens"),
        pl.when(ok).then(response).alias("output_tokens"),
        pl.when(ok).then((prompt * pl.col("cached_share")).round().cast(pl.Int32)).alias("cached_input_tokens"),
        pl.lit(False).alias("usage_estimated"),
        pl.when(ok).then(prompt * pl.col("price_in") + response * pl.col("price_out")).alias("cost_usd"),
        "message_count",
    )


def insert(conn: psycopg.Connection[Any], frame: pl.DataFrame) -> None:
    """Write `frame` into `events` with one COPY (CSV; an empty field is NULL)."""
    buf = io.BytesIO()
    frame.write_csv(buf, include_header=False, datetime_format="%Y-%m-%dT%H:%M:%S%.f%z", null_value="")
    with conn.cursor() as cur, cur.copy(f"COPY events ({COLUMNS}) FROM STDIN (FORMAT csv)") as copy:
        copy.write(buf.getbuffer())


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, float]:
    """(best, median) wall-clock seconds over `repeat` runs."""
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - start)
    return min(runs), statistics.median(runs)


def dashboard(conn: psycopg.Connection[Any], org_id: int, days: int) -> None:
    """What the dashboard does: load `days` once, then every figure and the cards, collected together."""
    now = dt.datetime.now(dt.UTC)
    events = analytics.load_events(conn, org_id, now - dt.timedelta(days=days), now)
    current, previous = analytics.split_periods(events, now - dt.timedelta(days=days / 2), now)
    pl.collect_all(
        [
            analytics.by_feature(current, previous),
            analytics.by_model(current, previous),
            analytics.by_provider(current, previous),
            analytics.timeseries(current, "1d"),
            analytics.cost_by_provider(current, "1d"),
            analytics.provider_health(events, now),
            analytics.untagged_share(current),
            analytics.unpriced(current),
        ]
    )
    analytics.recommendations(events, days)


def run(conn: psycopg.Connection[Any], rows: int, days: int, repeat: int) -> list[tuple[str, float, float]]:
    org, _ = create_org(conn, f"bench-{uuid.uuid4().hex[:8]}")
    end = dt.datetime.now(dt.UTC)
    ensure_partitions(conn, end, months_back=days // 28 + 2)
    started = time.perf_counter()
    frame = synthetic_events(rows, org.id, end, days)
    generated = time.perf_counter()
    insert(conn, frame)
    conn.execute("ANALYZE events")
    print(
        f"setup: {rows:,} events over {days} days generated in {generated - started:.1f} s,"
        f" copied in {time.perf_counter() - generated:.1f} s"
    )
    # Other work on the machine skews every figure; say how busy it was.
    print(f"load average before timing: {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} cores")
    del frame
    results = []
    for name, fn in [
        (
            "report --days 7 --json (7 days + cost of the 7 before)",
            lambda: report(conn, org.name, days=7, as_json=True),
        ),
        (f"recommend --json (loads {RECOMMEND_DAYS} days)", lambda: recommend(conn, org.name, as_json=True)),
        (
            "report + recommend, end to end",
            lambda: (report(conn, org.name, days=7, as_json=True), recommend(conn, org.name, as_json=True)),
        ),
        (f"dashboard: one {RECOMMEND_DAYS}-day load, all figures + cards", lambda: dashboard(conn, org.id, 14)),
        (
            f"load only, {days} days, analytics columns",
            lambda: analytics.load_events(conn, org.id, end - dt.timedelta(days=days), end).collect(),
        ),
        (f"dashboard over all {days} days (every row)", lambda: dashboard(conn, org.id, days)),
    ]:
        best, median = timed(fn, repeat)
        results.append((name, best, median))
        print(f"{name:<55} best {best:6.3f} s   median {median:6.3f} s", flush=True)
    conn.execute("DELETE FROM orgs WHERE id = %s", (org.id,))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    settings = Settings.from_env()
    with tempfile.TemporaryDirectory(prefix="lectr-bench-") as tmp:
        url = settings.database_url or database_url(Settings(data_dir=Path(tmp)))
        try:
            with connect(url) as conn:
                migrate(conn)
                results = run(conn, args.rows, args.days, args.repeat)
        finally:
            stop_embedded(Path(tmp))
    print("\n| step | best | median |\n|---|---:|---:|")
    for name, best, median in results:
        print(f"| {name} | {best:.2f} s | {median:.2f} s |")


if __name__ == "__main__":
    main()
