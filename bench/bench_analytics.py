"""Analytics benchmark: `lectr report` / `lectr recommend` as whole processes, and the dashboard's
90-day bundle over a 100 M-event history.

    python bench/bench_analytics.py cli [--rows 200000,2000000] [--days 90] [--repeat 5] [--baseline DIR]
    python bench/bench_analytics.py dashboard [--events 100000000] [--period 90d] [--repeat 5]

`cli`: for each row count, an org with that many synthetic events over `--days` (inserted with
one `COPY`, their rollups made by `analytics.rollup` as the writer would keep them), then each
command is run as its own process (`python -m proxy.cli ...`, what `lectr` runs): wall time and
peak RSS, beside the interpreter's own start. `--baseline DIR` times the same commands with
`PYTHONPATH=DIR` too (e.g. a checkout of the code before rollups, which reads raw events).
Each variant has a data directory of its own (`LECTR_DATA_DIR`); its first `recommend`, which
writes the unit-price cache (`analytics/price_cache.py`), is timed apart, before the others.
Every size is seeded first; then each of the `--repeat` rounds runs every (size, command,
variant) once, so a change of the (shared) machine's load reaches all figures alike.

`dashboard`: rollup rows for a history of `--events` per period (two periods, plus the
anomalies' history) synthesised directly (`bench/synth_rollups.py` says how), real events in
the hours the loads cut mid-hour, then every bundle of the period (overview, features,
providers, request-log filters, recommendations, anomalies) computed by `dashboard.data` with
empty caches, in a fresh process: time and peak RSS.

Uses `DATABASE_URL` when set, otherwise an embedded Postgres in a temporary directory. The
events are synthetic but shaped like real traffic (several features, all five providers, every
task type, errors, streaming, unpriced models). Figures go to stdout; the latest are recorded in
`bench/README.md` under "Analytics".
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import psycopg

from proxy.core.config import Settings
from proxy.store.db import connect, database_url, ensure_partitions, migrate
from proxy.store.db.connection import stop_embedded
from proxy.store.orgs import create_org

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


def _child(argv: list[str], env: dict[str, str], cwd: str | None = None) -> tuple[float, float, int]:
    """Run a process to its end: (wall seconds, CPU seconds, peak RSS in MB). CPU and RSS come
    from `/usr/bin/time`, whose own child starts small: a child of this (large) process would
    carry this process's RSS in its `ru_maxrss` (Linux keeps it across exec)."""
    with tempfile.NamedTemporaryFile("r") as out:
        started = time.perf_counter()
        subprocess.run(["/usr/bin/time", "-f", "%M %U %S", "-o", out.name, *argv], env=env, cwd=cwd,
                       stdout=subprocess.DEVNULL, check=True)
        elapsed = time.perf_counter() - started
        rss, user, system = out.read().split()[-3:]
        return elapsed, float(user) + float(system), int(rss) // 1024


def timed_process(
    argv: list[str], env: dict[str, str], repeat: int, cwd: str | None = None
) -> tuple[float, float, float, int]:
    """(best wall, median wall, best CPU seconds, peak RSS MB) of `repeat` runs of a process."""
    runs = [_child(argv, env, cwd) for _ in range(repeat)]
    walls = [w for w, _, _ in runs]
    return min(walls), statistics.median(walls), min(c for _, c, _ in runs), max(r for _, _, r in runs)


def seed_org(conn: psycopg.Connection[Any], rows: int, days: int, end: dt.datetime) -> str:
    """An org with `rows` synthetic events over the `days` before `end`, and their rollups."""
    from synth_rollups import rollup_events

    org, _ = create_org(conn, f"bench-{rows}-{uuid.uuid4().hex[:6]}")
    started = time.perf_counter()
    frame = synthetic_events(rows, org.id, end, days)
    insert(conn, frame)
    rollup_events(conn, org.id, frame)
    conn.execute("ANALYZE events")
    conn.execute("ANALYZE rollup_hourly")
    print(f"setup: {rows:,} events over {days} days and their rollups in {time.perf_counter() - started:.1f} s",
          flush=True)
    return org.name


def _variants(env: dict[str, str], data: Path, baseline: str | None) -> list[tuple[str, dict[str, str], str | None]]:
    """(label, environment, working directory) of each tree to time. `python -m` puts the working
    directory first on sys.path, so each variant runs from its tree, with a data directory of its
    own (where `recommend` keeps its unit-price cache)."""
    variants: list[tuple[str, dict[str, str], str | None]] = [
        ("rollups", {**env, "LECTR_DATA_DIR": str(data / "rollups")}, None)
    ]
    if baseline:
        variants.append(("baseline", {**env, "PYTHONPATH": baseline, "LECTR_DATA_DIR": str(data / "baseline")},
                         baseline))
    return variants


def cli(conn: psycopg.Connection[Any], url: str, args: argparse.Namespace) -> list[tuple[str, ...]]:
    end = dt.datetime.now(dt.UTC)
    ensure_partitions(conn, end, months_back=2 * args.days // 28 + 2)
    env = {**os.environ, "DATABASE_URL": url, "LECTR_LOG_LEVEL": "WARNING"}
    best, median, cpu, rss = timed_process([sys.executable, "-c", "pass"], env, args.repeat)
    results = [("interpreter start (`python -c pass`)", "", f"{best:.3f} s", f"{median:.3f} s", f"{cpu:.2f} s",
                f"{rss} MB")]
    print(f"interpreter start: best {best:.3f} s", flush=True)
    orgs = {rows: seed_org(conn, rows, args.days, end) for rows in (int(r) for r in args.rows.split(","))}
    data = Path(tempfile.mkdtemp(prefix="lectr-bench-data-"))
    variants = _variants(env, data, args.baseline)
    print(f"load average before timing: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)

    def argv(rows: int, label: str) -> list[str]:
        command = label.split()[0]
        extra = ["--days", str(args.days)] if command == "report" else []
        return [sys.executable, "-m", "proxy.cli", command, "--org", orgs[rows], *extra, "--json"]

    # The first `recommend` of a data directory (or after a genai-prices upgrade) asks
    # genai-prices and writes the cache: timed once per size, each in an empty data directory.
    # Then one untimed `recommend` per size in the directory the rounds use, as a user's first
    # runs would leave it (a model seen for the first time is asked once, then kept).
    for rows in orgs:
        for variant, variant_env, cwd in variants:
            empty = {**variant_env, "LECTR_DATA_DIR": str(data / f"{variant}-{rows}-first")}
            wall, cpu, rss = _child(argv(rows, "recommend"), empty, cwd)
            results.append((f"recommend --json, first run ({variant})", f"{rows:,}", f"{wall:.3f} s", "",
                            f"{cpu:.2f} s", f"{rss} MB"))
            print(f"{rows:>10,} recommend --json, first run ({variant}): {wall:.3f} s, CPU {cpu:.2f} s, {rss} MB",
                  flush=True)
            _child(argv(rows, "recommend"), variant_env, cwd)
    # Round-robin: each repeat runs every (size, command, variant) once, so that a change in the
    # machine's load (it is shared) reaches every figure alike rather than one size or one tree.
    labels = (f"report --days {args.days} --json", "recommend --json")
    runs: dict[tuple[int, str, str], list[tuple[float, float, int]]] = {}
    for _ in range(args.repeat):
        for rows in orgs:
            for label in labels:
                for variant, variant_env, cwd in variants:
                    runs.setdefault((rows, label, variant), []).append(_child(argv(rows, label), variant_env, cwd))
    for (rows, label, variant), timed in runs.items():
        walls = [w for w, _, _ in timed]
        best, median = min(walls), statistics.median(walls)
        cpu, rss = min(c for _, c, _ in timed), max(r for _, _, r in timed)
        results.append((f"{label} ({variant})", f"{rows:,}", f"{best:.3f} s", f"{median:.3f} s", f"{cpu:.2f} s",
                        f"{rss} MB"))
        print(f"{rows:>10,} {label} ({variant}): best {best:.3f} s, median {median:.3f} s, CPU {cpu:.2f} s"
              f" (median {statistics.median(c for _, c, _ in timed):.2f} s), {rss} MB", flush=True)
    print(f"load average after timing: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    shutil.rmtree(data, ignore_errors=True)
    return results


BUNDLE = """
import datetime as dt, statistics, sys, time, warnings
warnings.filterwarnings("ignore")
import logging; logging.disable(logging.WARNING)
import streamlit as st
from dashboard import data
org, period, repeat = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
# The data side of the dashboard's warm-up imports; its chart libraries (Altair, pandas: +25-35 MB)
# draw the figures rather than compute them and are left out. genai-prices, which the bundle's
# recommendations use, is imported by the first run and so counts in the peak.
import adbc_driver_postgresql.dbapi, polars
def hwm():  # this process's own peak RSS in MB (ru_maxrss would include the parent's at fork)
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1]) // 1024
before = hwm()
runs, cpus = [], []
for _ in range(repeat):
    st.cache_data.clear(); st.cache_resource.clear()
    end = data.window_end()
    started, cpu = time.perf_counter(), time.process_time()
    overview = data.overview(org, period, end)
    data.features(org, period, end); data.providers(org, period, end); data.filter_options(org, period, end)
    cards = data.recommendations(org, period, end); found = data.anomalies(org, period, end)
    runs.append(time.perf_counter() - started); cpus.append(time.process_time() - cpu)
peak = hwm()
print(min(runs), statistics.median(runs), before, peak, overview.totals["requests"], len(cards.cards), found.height,
      min(cpus))
"""


def dashboard(conn: psycopg.Connection[Any], url: str, args: argparse.Namespace) -> list[tuple[str, ...]]:
    from synth_rollups import copy_rollups, days_from_hours, real_hours, synthetic_rollups

    from dashboard.data import PERIODS, current_span, period_start, recent_start, window_end

    length = PERIODS[args.period].length
    end = window_end()
    first = (end - 2 * length - dt.timedelta(hours=1)).replace(minute=0, second=0, microsecond=0)
    per_hour = args.events / (length / dt.timedelta(hours=1))
    ensure_partitions(conn, end, months_back=int(2 * length.days / 28) + 2)
    org, _ = create_org(conn, f"bench-dash-{uuid.uuid4().hex[:6]}")
    # The hours the bundle's loads cut mid-hour, for this hour's window ends and the next's.
    cuts: set[dt.datetime] = set()
    for shift in (dt.timedelta(0), dt.timedelta(hours=1)):
        since, current_cuts = current_span(args.period, end + shift)
        start = period_start(args.period, end + shift)
        for at in (since, *current_cuts, start - length, start, recent_start(end + shift)):
            cuts.add(at.replace(minute=0, second=0, microsecond=0))
    hours = [first + dt.timedelta(hours=h) for h in range(int((end - first) / dt.timedelta(hours=1)) + 1)]
    started = time.perf_counter()
    rows = synthetic_rollups(org.id, [h for h in hours if h not in cuts], per_hour)
    copy_rollups(conn, org.id, rows)
    written = real_hours(conn, org.id, [h for h in hours if h in cuts], per_hour)
    conn.execute("ANALYZE rollup_hourly")
    conn.execute("ANALYZE events")
    merging = time.perf_counter()
    days = days_from_hours(conn, org.id)
    print(f"daily rollups: {days:,} rows from the hourly ones in {time.perf_counter() - merging:.0f} s", flush=True)
    total = int(rows["requests"].sum()) + written
    print(f"setup: {len(hours):,} hours, {rows.height:,} synthesised rollup rows standing for {total:,} events"
          f" ({per_hour:,.0f} an hour, {args.events:,} per {args.period}), {written:,} real events in"
          f" {len(cuts)} cut hours, in {time.perf_counter() - started:.0f} s", flush=True)
    print(f"load average before timing: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    env = {**os.environ, "DATABASE_URL": url}
    out = subprocess.run([sys.executable, "-c", BUNDLE, str(org.id), args.period, str(args.repeat)], env=env,
                         capture_output=True, text=True, check=True).stdout.split()
    best, median, before, peak, cpu = float(out[0]), float(out[1]), int(out[2]), int(out[3]), float(out[7])
    print(f"bundle ({args.period}): best {best:.3f} s, median {median:.3f} s; RSS {before} MB after imports,"
          f" {peak} MB peak; {int(out[4]):,} requests in the period, {out[5]} cards, {out[6]} anomalies")
    return [(f"dashboard bundle, {args.period}", f"{args.events:,}", f"{best:.3f} s", f"{median:.3f} s",
             f"{cpu:.2f} s", f"{peak} MB (after imports {before} MB)")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    p = sub.add_parser("cli", help="lectr report / recommend as whole processes")
    p.add_argument("--rows", default="200000,2000000", help="comma-separated event counts")
    p.add_argument("--days", type=int, default=90)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--baseline", help="a checkout whose code to time as well (PYTHONPATH)")
    p = sub.add_parser("dashboard", help="the dashboard's bundle over synthesised rollups")
    p.add_argument("--events", type=int, default=100_000_000, help="events per period")
    p.add_argument("--period", default="90d")
    p.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    settings = Settings.from_env()
    with tempfile.TemporaryDirectory(prefix="lectr-bench-") as tmp:
        url = settings.database_url or database_url(Settings(data_dir=Path(tmp)))
        try:
            with connect(url) as conn:
                migrate(conn)
                results = (cli if args.mode == "cli" else dashboard)(conn, url, args)
        finally:
            stop_embedded(Path(tmp))
    print("\n| step | events | best | median | CPU (best) | peak RSS |\n|---|---:|---:|---:|---:|---:|")
    for row in results:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
