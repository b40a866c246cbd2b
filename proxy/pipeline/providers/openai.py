"""OpenAI, and the providers that speak its API with its auth (Groq, Gemini): pass-through."""

from __future__ import annotations

from dataclasses import dataclass

from proxy.pipeline.providers.base import Call, Target, join


@dataclass(frozen=True, slots=True)
class OpenAICompatible:
    """`Authorization: Bearer` is forwarded as-is; the path is appended to the base URL."""

    name: str

    def target(self, call: Call) -> Target:
        auth = ((b"authorization", call.headers[b"authorization"]),) if b"authorization" in call.headers else ()
        return Target(join(call.base_url, call.path, call.query), auth)
