"""BudgetTracker: each worker's in-memory view of every budget's spend, and the hot path's check.

Spend of a budget = the rollups' cost for its period (one query for all budgets, every
`refresh_seconds`) + what this worker has priced and not yet seen in the rollups. The event
writer tells the tracker about each event it prices (`priced`) and each batch it commits
(`committed`: events and their rollups go in one transaction). A committed cost is still counted
here until a refresh that *began after the commit* has finished, so a cost is never counted
twice nor dropped between the commit and the next refresh:

    priced ──▶ pending ──commit──▶ recent ──refresh starts──▶ settling ──refresh done──▶ (in the rollups)

Each budget's spend is kept as a running figure (`_spent`): a priced event adds to the budgets it
falls in, a refresh recounts them all. When a hard budget reaches its limit it is put in
`_blocked`, so the hot path's check is a dictionary
lookup (`check`), never a query. How far a burst can overshoot: docs/BUDGETS.md.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable
from typing import Any

import psycopg

from proxy.accounting.record import COLUMNS
from proxy.core.errors import BudgetExceeded
from proxy.pipeline.reloaded import Reloaded
from proxy.store.budgets import Budget, budgets_with_spend, period_end, period_start

log = logging.getLogger("lectr.budgets")

_ORG, _FEATURE, _CREATED, _COST = (COLUMNS.index(c) for c in ("org_id", "feature", "created_at", "cost_usd"))

# Costs not yet in the rollups, by org: (feature, UTC day) → USD.
Unsettled = dict[int, dict[tuple[str | None, dt.date], float]]
# A reached hard budget: the budget, its spend, when its period resets.
Reached = tuple[Budget, float, dt.datetime]


def _add(into: Unsettled, org_id: int, key: tuple[str | None, dt.date], amount: float) -> None:
    by_key = into.setdefault(org_id, {})
    by_key[key] = by_key.get(key, 0.0) + amount


class BudgetTracker(Reloaded):
    def __init__(self, database_url: str, refresh_seconds: float = 2.0) -> None:
        super().__init__(database_url, refresh_seconds)
        self._budgets: dict[int, list[Budget]] = {}  # by org
        self._rolled: dict[int, float] = {}  # budget id → the rollups' spend at the last refresh
        self._pending: Unsettled = {}
        self._recent: Unsettled = {}
        self._settling: Unsettled = {}
        self._spent: dict[int, float] = {}  # budget id → its spend as this worker sees it
        self._starts = {period: period_start(period, dt.datetime.now(dt.UTC)).date() for period in ("day", "month")}
        self._blocked: dict[int, list[Reached]] = {}  # by org: the reached hard budgets
        self._reached: set[int] = set()  # their ids

    # -- the hot path ------------------------------------------------------------------------

    def check(self, org_id: int, feature: str | None) -> None:
        """Raise `BudgetExceeded` if a reached hard budget covers this request. One dict lookup
        when the org has no reached hard budget (nearly always)."""
        reached = self._blocked.get(org_id)
        if reached is None:
            return
        for budget, spend, resets_at in reached:
            if budget.feature is None or budget.feature == feature:
                raise BudgetExceeded(budget, spend, resets_at)  # a new one each time: no shared traceback

    # -- the writer's hook (plain functions, called on the event loop) -----------------------

    def priced(self, row: tuple[Any, ...]) -> None:
        """An event the writer has priced and holds: its cost counts from now on. A few additions
        per budget of the org (this runs on the event loop, once per event)."""
        org_id, cost = row[_ORG], row[_COST]
        if not cost:
            return
        budgets = self._budgets.get(org_id)
        if budgets is None:
            return
        feature, day, amount = row[_FEATURE], row[_CREATED].astimezone(dt.UTC).date(), float(cost)
        _add(self._pending, org_id, (feature, day), amount)
        spent = self._spent
        for budget in budgets:
            if (budget.feature is None or budget.feature == feature) and day >= self._starts[budget.period]:
                total = spent[budget.id] = spent.get(budget.id, 0.0) + amount
                if budget.hard and total >= budget.limit_usd and budget.id not in self._reached:
                    self._evaluate(org_id, dt.datetime.now(dt.UTC))

    def committed(self, rows: Iterable[tuple[Any, ...]]) -> None:
        """Rows the writer has committed (or given up on): their cost is in the rollups, and the
        next refresh that starts from now on will count it."""
        for row in rows:
            org_id, cost = row[_ORG], row[_COST]
            by_key = self._pending.get(org_id)
            if not cost or by_key is None:
                continue
            key = (row[_FEATURE], row[_CREATED].astimezone(dt.UTC).date())
            amount = float(cost)
            left = by_key.get(key, 0.0) - amount
            if left > 1e-12:
                by_key[key] = left
            else:
                by_key.pop(key, None)
            _add(self._recent, org_id, key, amount)

    # -- figures -----------------------------------------------------------------------------

    def spend(self, budget: Budget) -> float:
        """The budget's spend in its current period as this worker sees it."""
        return self._spent.get(budget.id, 0.0)

    def snapshot(self) -> list[tuple[Budget, float]]:
        """Every budget and its spend (for the alerter and tests)."""
        return [(b, self.spend(b)) for budgets in self._budgets.values() for b in budgets]

    def _recount(self, now: dt.datetime) -> None:
        """Every budget's spend from the rollups' figures and what is not in them yet; the reached
        hard budgets. After each refresh (a few budgets × a few keys: off the per-event path)."""
        self._starts = {period: period_start(period, now).date() for period in ("day", "month")}
        spent: dict[int, float] = {}
        for org_id, budgets in self._budgets.items():
            unsettled = [self._pending.get(org_id, {}), self._recent.get(org_id, {}), self._settling.get(org_id, {})]
            for budget in budgets:
                start = self._starts[budget.period]
                total = self._rolled.get(budget.id, 0.0)
                for by_key in unsettled:
                    for (feature, day), amount in by_key.items():
                        if day >= start and (budget.feature is None or feature == budget.feature):
                            total += amount
                spent[budget.id] = total
        self._spent = spent
        self._blocked, self._reached = {}, set()
        for org_id in self._budgets:
            self._evaluate(org_id, now)

    def _evaluate(self, org_id: int, now: dt.datetime) -> None:
        reached = [
            (budget, spend, period_end(budget.period, now))
            for budget in self._budgets.get(org_id, ())
            if budget.hard and (spend := self.spend(budget)) >= budget.limit_usd
        ]
        self._reached.update(budget.id for budget, _, _ in reached)
        if reached:
            self._blocked[org_id] = reached
        else:
            self._blocked.pop(org_id, None)

    # -- refresh -----------------------------------------------------------------------------

    async def refresh(self) -> None:
        """Read every budget and its rollup spend (one query); what was committed before the query
        began is in its answer and stops being counted here."""
        self._settling, self._recent = _merged(self._settling, self._recent), {}
        now = dt.datetime.now(dt.UTC)
        try:
            rows = await self._load(lambda conn: budgets_with_spend(conn, now))
        except (psycopg.Error, OSError):
            log.warning("could not reload budgets (%s); keeping the last figures", self.last_error)
            return
        budgets: dict[int, list[Budget]] = {}
        for budget, _ in rows:
            budgets.setdefault(budget.org_id, []).append(budget)
        self._budgets = budgets
        self._rolled = {budget.id: spend for budget, spend in rows}
        self._settling = {}
        for org_id in set(self._pending) - set(budgets):
            del self._pending[org_id]  # its budgets were removed
        self._recount(dt.datetime.now(dt.UTC))
        self.loaded, self.last_error = True, None


def _merged(a: Unsettled, b: Unsettled) -> Unsettled:
    if not a:
        return b
    for org_id, by_key in b.items():
        for key, amount in by_key.items():
            _add(a, org_id, key, amount)
    return a


__all__ = ["BudgetTracker"]
