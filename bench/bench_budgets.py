"""The cost of budgets per request (issue 17), with timeit, no I/O:

    python bench/bench_budgets.py

- `check`: the hot path's test (`BudgetTracker.check`), for an org with no reached hard budget
  (a dict miss) and for one with a reached hard budget on another feature (the list is walked);
- `priced`: the writer's hook per event (on the event loop, off the request's path), for an org
  with two budgets;
- `committed`: the writer's hook per row after a commit.
"""

from __future__ import annotations

import datetime as dt
import sys
import timeit
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from proxy.accounting.record import Event  # noqa: E402
from proxy.pipeline.spend import BudgetTracker  # noqa: E402
from proxy.store.budgets import Budget  # noqa: E402


def best(statement: object, number: int) -> float:
    """The best of 5 repeats, per call, in µs (the least disturbed by other processes)."""
    return min(timeit.repeat(statement, number=number, repeat=5)) / number * 1e6  # type: ignore[arg-type]


def main() -> None:
    tracker = BudgetTracker("postgresql://unused")
    now = dt.datetime.now(dt.UTC)
    tracker._budgets = {
        1: [Budget(1, 1, None, "month", 1e9, True, (80, 100)), Budget(2, 1, "elsewhere", "day", 1.0, True, (80, 100))]
    }
    tracker._rolled = {1: 0.0, 2: 5.0}
    tracker._recount(now)
    row = Event(org_id=1, created_at=now, provider="openai", endpoint="chat/completions", status_code=200,
                cost_usd=Decimal("0.0001")).row()
    rows = [row] * 1000
    print(f"check, no reached hard budget (dict miss):        {best(lambda: tracker.check(7, None), 200_000):.3f} µs")
    print(f"check, a reached hard budget on another feature:  {best(lambda: tracker.check(1, None), 200_000):.3f} µs")
    print(f"priced, per event (org with 2 budgets):           {best(lambda: tracker.priced(row), 100_000):.3f} µs")
    per_row = best(lambda: tracker.committed(rows), 100) / len(rows)
    print(f"committed, per row:                               {per_row:.3f} µs")


if __name__ == "__main__":
    main()
