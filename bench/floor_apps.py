"""Reference ASGI apps for the "floor" scenario: what the stack costs before Lectr adds anything.

- `floor_apps:static` — Hypercorn's trio worker answering the canned chat JSON itself (no upstream).
- `floor_apps:relay`  — the same plus one httpx.AsyncClient round trip to the upstream, relayed
  whole: the least a Hypercorn + httpx proxy can do per request.

`FLOOR_UPSTREAM` (environment) is the upstream URL the relay posts to.
"""

from __future__ import annotations

import os
from typing import Any

import httpx

_BODY = b'{"id":"chatcmpl-floor","object":"chat.completion","choices":[],"usage":{"prompt_tokens":1}}'
_HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(_BODY)).encode())]


async def _read(receive: Any) -> bytes:
    parts = []
    while True:
        message = await receive()
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(parts)


async def _lifespan(receive: Any, send: Any, startup: Any = None) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            if startup is not None:
                startup()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def static(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    await _read(receive)
    await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": _BODY})


_client: httpx.AsyncClient | None = None


def _start_client() -> None:
    global _client
    _client = httpx.AsyncClient(limits=httpx.Limits(max_connections=None, max_keepalive_connections=1000))


async def relay(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send, _start_client)
        return
    assert _client is not None
    body = await _read(receive)
    headers = [(k, v) for k, v in scope["headers"] if k not in (b"host", b"content-length")]
    request = _client.build_request("POST", os.environ["FLOOR_UPSTREAM"], headers=headers, content=body)
    response = await _client.send(request, stream=True)
    try:
        data = b"".join([chunk async for chunk in response.aiter_raw()])
    finally:
        await response.aclose()
    out = [(k.lower(), v) for k, v in response.headers.raw if k.lower() not in (b"connection", b"transfer-encoding")]
    await send({"type": "http.response.start", "status": response.status_code, "headers": out})
    await send({"type": "http.response.body", "body": data})
