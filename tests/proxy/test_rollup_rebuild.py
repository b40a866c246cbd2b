"""Rollups recomputed from raw events: `lectr rollup rebuild`, the upgrade migration, `lectr demo`,
a rebuild racing the writer, and rollup retention."""

from __future__ import annotations

import datetime as dt
import math
import random
from pathlib import Path
from typing import Any

import psycopg
import pytest
import trio

from proxy.accounting.record import COLUMNS
from proxy.cli import main
from proxy.core.config import Settings
from proxy.events.writer import EventWriter
from proxy.store.db import connect
from proxy.store.db.rollups import drop_old_rollups, rebuild_days, seal
from proxy.store.orgs import create_org
from tests.conftest import database_migrated_through
from tests.proxy.test_rollup import write
from tests.rollup_check import assert_rollups_match_events, random_events, rollup_rows


def same_rows(left: dict[Any, dict[str, Any]], right: dict[Any, dict[str, Any]]) -> None:
    assert left.keys() == right.keys()
    for key, row in left.items():
        for name, value in row.items():
            if isinstance(value, float):
                assert math.isclose(value, right[key][name], rel_tol=1e-9, abs_tol=1e-6), (key, name)
            else:
                assert value == right[key][name], (key, name, value, right[key][name])


async def test_rebuild_equals_what_the_writer_wrote(
    pg_url: str, new_org: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    org, _ = new_org("rebuild")
    other, _ = new_org("rebuild-other")
    await write(pg_url, tmp_path / "journal", random_events(random.Random(21), [org.id, other.id], 3000, hours=80))
    with connect(pg_url) as conn:
        written, untouched = rollup_rows(conn, [org.id]), rollup_rows(conn, [other.id])
        conn.execute("UPDATE rollup_hourly SET requests = requests + 5, latency_ms_b = '{}', latency_ms_c = '{}'"
                     " WHERE org_id = %s", (org.id,))  # damage that a rebuild repairs
        conn.execute("DELETE FROM rollup_daily_end_user WHERE org_id = %s", (org.id,))
    monkeypatch.setenv("DATABASE_URL", pg_url)
    assert main(["rollup", "rebuild", "--org", org.name]) == 0
    out, err = capsys.readouterr()
    assert "100%" in err and "events" in err and "rollup rebuild" in err
    assert "rebuilt the rollups of" in out
    with connect(pg_url) as conn:
        same_rows(rollup_rows(conn, [org.id]), written)
        same_rows(rollup_rows(conn, [other.id]), untouched)
        assert_rollups_match_events(conn, [org.id, other.id])
    assert main(["rollup", "rebuild", "--org", org.name]) == 0  # idempotent
    since = (dt.datetime.now(dt.UTC) - dt.timedelta(days=1)).date()
    assert main(["rollup", "rebuild", "--since", since.isoformat()]) == 0  # every org, the last days only
    with connect(pg_url) as conn:
        same_rows(rollup_rows(conn, [org.id]), written)
        same_rows(rollup_rows(conn, [other.id]), untouched)
    assert main(["rollup", "rebuild", "--org", "no-such-org"]) == 2
    with pytest.raises(SystemExit):
        main(["rollup", "rebuild", "--since", "yesterday"])


def test_rebuild_leaves_days_before_the_first_raw_event_alone(db: psycopg.Connection[Any], new_org: Any) -> None:
    """Raw events may be dropped by retention while their rollups are kept: a rebuild starts at the
    first raw event it finds, whatever --since says."""
    org, _ = new_org("rebuild-kept")
    old = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0) - dt.timedelta(days=40)
    db.execute("INSERT INTO rollup_hourly (org_id, hour, provider, requests) VALUES (%s, %s, 'openai', 7)",
               (org.id, old))
    events = random_events(random.Random(2), [org.id], 50, hours=10)
    with db.cursor() as cur, cur.copy(f"COPY events ({', '.join(COLUMNS)}) FROM STDIN") as copy:
        for event in events:
            copy.write_row(EventWriter._finish(event))
    days, chunks = rebuild_days(db, [org.id], (old - dt.timedelta(days=5)).date())
    assert days[0] == min(e.created_at.astimezone(dt.UTC) for e in events).date()
    assert sum(counted for _, counted, _ in chunks) == 50
    assert db.execute("SELECT requests FROM rollup_hourly WHERE org_id = %s AND hour = %s", (org.id, old)).fetchone() \
        == (7,)


async def test_a_rebuild_while_the_writer_writes_counts_every_event_once(
    pg_url: str, new_org: Any, tmp_path: Path
) -> None:
    org, _ = new_org("rebuild-race")
    events = random_events(random.Random(5), [org.id], 3000, hours=30)
    done = trio.Event()

    async def rebuild_until_done() -> int:
        rounds = 0
        with connect(pg_url) as conn:
            while not done.is_set():
                _, chunks = await trio.to_thread.run_sync(rebuild_days, conn, [org.id], None)
                await trio.to_thread.run_sync(list, chunks)
                rounds += 1
        return rounds

    rounds: list[int] = []
    async with trio.open_nursery() as nursery:
        async def rebuilder() -> None:
            rounds.append(await rebuild_until_done())

        nursery.start_soon(rebuilder)
        await write(pg_url, tmp_path / "journal", events, batch_size=60)
        done.set()
    assert rounds[0] >= 2
    with connect(pg_url) as conn:
        assert assert_rollups_match_events(conn, [org.id]) == 3000


def test_the_upgrade_migration_builds_the_rollups_of_existing_events(pg_server_url: str) -> None:
    """An install from before the rollups (migrations up to 004) with events: migrating builds them."""
    with database_migrated_through(pg_server_url, 4) as url:
        with connect(url) as conn:
            org, _ = create_org(conn, "before-rollups")
            events = random_events(random.Random(6), [org.id], 2000, hours=50)
            with conn.cursor() as cur, cur.copy(f"COPY events ({', '.join(COLUMNS)}) FROM STDIN") as copy:
                for event in events:
                    copy.write_row(EventWriter._finish(event))
        assert main_migrate(url) == 0
        with connect(url) as conn:
            assert assert_rollups_match_events(conn, [org.id]) == 2000


def main_migrate(url: str) -> int:
    from proxy.store.db import migrate

    with connect(url) as conn:
        applied = migrate(conn)
    # 005 and 006 first; migrations of later features (007_budgets_alerts, ...) may follow.
    assert applied[:2] == ["005_rollups.sql", "006_rollup_rebuild.sql"]
    assert all(int(name.split("_", 1)[0]) > 6 for name in applied[2:])
    return 0


def test_demo_writes_its_rollups_with_its_events(db: psycopg.Connection[Any]) -> None:
    from analytics.demo import ORG, generate

    generate(db, days=3, per_day=600)
    generate(db, days=2, per_day=500)  # again: the demo's events and rollups are replaced, not added
    (org_id,) = db.execute("SELECT id FROM orgs WHERE name = %s", (ORG,)).fetchone() or (None,)
    assert assert_rollups_match_events(db, [org_id]) > 500


def test_rollup_retention_deletes_only_old_rollups(db: psycopg.Connection[Any], new_org: Any) -> None:
    org, _ = new_org("rollup-retention")
    now = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)
    seal(db)  # rollup_daily holds the hours before this one (migration 010)
    for hour in (now - dt.timedelta(hours=1), now - dt.timedelta(days=40), now - dt.timedelta(days=200)):
        db.execute("INSERT INTO rollup_hourly (org_id, hour, provider, requests) VALUES (%s, %s, 'openai', 1)",
                   (org.id, hour))
        db.execute("INSERT INTO rollup_daily_end_user (org_id, day, end_user, requests) VALUES (%s, %s, 'u', 1)",
                   (org.id, hour.date()))
    db.execute("SELECT lectr_rollup_days(ARRAY[%s]::bigint[], '-infinity', 'infinity')", (org.id,))
    assert drop_old_rollups(db, 0) == 0
    assert drop_old_rollups(db, 3) >= 3
    kept = db.execute("SELECT count(*) FROM rollup_hourly WHERE org_id = %s", (org.id,)).fetchone()
    kept_days = db.execute("SELECT count(*) FROM rollup_daily WHERE org_id = %s", (org.id,)).fetchone()
    kept_daily = db.execute("SELECT count(*) FROM rollup_daily_end_user WHERE org_id = %s", (org.id,)).fetchone()
    assert kept == (2,) and kept_days == (2,) and kept_daily == (2,)
    assert Settings.from_env({"LECTR_ROLLUP_RETENTION_MONTHS": "13"}).rollup_retention_months == 13
    assert Settings.from_env({}).rollup_retention_months == 0


def test_the_rebuild_refuses_a_range_that_is_not_whole_days(db: psycopg.Connection[Any]) -> None:
    with pytest.raises(psycopg.errors.RaiseException), db.transaction():
        db.execute("SELECT lectr_rollup_rebuild(NULL, now(), 'infinity')")
    with pytest.raises(psycopg.errors.RaiseException), db.transaction():
        db.execute("SELECT lectr_rollup_days(NULL, '-infinity', now())")
