"""Budgets: the store, periods, the CLI, and the tracker's spend (rollups + unwritten) on a real
Postgres, with rollup rows inserted as the writer would leave them."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from proxy.accounting.record import Event
from proxy.core.errors import BudgetExceeded
from proxy.pipeline.spend import BudgetTracker
from proxy.store.budgets import add_budget, list_budgets, parse_alert_at, period_end, period_start, remove_budget
from proxy.store.orgs import OrgError

UTC = dt.UTC


def rollup(db: Any, org_id: int, hour: dt.datetime, cost: float, feature: str | None = None) -> None:
    db.execute(
        "INSERT INTO rollup_hourly (org_id, hour, feature, provider, model, requests, cost_usd)"
        " VALUES (%s, %s, %s, 'openai', 'gpt-4o', 1, %s)",
        (org_id, hour, feature, Decimal(str(cost))),
    )


def row(org_id: int, cost: float, feature: str | None = None, at: dt.datetime | None = None) -> tuple[Any, ...]:
    event = Event(org_id=org_id, created_at=at or dt.datetime.now(UTC), provider="openai", endpoint="chat/completions",
                  status_code=200, feature=feature, cost_usd=Decimal(str(cost)))
    return event.row()


def spend_of(tracker: BudgetTracker, budget_id: int) -> float | None:
    """The tracker's spend of one budget (the session's database holds other tests' budgets too)."""
    return next((spend for budget, spend in tracker.snapshot() if budget.id == budget_id), None)


def test_periods_are_utc_days_and_months() -> None:
    now = dt.datetime(2026, 12, 31, 23, 30, tzinfo=UTC)
    assert period_start("day", now) == dt.datetime(2026, 12, 31, tzinfo=UTC)
    assert period_end("day", now) == dt.datetime(2027, 1, 1, tzinfo=UTC)
    assert period_start("month", now) == dt.datetime(2026, 12, 1, tzinfo=UTC)
    assert period_end("month", now) == dt.datetime(2027, 1, 1, tzinfo=UTC)
    assert period_end("month", dt.datetime(2027, 2, 28, 12, tzinfo=UTC)) == dt.datetime(2027, 3, 1, tzinfo=UTC)
    # 23:30 in New York on Jan 31 is Feb 1 in UTC
    ny = dt.datetime(2027, 1, 31, 23, 30, tzinfo=dt.timezone(dt.timedelta(hours=-5)))
    assert period_start("month", ny) == dt.datetime(2027, 2, 1, tzinfo=UTC)


def test_alert_at_parsing() -> None:
    assert parse_alert_at(None) == (80, 100)
    assert parse_alert_at("100, 50,80%,80") == (50, 80, 100)
    for bad in ("x", "0", "50,2000", ","):
        with pytest.raises(OrgError):
            parse_alert_at(bad)


def test_store_is_scoped_to_the_org(db: Any, new_org: Any) -> None:
    org, _ = new_org("budget-store")
    other, _ = new_org("budget-other")
    bid = add_budget(db, org.name, limit_usd="12.5", period="day", feature="chat", hard=True, alert_at=(50, 100))
    listed = list_budgets(db, org.name)
    assert [(b["id"], b["feature"], b["period"], b["limit_usd"], b["hard"], b["alert_at"]) for b in listed] == [
        (bid, "chat", "day", 12.5, True, [50, 100])
    ]
    assert list_budgets(db, other.name) == []
    with pytest.raises(OrgError, match="no budget"):
        remove_budget(db, other.name, bid)
    for bad in ("-1", "0", "abc", "nan", "inf"):
        with pytest.raises(OrgError, match="limit-usd"):
            add_budget(db, org.name, limit_usd=bad)
    with pytest.raises(OrgError, match="period"):
        add_budget(db, org.name, limit_usd=1, period="week")
    remove_budget(db, org.name, bid)
    assert list_budgets(db, org.name) == []


def test_spend_sums_the_period_feature_and_org_only(db: Any, new_org: Any) -> None:
    org, _ = new_org("budget-spend")
    other, _ = new_org("budget-spend-other")
    now = dt.datetime.now(UTC)
    hour = now.replace(minute=0, second=0, microsecond=0)
    day_id = add_budget(db, org.name, limit_usd=10, period="day", feature="chat")
    month_id = add_budget(db, org.name, limit_usd=100, period="month")
    rollup(db, org.id, hour, 1.25, "chat")
    rollup(db, org.id, hour, 0.5, "search")
    rollup(db, org.id, hour, 7.0, None)
    rollup(db, other.id, hour, 50.0, "chat")  # another org's spend never counts
    yesterday = period_start("day", now) - dt.timedelta(hours=1)
    rollup(db, org.id, yesterday, 3.0, "chat")  # counts for the month (unless today is the 1st), not the day
    month_extra = 3.0 if yesterday >= period_start("month", now) else 0.0
    rollup(db, org.id, period_start("month", now) - dt.timedelta(hours=1), 9.0, "chat")  # last month: never
    spent = {b["id"]: b["spend_usd"] for b in list_budgets(db, org.name, now)}
    assert spent[day_id] == pytest.approx(1.25)
    assert spent[month_id] == pytest.approx(8.75 + month_extra)


async def test_tracker_counts_unwritten_costs_once_through_commit_and_refresh(
    db: Any, new_org: Any, pg_url: str
) -> None:
    org, _ = new_org("budget-tracker")
    hour = dt.datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    bid = add_budget(db, org.name, limit_usd=10, period="day", feature="chat", hard=True)
    rollup(db, org.id, hour, 2.0, "chat")
    tracker = BudgetTracker(pg_url)
    await tracker.refresh()
    assert spend_of(tracker, bid) == pytest.approx(2.0)

    priced = [row(org.id, 3.0, "chat"), row(org.id, 1.0, "search"), row(org.id, 0.5, "chat")]
    for r in priced:
        tracker.priced(r)
    assert spend_of(tracker, bid) == pytest.approx(5.5)  # 2 in the rollups + 3.5 unwritten on chat
    tracker.committed(priced)  # the writer committed them, with their rollups
    rollup(db, org.id, hour, 1.0, "search")  # what the writer's upsert added: search 1.0, and chat 3.5
    db.execute("UPDATE rollup_hourly SET cost_usd = 5.5 WHERE org_id = %s AND feature = 'chat'", (org.id,))
    assert spend_of(tracker, bid) == pytest.approx(5.5)  # still counted once, until a refresh sees it
    await tracker.refresh()
    assert spend_of(tracker, bid) == pytest.approx(5.5)  # now from the rollups only
    tracker.check(org.id, "chat")  # 5.5 of 10: nothing refused

    tracker.priced(row(org.id, 4.6, "chat"))  # this worker's own cost reaches the limit at once
    with pytest.raises(BudgetExceeded) as refused:
        tracker.check(org.id, "chat")
    tracker.check(org.id, "search")  # another feature is not covered
    tracker.check(org.id + 10_000, "chat")  # nor another org
    error = refused.value
    assert error.status == 429 and error.code == "budget_exceeded"
    body = orjson.loads(error.body())["error"]
    reset = period_end("day", dt.datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert body["code"] == "budget_exceeded" and body["budget"]["id"] == bid and body["budget"]["resets_at"] == reset
    assert f"budget {bid}" in body["message"] and reset in body["message"]
    assert dict(error.headers())[b"retry-after"].isdigit()

    remove_budget(db, org.name, bid)
    await tracker.refresh()
    tracker.check(org.id, "chat")  # removed: the next refresh lifts it
    assert spend_of(tracker, bid) is None


async def test_a_failed_refresh_keeps_counting_what_was_committed(db: Any, new_org: Any, pg_url: str) -> None:
    org, _ = new_org("budget-refresh-fails")
    bid = add_budget(db, org.name, limit_usd=10, period="month", hard=True)
    tracker = BudgetTracker(pg_url)
    await tracker.refresh()
    committed = [row(org.id, 6.0)]
    tracker.priced(committed[0])
    tracker.committed(committed)
    tracker._url = "postgresql://nobody@127.0.0.1:1/none"  # the database goes away for a refresh
    tracker._conn = None
    await tracker.refresh()
    assert tracker.last_error is not None
    assert spend_of(tracker, bid) == pytest.approx(6.0)  # not dropped while it cannot be read back
    tracker.priced(row(org.id, 4.0))
    with pytest.raises(BudgetExceeded):
        tracker.check(org.id, None)


def test_lectr_budget_commands(db: Any, new_org: Any, pg_url: str, tmp_path: Path) -> None:
    org, _ = new_org("budget-cli")
    env = {**os.environ, "DATABASE_URL": pg_url, "LECTR_DATA_DIR": str(tmp_path)}

    def lectr(*args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
        command = [str(Path(sys.executable).parent / "lectr"), "budget", *args]
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == code, done.stderr
        return done

    out = lectr("add", org.name, "--limit-usd", "50", "--feature", "chat", "--hard", "--alert-at", "50,80,100").stdout
    bid = int(out.strip().splitlines()[-1])
    daily = int(lectr("add", org.name, "--limit-usd", "200", "--period", "day").stdout.strip().splitlines()[-1])
    rollup(db, org.id, dt.datetime.now(UTC).replace(minute=0, second=0, microsecond=0), 12.5, "chat")
    listed = json.loads(lectr("list", org.name, "--json").stdout)
    assert [(b["id"], b["feature"], b["period"], b["hard"], b["alert_at"], b["spend_usd"], b["percent"])
            for b in listed] == [(bid, "chat", "month", True, [50, 80, 100], 12.5, 25.0),
                                 (daily, None, "day", False, [80, 100], 12.5, 6.25)]
    table = lectr("list", org.name).stdout
    assert "feature chat" in table and "25.0%" in table
    assert "--limit-usd" in lectr("add", org.name, "--limit-usd", "-3", code=2).stderr
    lectr("rm", org.name, str(bid))
    assert "no budget" in lectr("rm", org.name, str(bid), code=2).stderr
    assert [b["id"] for b in json.loads(lectr("list", org.name, "--json").stdout)] == [daily]
