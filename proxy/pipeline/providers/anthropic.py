"""Anthropic: its native Messages API (`/v1/messages`, `messages/count_tokens`, models, batches)
and its OpenAI-compatible `chat/completions`, both under the same base URL.

The key goes upstream as `x-api-key`: a client's `Authorization: Bearer` (the OpenAI SDKs, and the
`anthropic` SDK from 2.x on) is rewritten to it; a client's own `x-api-key` (curl, earlier SDKs)
is passed through. `anthropic-version` is the client's when it sent one, else ours; the client's
`anthropic-beta` and other headers go through untouched with the rest.
"""

from __future__ import annotations

from dataclasses import dataclass

from proxy.pipeline.providers.base import Call, Target, bearer_token, join

# The API version Anthropic requires on every request; clients may send their own.
ANTHROPIC_VERSION = b"2023-06-01"


@dataclass(frozen=True, slots=True)
class Anthropic:
    name: str = "anthropic"

    def target(self, call: Call) -> Target:
        auth: list[tuple[bytes, bytes]] = []
        token = bearer_token(call.bearer)
        if token:
            auth.append((b"x-api-key", token))
        elif b"x-api-key" in call.headers:
            auth.append((b"x-api-key", call.headers[b"x-api-key"]))
        auth.append((b"anthropic-version", call.headers.get(b"anthropic-version", ANTHROPIC_VERSION)))
        return Target(join(call.base_url, call.path, call.query), tuple(auth))
