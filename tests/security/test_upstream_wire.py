"""The upstream (client) side of the proxy's HTTP/1.1 against hostile or broken providers, over real
sockets (plain TCP, and TLS with a throwaway `trustme` CA): issue 14's points on `proxy/http/transport.py`
and the whole-answer path of `proxy/pipeline/relay.py`.

- a pooled connection is reused only when nothing is left after the answer: not in the socket, not
  in the parser, not in the TLS layer (a second TLS record after the answer);
- a complete answer followed by stray bytes is relayed, and its connection closed;
- upstream trailers never become headers, and head plus trailers are bounded;
- a request sent in full is never sent again on its own (POST), idempotent ones may be;
- relayed request headers are still scanned for CR, LF and NUL (`checked=True`);
- whole answers are buffered up to `max_response_bytes`, bigger ones relayed intact chunk by chunk,
  and a gzip bomb is inflated for usage only up to that size, without stalling the event loop.
"""

from __future__ import annotations

import datetime as dt
import functools
import gzip
import json
import socket
import ssl
import struct
import threading
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import httpx
import psutil
import pytest
import trio
import trustme

from proxy.accounting.record import Event
from proxy.core.config import Settings
from proxy.http.transport import MAX_HEAD_BYTES, LectrTransport, Reply, Timeouts, destination
from proxy.pipeline.body import RequestInfo
from proxy.pipeline.relay import Client, Relay
from proxy.pipeline.relay import Upstream as RelayUpstream  # `Upstream` here is the fake server
from proxy.pipeline.upstream import Outbound

TIMEOUTS = Timeouts(10, 10, 10)
# What the next tenant's request would read as its answer if the connection were reused.
LEAK = b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 20\r\n\r\n{"tenant":"another"}'


def answer(body: bytes, *extra: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n%b\r\n%b" % (len(body), b"".join(extra), body)


# -- a raw upstream: TCP or TLS, each answer written as the test says ----------------------------------


class Cork(trio.abc.Stream):
    """A TCP stream that can hold writes and send them in one: the TLS records written while corked
    leave in one TCP write, so the client reads them in one go (the second stays in its TLS layer)."""

    def __init__(self, inner: trio.SocketStream) -> None:
        self.inner = inner
        self.held: bytearray | None = None

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self.held is not None:
            self.held += data
            await trio.lowlevel.checkpoint()
            return
        await self.inner.send_all(data)

    async def flush(self) -> None:
        held, self.held = self.held, None
        if held:
            await self.inner.send_all(bytes(held))

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.inner.aclose()


class Peer:
    """One connection as the upstream sees it: requests in, answers out."""

    def __init__(self, upstream: Upstream, stream: trio.abc.Stream, cork: Cork) -> None:
        self.upstream = upstream
        self.stream = stream
        self.cork = cork
        self.buffer = b""

    async def request(self) -> tuple[bytes, bytes, bytes] | None:
        """(method, target, body) of the next request, read in full; None when the client closed."""
        while b"\r\n\r\n" not in self.buffer:
            data = await self.stream.receive_some(65536)
            if not data:
                return None
            self.buffer += data
        head, _, rest = self.buffer.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        method, target, _ = lines[0].split(b" ", 2)
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(rest) < length:
            data = await self.stream.receive_some(65536)
            if not data:
                return None
            rest += data
        body, self.buffer = rest[:length], rest[length:]
        self.upstream.requests.append((method, target, body))
        return method, target, body

    async def send(self, *records: bytes) -> None:
        """Each part in its own TLS record (its own write to the TLS layer), all in one TCP write."""
        self.cork.held = bytearray()
        for record in records:
            await self.stream.send_all(record)
        await self.cork.flush()

    def reset(self) -> None:
        """Close with a TCP reset instead of a FIN."""
        self.cork.inner.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


Handler = Callable[["Upstream", Peer, int], Awaitable[None]]


class Upstream:
    def __init__(self, tls: bool) -> None:
        self.tls = tls
        self.port = 0
        self.connections = 0
        self.requests: list[tuple[bytes, bytes, bytes]] = []

    def url(self, path: str = "/v1/chat/completions") -> str:
        return f"{'https' if self.tls else 'http'}://{'localhost' if self.tls else '127.0.0.1'}:{self.port}{path}"

    def sent(self, method: bytes, body: bytes) -> int:
        return sum(1 for m, _, b in self.requests if m == method and b == body)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


@asynccontextmanager
async def upstream(handler: Handler, ca: trustme.CA | None = None) -> AsyncIterator[Upstream]:
    """A raw upstream on 127.0.0.1 (TLS for `localhost` with a certificate from `ca`, if given)."""
    server = Upstream(tls=ca is not None)
    server_ctx: ssl.SSLContext | None = None
    if ca is not None:
        server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("localhost").configure_cert(server_ctx)

    async def per_connection(tcp: trio.SocketStream) -> None:
        server.connections += 1
        cork = Cork(tcp)
        stream: trio.abc.Stream = cork
        if server_ctx is not None:
            stream = trio.SSLStream(cork, server_ctx, server_side=True, https_compatible=True)
        try:
            await handler(server, Peer(server, stream, cork), server.connections)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            tcp.socket.close()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, per_connection, 0, host="127.0.0.1"))
        server.port = listeners[0].socket.getsockname()[1]
        yield server
        nursery.cancel_scope.cancel()


def transport_for(server: Upstream, ca: trustme.CA | None) -> LectrTransport:
    return LectrTransport(ssl_context=client_context(ca) if ca is not None else None)


async def fetch(
    transport: LectrTransport, method: bytes, url: str, body: bytes = b"", headers: Any = ()
) -> tuple[Reply, bytes]:
    reply = await transport.open(Outbound(method, destination(url), list(headers), body), TIMEOUTS)
    received = b"".join([chunk async for chunk in reply.aiter_raw()])
    return reply, received


def tls_params() -> Any:
    return pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])


# -- 1. nothing left after the answer, anywhere, or the connection is not reused -----------------------

# The first answer (to METHOD /path), then what the misbehaving upstream sends after it, in a second
# TLS record (over TCP: in the same write).
LEFTOVERS = {
    "body-longer-than-content-length": (b"GET", "/v1/models", answer(b"hello"), b", and the rest of a longer body"),
    "body-on-head": (b"HEAD", "/v1/models", b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(LEAK), LEAK),
    "body-on-204": (b"DELETE", "/v1/files/x", b"HTTP/1.1 204 No Content\r\n\r\n", LEAK),
    "body-on-304": (
        b"GET",
        "/v1/models",
        b'HTTP/1.1 304 Not Modified\r\netag: "a"\r\ncontent-length: 21\r\n\r\n',
        LEAK,
    ),
    "second-response": (b"GET", "/v1/models", answer(b"first"), LEAK),
}


@tls_params()
@pytest.mark.parametrize("case", list(LEFTOVERS))
async def test_bytes_after_an_answer_never_reach_the_next_request(case: str, tls: bool, ca: trustme.CA) -> None:
    method, path, first, after = LEFTOVERS[case]

    async def handler(server: Upstream, peer: Peer, number: int) -> None:
        while await peer.request() is not None:
            if len(server.requests) == 1:
                await peer.send(first, after)
            else:
                await peer.send(answer(b'{"tenant":"mine"}', b"content-type: application/json\r\n"))

    the_ca = ca if tls else None
    async with upstream(handler, the_ca) as server:
        transport = transport_for(server, the_ca)
        reply, _ = await fetch(transport, method, server.url(path))
        assert reply.status_code in (200, 204, 304)
        # The next request, from any tenant, on this origin: its own answer, on a new connection.
        reply, body = await fetch(transport, b"POST", server.url(), b"{}")
        assert (reply.status_code, body) == (200, b'{"tenant":"mine"}')
        assert transport.connections_opened == 2
        await transport.aclose()


@tls_params()
async def test_clean_keep_alive_is_still_reused(tls: bool, ca: trustme.CA) -> None:
    """The checks must not cost reuse of well-behaved connections (TLS 1.3 session tickets and all)."""

    async def handler(server: Upstream, peer: Peer, number: int) -> None:
        while (request := await peer.request()) is not None:
            ok = answer(b"ok %d" % len(server.requests))
            await peer.send(ok[: ok.index(b"\r\n\r\n") + 4] if request[0] == b"HEAD" else ok)

    the_ca = ca if tls else None
    async with upstream(handler, the_ca) as server:
        transport = transport_for(server, the_ca)
        for n in range(1, 6):
            method = b"HEAD" if n == 3 else b"POST"
            reply, body = await fetch(transport, method, server.url(), b"{}" if method == b"POST" else b"")
            assert body == (b"" if method == b"HEAD" else b"ok %d" % n)
        assert transport.connections_opened == 1 and server.connections == 1
        await transport.aclose()


# -- 5. a complete answer followed by stray bytes ------------------------------------------------------


@tls_params()
async def test_stray_bytes_after_a_complete_answer_relay_it_and_close(tls: bool, ca: trustme.CA) -> None:
    async def handler(server: Upstream, peer: Peer, number: int) -> None:
        while await peer.request() is not None:
            if len(server.requests) == 1:
                await peer.send(answer(b'{"ok":true}') + b"\x00garbage, not a response\r\n\r\n")  # one record
            else:
                await peer.send(answer(b"next"))

    the_ca = ca if tls else None
    async with upstream(handler, the_ca) as server:
        transport = transport_for(server, the_ca)
        reply, body = await fetch(transport, b"POST", server.url(), b"{}")
        assert (reply.status_code, body) == (200, b'{"ok":true}')
        assert transport.idle_count() == 0  # closed, never pooled
        reply, body = await fetch(transport, b"POST", server.url(), b"{}")
        assert body == b"next" and transport.connections_opened == 2
        await transport.aclose()


# -- 3. trailers never become headers; head and trailers are bounded -------------------------------------

TRAILERS = b"0\r\nset-cookie: stolen=1\r\nx-trailer: t\r\n\r\n"
CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n"


def no_trailer(headers: list[tuple[bytes, bytes]]) -> bool:
    return not any(name.lower() in (b"set-cookie", b"x-trailer") for name, _ in headers)


@pytest.mark.parametrize("when", ["same-read", "later-read"])
async def test_upstream_trailers_never_become_headers(when: str) -> None:
    head_seen = trio.Event()

    async def handler(server: Upstream, peer: Peer, number: int) -> None:
        while await peer.request() is not None:
            if when == "same-read":
                await peer.send(CHUNKED_HEAD + b"5\r\nhello\r\n" + TRAILERS)
            else:
                await peer.send(CHUNKED_HEAD + b"5\r\nhello\r\n")
                await head_seen.wait()
                await peer.send(TRAILERS)

    async with upstream(handler) as server:
        transport = LectrTransport()
        reply = await transport.open(
            Outbound(b"GET", destination(server.url("/v1/files/x/content")), [], b""), TIMEOUTS
        )
        assert no_trailer(reply.headers)
        head_seen.set()
        body = b"".join([chunk async for chunk in reply.aiter_raw()])
        assert body == b"hello" and no_trailer(reply.headers)
        assert transport.idle_count() == 1  # a clean answer: trailers are allowed, just never headers

        # As the proxy relays it: what the client gets (the trailers come once it has the head).
        head_seen = trio.Event()

        def on_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                head_seen.set()

        url = server.url("/v1/files/x/content")
        with trio.fail_after(10):
            messages, _ = await relay_once(transport, url, b"GET", b"", 1 << 20, on_send)
        assert no_trailer(messages[0]["headers"]) and client_body(messages) == b"hello"
        await transport.aclose()


@pytest.mark.parametrize("shape", ["one-endless-header", "many-headers", "trailers", "interim-answers"])
async def test_response_head_and_trailers_are_bounded(shape: str) -> None:
    """A head (or trailers) of 24 MiB: refused once past MAX_HEAD_BYTES, not buffered to the end
    (socket buffers hold a few MiB: the upstream cannot have sent it all)."""
    total = 24 * 1024 * 1024
    sent = 0

    async def handler(server: Upstream, peer: Peer, number: int) -> None:
        nonlocal sent
        await peer.request()
        if shape == "trailers":
            await peer.send(CHUNKED_HEAD + b"5\r\nhello\r\n0\r\n")
        elif shape == "interim-answers":
            pass
        else:
            await peer.send(b"HTTP/1.1 200 OK\r\n" + (b"x-long: " if shape == "one-endless-header" else b""))
        piece = {
            "one-endless-header": b"a" * 65536,
            "many-headers": b"x-h: 0123456789\r\n" * 4096,
            "trailers": b"x-t: 0123456789\r\n" * 4096,
            "interim-answers": b"HTTP/1.1 100 Continue\r\nx-a: 0123456789abcdef\r\n\r\n" * 1024,
        }[shape]
        while sent < total:
            await peer.send(piece)
            sent += len(piece)
        await peer.send(b"\r\n\r\n" if shape == "one-endless-header" else b"\r\n")
        await peer.send(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n" if shape == "interim-answers" else b"")
        await trio.sleep(30)

    async with upstream(handler) as server:
        transport = LectrTransport()
        with trio.fail_after(10), pytest.raises(httpx.RemoteProtocolError):
            await fetch(transport, b"GET", server.url())
        assert sent < total  # refused on the way, not after all of it
        assert transport.idle_count() == 0
        await transport.aclose()
    assert 64 * 1024 <= MAX_HEAD_BYTES <= 1024 * 1024


# -- 4. a request already sent in full is never sent again on its own -------------------------------------


@pytest.mark.parametrize("how", ["eof", "reset"])
@pytest.mark.parametrize("method", [b"POST", b"GET", b"PUT"])
async def test_request_sent_in_full_is_resent_only_if_idempotent(method: bytes, how: str) -> None:
    async def handler(server: Upstream, peer: Peer, number: int) -> None:
        await peer.request()
        await peer.send(answer(b"ok"))
        if number == 1:  # keeps the connection; reads the next request in full, then hangs up without a byte
            await peer.request()
            if how == "reset":
                peer.reset()
            return
        while await peer.request() is not None:
            await peer.send(answer(b"ok"))

    async with upstream(handler) as server:
        transport = LectrTransport()
        body = b"" if method == b"GET" else b'{"n":1}'
        _, first = await fetch(transport, method, server.url(), body)
        assert first == b"ok"
        second = b"" if method == b"GET" else b'{"n":2}'
        if method == b"POST":  # it may have been processed (and charged): a 502, never a second send
            with pytest.raises(httpx.RemoteProtocolError):
                await fetch(transport, method, server.url(), second)
            await trio.sleep(0.1)
            assert server.sent(method, second) == 1 and server.connections == 1
        else:  # idempotent (RFC 9110 §9.2.2): sending it again is allowed
            _, again = await fetch(transport, method, server.url(), second)
            assert again == b"ok" and server.connections == 2
            assert server.sent(method, second) == (3 if method == b"GET" else 2)  # GET: the first one too
        await transport.aclose()


# -- 6. relayed headers are still scanned for what would split a line ---------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        (b"x-a", b"bad\nx-injected: 1"),
        (b"x-a", b"bad\rx-injected: 1"),
        (b"x-a", b"bad\r\nx-injected: 1"),
        (b"x-a", b"bad\x00value"),
        (b"x-a\r\nx-injected", b"1"),
        (b"x-\x00a", b"1"),
    ],
    ids=["bare-lf", "bare-cr", "crlf", "nul", "crlf-in-name", "nul-in-name"],
)
async def test_checked_headers_are_still_scanned_for_line_breaks(header: tuple[bytes, bytes]) -> None:
    async def handler(server: Upstream, peer: Peer, number: int) -> None:
        while await peer.request() is not None:
            await peer.send(answer(b"ok"))

    async with upstream(handler) as server:
        transport = LectrTransport()
        with pytest.raises(httpx.LocalProtocolError):
            await transport.open(Outbound(b"POST", destination(server.url()), [header], b"{}"), TIMEOUTS, checked=True)
        await trio.sleep(0.05)
        assert server.connections == 0 and server.requests == []
        # Clean checked headers still go out as they are.
        reply = await transport.open(
            Outbound(b"POST", destination(server.url()), [(b"x-a", b"ok")], b"{}"), TIMEOUTS, checked=True
        )
        assert b"".join([c async for c in reply.aiter_raw()]) == b"ok"
        await transport.aclose()


# -- 2. whole answers: bounded buffering, gzip bombs, large work off the loop --------------------------------


def chat_event() -> Event:
    return Event(
        org_id=1, created_at=dt.datetime.now(dt.UTC), provider="openai", endpoint="chat/completions", status_code=0
    )


async def relay_once(
    transport: LectrTransport, url: str, method: bytes, body: bytes, limit: int, on_send: Any = None
) -> tuple[list[dict[str, Any]], Relay]:
    """One exchange through `Relay` as `proxy/app.py` runs it; the ASGI messages the client got."""
    messages: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)
        if on_send is not None:
            on_send(message)

    relay = Relay(chat_event(), RequestInfo(), trio.current_time(), max_response_bytes=limit)
    outbound = Outbound(method, destination(url), [(b"content-type", b"application/json")], body)
    await relay.run(RelayUpstream(transport, TIMEOUTS), outbound, Client(send), retryable=False)
    await relay.prepare_usage()
    relay.finish()
    return messages, relay


def client_body(messages: list[dict[str, Any]]) -> bytes:
    assert messages[0]["type"] == "http.response.start"
    assert all(m["type"] == "http.response.body" for m in messages[1:])
    assert messages[-1]["more_body"] is False
    return b"".join(m.get("body", b"") for m in messages[1:])


USAGE = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}


def test_max_response_bytes_setting() -> None:
    assert Settings().max_response_bytes == Settings.from_env({}).max_response_bytes == 64 * 1024 * 1024
    assert Settings.from_env({"LECTR_MAX_RESPONSE_BYTES": "1234"}).max_response_bytes == 1234


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_answer_over_the_limit_reaches_the_client_intact(framing: str) -> None:
    """3 MiB of JSON with a 256 KiB limit: relayed chunk by chunk (the client has the first bytes
    before the upstream sends the rest), byte for byte; usage estimated."""
    payload = json.dumps({"model": "gpt-4o", "choices": [{"text": "y" * (3 << 20)}], "usage": USAGE}).encode()
    first_part = trio.Event()

    async def handler(server: Upstream, peer: Peer, number: int) -> None:
        await peer.request()
        half = len(payload) // 2
        if framing == "content-length":
            head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(payload)
            await peer.send(head + payload[:half])
            await first_part.wait()
            await peer.send(payload[half:])
        else:
            head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
            await peer.send(head + b"%x\r\n%b\r\n" % (half, payload[:half]))
            await first_part.wait()
            rest = payload[half:]
            await peer.send(b"%x\r\n%b\r\n0\r\n\r\n" % (len(rest), rest))

    def on_send(message: dict[str, Any]) -> None:
        if message.get("body"):
            first_part.set()

    async with upstream(handler) as server:
        transport = LectrTransport()
        with trio.fail_after(10):
            messages, relay = await relay_once(transport, server.url(), b"POST", b"{}", 256 * 1024, on_send)
        assert client_body(messages) == payload
        event = relay.event
        assert event.status_code == 200 and event.response_bytes == len(payload)
        assert event.usage_estimated and event.response_model is None
        await transport.aclose()


@pytest.mark.parametrize("encoding", ["identity", "gzip", "deflate"])
@pytest.mark.parametrize("size", ["small", "large"])
async def test_whole_answer_under_the_limit_keeps_exact_usage(
    encoding: str, size: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Small answers are read on the loop (no thread hop), large ones (past 1 MiB, raw or inflated)
    in a worker thread: either way, the exact usage."""
    hops: list[Any] = []
    run_sync = trio.to_thread.run_sync

    async def counted(fn: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(fn, functools.partial):  # the relay's (name resolution may use threads too)
            hops.append(fn)
        return await run_sync(fn, *args, **kwargs)

    monkeypatch.setattr(trio.to_thread, "run_sync", counted)
    filler = "z" * (3 << 20 if size == "large" else 100)
    payload = json.dumps({"model": "gpt-4o-2024", "choices": [{"text": filler}], "usage": USAGE}).encode()
    encoded = {"identity": payload, "gzip": gzip.compress(payload), "deflate": zlib.compress(payload)}[encoding]

    async def handler(server: Upstream, peer: Peer, number: int) -> None:
        await peer.request()
        extra = b"content-type: application/json\r\n"
        if encoding != "identity":
            extra += b"content-encoding: " + encoding.encode() + b"\r\n"
        await peer.send(answer(encoded, extra))

    async with upstream(handler) as server:
        transport = LectrTransport()
        messages, relay = await relay_once(transport, server.url(), b"POST", b"{}", 8 << 20)
        assert client_body(messages) == encoded
        event = relay.event
        assert (event.input_tokens, event.output_tokens, event.usage_estimated) == (11, 7, False)
        assert event.response_model == "gpt-4o-2024"
        assert len(hops) == (1 if size == "large" else 0)
        await transport.aclose()


@functools.cache
def gzip_bomb(mebibytes: int) -> bytes:
    squeeze = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = b"\0" * (1 << 20)
    return b"".join(squeeze.compress(block) for _ in range(mebibytes)) + squeeze.flush()


class PeakRSS:
    """The process's resident memory, sampled every 2 ms from a thread (the event loop may be busy)."""

    def __init__(self) -> None:
        self.process = psutil.Process()
        self.base = self.peak = self.process.memory_info().rss
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while self.running:
            self.peak = max(self.peak, self.process.memory_info().rss)
            threading.Event().wait(0.002)

    def __enter__(self) -> PeakRSS:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.running = False
        self.thread.join()


@tls_params()
async def test_gzip_bomb_is_relayed_exactly_without_flooding_memory_or_stalling(tls: bool, ca: trustme.CA) -> None:
    """500 KiB of gzip inflating to 512 MiB, limit 8 MiB: the client gets the 500 KiB as sent, usage is
    estimated (not read past the limit), memory stays near the limit, and the loop keeps ticking."""
    limit = 8 * 1024 * 1024
    bomb = gzip_bomb(512)
    assert len(bomb) < limit

    async def handler(server: Upstream, peer: Peer, number: int) -> None:
        await peer.request()
        await peer.send(answer(bomb, b"content-type: application/json\r\ncontent-encoding: gzip\r\n"))

    gaps: list[float] = []
    done = False

    async def ticker() -> None:
        last = trio.current_time()
        while not done:
            await trio.sleep(0.005)
            now = trio.current_time()
            gaps.append(now - last)
            last = now

    the_ca = ca if tls else None
    async with upstream(handler, the_ca) as server:
        transport = transport_for(server, the_ca)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ticker)
            with PeakRSS() as rss:
                messages, relay = await relay_once(transport, server.url(), b"POST", b"{}", limit)
            done = True
        assert client_body(messages) == bomb
        start = dict(messages[0]["headers"])
        assert start[b"content-encoding"] == b"gzip" and start[b"content-length"] == b"%d" % len(bomb)
        assert relay.event.usage_estimated and relay.event.input_tokens is not None
        grown, stall = rss.peak - rss.base, max(gaps)
        assert grown < 96 * 1024 * 1024 and stall < 0.25, f"RSS +{grown >> 20} MiB, loop stalled {stall:.3f} s"
        await transport.aclose()
