"""Dashboard fixtures: the demo org and a rival org in the session's test database, and AppTest
runs signed in as either.

The app reads `DATABASE_URL` through `Settings.from_env()` on first use, so each test sets it
(monkeypatch) and clears Streamlit's caches: AppTest runs the script in this process, where
`st.cache_resource` would otherwise keep a previous test's connection and frames.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from analytics import demo
from dashboard import components
from dashboard.data import window_end
from proxy.store.db import connect
from proxy.store.orgs import create_org
from tests.rollups_sql import refill

ENTRY = Path(__file__).resolve().parents[2] / "dashboard" / "streamlit_app.py"
PAGES = ("overview", "features", "providers", "end_users", "requests", "recommendations", "anomalies", "settings")
# Features only the rival org sends: none of these may ever appear while signed in as demo.
RIVAL_FEATURES = ("rival-secret-ledger", "rival-payroll-bot")
RIVAL_MODEL = "gpt-4.1"


@dataclass(frozen=True, slots=True)
class SeededOrg:
    id: int
    name: str
    key: str


@pytest.fixture(scope="session")
def demo_org(pg_url: str) -> SeededOrg:
    """The org `demo`, filled by `lectr demo`'s generator (30 days, a light weekday volume)."""
    with connect(pg_url) as conn:
        key = demo.generate(conn, days=30, per_day=600)
        org_id = conn.execute("SELECT id FROM orgs WHERE name = %s", (demo.ORG,)).fetchone()[0]  # type: ignore[index]
        refill(conn, int(org_id))  # idempotent: the rollups its events make
    return SeededOrg(int(org_id), demo.ORG, key)


def insert_events(conn: Any, org_id: int, rows: list[dict[str, Any]]) -> None:
    """Minimal events for a named org (columns left out take their defaults or null)."""
    for row in rows:
        values = {"id": uuid.uuid4(), "org_id": org_id, "endpoint": "chat/completions", **row}
        columns = ", ".join(values)
        placeholders = ", ".join(["%s"] * len(values))
        conn.execute(f"INSERT INTO events ({columns}) VALUES ({placeholders})", list(values.values()))  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def rival_org(pg_url: str) -> SeededOrg:
    """A second org whose feature and model names are its own, with traffic in the last day."""
    now = dt.datetime.now(dt.UTC)
    with connect(pg_url) as conn:
        org, key = create_org(conn, f"rival-{uuid.uuid4().hex[:8]}")
        rows = [
            {"created_at": now - dt.timedelta(minutes=5 + i * 7), "provider": "openai", "model": RIVAL_MODEL,
             "feature": RIVAL_FEATURES[i % 2], "task": "classification", "status_code": 200 if i % 5 else 500,
             "latency_ms": 400.0 + i, "upstream_ms": 390.0, "input_tokens": 900, "output_tokens": 4,
             "cost_usd": 0.0125, "message_count": 1, "end_user": f"rival-customer-{i % 3}"}
            for i in range(60)
        ]
        insert_events(conn, org.id, rows)
        refill(conn, org.id)
    return SeededOrg(org.id, org.name, key)


@pytest.fixture
def end() -> dt.datetime:
    """The window end every page of a test uses (the app's clock, fixed for the test)."""
    return window_end()


@pytest.fixture
def app_env(pg_url: str, end: dt.datetime, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The app pointed at the test database, its clock fixed at `end`, its caches empty."""
    monkeypatch.setenv("DATABASE_URL", pg_url)
    monkeypatch.setattr(components, "window_end", lambda now=None: end)
    monkeypatch.setenv("LECTR_PROXY_URL", "http://proxy.test:8080/v1")
    st.cache_data.clear()
    st.cache_resource.clear()
    yield
    st.cache_data.clear()
    st.cache_resource.clear()


def sign_in(key: str, timeout: float = 60) -> AppTest:
    """A fresh app, signed in through the sign-in form (as a person would)."""
    at = AppTest.from_file(str(ENTRY), default_timeout=timeout).run()
    assert not at.exception, at.exception
    at.text_input[0].input(key)
    at.button[0].click()
    at.run()
    assert not at.exception, at.exception
    return at


def open_page(at: AppTest, page: str, period: str | None = None) -> AppTest:
    if period is not None:
        at.session_state["period"] = period
    at.switch_page(f"app_pages/{page}.py").run()
    assert not at.exception, at.exception
    return at


def page_text(at: AppTest) -> str:
    """Everything the app sent for this run, as text: element protos include table and chart data."""
    parts: list[str] = []

    def walk(node: Any) -> None:
        proto = getattr(node, "proto", None)
        if proto is not None:
            parts.append(str(proto))
        children = getattr(node, "children", None)
        if isinstance(children, dict):
            for child in children.values():
                walk(child)

    walk(at._tree)
    return "\n".join(parts)


@pytest.fixture
def as_demo(app_env: None, demo_org: SeededOrg, rival_org: SeededOrg) -> AppTest:
    return sign_in(demo_org.key)
