"""A lean HTTP/1.1 connection handler inside Hypercorn's trio worker.

Hypercorn stays the server: its command line, config, listeners, workers, lifespan, signals and
graceful shutdown are unchanged. What this module replaces is the per-connection protocol code
for plain HTTP/1.1, where `bench/run.py`'s `floor` scenario measured Hypercorn's trio worker at
~1.2 ms of CPU per request before the app runs (a bare trio + h11 loop: ~0.3 ms). Its costs are
per request: a task and a memory channel for the app, an idle-timeout task restarted through
`nursery.start`, a lock per write and three writes per response. Here the app runs in the
connection's own task, reads the body straight from h11, and a whole answer leaves in one write.

Anything else (TLS, where ALPN may pick HTTP/2; HTTP/2 with prior knowledge; an access log or
statsd, which Hypercorn's protocol reports to) is handed to Hypercorn's own `TCPServer`.
`LECTR_HTTP1=hypercorn` turns this module off. `install()` is called by `create_app()`, so it
covers a bare `hypercorn ... "proxy.app:create_app()"` too.

Behaviour kept from Hypercorn: the scope it builds, `100 Continue` on the first `receive()`,
`http.disconnect` when the client goes away or once the response is complete, keep-alive with
`keep_alive_timeout` and `keep_alive_max_requests`, `read_timeout`, `max_requests`, idle
connections closed at once on shutdown, 500 when the app fails before answering. Errors the
server answers itself (a malformed request, an oversized head) are JSON in the proxy's one shape.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from socket import MSG_PEEK
from typing import Any
from urllib.parse import unquote

import h11
import trio
from hypercorn.utils import build_and_validate_headers, parse_socket_addr

from proxy.errors import BadRequest, HeaderTooLarge, LectrError

log = logging.getLogger("lectr.server")

MAX_RECV = 2**16
# Bytes of a pipelined next request buffered while the current one is answered.
MAX_PIPELINED = 2**16
# Above this, a body is written after the head rather than copied into one buffer with it.
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
# An `http.response.start` key: the headers came out of an HTTP parser (relayed from a provider),
# so the validation h11 and Hypercorn would run on them again (~17 µs for 10 headers) is skipped.
HEADERS_CHECKED = "lectr.headers_checked"
_REASONS = {status.value: status.phrase.encode() for status in HTTPStatus}


def install(hypercorn_run: Any = None) -> None:
    """Serve plain HTTP/1.1 connections of Hypercorn's trio worker with `serve_connection`."""
    if hypercorn_run is None:
        import hypercorn.trio.run as hypercorn_run
    stock = getattr(hypercorn_run.TCPServer, "stock", hypercorn_run.TCPServer)

    def factory(app: Any, config: Any, context: Any, state: Any, stream: Any) -> Any:
        if (
            not isinstance(stream, trio.SocketStream)
            or config.accesslog is not None
            or config.statsd_host
            or config.server_names
        ):
            return stock(app, config, context, state, stream)
        return serve_connection(app, config, context, state, stream, stock)

    factory.stock = stock  # type: ignore[attr-defined]
    hypercorn_run.TCPServer = factory


def uninstall(hypercorn_run: Any = None) -> None:
    if hypercorn_run is None:
        import hypercorn.trio.run as hypercorn_run
    hypercorn_run.TCPServer = getattr(hypercorn_run.TCPServer, "stock", hypercorn_run.TCPServer)


async def serve_connection(app: Any, config: Any, context: Any, state: Any, stream: Any, stock: Any) -> None:
    """Serve one connection; never let a failure here reach the worker's listener nursery."""
    handoff = None
    try:
        connection = Connection(app, config, context, state, stream)
        handoff = await connection.run()
    except OSError:
        pass  # the client went away (Hypercorn's TCPServer ignores these too)
    except Exception:
        log.exception("HTTP/1.1 connection failed")
    finally:
        if handoff is None:
            await _close(stream)
    if handoff is not None:
        await stock(app, config, context, state, _Replay(stream, handoff))


async def _close(stream: trio.SocketStream) -> None:
    try:
        await stream.send_eof()
    except (trio.BrokenResourceError, trio.BusyResourceError, trio.ClosedResourceError, OSError):
        pass
    finally:
        await stream.aclose()


class _Idle:
    """The worker's idle connections: cancelled together when Hypercorn starts shutting down."""

    def __init__(self, context: Any) -> None:
        self.scopes: set[trio.CancelScope] = set()
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


class Connection:
    """One client connection: requests in turn, each answered by the app in this task."""

    def __init__(self, app: Any, config: Any, context: Any, state: Any, stream: trio.SocketStream) -> None:
        self.app = app
        self.config = config
        self.context = context
        self.state = state
        self.stream = stream
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=config.h11_max_incomplete_size)
        self.idle = _Idle.of(context)
        self.read_timeout: float | None = config.read_timeout or None
        self.requests = 0
        self.handoff: bytes | None = None
        socket = stream.socket
        self.client = parse_socket_addr(socket.family, socket.getpeername())
        self.server = parse_socket_addr(socket.family, socket.getsockname())
        # Per request:
        self.method = ""
        self.body_done = False
        self.started = False
        self.ended = False
        self.gone = False  # the client closed or reset the connection
        self.must_close = False
        self.head: h11.Response | None = None
        self.suppress_body = False
        self.pipelined = 0
        self.pending: Any = None  # an h11 event read ahead while reading the body
        self.request_headers: Any = ()

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

    async def _next_request(self, sniff: bool) -> h11.Request | None:
        deadline = trio.current_time() + self.config.keep_alive_timeout
        buffered = b""
        while True:
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError as error:
                await self._protocol_error(error)
                return None
            if isinstance(event, h11.Request):
                return event
            if event is not h11.NEED_DATA:  # ConnectionClosed
                return None
            with trio.CancelScope(deadline=deadline) as scope:
                self.idle.scopes.add(scope)
                try:
                    data = await self._recv()
                finally:
                    self.idle.scopes.discard(scope)
            if scope.cancelled_caught or self.context.terminated.is_set():
                return None
            if sniff and data:  # HTTP/2 with prior knowledge starts with a preface h11 can't parse
                buffered += data
                if len(buffered) < len(_H2_PREFACE) and _H2_PREFACE.startswith(buffered):
                    continue
                sniff = False
                if buffered.startswith(_H2_PREFACE):
                    self.handoff = buffered
                    return None
                data, buffered = buffered, b""
            elif buffered:  # the client left in the middle of what looked like a preface
                self.h11.receive_data(buffered)
            self.h11.receive_data(data)

    async def _recv(self) -> bytes:
        try:
            if self.read_timeout is None:
                return await self.stream.receive_some(MAX_RECV)
            with trio.move_on_after(self.read_timeout):
                return await self.stream.receive_some(MAX_RECV)
            return b""  # Hypercorn's read_timeout: treated as the client leaving
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return b""

    def _recycle(self) -> bool:
        if self.must_close or self.gone or self.context.terminated.is_set():
            return False
        if self.h11.our_state is not h11.DONE or self.h11.their_state is not h11.DONE:
            return False
        try:
            self.h11.start_next_cycle()
        except h11.LocalProtocolError:
            return False
        return True

    async def _protocol_error(self, error: h11.RemoteProtocolError) -> None:
        if self.h11.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        if error.error_status_hint == 431:
            problem: LectrError = HeaderTooLarge("Request header fields too large.")
        else:
            problem = BadRequest("Malformed HTTP request (request line, headers or framing); nothing was forwarded.")
        await self._answer(problem)

    async def _answer(self, problem: LectrError) -> None:
        """Answer with one of our JSON errors and close the connection after it."""
        self.must_close = True
        headers = [*problem.headers(), (b"connection", b"close")]
        try:
            data = self.h11.send(
                h11.Response(status_code=problem.status, headers=headers, reason=_REASONS[problem.status])
            )
            data += self.h11.send(h11.Data(data=problem.body())) + self.h11.send(h11.EndOfMessage())
        except h11.LocalProtocolError:
            return
        self.started = self.ended = True
        await self._write(data)

    # -- one request ---------------------------------------------------------------------------

    async def _serve(self, request: h11.Request) -> None:
        self.requests += 1
        self.body_done = self.started = self.ended = self.gone = False
        self.head = self.pending = None
        self.pipelined = 0
        self.method = method = request.method.decode("ascii").upper()
        self.request_headers = request.headers
        raw_path, _, query_string = request.target.partition(b"?")
        scope = {
            "type": "http",
            "http_version": request.http_version.decode(),
            "asgi": {"spec_version": "2.1", "version": "3.0"},
            "method": method,
            "scheme": "http",
            "path": unquote(raw_path.decode("ascii")),
            "raw_path": raw_path,
            "query_string": query_string,
            "root_path": self.config.root_path,
            "headers": list(request.headers),
            "client": self.client,
            "server": self.server,
            "state": self.state.copy(),
            "extensions": {CLIENT_ALIVE: self.client_alive},
        }
        await self.context.mark_request()
        try:
            await self.app(scope, self.receive, self.send, trio.to_thread.run_sync, trio.from_thread.run)
        except Exception:
            await self.config.log.exception("Error in ASGI Framework")
        if not self.started and not self.gone:
            await self._answer(LectrError("The server could not answer this request."))
        elif not self.ended:
            self.must_close = True
        elif not self.body_done and not self.gone and not self.must_close:
            await self._drain()

    async def _drain(self) -> None:
        """The app answered without reading the whole body (an early error such as a 401): read the
        rest, so the connection can take the next request and a close cannot reset the answer."""
        if self.h11.they_are_waiting_for_100_continue:
            self.must_close = True  # the client will not send a body it was not invited to send
            return
        drained = 0
        with trio.move_on_after(DRAIN_SECONDS):
            while not self.body_done and not self.gone and drained <= DRAIN_LIMIT:
                message = await self._receive_body()
                drained += len(message.get("body", b""))
        if not self.body_done:
            self.must_close = True

    def _body_fits_drain(self) -> bool:
        """Whether the rest of an unread request body is small enough to drain after the answer."""
        if self.h11.they_are_waiting_for_100_continue:
            return False
        for name, value in self.request_headers:
            if name == b"content-length":
                return int(value) <= DRAIN_LIMIT
        return False  # chunked: no telling

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
            self.h11.receive_data(data)  # the next request; h11 keeps it for the next cycle
        await trio.sleep_forever()  # a client far ahead of us: stop reading until this answer ends
        raise AssertionError

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

    async def _receive_body(self) -> dict[str, Any]:
        connection = self.h11
        pending, self.pending = self.pending, None
        if pending is not None:  # an event read ahead by the last call
            if type(pending) is h11.Data:
                return {"type": "http.request", "body": bytes(pending.data), "more_body": True}
            if type(pending) is h11.EndOfMessage:
                self.body_done = True
                return _BODY_END
            self.gone = True  # ConnectionClosed
            return _DISCONNECT
        while True:
            if connection.they_are_waiting_for_100_continue:
                await self._write(connection.send(h11.InformationalResponse(status_code=100, headers=[])))
            try:
                event = connection.next_event()
                if type(event) is h11.Data:
                    # Most bodies arrive whole: say so in the same message when h11 already knows.
                    after = connection.next_event()
                    if type(after) is h11.EndOfMessage:
                        self.body_done = True
                        return {"type": "http.request", "body": bytes(event.data), "more_body": False}
                    if after is not h11.NEED_DATA:
                        self.pending = after
                    return {"type": "http.request", "body": bytes(event.data), "more_body": True}
            except h11.RemoteProtocolError:
                self.gone = self.must_close = True  # a malformed body: the app sees a disconnect
                return _DISCONNECT
            if isinstance(event, h11.EndOfMessage):
                self.body_done = True
                return _BODY_END
            if event is h11.NEED_DATA:
                data = await self._recv()
                if not data:
                    self.gone = True
                    return _DISCONNECT
                connection.receive_data(data)
                continue
            self.gone = True  # ConnectionClosed
            return _DISCONNECT

    async def send(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "http.response.start" and not self.started:
            self.started = True
            status = int(message["status"])
            checked = message.get(HEADERS_CHECKED, False)
            headers = list(message["headers"]) if checked else build_and_validate_headers(message.get("headers", []))
            if not self.body_done and self.h11.their_state is h11.SEND_BODY and not self._body_fits_drain():
                self.must_close = True  # answering early, with more body coming than we would drain
            if self.must_close or self.requests >= self.config.keep_alive_max_requests:
                headers.append((b"connection", b"close"))
            self.suppress_body = self.method == "HEAD" or status in (204, 304) or status < 200
            self.head = h11.Response(
                status_code=status, headers=headers, reason=_REASONS.get(status, b""), _parsed=checked
            )
            if not any(name == b"content-length" for name, _ in headers):
                await self._flush_head()  # a stream: the client sees the headers at once
        elif kind == "http.response.body" and self.started and not self.ended:
            body = message.get("body", b"")
            more = message.get("more_body", False)
            connection = self.h11
            data = connection.send(self.head) if self.head is not None else b""
            self.head = None
            if body and not self.suppress_body:
                if len(body) > COALESCE_LIMIT and data:
                    await self._write(data)
                    data = b""
                data += connection.send(h11.Data(data=body))
            if not more:
                self.ended = True
                data += connection.send(h11.EndOfMessage())
            if data:
                await self._write(data)
        else:
            raise RuntimeError(f"Unexpected ASGI message {kind!r} (started={self.started}, ended={self.ended})")

    async def _flush_head(self) -> None:
        head, self.head = self.head, None
        assert head is not None
        await self._write(self.h11.send(head))

    async def _write(self, data: bytes) -> None:
        if self.gone:
            return
        try:
            await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.gone = True
        except BaseException:
            self.must_close = True  # cancelled mid-write: the stream is in an unknown state
            raise


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
