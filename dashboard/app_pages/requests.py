"""Requests: the log, newest first, filtered by time, feature, task, model, provider, status and end user.

Pages come from Postgres one at a time (`dashboard.request_log`, keyset pagination), so the log
of an org with millions of requests opens as fast as an empty one.
"""

from __future__ import annotations

import datetime as dt

import polars as pl
import streamlit as st

from analytics import UNTAGGED
from dashboard import data, request_log
from dashboard import format as fmt
from dashboard.auth import require_org
from dashboard.components import empty_period, header, period, reach_note, table
from dashboard.db import database
from dashboard.request_log import Cursor, LogFilters, StatusFilter

CURSORS = "log_cursors"  # the stack of page starts: [] on the first page
SIGNATURE = "log_filters"  # the filters the stack belongs to; new filters start at page 1

org = require_org()
end = header("Requests")
chosen = period()
start = data.period_start(chosen, end)
options = data.filter_options(org.id, chosen, end)

if not options.providers:
    empty_period(data.has_traffic(org.id))
    st.stop()

dates_col, status_col = st.columns([2, 1])
dates = dates_col.date_input(
    "Dates (UTC)", value=(start.date(), end.date()), min_value=start.date(), max_value=end.date(),
    key=f"log_dates_{chosen}", help="Within the period chosen in the sidebar.",
)
statuses: list[StatusFilter] = [None, "ok", "error", *options.statuses]
status = status_col.selectbox(
    "Status", statuses, format_func=lambda s: {None: "Any", "ok": "Successful", "error": "Failed"}.get(s, str(s)),
    key="log_status",
)
feature_col, task_col, provider_col, model_col = st.columns(4)
features = feature_col.multiselect("Feature", options.features, placeholder="Any", key="log_features")
tasks = task_col.multiselect("Task", options.tasks, placeholder="Any", key="log_tasks")
providers = provider_col.multiselect("Provider", options.providers, placeholder="Any", key="log_providers")
models = model_col.multiselect("Model", options.models, placeholder="Any", key="log_models")


def _day_start(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time.min, dt.UTC)


picked = tuple(dates) if isinstance(dates, tuple | list) else (dates,)
since = max(start, _day_start(picked[0])) if picked and picked[0] else start
until = min(end, _day_start(picked[-1]) + dt.timedelta(days=1)) if picked and picked[-1] else end
end_user = st.text_input(
    "End user", key="log_end_user", placeholder="Any",
    help="One end user, exactly as sent in `X-Lectr-User` (or the body's `user` / `metadata.user_id`).",
).strip()
filters = LogFilters(since, until, tuple(features), tuple(tasks), tuple(providers), tuple(models), status,
                     end_user or None)

if st.session_state.get(SIGNATURE) != filters:
    st.session_state[SIGNATURE] = filters
    st.session_state[CURSORS] = []
cursors: list[Cursor | None] = st.session_state[CURSORS]

with database().read() as conn:
    page = request_log.fetch_page(conn, org.id, filters, cursors[-1] if cursors else None)
    matching = request_log.count(conn, org.id, filters)

shown = f"{request_log.COUNT_CAP:,}+" if matching > request_log.COUNT_CAP else f"{matching:,}"
first = len(cursors) * request_log.PAGE_SIZE + 1
st.caption(f"{shown} matching requests · showing {first:,}–{first + len(page.rows) - 1:,}, newest first")
reach_note(data.reach(org.id), start, log=True)

if page.rows:
    rows = pl.DataFrame(page.rows, schema_overrides={"cost_usd": pl.Float64}, infer_schema_length=None)
    rows = rows.with_columns(pl.col("feature").fill_null(UNTAGGED), pl.col("task").fill_null(request_log.NO_TASK))
    table(
        rows,
        {"created_at": "Time", "feature": "Feature", "task": "Task", "provider": "Provider", "model": "Model",
         "status_code": "Status", "cost_usd": "Cost", "latency_ms": "Latency", "ttft_ms": "TTFT",
         "input_tokens": "Input tokens", "output_tokens": "Output tokens", "error_type": "Error",
         "stream": "Stream", "end_user": "End user", "request_id": "Request id"},
        {"created_at": fmt.timestamp, "latency_ms": fmt.duration, "ttft_ms": fmt.duration,
         "input_tokens": fmt.tokens, "output_tokens": fmt.tokens, "cost_usd": fmt.money},
    )
else:
    st.info("No requests match these filters. Clear a filter or pick a longer period in the sidebar.")


def _older() -> None:
    st.session_state[CURSORS] = [*cursors, page.next_cursor]


def _newer() -> None:
    st.session_state[CURSORS] = cursors[:-1]


back, forward, _ = st.columns([1, 1, 6])
back.button("← Newer", on_click=_newer, disabled=not cursors, key="log_newer")
forward.button("Older →", on_click=_older, disabled=page.next_cursor is None, key="log_older")
