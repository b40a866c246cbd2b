"""Hand-built event frames for the analytics tests."""

from __future__ import annotations

import datetime as dt
from typing import Any

import polars as pl

from analytics import events_frame

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


def frame(*events: dict[str, Any]) -> pl.LazyFrame:
    return events_frame(list(events))
