"""The event writer against a real Postgres: batches, outages, the journal, shutdown."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path
from typing import Any

import trio

from proxy.accounting.record import Event
from proxy.events.journal import Journal
from proxy.events.writer import EventWriter
from tests.pgcontrol import DisposablePostgres


def make_event(org_id: int, i: int, **extra: Any) -> Event:
    fields: dict[str, Any] = {"model": "gpt-4o", "feature": f"writer-{i % 3}", **extra}
    event = Event(
        org_id=org_id,
        created_at=dt.datetime.now(dt.UTC),
        provider="openai",
        endpoint="chat/completions",
        status_code=200,
        **fields,
    )
    event.input_tokens, event.output_tokens = 100 + i, 10
    return event


async def until(predicate: Any, writer: EventWriter, timeout: float) -> None:
    with trio.move_on_after(timeout):
        while not predicate():
            await trio.sleep(0.05)
    assert predicate(), writer.statistics()


def rows(url: str, org_id: int) -> list[tuple[Any, ...]]:
    from proxy.store.db import connect

    with connect(url) as conn:
        return conn.execute(
            "SELECT input_tokens, cost_usd, price_source FROM events WHERE org_id = %s ORDER BY input_tokens", (org_id,)
        ).fetchall()


async def test_batches_are_written_and_priced(pg_url: str, new_org: Any, tmp_path: Path) -> None:
    org, _ = new_org("writer")
    writer = EventWriter(pg_url, Journal(tmp_path / "journal"), batch_size=100, flush_seconds=0.05)
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        for i in range(1000):
            writer.record(make_event(org.id, i))
        await writer.aclose()
    stats = writer.statistics()
    assert (stats.written, stats.dropped, stats.spilled, stats.queued) == (1000, 0, 0, 0)
    found = rows(pg_url, org.id)
    assert len(found) == 1000 and found[0][0] == 100
    assert all(cost is not None and cost > 0 and source.startswith("genai-prices") for _, cost, source in found)


async def test_bad_row_is_kept_aside_and_the_rest_written(pg_url: str, new_org: Any, tmp_path: Path) -> None:
    org, _ = new_org("writer-bad")
    writer = EventWriter(pg_url, Journal(tmp_path / "journal"), batch_size=11, flush_seconds=0.05)
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        for i in range(9):
            writer.record(make_event(org.id, i))
        writer.record(make_event(org.id, 98, feature="nul\x00byte", model="gpt-4o\x00x"))  # cleaned, kept
        writer.record(make_event(-1, 99))  # no such org: Postgres refuses the row
        await writer.aclose()
    stats = writer.statistics()
    assert (stats.written, stats.rejected, stats.dropped) == (10, 1, 0)
    assert list((tmp_path / "journal").glob("*.rejected"))
    from proxy.store.db import connect

    with connect(pg_url) as conn:
        row = conn.execute("SELECT feature, model FROM events WHERE org_id = %s AND input_tokens = 198",
                           (org.id,)).fetchone()
    assert row == ("nul\ufffdbyte", "gpt-4o\ufffdx")


async def test_outage_spills_to_journal_and_replays(tmp_path: Path, disposable_pg: DisposablePostgres) -> None:
    pg = disposable_pg
    from proxy.store.db import connect
    from proxy.store.orgs import create_org

    with connect(pg.url) as conn:
        org, _ = create_org(conn, "outage")
    journal = Journal(tmp_path / "journal")
    writer = EventWriter(pg.url, journal, batch_size=50, flush_seconds=0.05, queue_size=100, max_backoff=0.2)
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        for i in range(50):
            writer.record(make_event(org.id, i))
        await until(lambda: writer.statistics().written == 50, writer, 5)
        await trio.to_thread.run_sync(pg.stop)
        for i in range(50, 550):  # 500 events while Postgres is down: more than memory holds
            writer.record(make_event(org.id, i))
            if i % 50 == 0:
                await trio.sleep(0.05)
        await until(lambda: writer.statistics().spilled >= 400, writer, 10)
        stats = writer.statistics()
        assert not stats.healthy and stats.queued <= 200  # bounded: channel + the writer's buffer
        assert journal.pending_rows() >= 400
        await trio.to_thread.run_sync(pg.start)
        await until(lambda: writer.statistics().written >= 550, writer, 20)
        await writer.aclose()
    stats = writer.statistics()
    assert stats.dropped == 0 and stats.written == 550 and not journal.files()
    assert pg.count("SELECT count(*) FROM events WHERE org_id = %s", (org.id,)) == 550
    assert pg.count("SELECT count(DISTINCT id) FROM events WHERE org_id = %s", (org.id,)) == 550


async def test_shutdown_while_postgres_is_down_keeps_events_on_disk(
    tmp_path: Path, disposable_pg: DisposablePostgres
) -> None:
    pg = disposable_pg
    from proxy.store.db import connect
    from proxy.store.orgs import create_org

    with connect(pg.url) as conn:
        org, _ = create_org(conn, "down-at-exit")
    await trio.to_thread.run_sync(pg.stop)
    journal = Journal(tmp_path / "journal")
    writer = EventWriter(pg.url, journal, batch_size=50, flush_seconds=0.05, max_backoff=0.1)
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        for i in range(30):
            writer.record(make_event(org.id, i))
        await trio.sleep(0.3)
        await writer.aclose()
    assert writer.statistics().dropped == 0 and journal.pending_rows() == 30
    # A later writer (the next start) replays them.
    await trio.to_thread.run_sync(pg.start)
    again = EventWriter(pg.url, journal, flush_seconds=0.05)
    async with trio.open_nursery() as nursery:
        await nursery.start(again.run)
        await until(lambda: again.statistics().replayed >= 30, again, 10)
        await again.aclose()
    assert pg.count("SELECT count(*) FROM events WHERE org_id = %s", (org.id,)) == 30


def test_record_is_cheap_and_never_blocks(tmp_path: Path) -> None:
    """`record` is a plain function: with the channel full it spills instead of waiting."""

    async def main() -> None:
        writer = EventWriter("postgresql://nobody@/none?host=/nonexistent", Journal(tmp_path / "j"), queue_size=10)
        for i in range(25):  # no writer task running: the channel fills at 10
            writer.record(make_event(1, i, id=uuid.uuid4()))
        stats = writer.statistics()
        assert stats.queued == 10 and stats.spilled == 15 and stats.dropped == 0

    trio.run(main)


def spool_lines(folder: Path) -> int:
    return sum(path.read_bytes().count(b"\n") for path in folder.glob("spool-*.jsonl"))


async def test_a_writer_that_dies_leaves_its_held_events_to_the_next_one(
    tmp_path: Path, disposable_pg: DisposablePostgres
) -> None:
    """What the writer holds is mirrored in its spool; while it lives nobody else takes the spool,
    and once it is gone the next writer replays it, without writing twice the events that had
    reached Postgres before the end (a kill between a commit and the spool's truncation)."""
    pg = disposable_pg
    from proxy.accounting.record import COLUMNS
    from proxy.events.spool import Spool
    from proxy.store.db import connect
    from proxy.store.orgs import create_org

    with connect(pg.url) as conn:
        org, _ = create_org(conn, "spool")
    folder = tmp_path / "journal"
    await trio.to_thread.run_sync(pg.stop)
    events = [make_event(org.id, i) for i in range(25)]
    dying = EventWriter(pg.url, Journal(folder), max_backoff=0.1)
    with trio.CancelScope() as death:  # no drain: the worker is gone mid-way
        async with trio.open_nursery() as nursery:
            await nursery.start(dying.run)
            for event in events:
                dying.record(event)
            await until(lambda: spool_lines(folder) == 25, dying, 5)
            assert Spool(folder).adopt_orphans() == 0  # its owner is alive: locked
            assert not Journal(folder).files()
            death.cancel()
    assert all(event.id is not None for event in events) and spool_lines(folder) == 25
    await trio.to_thread.run_sync(pg.start)
    copy_sql = f"COPY events ({', '.join(COLUMNS)}) FROM STDIN"
    with connect(pg.url) as conn, conn.cursor() as cur, cur.copy(copy_sql) as copy:
        for event in events[:5]:  # committed just before the end
            copy.write_row(event.row())
    again = EventWriter(pg.url, Journal(folder))
    async with trio.open_nursery() as nursery:
        await nursery.start(again.run)
        await until(lambda: pg.count("SELECT count(*) FROM events WHERE org_id = %s", (org.id,)) >= 25, again, 10)
        await again.aclose()
    assert pg.count("SELECT count(*) FROM events WHERE org_id = %s", (org.id,)) == 25
    assert pg.count("SELECT count(DISTINCT id) FROM events WHERE org_id = %s", (org.id,)) == 25
    assert not list(folder.glob("spool-*")) and not Journal(folder).files()


async def test_the_spool_is_emptied_once_events_are_committed(pg_url: str, new_org: Any, tmp_path: Path) -> None:
    org, _ = new_org("spool-commit")
    folder = tmp_path / "journal"
    writer = EventWriter(pg_url, Journal(folder), flush_seconds=30)  # only a quiet tick flushes here
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        for i in range(40):
            writer.record(make_event(org.id, i))
        await until(lambda: writer.statistics().written == 40, writer, 5)  # traffic paused: written at once
        await until(lambda: spool_lines(folder) == 0, writer, 1)
        [spool] = folder.glob("spool-*.jsonl")
        assert spool.stat().st_size == 0
        await writer.aclose()
    assert not list(folder.glob("spool-*")), "an empty spool is removed at a clean stop"
    assert len(rows(pg_url, org.id)) == 40


def test_adoption_drops_a_line_cut_short_and_removes_empty_spools(tmp_path: Path) -> None:
    from proxy.events.spool import Spool

    folder = tmp_path / "journal"
    folder.mkdir()
    (folder / "spool-1-a.jsonl").write_bytes(b'["whole"]\n["cut sh')
    (folder / "spool-2-b.jsonl").write_bytes(b"")
    (folder / "spool-3-c.jsonl").write_bytes(b'["cut short only')
    (folder / ".spool-4-d.tmp").write_bytes(b"")  # created, never named: its worker died at once
    assert Spool(folder).adopt_orphans() == 1
    assert sorted(path.name for path in folder.iterdir()) == ["events-1-a.jsonl"]
    assert list(Journal.read(folder / "events-1-a.jsonl")) == [["whole"]]


def test_a_journal_line_holds_what_orjson_cannot() -> None:
    from proxy.events.journal import encode

    assert encode((1, "a", None)) == b'[1,"a",null]\n'
    assert encode((2**70, "b")) == b'[1180591620717411303424, "b"]\n'  # beyond 64 bits: stdlib json


async def test_an_outage_keeps_one_sealed_spool_file_not_one_per_retry(
    tmp_path: Path, disposable_pg: DisposablePostgres
) -> None:
    """Retries while Postgres is away do not seal a new file each (each holds a descriptor and a
    lock): a long outage under light traffic must not run the worker out of file descriptors."""
    pg = disposable_pg
    from proxy.store.db import connect
    from proxy.store.orgs import create_org

    with connect(pg.url) as conn:
        org, _ = create_org(conn, "outage-files")
    folder = tmp_path / "journal"
    await trio.to_thread.run_sync(pg.stop)
    writer = EventWriter(pg.url, Journal(folder), max_backoff=0.05)
    most = 0
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        for i in range(30):  # an event between every two retries
            writer.record(make_event(org.id, i))
            await trio.sleep(0.06)
            most = max(most, len(list(folder.glob("spool-*.jsonl"))))
        assert writer.statistics().failures >= 10
        await trio.to_thread.run_sync(pg.start)
        await until(lambda: writer.statistics().written == 30, writer, 20)
        await writer.aclose()
    assert most <= 2, most
    assert pg.count("SELECT count(*) FROM events WHERE org_id = %s", (org.id,)) == 30
    assert not list(folder.glob("spool-*")) and not list(folder.glob("*.rejected"))


async def test_rows_already_in_postgres_are_not_counted_as_refused(pg_url: str, new_org: Any, tmp_path: Path) -> None:
    """A batch some of whose rows are already written (a commit whose answer was lost) is retried
    row by row: those rows are skipped, not set aside as refused."""
    from proxy.accounting.record import COLUMNS
    from proxy.store.db import connect

    org, _ = new_org("already-written")
    events = [make_event(org.id, i, id=uuid.uuid4()) for i in range(20)]
    copy_sql = f"COPY events ({', '.join(COLUMNS)}) FROM STDIN"
    with connect(pg_url) as conn, conn.cursor() as cur, cur.copy(copy_sql) as copy:
        for event in events[:5]:
            copy.write_row(EventWriter._finish(event))
    writer = EventWriter(pg_url, Journal(tmp_path / "journal"))
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        for event in events:
            writer.record(event)
        await writer.aclose()
    stats = writer.statistics()
    assert (stats.rejected, stats.dropped) == (0, 0)
    assert not list((tmp_path / "journal").glob("*.rejected"))
    assert len(rows(pg_url, org.id)) == 20


def test_event_ids_are_random_version_4_uuids_and_a_forked_child_draws_its_own() -> None:
    import os

    from proxy.accounting.record import new_id

    ids = [new_id() for _ in range(5000)]
    assert len(set(ids)) == 5000
    assert all(i.version == 4 and i.variant == uuid.RFC_4122 and uuid.UUID(str(i)) == i for i in ids)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child)
        os.write(write, new_id().bytes)
        os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(read, 16) != new_id().bytes


async def test_events_taken_during_a_flush_go_to_a_new_spool_file(
    tmp_path: Path, disposable_pg: DisposablePostgres
) -> None:
    """While a COPY runs (held up here by a lock on the table), the writer goes on taking events
    into a new spool file instead of leaving them in memory; the sealed file goes once committed."""
    pg = disposable_pg
    from proxy.store.db import connect
    from proxy.store.orgs import create_org

    with connect(pg.url) as conn:
        org, _ = create_org(conn, "overlap")
    folder = tmp_path / "journal"
    writer = EventWriter(pg.url, Journal(folder))
    with connect(pg.url) as blocker:
        async with trio.open_nursery() as nursery:
            await nursery.start(writer.run)
            with blocker.transaction():
                blocker.execute("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
                for i in range(10):
                    writer.record(make_event(org.id, i))
                await until(lambda: len(list(folder.glob("spool-*.jsonl"))) == 2, writer, 5)  # one sealed
                for i in range(10, 25):
                    writer.record(make_event(org.id, i))
                await until(lambda: spool_lines(folder) == 25, writer, 5)
                assert writer.statistics().written == 0
            await until(lambda: writer.statistics().written == 25, writer, 10)
            [spool] = folder.glob("spool-*.jsonl")
            assert spool.stat().st_size == 0
            await writer.aclose()
    assert pg.count("SELECT count(*) FROM events WHERE org_id = %s", (org.id,)) == 25


async def test_a_journal_written_before_the_end_user_column_still_replays(
    pg_url: str, new_org: Any, tmp_path: Path
) -> None:
    """Columns are only ever appended: rows spilled by the previous version (one column fewer)
    are padded with nulls on replay instead of being refused."""
    from proxy.accounting.record import new_id

    org, _ = new_org("oldjournal")
    journal = Journal(tmp_path / "journal")
    old_rows = []
    for i in range(3):
        event = make_event(org.id, i)
        event.id = new_id()
        old_rows.append(event.row()[:-1])  # without `end_user`
    await trio.to_thread.run_sync(journal.append, old_rows)
    writer = EventWriter(pg_url, journal, flush_seconds=0.05)
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        await until(lambda: writer.statistics().replayed >= 3, writer, 10)
        await writer.aclose()
    assert len(rows(pg_url, org.id)) == 3 and not journal.files()
    assert not list((tmp_path / "journal").glob("*.rejected"))
