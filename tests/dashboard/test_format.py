"""The formatters every figure on the dashboard goes through."""

from __future__ import annotations

import datetime as dt
import math

import pytest

from dashboard import format as fmt


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (1234.5678, "$1,234.57"), (0.42, "$0.42"), (0.01, "$0.01"), (0.0042, "$0.0042"), (0.00042, "$0.00042"),
        (0.004249, "$0.0042"), (0.0, "$0.00"), (-3.5, "-$3.50"), (1_000_000, "$1,000,000.00"),
        (None, "—"), (math.nan, "—"),
    ],
)
def test_money(value: float | None, shown: str) -> None:
    assert fmt.money(value) == shown


@pytest.mark.parametrize(
    ("ms", "shown"),
    [
        (850, "850 ms"), (850.4, "850 ms"), (4.25, "4.2 ms"), (999.7, "1.0 s"), (1400, "1.4 s"),
        (9960, "10 s"), (12_345, "12 s"), (59_700, "1.0 min"), (300_000, "5.0 min"), (None, "—"),
    ],
)
def test_duration(ms: float | None, shown: str) -> None:
    assert fmt.duration(ms) == shown


def test_shares_and_changes() -> None:
    assert fmt.percent(0.123) == "12.3%"
    assert fmt.percent(0.0004) == "<0.1%"
    assert fmt.percent(0.0) == "0.0%"
    assert fmt.percent(None) == "—"
    assert fmt.change(0.25) == "+25.0%"
    assert fmt.change(-0.031) == "-3.1%"
    assert fmt.change(None) == "—"
    assert fmt.change(65277.833) == "+65,279×"  # against a near-empty previous period
    assert fmt.delta_points(0.05, 0.02) == "+3.0 pts"
    assert fmt.delta_points(0.05, None) is None
    assert fmt.delta_duration(1200, 1000) == "+200 ms"
    assert fmt.delta_duration(1000, 2500) == "-1.5 s"


def test_counts_tokens_and_times() -> None:
    assert fmt.count(1234) == "1,234"
    assert fmt.tokens(850) == "850"
    assert fmt.tokens(12_400) == "12.4k"
    assert fmt.tokens(3_100_000) == "3.1M"
    assert fmt.tokens(None) == "—"
    when = dt.datetime(2024, 5, 1, 16, 3, 7, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert fmt.timestamp(when) == "2024-05-01 14:03:07 UTC"
