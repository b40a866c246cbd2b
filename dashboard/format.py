"""Numbers for people: money, durations, shares, changes, counts and times.

Every figure on the dashboard goes through one of these, so `$0.0042` and `1.4 s` read the
same on every page. Unknown values (None, NaN) render as an em dash, never as zero: an unpriced
request has an unknown cost, not a free one.
"""

from __future__ import annotations

import datetime as dt
import math

UNKNOWN = "—"


def _missing(value: float | int | None) -> bool:
    return value is None or (isinstance(value, float) and not math.isfinite(value))


def money(value: float | None) -> str:
    """`$1,234.56`; below a cent two significant digits (`$0.0042`) so small costs stay visible."""
    if value is None or _missing(value):
        return UNKNOWN
    sign = "-" if value < 0 else ""
    amount = abs(value)
    if amount == 0:
        return "$0.00"
    if amount >= 0.01:
        return f"{sign}${amount:,.2f}"
    # Two significant digits: 0.0042 → 4 decimals, 0.00042 → 5.
    decimals = -math.floor(math.log10(amount)) + 1
    return f"{sign}${amount:.{decimals}f}"


def duration(ms: float | None) -> str:
    """`850 ms`, `1.4 s`, `12 s`, `5.0 min`: milliseconds for people."""
    if ms is None or _missing(ms):
        return UNKNOWN
    if ms < 9.95:
        return f"{ms:.1f} ms"
    if ms < 999.5:  # 999.7 ms would otherwise print as "1,000 ms"
        return f"{ms:,.0f} ms"
    seconds = ms / 1000
    if seconds < 9.95:  # 9.96 s would otherwise print as "10.0 s"
        return f"{seconds:.1f} s"
    if seconds < 59.5:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min"


def percent(share: float | None) -> str:
    """`12.3%` for a share between 0 and 1; `<0.1%` for a share too small to read."""
    if share is None or _missing(share):
        return UNKNOWN
    if 0 < share < 0.001:
        return "<0.1%"
    return f"{share * 100:.1f}%"


def change(relative: float | None) -> str:
    """A relative change (`0.25` → `+25.0%`); unknown when there was nothing to compare with.
    Past ten-fold the percentage stops meaning much (a new feature against a handful of calls):
    it reads as a multiple, `+45×`."""
    if relative is None or _missing(relative):
        return UNKNOWN
    if relative >= 9:
        return f"+{relative + 1:,.0f}×"
    return f"{relative * 100:+.1f}%"


def count(value: int | float | None) -> str:
    """`1,234`."""
    if value is None or _missing(value):
        return UNKNOWN
    return f"{value:,.0f}"


def tokens(value: int | float | None) -> str:
    """Token counts, compact: `850`, `12.4k`, `3.1M`."""
    if value is None or _missing(value):
        return UNKNOWN
    if abs(value) < 1000:
        return f"{value:,.0f}"
    if abs(value) < 1_000_000:
        return f"{value / 1000:,.1f}k"
    return f"{value / 1_000_000:,.1f}M"


def timestamp(value: dt.datetime | None) -> str:
    """`2024-05-01 14:03:07 UTC` (the dashboard shows every time in UTC)."""
    if value is None:
        return UNKNOWN
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC)
    return value.strftime("%Y-%m-%d %H:%M:%S UTC")


def delta_points(current: float | None, previous: float | None) -> str | None:
    """The difference of two rates in percentage points (`+1.2 pts`), for a metric's delta."""
    if current is None or previous is None or _missing(current) or _missing(previous):
        return None
    return f"{(current - previous) * 100:+.1f} pts"


def delta_duration(current: float | None, previous: float | None) -> str | None:
    """The difference of two durations (`+120 ms`, `-1.4 s`), for a metric's delta."""
    if current is None or previous is None or _missing(current) or _missing(previous):
        return None
    diff = current - previous
    sign = "+" if diff >= 0 else "-"
    return sign + duration(abs(diff))
