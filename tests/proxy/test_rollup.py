"""Rollups written with the events: exact against raw sums on random traffic, on every write path."""

from __future__ import annotations

import datetime as dt
import math
import random
from pathlib import Path
from typing import Any

import psycopg
import trio

from proxy.accounting.histogram import GAMMA, Histogram, bucket
from proxy.accounting.record import COLUMNS, Event
from proxy.accounting.rollup import HOURLY_COLUMNS, aggregate, histogram, token_histogram
from proxy.events.journal import Journal
from proxy.events.writer import EventWriter
from proxy.store.db import connect
from proxy.store.db.rollups import sealed_through, upsert
from tests.pgcontrol import DisposablePostgres
from tests.rollup_check import assert_quantiles, assert_rollups_match_events, random_events

_COPY = f"COPY events ({', '.join(COLUMNS)}) FROM STDIN"
ALL_SEALED = dt.datetime.max.replace(tzinfo=dt.UTC)  # a watermark after every hour: `days` holds them all


async def write(url: str, journal: Path, events: list[Event], **options: Any) -> EventWriter:
    """Write events through a real EventWriter, in small batches (many upserts into each group)."""
    writer = EventWriter(url, Journal(journal), **{"batch_size": 150, "flush_seconds": 0.05, **options})
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        for i, event in enumerate(events):
            writer.record(event)
            if i % 100 == 0:
                await trio.sleep(0.01)
        await writer.aclose()
    stats = writer.statistics()
    assert (stats.dropped, stats.rejected) == (0, 0), stats
    return writer


def test_sql_and_python_put_every_value_in_the_same_bucket(db: psycopg.Connection[Any]) -> None:
    rng = random.Random(5)
    values = [rng.lognormvariate(0, 9) for _ in range(20_000)] + [float(i) for i in range(0, 5000)]
    values += [GAMMA**i * f for i in range(-200, 1400, 7) for f in (1.0, 1 - 1e-15, 1 + 1e-15)]
    values += [0.0, -1.0, 1.0, 1e-300, 1e300, 2.0**31]
    found = db.execute(
        "SELECT lectr_bucket(v) FROM unnest(%s::float8[]) WITH ORDINALITY AS x(v, i) ORDER BY i", (values,)
    ).fetchall()
    assert [b for (b,) in found] == [bucket(v) for v in values]
    for chunk in (values[:3], values[1000:1200], values[-30:]):
        assert histogram(chunk) == Histogram.from_arrays([bucket(v) for v in chunk], [1] * len(chunk)).arrays()


# lectr_hist_merge as migration 005 defined it (set-based), the reference for 009's sorted walk.
_SET_BASED_MERGE = """
CREATE FUNCTION pg_temp.set_based_merge(b1 integer[], c1 bigint[], b2 integer[], c2 bigint[],
                                        OUT buckets integer[], OUT counts bigint[])
LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(array_agg(b ORDER BY b), '{}'), coalesce(array_agg(c ORDER BY b), '{}')
    FROM (SELECT b, sum(c)::bigint AS c FROM (
        SELECT * FROM unnest(coalesce(b1, '{}'), coalesce(c1, '{}')) AS x(b, c)
        UNION ALL SELECT * FROM unnest(coalesce(b2, '{}'), coalesce(c2, '{}')) AS y(b, c)) AS both_sides
    GROUP BY b) AS merged
$$"""


def test_histograms_merge_in_sql_as_they_did_and_as_python_merges_them(db: psycopg.Connection[Any]) -> None:
    """lectr_hist_merge (migration 009's walk along two sorted arrays) gives what 005's GROUP BY gave
    and what Python's `Histogram.merge` gives: disjoint, overlapping, equal, empty and null sides."""
    db.execute(_SET_BASED_MERGE)
    rng = random.Random(9)

    def draw() -> tuple[list[int], list[int]] | tuple[None, None]:
        shape = rng.random()
        if shape < 0.1:
            return None, None
        indices = sorted(rng.sample(range(-40, 400), 0 if shape < 0.2 else rng.randint(1, 160)))
        if rng.random() < 0.3:
            indices = [-32768, *indices]  # the ZERO bucket
        return indices, [rng.randint(1, 10**12) for _ in indices]

    pairs = [(draw(), draw()) for _ in range(300)]
    same = draw()
    pairs.append((same, same))
    for (b1, c1), (b2, c2) in pairs:
        merged = db.execute(
            "SELECT * FROM lectr_hist_merge(%s::int[], %s::bigint[], %s::int[], %s::bigint[])", (b1, c1, b2, c2)
        ).fetchone()
        reference = db.execute(
            "SELECT * FROM pg_temp.set_based_merge(%s::int[], %s::bigint[], %s::int[], %s::bigint[])", (b1, c1, b2, c2)
        ).fetchone()
        assert merged == reference
        python = Histogram.from_arrays(b1, c1)
        python.merge(Histogram.from_arrays(b2, c2))
        assert merged is not None and (merged[0], merged[1]) == python.arrays()


def test_token_counts_take_their_buckets_from_a_table_that_agrees_with_the_formula() -> None:
    """The writer looks token counts' buckets up in a table: it must give every integer the bucket
    `bucket` (and so `lectr_bucket`) gives it, and fall back to the formula outside the table."""
    table_size = 1 << 16
    assert token_histogram(list(range(table_size))) == histogram(list(range(table_size)))
    assert (
        token_histogram(list(range(table_size)))
        == Histogram.from_arrays([bucket(v) for v in range(table_size)], [1] * table_size).arrays()
    )
    rng = random.Random(7)
    for values in ([0, 0, 1, 2], [table_size - 1, table_size, 10**9, 3], [-5, 0, 7], [], [12, 2.5, 40]):
        values += [rng.randint(0, 5000) for _ in range(50)]
        assert token_histogram(values) == histogram(values)


def test_aggregate_folds_empty_dimensions_into_null_and_sorts_by_key() -> None:
    events = random_events(random.Random(2), [1, 2], 400)
    rows = [event.row() for event in events]
    rollups = aggregate(rows, ALL_SEALED)
    keys = [row[:7] for row in rollups.hourly]
    assert len(set(keys)) == len(keys) and all(row[2] != "" for row in rollups.hourly)
    assert keys == sorted(keys, key=lambda key: tuple("" if v is None else v for v in key))
    assert sum(row[7] for row in rollups.hourly) == 400
    days = [row[:7] for row in rollups.days]  # the hourly rows merged per UTC day: 60 hours span 3-4 days
    assert len(set(days)) == len(days) < len(keys) and sum(row[7] for row in rollups.days) == 400
    assert {row[1] for row in rollups.days} == {row[1].date() for row in rollups.hourly}
    assert days == sorted(days, key=lambda key: tuple("" if v is None else v for v in key))
    assert sum(row[4] for row in rollups.daily) == sum(event.end_user is not None for event in events)
    assert not aggregate([], ALL_SEALED)
    # Only the hours before the watermark go to rollup_daily (migration 010); the seal takes the rest.
    watermark = sorted(row[1] for row in rollups.hourly)[len(rollups.hourly) // 2]
    partial = aggregate(rows, watermark)
    assert partial.hourly == rollups.hourly and partial.daily == rollups.daily
    assert sum(row[7] for row in partial.days) == sum(row[7] for row in rollups.hourly if row[1] < watermark) > 0
    assert not aggregate(rows, dt.datetime.min.replace(tzinfo=dt.UTC)).days


async def test_the_writer_keeps_rollups_equal_to_raw_sums(pg_url: str, new_org: Any, tmp_path: Path) -> None:
    orgs = [new_org("rollup")[0].id for _ in range(3)]
    events = random_events(random.Random(11), orgs, 4000)
    await write(pg_url, tmp_path / "journal", events)
    with connect(pg_url) as conn:
        assert assert_rollups_match_events(conn, orgs) == 4000
        for org in orgs:
            assert_quantiles(conn, org)


async def test_rows_already_in_postgres_are_not_counted_again(pg_url: str, new_org: Any, tmp_path: Path) -> None:
    """A batch whose first rows were committed with their rollups, but whose answer was lost: the
    retry row by row skips those rows, in events and in the rollups."""
    org = new_org("rollup-lost-commit")[0].id
    events = random_events(random.Random(3), [org], 300)
    rows = [EventWriter._finish(event) for event in events]
    with connect(pg_url) as conn, conn.transaction(), conn.cursor() as cur:
        sealed = sealed_through(cur)
        with cur.copy(_COPY) as copy:
            for row in rows[:120]:
                copy.write_row(row)
        upsert(cur, aggregate(rows[:120], sealed))
    bad = random_events(random.Random(4), [-1], 1)  # no such org: refused, kept aside
    writer = EventWriter(pg_url, Journal(tmp_path / "journal"), batch_size=1000, flush_seconds=0.05)
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        for event in events + bad:
            writer.record(event)
        await writer.aclose()
    assert writer.statistics().rejected == 1
    with connect(pg_url) as conn:
        assert assert_rollups_match_events(conn, [org]) == 300


async def test_a_journal_replay_of_events_already_written_adds_only_the_new_ones(
    pg_url: str, new_org: Any, tmp_path: Path
) -> None:
    org = new_org("rollup-replay")[0].id
    events = random_events(random.Random(8), [org], 600)
    await write(pg_url, tmp_path / "journal", events[:400])
    journal = Journal(tmp_path / "journal")
    rows = [event.row() for event in events[:400]] + [EventWriter._finish(event) for event in events[400:]]
    random.Random(1).shuffle(rows)
    journal.append(rows[:300])
    journal.append(rows[300:])
    journal.append(rows[:50])  # the same file replayed twice (two workers, a crash before its removal)
    writer = await write(pg_url, tmp_path / "journal", [])
    assert writer.statistics().replayed == 200 and not journal.files()
    with connect(pg_url) as conn:
        assert assert_rollups_match_events(conn, [org]) == 600


async def test_a_postgres_restart_in_the_middle_of_a_flush(tmp_path: Path, disposable_pg: DisposablePostgres) -> None:
    """The COPY is done and the rollup upsert waits (a lock held here) when Postgres restarts: the
    transaction is lost as a whole and the retry writes events and rollups once."""
    pg = disposable_pg
    from proxy.store.orgs import create_org

    with connect(pg.url) as conn:
        org = create_org(conn, "rollup-restart")[0].id
    events = random_events(random.Random(9), [org], 1500)
    writer = EventWriter(pg.url, Journal(tmp_path / "journal"), batch_size=400, flush_seconds=0.05, max_backoff=0.2)
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        for event in events[:500]:
            writer.record(event)
        await until(lambda: writer.statistics().written == 500, 10)
        blocker = connect(pg.url)
        blocker.execute("BEGIN")
        blocker.execute("LOCK TABLE rollup_hourly IN EXCLUSIVE MODE")
        for event in events[500:900]:
            writer.record(event)
        await until(lambda: _waiting_on_lock(pg.url), 10)
        assert pg.count("SELECT count(*) FROM events WHERE org_id = %s", (org,)) == 500
        await trio.to_thread.run_sync(pg.stop)
        blocker.close()
        for event in events[900:]:
            writer.record(event)
        await trio.sleep(0.3)
        await trio.to_thread.run_sync(pg.start)
        await until(lambda: writer.statistics().written == 1500, 30)
        await writer.aclose()
    assert writer.statistics().failures >= 1 and writer.statistics().dropped == 0
    with connect(pg.url) as conn:
        assert assert_rollups_match_events(conn, [org]) == 1500


def _waiting_on_lock(url: str) -> bool:
    with connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'rollup_hourly'::regclass")
        found = row.fetchone()
        return bool(found and found[0])


async def until(predicate: Any, timeout: float) -> None:
    with trio.move_on_after(timeout):
        while not await trio.to_thread.run_sync(predicate):
            await trio.sleep(0.05)
    assert await trio.to_thread.run_sync(predicate)


def test_costs_are_summed_as_postgres_rounds_them() -> None:
    from decimal import Decimal

    from tests.rollup_check import random_events as draw

    [event] = draw(random.Random(1), [1], 1)
    rows = []
    for cost in ("0.00000000005", "0.00000000004999", "1.23456789015", "0.1"):
        event.cost_usd = Decimal(cost)
        rows.append(event.row())
    [hourly] = aggregate(rows, ALL_SEALED).hourly
    cost = hourly[HOURLY_COLUMNS.index("cost_usd")]
    assert cost == Decimal("0.0000000001") + Decimal("0") + Decimal("1.2345678902") + Decimal("0.1")
    assert math.isclose(float(cost), 1.3345678903)
    event.cost_usd = 0.25  # type: ignore[assignment]  # a float from elsewhere: still summed, not a crash
    [hourly] = aggregate([*rows, event.row()], ALL_SEALED).hourly
    assert hourly[HOURLY_COLUMNS.index("cost_usd")] == cost + Decimal("0.25")
