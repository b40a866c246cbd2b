"""The request log: keyset pages in SQL, newest first, every filter, task type as a column."""

from __future__ import annotations

import datetime as dt
from typing import Any

import polars as pl
from streamlit.testing.v1 import AppTest

import analytics
from dashboard import request_log
from dashboard.request_log import LogFilters
from tests.dashboard.conftest import SeededOrg, open_page


def _log(pg_url: str, org: SeededOrg, end: dt.datetime, **filters: Any) -> pl.DataFrame:
    """The same rows through `analytics.load_events` (newest first), to compare with the page."""
    return (
        analytics.load_events(pg_url, org.id, end - dt.timedelta(days=7), end, columns=["created_at", "id", "feature",
                              "task", "status_code", "error_type", "provider", "model"], **filters)
        .sort(["created_at", "id"], descending=True)
        .collect()
    )


def test_pages_walk_the_log_newest_first(as_demo: AppTest, pg_url: str, demo_org: SeededOrg, end: dt.datetime) -> None:
    at = open_page(as_demo, "requests", "7d")
    expected = _log(pg_url, demo_org, end)
    first = at.dataframe[0].value
    assert len(first) == request_log.PAGE_SIZE
    assert "task" in first.columns
    assert list(first["request_id"]) == _request_ids(pg_url, demo_org, expected["id"][: request_log.PAGE_SIZE])
    at.button(key="log_older").click().run()
    second = at.dataframe[0].value
    assert not set(first["request_id"]) & set(second["request_id"])
    window = expected["id"][request_log.PAGE_SIZE: 2 * request_log.PAGE_SIZE]
    assert list(second["request_id"]) == _request_ids(pg_url, demo_org, window)
    at.button(key="log_newer").click().run()
    assert list(at.dataframe[0].value["request_id"]) == list(first["request_id"])
    assert any(f"{len(expected):,} matching" in c.value for c in at.caption)


def _request_ids(pg_url: str, org: SeededOrg, ids: pl.Series) -> list[str]:
    from proxy.store.db import connect

    with connect(pg_url) as conn:
        rows = conn.execute("SELECT id::text, request_id FROM events WHERE org_id = %s AND id = ANY(%s::uuid[])",
                            (org.id, ids.to_list())).fetchall()
    by_id = dict(rows)
    return [by_id[i] for i in ids.to_list()]


def test_filters_reach_sql(as_demo: AppTest, pg_url: str, demo_org: SeededOrg, end: dt.datetime) -> None:
    at = open_page(as_demo, "requests", "7d")
    at.multiselect(key="log_features").set_value(["untagged"]).run()
    shown = at.dataframe[0].value
    assert set(shown["feature"]) == {"untagged"}
    at.multiselect(key="log_features").set_value([]).run()
    at.multiselect(key="log_tasks").set_value(["reasoning"]).run()
    assert set(at.dataframe[0].value["task"]) == {"reasoning"}
    at.multiselect(key="log_tasks").set_value([]).run()
    at.selectbox(key="log_status").set_value("error").run()
    failed = at.dataframe[0].value
    expected = _log(pg_url, demo_org, end, status="error")
    assert len(failed) == min(len(expected), request_log.PAGE_SIZE)
    assert all(code >= 400 or err for code, err in zip(failed["status_code"], failed["error_type"], strict=True))
    at.selectbox(key="log_status").set_value(None).run()
    at.multiselect(key="log_providers").set_value(["groq"]).run()
    assert set(at.dataframe[0].value["provider"]) == {"groq"}
    at.multiselect(key="log_models").set_value(["gpt-4o"]).run()  # groq and gpt-4o: nothing
    assert not at.dataframe and any("No requests match" in i.value for i in at.info)


def test_time_filter_narrows_to_days(as_demo: AppTest, end: dt.datetime) -> None:
    at = open_page(as_demo, "requests", "30d")
    day = (end - dt.timedelta(days=3)).date()
    at.date_input(key="log_dates_30d").set_value((day, day)).run()
    times = at.dataframe[0].value["created_at"]
    assert all(t.date() == day for t in times)


def test_page_query_binds_every_value(db: Any, demo_org: SeededOrg, end: dt.datetime) -> None:
    filters = LogFilters(end - dt.timedelta(days=7), end, features=("untagged", "planner"), tasks=("none",),
                         status=429)
    cursor = request_log.Cursor(end, "00000000-0000-0000-0000-000000000000")
    query, params = request_log.page_query(demo_org.id, filters, cursor)
    text = query.as_string(db)
    assert "planner" not in text and "429" not in text  # values are parameters, never SQL text
    assert text.count("%s") == len(params)
    assert '"feature" IS NULL' in text and '"task" IS NULL' in text
    assert "ORDER BY events.created_at DESC, events.id DESC LIMIT %s" in text


def test_end_user_filter_and_column(as_demo: AppTest, pg_url: str, demo_org: SeededOrg, end: dt.datetime) -> None:
    at = open_page(as_demo, "requests", "7d")
    assert "end_user" in at.dataframe[0].value.columns
    at.text_input(key="log_end_user").set_value("customer-002").run()
    shown = at.dataframe[0].value
    assert len(shown) > 0 and set(shown["end_user"]) == {"customer-002"}
    with_user = _log(pg_url, demo_org, end).height
    assert any(f"{with_user:,} matching" not in c.value and "matching" in c.value for c in at.caption)
    at.text_input(key="log_end_user").set_value("nobody-at-all").run()
    assert not at.dataframe and any("No requests match" in i.value for i in at.info)
