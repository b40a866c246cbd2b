"""Postgres → polars: one org's rollups (the figures) or raw events (the request log, the raw
edges of a window), filters pushed into SQL.

The connector is ADBC (`adbc-driver-postgresql`): it streams the rows as Arrow (binary COPY under
the hood) and hands them to polars without a Python object per row, and it is libpq underneath,
so every URL form the rest of Lectr accepts works, Unix sockets included. docs/ANALYTICS.md
has the measurements behind the choice.

`load_rollups` is what every figure reads: the whole hours of a window from `rollup_hourly`,
and the pieces of the hours a window starts, ends or is cut in from raw events, aggregated the
same way (`analytics.rollups`), so a window that starts or ends mid-hour is exact.

The query runs once, when `load_events` or `load_rollups` is called; the frame it returns is lazy so that every
figure stays a lazy chain and the caller collects once (several figures at a time with
`pl.collect_all`). Reloading is the caller's job (the dashboard caches per org and window).
"""

from __future__ import annotations

import atexit
import datetime as dt
import threading
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import polars as pl
import psycopg
from psycopg import sql

# Every column the analytics know about, with the dtype the figures rely on. Integers are Int64
# so sums over millions of rows cannot overflow; `cost_usd` (numeric in Postgres) is Float64.
EVENT_SCHEMA: Mapping[str, pl.DataType] = {
    "id": pl.String(),
    "created_at": pl.Datetime("us", "UTC"),
    "request_id": pl.String(),
    "provider": pl.String(),
    "provider_header": pl.String(),
    "provider_unknown": pl.Boolean(),
    "model": pl.String(),
    "response_model": pl.String(),
    "routed_model": pl.String(),
    "route_rule_id": pl.Int64(),
    "attempts": pl.Int64(),
    "feature": pl.String(),
    "task": pl.String(),
    "endpoint": pl.String(),
    "stream": pl.Boolean(),
    "status_code": pl.Int64(),
    "error_type": pl.String(),
    "error_message": pl.String(),
    "latency_ms": pl.Float64(),
    "ttft_ms": pl.Float64(),
    "upstream_ms": pl.Float64(),
    "input_tokens": pl.Int64(),
    "output_tokens": pl.Int64(),
    "cached_input_tokens": pl.Int64(),
    "cache_write_tokens": pl.Int64(),
    "reasoning_tokens": pl.Int64(),
    "usage_estimated": pl.Boolean(),
    "cost_usd": pl.Float64(),
    "price_source": pl.String(),
    "request_bytes": pl.Int64(),
    "response_bytes": pl.Int64(),
    "message_count": pl.Int64(),
    "end_user": pl.String(),
}

# Exactly what the figures, recommendations and anomalies read: the default projection. Every
# column costs load time (~0.05-0.35 s per million rows), so the request log asks for more
# (`columns=EVENT_SCHEMA`) only for the rows it shows, and the CLI commands for less.
ANALYTICS_COLUMNS: tuple[str, ...] = (
    "created_at", "provider", "model", "response_model", "routed_model", "feature", "task",
    "status_code", "error_type", "latency_ms", "ttft_ms", "upstream_ms", "input_tokens",
    "output_tokens", "cached_input_tokens", "reasoning_tokens", "cost_usd", "message_count",
)

Status = Literal["ok", "error"]


def _sql_expr(column: str) -> str:
    # numeric → float8 on the server: polars wants a float, and Arrow has no lossless numeric.
    if column == "cost_usd":
        return "cost_usd::float8 AS cost_usd"
    if column == "id":
        return "id::text AS id"
    return column


def _in(column: str, values: Iterable[str | int | None], cast: str = "text[]") -> sql.Composable:
    """`column = ANY(array)`, with None in `values` meaning IS NULL (e.g. untagged features)."""
    wanted = list(values)
    named = [v for v in wanted if v is not None]
    parts: list[sql.Composable] = []
    if named:
        parts.append(sql.SQL("{} = ANY({}::" + cast + ")").format(sql.Identifier(column), sql.Literal(named)))
    if len(named) < len(wanted):
        parts.append(sql.SQL("{} IS NULL").format(sql.Identifier(column)))
    if not parts:
        return sql.SQL("FALSE")
    return sql.SQL("(") + sql.SQL(" OR ").join(parts) + sql.SQL(")")


def build_query(
    org_id: int,
    start: dt.datetime,
    end: dt.datetime,
    *,
    columns: Sequence[str] = ANALYTICS_COLUMNS,
    features: Iterable[str | None] | None = None,
    models: Iterable[str] | None = None,
    providers: Iterable[str] | None = None,
    tasks: Iterable[str | None] | None = None,
    status: Status | Sequence[int] | None = None,
    limit: int | None = None,
) -> str:
    """The SQL `load_events` runs, values inlined as properly quoted literals.

    Inlined rather than bound: with bound parameters the ADBC driver cannot stream the result
    with COPY and falls back to a row-by-row protocol that was measured 1.5-2x slower.
    psycopg's `sql.Literal` does the quoting, so no value is ever pasted in as raw text.
    """
    unknown = [c for c in columns if c not in EVENT_SCHEMA]
    if unknown:
        raise ValueError(f"unknown event columns: {unknown}")
    where: list[sql.Composable] = [
        sql.SQL("org_id = {}").format(sql.Literal(int(org_id))),
        sql.SQL("created_at >= {}").format(sql.Literal(start)),
        sql.SQL("created_at < {}").format(sql.Literal(end)),
    ]
    if features is not None:
        where.append(_in("feature", features))
    if models is not None:
        where.append(_in("model", models))
    if providers is not None:
        where.append(_in("provider", providers))
    if tasks is not None:
        where.append(_in("task", tasks))
    if status == "error":
        where.append(sql.SQL("(status_code >= 400 OR error_type IS NOT NULL)"))
    elif status == "ok":
        where.append(sql.SQL("(status_code < 400 AND error_type IS NULL)"))
    elif status is not None:
        codes: list[int | None] = [int(code) for code in status]
        where.append(_in("status_code", codes, "int[]"))
    query = sql.SQL("SELECT {} FROM events WHERE {}").format(
        sql.SQL(", ").join(sql.SQL(_sql_expr(c)) for c in columns), sql.SQL(" AND ").join(where)
    )
    if limit is not None:
        query += sql.SQL(" ORDER BY created_at DESC LIMIT {}").format(sql.Literal(int(limit)))
    return query.as_string(None)


def _dsn(source: psycopg.Connection[Any] | str) -> str:
    """A libpq connection string for ADBC, from a URL or from an open psycopg connection."""
    if isinstance(source, str):
        return source
    # `info.dsn` omits the password on purpose; put it back for the second connection.
    return psycopg.conninfo.make_conninfo(source.info.dsn, password=source.info.password or None)


_databases: dict[str, Any] = {}
_databases_lock = threading.Lock()


def _database(dsn: str) -> Any:
    """The ADBC database of `dsn`, opened once per process: opening one costs ~0.1 s (a libpq
    connection and a read of Postgres' type catalog), a connection from it a few ms. A
    dashboard process loads many frames, and a report two; each load still gets a connection
    of its own (connections are not shared between threads)."""
    import adbc_driver_postgresql

    with _databases_lock:
        database = _databases.get(dsn)
        if database is None:
            if not _databases:
                atexit.register(_close_databases)
            database = _databases[dsn] = adbc_driver_postgresql.connect(dsn)
        return database


def _close_databases() -> None:
    with _databases_lock:
        for database in _databases.values():
            database.close()
        _databases.clear()


def fetch(dsn: str, queries: Sequence[str]) -> list[pl.DataFrame]:
    """Run `queries` at once, each on an ADBC connection of its own, each result straight into
    polars (in order). Postgres runs them side by side while this process decodes the Arrow
    streams, so a load waits for its longest query rather than for their sum.

    ADBC's low-level API hands polars the Arrow C stream (the PyCapsule interface): no pyarrow,
    whose `dataset` module the DB-API layer imports, and with it pandas (~1 s of imports for a
    `lectr report` that needs neither)."""
    if len(queries) <= 1:
        return [_fetch_one(dsn, query) for query in queries]
    rest = [_FETCHES.submit(_fetch_one, dsn, query) for query in queries[1:]]
    first = _fetch_one(dsn, queries[0])
    return [first, *(future.result() for future in rest)]


# The threads that run a load's other queries, kept for the process (a thread, and the memory
# arena the C driver's allocations get in it, is reused rather than made per load).
_FETCHES = ThreadPoolExecutor(max_workers=4, thread_name_prefix="lectr-fetch")


def _fetch_one(dsn: str, query: str) -> pl.DataFrame:
    import adbc_driver_manager

    database = _database(dsn)
    with _databases_lock:
        conn = adbc_driver_manager.AdbcConnection(database)
    with conn, adbc_driver_manager.AdbcStatement(conn) as statement:
        statement.set_sql_query(query)
        stream, _ = statement.execute_query()
        return pl.DataFrame(stream)


def conform(frame: pl.DataFrame | pl.LazyFrame, columns: Sequence[str] | None = None) -> pl.LazyFrame:
    """Cast `frame` to `EVENT_SCHEMA` (missing columns become nulls), keeping `columns` or all."""
    lf = frame.lazy()
    present = set(lf.collect_schema().names())
    wanted = list(columns) if columns is not None else list(EVENT_SCHEMA)
    return lf.select(
        (pl.col(c) if c in present else pl.lit(None)).cast(EVENT_SCHEMA[c]).alias(c) for c in wanted
    )


def events_frame(records: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> pl.LazyFrame:
    """Events from plain dicts (tests, notebooks): any column left out is null."""
    names = list(columns) if columns is not None else list(EVENT_SCHEMA)
    data = {c: [r.get(c) for r in records] for c in names}
    return conform(pl.DataFrame(data, schema={c: EVENT_SCHEMA[c] for c in names}), names)


def load_events(
    source: psycopg.Connection[Any] | str,
    org_id: int,
    start: dt.datetime,
    end: dt.datetime,
    *,
    columns: Sequence[str] = ANALYTICS_COLUMNS,
    features: Iterable[str | None] | None = None,
    models: Iterable[str] | None = None,
    providers: Iterable[str] | None = None,
    tasks: Iterable[str | None] | None = None,
    status: Status | Sequence[int] | None = None,
    limit: int | None = None,
) -> pl.LazyFrame:
    """Events of `org_id` with `start <= created_at < end`, as a lazy frame typed per `EVENT_SCHEMA`.

    `source` is a libpq URL or an open psycopg connection (its parameters are reused for a
    second, ADBC connection, so rows it has not committed are not seen). Every filter runs in
    Postgres: `features` / `tasks` may contain None for "not set", `status` is "ok", "error"
    (status >= 400 or an error type) or a list of status codes, `limit` keeps the newest rows.
    """
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("start and end must be timezone-aware datetimes")
    query = build_query(
        org_id, start, end, columns=columns, features=features, models=models,
        providers=providers, tasks=tasks, status=status, limit=limit,
    )
    (frame,) = fetch(_dsn(source), [query])
    return conform(frame, columns)
