"""LectrTransport against real servers: the fake providers and small trio servers for the edge cases
(stale keep-alives, resets, timeouts, cancellation, bodies of every framing)."""

from __future__ import annotations

import gc
import json
import shutil
import socket
import ssl
import struct
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import h11
import httpx
import pytest
import trio

from proxy.http.transport import LectrTransport, Outbound, Timeouts, destination
from tests.fakes import CONTENT, FakeProviders

AUTH = {"authorization": "Bearer sk-test-0123456789"}
CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}


def client(transport: LectrTransport, **timeouts: float | None) -> httpx.AsyncClient:
    timeout = httpx.Timeout(**{"timeout": 10.0, **timeouts})
    return httpx.AsyncClient(transport=transport, timeout=timeout, follow_redirects=False, trust_env=False)


# -- a small h11 server: one handler per connection ------------------------------------------------


class Server:
    """Counts connections and records what each one saw, for the test to assert on."""

    def __init__(self) -> None:
        self.port = 0
        self.connections = 0
        self.disconnects = 0
        self.disconnected = trio.Event()
        self.requests: list[tuple[h11.Request, bytes]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


Handler = Callable[[Server, trio.SocketStream, h11.Connection, int], Awaitable[None]]


@asynccontextmanager
async def serve(handler: Handler) -> AsyncIterator[Server]:
    server = Server()

    async def per_connection(stream: trio.SocketStream) -> None:
        server.connections += 1
        number = server.connections
        try:
            await handler(server, stream, h11.Connection(h11.SERVER), number)
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError):
            pass
        finally:
            await trio.aclose_forcefully(stream)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, per_connection, 0, host="127.0.0.1"))
        server.port = listeners[0].socket.getsockname()[1]
        yield server
        nursery.cancel_scope.cancel()


async def read_request(server: Server, stream: trio.SocketStream, conn: h11.Connection) -> h11.Request | None:
    """The next request on `conn` with its body (None when the client closed the connection)."""
    request, parts = None, []
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await stream.receive_some(65536))
        elif isinstance(event, h11.Request):
            request = event
        elif isinstance(event, h11.Data):
            parts.append(bytes(event.data))
        elif isinstance(event, h11.EndOfMessage):
            assert request is not None
            server.requests.append((request, b"".join(parts)))
            return request
        else:
            return None


async def respond(
    stream: trio.SocketStream, conn: h11.Connection, status: int, body: bytes = b"", headers: Any = None
) -> None:
    if headers is None:
        headers = [("content-length", str(len(body)))]
    data = conn.send(h11.Response(status_code=status, headers=headers))
    if body:
        data += conn.send(h11.Data(data=body))
    data += conn.send(h11.EndOfMessage())
    await stream.send_all(data)


async def keep_alive(server: Server, stream: trio.SocketStream, conn: h11.Connection, number: int) -> None:
    """Answer `ok <n>` to every request, on one connection as long as the client keeps it."""
    while await read_request(server, stream, conn) is not None:
        await respond(stream, conn, 200, f"ok {len(server.requests)}".encode())
        conn.start_next_cycle()


async def wait_disconnect(server: Server, stream: trio.SocketStream) -> None:
    try:
        while await stream.receive_some(65536):
            pass
    except trio.BrokenResourceError:
        pass
    server.disconnects += 1
    server.disconnected.set()


# -- against the fake providers -----------------------------------------------------------------------


async def test_keep_alive_reuses_one_connection(fakes: FakeProviders) -> None:
    transport = LectrTransport()
    async with client(transport) as http:
        for _ in range(20):
            response = await http.post(f"{fakes['openai'].base_url}/chat/completions", json=CHAT, headers=AUTH)
            assert response.status_code == 200
            assert response.json()["choices"][0]["message"]["content"] == CONTENT
            assert response.content == fakes["openai"].last_body
    assert transport.connections_opened == 1


async def test_concurrent_requests_then_reuse(fakes: FakeProviders) -> None:
    transport = LectrTransport()
    statuses: list[int] = []
    async with client(transport) as http:

        async def one() -> None:
            response = await http.post(f"{fakes['groq'].base_url}/chat/completions", json=CHAT, headers=AUTH)
            statuses.append(response.status_code)

        async with trio.open_nursery() as nursery:
            for _ in range(30):
                nursery.start_soon(one)
        opened = transport.connections_opened
        assert statuses == [200] * 30 and 1 <= opened <= 30
        assert transport.idle_count() == opened
        for _ in range(5):
            assert (await http.get(f"{fakes['groq'].base_url}/models", headers=AUTH)).status_code == 200
        assert transport.connections_opened == opened


async def test_chunked_sse_stream_bytes_exact(fakes: FakeProviders) -> None:
    transport = LectrTransport()
    async with client(transport) as http:
        body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
        request = http.build_request("POST", f"{fakes['openai'].base_url}/chat/completions", json=body, headers=AUTH)
        response = await http.send(request, stream=True)
        chunks = [chunk async for chunk in response.aiter_raw()]
        await response.aclose()
        assert response.headers["content-type"].startswith("text/event-stream")
        assert b"".join(chunks) == fakes["openai"].last_body and chunks[-1].endswith(b"data: [DONE]\n\n")
    assert transport.connections_opened == 1


async def test_fake_reset_mid_stream_is_an_error(fakes: FakeProviders) -> None:
    async with client(LectrTransport()) as http:
        body = {**CHAT, "stream": True}
        headers = {**AUTH, "x-fake-scenario": "reset-mid-stream"}
        request = http.build_request("POST", f"{fakes['openai'].base_url}/chat/completions", json=body, headers=headers)
        response = await http.send(request, stream=True)
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            async for _ in response.aiter_raw():
                pass
        await response.aclose()


# -- keep-alive edge cases -------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["PUT", "POST"])
async def test_stale_reused_connection_is_retried_once(method: str) -> None:
    """A reused connection that reads the whole request and hangs up without a byte: an idempotent
    request (PUT, with its body) is sent once more on a fresh connection; a POST, which the server
    may have processed, is not (issue 14; more cases in tests/security/test_upstream_wire.py)."""

    async def handler(server: Server, stream: trio.SocketStream, conn: h11.Connection, number: int) -> None:
        await read_request(server, stream, conn)
        await respond(stream, conn, 200, f"conn {number}".encode())
        conn.start_next_cycle()
        if number == 1:  # the keep-alive went stale: read the next request, then hang up without a byte
            await read_request(server, stream, conn)
            return
        await keep_alive(server, stream, conn, number)

    transport = LectrTransport()
    async with serve(handler) as server, client(transport) as http:
        assert (await http.request(method, server.url, content=b"one")).text == "conn 1"
        if method == "POST":
            with pytest.raises(httpx.RemoteProtocolError):
                await http.request(method, server.url, content=b"two")
            assert server.connections == 1 and transport.connections_opened == 1
            assert [body for _, body in server.requests] == [b"one", b"two"]
            return
        response = await http.request(method, server.url, content=b"two")
        assert response.status_code == 200 and response.text == "conn 2"
        assert server.connections == 2 and transport.connections_opened == 2
        assert [body for _, body in server.requests] == [b"one", b"two", b"two"]


async def test_idle_connection_closed_by_server_is_skipped() -> None:
    async def handler(server: Server, stream: trio.SocketStream, conn: h11.Connection, number: int) -> None:
        await read_request(server, stream, conn)
        await respond(stream, conn, 200, b"bye")  # keep-alive framing, then closes anyway

    transport = LectrTransport()
    async with serve(handler) as server, client(transport) as http:
        for _ in range(3):
            assert (await http.get(server.url)).text == "bye"
            await trio.sleep(0.05)  # let the FIN arrive: the liveness check sees it, no retry needed
        assert server.connections == 3 and len(server.requests) == 3


async def test_fresh_connection_closed_without_response_is_not_retried() -> None:
    async def handler(server: Server, stream: trio.SocketStream, conn: h11.Connection, number: int) -> None:
        await read_request(server, stream, conn)

    async with serve(handler) as server, client(LectrTransport()) as http:
        with pytest.raises(httpx.RemoteProtocolError):
            await http.get(server.url)
        assert server.connections == 1


async def test_idle_cap_closes_extras_and_aclose_closes_idle() -> None:
    arrived = trio.Event()

    async def handler(server: Server, stream: trio.SocketStream, conn: h11.Connection, number: int) -> None:
        await read_request(server, stream, conn)
        if len(server.requests) == 5:
            arrived.set()
        await arrived.wait()  # all five in flight at once: five connections
        await respond(stream, conn, 200, b"x")
        conn.start_next_cycle()
        await wait_disconnect(server, stream)

    transport = LectrTransport(max_idle_per_origin=2)
    async with serve(handler) as server, client(transport) as http:
        async with trio.open_nursery() as nursery:
            for _ in range(5):
                nursery.start_soon(http.get, server.url)
        assert transport.connections_opened == 5 and transport.idle_count() == 2
        with trio.fail_after(5):
            while server.disconnects < 3:
                await trio.sleep(0.01)
        await transport.aclose()
        with trio.fail_after(5):
            while server.disconnects < 5:
                await trio.sleep(0.01)
        assert transport.idle_count() == 0


async def test_finished_answers_leave_nothing_for_the_garbage_collector(fakes: FakeProviders) -> None:
    """A response's parser and its callbacks formed a reference cycle that only the cyclic garbage
    collector freed: ~17 objects a request, and the collector's passes showed in the tail latency.
    With collection off, every answer read to its end (JSON, SSE, HEAD) must be freed by reference
    counting, on the path the proxy uses (`open`; httpx's own objects have cycles of their own)."""

    def responses_alive() -> int:
        return sum(1 for o in gc.get_objects() if type(o).__name__ == "_Response")

    transport = LectrTransport()
    base = fakes["openai"].base_url
    headers = [(b"authorization", AUTH["authorization"].encode()), (b"content-type", b"application/json")]
    streamed = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    asks = [
        (b"POST", "/chat/completions", json.dumps(CHAT).encode(), b'"choices"'),
        (b"POST", "/chat/completions", json.dumps(streamed).encode(), b"data: [DONE]"),
        (b"HEAD", "/models", b"", b""),
    ]
    gc.collect()
    gc.disable()
    try:
        before = responses_alive()
        for _ in range(5):
            for method, path, body, expected in asks:
                reply = await transport.open(
                    Outbound(method, destination(base + path), headers, body), Timeouts(10, 10, 10)
                )
                received = b"".join([chunk async for chunk in reply.aiter_raw()])
                assert reply.status_code == 200 and expected in received
                await reply.body.aclose()
        del reply
        assert responses_alive() == before
        assert transport.connections_opened == 1  # every answer ended cleanly and the connection was reused
    finally:
        gc.enable()
        await transport.aclose()


async def test_a_second_answer_to_one_request_is_ignored_and_the_connection_dropped() -> None:
    async def handler(server: Server, stream: trio.SocketStream, conn: h11.Connection, number: int) -> None:
        while (request := await read_request(server, stream, conn)) is not None:
            if request.target == b"/double":  # two answers to one request, in one write
                await stream.send_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-answer: first\r\n\r\nfirst"
                    b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\nx-answer: second\r\n\r\nsecond"
                )
                conn = h11.Connection(h11.SERVER)  # and the connection stays open for more
                continue
            await respond(stream, conn, 200, b"after")
            conn.start_next_cycle()

    transport = LectrTransport()
    async with serve(handler) as server, client(transport) as http:
        double = await http.get(f"{server.url}/double")
        assert double.content == b"first" and double.headers.get_list("x-answer") == ["first"]
        assert (await http.get(f"{server.url}/after")).content == b"after"
        assert transport.connections_opened == 2  # the connection that misbehaved was not reused


# -- bodies: framing, no-body responses, size, incremental delivery ----------------------------------------


async def test_no_body_responses_keep_the_connection_usable() -> None:
    async def handler(server: Server, stream: trio.SocketStream, conn: h11.Connection, number: int) -> None:
        while (request := await read_request(server, stream, conn)) is not None:
            path = request.target.decode()
            if request.method == b"HEAD":
                await respond(stream, conn, 200, headers=[("content-length", "100"), ("content-type", "text/plain")])
            elif path == "/204":
                await respond(stream, conn, 204, headers=[])
            elif path == "/304":
                await respond(stream, conn, 304, headers=[("etag", '"abc"'), ("content-length", "100")])
            else:
                await respond(stream, conn, 200, b"after")
            conn.start_next_cycle()

    transport = LectrTransport()
    async with serve(handler) as server, client(transport) as http:
        head = await http.head(f"{server.url}/x")
        assert head.status_code == 200 and head.content == b"" and head.headers["content-length"] == "100"
        assert (await http.get(f"{server.url}/204")).status_code == 204
        not_modified = await http.get(f"{server.url}/304")
        assert not_modified.status_code == 304 and not_modified.content == b""
        assert (await http.get(f"{server.url}/after")).content == b"after"
        assert server.connections == 1 and transport.connections_opened == 1


async def test_content_length_chunked_and_close_delimited_bodies() -> None:
    payload = b"0123456789" * 1000

    async def handler(server: Server, stream: trio.SocketStream, conn: h11.Connection, number: int) -> None:
        while (request := await read_request(server, stream, conn)) is not None:
            if request.target == b"/close":  # HTTP/1.0 style: the body ends when the connection does
                await stream.send_all(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n" + payload)
                return
            headers = [] if request.target == b"/chunked" else [("content-length", str(len(payload)))]
            data = conn.send(h11.Response(status_code=200, headers=headers))
            for i in range(0, len(payload), 3000):
                data += conn.send(h11.Data(data=payload[i : i + 3000]))
            await stream.send_all(data + conn.send(h11.EndOfMessage()))
            conn.start_next_cycle()

    transport = LectrTransport()
    async with serve(handler) as server, client(transport) as http:
        chunked = await http.get(f"{server.url}/chunked")
        assert chunked.headers["transfer-encoding"] == "chunked" and chunked.content == payload
        assert (await http.get(f"{server.url}/length")).content == payload
        assert (await http.get(f"{server.url}/close")).content == payload
        assert transport.connections_opened == 1 and transport.idle_count() == 0  # closed, not pooled
        assert (await http.get(f"{server.url}/length")).content == payload
        assert transport.connections_opened == 2


async def test_request_framing_and_large_bodies() -> None:
    async def handler(server: Server, stream: trio.SocketStream, conn: h11.Connection, number: int) -> None:
        while await read_request(server, stream, conn) is not None:
            body = server.requests[-1][1]
            data = conn.send(h11.Response(status_code=200, headers=[("transfer-encoding", "chunked")]))
            for i in range(0, len(body), 100_000):
                data += conn.send(h11.Data(data=body[i : i + 100_000]))
            await stream.send_all(data + conn.send(h11.EndOfMessage()))
            conn.start_next_cycle()

    big = bytes(range(256)) * 4096  # 1 MiB
    transport = LectrTransport()
    async with serve(handler) as server, client(transport) as http:
        request = http.build_request("POST", f"{server.url}/echo?q=1", content=big, headers={"x-a": "b"})
        response = await http.send(request, stream=True)
        chunks = [chunk async for chunk in response.aiter_raw()]
        await response.aclose()
        assert b"".join(chunks) == big and len(chunks) > 1
        assert (await http.get(f"{server.url}/empty")).content == b""
        assert (await http.post(f"{server.url}/empty", content=b"")).content == b""
        sent = [(request, dict(request.headers)) for request, _ in server.requests]
        assert sent[0][0].target == b"/echo?q=1"
        assert sent[0][1][b"host"] == f"127.0.0.1:{server.port}".encode()
        assert sent[0][1][b"content-length"] == b"1048576" and sent[0][1][b"x-a"] == b"b"
        assert b"content-length" not in sent[1][1] and b"transfer-encoding" not in sent[1][1]
        assert sent[2][1][b"content-length"] == b"0"
        assert transport.connections_opened == 1


async def test_stream_chunks_arrive_as_sent() -> None:
    go_on = trio.Event()

    async def handler(server: Server, stream: trio.SocketStream, conn: h11.Connection, number: int) -> None:
        await read_request(server, stream, conn)
        await stream.send_all(conn.send(h11.Response(status_code=200, headers=[])) + conn.send(h11.Data(data=b"a")))
        await go_on.wait()  # the rest only once the client has the first chunk: no buffering possible
        await stream.send_all(conn.send(h11.Data(data=b"b")) + conn.send(h11.EndOfMessage()))

    async with serve(handler) as server, client(LectrTransport()) as http:
        with trio.fail_after(5):
            response = await http.send(http.build_request("GET", server.url), stream=True)
            received = []
            async for chunk in response.aiter_raw():
                received.append(chunk)
                go_on.set()
            await response.aclose()
        assert received == [b"a", b"b"]


# -- failures and timeouts --------------------------------------------------------------------------------


async def test_connection_refused_is_connect_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with client(LectrTransport()) as http:
        with pytest.raises(httpx.ConnectError) as info:
            await http.get(f"http://127.0.0.1:{port}/")
        assert info.value.request.url.port == port


async def test_unresolvable_host_is_connect_error() -> None:
    async with client(LectrTransport()) as http:
        with pytest.raises(httpx.ConnectError):
            await http.get("http://no-such-host.invalid/")


async def test_connect_timeout() -> None:
    async with serve(keep_alive) as server, client(LectrTransport(), connect=0.0) as http:
        with pytest.raises(httpx.ConnectTimeout):
            await http.get(server.url)


async def test_slow_head_is_read_timeout() -> None:
    async def handler(server: Server, stream: trio.SocketStream, conn: h11.Connection, number: int) -> None:
        await read_request(server, stream, conn)
        await trio.sleep(30)

    async with serve(handler) as server, client(LectrTransport(), read=0.2) as http:
        with trio.fail_after(5), pytest.raises(httpx.ReadTimeout):
            await http.get(server.url)


async def test_slow_body_chunk_is_read_timeout() -> None:
    async def handler(server: Server, stream: trio.SocketStream, conn: h11.Connection, number: int) -> None:
        await read_request(server, stream, conn)
        await stream.send_all(conn.send(h11.Response(status_code=200, headers=[])) + conn.send(h11.Data(data=b"a")))
        await trio.sleep(30)

    async with serve(handler) as server, client(LectrTransport(), read=0.2) as http:
        response = await http.send(http.build_request("GET", server.url), stream=True)
        received = []
        with trio.fail_after(5), pytest.raises(httpx.ReadTimeout):
            async for chunk in response.aiter_raw():
                received.append(chunk)
        await response.aclose()
        assert received == [b"a"]


async def test_write_timeout() -> None:
    async def handler(server: Server, stream: trio.SocketStream, conn: h11.Connection, number: int) -> None:
        await trio.sleep(30)  # never reads: the client's socket buffers fill up

    async with serve(handler) as server, client(LectrTransport(), write=0.3) as http:
        with trio.fail_after(10), pytest.raises(httpx.WriteTimeout):
            await http.post(server.url, content=b"x" * (64 * 1024 * 1024))


@pytest.mark.parametrize("how", ["eof", "reset"])
async def test_peer_gone_mid_body(how: str) -> None:
    async def handler(server: Server, stream: trio.SocketStream, conn: h11.Connection, number: int) -> None:
        await read_request(server, stream, conn)
        await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n0123456789")
        await trio.sleep(0.1)
        if how == "reset":  # RST instead of FIN
            stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    transport = LectrTransport()
    async with serve(handler) as server, client(transport) as http:
        response = await http.send(http.build_request("GET", server.url), stream=True)
        with trio.fail_after(5), pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)) as info:
            async for _ in response.aiter_raw():
                pass
        await response.aclose()
        assert info.value.request is response.request
        assert transport.idle_count() == 0


async def test_cancelled_mid_body_closes_the_connection() -> None:
    async def handler(server: Server, stream: trio.SocketStream, conn: h11.Connection, number: int) -> None:
        await read_request(server, stream, conn)
        await stream.send_all(conn.send(h11.Response(status_code=200, headers=[])) + conn.send(h11.Data(data=b"a")))
        await wait_disconnect(server, stream)

    transport = LectrTransport()
    async with serve(handler) as server, client(transport) as http:
        with trio.move_on_after(0.3) as scope:  # as the proxy's task is cancelled when its client leaves
            response = await http.send(http.build_request("GET", server.url), stream=True)
            try:
                async for _ in response.aiter_raw():
                    pass
            finally:
                await response.aclose()
        assert scope.cancelled_caught
        with trio.fail_after(5):
            await server.disconnected.wait()
        assert transport.idle_count() == 0


async def test_response_closed_early_is_not_reused() -> None:
    async def handler(server: Server, stream: trio.SocketStream, conn: h11.Connection, number: int) -> None:
        await read_request(server, stream, conn)
        try:
            await respond(stream, conn, 200, b"x" * 5_000_000)
        except trio.BrokenResourceError:  # the client closed while we were still sending
            server.disconnected.set()
        await wait_disconnect(server, stream)

    transport = LectrTransport()
    async with serve(handler) as server, client(transport) as http:
        response = await http.send(http.build_request("GET", server.url), stream=True)
        await response.aclose()  # body not read
        with trio.fail_after(5):
            await server.disconnected.wait()
        assert transport.idle_count() == 0


# -- TLS ---------------------------------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
async def test_https_with_keep_alive(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    connections = 0

    async def handler(tcp: trio.SocketStream) -> None:
        nonlocal connections
        connections += 1
        stream = trio.SSLStream(tcp, server_ctx, server_side=True, https_compatible=True)
        conn = h11.Connection(h11.SERVER)
        try:
            while await read_request(Server(), stream, conn) is not None:  # type: ignore[arg-type]
                body = json.dumps({"tls": True}).encode()
                await respond(stream, conn, 200, body)  # type: ignore[arg-type]
                conn.start_next_cycle()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await trio.aclose_forcefully(stream)

    transport = LectrTransport(ssl_context=ssl.create_default_context(cafile=str(cert)))
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        async with client(transport) as http:
            for _ in range(3):
                assert (await http.get(f"https://localhost:{port}/")).json() == {"tls": True}
            with pytest.raises(httpx.ConnectError):  # the default context does not trust our certificate
                async with client(LectrTransport()) as other:
                    await other.get(f"https://localhost:{port}/")
        nursery.cancel_scope.cancel()
    assert transport.connections_opened == 1 and connections == 2


async def test_idle_expiry() -> None:
    transport = LectrTransport(idle_expiry=1.0)
    async with serve(keep_alive) as server, client(transport) as http:
        async with trio.open_nursery() as nursery:  # two at once (the server answers both): two connections
            for _ in range(2):
                nursery.start_soon(http.get, server.url)
        assert transport.connections_opened == 2 and transport.idle_count() == 2
        await trio.sleep(0.6)
        await http.get(server.url)  # reuses the newest; the older one is 0.6 s idle: kept
        assert transport.connections_opened == 2 and transport.idle_count() == 2
        await trio.sleep(0.6)
        await http.get(server.url)  # the older one is now past its expiry: closed from the bottom
        assert transport.connections_opened == 2 and transport.idle_count() == 1
        await trio.sleep(1.2)
        await http.get(server.url)  # everything expired: a new connection
        assert transport.connections_opened == 3 and transport.idle_count() == 1


async def test_unread_short_answer_keeps_the_connection() -> None:
    async def handler(server: Server, stream: trio.SocketStream, conn: h11.Connection, number: int) -> None:
        while await read_request(server, stream, conn) is not None:
            await respond(stream, conn, 429, b'{"error":"slow down"}')
            conn.start_next_cycle()

    transport = LectrTransport()
    async with serve(handler) as server, client(transport) as http:
        for _ in range(3):  # as the proxy does before a fallback: status seen, body never read
            response = await http.send(http.build_request("POST", server.url, content=b"{}"), stream=True)
            assert response.status_code == 429
            await response.aclose()  # the body came with the head: already buffered, nothing left to read
        assert transport.connections_opened == 1 and transport.idle_count() == 1


# -- the watch: read timeouts and client checks without a cancel scope per read (proxy/http/watch.py) ----------


async def _quiet_after_first_chunk(server: Server, stream: trio.SocketStream, conn: h11.Connection, _: int) -> None:
    """A stream that sends one chunk, then nothing until the client hangs up (which it records)."""
    await read_request(server, stream, conn)
    await stream.send_all(conn.send(h11.Response(status_code=200, headers=[])) + conn.send(h11.Data(data=b"a")))
    try:
        while await stream.receive_some(65536):
            pass
    finally:
        server.disconnects += 1
        server.disconnected.set()


async def test_a_quiet_stream_is_abandoned_when_the_client_has_left() -> None:
    """Between chunks, `alive` is asked every ALIVE_POLL seconds of waiting; a no drops the upstream
    connection (the provider sees the disconnect) and the read raises Abandoned."""
    from proxy.http.transport import Abandoned
    from proxy.http.watch import ALIVE_POLL

    asked: list[float] = []

    async def alive() -> bool:
        asked.append(trio.current_time())
        return len(asked) < 2  # there at the first check, gone at the second

    transport = LectrTransport()
    async with serve(_quiet_after_first_chunk) as server:
        reply = await transport.open(
            Outbound(b"POST", destination(server.url + "/v1/x"), [], b"{}"), Timeouts(5, 30, 5), alive=alive
        )
        assert await reply.receive() == b"a"
        started = trio.current_time()
        with trio.fail_after(10), pytest.raises(Abandoned):
            await reply.receive()
        waited = trio.current_time() - started
        with trio.fail_after(5):
            await server.disconnected.wait()
        await reply.aclose()
    assert len(asked) == 2
    assert 2 * ALIVE_POLL <= waited < 2 * ALIVE_POLL + 1.0
    assert not transport.watch.bodies  # nothing left behind


async def test_a_quiet_stream_times_out_on_time_and_the_watch_task_ends() -> None:
    transport = LectrTransport()
    async with serve(_quiet_after_first_chunk) as server:
        reply = await transport.open(
            Outbound(b"POST", destination(server.url + "/v1/x"), [], b"{}"), Timeouts(5, 0.5, 5)
        )
        assert await reply.receive() == b"a"
        started = trio.current_time()
        with trio.fail_after(5), pytest.raises(httpx.ReadTimeout):
            await reply.receive()
        waited = trio.current_time() - started
        with trio.fail_after(5):
            await server.disconnected.wait()
        await reply.aclose()
        assert 0.5 <= waited < 0.5 + 0.5
        assert not transport.watch.bodies
        await trio.sleep(0.6)  # a tick with nothing watched: the task is gone
        assert transport.watch._token is None
