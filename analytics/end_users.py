"""End users (SPEC §5): which of an org's customers cost what, from the daily end-user rollup.

The writer keeps `rollup_daily_end_user` (one row per org, UTC day, end user and feature) in the
transaction that adds the events. A window rarely starts and ends on midnight, so whole UTC days
come from the rollup and the partial days at its edges from the raw events, aggregated the same
way in the same query: the figures are exact, and a 90-day window reads ~90 rows per end user
and feature instead of every request.

`load_end_users` returns one row per (end user, feature); `top_end_users` ranks them, for the
whole org or per feature. Requests that name no end user (no `X-Lectr-User`, no `user` in the
body) are not in these figures.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

import polars as pl
import psycopg
from psycopg import sql

from analytics.load import _dsn, _in

UNTAGGED = "untagged"

SCHEMA: dict[str, pl.DataType] = {
    "end_user": pl.String(),
    "feature": pl.String(),
    "requests": pl.Int64(),
    "errors": pl.Int64(),
    "input_tokens": pl.Int64(),
    "output_tokens": pl.Int64(),
    "cached_input_tokens": pl.Int64(),
    "cache_write_tokens": pl.Int64(),
    "reasoning_tokens": pl.Int64(),
    "cost_usd": pl.Float64(),
    "unpriced": pl.Int64(),
    "latency_ms_sum": pl.Float64(),
    "latency_ms_n": pl.Int64(),
}
_SUMMED = [name for name in SCHEMA if name not in ("end_user", "feature")]

# The raw side of the query: the same aggregates the writer keeps in the rollup (errors as
# analytics count them: a status of 400 or more, or an error type; unpriced: no cost, no error).
_RAW_AGGREGATES = """
    count(*) AS requests,
    count(*) FILTER (WHERE status_code >= 400 OR error_type IS NOT NULL) AS errors,
    coalesce(sum(input_tokens), 0) AS input_tokens,
    coalesce(sum(output_tokens), 0) AS output_tokens,
    coalesce(sum(cached_input_tokens), 0) AS cached_input_tokens,
    coalesce(sum(cache_write_tokens), 0) AS cache_write_tokens,
    coalesce(sum(reasoning_tokens), 0) AS reasoning_tokens,
    coalesce(sum(cost_usd), 0) AS cost_usd,
    count(*) FILTER (WHERE cost_usd IS NULL AND status_code < 400 AND error_type IS NULL) AS unpriced,
    coalesce(sum(latency_ms), 0) AS latency_ms_sum,
    count(latency_ms) AS latency_ms_n
"""
_ROLLUP_COLUMNS = ", ".join(f"{name}" for name in _SUMMED)


def _midnight(moment: dt.datetime, *, up: bool) -> dt.datetime:
    day = moment.astimezone(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return day + dt.timedelta(days=1) if up and day != moment else day


Edges = list[tuple[dt.datetime, dt.datetime]]


def split_days(start: dt.datetime, end: dt.datetime) -> tuple[tuple[dt.date, dt.date] | None, Edges]:
    """(whole UTC days `[first, last)` for the rollup or None, the raw ranges at the edges)."""
    first, last = _midnight(start, up=True), _midnight(end, up=False)
    if first >= last:
        return None, [(start, end)] if start < end else []
    edges = [(a, b) for a, b in ((start, first), (last, end)) if a < b]
    return (first.date(), last.date()), edges


def build_query(
    org_id: int, start: dt.datetime, end: dt.datetime, features: Iterable[str | None] | None = None
) -> str:
    """One SQL statement: the rollup's whole days and the raw edges, one row per (end user, feature)
    and source. Values are inlined as quoted literals (ADBC streams the result only then)."""
    days, edges = split_days(start, end)
    org = sql.Literal(int(org_id))
    feature_filter = _in("feature", features) if features is not None else sql.SQL("TRUE")
    parts: list[sql.Composable] = []
    if days is not None:
        parts.append(
            sql.SQL(
                "SELECT end_user, feature, " + _ROLLUP_COLUMNS.replace("cost_usd", "cost_usd::float8 AS cost_usd")
                + " FROM rollup_daily_end_user WHERE org_id = {} AND day >= {} AND day < {} AND {}"
            ).format(org, sql.Literal(days[0]), sql.Literal(days[1]), feature_filter)
        )
    if edges:
        ranges = sql.SQL(" OR ").join(
            sql.SQL("(created_at >= {} AND created_at < {})").format(sql.Literal(a), sql.Literal(b)) for a, b in edges
        )
        parts.append(
            sql.SQL(
                "SELECT end_user, feature, " + _RAW_AGGREGATES.replace(
                    "coalesce(sum(cost_usd), 0) AS cost_usd", "coalesce(sum(cost_usd), 0)::float8 AS cost_usd"
                )
                + " FROM events WHERE org_id = {} AND end_user IS NOT NULL AND ({}) AND {} GROUP BY end_user, feature"
            ).format(org, ranges, feature_filter)
        )
    if not parts:
        return ""
    return sql.SQL(" UNION ALL ").join(parts).as_string(None)


def load_end_users(
    source: psycopg.Connection[Any] | str,
    org_id: int,
    start: dt.datetime,
    end: dt.datetime,
    *,
    features: Iterable[str | None] | None = None,
) -> pl.LazyFrame:
    """One row per (end user, feature) over `start <= created_at < end` (exact, see the module doc);
    `features` may hold None for untagged traffic."""
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("start and end must be timezone-aware datetimes")
    query = build_query(org_id, start, end, features)
    if not query:
        return pl.LazyFrame(schema=SCHEMA)
    import adbc_driver_postgresql.dbapi as adbc

    with adbc.connect(_dsn(source)) as conn, conn.cursor() as cur:
        cur.execute(query)
        table = cur.fetch_arrow_table()
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return (
        frame.lazy()
        .select(pl.col(name).cast(dtype) for name, dtype in SCHEMA.items())
        .group_by("end_user", "feature")
        .agg(pl.col(_SUMMED).sum())
    )


def top_end_users(rows: pl.LazyFrame, *, by_feature: bool = False, limit: int | None = 20) -> pl.LazyFrame:
    """End users ranked by cost, then requests: requests, errors, error_rate, tokens, cost_usd,
    share (of the end users' known cost), request_share, unpriced_requests, latency_ms_avg and,
    for the whole org, how many features the user reached. `by_feature` keeps one row per
    (end user, feature), ranked within the feature."""
    keys = ["end_user", "feature"] if by_feature else ["end_user"]

    def total(column: str) -> pl.Expr:
        return pl.col(column).sum().over("feature") if by_feature else pl.col(column).sum()

    aggregates = [pl.col(_SUMMED).sum()]
    if not by_feature:
        aggregates.append(pl.col("feature").n_unique().alias("features"))
    ranked = (
        rows.with_columns(pl.col("feature").fill_null(UNTAGGED))
        .group_by(keys)
        .agg(aggregates)
        .with_columns(
            error_rate=pl.col("errors") / pl.col("requests"),
            latency_ms_avg=pl.when(pl.col("latency_ms_n") > 0).then(pl.col("latency_ms_sum") / pl.col("latency_ms_n")),
            share=pl.col("cost_usd") / total("cost_usd"),
            request_share=pl.col("requests") / total("requests"),
            unpriced_requests=pl.col("unpriced"),
        )
        .sort([*(["feature"] if by_feature else []), "cost_usd", "requests", "end_user"],
              descending=[*([False] if by_feature else []), True, True, False])
    )
    if limit is not None:
        ranked = ranked.group_by("feature", maintain_order=True).head(limit) if by_feature else ranked.head(limit)
    return ranked.drop("latency_ms_sum", "latency_ms_n", "unpriced")


REPORT_FIELDS = (
    "end_user", "requests", "errors", "error_rate", "input_tokens", "output_tokens", "cached_input_tokens",
    "cost_usd", "share", "request_share", "unpriced_requests", "latency_ms_avg", "features",
)


def report(
    conn: psycopg.Connection[Any], org_name: str, days: int = 7, as_json: bool = False, feature: str | None = None
) -> str:
    """`lectr report --by end-user`: the top end users of the last `days` days, by cost."""
    import json

    from analytics.commands import _money, _pct, _plain, _table
    from proxy.store.orgs import OrgError, get_org

    if days < 1:
        raise OrgError("--days must be at least 1")
    org = get_org(conn, org_name)
    now = dt.datetime.now(dt.UTC)
    features = None if feature is None else [None if feature == UNTAGGED else feature]
    rows = top_end_users(load_end_users(conn, org.id, now - dt.timedelta(days=days), now, features=features),
                         limit=None).collect()
    records = rows.select(REPORT_FIELDS).to_dicts()
    if as_json:
        return json.dumps([_plain(r) for r in records], indent=2)
    scope = f", feature {feature!r}" if feature is not None else ""
    if not records:
        return (f"org {org.name!r}{scope}: no requests naming an end user in the last {days} days"
                " (send `X-Lectr-User: <id>`, or `user` in the body)")
    table = _table(
        [[r["end_user"], f"{r['requests']:,}", _money(r["cost_usd"]), _pct(r["share"]), _pct(r["error_rate"]),
          str(r["features"])] for r in records],
        ["end user", "requests", "cost", "share", "errors", "features"],
    )
    return "\n".join([f"org {org.name!r}{scope}, last {days} days, by end user", "", table])
