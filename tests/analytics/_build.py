"""Hand-built traffic for the analytics tests: events, aggregated into rollup rows as the writer
aggregates them (figures read rollups)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

import polars as pl

from analytics import events_frame, rollup

# A Monday, so day buckets and weekdays are easy to reason about.
T0 = dt.datetime(2025, 1, 6, tzinfo=dt.UTC)

DEFAULTS: dict[str, Any] = {
    "provider": "openai",
    "model": "gpt-4o",
    "status_code": 200,
    "latency_ms": 100.0,
    "upstream_ms": 90.0,
    "endpoint": "chat/completions",
}


def ev(**fields: Any) -> dict[str, Any]:
    """One event: DEFAULTS overridden by `fields`; `at` (hours after T0) sets created_at."""
    hours = fields.pop("at", 0.0)
    return {**DEFAULTS, "created_at": T0 + dt.timedelta(hours=hours), **fields}


def raw(*events: dict[str, Any]) -> pl.LazyFrame:
    """The events themselves."""
    return events_frame(list(events))


def frame(*events: dict[str, Any], cuts: Iterable[dt.datetime] = ()) -> pl.LazyFrame:
    """The events' rollup rows, hours cut at `cuts` (collected once, as a load would be)."""
    return rollup(raw(*events), cuts).collect().lazy()
