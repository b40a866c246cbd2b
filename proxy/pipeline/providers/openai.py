"""OpenAI, and the providers that speak its API with its auth (Groq, Gemini): pass-through."""

from __future__ import annotations

from dataclasses import dataclass

from proxy.pipeline.providers.base import Target, join
from proxy.store.orgs import Org


@dataclass(frozen=True, slots=True)
class OpenAICompatible:
    """`Authorization: Bearer` is forwarded as-is; the path is appended to the base URL."""

    name: str

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
        auth = ((b"authorization", headers[b"authorization"]),) if b"authorization" in headers else ()
        return Target(join(base_url, path, query), auth)
