"""The lean HTTP/1.1 connection handler (proxy/http/server.py), served by trio in-process, spoken to over
real sockets: raw bytes where the wire matters, httpx where a client's view is enough.

The whole end-to-end suite also runs through it (it is the default inside Hypercorn's worker);
these tests pin the protocol edges: keep-alive, pipelining, 100-continue, malformed input,
disconnects, timeouts, shutdown and the hand-off of HTTP/2 to Hypercorn.
"""

from __future__ import annotations

import gc
import socket
from typing import Any

import h11
import httpx
import orjson
import pytest
import trio
from hypercorn.config import Config
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext

from proxy.http import server
from tests.serving import serving


async def echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers with what it was sent: method, path, query, the body and the client's port."""
    parts = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        parts.append(message["body"])
        if not message["more_body"]:
            break
    body = orjson.dumps(
        {
            "method": scope["method"],
            "path": scope["path"],
            "raw_path": scope["raw_path"].decode(),
            "query": scope["query_string"].decode(),
            "body": b"".join(parts).decode(),
            "client_port": scope["client"][1],
            "http_version": scope["http_version"],
            "headers": [[k.decode(), v.decode()] for k, v in scope["headers"]],
        }
    )
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})





async def read_until_closed(stream: trio.SocketStream, limit: float = 5.0) -> bytes:
    data = b""
    with trio.fail_after(limit):
        while chunk := await stream.receive_some(65536):
            data += chunk
    return data


def responses(data: bytes) -> list[tuple[h11.Response, bytes]]:
    """Parse one or more HTTP/1.1 responses out of raw bytes."""
    conn = h11.Connection(h11.CLIENT)
    out: list[tuple[h11.Response, bytes]] = []
    conn.send(h11.Request(method="GET", target="/", headers=[("host", "x")]))
    conn.send(h11.EndOfMessage())
    conn.receive_data(data)
    conn.receive_data(b"")
    head, body = None, b""
    while True:
        event = conn.next_event()
        if isinstance(event, h11.Response):
            head, body = event, b""
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            assert head is not None
            out.append((head, body))
            if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                return out
            conn.start_next_cycle()
            conn.send(h11.Request(method="GET", target="/", headers=[("host", "x")]))
            conn.send(h11.EndOfMessage())
        else:
            return out


async def test_keep_alive_serves_requests_on_one_connection() -> None:
    async with serving(echo) as (port, _), httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        first = (await client.post("/v1/a?x=1", content=b"hello")).json()
        second = (await client.post("/v1/b%20c", content=b"world")).json()
    assert first["body"] == "hello" and first["query"] == "x=1" and first["path"] == "/v1/a"
    assert second["path"] == "/v1/b c" and second["raw_path"] == "/v1/b%20c"
    assert first["client_port"] == second["client_port"]  # the same TCP connection


async def test_pipelined_requests_are_answered_in_order() -> None:
    async with serving(echo) as (port, _):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        one = b"POST /1 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\none"
        two = b"POST /2 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\ntwo"
        await stream.send_all(one + two)
        raw = await read_until_closed(stream)
        got = responses(raw)
    assert [orjson.loads(body)["body"] for _, body in got] == ["one", "two"]
    assert got[0][0].reason == b"OK"
    # One content-length, as the app gave it (strict clients such as Node's undici refuse two).
    assert raw.lower().count(b"content-length:") == 2  # two responses, one each


async def test_chunked_request_body_reaches_the_app_whole() -> None:
    async with serving(echo) as (port, _):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(
            b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
        )
        [(head, body)] = responses(await read_until_closed(stream))
    assert head.status_code == 200 and orjson.loads(body)["body"] == "hello world"


async def test_expect_100_continue_is_answered_before_the_body() -> None:
    async with serving(echo) as (port, _):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(
            b"POST /e HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n"
        )
        with trio.fail_after(5):
            interim = await stream.receive_some(1000)
        assert interim.startswith(b"HTTP/1.1 100 ")
        await stream.send_all(b"body")
        rest = await read_until_closed(stream)
    assert b"HTTP/1.1 200 OK" in rest and b'"body":"body"' in rest


async def test_http_1_0_gets_an_answer_and_a_close() -> None:
    async with serving(echo) as (port, _):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(b"GET /old HTTP/1.0\r\n\r\n")
        data = await read_until_closed(stream)
    assert data.startswith(b"HTTP/1.1 200 OK\r\n") and b'"http_version":"1.0"' in data


async def test_head_gets_headers_and_no_body() -> None:
    async with serving(echo) as (port, _):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(b"HEAD /h HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = await read_until_closed(stream)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK") and b"content-length:" in head.lower() and body == b""


@pytest.mark.parametrize(
    "raw",
    [b"NOT A REQUEST\r\n\r\n", b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: zz\r\n\r\n", b"GET / HTTP/1.1\r\n\r\n"],
    ids=["request-line", "content-length", "no-host"],
)
async def test_malformed_requests_get_a_json_400_and_a_close(raw: bytes) -> None:
    async with serving(echo) as (port, _):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(raw)
        [(head, body)] = responses(await read_until_closed(stream))
    assert head.status_code == 400
    assert dict(head.headers)[b"content-type"] == b"application/json"
    assert orjson.loads(body)["error"]["type"] == "invalid_request_error"


async def test_an_oversized_head_gets_a_json_431() -> None:
    async with serving(echo, h11_max_incomplete_size=4096) as (port, _):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        # h11 enforces the limit on a head still incomplete: send the start of an endless one.
        await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 10_000)
        [(head, body)] = responses(await read_until_closed(stream))
    assert head.status_code == 431 and orjson.loads(body)["error"]["code"] == "header_too_large"


async def test_an_app_failure_before_answering_is_a_json_500() -> None:
    async def broken(scope: dict[str, Any], receive: Any, send: Any) -> None:
        raise RuntimeError("boom")

    async with serving(broken) as (port, _), httpx.AsyncClient() as client:
        response = await client.get(f"http://127.0.0.1:{port}/")
    assert response.status_code == 500 and response.json()["error"]["type"] == "internal_error"
    assert "boom" not in response.text


async def test_an_app_failure_mid_body_closes_the_connection() -> None:
    async def half(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"10")]})
        await send({"type": "http.response.body", "body": b"12345", "more_body": True})
        raise RuntimeError("boom")

    async with serving(half) as (port, _):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        data = await read_until_closed(stream)
    assert data.startswith(b"HTTP/1.1 200 OK") and data.endswith(b"\r\n\r\n12345")


async def test_a_stream_shows_its_headers_before_its_first_chunk() -> None:
    go = trio.Event()

    async def slow(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        await go.wait()
        await send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async with serving(slow) as (port, _):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        with trio.fail_after(5):
            head = await stream.receive_some(1000)
        assert head.startswith(b"HTTP/1.1 200 OK") and b"transfer-encoding: chunked" in head.lower()
        go.set()
        rest = await read_until_closed(stream)
    assert b"data: 1\n\n" in rest and rest.endswith(b"0\r\n\r\n")


async def test_the_app_learns_that_the_client_left() -> None:
    learned = trio.Event()

    async def waits(scope: dict[str, Any], receive: Any, send: Any) -> None:
        first = await receive()
        assert first == {"type": "http.request", "body": b"hi", "more_body": False}
        if (await receive())["type"] == "http.disconnect":
            learned.set()

    async with serving(waits) as (port, _):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
        await trio.sleep(0.05)
        await stream.aclose()
        with trio.fail_after(5):
            await learned.wait()


async def test_idle_connections_close_after_the_keep_alive_timeout() -> None:
    async with serving(echo, keep_alive_timeout=0.2) as (port, _):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        started = trio.current_time()
        data = await read_until_closed(stream)
    assert data.startswith(b"HTTP/1.1 200 OK")
    assert 0.15 < trio.current_time() - started < 3


async def test_shutdown_closes_idle_connections_at_once() -> None:
    async with serving(echo, keep_alive_timeout=60) as (port, context):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        with trio.fail_after(5):
            assert (await stream.receive_some(65536)).startswith(b"HTTP/1.1 200 OK")
        await context.terminated.set()
        assert await read_until_closed(stream, limit=2) == b""


async def test_keep_alive_max_requests_closes_the_connection() -> None:
    async with serving(echo, keep_alive_max_requests=2) as (port, _):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\n")
        got = responses(await read_until_closed(stream))
    assert len(got) == 2
    assert (b"connection", b"close") not in list(got[0][0].headers)
    assert (b"connection", b"close") in list(got[1][0].headers)


async def test_http2_with_prior_knowledge_is_handed_to_hypercorn() -> None:
    async with serving(echo) as (port, _), httpx.AsyncClient(http1=False, http2=True) as client:
        response = await client.post(f"http://127.0.0.1:{port}/v1/h2", content=b"two")
    assert response.http_version == "HTTP/2"
    assert response.json()["body"] == "two" and response.json()["http_version"] == "2"


def test_install_leaves_tls_and_access_logs_to_hypercorn() -> None:
    import hypercorn.trio.run as run

    original = run.TCPServer
    try:
        server.install()
        factory = run.TCPServer
        assert factory.stock is TCPServer
        config = Config()
        config.accesslog = "-"
        stream = trio.SocketStream(trio.socket.from_stdlib_socket(socket.socket()))
        assert isinstance(factory(None, config, WorkerContext(None), {}, stream), TCPServer)
        handled = factory(None, Config(), WorkerContext(None), {}, stream)
        assert not isinstance(handled, TCPServer)
        handled.close()  # a coroutine never awaited
        server.install()  # idempotent: still wraps Hypercorn's own class
        assert run.TCPServer.stock is TCPServer
        server.uninstall()
        assert run.TCPServer is TCPServer
    finally:
        run.TCPServer = original


async def test_the_client_alive_extension_tells_without_waiting() -> None:
    seen: list[bool] = []
    done = trio.Event()

    async def polls(scope: dict[str, Any], receive: Any, send: Any) -> None:
        alive = scope["extensions"][server.CLIENT_ALIVE]
        await receive()
        seen.append(await alive())
        with trio.fail_after(5):
            while await alive():
                await trio.sleep(0.01)
        seen.append(False)
        done.set()

    async with serving(polls) as (port, _):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
        await trio.sleep(0.1)
        await stream.aclose()
        with trio.fail_after(5):
            await done.wait()
    assert seen == [True, False]


async def test_an_early_answer_drains_the_unread_body_and_keeps_the_connection() -> None:
    async def early(scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = b'{"error":"no"}'
        await send({"type": "http.response.start", "status": 401, "headers": [(b"content-length", b"14")]})
        await send({"type": "http.response.body", "body": body})

    async with serving(early) as (port, _):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(b"POST /1 HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n" + b"a" * 5000)
        await stream.send_all(b"POST /2 HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nConnection: close\r\n\r\nb")
        got = responses(await read_until_closed(stream))
    assert [head.status_code for head, _ in got] == [401, 401]  # the second request was served too
    assert (b"connection", b"close") not in list(got[0][0].headers)


async def test_an_early_answer_to_a_huge_body_says_it_will_close() -> None:
    async def early(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 413, "headers": [(b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})

    async with serving(early) as (port, _):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999\r\n\r\nabc")
        [(head, _)] = responses(await read_until_closed(stream))
    assert head.status_code == 413 and (b"connection", b"close") in list(head.headers)


async def test_an_app_that_never_reads_a_bodiless_request_keeps_the_connection() -> None:
    async def ignores_body(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    async with serving(ignores_body) as (port, _):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(
            b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        got = responses(await read_until_closed(stream))
    assert [body for _, body in got] == [b"ok", b"ok"]
    assert (b"connection", b"close") not in list(got[0][0].headers)


async def test_response_headers_with_line_breaks_are_refused() -> None:
    async def injects(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"x-a", b"1\r\nset-cookie: evil=1")]})

    async with serving(injects) as (port, _), httpx.AsyncClient() as client:
        response = await client.get(f"http://127.0.0.1:{port}/")
    assert response.status_code == 500 and "set-cookie" not in response.headers


async def test_closed_connections_leave_nothing_for_the_garbage_collector() -> None:
    """The request parser and its callbacks hold each other; a closed connection must not leave that
    cycle for the garbage collector (whose passes show in tail latency): with collection off, nothing
    of a finished connection stays alive."""

    def parsers_alive() -> int:
        return sum(1 for o in gc.get_objects() if type(o) is server._Parser)

    gc.collect()
    gc.disable()
    try:
        async with serving(echo) as (port, _):
            before = parsers_alive()
            for _ in range(5):  # one request per connection, as clients without keep-alive send them
                async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                    assert (await client.post("/v1/x", content=b"hi")).json()["body"] == "hi"
                    assert (await client.post("/v1/y", content=b"ho")).json()["body"] == "ho"
            with trio.move_on_after(5):
                while parsers_alive() > before:  # the server side finishes just after the client closes
                    await trio.sleep(0.01)
            assert parsers_alive() == before
    finally:
        gc.enable()


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_a_big_body_written_with_its_head_arrives_whole(framing: str) -> None:
    """Above COALESCE_LIMIT the head, the body and (chunked) the end go in one gathered `sendmsg`;
    8 MB is more than the socket takes at once, so partial writes must resume at the right byte."""
    big = bytes(range(256)) * (8 * 2**20 // 256)
    headers = [(b"content-type", b"application/octet-stream")]
    if framing == "content-length":
        headers.append((b"content-length", b"%d" % len(big)))

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        # (A stream's head goes out at once unless its first bytes follow: the relay says so.)
        await send({"type": "http.response.start", "status": 200, "headers": headers, server.HEAD_WITH_BODY: True})
        await send({"type": "http.response.body", "body": big})

    async with serving(app) as (port, _):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        await trio.sleep(0.2)  # the server fills the socket and waits to write the rest
        raw = await read_until_closed(stream)
    [(head, body)] = responses(raw)
    assert head.status_code == 200 and body == big
    assert (b"transfer-encoding: chunked" in raw[:300].lower()) == (framing == "chunked")
