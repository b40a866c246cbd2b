"""Budgets in Postgres (SPEC §9): add, list, remove, and what each has spent in its period.

A budget is an org's spending limit in USD for a UTC day or month, on the whole org or one
feature. Every operation is scoped to one org by name: another org's budget id is "not found".
Spend is read from `rollup_hourly` (hours are whole within a day or a month, so the sum of the
period's hours is exact); `proxy.pipeline.spend` adds what a worker has priced but not yet written.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

import psycopg

from proxy.store.orgs import OrgError, get_org

PERIODS = ("day", "month")
DEFAULT_ALERT_AT = (80, 100)


@dataclass(frozen=True, slots=True)
class Budget:
    id: int
    org_id: int
    feature: str | None  # None: the whole org
    period: str  # day | month (UTC)
    limit_usd: float
    hard: bool
    alert_at: tuple[int, ...]

    def describe(self) -> str:
        """For people and error messages: "budget 7 (feature chat, $50.00 a month)"."""
        scope = f"feature {self.feature!r}" if self.feature is not None else "whole org"
        return f"budget {self.id} ({scope}, ${self.limit_usd:,.2f} a {self.period})"


def period_start(period: str, now: dt.datetime) -> dt.datetime:
    """The UTC start of the day or month `now` is in."""
    now = now.astimezone(dt.UTC)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return day if period == "day" else day.replace(day=1)


def period_end(period: str, now: dt.datetime) -> dt.datetime:
    """When the period `now` is in resets (the next one's start)."""
    start = period_start(period, now)
    if period == "day":
        return start + dt.timedelta(days=1)
    return (start + dt.timedelta(days=32)).replace(day=1)


def parse_alert_at(text: str | None) -> tuple[int, ...]:
    """`--alert-at 50,80,100`: whole percentages from 1 to 1000, sorted, no repeats."""
    if text is None or not text.strip():
        return DEFAULT_ALERT_AT
    try:
        values = sorted({int(part.strip().rstrip("%")) for part in text.split(",") if part.strip()})
    except ValueError:
        raise OrgError(f"--alert-at takes whole percentages, comma-separated (e.g. 50,80,100), not {text!r}") from None
    if not values or any(v < 1 or v > 1000 for v in values):
        raise OrgError("--alert-at percentages must be between 1 and 1000")
    return tuple(values)


def _limit(value: float | str | Decimal) -> Decimal:
    try:
        limit = Decimal(str(value))
    except InvalidOperation:
        raise OrgError(f"--limit-usd must be a number of dollars, not {value!r}") from None
    if not limit.is_finite() or limit <= 0 or limit >= Decimal("1e14"):
        raise OrgError("--limit-usd must be a positive amount of dollars")
    return limit


def add_budget(
    conn: psycopg.Connection[Any],
    org_name: str,
    *,
    limit_usd: float | str | Decimal,
    period: str = "month",
    feature: str | None = None,
    hard: bool = False,
    alert_at: tuple[int, ...] = DEFAULT_ALERT_AT,
) -> int:
    """Add a budget; return its id. Every worker applies it within its refresh interval."""
    org = get_org(conn, org_name)
    if period not in PERIODS:
        raise OrgError(f"--period must be day or month, not {period!r}")
    row = conn.execute(
        "INSERT INTO budgets (org_id, feature, period, limit_usd, hard, alert_at) VALUES (%s, %s, %s, %s, %s, %s)"
        " RETURNING id",
        (org.id, feature if feature else None, period, _limit(limit_usd), hard, list(alert_at)),
    ).fetchone()
    assert row is not None
    return int(row[0])


def remove_budget(conn: psycopg.Connection[Any], org_name: str, budget_id: int) -> None:
    org = get_org(conn, org_name)
    cur = conn.execute("DELETE FROM budgets WHERE org_id = %s AND id = %s", (org.id, budget_id))
    if cur.rowcount == 0:
        raise OrgError(f"org {org_name!r} has no budget {budget_id}")


# Every budget (or one org's) with the rollups' cost of its current period: one query, whatever
# the number of budgets. `%(day)s` and `%(month)s` are the current periods' starts (UTC).
_WITH_SPEND = (
    "SELECT b.id, b.org_id, b.feature, b.period, b.limit_usd::float8, b.hard, b.alert_at,"
    " coalesce((SELECT sum(r.cost_usd) FROM rollup_hourly r WHERE r.org_id = b.org_id"
    "   AND r.hour >= CASE b.period WHEN 'day' THEN %(day)s ELSE %(month)s END"
    "   AND (b.feature IS NULL OR r.feature = b.feature)), 0)::float8"
    " FROM budgets b WHERE (%(org)s::bigint IS NULL OR b.org_id = %(org)s) ORDER BY b.org_id, b.id"
)


def budgets_with_spend(
    conn: psycopg.Connection[Any], now: dt.datetime, org_id: int | None = None
) -> list[tuple[Budget, float]]:
    """Each budget (of one org, or all) and the rollups' spend in its current period."""
    params = {"day": period_start("day", now), "month": period_start("month", now), "org": org_id}
    rows = conn.execute(_WITH_SPEND, params).fetchall()
    return [
        (Budget(row[0], row[1], row[2], row[3], float(row[4]), bool(row[5]), tuple(row[6])), float(row[7]))
        for row in rows
    ]


def list_budgets(conn: psycopg.Connection[Any], org_name: str, now: dt.datetime | None = None) -> list[dict[str, Any]]:
    """The org's budgets with their spend so far (from the rollups) and when each period resets."""
    org = get_org(conn, org_name)
    now = now or dt.datetime.now(dt.UTC)
    return [
        {
            "id": budget.id,
            "feature": budget.feature,
            "period": budget.period,
            "limit_usd": budget.limit_usd,
            "hard": budget.hard,
            "alert_at": list(budget.alert_at),
            "spend_usd": round(spend, 6),
            "percent": round(100 * spend / budget.limit_usd, 2),
            "period_start": period_start(budget.period, now).isoformat(),
            "resets_at": period_end(budget.period, now).isoformat(),
        }
        for budget, spend in budgets_with_spend(conn, now, org.id)
    ]


__all__ = [
    "DEFAULT_ALERT_AT",
    "PERIODS",
    "Budget",
    "add_budget",
    "budgets_with_spend",
    "list_budgets",
    "parse_alert_at",
    "period_end",
    "period_start",
    "remove_budget",
]
