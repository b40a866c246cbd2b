"""The conformance table (`tests/security/http_cases.py`, restated from llhttp's request and response
corpora) run through our own HTTP/1.1 code over real sockets.

Requests go to `proxy.http.server.serve_connection`, hosted in-process the way Hypercorn's trio worker
hosts it, in front of an app that records every request it receives whole (method, target,
version, headers, body) and answers 200 with no body. The client sends the case's bytes, half-closes
and reads until the server closes. An accepted case must reach the app framed exactly as the table
says, each message answered 200 (or, for the few cases marked `or_refuse`, be refused outright).
A refused one must not reach the app beyond the messages the table lists before it: the server
answers with an error of its own (4xx/5xx; the table's status, as our JSON error, where SPEC §3
fixes one) or closes.

Responses come from a raw trio TCP server that answers `GET /case` with the case's bytes (then
closes, or not, as the case says) and any other request with a clean `probe` answer. They are read
through `LectrTransport.open`. An accepted case must give the table's status, reason, headers and
exact body bytes; a refused one must raise an httpx error (not a timeout). Either way a probe
request follows, and must get the probe answer: a connection with anything left after the answer
(or after an error) must never be reused, and a clean keep-alive answer must be (where the table
says so).
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import httpx
import pytest
import trio

from proxy.http.transport import LectrTransport, Outbound, Timeouts, destination
from tests.security.http_cases import REQUEST_CASES, RESPONSE_CASES, Message, RequestCase, ResponseCase
from tests.serving import serving

TIMEOUTS = Timeouts(connect=5.0, read=3.0, write=5.0)
PROBE_ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Probe: yes\r\n\r\nprobe"


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


# -- requests through serve_connection ---------------------------------------------------------------


@dataclass
class Seen:
    """What the app behind the server received."""

    heads: int = 0  # requests whose head reached the app (their body may never have completed)
    messages: list[Message] = field(default_factory=list)  # requests received whole


def recording_app(seen: Seen) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        seen.heads += 1
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        query = scope["query_string"]
        target = scope["raw_path"] + (b"?" + query if query else b"")
        headers = tuple((bytes(name), bytes(value)) for name, value in scope["headers"])
        seen.messages.append(Message(scope["method"].encode("latin-1"), target, scope["http_version"], headers, body))
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})

    return app





@dataclass
class Answer:
    status: int | None  # None: bytes that are not an HTTP/1.1 response
    headers: dict[bytes, bytes]
    body: bytes


def answers(data: bytes) -> list[Answer]:
    """Split the server's output into responses (content-length, chunked or close-delimited)."""
    out: list[Answer] = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        if not sep or not lines[0].startswith(b"HTTP/1.1 ") or len(parts) < 2 or not parts[1].isdigit():
            out.append(Answer(None, {}, data))
            break
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        if b"content-length" in headers:
            size = int(headers[b"content-length"])
            body, data = rest[:size], rest[size:]
        elif headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            body = b""
            while rest:
                size_line, _, rest = rest.partition(b"\r\n")
                size = int(size_line.split(b";")[0] or b"0", 16)
                if size == 0:
                    rest = rest.partition(b"\r\n")[2]
                    break
                body, rest = body + rest[:size], rest[size + 2 :]
            data = rest
        else:
            body, data = rest, b""
        out.append(Answer(int(parts[1]), headers, body))
    return out


async def exchange(raw: bytes) -> tuple[Seen, list[Answer], bytes]:
    """Send `raw` to a fresh server, half-close, and read until the server closes."""
    seen = Seen()
    received = b""
    async with serving(recording_app(seen), keep_alive_timeout=2.0) as (port, _):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        try:
            with trio.fail_after(10):
                try:
                    await stream.send_all(raw)
                    await stream.send_eof()
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass  # the server answered and closed before reading it all
                try:
                    while chunk := await stream.receive_some(65536):
                        received += chunk
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass  # a reset after the answer
        finally:
            await stream.aclose()
    return seen, answers(received), received


def _show(messages: list[Message] | tuple[Message, ...]) -> str:
    return "\n".join(f"  {m!r}" for m in messages) or "  (none)"


def assert_json_error(answer: Answer) -> None:
    """The server's own error: `application/json` and `{"error": {"message", "type", "code"}}`."""
    assert answer.headers.get(b"content-type") == b"application/json", answer
    payload = json.loads(answer.body)
    error = payload.get("error") if isinstance(payload, dict) else None
    assert isinstance(error, dict), payload
    assert isinstance(error.get("message"), str) and error["message"], error
    assert isinstance(error.get("type"), str) and isinstance(error.get("code"), str), error


@pytest.mark.parametrize("case", REQUEST_CASES, ids=[slug(case.name) for case in REQUEST_CASES])
async def test_request_case(case: RequestCase) -> None:
    seen, got, raw = await exchange(case.raw)
    context = f"{case.source}\ninput: {case.raw!r}\nserver sent: {raw[:600]!r}"
    if case.or_refuse and not seen.messages and got and all((a.status or 0) >= 400 for a in got):
        return  # refused outright: stricter than the table, which our policy allows here
    expected = list(case.messages)
    assert seen.messages == expected, (
        f"the app must get exactly\n{_show(expected)}\nbut got\n{_show(seen.messages)}\n{context}"
    )
    statuses = [answer.status for answer in got]
    served = statuses[: len(expected)]
    assert served == [200] * len(expected), f"each delivered request is answered by the app: {statuses}\n{context}"
    rest = got[len(expected) :]
    if case.accept:
        assert not rest, f"an accepted input gets no answer of the server's own: {statuses}\n{context}"
        return
    assert all(answer.status is not None and answer.status >= 400 for answer in rest), (
        f"a refusal is a 4xx/5xx or a close, nothing else: {statuses}\n{context}"
    )
    if case.status:
        assert rest, f"must be refused with {case.status} (a JSON error), but the server closed silently\n{context}"
        assert rest[0].status in case.status, f"must be refused with {case.status}, got {rest[0].status}\n{context}"
        assert_json_error(rest[0])


# -- responses through LectrTransport ----------------------------------------------------------------


@dataclass
class Upstream:
    port: int = 0
    connections: int = 0
    requests: list[tuple[int, bytes]] = field(default_factory=list)  # (connection number, target)


@asynccontextmanager
async def upstream(case: ResponseCase) -> AsyncIterator[Upstream]:
    """A raw server: `GET /case` gets the case's bytes, anything else the probe answer."""
    up = Upstream()

    async def per_connection(stream: trio.SocketStream) -> None:
        up.connections += 1
        number = up.connections
        buffer = b""
        try:
            while True:
                while b"\r\n\r\n" not in buffer:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    buffer += data
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                target = head.split(b" ", 2)[1]
                up.requests.append((number, target))
                if target == b"/case":
                    await stream.send_all(case.raw)
                    if case.close:
                        return
                else:
                    await stream.send_all(PROBE_ANSWER)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await trio.aclose_forcefully(stream)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, per_connection, 0, host="127.0.0.1"))
        up.port = listeners[0].socket.getsockname()[1]
        yield up
        nursery.cancel_scope.cancel()


async def fetch(transport: LectrTransport, url: str) -> tuple[int, bytes, list[tuple[bytes, bytes]], bytes]:
    """One GET through the transport, its body read to the end."""
    with trio.fail_after(15):
        reply = await transport.open(Outbound(b"GET", destination(url), [], b""), TIMEOUTS)
        body = b""
        while chunk := await reply.receive():
            body += chunk
    return reply.status_code, reply.reason, [(name.lower(), value) for name, value in reply.headers], body


@pytest.mark.parametrize("case", RESPONSE_CASES, ids=[slug(case.name) for case in RESPONSE_CASES])
async def test_response_case(case: ResponseCase) -> None:
    transport = LectrTransport()
    try:
        async with upstream(case) as up:
            base = f"http://127.0.0.1:{up.port}"
            error: httpx.HTTPError | None = None
            try:
                status, reason, headers, body = await fetch(transport, f"{base}/case")
            except httpx.HTTPError as exc:
                error = exc
            probe = await fetch(transport, f"{base}/probe")
            requests = list(up.requests)
    finally:
        await transport.aclose()
    context = f"{case.source}\nupstream sent: {case.raw[:400]!r}"
    if case.accept:
        assert error is None, f"must be accepted, got {type(error).__name__}: {error}\n{context}"
        assert (status, reason) == (case.status, case.reason), (status, reason, context)
        expected = list(case.headers)
        assert headers == expected, f"headers seen:\n  {headers}\nexpected:\n  {expected}\n{context}"
        assert body == case.body, f"body seen: {body!r}\nexpected: {case.body!r}\n{context}"
    else:
        assert error is not None, f"must be refused, got {status} {headers} {body!r}\n{context}"
        assert not isinstance(error, httpx.TimeoutException), f"refused only by a timeout: {error}\n{context}"
    assert probe[0] == 200 and probe[3] == b"probe", f"the next request got {probe!r}, not its own answer\n{context}"
    assert requests[0][1] == b"/case" and requests[-1][1] == b"/probe", requests
    reused = requests[-1][0] == requests[0][0]
    must_reuse = case.reuse if case.accept else False
    if must_reuse is not None:
        verb = "reused" if must_reuse else "never reused"
        assert reused == must_reuse, f"the connection must be {verb} after this answer\n{context}"
