"""The proxy's own HTTP/1.1 server (proxy/http/server.py) as an attacker meets it: real sockets only.

Each test is one of issue 14's probes, kept as a regression test:
- request trailers never become headers (the trailer `Authorization` once replaced the real one
  sent upstream) and count against the head limit (40 MiB of trailers once took a worker to 1 GiB);
- `Transfer-Encoding` other than a lone `chunked` is 501; bad chunk framing is a 400 JSON error
  (and a 400 event), not a silent close recorded as a 499; HTTP/0.9 and HTTP/2.0 request lines are
  not answered as HTTP/1.1;
- CONNECT, TRACE, other methods and Upgrade requests are never forwarded;
- a client sending its body a byte at a time is cut off (408), and a worker's connections are capped
  (503 and close);
- relayed response headers are scanned for CR, LF and NUL even though a parser produced them;
- an upstream answer cut short reaches the client as an incomplete message, never a complete one.

The first group runs `serve_connection` in-process (as tests/proxy/test_server.py does); the
second runs the real proxy process against the fake providers.
"""

from __future__ import annotations

import gc
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import trio

from proxy.http import server
from proxy.store.db import connect
from tests.conftest import ProxyProcess, proxy_env
from tests.fakes import FakeProviders, wait_for
from tests.security.conftest import (
    PROVIDER_KEY,
    assert_alive,
    assert_json_error,
    parse_response,
    raw_exchange,
    rows,
    unique,
)
from tests.serving import serving

MIB = 1024 * 1024


class Seen:
    """What the in-process app saw of each request."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []


def recording_app(seen: Seen) -> Any:
    """Reads the whole body (as the proxy does), then answers with what it saw as JSON."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        parts = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the server answers a body error itself
            parts.append(message["body"])
            if not message["more_body"]:
                break
        record = {
            "method": scope["method"],
            "headers": [[k.decode(), v.decode("latin-1")] for k, v in scope["headers"]],
            "body": b"".join(parts).decode("latin-1"),
        }
        seen.requests.append(record)
        body = json.dumps(record).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app





async def exchange(port: int, data: bytes, *, timeout: float = 10.0) -> bytes:
    """Send `data`, read until the server closes (or `timeout`); everything it sent."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    received = b""
    with trio.move_on_after(timeout):
        try:
            await stream.send_all(data)
        except trio.BrokenResourceError:
            pass
        try:
            while chunk := await stream.receive_some(65536):
                received += chunk
        except trio.BrokenResourceError:
            pass
    await stream.aclose()
    return received


def json_error(raw: bytes, status: int) -> dict[str, Any]:
    response = parse_response(raw)
    assert response.status == status, raw[:300]
    assert response.headers.get("connection") == "close", response.headers
    return assert_json_error(response.status, response.headers, response.body, status)


CHUNKED_HEAD = b"POST /v1/x HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer real\r\nTransfer-Encoding: chunked\r\n"


# -- in-process: trailers, framing, versions --------------------------------------------------


async def test_request_trailers_never_become_headers() -> None:
    seen = Seen()
    async with serving(recording_app(seen)) as (port, _):
        trailers = b"Authorization: Bearer sk-evil\r\nX-T: 1\r\n"
        data = CHUNKED_HEAD + b"Connection: close\r\n\r\n5\r\nhello\r\n0\r\n" + trailers + b"\r\n"
        raw = await exchange(port, data)
    assert parse_response(raw).status == 200, raw
    (request,) = seen.requests
    assert request["body"] == "hello"
    names = [name for name, _ in request["headers"]]
    assert names.count("authorization") == 1 and "x-t" not in names, request["headers"]
    assert dict(request["headers"])["authorization"] == "Bearer real"


async def test_request_trailer_flood_is_431_with_bounded_memory() -> None:
    seen = Seen()
    process = psutil.Process()
    gc.collect()
    before = process.memory_info().rss
    async with serving(recording_app(seen)) as (port, _):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(CHUNKED_HEAD + b"\r\n5\r\nhello\r\n0\r\n")
        line = b"X-Filler: " + b"a" * 90 + b"\r\n"
        block = line * 10_000  # ~1 MiB
        sent = 0
        received = b""
        with trio.move_on_after(20):
            try:
                while sent < 40 * MIB:
                    await stream.send_all(block)
                    sent += len(block)
            except trio.BrokenResourceError:
                pass  # the server answered and closed: what we want
            try:
                while chunk := await stream.receive_some(65536):
                    received += chunk
            except trio.BrokenResourceError:
                pass
        await stream.aclose()
    grown = (process.memory_info().rss - before) / MIB
    json_error(received, 431)
    assert sent < 40 * MIB, "the server read 40 MiB of trailers without answering"
    assert grown < 64, f"RSS grew {grown:.0f} MiB"
    assert seen.requests == []


async def test_one_endless_trailer_line_is_431() -> None:
    async with serving(recording_app(Seen())) as (port, _):
        raw = await exchange(port, CHUNKED_HEAD + b"\r\n0\r\nX-Long: " + b"a" * (2 * MIB))
    json_error(raw, 431)


@pytest.mark.parametrize(
    "coding",
    [b"gzip, chunked", b"chunked, chunked", b"identity", b"gzip", b"chunked\r\nTransfer-Encoding: chunked"],
)
async def test_transfer_coding_other_than_a_lone_chunked_is_501(coding: bytes) -> None:
    seen = Seen()
    async with serving(recording_app(seen)) as (port, _):
        data = b"POST /v1/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: " + coding + b"\r\n\r\n0\r\n\r\n"
        raw = await exchange(port, data)
    if raw.startswith(b"HTTP/1.1 400"):
        json_error(raw, 400)  # llhttp refuses some of these outright: stricter is fine
    else:
        json_error(raw, 501)
    assert seen.requests == []


@pytest.mark.parametrize("framing", [b"-17\r\nhello", b"zz\r\nhello\r\n0\r\n\r\n", b"5\r\nhelloXX0\r\n\r\n"])
async def test_bad_chunk_framing_is_a_400_json_error(framing: bytes) -> None:
    seen = Seen()
    async with serving(recording_app(seen)) as (port, _):
        raw = await exchange(port, CHUNKED_HEAD + b"\r\n" + framing)
    error = json_error(raw, 400)
    assert error["code"] == "malformed_http"
    assert seen.requests == []


async def test_http_0_9_gets_no_answer_and_http_2_0_gets_505() -> None:
    seen = Seen()
    async with serving(recording_app(seen)) as (port, _):
        assert await exchange(port, b"GET /v1/models\r\n\r\n") == b""
        raw = await exchange(port, b"GET /v1/models HTTP/2.0\r\nHost: a\r\n\r\n")
        json_error(raw, 505)
        raw = await exchange(port, b"GET /v1/models HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        assert parse_response(raw).status == 200
    assert len(seen.requests) == 1


# -- in-process: slow clients and the connection cap -------------------------------------------


async def test_a_body_sent_a_byte_at_a_time_is_cut_off_with_408() -> None:
    seen = Seen()
    async with serving(recording_app(seen), server.Limits(body_timeout=1.0)) as (port, _):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(b"POST /v1/x HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n")
        started = trio.current_time()
        received = b""
        with trio.move_on_after(10):
            try:
                for _ in range(100):
                    await stream.send_all(b"a")
                    with trio.move_on_after(0.3):
                        chunk = await stream.receive_some(65536)
                        received += chunk
                        if not chunk:
                            break
                while chunk := await stream.receive_some(65536):
                    received += chunk
            except trio.BrokenResourceError:
                pass
        elapsed = trio.current_time() - started
        await stream.aclose()
    assert json_error(received, 408)["code"] == "request_timeout"
    assert elapsed < 5, elapsed
    assert seen.requests == []


async def test_connections_over_the_cap_get_503_and_close() -> None:
    seen = Seen()
    async with serving(recording_app(seen), server.Limits(max_connections=2)) as (port, _):
        holders = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(2)]
        await trio.sleep(0.2)  # both are being served (idle, waiting for a request)
        raw = await exchange(port, b"GET /v1/models HTTP/1.1\r\nHost: a\r\n\r\n")
        assert json_error(raw, 503)["code"] == "lectr_too_many_connections"
        await holders[0].aclose()
        await trio.sleep(0.2)
        raw = await exchange(port, b"GET /v1/models HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        assert parse_response(raw).status == 200
        await holders[1].aclose()
    assert len(seen.requests) == 1


# -- in-process: relayed headers are scanned ----------------------------------------------------


@pytest.mark.parametrize("value", [b"ok\r\nx-evil: 1", b"ok\nx-evil: 1", b"ok\x00"])
async def test_relayed_headers_with_cr_lf_or_nul_never_reach_the_client(value: bytes) -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        headers = [(b"content-length", b"2"), (b"x-upstream", value)]
        try:
            await send({"type": "http.response.start", "status": 200, "headers": headers, server.HEADERS_CHECKED: True})
        except ValueError:
            headers = [(b"content-type", b"application/json"), (b"content-length", b"2")]
            await send({"type": "http.response.start", "status": 502, "headers": headers})
            await send({"type": "http.response.body", "body": b"{}"})
            return
        await send({"type": "http.response.body", "body": b"ok"})

    async with serving(app) as (port, _):
        raw = await exchange(port, b"GET /v1/x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert b"x-evil" not in raw and b"x-upstream" not in raw, raw
    assert raw.startswith(b"HTTP/1.1 502"), raw


# -- the real proxy ------------------------------------------------------------------------------


def _key_line(key: str) -> bytes:
    return b"X-Lectr-Key: " + key.encode() + b"\r\nAuthorization: Bearer " + PROVIDER_KEY.encode() + b"\r\n"


def test_a_trailer_authorization_never_replaces_the_real_one(
    proxy: ProxyProcess, fakes: FakeProviders, sec_org: Any
) -> None:
    _, key = sec_org
    fakes.reset()
    body = b'{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}'
    data = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: a\r\nConnection: close\r\nContent-Type: application/json\r\n"
        + _key_line(key)
        + b"Transfer-Encoding: chunked\r\n\r\n"
        + b"%x\r\n%b\r\n0\r\nAuthorization: Bearer sk-attacker\r\nX-Lectr-Key: nope\r\n\r\n" % (len(body), body)
    )
    response = raw_exchange(proxy.port, data)
    assert response.status == 200, response
    (received,) = fakes["openai"].received
    assert received.headers["authorization"] == f"Bearer {PROVIDER_KEY}"
    assert all(value != "Bearer sk-attacker" for _, value in received.raw_headers)


@pytest.mark.parametrize(
    ("method", "extra", "status"),
    [
        (b"CONNECT", b"", 405),
        (b"TRACE", b"", 405),
        (b"PUT", b"", 405),
        (b"PATCH", b"", 405),
        (b"POST", b"Connection: upgrade\r\nUpgrade: websocket\r\n", 400),
        (b"GET", b"Upgrade: h2c\r\n", 400),
    ],
)
def test_methods_and_upgrades_that_are_never_forwarded(
    proxy: ProxyProcess, fakes: FakeProviders, sec_org: Any, method: bytes, extra: bytes, status: int
) -> None:
    _, key = sec_org
    fakes.reset()
    body = b'{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}'
    data = (
        method + b" /v1/models HTTP/1.1\r\nHost: a\r\nConnection: close\r\nContent-Type: application/json\r\n"
        + _key_line(key) + extra + b"Content-Length: %d\r\n\r\n" % len(body) + body
    )  # fmt: skip
    response = raw_exchange(proxy.port, data)
    assert_json_error(response.status, response.headers, response.body, status)
    if status == 405:
        assert "GET" in response.headers.get("allow", "")
    assert fakes["openai"].received == []
    assert_alive(proxy)


@pytest.mark.parametrize(("method", "status"), [(b"HEAD", 200), (b"OPTIONS", 204)])
def test_head_and_options_are_answered_by_the_proxy(
    proxy: ProxyProcess, fakes: FakeProviders, sec_org: Any, method: bytes, status: int
) -> None:
    _, key = sec_org
    fakes.reset()
    data = method + b" /v1/models HTTP/1.1\r\nHost: a\r\nConnection: close\r\n" + _key_line(key) + b"\r\n"
    response = raw_exchange(proxy.port, data)
    assert response.status == status and response.body == b""
    assert "POST" in response.headers["allow"]
    assert fakes["openai"].received == []


def test_bad_chunk_framing_through_the_proxy_is_400_and_a_400_event(
    proxy: ProxyProcess, fakes: FakeProviders, sec_org: Any, pg_url: str
) -> None:
    org, key = sec_org
    fakes.reset()
    feature = unique("framing")
    data = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n"
        + _key_line(key) + b"X-Lectr-Feature: " + feature.encode() + b"\r\n"
        + b"Transfer-Encoding: chunked\r\n\r\n5\r\n{\"mod\r\nzz\r\n"
    )  # fmt: skip
    response = raw_exchange(proxy.port, data)
    assert assert_json_error(response.status, response.headers, response.body, 400)["code"] == "malformed_http"
    assert fakes["openai"].received == []
    with connect(pg_url) as conn:
        query = "SELECT status_code, error_type FROM events WHERE org_id = %s AND feature = %s"
        wait_for(lambda: rows(conn, query, (org.id, feature)), timeout=15)
        assert rows(conn, query, (org.id, feature)) == [{"status_code": 400, "error_type": "malformed_http"}]


def _chunks_and_end(raw: bytes) -> tuple[bytes, bool]:
    """The de-chunked body of a raw chunked response, and whether its final chunk arrived."""
    _, _, rest = raw.partition(b"\r\n\r\n")
    body = b""
    while rest:
        size_line, sep, rest = rest.partition(b"\r\n")
        if not sep:
            break
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            return body, rest.startswith(b"\r\n")
        body += rest[:size]
        rest = rest[size + 2 :]
    return body, False


def test_a_stream_cut_short_upstream_reaches_the_client_incomplete(
    proxy: ProxyProcess, fakes: FakeProviders, sec_org: Any, pg_url: str
) -> None:
    org, key = sec_org
    fakes.reset()
    feature = unique("cut")
    body = b'{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]}'
    data = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n"
        + _key_line(key) + b"X-Lectr-Feature: " + feature.encode() + b"\r\nx-fake-scenario: reset-mid-stream\r\n"
        + b"Content-Length: %d\r\n\r\n" % len(body) + body
    )  # fmt: skip
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=20) as sock:
        sock.sendall(data)
        raw = b""
        while chunk := sock.recv(65536):  # the proxy closes the connection: it must, to say "cut short"
            raw += chunk
    assert raw.startswith(b"HTTP/1.1 200"), raw[:200]
    streamed, ended = _chunks_and_end(raw)
    assert b"data: " in streamed and b"[DONE]" not in streamed
    assert not ended, "a truncated answer was passed off as complete"
    with connect(pg_url) as conn:
        query = "SELECT status_code, error_type FROM events WHERE org_id = %s AND feature = %s"
        wait_for(lambda: rows(conn, query, (org.id, feature)), timeout=15)
        assert rows(conn, query, (org.id, feature))[0]["error_type"] == "upstream_incomplete"


class _CuttingUpstream:
    """A raw upstream that answers every request with the head and part of a binary body, then
    closes: once chunked, once with a Content-Length longer than what it sends."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn:
                request = b""
                while b"\r\n\r\n" not in request:
                    request += conn.recv(65536)
                head, _, body = request.partition(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                while len(body) < length:
                    body += conn.recv(65536)
                if b"chunked" in head.split(b"\r\n")[0]:
                    conn.sendall(
                        b"HTTP/1.1 200 OK\r\nContent-Type: audio/mpeg\r\nTransfer-Encoding: chunked\r\n\r\n"
                        b"5\r\nhello\r\n"
                    )
                else:
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: audio/mpeg\r\nContent-Length: 100\r\n\r\nhello")
                time.sleep(0.2)

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def cutting_proxy(pg_url: str, fakes: FakeProviders, tmp_path: Path) -> Iterator[ProxyProcess]:
    upstream = _CuttingUpstream()
    env = proxy_env(pg_url, fakes, tmp_path, LECTR_OPENAI_BASE_URL=f"http://127.0.0.1:{upstream.port}/v1")
    server_process = ProxyProcess(env, tmp_path / "proxy.log").start()
    yield server_process
    server_process.stop()
    upstream.close()


@pytest.mark.parametrize("path", [b"/v1/audio/speech/chunked", b"/v1/audio/speech/length"])
def test_a_binary_body_cut_short_upstream_reaches_the_client_incomplete(
    cutting_proxy: ProxyProcess, sec_org: Any, path: bytes
) -> None:
    _, key = sec_org
    body = b'{"model":"tts-1","input":"hi","voice":"alloy"}'
    data = (
        b"POST " + path + b" HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n" + _key_line(key)
        + b"Content-Length: %d\r\n\r\n" % len(body) + body
    )  # fmt: skip
    with socket.create_connection(("127.0.0.1", cutting_proxy.port), timeout=20) as sock:
        sock.sendall(data)
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), raw[:300]
    if b"transfer-encoding: chunked" in head.lower():
        streamed, ended = _chunks_and_end(raw)
        assert streamed == b"hello" and not ended, raw
    else:
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        assert rest == b"hello" and length > len(rest), raw

