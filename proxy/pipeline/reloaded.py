"""`Reloaded`: what the hot path's in-memory views of Postgres share (the key directory, the budget
tracker). Each holds one connection for its reloads, opened on first use and again after a
failure, loads in a worker thread (a query never runs on the event loop), and is kept fresh by one
task that reloads every `refresh_seconds` until cancelled.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import psycopg
import trio

from proxy.store.db import connect

T = TypeVar("T")


class Reloaded:
    """Subclasses implement `refresh` (one reload; they keep their last good view when it fails)."""

    def __init__(self, database_url: str, refresh_seconds: float) -> None:
        self._url = database_url
        self._refresh_seconds = refresh_seconds
        self._conn: psycopg.Connection[Any] | None = None
        self.loaded = False  # a reload has succeeded once
        self.last_error: str | None = None  # the last reload's failure (its type), None after a success

    async def refresh(self) -> None:
        raise NotImplementedError

    def _connection(self) -> psycopg.Connection[Any]:
        """The held connection, (re)opened when there is none. In the reload's worker thread."""
        if self._conn is None or self._conn.closed:
            self._conn = connect(self._url)
        return self._conn

    async def _load(self, load: Callable[[psycopg.Connection[Any]], T]) -> T:
        """`load(conn)` in a worker thread. On a database or network error the held connection is
        dropped (the next reload opens a new one), `last_error` says why, and the error is raised
        for the subclass to keep its last view."""
        try:
            return await trio.to_thread.run_sync(lambda: load(self._connection()))
        except (psycopg.Error, OSError) as exc:
            self.last_error = type(exc).__name__
            conn, self._conn = self._conn, None
            if conn is not None:
                conn.close()
            raise

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Reload forever (cancel to stop); `started` once the first load has been tried."""
        await self.refresh()
        task_status.started()
        try:
            while True:
                await trio.sleep(self._refresh_seconds)
                await self.refresh()
        finally:
            if self._conn is not None:
                self._conn.close()
