"""The rollup tables' SQL: the writer's upsert, rollup retention, and the rebuild from raw events.

`upsert` adds a batch's rollup rows (`proxy.rollup.aggregate`) to `rollup_hourly` and
`rollup_daily_end_user` inside the caller's transaction, the one that inserts the events: counters
are added, `last_error_at` is the later of the two, histograms are merged with `lectr_hist_merge`.
The rows go through per-session temporary tables (one COPY and one `INSERT ... SELECT ... ON
CONFLICT` per table, whatever the number of groups), in key order, hourly before daily, so that
writers, and `lectr_rollup_rebuild` (migration 006) which locks the tables in that order, never
deadlock each other.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import psycopg

from proxy.db.migrate import _month_start
from proxy.rollup import DAILY_COLUMNS, DAILY_KEY, HISTOGRAMS, HOURLY_COLUMNS, HOURLY_KEY, Rollups

_HOURLY_CONFLICT = (
    "org_id, hour, (coalesce(feature, '')), (coalesce(task, '')), provider, (coalesce(model, '')),"
    " (coalesce(routed_model, ''))"
)
_DAILY_CONFLICT = "org_id, day, end_user, (coalesce(feature, ''))"


def _upsert_sql(table: str, columns: tuple[str, ...], key: int, conflict: str, histograms: tuple[str, ...]) -> str:
    counters = [name for name in columns[key:] if name != "last_error_at" and not name.endswith(("_b", "_c"))]
    sets = [f"{name} = r.{name} + EXCLUDED.{name}" for name in counters]
    if "last_error_at" in columns:
        sets.append("last_error_at = GREATEST(r.last_error_at, EXCLUDED.last_error_at)")
    sets += [
        f"({name}_b, {name}_c) = (SELECT buckets, counts FROM lectr_hist_merge("
        f"r.{name}_b, r.{name}_c, EXCLUDED.{name}_b, EXCLUDED.{name}_c))"
        for name in histograms
    ]
    order = ", ".join(conflict.replace("(coalesce", "coalesce").replace("''))", "'')").split(", "))
    listed = ", ".join(columns)
    return (
        f"INSERT INTO {table} AS r ({listed}) SELECT {listed} FROM {table}_batch ORDER BY {order}"
        f" ON CONFLICT ({conflict}) DO UPDATE SET {', '.join(sets)}"
    )


_HOURLY_UPSERT = _upsert_sql("rollup_hourly", HOURLY_COLUMNS, HOURLY_KEY, _HOURLY_CONFLICT, HISTOGRAMS)
_DAILY_UPSERT = _upsert_sql("rollup_daily_end_user", DAILY_COLUMNS, DAILY_KEY, _DAILY_CONFLICT, ())
_BATCH_TABLES = (
    "CREATE TEMP TABLE IF NOT EXISTS rollup_hourly_batch (LIKE rollup_hourly) ON COMMIT DELETE ROWS;"
    " CREATE TEMP TABLE IF NOT EXISTS rollup_daily_end_user_batch (LIKE rollup_daily_end_user) ON COMMIT DELETE ROWS"
)
_HOURLY_COPY = f"COPY rollup_hourly_batch ({', '.join(HOURLY_COLUMNS)}) FROM STDIN"
_DAILY_COPY = f"COPY rollup_daily_end_user_batch ({', '.join(DAILY_COLUMNS)}) FROM STDIN"


def upsert(cur: psycopg.Cursor[Any], rollups: Rollups) -> None:
    """Add a batch's rollup rows, in the caller's transaction (blocking; the writer's thread)."""
    if not rollups:
        return
    cur.execute(_BATCH_TABLES)  # made once per session (then a catalog look-up); emptied at each commit
    if rollups.hourly:
        with cur.copy(_HOURLY_COPY) as copy:
            for row in rollups.hourly:
                copy.write_row(row)
        cur.execute(_HOURLY_UPSERT)
    if rollups.daily:
        with cur.copy(_DAILY_COPY) as copy:
            for row in rollups.daily:
                copy.write_row(row)
        cur.execute(_DAILY_UPSERT)


def drop_old_rollups(conn: psycopg.Connection[Any], keep_months: int) -> int:
    """Rollup retention (`LECTR_ROLLUP_RETENTION_MONTHS`): delete rollup rows of months that end
    before `keep_months` months ago, like `drop_old_partitions` for raw events; 0 keeps all.
    Returns the rows deleted."""
    if keep_months <= 0:
        return 0
    cutoff = _month_start(dt.datetime.now(dt.UTC), -keep_months)
    with conn.transaction():
        hourly = conn.execute("DELETE FROM rollup_hourly WHERE hour < %s", (cutoff,)).rowcount
        daily = conn.execute("DELETE FROM rollup_daily_end_user WHERE day < %s", (cutoff.date(),)).rowcount
    return max(0, hourly) + max(0, daily)


def rebuild_days(
    conn: psycopg.Connection[Any], org_ids: list[int] | None, since: dt.date | None
) -> tuple[list[dt.date], Iterator[tuple[dt.date, int, int]]]:
    """The UTC days to rebuild (from `since`, or the first raw event, to the last raw event), and an
    iterator that rebuilds them one transaction a day, yielding (day, events counted, rollup rows).
    Days before the first raw event are never touched: their events may be gone (retention) while
    their rollups are meant to stay."""
    first, last = conn.execute(
        "SELECT min(created_at), max(created_at) FROM events WHERE %(orgs)s::bigint[] IS NULL"
        " OR org_id = ANY (%(orgs)s::bigint[])",
        {"orgs": org_ids},
    ).fetchone() or (None, None)
    if first is None or last is None:
        return [], iter(())
    start = first.astimezone(dt.UTC).date()
    if since is not None:
        start = max(start, since)
    end = last.astimezone(dt.UTC).date()
    days = [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]

    def run() -> Iterator[tuple[dt.date, int, int]]:
        for day in days:
            midnight = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
            with conn.transaction():
                counted, rows = conn.execute(
                    "SELECT * FROM lectr_rollup_rebuild(%s::bigint[], %s, %s)",
                    (org_ids, midnight, midnight + dt.timedelta(days=1)),
                ).fetchone() or (0, 0)
            yield day, int(counted), int(rows)

    return days, run()


def rebuild_org(conn: psycopg.Connection[Any], org_id: int) -> int:
    """Recompute all of one org's rollups in the caller's transaction (`lectr demo`); events counted."""
    row = conn.execute(
        "SELECT counted_events FROM lectr_rollup_rebuild(ARRAY[%s]::bigint[], '-infinity', 'infinity')", (org_id,)
    ).fetchone()
    return int(row[0]) if row else 0


__all__ = ["drop_old_rollups", "rebuild_days", "rebuild_org", "upsert"]
