"""`rollup_daily` sealed once a day is over (migration 010): the writer leaves today's daily rows to
the seal, the seal rebuilds the days that are over from their hourly rows and waits for writers in
flight, and readers take the days not sealed yet from the hourly rows."""

from __future__ import annotations

import datetime as dt
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import psycopg
import pytest

import analytics
from proxy.accounting.record import COLUMNS, Event
from proxy.accounting.rollup import Rollups, aggregate
from proxy.events.writer import EventWriter
from proxy.store.db import connect
from proxy.store.db.rollups import seal, upsert
from tests.proxy.test_rollup import _waiting_on_lock, write
from tests.rollup_check import assert_rollups_match_events, random_events, sealed_through

_COPY = f"COPY events ({', '.join(COLUMNS)}) FROM STDIN"


def _today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


def _midnight(day: dt.date) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)


def _on(events: list[Event], day: dt.date, rng: random.Random) -> list[Event]:
    """The events moved to random instants of `day` (UTC), before now."""
    span = max(0.0, min(86_400.0, (dt.datetime.now(dt.UTC) - _midnight(day)).total_seconds() - 1))
    for event in events:
        event.created_at = _midnight(day) + dt.timedelta(seconds=rng.uniform(0, span))
    return events


def _daily_requests(conn: psycopg.Connection[Any], org: int) -> dict[dt.date, int]:
    rows = conn.execute("SELECT day, sum(requests) FROM rollup_daily WHERE org_id = %s GROUP BY day", (org,))
    return {day: int(n) for day, n in rows.fetchall()}


@pytest.fixture
def unsealed(db: psycopg.Connection[Any]) -> Iterator[Any]:
    """Factory: move the watermark back to a day (as if no seal had run since); the watermark is
    sealed up to today again afterwards, whatever the test left (the database is shared)."""

    def move(day: dt.date) -> None:
        db.execute("UPDATE rollup_daily_sealed SET through = %s", (day,))

    yield move
    seal(db)


async def test_the_writer_leaves_today_to_the_seal_and_adds_to_days_that_are_over(
    pg_url: str, new_org: Any, tmp_path: Path
) -> None:
    org = new_org("seal-writer")[0].id
    rng = random.Random(21)
    today, yesterday = _today(), _today() - dt.timedelta(days=1)
    events = _on(random_events(rng, [org], 200), today, rng) + _on(random_events(rng, [org], 150), yesterday, rng)
    await write(pg_url, tmp_path / "journal", events)
    with connect(pg_url) as conn:
        assert sealed_through(conn) == today
        assert _daily_requests(conn, org) == {yesterday: 150}  # a late day is kept exact as it comes
        hourly = conn.execute("SELECT sum(requests) FROM rollup_hourly WHERE org_id = %s", (org,)).fetchone()
        assert hourly is not None and hourly[0] == 350
        assert assert_rollups_match_events(conn, [org]) == 350  # today's day as readers take it: from the hours


async def test_the_seal_rebuilds_the_days_that_are_over_from_their_hours(
    pg_url: str, new_org: Any, tmp_path: Path, db: psycopg.Connection[Any], unsealed: Any
) -> None:
    org = new_org("seal-days")[0].id
    rng = random.Random(22)
    days = [_today() - dt.timedelta(days=i) for i in range(4)]
    events = [e for i, day in enumerate(days) for e in _on(random_events(rng, [org], 100 + 10 * i), day, rng)]
    await write(pg_url, tmp_path / "journal", events)
    # An install whose last seal was three days ago: those days' daily rows are partial or missing.
    unsealed(days[3])
    db.execute("DELETE FROM rollup_daily WHERE org_id = %s AND day >= %s", (org, days[2]))
    db.execute("UPDATE rollup_daily SET requests = 1 WHERE org_id = %s AND day = %s", (org, days[3]))
    assert seal(db) == _today()
    assert _daily_requests(db, org) == {days[3]: 130, days[2]: 120, days[1]: 110}  # today is left to the hours
    assert assert_rollups_match_events(db, [org]) == len(events)
    # Sealed: a second seal is a no-op (what this sets stays).
    changed = db.execute("UPDATE rollup_daily SET requests = requests + 1000 WHERE org_id = %s AND day = %s",
                         (org, days[1])).rowcount
    assert seal(db) == _today()
    assert _daily_requests(db, org)[days[1]] == 110 + 1000 * changed


def test_the_seal_waits_for_a_writer_in_flight_and_counts_its_rows(
    pg_url: str, new_org: Any, db: psycopg.Connection[Any], unsealed: Any
) -> None:
    """A writer whose statement read the clock before midnight skipped the day's daily rows; it holds
    its lock on rollup_hourly until it commits, so the seal (after midnight) waits and reads its
    hourly rows. Played here with a transaction that upserts hourly rows only, left open."""
    org = new_org("seal-race")[0].id
    rng = random.Random(23)
    yesterday = _today() - dt.timedelta(days=1)
    rows = [EventWriter._finish(e) for e in _on(random_events(rng, [org], 120), yesterday, rng)]
    unsealed(yesterday)
    db.execute("DELETE FROM rollup_daily WHERE org_id = %s AND day >= %s", (org, yesterday))
    sealed: list[dt.date] = []
    with connect(pg_url) as writer:
        writer.execute("BEGIN")
        with writer.cursor() as cur:
            with cur.copy(_COPY) as copy:
                for row in rows:
                    copy.write_row(row)
            rollups = aggregate(rows)
            upsert(cur, Rollups(hourly=rollups.hourly, daily=rollups.daily))  # the day's rows skipped

        def run_seal() -> None:
            with connect(pg_url) as conn:
                sealed.append(seal(conn))

        sealer = threading.Thread(target=run_seal)
        sealer.start()
        deadline = dt.datetime.now() + dt.timedelta(seconds=10)
        while not _waiting_on_lock(pg_url):
            assert dt.datetime.now() < deadline, "the seal did not wait for the writer's lock"
            time.sleep(0.02)
        assert not sealed
        writer.execute("COMMIT")
        sealer.join(10)
    assert sealed == [_today()]
    assert _daily_requests(db, org) == {yesterday: 120}
    assert assert_rollups_match_events(db, [org]) == 120


async def test_readers_take_the_days_not_sealed_yet_from_the_hours(
    pg_url: str, new_org: Any, tmp_path: Path, db: psycopg.Connection[Any], unsealed: Any
) -> None:
    """Whole days from `rollup_daily` only before the watermark: rows from it on are not complete
    (here made wrong on purpose), and the figures must not change."""
    org = new_org("seal-read")[0].id
    rng = random.Random(24)
    days = [_today() - dt.timedelta(days=i) for i in range(5)]
    events = [e for day in days for e in _on(random_events(rng, [org], 80), day, rng)]
    await write(pg_url, tmp_path / "journal", events)
    now = dt.datetime.now(dt.UTC)
    start = _midnight(days[4])
    by_hours = analytics.load_rollups(db, org, start, now, now=now).collect()
    unsealed(days[2])
    db.execute("UPDATE rollup_daily SET requests = requests * 10, cost_usd = cost_usd + 1 WHERE org_id = %s"
               " AND day >= %s", (org, days[2]))
    by_days = analytics.load_rollups(db, org, start, now, now=now, days=True).collect()
    as_days = by_days.filter(pl.col("since") < _midnight(days[2]))
    assert set(as_days["since"]) == {_midnight(days[4]), _midnight(days[3])}  # the sealed days: a row per group
    assert by_days["requests"].sum() == by_hours["requests"].sum() == len(events)
    assert by_days["cost_usd"].sum() == by_hours["cost_usd"].sum()
    after = by_days.filter(pl.col("since") >= _midnight(days[2]))
    assert after["since"].dt.hour().n_unique() > 1  # the days not sealed came hour by hour


async def test_a_writer_seals_the_days_that_are_over(
    pg_url: str, new_org: Any, tmp_path: Path, db: psycopg.Connection[Any], unsealed: Any
) -> None:
    """At its start (and when the UTC date changes, and hourly) a writer seals what is over."""
    org = new_org("seal-by-writer")[0].id
    rng = random.Random(25)
    yesterday = _today() - dt.timedelta(days=1)
    await write(pg_url, tmp_path / "journal", _on(random_events(rng, [org], 90), yesterday, rng))
    unsealed(yesterday)
    db.execute("DELETE FROM rollup_daily WHERE org_id = %s", (org,))
    await write(pg_url, tmp_path / "journal", [])
    assert sealed_through(db) == _today()
    assert _daily_requests(db, org) == {yesterday: 90}
