"""The rollup tables' SQL: the writer's upsert, rollup retention, and the rebuild from raw events.

`upsert` adds a batch's rollup rows (`proxy.accounting.rollup.aggregate`) to `rollup_hourly`,
`rollup_daily` and `rollup_daily_end_user` inside the caller's transaction, the one that inserts
the events: counters are added, `last_error_at` is the later of the two, histograms are merged
with `lectr_hist_merge`. The rows go as three JSON parameters of one statement (one round trip
whatever the number of groups: the writer's thread waits for the GIL again after each), inserted
in key order, the tables named hourly first, so that writers, and `lectr_rollup_rebuild`
(migration 006) and `lectr_rollup_days` (008), which lock `rollup_hourly` first, never deadlock
each other. A batch's `rollup_daily` rows are those of its hours before the watermark
(`sealed_through`, read first in the transaction); the later hours are merged into `rollup_daily`
once they are over (`seal`, migration 010). The rebuilds here recompute a day's `rollup_daily`
rows from its hourly rows in the transaction that rebuilt those.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import orjson
import psycopg

from proxy.accounting.rollup import DAILY_COLUMNS, DAILY_KEY, HISTOGRAMS, HOURLY_COLUMNS, HOURLY_KEY, Rollups
from proxy.store.db.migrate import _month_start

_HOURLY_CONFLICT = (
    "org_id, hour, (coalesce(feature, '')), (coalesce(task, '')), provider, (coalesce(model, '')),"
    " (coalesce(routed_model, ''))"
)
_DAYS_CONFLICT = _HOURLY_CONFLICT.replace("hour", "day", 1)
_DAILY_CONFLICT = "org_id, day, end_user, (coalesce(feature, ''))"
DAYS_COLUMNS = tuple("day" if name == "hour" else name for name in HOURLY_COLUMNS)


_TYPES = {
    "org_id": "bigint", "hour": "timestamptz", "day": "date", "cost_usd": "numeric", "last_error_at": "timestamptz",
    "feature": "text", "task": "text", "provider": "text", "model": "text", "routed_model": "text", "end_user": "text",
}


def _type(name: str) -> str:
    if name.endswith("_sum"):
        return "bigint" if name == "message_count_sum" else "double precision"
    if name.endswith("_b"):
        return "integer[]"
    if name.endswith("_c"):
        return "bigint[]"
    return _TYPES.get(name, "bigint")


def _merges(columns: tuple[str, ...], key: int) -> str:
    """The SET list that adds a row's figures to the row already there (`r`): counters summed,
    last_error_at the later, histograms merged."""
    counters = [name for name in columns[key:] if name != "last_error_at" and not name.endswith(("_b", "_c"))]
    sets = [f"{name} = r.{name} + EXCLUDED.{name}" for name in counters]
    if "last_error_at" in columns:
        sets.append("last_error_at = GREATEST(r.last_error_at, EXCLUDED.last_error_at)")
    sets += [
        f"({name}_b, {name}_c) = (SELECT buckets, counts FROM lectr_hist_merge("
        f"r.{name}_b, r.{name}_c, EXCLUDED.{name}_b, EXCLUDED.{name}_c))"
        for name in HISTOGRAMS
        if f"{name}_b" in columns
    ]
    return ", ".join(sets)


def _key_order(conflict: str) -> str:
    return conflict.replace("(coalesce", "coalesce").replace("''))", "'')")  # the key's expressions


def _insert(table: str, columns: tuple[str, ...], key: int, conflict: str) -> str:
    """INSERT the rows of a JSON parameter (a list of arrays in `columns` order), adding them to
    the rows already there (`_merges`)."""
    listed = ", ".join(columns)
    values = ", ".join(f"(x->>{i})::{_type(name)}" if not name.endswith(("_b", "_c"))
                       else f"translate((x->{i})::text, '[]', '{{}}')::{_type(name)}"
                       for i, name in enumerate(columns))
    return (
        f"INSERT INTO {table} AS r ({listed}) SELECT {listed} FROM (SELECT {values} FROM"
        f" jsonb_array_elements(%s::jsonb) AS x) AS batch ({listed}) ORDER BY {_key_order(conflict)}"
        f" ON CONFLICT ({conflict}) DO UPDATE SET {_merges(columns, key)}"
    )


# One statement for the three tables (one round trip: the writer's thread waits on each for the
# GIL too); Postgres locks rollup_hourly first, in the order the statement names the tables. The
# `rollup_daily` rows are those of the batch's hours before the watermark (`aggregate(rows,
# sealed)`): usually none, the later hours are left to `seal`.
_UPSERT = (
    f"WITH hourly AS ({_insert('rollup_hourly', HOURLY_COLUMNS, HOURLY_KEY, _HOURLY_CONFLICT)} RETURNING 1), "
    f"days AS ({_insert('rollup_daily', DAYS_COLUMNS, HOURLY_KEY, _DAYS_CONFLICT)} RETURNING 1) "
    f"{_insert('rollup_daily_end_user', DAILY_COLUMNS, DAILY_KEY, _DAILY_CONFLICT)}"
)
# No watermark (its row deleted by hand): no hour is sealed, the readers take every day as hours.
_NOTHING_SEALED = dt.datetime.min.replace(tzinfo=dt.UTC)


def sealed_through(cur: psycopg.Cursor[Any]) -> dt.datetime:
    """The watermark of `rollup_daily` (migration 010): it holds exactly the hourly rows before this
    hour. Read FOR SHARE, so it cannot move until the caller's transaction ends: every writer reads
    it first and adds to `rollup_daily` only its rows before it (`aggregate(rows, sealed)`)."""
    row = cur.execute("SELECT through FROM rollup_daily_sealed FOR SHARE").fetchone()
    return row[0].astimezone(dt.UTC) if row else _NOTHING_SEALED


_HOUR_AS_DAY = ", ".join("(hour AT TIME ZONE 'UTC')::date" if name == "day" else name for name in DAYS_COLUMNS)
# One hour's hourly rows added to their days' rows (one hourly row per group: one per daily key).
_DAYS_FROM_HOURS = (
    f"INSERT INTO rollup_daily AS r ({', '.join(DAYS_COLUMNS)}) SELECT {_HOUR_AS_DAY}"
    f" FROM rollup_hourly WHERE hour = %s ORDER BY {_key_order(_HOURLY_CONFLICT)}"
    f" ON CONFLICT ({_DAYS_CONFLICT}) DO UPDATE SET {_merges(DAYS_COLUMNS, HOURLY_KEY)}"
)


def seal(conn: psycopg.Connection[Any], *, hours_per_transaction: int = 6) -> dt.datetime:
    """Merge the hours that are over (by Postgres' clock) from the watermark on into `rollup_daily`,
    an hour per statement, `hours_per_transaction` hours per transaction (writers wait at their
    first statement while one runs: migration 010 says why that keeps every figure exact), and
    return the new watermark. A caller that finds nothing to do takes no lock (every worker calls
    this when the hour changes; the first does the work)."""
    while True:
        row = conn.execute(
            "SELECT through, date_trunc('hour', clock_timestamp(), 'UTC') FROM rollup_daily_sealed"
        ).fetchone()
        if row is None:
            return _NOTHING_SEALED
        if row[0] >= row[1]:
            return row[0]
        with conn.transaction():
            found = conn.execute("SELECT through FROM rollup_daily_sealed FOR NO KEY UPDATE").fetchone()
            if found is None:
                return _NOTHING_SEALED
            through = found[0].astimezone(dt.UTC)  # (hours added in UTC: no wall clock, no DST)
            upto = min(row[1].astimezone(dt.UTC), through + dt.timedelta(hours=hours_per_transaction))
            while through < upto:
                conn.execute(_DAYS_FROM_HOURS, (through,))
                through += dt.timedelta(hours=1)
            conn.execute("UPDATE rollup_daily_sealed SET through = %s", (through,))


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)  # exact, as Postgres reads numeric text
    raise TypeError(type(value).__name__)


def upsert(cur: psycopg.Cursor[Any], rollups: Rollups) -> None:
    """Add a batch's rollup rows, in the caller's transaction (blocking; the writer's thread), which
    read the watermark first (`sealed_through`) and aggregated the batch with it."""
    if rollups:
        cur.execute(_UPSERT, (orjson.dumps(rollups.hourly, default=_default).decode(),
                              orjson.dumps(rollups.days, default=_default).decode(),
                              orjson.dumps(rollups.daily, default=_default).decode()))


def drop_old_rollups(conn: psycopg.Connection[Any], keep_months: int) -> int:
    """Rollup retention (`LECTR_ROLLUP_RETENTION_MONTHS`): delete rollup rows of months that end
    before `keep_months` months ago, like `drop_old_partitions` for raw events; 0 keeps all.
    Returns the rows deleted."""
    if keep_months <= 0:
        return 0
    cutoff = _month_start(dt.datetime.now(dt.UTC), -keep_months)
    with conn.transaction():
        hourly = conn.execute("DELETE FROM rollup_hourly WHERE hour < %s", (cutoff,)).rowcount
        days = conn.execute("DELETE FROM rollup_daily WHERE day < %s", (cutoff.date(),)).rowcount
        daily = conn.execute("DELETE FROM rollup_daily_end_user WHERE day < %s", (cutoff.date(),)).rowcount
    return max(0, hourly) + max(0, days) + max(0, daily)


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
                span = (org_ids, midnight, midnight + dt.timedelta(days=1))
                counted, rows = conn.execute(
                    "SELECT * FROM lectr_rollup_rebuild(%s::bigint[], %s, %s)", span
                ).fetchone() or (0, 0)
                conn.execute("SELECT lectr_rollup_days(%s::bigint[], %s, %s)", span)
            yield day, int(counted), int(rows)

    return days, run()


def rebuild_org(conn: psycopg.Connection[Any], org_id: int) -> int:
    """Recompute all of one org's rollups in the caller's transaction (`lectr demo`); events counted."""
    row = conn.execute(
        "SELECT counted_events FROM lectr_rollup_rebuild(ARRAY[%s]::bigint[], '-infinity', 'infinity')", (org_id,)
    ).fetchone()
    conn.execute("SELECT lectr_rollup_days(ARRAY[%s]::bigint[], '-infinity', 'infinity')", (org_id,))
    return int(row[0]) if row else 0


def rebuild_daily(conn: psycopg.Connection[Any], org_ids: list[int] | None) -> int:
    """Recompute the orgs' (None: all) `rollup_daily` rows from their hourly rows, all days; rows
    written. For hourly rows written by other means than the writer (imports, benchmarks, tests)."""
    row = conn.execute("SELECT lectr_rollup_days(%s::bigint[], '-infinity', 'infinity')", (org_ids,)).fetchone()
    return int(row[0]) if row else 0


__all__ = [
    "DAYS_COLUMNS", "drop_old_rollups", "rebuild_daily", "rebuild_days", "rebuild_org", "seal", "sealed_through",
    "upsert",
]
