"""Reference ASGI apps for the "floor" scenario: what the stack costs before Lectr adds anything.

- `floor_apps:static` — Hypercorn's trio worker answering the canned chat JSON itself (no upstream).
- `floor_apps:relay`  — the same plus one httpx.AsyncClient round trip to the upstream, relayed
  whole: the least a Hypercorn + httpx proxy can do per request.
- `floor_apps:relay_h11` — the same relay over h11 and trio streams with a LIFO list of idle
  connections: what the upstream leg costs without httpx/httpcore's pool bookkeeping.

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


# -- relay_h11: the same relay over a minimal pool (h11 + trio streams, LIFO idle list) -----------

_idle: list[tuple[Any, Any]] = []


async def relay_h11(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """What a lean upstream transport costs: no per-request pool scan, no select() per idle socket."""
    import h11
    import trio

    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    body = await _read(receive)
    url = httpx.URL(os.environ["FLOOR_UPSTREAM"])
    if _idle:
        stream, conn = _idle.pop()
    else:
        stream = await trio.open_tcp_stream(url.host, url.port or 80)
        conn = h11.Connection(h11.CLIENT)
    headers = [(k, v) for k, v in scope["headers"] if k not in (b"host", b"content-length")]
    headers += [(b"host", url.netloc), (b"content-length", str(len(body)).encode())]
    await stream.send_all(
        conn.send(h11.Request(method="POST", target=url.raw_path, headers=headers))
        + conn.send(h11.Data(data=body))
        + conn.send(h11.EndOfMessage())
    )
    parts: list[bytes] = []
    response = None
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await stream.receive_some(65536))
        elif isinstance(event, h11.Response):
            response = event
        elif isinstance(event, h11.Data):
            parts.append(bytes(event.data))
        elif isinstance(event, h11.EndOfMessage):
            break
    assert response is not None
    conn.start_next_cycle()
    _idle.append((stream, conn))
    out = [(k, v) for k, v in response.headers if k not in (b"connection", b"transfer-encoding")]
    await send({"type": "http.response.start", "status": response.status_code, "headers": out})
    await send({"type": "http.response.body", "body": b"".join(parts)})
