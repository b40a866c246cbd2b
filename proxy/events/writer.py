"""EventWriter: the task that moves events from requests into Postgres, off the hot path.

Requests call `record(event)`, a plain function that never blocks: it puts the event on a
bounded memory channel. The writer task (started in the app's nursery) takes events off the
channel, prices them, mirrors them in this worker's spool file (`proxy.events.spool`: a worker killed
outright loses nothing it had taken), and flushes them in batches with COPY through a blocking
psycopg connection driven in a worker thread (`trio.to_thread`). A batch goes when it is full,
when it is `flush_seconds` old (1 s), or as soon as traffic pauses for a tick (50 ms): a steady
stream of requests sees one flush a second, a quiet one sees its events in Postgres at once.

When Postgres is unreachable the writer keeps taking events into memory, retrying with
exponential backoff; once `queue_size` events are held it spills them to the on-disk journal
(`proxy.events.journal`), and when Postgres is back it replays the journal. On shutdown it drains
what it holds: to Postgres, or to the journal if Postgres is still away. `dropped` counts
events lost for good (only if even the journal cannot be written) and must stay 0.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import psycopg
import trio

from proxy.accounting.record import COLUMNS, Event, new_id
from proxy.accounting.rollup import aggregate
from proxy.events.journal import Journal, encode
from proxy.events.spool import Spool
from proxy.store.db import connect, ensure_partitions
from proxy.store.db.migrate import drop_old_partitions
from proxy.store.db.rollups import drop_old_rollups, seal, sealed_through, upsert

log = logging.getLogger("lectr.writer")
T = TypeVar("T")

_COLUMN_LIST = ", ".join(COLUMNS)
# Every row brings its id, given when the writer takes the event (the spool's copy has the same
# one: a replay of it never writes an event twice). The row-by-row retry of a refused batch inserts
# each row alone, and counts in the rollups only the rows it really adds:
_INSERT_ONE = f"INSERT INTO events ({_COLUMN_LIST}) VALUES ({', '.join(['%s'] * len(COLUMNS))}) ON CONFLICT DO NOTHING"
# The fast path: binary COPY with the columns' types set up front (psycopg then picks each value's
# dumper once per column, not per value): ~4 µs a row against ~10-17 µs in text, CPU the writer
# thread spends holding the GIL.
_BINARY_COPY = f"COPY events ({_COLUMN_LIST}) FROM STDIN (FORMAT BINARY)"
_COLUMN_TYPES = (
    "SELECT attname, atttypid::int FROM pg_attribute "
    "WHERE attrelid = 'events'::regclass AND attnum > 0 AND NOT attisdropped"
)
_REPLAY_COPY = f"COPY replay ({_COLUMN_LIST}) FROM STDIN"
# A replay adds what is not in Postgres yet, and the rollups count what came back: only those rows.
_REPLAY_INSERT = (
    f"INSERT INTO events ({_COLUMN_LIST}) SELECT {_COLUMN_LIST} FROM replay ON CONFLICT DO NOTHING"
    f" RETURNING {_COLUMN_LIST}"
)
_MAINTENANCE_SECONDS = 3600.0
_QUIET_SECONDS = 0.05  # a tick without a new event: traffic paused, flush what is held
_ADOPT_SECONDS = 10.0  # how often to look for the spools of workers that are gone


class CostWatcher(Protocol):
    """Told of each row priced (held, not yet in Postgres) and of rows committed or given up on
    (spilled to the journal): the budget tracker's view of this worker's unwritten spend."""

    def priced(self, row: tuple[Any, ...]) -> None: ...

    def committed(self, rows: list[tuple[Any, ...]]) -> None: ...


@dataclass(frozen=True, slots=True)
class WriterStatistics:
    queued: int  # events waiting in memory (channel + the writer's own buffer)
    written: int  # rows committed to Postgres (replayed ones included)
    spilled: int  # events written to the journal
    replayed: int  # journal rows re-sent to Postgres
    dropped: int  # events lost for good: must be 0
    rejected: int  # events Postgres refused, kept aside on disk (`*.rejected` in the journal)
    failures: int  # failed flush attempts
    healthy: bool  # the last flush succeeded
    journal_files: int


def _widened(row: list[Any]) -> list[Any]:
    """A journal row written before a column was added (columns are only ever appended), padded
    with nulls to today's width: a journal left by the previous version still replays."""
    missing = len(COLUMNS) - len(row)
    return row + [None] * missing if missing > 0 else row


class EventWriter:
    def __init__(
        self,
        database_url: str,
        journal: Journal,
        *,
        batch_size: int = 5000,
        flush_seconds: float = 1.0,
        queue_size: int = 100_000,
        retention_months: int = 0,
        rollup_retention_months: int = 0,
        max_backoff: float = 5.0,
        watcher: CostWatcher | None = None,
    ) -> None:
        self._watcher = watcher
        self._url = database_url
        self._journal = journal
        self._batch_size = batch_size
        self._flush_seconds = flush_seconds
        self._queue_size = queue_size
        self._retention_months = retention_months
        self._rollup_retention_months = rollup_retention_months
        self._max_backoff = max_backoff
        self._send, self._receive = trio.open_memory_channel[Event](queue_size)
        self._pending: list[tuple[Any, ...]] = []  # rows of the events taken, ready for COPY
        self._spool = Spool(journal.folder)
        self._unspooled: list[bytes] = []  # lines of events taken, not yet appended to the spool
        self._taken = 0
        self._closed = False  # the channel is closed: we are shutting down
        self._in_flight = 0  # rows of the batch being written
        self._conn: psycopg.Connection[Any] | None = None
        self._types: list[int] | None = None  # the events columns' type OIDs, for binary COPY
        self._written = self._spilled = self._replayed = self._dropped = self._failures = self._rejected = 0
        self._healthy = True
        self._backoff = 0.0
        self._next_maintenance = 0.0
        self._next_adoption = 0.0
        self._sealed_at: dt.datetime | None = None  # the UTC hour sealed up to (`_maintain`)
        self._next_seal = 0.0
        self._journal_files = len(journal.files())
        self._aggregator = ThreadPoolExecutor(1, thread_name_prefix="lectr-rollups")  # see `_write`
        self.finished = trio.Event()

    # -- called by requests: never blocks --------------------------------------------------

    def record(self, event: Event) -> None:
        """Queue an event for writing. Plain function: safe to call from any request task."""
        try:
            self._send.send_nowait(event)
        except (trio.WouldBlock, trio.ClosedResourceError):
            # Memory is full (or we are shutting down): keep the event on disk instead.
            self._spill_now([self._finish(event)])

    def statistics(self) -> WriterStatistics:
        return WriterStatistics(
            queued=self._send.statistics().current_buffer_used + len(self._pending) + self._in_flight,
            written=self._written,
            spilled=self._spilled,
            replayed=self._replayed,
            dropped=self._dropped,
            rejected=self._rejected,
            failures=self._failures,
            healthy=self._healthy,
            journal_files=self._journal_files,
        )

    async def aclose(self) -> None:
        """Stop accepting events; the writer task drains what it holds and finishes."""
        await self._send.aclose()
        await self.finished.wait()

    # -- the writer task -------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        settled = False
        try:
            async with self._receive:
                await trio.to_thread.run_sync(self._open_spool)
                task_status.started()
                while not self._closed:
                    await self._fill()
                    if len(self._pending) >= self._queue_size:
                        await self._spill_pending()
                    if self._pending or self._journal_files:
                        # Also the probe that notices Postgres is back while all we hold is on disk.
                        await self._flush()
                    await self._maintain()
                # Shutdown: one last attempt, then keep whatever is left on disk.
                if self._pending:
                    await self._flush()
                if self._pending:
                    await self._spill_pending()
                settled = True  # what the spool holds is committed or journaled
        finally:
            self._spool.close(settled=settled)  # unsettled (no drain): left for adoption
            if self._conn is not None:
                conn, self._conn = self._conn, None
                await trio.to_thread.run_sync(conn.close)
            self._aggregator.shutdown(wait=False)
            self.finished.set()

    def _open_spool(self) -> None:
        """Worker thread: lock this worker's spool, and adopt those of workers that are gone."""
        try:
            self._spool.open()
        except OSError as exc:
            log.warning("cannot open an event spool in %s (%s); held events are in memory only", self._spool.folder,
                        exc)
        self._adopt()

    def _adopt(self) -> None:
        try:
            if self._spool.adopt_orphans():
                self._journal_files = len(self._journal.files())
        except OSError as exc:
            log.warning("cannot look for spools to adopt in %s (%s)", self._spool.folder, exc)
        self._next_adoption = time.monotonic() + _ADOPT_SECONDS

    async def _fill(self) -> bool:
        """Take events off the channel until a batch is due (or the channel is closed).

        Due: full, `flush_seconds` after its first event, or as soon as a whole tick of
        `_QUIET_SECONDS` passes without a new event. A tick costs a wake-up and no thread, so
        steady traffic sees one flush (a thread hop and a COPY: the tail at 1 in flight,
        docs/PERFORMANCE.md step 16) a second, and a quiet moment sees its events written at once."""
        if not self._healthy:  # Postgres is away: hold events until the next attempt
            with trio.move_on_after(self._backoff):
                return await self._take(self._queue_size)
            return False
        if not self._pending:  # idle: wait for a batch's first event (housekeeping runs meanwhile)
            with trio.move_on_after(self._flush_seconds if self._journal_files else _ADOPT_SECONDS):
                if await self._take(1):
                    return True
            if not self._pending:
                return False
        final = trio.current_time() + self._flush_seconds
        while True:
            taken = self._taken
            with trio.move_on_at(min(final, trio.current_time() + _QUIET_SECONDS)):
                return await self._take(self._batch_size)
            if self._taken == taken or trio.current_time() >= final:
                return False

    async def _take(self, limit: int) -> bool:
        """Take events off the channel until `limit` are held; True when the channel is closed.
        What is taken is in the spool before each wait and on return (or cancellation)."""
        receive = self._receive
        pending = self._pending
        prepare = self._prepare
        while len(pending) < limit:
            try:
                pending.append(prepare(receive.receive_nowait()))
                if len(pending) % 16 == 0:
                    self._write_spool()
                    await trio.lowlevel.checkpoint()  # a backlog is priced in slices, between requests
                continue
            except trio.WouldBlock:
                pass
            except trio.EndOfChannel:
                self._write_spool()
                self._closed = True
                return True
            self._write_spool()
            try:
                pending.append(prepare(await receive.receive()))
            except trio.EndOfChannel:
                self._closed = True
                return True
        self._write_spool()
        return False

    async def _while_taking(self, work: Callable[..., T], *args: Any) -> T:
        """Run `work` in a worker thread while this task goes on taking (and spooling) events, so a
        flush never leaves them waiting in the channel, where a worker killed outright would lose
        them, and pricing overlaps the COPY. Its exception, if any, is raised as is."""
        failed: Exception | None = None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._take, self._queue_size)
            try:
                result = await trio.to_thread.run_sync(work, *args)
            except Exception as exc:  # raised below, outside the nursery (which would wrap it in a group)
                failed = exc
            finally:
                nursery.cancel_scope.cancel()
        if failed is not None:
            raise failed
        return result

    def _prepare(self, event: Event) -> tuple[Any, ...]:
        """An event's row, made as it arrives, on the event loop, a few µs at a time, rather than
        a whole batch at once in the flush thread while holding the GIL (docs/PERFORMANCE.md);
        its line for the spool is made here too."""
        row = self._finish(event)
        if self._watcher is not None:
            self._watcher.priced(row)
        self._taken += 1
        if self._spool.active:
            self._unspooled.append(encode(row))
        return row

    @staticmethod
    def _finish(event: Event) -> tuple[Any, ...]:
        """Price, clean and name an event: its row as Postgres and the journal take it."""
        try:
            event.price()
        except Exception:  # a price we cannot compute must not cost the event
            log.exception("could not price an event of %s/%s; storing it without a cost", event.provider, event.model)
        event.sanitise()
        if event.id is None:
            event.id = new_id()
        return event.row()

    def _write_spool(self) -> None:
        if self._unspooled:
            lines, self._unspooled = self._unspooled, []
            self._spool.append(lines[0] if len(lines) == 1 else b"".join(lines))

    async def _flush(self) -> None:
        """Write the held batch, then replay the journal; each step commits on its own, so a
        failure in the replay never makes the batch be written twice."""
        batch = taken = self._pending
        if batch:
            self._pending = []  # what arrives during the flush: in the spool's next file
            if self._healthy:  # (after a failure, retries do not seal: one file per outage, not per retry)
                self._spool.seal()
            self._in_flight = len(batch)
            try:
                try:
                    await self._while_taking(self._write, batch)
                except (psycopg.OperationalError, psycopg.InterfaceError, OSError):
                    raise
                except psycopg.Error as exc:
                    # The batch itself is refused (a value Postgres won't take): find the bad rows.
                    log.error(
                        "a batch of %d events was refused (%s); writing them one by one", len(batch), type(exc).__name__
                    )
                    self._drop_connection()
                    refused = await self._while_taking(self._write_one_by_one, batch)
                    batch = batch[: len(batch) - refused]  # (only their number counts below)
            except (psycopg.OperationalError, psycopg.InterfaceError, OSError) as exc:
                self._pending = batch + self._pending  # held, in order; their spool files are kept
                self._unavailable(exc, len(self._pending))
                return
            finally:
                self._in_flight = 0
            self._spool.release_sealed()
            if self._watcher is not None:
                self._watcher.committed(taken)
            self._written += len(batch)
        try:
            replayed = await self._while_taking(self._replay)
        except (psycopg.OperationalError, psycopg.InterfaceError, OSError) as exc:
            self._unavailable(exc, 0)
            return
        self._written += replayed
        self._replayed += replayed
        if not self._healthy:
            log.info("Postgres is back; writing resumed")
        self._healthy = True
        self._backoff = 0.0

    def _unavailable(self, exc: Exception, held: int) -> None:
        self._failures += 1
        self._backoff = min(self._max_backoff, max(0.1, self._backoff * 2))
        if self._healthy:
            log.warning("Postgres unavailable (%s); holding %d events, retrying", type(exc).__name__, held)
        self._healthy = False
        self._drop_connection()

    def _write(self, batch: list[tuple[Any, ...]]) -> None:
        """Worker thread: COPY the batch and add its rollups, in one transaction (a COPY that
        succeeds has added every row: one already in Postgres fails it). The transaction reads the
        watermark of `rollup_daily` first (`sealed_through`, held until commit; migration 010):
        only the batch's hours before it go to `rollup_daily`.

        The batch is aggregated in a thread of its own while this one streams the rows: Postgres
        takes them in slower than Python formats them, and the aggregation (~3 µs an event) then
        fills this thread's waits on the socket instead of following the last row while Postgres
        sits idle (+4 % events/s under a backlog; bench/README.md, "Event writer")."""
        conn = self._connection()
        if self._types is None:
            found = dict(conn.execute(_COLUMN_TYPES).fetchall())
            self._types = [found[name] for name in COLUMNS]
        with conn.transaction(), conn.cursor() as cur:
            rollups = self._aggregator.submit(aggregate, batch, sealed_through(cur))
            with cur.copy(_BINARY_COPY) as copy:
                copy.set_types(self._types)
                for row in batch:  # made on arrival (`_prepare`)
                    copy.write_row(row)
            upsert(cur, rollups.result())

    def _replay(self) -> int:
        """Worker thread: insert what the journal holds (from any worker sharing it); rows replayed."""
        files = self._journal.files()
        if not files:
            self._journal_files = 0
            return 0
        conn = self._connection()
        replayed = 0
        for path in files:
            try:
                rows = list(self._journal.read(path))
            except FileNotFoundError:
                continue  # another worker sharing the journal replayed it first
            try:
                with conn.transaction(), conn.cursor() as cur:
                    sealed = sealed_through(cur)
                    cur.execute("CREATE TEMP TABLE replay (LIKE events) ON COMMIT DROP")
                    with cur.copy(_REPLAY_COPY) as copy:
                        for row in rows:
                            copy.write_row(_widened(row))
                    added = cur.execute(_REPLAY_INSERT).fetchall()
                    upsert(cur, aggregate(added, sealed))
            except (psycopg.DataError, psycopg.IntegrityError, psycopg.ProgrammingError):
                log.exception("journal file %s is refused by Postgres; kept aside as .rejected", path.name)
                path.rename(path.with_suffix(".rejected"))
                continue
            path.unlink(missing_ok=True)
            replayed += len(added)
        self._journal_files = len(self._journal.files())
        return replayed

    def _write_one_by_one(self, batch: list[tuple[Any, ...]]) -> int:
        """Worker thread: insert each row alone (a savepoint each), skipping those already written
        (a commit whose answer was lost), then add the rollups of the rows added, all in one
        transaction; rows refused are kept aside on disk. Returns how many were refused."""
        conn = self._connection()
        rejected: list[tuple[Any, ...]] = []
        try:
            with conn.transaction(), conn.cursor() as cur:
                sealed = sealed_through(cur)
                added = []
                for row in batch:
                    try:
                        with conn.transaction():
                            cur.execute(_INSERT_ONE, row)
                    except (psycopg.OperationalError, psycopg.InterfaceError):
                        raise  # Postgres went away: the whole batch is held and retried
                    except psycopg.Error:
                        rejected.append(row)
                        continue
                    if cur.rowcount == 1:
                        added.append(row)
                upsert(cur, aggregate(added, sealed))
        except (psycopg.OperationalError, psycopg.InterfaceError):
            raise
        except psycopg.Error:  # the rollups refused: keep the events aside rather than disagree with them
            log.exception("the rollups of a batch of %d events were refused", len(batch))
            rejected = list(batch)
        if rejected:
            path = self._journal.append(rejected)
            path.rename(path.with_suffix(".rejected"))
            log.error("%d events refused by Postgres, kept in %s", len(rejected), path.with_suffix(".rejected"))
            self._rejected += len(rejected)
        return len(rejected)

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = connect(self._url)
            self._types = None  # looked up again: a migration may have run meanwhile
        return self._conn

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # the connection is already broken; nothing to save
                pass

    async def _spill_pending(self) -> None:
        """Keep what is held in the journal (Postgres is away); the spool's copy is then not needed.
        (If even the journal cannot be written, the spool files are left for adoption.)"""
        rows, self._pending = self._pending, []
        self._spool.seal()
        self._in_flight = len(rows)
        try:
            kept = await self._while_taking(self._spill_now, rows)
        finally:
            self._in_flight = 0
        if self._watcher is not None:
            self._watcher.committed(rows)  # in the journal: counted again once replayed into the rollups
        if kept:
            self._spool.release_sealed()
        else:
            self._spool.abandon_sealed()

    def _spill_now(self, rows: list[tuple[Any, ...]]) -> bool:
        try:
            self._journal.append(rows)
        except OSError:
            log.exception("cannot write the event journal; %d events lost", len(rows))
            self._dropped += len(rows)
            return False
        self._spilled += len(rows)
        self._journal_files += 1
        log.warning("spilled %d events to the journal in %s", len(rows), self._journal.folder)
        return True

    async def _maintain(self) -> None:
        """Every few seconds: adopt the spools of workers that are gone. When the UTC hour changes:
        merge the hours that are over into the daily rollups (`rollups.seal`; a minute later again
        if it failed, or if Postgres' clock had not turned the hour yet). Hourly: create next
        months' partitions and apply retention."""
        now = time.monotonic()
        if now >= self._next_adoption:
            await self._while_taking(self._adopt)
        if not self._healthy:
            return
        hour = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)
        if hour != self._sealed_at and now >= self._next_seal:
            self._next_seal = now + 60
            sealed = await self._maintenance("sealing the daily rollups", lambda: seal(self._connection()))
            if sealed is not None and sealed >= hour:
                self._sealed_at = hour
        if now < self._next_maintenance:
            return
        self._next_maintenance = now + _MAINTENANCE_SECONDS

        def work() -> bool:
            conn = self._connection()
            ensure_partitions(conn, dt.datetime.now(dt.UTC), months_back=0, months_ahead=2)
            for name in drop_old_partitions(conn, self._retention_months):
                log.info("retention: dropped partition %s", name)
            if dropped := drop_old_rollups(conn, self._rollup_retention_months):
                log.info("rollup retention: deleted %d rollup rows", dropped)
            return True

        if await self._maintenance("partition maintenance", work) is None:
            self._next_maintenance = now + 60

    async def _maintenance(self, what: str, work: Callable[[], T]) -> T | None:
        """Run housekeeping in a worker thread while events keep being taken; None if it failed."""
        try:
            return await self._while_taking(work)
        except (psycopg.Error, OSError) as exc:
            log.warning("%s failed: %s", what, type(exc).__name__)
            self._drop_connection()
            return None


__all__ = ["EventWriter", "WriterStatistics"]
