"""Anthropic, through its OpenAI-compatible endpoint: the key moves to `x-api-key`."""

from __future__ import annotations

from dataclasses import dataclass

from proxy.orgs import Org
from proxy.providers.base import Target, bearer_token, join

# The API version Anthropic requires on every request; clients may send their own.
ANTHROPIC_VERSION = b"2023-06-01"


@dataclass(frozen=True, slots=True)
class Anthropic:
    name: str = "anthropic"

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
        auth: list[tuple[bytes, bytes]] = []
        token = bearer_token(bearer)
        if token:
            auth.append((b"x-api-key", token))
        elif b"x-api-key" in headers:
            auth.append((b"x-api-key", headers[b"x-api-key"]))
        auth.append((b"anthropic-version", headers.get(b"anthropic-version", ANTHROPIC_VERSION)))
        return Target(join(base_url, path, query), tuple(auth))
