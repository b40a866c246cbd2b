"""The in-memory directory of orgs by key hash (and their routing), reloaded every few seconds.

The hot path authenticates with one SHA-256 and one dictionary lookup, never a query. Each
worker reloads the whole directory every `refresh_seconds` (2 s by default), so a revoked key
stops working, and routing rules apply, within that time everywhere. A new key, or an Azure
endpoint set a moment ago, works at once: the request that needs it waits for one fresh reload.
When Postgres is unreachable the last good directory stays in use.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from functools import lru_cache
from typing import Any

import psycopg
import trio

from proxy.core.addresses import EndpointRefused, azure_endpoint
from proxy.pipeline.reloaded import Reloaded
from proxy.pipeline.routing import OrgRouting, build
from proxy.store.orgs import Org
from proxy.store.rules import load_all

log = logging.getLogger("lectr.directory")

# An unknown key may trigger a reload at most this often (seconds).
_MISS_RELOAD_SECONDS = 0.25

_LOAD = (
    "SELECT k.key_hash, o.id, o.name, o.azure_endpoint, o.azure_api_version"
    " FROM org_keys k JOIN orgs o ON o.id = k.org_id WHERE k.revoked_at IS NULL"
)


@lru_cache(maxsize=4096)
def _check_endpoint(endpoint: str, allowed_hosts: tuple[str, ...]) -> tuple[str, str | None, bool]:
    """(the endpoint to use, why it is refused or None, whether to guard its address). Cached: an org
    has one key or a few, each a row of every reload, and endpoints rarely change."""
    try:
        checked = azure_endpoint(endpoint, allowed_hosts)
    except EndpointRefused as exc:
        return endpoint, exc.reason, True
    return checked.url, None, not checked.operator_approved


class Directory(Reloaded):
    def __init__(
        self, database_url: str, refresh_seconds: float = 2.0, azure_allowed_hosts: tuple[str, ...] = ()
    ) -> None:
        super().__init__(database_url, refresh_seconds)
        self._azure_allowed_hosts = azure_allowed_hosts
        self._by_hash: dict[str, tuple[str, Org]] = {}
        self._routing: dict[int, OrgRouting] = {}
        self._names: dict[int, str] = {}
        self._reloading: trio.Event | None = None
        self._last_reload = float("-inf")

    def authenticate(self, key: bytes | None) -> Org | None:
        """The org of an active key, or None. Constant-time on the final comparison."""
        if not key:
            return None
        # The lookup is by the SHA-256 of the presented key, so its timing depends on a hash the
        # caller cannot steer, not on the secret; the final check is constant-time regardless.
        digest = hashlib.sha256(key).hexdigest()
        entry = self._by_hash.get(digest)
        if entry is None or not hmac.compare_digest(entry[0], digest):
            return None
        return entry[1]

    async def authenticate_fresh(self, key: bytes | None) -> Org | None:
        """`authenticate`, but an unknown key is looked up again in a directory loaded after the
        request arrived, so a key made a moment ago works at once. Reloads are shared by concurrent
        callers and at most one per `_MISS_RELOAD_SECONDS` starts, so a flood of bad keys costs a
        few queries a second. Known keys never wait.
        """
        org = self.authenticate(key)
        if org is not None or not key:
            return org
        return await self.authenticate_reloaded(key)

    async def authenticate_reloaded(self, key: bytes) -> Org | None:
        """`authenticate` in a directory loaded after this call, for a request the directory in
        hand cannot serve (an unknown key, an org whose Azure endpoint was set a moment ago).
        Reloads are shared by concurrent callers and at most one per `_MISS_RELOAD_SECONDS` starts.
        """
        asked_at = trio.current_time()
        while self._last_reload < asked_at or self._reloading is not None:
            if self._reloading is not None:
                await self._reloading.wait()
                continue
            await trio.sleep_until(self._last_reload + _MISS_RELOAD_SECONDS)
            if self._reloading is None and self._last_reload < asked_at:
                await self.refresh()
        return self.authenticate(key)

    def org_name(self, org_id: int) -> str | None:
        """The name of an org that has an active key (telemetry labels spans with it)."""
        return self._names.get(org_id)

    def routing(self, org_id: int) -> OrgRouting | None:
        """The org's routing rules and fallbacks, or None when it has neither."""
        return self._routing.get(org_id)

    def _read(self, conn: psycopg.Connection[Any]) -> tuple[dict[str, tuple[str, Org]], dict[int, OrgRouting]]:
        rows = conn.execute(_LOAD).fetchall()
        keys = {row[0]: (row[0], self._org(row[1], row[2], row[3], row[4])) for row in rows}
        rules, fallbacks = load_all(conn)
        by_org: dict[int, list[tuple[Any, ...]]] = {}
        for rule in rules:
            by_org.setdefault(rule[0], []).append(tuple(rule[1:]))
        routing = {
            org_id: build(by_org.get(org_id, []), fallbacks.get(org_id)) for org_id in set(by_org) | set(fallbacks)
        }
        return keys, routing

    def _org(self, org_id: int, name: str, endpoint: str | None, api_version: str) -> Org:
        """The org with its stored Azure endpoint checked against SPEC §3's rule again: one stored
        before the rule existed, or written to the database by hand, must not become an SSRF. Here,
        once per load, so the hot path only reads the result."""
        if endpoint is None:
            return Org(org_id, name, endpoint, api_version)
        url, refused, guarded = _check_endpoint(endpoint, self._azure_allowed_hosts)
        return Org(org_id, name, url, api_version, azure_refused=refused, azure_guarded=guarded)

    async def refresh(self) -> None:
        if self._reloading is not None:
            await self._reloading.wait()
            return
        self._reloading = trio.Event()
        self._last_reload = trio.current_time()
        try:
            self._by_hash, self._routing = await self._load(self._read)
            self._names = {org.id: org.name for _, org in self._by_hash.values()}
            self.loaded = True
            self.last_error = None
        except (psycopg.Error, OSError):
            log.warning("could not reload keys (%s); keeping the last %d", self.last_error, len(self._by_hash))
        finally:
            self._reloading.set()
            self._reloading = None
