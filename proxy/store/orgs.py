"""Orgs and their keys: create, rotate, configure Azure. Only a key's hash is ever stored.

Keys are `lc_key_` + 32 URL-safe random characters (192 bits), so a plain SHA-256 is a sound
hash: nobody can brute-force the preimage, and the lookup stays one dictionary access.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

import psycopg

from proxy.core.addresses import EndpointRefused, azure_endpoint

KEY_PREFIX = "lc_key_"
KEY_RANDOM_CHARS = 32


class OrgError(Exception):
    """A CLI/settings operation on orgs that cannot be done (unknown org, bad endpoint)."""


def new_key() -> str:
    # token_urlsafe(24) gives exactly 32 characters of [A-Za-z0-9_-].
    return KEY_PREFIX + secrets.token_urlsafe(24)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()


@dataclass(frozen=True, slots=True)
class Org:
    id: int
    name: str
    azure_endpoint: str | None
    azure_api_version: str
    # Filled by the proxy's directory (proxy/pipeline/directory.py), which checks each stored endpoint once per
    # load: why the stored endpoint fails SPEC §3's rule (stored before the rule, or written by hand),
    # and whether its address must be checked when connecting (False only for hosts the operator
    # listed). The defaults are the safe side for an Org that did not come through that check.
    azure_refused: str | None = None
    azure_guarded: bool = True


def get_org(conn: psycopg.Connection[Any], name: str) -> Org:
    row = conn.execute(
        "SELECT id, name, azure_endpoint, azure_api_version FROM orgs WHERE name = %s", (name,)
    ).fetchone()
    if row is None:
        raise OrgError(f"no org named {name!r}; create it with `lectr org create {name}`")
    return Org(*row)


def _insert_key(conn: psycopg.Connection[Any], org_id: int) -> str:
    key = new_key()
    conn.execute(
        "INSERT INTO org_keys (org_id, key_hash, key_prefix) VALUES (%s, %s, %s)",
        (org_id, hash_key(key), key[: len(KEY_PREFIX) + 4]),
    )
    return key


def create_org(conn: psycopg.Connection[Any], name: str) -> tuple[Org, str]:
    """Create an org with one key; return the org and the key (shown once, never stored)."""
    name = name.strip()
    if not name:
        raise OrgError("an org needs a non-empty name")
    with conn.transaction():
        row = conn.execute(
            "INSERT INTO orgs (name) VALUES (%s) ON CONFLICT (name) DO NOTHING"
            " RETURNING id, name, azure_endpoint, azure_api_version",
            (name,),
        ).fetchone()
        if row is None:
            raise OrgError(f"an org named {name!r} already exists; use `lectr org rotate-key {name}`")
        org = Org(*row)
        return org, _insert_key(conn, org.id)


def ensure_org(conn: psycopg.Connection[Any], name: str) -> tuple[Org, str | None]:
    """Return the org, creating it (and a key, returned) when it does not exist yet."""
    try:
        return get_org(conn, name), None
    except OrgError:
        return create_org(conn, name)


def rotate_key(conn: psycopg.Connection[Any], name: str) -> str:
    """Revoke every key of the org and return a new one."""
    with conn.transaction():
        org = get_org(conn, name)
        conn.execute("UPDATE org_keys SET revoked_at = now() WHERE org_id = %s AND revoked_at IS NULL", (org.id,))
        return _insert_key(conn, org.id)


def set_azure(
    conn: psycopg.Connection[Any],
    name: str,
    endpoint: str,
    api_version: str = "2024-02-01",
    *,
    allowed_hosts: tuple[str, ...] = (),
) -> Org:
    """Configure the org's Azure OpenAI endpoint: `https://<resource>.openai.azure.com`, or a host in
    `allowed_hosts` (the operator's `LECTR_AZURE_ALLOWED_HOSTS`, `Settings.azure_allowed_hosts`).
    Anything else is an `OrgError` saying what is allowed (SPEC §3), without repeating the URL."""
    try:
        endpoint = azure_endpoint(endpoint, allowed_hosts).url
    except EndpointRefused as exc:
        raise OrgError(str(exc)) from None
    if not api_version.strip():
        raise OrgError("the Azure API version must not be empty")
    org = get_org(conn, name)
    conn.execute(
        "UPDATE orgs SET azure_endpoint = %s, azure_api_version = %s WHERE id = %s",
        (endpoint, api_version.strip(), org.id),
    )
    return get_org(conn, name)


def org_for_key(conn: psycopg.Connection[Any], key: str) -> Org | None:
    """The org an active key belongs to (used by the dashboard's sign-in, not the hot path)."""
    row = conn.execute(
        "SELECT o.id, o.name, o.azure_endpoint, o.azure_api_version FROM org_keys k"
        " JOIN orgs o ON o.id = k.org_id WHERE k.key_hash = %s AND k.revoked_at IS NULL",
        (hash_key(key),),
    ).fetchone()
    return Org(*row) if row else None
