from __future__ import annotations

from typing import Any

import psycopg
import pytest

from proxy.store.db import migrate
from proxy.store.orgs import KEY_PREFIX, OrgError, hash_key, rotate_key, set_azure


def test_migrate_is_idempotent(db: psycopg.Connection[Any]) -> None:
    assert migrate(db) == []
    versions = [row[0] for row in db.execute("SELECT version FROM schema_migrations ORDER BY 1")]
    assert versions[0] == 1


def test_org_key_only_hash_stored(db: psycopg.Connection[Any], new_org: Any) -> None:
    org, key = new_org()
    assert key.startswith(KEY_PREFIX) and len(key) == len(KEY_PREFIX) + 32
    rows = db.execute("SELECT key_hash, key_prefix FROM org_keys WHERE org_id = %s", (org.id,)).fetchall()
    assert rows == [(hash_key(key), key[:11])]
    dump = str(db.execute("SELECT * FROM org_keys").fetchall())
    assert key not in dump


def test_rotate_revokes_old_keys(db: psycopg.Connection[Any], new_org: Any) -> None:
    org, key = new_org()
    new = rotate_key(db, org.name)
    active = db.execute("SELECT key_hash FROM org_keys WHERE org_id = %s AND revoked_at IS NULL", (org.id,)).fetchall()
    assert active == [(hash_key(new),)] and new != key


def test_azure_endpoint_validation(db: psycopg.Connection[Any], new_org: Any) -> None:
    org, _ = new_org()
    with pytest.raises(OrgError):
        set_azure(db, org.name, "not a url")
    updated = set_azure(db, org.name, "https://res.openai.azure.com/", "2024-06-01")
    assert (updated.azure_endpoint, updated.azure_api_version) == ("https://res.openai.azure.com", "2024-06-01")
