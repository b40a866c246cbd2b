"""The dashboard's database: one shared connection for reads, a short one for each write.

The URL comes from `Settings.from_env()` and `proxy.store.db.database_url` (the embedded Postgres when
`DATABASE_URL` is unset), resolved on first use inside `st.cache_resource`, never at import time.
Reads share one connection behind a lock: they are single statements (key lookups, one page of
the request log). Writes (key rotation, Azure settings) open their own connection, because a
transaction block on a shared connection could interleave with another session's statements.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import streamlit as st

from proxy.core.config import Settings
from proxy.store.db import connect, database_url


class Database:
    """The URL (for ADBC loads) and a lazily opened, lock-guarded connection (for reads)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._conn: psycopg.Connection[Any] | None = None
        self._lock = threading.Lock()

    @contextmanager
    def read(self) -> Iterator[psycopg.Connection[Any]]:
        """The shared connection, reopened when the server dropped it."""
        with self._lock:
            if self._conn is None or self._conn.closed or self._conn.broken:
                self._conn = connect(self.url)
            try:
                yield self._conn
            except psycopg.OperationalError:
                self._conn.close()
                raise

    @contextmanager
    def write(self) -> Iterator[psycopg.Connection[Any]]:
        """A connection of its own, closed afterwards."""
        with connect(self.url) as conn:
            yield conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


@st.cache_resource(show_spinner=False, on_release=lambda db: db.close())
def database() -> Database:
    """The process-wide `Database` (one per dashboard server, shared by every session)."""
    return Database(database_url(Settings.from_env()))


def active_key_prefixes(org_id: int) -> list[tuple[str, object]]:
    """(prefix, created_at) of the org's active keys: enough to tell keys apart, never the key."""
    with database().read() as conn:
        rows = conn.execute(
            "SELECT key_prefix, created_at FROM org_keys WHERE org_id = %s AND revoked_at IS NULL"
            " ORDER BY created_at",
            (org_id,),
        ).fetchall()
    return [(str(prefix), created) for prefix, created in rows]
