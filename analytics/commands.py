"""`lectr report` and `lectr recommend`: the §5 figures as text tables or JSON (SPEC §2).

Both return the whole output as one string; `proxy/cli.py` prints it. JSON numbers are plain
floats (NaN and unknowns become null), so `jq` and dashboards can read them without parsing
Decimal strings.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import polars as pl
import psycopg

from analytics.load_rollups import azure_base_models, load_rollups
from analytics.metrics import by_feature, untagged_share
from analytics.price_cache import cached_unit_prices
from analytics.recommend import RECOMMEND_HISTOGRAMS, protected_features, recommendation_list
from proxy.store.orgs import OrgError, get_org

# The recommendation window: a week spans one weekly cycle and is recent enough that the models
# it reports are the ones in use now.
RECOMMEND_DAYS = 7

# The report's percentiles (latency and TTFT p95; the overhead is reported as an average); the
# previous period only feeds `change` (cost and requests per feature) and loads no histogram.
REPORT_HISTOGRAMS = ("latency_ms", "ttft_ms")
REPORT_FIELDS = (
    "feature", "requests", "errors", "error_rate", "input_tokens", "output_tokens", "cost_usd",
    "unpriced_requests", "share", "previous_cost_usd", "change", "latency_ms_avg", "latency_ms_p95",
    "ttft_ms_p95", "overhead_ms_avg",
)


def _plain(value: Any) -> Any:
    """JSON-safe: NaN/inf → None, recursively through dicts and lists."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    """Left-align the first column, right-align the others."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = []
    for row in [header, *rows]:
        pairs = enumerate(zip(row, widths, strict=True))
        cells = [str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in pairs]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _money(v: float | None) -> str:
    return "unknown" if v is None else f"${v:,.2f}"


def _pct(v: float | None, signed: bool = False) -> str:
    if v is None:
        return "-"
    return f"{v * 100:+.1f}%" if signed else f"{v * 100:.1f}%"


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:,.0f}"


def report_frame(
    conn: psycopg.Connection[Any], org_id: int, days: int, now: dt.datetime
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(per-feature breakdown, untagged share) over the last `days` days, collected together."""
    start = now - dt.timedelta(days=days)
    before = start - dt.timedelta(days=days)
    # Both periods load at once: each load is a Postgres backend and ADBC decoding, with the GIL
    # released, so on two cores the report waits for the longer load, not for both. No figure
    # here is by the hour: whole days come from the daily rollups.
    with ThreadPoolExecutor(max_workers=2) as pool:
        current_load = pool.submit(load_rollups, conn, org_id, start, now, histograms=REPORT_HISTOGRAMS, now=now,
                                   days=True)
        previous_load = pool.submit(load_rollups, conn, org_id, before, start, histograms=(), now=now, days=True)
        current, previous = current_load.result(), previous_load.result()
    features, untagged = pl.collect_all([by_feature(current, previous), untagged_share(current)])
    return features, untagged


def report(conn: psycopg.Connection[Any], org_name: str, days: int = 7, as_json: bool = False) -> str:
    """Per-feature requests, cost, share, change vs the previous `days`, latency and errors."""
    if days < 1:
        raise OrgError("--days must be at least 1")
    org = get_org(conn, org_name)
    now = dt.datetime.now(dt.UTC)
    features, untagged = report_frame(conn, org.id, days, now)
    rows = features.select(REPORT_FIELDS).to_dicts()
    if as_json:
        return json.dumps([_plain(r) for r in rows], indent=2)
    if not rows:
        return f"org {org.name!r}: no requests in the last {days} days"
    table = _table(
        [
            [r["feature"], f"{r['requests']:,}", _money(r["cost_usd"]), _pct(r["share"]),
             _pct(r["change"], signed=True), _ms(r["latency_ms_avg"]), _ms(r["latency_ms_p95"]),
             _pct(r["error_rate"])]
            for r in rows
        ],
        ["feature", "requests", "cost", "share", "change", "avg ms", "p95 ms", "errors"],
    )
    known = float(features["cost_usd"].sum())
    lines = [
        f"org {org.name!r}, last {days} days (change vs the {days} days before)",
        "",
        table,
        "",
        f"total {features['requests'].sum():,} requests, {_money(known)} of known cost",
    ]
    unpriced_count = int(features["unpriced_requests"].sum())
    if unpriced_count:
        lines.append(f"{unpriced_count:,} successful requests have no known price (not counted as $0)")
    share = untagged.row(0, named=True)
    if share["show_tagging_prompt"]:
        lines.append(
            f"{_pct(share['untagged_share'])} of requests are untagged:"
            " send `X-Lectr-Feature: <name>` to see them per feature"
        )
    return "\n".join(lines)


def recommend(
    conn: psycopg.Connection[Any], org_name: str, as_json: bool = False, data_dir: Path | None = None
) -> str:
    """Cheaper-model cards from the last `RECOMMEND_DAYS` days, largest saving first. With a
    `data_dir`, the unit prices come from its cache when they can (`analytics.price_cache`)."""
    org = get_org(conn, org_name)
    now = dt.datetime.now(dt.UTC)
    frame = load_rollups(
        conn, org.id, now - dt.timedelta(days=RECOMMEND_DAYS), now, histograms=RECOMMEND_HISTOGRAMS, now=now,
        days=True,
    ).collect().lazy()
    bases = azure_base_models(conn, org.id, frame)
    with cached_unit_prices(data_dir) if data_dir is not None else nullcontext():
        cards = recommendation_list(frame, RECOMMEND_DAYS, bases)
    if as_json:
        return json.dumps([_plain(c.to_dict()) for c in cards], indent=2)
    protected = protected_features(frame).collect()
    lines = [f"org {org.name!r}: {len(cards)} recommendation(s) from the last {RECOMMEND_DAYS} days", ""]
    for c in cards:
        saving = "unknown saving" if c.monthly_saving_usd is None else f"saves ~{_money(c.monthly_saving_usd)}/month"
        lines.append(
            f"{c.feature} [{c.provider}] {c.from_model} -> {c.to_model}: {saving}"
            f" (confidence {c.confidence}, {c.strength}, task {c.task or 'none'})"
        )
        lines.append(f"    {c.reason}")
    for r in protected.iter_rows(named=True):
        lines.append(
            f"protected: {r['feature']} on {r['model']}"
            f" ({r['reasoning_requests']:,} reasoning requests, never downgraded)"
        )
    if not cards and protected.is_empty():
        lines.append("nothing to recommend yet: no traffic, or every model is already the cheapest sensible one")
    return "\n".join(lines).rstrip()
