"""What every adapter provides: the upstream URL and the provider's auth header."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Protocol

from proxy.store.orgs import Org


@dataclass(frozen=True, slots=True)
class Target:
    """Where a request goes, and the header that carries the provider key."""

    url: str
    # (name, value) headers to add; the client's Authorization is removed when this is not it.
    auth: tuple[tuple[bytes, bytes], ...]


class Call(NamedTuple):
    """What an adapter is told of one attempt."""

    base_url: str  # the operator's `LECTR_<PROVIDER>_BASE_URL` (Azure: unused, the org's endpoint)
    path: str  # what follows `/v1/`, e.g. `chat/completions`
    query: bytes  # the client's query string, as sent
    model: str | None  # the model this attempt asks for (routing may have changed it)
    org: Org
    bearer: bytes | None  # the raw Authorization value this attempt carries (its provider's key)
    headers: dict[bytes, bytes]  # the client's auth and version headers (`Incoming.special`)


class Adapter(Protocol):
    @property
    def name(self) -> str: ...

    def target(self, call: Call) -> Target: ...


def join(base_url: str, path: str, query: bytes) -> str:
    url = f"{base_url}/{path}"
    return f"{url}?{query.decode('latin-1')}" if query else url


def bearer_token(authorization: bytes | None) -> bytes | None:
    """The token of `Authorization: Bearer <token>` (or the raw value when it has no scheme)."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(b" ")
    return token.strip() if token and scheme.lower() == b"bearer" else authorization.strip()
