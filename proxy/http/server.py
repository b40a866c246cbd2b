"""A lean HTTP/1.1 connection handler inside Hypercorn's trio worker.

Hypercorn stays the server: its command line, config, listeners, workers, lifespan, signals and
graceful shutdown are unchanged. What this module replaces is the per-connection protocol code
for plain HTTP/1.1, where `bench/run.py`'s `floor` scenario measured Hypercorn's trio worker at
~1.2 ms of CPU per request before the app runs (a bare trio + h11 loop: ~0.3 ms). Its costs are
per request: a task and a memory channel for the app, an idle-timeout task restarted through
`nursery.start`, a lock per write and three writes per response. Here the app runs in the
connection's own task, reads the body straight from the parser, and a whole answer leaves in
one write. Requests are parsed by httptools (llhttp, Node's parser, in C: ~10 µs a request
against ~95 µs for h11's parse-and-respond cycle); the response head is written here, with the
framing (content-length, chunked, or close) decided by the server as h11 would.

Anything else (TLS, where ALPN may pick HTTP/2; HTTP/2 with prior knowledge; an access log or
statsd, which Hypercorn's protocol reports to) is handed to Hypercorn's own `TCPServer`.
`LECTR_HTTP1=hypercorn` turns this module off. `install()` is called by `create_app()`, so it
covers a bare `hypercorn ... "proxy.app:create_app()"` too.

Behaviour kept from Hypercorn: the scope it builds, `100 Continue` on the first `receive()`,
`http.disconnect` when the client goes away or once the response is complete, keep-alive with
`keep_alive_timeout` and `keep_alive_max_requests`, `read_timeout`, `max_requests`, the head
size limit (`h11_max_incomplete_size`), idle connections closed at once on shutdown, 500 when
the app fails before answering. Errors the server answers itself (a malformed request, an
oversized head) are JSON in the proxy's one shape.
"""

from __future__ import annotations

import logging
from collections import deque
from http import HTTPStatus
from socket import MSG_PEEK
from typing import Any, NamedTuple
from urllib.parse import unquote

import httptools
import trio
from hypercorn.utils import parse_socket_addr

from proxy.core.errors import (
    HeaderTooLarge,
    LectrError,
    MalformedHTTP,
    MethodNotAllowed,
    RequestTimeout,
    TooManyConnections,
    TransferCodingNotImplemented,
    UpgradeRefused,
    VersionNotSupported,
)
from proxy.http import sockio
from proxy.http.fields import ALLOW, valid_field

log = logging.getLogger("lectr.server")

MAX_RECV = 2**16
# Bytes of a pipelined next request buffered while the current one is answered.
MAX_PIPELINED = 2**16
# Above this, a body is not copied into one buffer with the head: both go in one gathered write.
COALESCE_LIMIT = 2**14
# A body the app did not read (it answered early) is read and dropped up to this size and time.
DRAIN_LIMIT = 2**22
DRAIN_SECONDS = 10.0
_DISCONNECT = {"type": "http.disconnect"}
_BODY_END = {"type": "http.request", "body": b"", "more_body": False}
_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
# The scope extension our server adds: `await scope["extensions"][CLIENT_ALIVE]()` tells, without
# waiting, whether the client is still connected (proxy/app.py polls it instead of a watcher task).
CLIENT_ALIVE = "lectr.client_alive"
# And `scope["extensions"][CLIENT_GONE]()`, a plain call: whether a write to the client has failed
# (or CLIENT_ALIVE found it gone). A stream checks it after each chunk it relays.
CLIENT_GONE = "lectr.client_gone"
# An `http.response.start` key: the first body message follows at once, so a stream's head need
# not be written on its own (one write instead of two).
HEAD_WITH_BODY = "lectr.head_with_body"
# An `http.response.start` key: the headers came out of an HTTP parser (relayed from a provider),
# so the full validation h11 and Hypercorn would run on them again (~17 µs for 10 headers) is
# skipped. What is never skipped is the scan for CR, LF and NUL (`_injection_free`, ~0.3 µs): a
# parser upgrade must never be able to open header injection.
HEADERS_CHECKED = "lectr.headers_checked"
# An `http.disconnect` key: the request body could not be read (bad chunk framing, oversized
# trailers, too slow to arrive). Its value is the `LectrError` to answer with; `proxy.pipeline.relay.read_body`
# raises it, so the client gets that JSON error (and the event its status) instead of a 499.
BODY_ERROR = "lectr.body_error"
# Defaults of the limits `install()` takes from Lectr's settings (README, Configuration).
MAX_CONNECTIONS = 10_000
BODY_TIMEOUT = 60.0
# Request versions served. HTTP/0.9 (no version) is closed without an answer (it has no status
# line to send); any other (HTTP/2.0 on plain TCP, HTTP/1.2, ...) is answered 505.
_VERSIONS = ("1.1", "1.0")


class Limits:
    """What one worker allows its clients: open connections, and seconds to send a request body."""

    __slots__ = ("max_connections", "body_timeout")

    def __init__(self, max_connections: int = MAX_CONNECTIONS, body_timeout: float | None = BODY_TIMEOUT) -> None:
        self.max_connections = max_connections
        self.body_timeout = body_timeout or None


class Hosted(NamedTuple):
    """What Hypercorn's trio worker hands each connection before its stream: the first four
    arguments of its `TCPServer` (the same objects for every connection of one worker)."""

    app: Any
    config: Any
    context: Any
    state: Any


class Setup(NamedTuple):
    """What `install()` settles once for every connection: Hypercorn's own `TCPServer` (`stock`:
    for what this module does not serve, and for HTTP/2 handed over) and our limits."""

    stock: Any
    limits: Limits


def install(hypercorn_run: Any = None, limits: Limits | None = None) -> None:
    """Serve plain HTTP/1.1 connections of Hypercorn's trio worker with `serve_connection`."""
    if hypercorn_run is None:
        import hypercorn.trio.run as hypercorn_run
    stock = getattr(hypercorn_run.TCPServer, "stock", hypercorn_run.TCPServer)
    setup = Setup(stock, limits or Limits())

    def factory(app: Any, config: Any, context: Any, state: Any, stream: Any) -> Any:
        # Hypercorn's `TCPServer(app, config, context, state, stream)` shape: it calls this per connection.
        if (
            not isinstance(stream, trio.SocketStream)
            or config.accesslog is not None
            or config.statsd_host
            or config.server_names
        ):
            return stock(app, config, context, state, stream)
        return serve_connection(Hosted(app, config, context, state), stream, setup)

    factory.stock = stock  # type: ignore[attr-defined]
    hypercorn_run.TCPServer = factory


def uninstall(hypercorn_run: Any = None) -> None:
    if hypercorn_run is None:
        import hypercorn.trio.run as hypercorn_run
    hypercorn_run.TCPServer = getattr(hypercorn_run.TCPServer, "stock", hypercorn_run.TCPServer)


async def serve_connection(worker: Hosted, stream: Any, setup: Setup) -> None:
    """Serve one connection; never let a failure here reach the worker's listener nursery."""
    limits = setup.limits
    idle = _Idle.of(worker.context)
    if idle.connections >= limits.max_connections:
        await _refuse(stream)
        return
    idle.connections += 1
    handoff = connection = None
    try:
        connection = Connection(worker, stream, limits.body_timeout)
        handoff = await connection.run()
    except OSError:
        pass  # the client went away (Hypercorn's TCPServer ignores these too)
    except Exception:
        log.exception("HTTP/1.1 connection failed")
    finally:
        idle.connections -= 1
        if connection is not None:
            connection.parser.release()
        if handoff is None:
            await _close(stream)
    if handoff is not None:
        await setup.stock(*worker, _Replay(stream, handoff))


async def _refuse(stream: trio.SocketStream) -> None:
    """Over the connection cap: one 503 JSON answer, written without reading the request, and close."""
    problem = TooManyConnections("this Lectr worker has too many open connections; retry shortly")
    answer = _status_line(problem.status) + _head_lines([*problem.headers(), (b"connection", b"close")])
    with trio.move_on_after(1.0):  # a client that reads nothing must not hold the slot it never got
        try:
            await stream.send_all(answer + problem.body())
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
    await _close(stream)


async def _close(stream: trio.SocketStream) -> None:
    try:
        await stream.send_eof()
    except (trio.BrokenResourceError, trio.BusyResourceError, trio.ClosedResourceError, OSError):
        pass
    finally:
        await stream.aclose()


class _Idle:
    """The worker's idle connections (cancelled together when Hypercorn starts shutting down) and
    how many connections it serves (for the cap)."""

    def __init__(self, context: Any) -> None:
        self.scopes: set[trio.CancelScope] = set()
        self.connections = 0
        self.context = context
        trio.lowlevel.spawn_system_task(self._watch, name="lectr.server.idle")

    async def _watch(self) -> None:
        try:
            await self.context.terminated.wait()
        except trio.Cancelled:
            return
        for scope in list(self.scopes):
            scope.cancel()

    @classmethod
    def of(cls, context: Any) -> _Idle:
        idle = getattr(context, "_lectr_idle", None)
        if idle is None:
            idle = context._lectr_idle = cls(context)
        return idle


class _Request:
    """A request head as the parser saw it."""

    __slots__ = (
        "method",
        "target",
        "version",
        "headers",
        "keep_alive",
        "expect_continue",
        "length",
        "chunked",
        "upgrade",
    )

    def __init__(self) -> None:
        self.method = b""
        self.target = b""
        self.version = "1.1"
        self.headers: list[tuple[bytes, bytes]] = []
        self.keep_alive = True
        self.expect_continue = False
        self.length: int | None = None
        self.chunked = False
        self.upgrade = False


class _Parser:
    """httptools' callbacks, turned into a queue of events: a request head, body pieces, its end.

    Beyond what llhttp checks, this is where the server's own rules are applied (RFC 9112): one
    Host; a `Transfer-Encoding` other than a lone `chunked` is refused (501); versions other
    than 1.0 and 1.1 are refused; trailer fields are dropped, never merged into the headers,
    and count against the head limit, as does any run of non-body bytes after the head (a
    trailer line or chunk extension that never ends must not grow a buffer without bound).
    """

    def __init__(self, max_head: int) -> None:
        self.parser: httptools.HttpRequestParser | None = httptools.HttpRequestParser(self)
        self.events: deque[Any] = deque()  # _Request | bytes | _END
        self.current: _Request | None = None
        self.url = b""
        self.max_head = max_head
        self.head_bytes = 0
        self.in_head = False
        self.in_message = False
        self.fed_body = 0  # body bytes the current `feed` brought
        self.quiet = 0  # bytes fed since the last body byte, after the head: chunk lines, trailers
        self.error: LectrError | None = None  # what to answer once the queued events are used up
        self.silent = False  # HTTP/0.9: close without an answer
        self.eof = False
        # The bytes a head may be in: this feed, after what earlier feeds of an unfinished head left.
        self.window = b""
        self.carry = b""

    def release(self) -> None:
        """Drop the C parser, which holds our callbacks as we hold it: a cycle that would otherwise
        wait for the garbage collector (one per connection; see `transport._Response._done`)."""
        self.parser = None
        self.events.clear()

    def feed(self, data: bytes) -> None:
        parser = self.parser
        if self.error is not None or parser is None:
            return
        if not data:
            self.eof = True
            return
        self.fed_body = 0
        self.window = self.carry + data if self.carry else data
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # CONNECT, or `Connection: upgrade`: llhttp stops here, leaving any body unparsed as the
            # new protocol's bytes, so what the app would be handed is misframed. Refused instead.
            request = self.current
            if request is not None and self.error is None:
                while self.events and self.events[-1] is not request:
                    self.events.pop()
                if self.events:
                    self.events.pop()
                self.error = (
                    MethodNotAllowed("CONNECT is not served by this proxy.", headers=[ALLOW])
                    if request.method == b"CONNECT"
                    else UpgradeRefused()
                )
        except httptools.HttpParserError:
            if self.error is None:
                self.error = MalformedHTTP(_MALFORMED)
        self.carry = self.window[-self.max_head :] if self.in_head else b""
        if self.in_head:
            self.head_bytes += len(data)
            if self.head_bytes > self.max_head:
                self.error = HeaderTooLarge("Request header fields too large.")
        elif self.in_message:
            self.quiet = self.quiet + len(data) if self.fed_body == 0 else 0
            if self.quiet > self.max_head and self.error is None:
                self.error = HeaderTooLarge("Request trailer fields (or chunk lines) too large.")

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.current = _Request()
        self.url = b""
        self.in_head = self.in_message = True
        self.head_bytes = self.quiet = 0

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self.current is not None
        if self.in_head:
            # llhttp drops the whitespace before a value, not after it (RFC 9110 §5.5: not part of it).
            self.current.headers.append((name.lower(), value.rstrip(b" \t")))
            return
        # A trailer field (after a chunked body): dropped, never a header (RFC 9110 §6.5.1: a
        # recipient must not merge trailers into the header section); its size counts.
        self.head_bytes += len(name) + len(value) + 4
        if self.head_bytes > self.max_head and self.error is None:
            self.error = HeaderTooLarge("Request trailer fields too large.")

    def on_headers_complete(self) -> None:
        request = self.current
        assert request is not None
        self.in_head = False
        if self.error is not None:
            return  # a request pipelined after a bad one: the error is answered first, then we close
        parser = self.parser
        assert parser is not None  # callbacks run inside `feed`
        request.method = parser.get_method()
        request.target = self.url
        request.version = version = parser.get_http_version()
        if version not in _VERSIONS:
            if version == "0.9":
                self.silent = True
                self.error = MalformedHTTP("HTTP/0.9 is not served.")
            else:
                self.error = VersionNotSupported(f"HTTP/{version[:8]} is not supported here; use HTTP/1.1.")
            return
        # llhttp also takes `ICE/1.0` and `RTSP/1.0` (reported as 1.0) and several spaces between
        # the parts; the request line must be exactly `method SP target SP HTTP/1.x CRLF`.
        if b"%b %b HTTP/%b\r\n" % (request.method, self.url, version.encode()) not in self.window:
            self.error = MalformedHTTP(_MALFORMED)
            return
        request.keep_alive = parser.should_keep_alive() and version == "1.1"
        hosts = codings = 0
        for name, value in request.headers:
            if name == b"host":
                hosts += 1
            elif name == b"content-length":
                request.length = int(value)
            elif name == b"transfer-encoding":
                codings += 1
                request.chunked = True
                if codings > 1 or value.strip().lower() != b"chunked":
                    self.error = TransferCodingNotImplemented(
                        "Transfer-Encoding other than a single `chunked` is not implemented."
                    )
            elif name == b"expect" and value.lower() == b"100-continue":
                request.expect_continue = version == "1.1"
        if self.error is not None:
            return
        if (hosts != 1 and version == "1.1") or hosts > 1 or not request.target.isascii():
            self.error = MalformedHTTP(_MALFORMED)
            return
        self.events.append(request)

    def on_body(self, body: bytes) -> None:
        if self.error is None:
            self.fed_body += len(body)
            self.events.append(body)

    def on_message_complete(self) -> None:
        self.in_message = False
        if self.error is None:
            self.events.append(_END)


class Connection:
    """One client connection: requests in turn, each answered by the app in this task."""

    def __init__(self, worker: Hosted, stream: trio.SocketStream, body_timeout: float | None = BODY_TIMEOUT) -> None:
        # The worker's objects in attributes of their own (not read through `worker`): every request uses them.
        self.app = worker.app
        self.config = config = worker.config
        self.context = worker.context
        self.state = worker.state
        self.stream = stream
        self.raw = sockio.raw(stream.socket)
        self.parser = _Parser(config.h11_max_incomplete_size)
        self.idle = _Idle.of(worker.context)
        self.read_timeout: float | None = config.read_timeout or None
        self.body_timeout = body_timeout
        self.requests = 0
        self.handoff: bytes | None = None
        socket = stream.socket
        self.client = parse_socket_addr(socket.family, socket.getpeername())
        self.server = parse_socket_addr(socket.family, socket.getsockname())
        # Per request:
        self.request = _Request()
        self.body_done = False
        self.body_deadline = float("inf")  # when the whole body must be in (set at its first read)
        self.body_error: LectrError | None = None  # why the body could not be read, if it could not
        self.continued = False  # `100 Continue` sent
        self.started = False
        self.ended = False
        self.gone = False  # the client closed or reset the connection
        self.must_close = False
        self.head: bytes | None = None  # a response head not yet written (sent with the first body)
        self.framing = _LENGTH  # how the response body is delimited
        self.to_send = 0  # bytes of a content-length body still to send
        self.pipelined = 0

    # -- the connection ------------------------------------------------------------------------

    async def run(self) -> bytes | None:
        """Serve requests until the connection ends; bytes to replay if HTTP/2 takes over."""
        while True:
            request = await self._next_request(sniff=self.requests == 0)
            if request is None:
                return self.handoff
            await self._serve(request)
            if not self._recycle():
                return None

    async def _next_request(self, sniff: bool) -> _Request | None:
        parser = self.parser
        deadline = trio.current_time() + self.config.keep_alive_timeout
        buffered = b""
        while True:
            if parser.events:
                event = parser.events.popleft()
                if type(event) is _Request:
                    return event
                continue  # left over from a request answered early (its body was not read)
            if parser.error is not None:
                if not parser.silent:
                    await self._answer(parser.error)
                return None
            if parser.eof:
                return None
            with trio.CancelScope(deadline=deadline) as scope:
                self.idle.scopes.add(scope)
                try:
                    data = await self._recv()
                finally:
                    self.idle.scopes.discard(scope)
            if scope.cancelled_caught or self.context.terminated.is_set():
                return None
            if sniff and data:  # HTTP/2 with prior knowledge starts with a preface, not a request
                buffered += data
                if len(buffered) < len(_H2_PREFACE) and _H2_PREFACE.startswith(buffered):
                    continue
                sniff = False
                if buffered.startswith(_H2_PREFACE):
                    self.handoff = buffered
                    return None
                data, buffered = buffered, b""
            elif buffered:  # the client left in the middle of what looked like a preface
                parser.feed(buffered)
            parser.feed(data)

    async def _recv(self) -> bytes:
        try:
            if self.read_timeout is None:
                return await sockio.receive_some(self.raw, MAX_RECV)
            with trio.move_on_after(self.read_timeout):
                return await sockio.receive_some(self.raw, MAX_RECV)
            return b""  # Hypercorn's read_timeout: treated as the client leaving
        except (OSError, trio.ClosedResourceError):
            return b""  # reset, or closed: the client is gone

    def _recycle(self) -> bool:
        return not (
            self.must_close
            or self.gone
            or not self.ended
            or not self.body_done
            or not self.request.keep_alive
            or self.context.terminated.is_set()
        )

    async def _answer(self, problem: LectrError) -> None:
        """Answer with one of our JSON errors and close the connection after it."""
        self.must_close = True
        body = problem.body()
        head = _status_line(problem.status) + _head_lines([*problem.headers(), (b"connection", b"close")])
        self.started = self.ended = True
        await self._write(head + body)

    # -- one request ---------------------------------------------------------------------------

    async def _serve(self, request: _Request) -> None:
        self.requests += 1
        self.request = request
        self.body_done = self.started = self.ended = self.gone = self.continued = False
        self.body_deadline = float("inf")
        self.body_error = None
        self.must_close = request.upgrade
        self.head = None
        self.pipelined = 0
        method = request.method.decode("ascii")
        raw_path, _, query_string = request.target.partition(b"?")
        scope = {
            "type": "http",
            "http_version": request.version,
            "asgi": {"spec_version": "2.1", "version": "3.0"},
            "method": method,
            "scheme": "http",
            "path": unquote(raw_path.decode("ascii")),
            "raw_path": raw_path,
            "query_string": query_string,
            "root_path": self.config.root_path,
            "headers": request.headers,
            "client": self.client,
            "server": self.server,
            "state": self.state.copy(),
            "extensions": {CLIENT_ALIVE: self.client_alive, CLIENT_GONE: self.client_gone},
        }
        await self.context.mark_request()
        try:
            await self.app(scope, self.receive, self.send, trio.to_thread.run_sync, trio.from_thread.run)
        except Exception:
            await self.config.log.exception("Error in ASGI Framework")
        if not self.started and not self.gone:
            await self._answer(self.body_error or LectrError("The server could not answer this request."))
        elif not self.ended:
            self.must_close = True
        elif not self.body_done and not self.gone and not self.must_close:
            await self._drain()

    async def _drain(self) -> None:
        """The app answered without reading the whole body (an early error such as a 401): read the
        rest, so the connection can take the next request and a close cannot reset the answer.
        (`send` already chose to close instead when the rest may be large or never come.)"""
        drained = 0
        with trio.move_on_after(DRAIN_SECONDS):
            while not self.body_done and not self.gone and drained <= DRAIN_LIMIT:
                message = await self._receive_body()
                drained += len(message.get("body", b""))
        if not self.body_done:
            self.must_close = True

    def _body_fits_drain(self) -> bool:
        """Whether the rest of an unread request body is small enough to drain after the answer."""
        request = self.request
        if request.expect_continue and not self.continued:
            return False
        if request.length is None:
            return not request.chunked  # no body at all
        return request.length <= DRAIN_LIMIT

    async def receive(self) -> dict[str, Any]:
        if self.gone or self.ended:
            return _DISCONNECT
        if not self.body_done:
            return await self._receive_body()
        # The body is in; what remains to learn is whether the client goes away.
        while self.pipelined <= MAX_PIPELINED:
            data = await self._recv()
            if not data:
                self.gone = True
                return _DISCONNECT
            self.pipelined += len(data)
            self.parser.feed(data)  # the next request; its events wait in the queue
        await trio.sleep_forever()  # a client far ahead of us: stop reading until this answer ends
        raise AssertionError

    async def _receive_body(self) -> dict[str, Any]:
        parser = self.parser
        events = parser.events
        if self.body_deadline == float("inf") and self.body_timeout is not None:
            self.body_deadline = trio.current_time() + self.body_timeout
        while True:
            if events:
                event = events.popleft()
                if event is _END:
                    self.body_done = True
                    return _BODY_END
                if events and events[0] is _END:  # most bodies arrive whole: say so at once
                    events.popleft()
                    self.body_done = True
                    return {"type": "http.request", "body": event, "more_body": False}
                return {"type": "http.request", "body": event, "more_body": True}
            if parser.error is not None:
                return self._body_failed(parser.error)  # bad chunk framing, oversized trailers
            if parser.eof:
                self.gone = self.must_close = True  # the client left
                return _DISCONNECT
            if self.request.expect_continue and not self.continued:
                self.continued = True
                await self._write(b"HTTP/1.1 100 Continue\r\n\r\n")
            with trio.CancelScope(deadline=self.body_deadline) as scope:
                data = await self._recv()
            if scope.cancelled_caught:
                seconds = self.body_timeout or 0
                return self._body_failed(RequestTimeout(f"the request body did not arrive within {seconds:g} s"))
            if not data:
                self.gone = True
                return _DISCONNECT
            parser.feed(data)

    def _body_failed(self, problem: LectrError) -> dict[str, Any]:
        """The body cannot be read: the app hears a disconnect carrying the error to answer with
        (or, if it does not answer, the server does); the connection closes after the answer."""
        self.body_error = problem
        self.must_close = True
        return {"type": "http.disconnect", BODY_ERROR: problem}

    def client_gone(self) -> bool:
        return self.gone

    async def client_alive(self) -> bool:
        """Whether the client is still there, without waiting: EOF (or a reset) means it left;
        bytes waiting (the rest of the body, a pipelined request) mean it is still there."""
        if self.gone:
            return False
        socket = self.stream.socket
        try:
            if not socket.is_readable():
                return True
            still_there = bool(await socket.recv(1, MSG_PEEK))
        except OSError:
            still_there = False
        self.gone = not still_there
        return still_there

    async def send(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "http.response.start" and not self.started:
            status = int(message["status"])
            headers = message.get("headers", [])
            checked = message.get(HEADERS_CHECKED, False)
            if not checked:
                headers = _validated(headers)
            request = self.request
            suppress = request.method == b"HEAD" or status in (204, 304) or status < 200
            length: int | None = None
            kept: list[tuple[bytes, bytes]] = []
            for name, value in headers:
                lower = name.lower()
                if lower == b"content-length":
                    length = int(value)
                    continue  # written once below, with the framing
                if lower == b"transfer-encoding" or lower == b"connection":
                    continue  # framing and the connection are the server's to decide
                kept.append((lower, value))
            if suppress:
                self.framing = _NONE
                if length is not None:
                    kept.append((b"content-length", b"%d" % length))
            elif length is not None:
                self.framing, self.to_send = _LENGTH, length
                kept.append((b"content-length", b"%d" % length))
            elif request.version == "1.1":
                self.framing = _CHUNKED
                kept.append((b"transfer-encoding", b"chunked"))
            else:
                self.framing = _CLOSE
                self.must_close = True
            if not self.body_done and not self._body_fits_drain():
                self.must_close = True  # answering early, with more body coming than we would drain
            if self.must_close or not request.keep_alive or self.requests >= self.config.keep_alive_max_requests:
                self.must_close = True
                kept.append((b"connection", b"close"))
            self.head = head = _status_line(status) + _head_lines(kept)
            if checked and not _injection_free(head, len(kept)):
                self.head = None
                self.must_close = True
                raise ValueError("a relayed response header holds CR, LF or NUL")
            self.started = True
            if self.framing is _CHUNKED and not message.get(HEAD_WITH_BODY, False):
                await self._flush_head()  # a stream: the client sees the headers at once
        elif kind == "http.response.body" and self.started and not self.ended:
            body = message.get("body", b"")
            more = message.get("more_body", False)
            head = self.head or b""
            self.head = None
            framing = self.framing
            if framing is _LENGTH:
                self.to_send -= len(body)
                if self.to_send < 0:
                    self.must_close = True
                    raise RuntimeError("the response body is longer than its content-length")
            elif framing is _CHUNKED and body:
                body = b"%x\r\n%b\r\n" % (len(body), body)
            elif framing is _NONE:
                body = b""
            end = b""
            if not more:
                self.ended = True
                if framing is _CHUNKED:
                    end = b"0\r\n\r\n"
                elif framing is _LENGTH and self.to_send:
                    self.must_close = True  # shorter than declared: the client must not reuse this
            if len(body) > COALESCE_LIMIT and (head or end):
                # Head, a big body and the end in one gathered write, without copying the body: a
                # second write would be a second wake-up of the client (docs/PERFORMANCE.md step 17).
                await self._write_parts((head, body, end))
            elif head or body or end:
                await self._write(head + body + end)
        else:
            raise RuntimeError(f"Unexpected ASGI message {kind!r} (started={self.started}, ended={self.ended})")

    async def _flush_head(self) -> None:
        head, self.head = self.head, None
        if head:
            await self._write(head)

    async def _write(self, data: bytes) -> None:
        """Write to the client: at once when the socket takes it (`proxy.http.sockio`: no pass through
        trio's scheduler per stream chunk), else as it drains."""
        if self.gone:
            return
        try:
            await sockio.send_all(self.raw, data)
        except (OSError, trio.ClosedResourceError):
            self.gone = True
        except BaseException:
            self.must_close = True  # cancelled mid-write: the stream is in an unknown state
            raise

    async def _write_parts(self, parts: tuple[bytes, ...]) -> None:
        """Write `parts` in order with as few `sendmsg` calls (gathered writes) as the socket takes."""
        if self.gone:
            return
        views = [memoryview(part) for part in parts if part]
        try:
            while views:
                sent = await self.stream.socket.sendmsg(views)
                while views and sent >= len(views[0]):
                    sent -= len(views.pop(0))
                if sent:
                    views[0] = views[0][sent:]
        except OSError:
            self.gone = True  # what `send_all` reports as a broken stream
        except BaseException:
            self.must_close = True
            raise


_END = object()
_NONE, _LENGTH, _CHUNKED, _CLOSE = "none", "length", "chunked", "close"
_MALFORMED = "Malformed HTTP request (request line, headers or framing); nothing was forwarded."
_STATUS_LINES = {status.value: b"HTTP/1.1 %d %b\r\n" % (status.value, status.phrase.encode()) for status in HTTPStatus}


def _status_line(status: int) -> bytes:
    return _STATUS_LINES.get(status) or b"HTTP/1.1 %d \r\n" % status


def _head_lines(headers: list[tuple[bytes, bytes]]) -> bytes:
    return b"".join([b"%b: %b\r\n" % pair for pair in headers]) + b"\r\n"


def _injection_free(head: bytes, fields: int) -> bool:
    """Whether a head built from `fields` header lines holds no CR, LF or NUL but its own line ends:
    three scans in C (~0.3 µs for a typical head), kept even for headers a parser produced."""
    lines = fields + 2  # the status line, each field, the empty line
    return head.count(b"\n") == lines and head.count(b"\r") == lines and b"\x00" not in head


def _validated(headers: Any) -> list[tuple[bytes, bytes]]:
    """An app's response headers, checked as h11 would: token names, no control characters in
    values (no header injection), surrounding whitespace stripped."""
    out = []
    for name, value in headers:
        name, value = bytes(name), bytes(value).strip()
        if not valid_field(name, value):
            raise ValueError(f"invalid response header {name[:40]!r}")
        out.append((name, value))
    return out


class _Replay:
    """A socket stream that first returns bytes already read (for Hypercorn's HTTP/2 protocol)."""

    def __init__(self, stream: trio.SocketStream, data: bytes) -> None:
        self._stream = stream
        self._data = data
        self.socket = stream.socket

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._data:
            data, self._data = self._data, b""
            return data
        return await self._stream.receive_some(max_bytes)

    async def send_all(self, data: bytes) -> None:
        await self._stream.send_all(data)

    async def send_eof(self) -> None:
        await self._stream.send_eof()

    async def aclose(self) -> None:
        await self._stream.aclose()
