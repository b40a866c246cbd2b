"""The request log: one page of an org's events at a time, paginated in SQL by keyset.

A page is `ORDER BY created_at DESC, id DESC LIMIT n`, and the next page starts strictly after
the last row shown (`(created_at, id) < (cursor)`), so the index on `(org_id, created_at DESC)`
is walked from where the previous page stopped: page 500 costs what page 1 costs, and nothing
ever loads the whole table. Every value is a bound parameter.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

import psycopg
from psycopg import sql

from analytics import UNTAGGED

PAGE_SIZE = 50
# Counting stops here: "10,000+ requests" is as useful as an exact figure and stays cheap.
COUNT_CAP = 10_000

COLUMNS: tuple[str, ...] = (
    "created_at", "feature", "task", "provider", "model", "status_code", "error_type", "latency_ms",
    "ttft_ms", "input_tokens", "output_tokens", "cost_usd", "stream", "endpoint", "end_user", "request_id", "id",
)

NO_TASK = "none"  # the task filter's name for requests sent without `X-Lectr-Task`

StatusFilter: TypeAlias = Literal["ok", "error"] | int | None


@dataclass(frozen=True, slots=True)
class LogFilters:
    """What the log shows; None or an empty tuple means "any". `untagged` selects a null feature."""

    start: dt.datetime
    end: dt.datetime
    features: tuple[str, ...] = ()
    tasks: tuple[str, ...] = ()
    providers: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    status: StatusFilter = None
    end_user: str | None = None  # one end user, exactly as sent (`X-Lectr-User` or the body's `user`)


@dataclass(frozen=True, slots=True)
class Cursor:
    """The last row of a page: the next page starts strictly after it."""

    created_at: dt.datetime
    id: str


def _any_of(column: str, values: Sequence[str], null_label: str | None = None) -> tuple[sql.Composable, list[Any]]:
    """`column = ANY(%s)`, plus `column IS NULL` when `null_label` is among the values."""
    named = [v for v in values if v != null_label]
    parts: list[sql.Composable] = []
    params: list[Any] = []
    if named:
        parts.append(sql.SQL("{} = ANY(%s)").format(sql.Identifier(column)))
        params.append(named)
    if null_label is not None and null_label in values:
        parts.append(sql.SQL("{} IS NULL").format(sql.Identifier(column)))
    return sql.SQL("(") + sql.SQL(" OR ").join(parts) + sql.SQL(")"), params


def where_clause(org_id: int, filters: LogFilters) -> tuple[sql.Composable, list[Any]]:
    """The `WHERE` conditions and their parameters (org and time always come first: the index)."""
    parts: list[sql.Composable] = [sql.SQL("org_id = %s"), sql.SQL("created_at >= %s"), sql.SQL("created_at < %s")]
    params: list[Any] = [org_id, filters.start, filters.end]
    for column, values, null_label in (
        ("feature", filters.features, UNTAGGED),
        ("task", filters.tasks, NO_TASK),
        ("provider", filters.providers, None),
        ("model", filters.models, None),
    ):
        if values:
            part, values_params = _any_of(column, values, null_label)
            parts.append(part)
            params.extend(values_params)
    if filters.end_user:
        parts.append(sql.SQL("end_user = %s"))
        params.append(filters.end_user)
    if filters.status == "ok":
        parts.append(sql.SQL("(status_code < 400 AND error_type IS NULL)"))
    elif filters.status == "error":
        parts.append(sql.SQL("(status_code >= 400 OR error_type IS NOT NULL)"))
    elif isinstance(filters.status, int):
        parts.append(sql.SQL("status_code = %s"))
        params.append(filters.status)
    return sql.SQL(" AND ").join(parts), params


def _select(column: str) -> sql.Composable:
    if column == "cost_usd":
        return sql.SQL("cost_usd::float8 AS cost_usd")
    if column == "id":
        return sql.SQL("id::text AS id")
    return sql.Identifier(column)


def page_query(
    org_id: int, filters: LogFilters, cursor: Cursor | None = None, size: int = PAGE_SIZE
) -> tuple[sql.Composable, list[Any]]:
    """One page, newest first, starting after `cursor`; asks for one row more to know if more exist."""
    where, params = where_clause(org_id, filters)
    if cursor is not None:
        # The plain `created_at <=` lets Postgres range-scan the index; the row comparison breaks ties.
        where = where + sql.SQL(" AND created_at <= %s AND (created_at, id) < (%s, %s::uuid)")
        params = [*params, cursor.created_at, cursor.created_at, cursor.id]
    # `events.id`: a bare `id` in ORDER BY would name the selected `id::text` and sort by text.
    query = sql.SQL("SELECT {} FROM events WHERE {} ORDER BY events.created_at DESC, events.id DESC LIMIT %s").format(
        sql.SQL(", ").join(_select(c) for c in COLUMNS), where
    )
    return query, [*params, size + 1]


@dataclass(frozen=True, slots=True)
class Page:
    rows: list[dict[str, Any]]
    next_cursor: Cursor | None  # None on the last page


def fetch_page(
    conn: psycopg.Connection[Any], org_id: int, filters: LogFilters, cursor: Cursor | None = None,
    size: int = PAGE_SIZE,
) -> Page:
    query, params = page_query(org_id, filters, cursor, size)
    rows = conn.execute(query.as_string(conn), params).fetchall()
    records = [dict(zip(COLUMNS, row, strict=True)) for row in rows[:size]]
    more = len(rows) > size
    last = records[-1] if records else None
    return Page(records, Cursor(last["created_at"], last["id"]) if more and last else None)


def count(conn: psycopg.Connection[Any], org_id: int, filters: LogFilters, cap: int = COUNT_CAP) -> int:
    """Matching requests, counted up to `cap + 1` (the caller shows "cap+" beyond it)."""
    where, params = where_clause(org_id, filters)
    query = sql.SQL("SELECT count(*) FROM (SELECT 1 FROM events WHERE {} LIMIT %s) AS matching").format(where)
    row = conn.execute(query.as_string(conn), [*params, cap + 1]).fetchone()
    return int(row[0]) if row else 0
