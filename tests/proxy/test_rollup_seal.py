"""`rollup_daily` sealed an hour at a time (migration 010): it holds exactly the hours before the
watermark; writers add to it only their rows before the watermark, the seal merges the hours that
are over and waits for writers in flight, and readers take the days from the watermark's on from
the hourly rows."""

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
from proxy.accounting.rollup import aggregate
from proxy.events.writer import EventWriter
from proxy.store.db import connect, ensure_partitions
from proxy.store.db.rollups import seal, sealed_through, upsert
from tests.conftest import database_migrated_through
from tests.proxy.test_rollup import write
from tests.rollup_check import assert_quantiles, assert_rollups_match_events, random_events
from tests.rollup_check import sealed_through as watermark

_COPY = f"COPY events ({', '.join(COLUMNS)}) FROM STDIN"
HOUR = dt.timedelta(hours=1)


def _this_hour() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)


def _midnight(at: dt.datetime) -> dt.datetime:
    return at.replace(hour=0, minute=0, second=0, microsecond=0)


def _within(events: list[Event], start: dt.datetime, end: dt.datetime, rng: random.Random) -> list[Event]:
    """The events moved to random instants of `[start, end)`, none after now."""
    end = min(end, dt.datetime.now(dt.UTC))
    for event in events:
        event.created_at = start + (end - start) * rng.random()
    return events


def _daily_requests(conn: psycopg.Connection[Any], org: int) -> dict[dt.date, int]:
    rows = conn.execute("SELECT day, sum(requests) FROM rollup_daily WHERE org_id = %s GROUP BY day", (org,))
    return {day: int(n) for day, n in rows.fetchall()}


def _raw_requests(conn: psycopg.Connection[Any], org: int, before: dt.datetime) -> dict[dt.date, int]:
    rows = conn.execute("SELECT (created_at AT TIME ZONE 'UTC')::date, count(*) FROM events WHERE org_id = %s"
                        " AND created_at < %s GROUP BY 1", (org, before))
    return {day: int(n) for day, n in rows.fetchall()}


@pytest.fixture
def rewind(db: psycopg.Connection[Any]) -> Iterator[Any]:
    """Factory: move the watermark back to an hour, as if no seal had run since: `rollup_daily`'s
    days from that hour's are rebuilt from their hours before it (`lectr_rollup_days`), so it holds
    what the watermark says. The database is shared: sealed up to now again afterwards."""

    def move(hour: dt.datetime) -> None:
        with db.transaction():
            db.execute("UPDATE rollup_daily_sealed SET through = %s", (hour,))
            db.execute("SELECT lectr_rollup_days(NULL, %s, 'infinity')", (_midnight(hour),))

    yield move
    seal(db)


async def test_a_writer_adds_to_rollup_daily_only_its_hours_before_the_watermark(
    pg_url: str, new_org: Any, tmp_path: Path, db: psycopg.Connection[Any], rewind: Any
) -> None:
    org = new_org("seal-writer")[0].id
    rng = random.Random(21)
    hour = _this_hour()
    rewind(hour)
    events = (_within(random_events(rng, [org], 200), hour, hour + HOUR, rng)
              + _within(random_events(rng, [org], 150), hour - 30 * HOUR, hour, rng))
    await write(pg_url, tmp_path / "journal", events)
    sealed = watermark(db)  # (this hour, or the next if the hour turned during the test)
    assert sealed >= hour
    assert _daily_requests(db, org) == _raw_requests(db, org, sealed)  # late hours kept exact as they come
    if sealed == hour:
        assert sum(_daily_requests(db, org).values()) == 150
    assert assert_rollups_match_events(db, [org]) == 350


async def test_the_seal_merges_the_hours_that_are_over(
    pg_url: str, new_org: Any, tmp_path: Path, db: psycopg.Connection[Any], rewind: Any
) -> None:
    org = new_org("seal-hours")[0].id
    rng = random.Random(22)
    hour = _this_hour()
    await write(pg_url, tmp_path / "journal", _within(random_events(rng, [org], 600), hour - 40 * HOUR,
                                                      hour + HOUR, rng))
    rewind(hour - 29 * HOUR)  # an install whose last seal was 29 hours ago
    assert _daily_requests(db, org) == _raw_requests(db, org, hour - 29 * HOUR)
    sealed = seal(db, hours_per_transaction=4)
    assert sealed >= hour
    assert _daily_requests(db, org) == _raw_requests(db, org, sealed)
    assert assert_rollups_match_events(db, [org]) == 600
    assert_quantiles(db, org)
    # Sealed: another seal merges nothing again (what this adds stays as it is).
    changed = db.execute("UPDATE rollup_daily SET requests = requests + 1000 WHERE org_id = %s AND day = %s",
                         (org, (hour - HOUR).date())).rowcount
    before = _daily_requests(db, org)[(hour - HOUR).date()]
    assert seal(db) >= hour and changed > 0
    assert _daily_requests(db, org)[(hour - HOUR).date()] == before


def _waiting_on_a_lock(url: str) -> bool:
    with connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                           " AND datname = current_database()").fetchone()
        return bool(row and row[0])


def test_the_seal_waits_for_a_writer_in_flight_and_later_writers_add_their_own(
    pg_url: str, new_org: Any, db: psycopg.Connection[Any], rewind: Any
) -> None:
    """A writer read the watermark (the last hour not sealed) and left that hour's rows to the seal;
    the seal waits for it to commit and counts them. A writer after the seal reads the new watermark
    and adds its rows of that hour to rollup_daily itself."""
    org = new_org("seal-race")[0].id
    rng = random.Random(23)
    hour = _this_hour()
    rewind(hour - HOUR)
    first = [EventWriter._finish(e) for e in _within(random_events(rng, [org], 120), hour - HOUR, hour, rng)]
    second = [EventWriter._finish(e) for e in _within(random_events(rng, [org], 80), hour - HOUR, hour, rng)]

    def insert(conn: psycopg.Connection[Any], rows: list[tuple[Any, ...]]) -> None:
        with conn.cursor() as cur:
            sealed = sealed_through(cur)
            with cur.copy(_COPY) as copy:
                for row in rows:
                    copy.write_row(row)
            upsert(cur, aggregate(rows, sealed))

    sealed: list[dt.datetime] = []
    with connect(pg_url) as writer:
        writer.execute("BEGIN")
        insert(writer, first)

        def run_seal() -> None:
            with connect(pg_url) as conn:
                sealed.append(seal(conn))

        sealer = threading.Thread(target=run_seal)
        sealer.start()
        deadline = time.monotonic() + 10
        while not _waiting_on_a_lock(pg_url):
            assert time.monotonic() < deadline, "the seal did not wait for the writer in flight"
            time.sleep(0.02)
        assert not sealed
        writer.execute("COMMIT")
        sealer.join(10)
    assert len(sealed) == 1 and sealed[0] >= hour
    assert sum(_daily_requests(db, org).values()) == 120
    with connect(pg_url) as late, late.transaction():
        insert(late, second)
    assert sum(_daily_requests(db, org).values()) == 200
    assert assert_rollups_match_events(db, [org]) == 200


async def test_readers_take_the_days_from_the_watermarks_on_from_the_hours(
    pg_url: str, new_org: Any, tmp_path: Path, db: psycopg.Connection[Any], rewind: Any
) -> None:
    """`rollup_daily` holds only the hours before the watermark: a day it cuts is partial there and
    must be read from its hours, and so must every later day."""
    org = new_org("seal-read")[0].id
    rng = random.Random(24)
    hour = _this_hour()
    start = _midnight(hour) - dt.timedelta(days=4)
    events = _within(random_events(rng, [org], 500), start, hour + HOUR, rng)
    await write(pg_url, tmp_path / "journal", events)
    now = dt.datetime.now(dt.UTC)
    by_hours = analytics.load_rollups(db, org, start, now, now=now).collect()
    cut = _midnight(hour) - dt.timedelta(days=2) + 13 * HOUR  # 13:00 two days ago
    rewind(cut)
    assert 0 < _daily_requests(db, org)[cut.date()] < _raw_requests(db, org, now)[cut.date()]
    by_days = analytics.load_rollups(db, org, start, now, now=now, days=True).collect()
    as_days = by_days.filter(pl.col("since") < _midnight(cut))
    assert set(as_days["since"]) == {start, start + dt.timedelta(days=1)}  # whole days before the cut day
    assert set(as_days["since"].dt.hour()) == {0}
    assert by_days["requests"].sum() == by_hours["requests"].sum() == len(events)
    assert by_days["cost_usd"].sum() == by_hours["cost_usd"].sum()
    after = by_days.filter(pl.col("since") >= _midnight(cut))
    assert after["since"].dt.hour().n_unique() > 1  # the days from the cut day's on came hour by hour


async def test_a_writer_seals_the_hours_that_are_over(
    pg_url: str, new_org: Any, tmp_path: Path, db: psycopg.Connection[Any], rewind: Any
) -> None:
    """At its start (and when the UTC hour changes) a writer seals what is over."""
    org = new_org("seal-by-writer")[0].id
    rng = random.Random(25)
    hour = _this_hour()
    await write(pg_url, tmp_path / "journal", _within(random_events(rng, [org], 90), hour - 5 * HOUR, hour, rng))
    rewind(hour - 5 * HOUR)
    assert sum(_daily_requests(db, org).values()) == 0
    await write(pg_url, tmp_path / "journal", [])
    assert watermark(db) >= hour
    assert sum(_daily_requests(db, org).values()) == 90


def test_the_upgrade_leaves_the_current_hour_to_the_seal(pg_server_url: str) -> None:
    """An install at migration 009, whose writers merged every hour into `rollup_daily`, this one's
    too: migration 010 sets the watermark at this hour and takes this hour out of `rollup_daily`
    (the seal will merge it), so nothing is counted twice."""
    from proxy.store.db import migrate
    from proxy.store.orgs import create_org

    with database_migrated_through(pg_server_url, 9) as url, connect(url) as conn:
        ensure_partitions(conn, dt.datetime.now(dt.UTC), months_back=1)
        org, _ = create_org(conn, "before-the-seal")
        hour = _this_hour()
        rng = random.Random(26)
        events = (_within(random_events(rng, [org.id], 300), hour - 30 * HOUR, hour, rng)
                  + _within(random_events(rng, [org.id], 100), hour, hour + HOUR, rng))
        with conn.cursor() as cur, cur.copy(_COPY) as copy:
            for event in events:
                copy.write_row(EventWriter._finish(event))
        with conn.transaction():  # the rollups as 009's writer left them: every hour in both tables
            conn.execute("SELECT lectr_rollup_rebuild(NULL, '-infinity', 'infinity')")
            conn.execute("SELECT lectr_rollup_days(NULL, '-infinity', 'infinity')")
        assert sum(_daily_requests(conn, org.id).values()) == 400
        assert migrate(conn) == ["010_rollup_daily_sealed.sql"]
        sealed = watermark(conn)
        assert hour <= sealed <= _this_hour()
        assert _daily_requests(conn, org.id) == _raw_requests(conn, org.id, sealed)
        assert assert_rollups_match_events(conn, [org.id]) == 400
        assert seal(conn) >= sealed
        assert assert_rollups_match_events(conn, [org.id]) == 400


def test_the_seal_counts_each_hour_once_across_a_daylight_saving_change(
    pg_url: str, new_org: Any, db: psycopg.Connection[Any], rewind: Any
) -> None:
    """A session whose time zone changes its clocks (Europe/Paris, 2026-03-29 at 01:00 UTC): the
    seal steps through hours in UTC, not on the wall clock, so no hour is merged twice or skipped."""
    org = new_org("seal-dst")[0].id
    start = dt.datetime(2026, 3, 28, 22, tzinfo=dt.UTC)
    hours = [start + i * HOUR for i in range(6)]  # 22:00 UTC on the 28th to 03:00 UTC on the 29th
    for i, hour in enumerate(hours):
        db.execute("INSERT INTO rollup_hourly (org_id, hour, provider, requests) VALUES (%s, %s, 'openai', %s)",
                   (org, hour, 10**i))
    rewind(start)
    with connect(pg_url) as paris:
        paris.execute("SET TimeZone = 'Europe/Paris'")
        assert seal(paris, hours_per_transaction=500) > hours[-1]
    assert _daily_requests(db, org) == {dt.date(2026, 3, 28): 11, dt.date(2026, 3, 29): 111_100}
