"""What every adapter provides: the upstream URL and the provider's auth header."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from proxy.store.orgs import Org


@dataclass(frozen=True, slots=True)
class Target:
    """Where a request goes, and the header that carries the provider key."""

    url: str
    # (name, value) headers to add; the client's Authorization is removed when this is not it.
    auth: tuple[tuple[bytes, bytes], ...]


class Adapter(Protocol):
    @property
    def name(self) -> str: ...

    def target(
        self,
        base_url: str,
        path: str,
        query: bytes,
        model: str | None,
        org: Org,
        bearer: bytes | None,
        headers: dict[bytes, bytes],
    ) -> Target:
        """`path` is what follows `/v1/` (e.g. `chat/completions`); `bearer` the raw Authorization value."""
        ...


def join(base_url: str, path: str, query: bytes) -> str:
    url = f"{base_url}/{path}"
    return f"{url}?{query.decode('latin-1')}" if query else url


def bearer_token(authorization: bytes | None) -> bytes | None:
    """The token of `Authorization: Bearer <token>` (or the raw value when it has no scheme)."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(b" ")
    return token.strip() if token and scheme.lower() == b"bearer" else authorization.strip()
