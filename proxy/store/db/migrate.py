"""Versioned migrations (`migrations/NNN_name.sql`, applied once each, in order) and partitions."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from typing import Any

import psycopg

log = logging.getLogger("lectr.db")

# Any constant works; it only has to be the same in every process that migrates.
_LOCK_ID = 0x1EC7
_PARTITIONS = (
    "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
    " JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'events'"
)


@contextmanager
def _locked(conn: psycopg.Connection[Any]) -> Iterator[None]:
    """A transaction holding Lectr's schema lock: migrations, partition creation and retention
    from every worker and command take turns."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_ID,))
        yield


def _migration_files() -> list[tuple[int, str, str]]:
    folder = resources.files("proxy.store.db") / "migrations"
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            version = int(entry.name.split("_", 1)[0])
            found.append((version, entry.name, entry.read_text()))
    return sorted(found)


def migrate(conn: psycopg.Connection[Any]) -> list[str]:
    """Apply pending migrations under an advisory lock; return the names applied."""
    applied: list[str] = []
    with _locked(conn):
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
        for version, name, sql in _migration_files():
            if version in done:
                continue
            log.info("applying migration %s", name)
            conn.execute(sql)  # type: ignore[call-overload]
            conn.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (version, name))
            applied.append(name)
    ensure_partitions(conn, dt.datetime.now(dt.UTC), months_back=13, months_ahead=2)
    return applied


def _month_start(when: dt.datetime, offset: int) -> dt.datetime:
    index = when.year * 12 + (when.month - 1) + offset
    return dt.datetime(index // 12, index % 12 + 1, 1, tzinfo=dt.UTC)


def ensure_partitions(
    conn: psycopg.Connection[Any], around: dt.datetime, months_back: int = 1, months_ahead: int = 2
) -> None:
    """Create the monthly partitions of `events` around a date (idempotent).

    A month whose rows already sit in the default partition is left there: Postgres refuses to
    carve a partition out of rows in the default one, and they are still found by every query.
    """
    existing = {row[0] for row in conn.execute(_PARTITIONS)}
    for offset in range(-months_back, months_ahead + 1):
        start, end = _month_start(around, offset), _month_start(around, offset + 1)
        name = f"events_{start:%Y_%m}"
        if name in existing:
            continue
        with _locked(conn):
            busy = conn.execute(
                "SELECT 1 FROM events_default WHERE created_at >= %s AND created_at < %s LIMIT 1",
                (start, end),
            ).fetchone()
            if busy:
                continue
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF events"  # type: ignore[arg-type]
                f" FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')"
            )


def drop_old_partitions(conn: psycopg.Connection[Any], keep_months: int) -> list[str]:
    """Retention: drop monthly partitions that end before `keep_months` months ago."""
    if keep_months <= 0:
        return []
    cutoff = _month_start(dt.datetime.now(dt.UTC), -keep_months)
    dropped = []
    # Under the same lock as migrations and partition creation: workers doing this hourly never race.
    with _locked(conn):
        for (name,) in conn.execute(_PARTITIONS + " AND c.relname ~ '^events_[0-9]{4}_[0-9]{2}$'").fetchall():
            year, month = int(name[7:11]), int(name[12:14])
            if dt.datetime(year, month, 1, tzinfo=dt.UTC) < cutoff:
                conn.execute(f"DROP TABLE {name}")  # type: ignore[arg-type]
                dropped.append(name)
    return dropped
