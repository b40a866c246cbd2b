"""A lean httpx transport: HTTP/1.1 over h11 and trio streams, with a LIFO stack of idle connections.

Why: httpx's default transport (httpcore 1.0) cost ~2.5 ms CPU per request here, and its pool walks
every open connection (with an `is_idle` pass per idle one) on each request start and response
close: O(n^2) per event, which stalled the worker at 2,000 open streams (docs/PERFORMANCE.md).
This transport keeps only what the proxy needs:

- per origin (scheme, host, port) a stack of idle connections; a request takes the top one, checks
  that one only (h11 state idle, socket not readable, not past `idle_expiry`) and returns it when
  the response body has been read to the end; extras above `max_idle_per_origin` are closed.
  Nothing ever scans all connections.
- a request whose *reused* connection turns out dead before any response byte (the server closed
  a stale keep-alive) is retried once on a fresh connection.
- timeouts come from `request.extensions["timeout"]`; errors are raised as httpx's own exception
  types (`ConnectError`, `ConnectTimeout`, `ReadTimeout`, `WriteTimeout`, `ReadError`,
  `WriteError`, `RemoteProtocolError`), so callers (`proxy.upstream.map_error`) see no difference.
- response bodies are the raw bytes as they arrive (no decoding): the proxy relays them as is.
  Closing a response before its end closes its connection; that is how a client that leaves
  cancels the upstream request.

The proxy's hot path calls `LectrTransport.open` directly with a `Destination` (a URL parsed
once and cached) and gets a `Reply`: no `httpx.AsyncClient` (its auth, redirect and cookie
machinery cost ~15 % of the proxy's CPU per request, and a shared cookie jar has no place in a
multi-tenant proxy), no `httpx.Request`/`Response` objects. `handle_async_request` keeps the
transport usable under `httpx.AsyncClient(transport=...)`, on the same code.

No HTTP/2, no proxies, no request-body streaming (bodies are sent in one piece).
"""

from __future__ import annotations

import re
import ssl
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import nullcontext
from functools import lru_cache
from typing import Any, NamedTuple
from urllib.parse import quote, urlsplit

import h11
import httpx
import trio

_READ_SIZE = 65536
_DEFAULT_PORTS = {b"http": 80, b"https": 443}
_FRAMING = (b"content-length", b"transfer-encoding")
_BODY_METHODS = (b"POST", b"PUT", b"PATCH")

_TARGET = re.compile(rb"[\x21-\x7e]+")
_HOST = re.compile(rb"[A-Za-z0-9._~%!$&'()*+,;=:\[\]-]+")

Origin = tuple[bytes, bytes, int]


class Timeouts(NamedTuple):
    """Seconds (None: no limit) to connect, to wait for each read, to send the request."""

    connect: float | None = None
    read: float | None = None
    write: float | None = None


class Destination(NamedTuple):
    """Where a request goes: the pool's key, the request target and the Host header."""

    origin: Origin
    target: bytes
    host: bytes


@lru_cache(maxsize=4096)
def destination(url: str) -> Destination:
    """Parse `url` once (cached: a proxy sends to a handful of URLs). ValueError if unusable."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower().encode("ascii")
    if scheme not in _DEFAULT_PORTS:
        raise ValueError(f"unsupported URL scheme {parts.scheme!r}")
    if not parts.hostname:
        raise ValueError("the URL has no host")
    host = parts.hostname.encode("idna")
    netloc = parts.netloc.rpartition("@")[2]  # never userinfo
    target = parts.path or "/"
    if parts.query:
        target = f"{target}?{parts.query}"
    if not target.isascii() or not _TARGET.fullmatch(target.encode("ascii")):
        target = quote(target, safe="/?&=%:@!$'()*+,;~-._[]")
    host_header = netloc.encode("idna")
    if not _HOST.fullmatch(host_header):
        raise ValueError("the URL's host cannot be sent")
    return Destination((scheme, host, parts.port or _DEFAULT_PORTS[scheme]), target.encode("ascii"), host_header)


# While waiting on the upstream, the caller's `alive` check runs this often (seconds).
ALIVE_POLL = 1.0

Alive = Callable[[], Awaitable[bool]]


class Abandoned(Exception):
    """The caller's `alive` check said no while waiting on the upstream: the request was dropped
    (its connection closed, so the upstream sees the disconnect)."""


class _Stale(Exception):
    """A reused connection failed before any response byte: safe to send the request again."""


def _limit(seconds: float | None) -> Any:
    """A scope raising `trio.TooSlowError` after `seconds` (None: no limit), for the rare paths."""
    return nullcontext() if seconds is None else trio.fail_after(seconds)


async def _within(seconds: float | None, operation: Awaitable[Any]) -> Any:
    """`await operation`, raising `trio.TooSlowError` after `seconds` (None: no limit). A bare cancel
    scope: cheaper than `trio.fail_after` (a generator-based context manager) on the per-chunk path."""
    if seconds is None:
        return await operation
    with trio.CancelScope(deadline=trio.current_time() + seconds):
        return await operation
    raise trio.TooSlowError


class _Connection:
    """One upstream HTTP/1.1 connection: the trio stream, its h11 state and its socket."""

    __slots__ = ("stream", "socket", "h11", "idle_since")

    def __init__(self, stream: trio.abc.Stream, socket: Any) -> None:
        self.stream = stream
        self.socket = socket  # the trio socket under any TLS layer: for liveness checks and closing
        self.h11 = h11.Connection(h11.CLIENT)
        self.idle_since = 0.0

    def usable(self) -> bool:
        """Ready for a new request: both sides idle and nothing (EOF, stray bytes) waiting to be read."""
        if self.h11.our_state is not h11.IDLE or self.h11.their_state is not h11.IDLE:
            return False
        try:
            return self.socket.fileno() != -1 and not self.socket.is_readable()
        except (OSError, ValueError):
            return False

    async def receive(self, timeout: float | None, alive: Alive | None = None) -> bytes:
        """The next bytes from the server. With `alive`, the wait is cut every `ALIVE_POLL` seconds
        to ask whether the caller still wants the answer (a cancelled `receive_some` loses no data):
        a cheaper way to notice a client that left than a watcher task per request."""
        if alive is None:
            return await _within(timeout, self.stream.receive_some(_READ_SIZE))
        deadline = trio.current_time() + timeout if timeout is not None else float("inf")
        while True:
            with trio.CancelScope(deadline=min(deadline, trio.current_time() + ALIVE_POLL)):
                return await self.stream.receive_some(_READ_SIZE)  # type: ignore[return-value]
            if trio.current_time() >= deadline:
                raise trio.TooSlowError
            if not await alive():
                raise Abandoned

    def close(self) -> None:
        """Close at once: synchronous (no TLS close_notify), so cancellation cannot interrupt it, and
        the peer sees the connection end immediately."""
        try:
            self.socket.close()
        except OSError:
            pass


class LectrTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 transport for `httpx.AsyncClient(transport=...)`; see the module docstring."""

    def __init__(
        self,
        *,
        max_idle_per_origin: int = 100,
        idle_expiry: float = 60.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.max_idle_per_origin = max_idle_per_origin
        self.idle_expiry = idle_expiry
        self._ssl_context = ssl_context
        self._idle: dict[Origin, deque[_Connection]] = {}
        self._closed = False
        self.connections_opened = 0  # for tests and metrics: how many TCP connections were made

    # -- the pool: O(1) per request, never a scan ------------------------------------------------

    def idle_count(self, origin: Origin | None = None) -> int:
        """Idle connections held (for one origin, or all): for tests and diagnostics only."""
        if origin is not None:
            return len(self._idle.get(origin, ()))
        return sum(len(stack) for stack in self._idle.values())

    def _take(self, origin: Origin) -> _Connection | None:
        """The most recently used idle connection of `origin` that is still usable, if any. Dead
        ones met on the way are dropped for good; an expired one means all below it are too."""
        stack = self._idle.get(origin)
        while stack:
            conn = stack.pop()
            if trio.current_time() - conn.idle_since > self.idle_expiry:
                conn.close()
                while stack:
                    stack.pop().close()
                return None
            if conn.usable():
                return conn
            conn.close()
        return None

    def _release(self, conn: _Connection, origin: Origin) -> None:
        """After a complete response: back on the stack if h11 can start a new cycle, else closed."""
        h = conn.h11
        if self._closed or h.our_state is not h11.DONE or h.their_state is not h11.DONE:
            conn.close()
            return
        try:
            h.start_next_cycle()
        except h11.LocalProtocolError:
            conn.close()
            return
        now = conn.idle_since = trio.current_time()
        stack = self._idle.get(origin)
        if stack is None:
            stack = self._idle[origin] = deque()
        stack.append(conn)
        if len(stack) > self.max_idle_per_origin:
            stack.popleft().close()  # the oldest: the likeliest to be closed by the server soon
        # LIFO leaves the bottom unused under steady load: expire from there (amortised O(1)).
        while now - stack[0].idle_since > self.idle_expiry:
            stack.popleft().close()

    async def _connect(self, request: httpx.Request | None, origin: Origin, timeout: float | None) -> _Connection:
        scheme, host, port = origin
        hostname = host.decode("ascii")
        try:
            with _limit(timeout):
                tcp = await trio.open_tcp_stream(hostname, port)
                stream: trio.abc.Stream = tcp
                if scheme == b"https":
                    if self._ssl_context is None:
                        self._ssl_context = ssl.create_default_context()
                        self._ssl_context.set_alpn_protocols(["http/1.1"])
                    stream = trio.SSLStream(tcp, self._ssl_context, server_hostname=hostname, https_compatible=True)
                    try:
                        await stream.do_handshake()
                    except BaseException:
                        tcp.socket.close()
                        raise
        except trio.TooSlowError as exc:
            raise httpx.ConnectTimeout("timed out connecting", request=request) from exc
        except (OSError, trio.BrokenResourceError) as exc:
            raise httpx.ConnectError(f"could not connect: {exc}", request=request) from exc
        self.connections_opened += 1
        return _Connection(stream, tcp.socket)

    # -- one exchange ---------------------------------------------------------------------------

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """The httpx transport interface, over `open`."""
        url = request.url
        scheme = url.raw_scheme
        if scheme not in _DEFAULT_PORTS:
            raise httpx.UnsupportedProtocol(f"unsupported URL scheme {scheme!r}", request=request)
        where = Destination((scheme, url.raw_host, url.port or _DEFAULT_PORTS[scheme]), url.raw_path, url.netloc)
        timeouts: dict[str, float | None] = request.extensions.get("timeout") or {}
        try:
            body = request.content
        except httpx.RequestNotRead:
            body = await request.aread()
        reply = await self.open(
            request.method.encode("ascii"),
            where,
            request.headers.raw,
            body,
            Timeouts(timeouts.get("connect"), timeouts.get("read"), timeouts.get("write")),
            request=request,
        )
        return httpx.Response(
            reply.status_code,
            headers=reply.headers,
            stream=reply.body,
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": reply.reason},
        )

    async def open(
        self,
        method: bytes,
        where: Destination,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        timeouts: Timeouts,
        *,
        alive: Alive | None = None,
        checked: bool = False,
        request: httpx.Request | None = None,
    ) -> Reply:
        """Send one request and return the response head with its body still to read. Failures
        raise httpx's exception types (`request` only labels them); `Abandoned` if `alive` (asked
        every `ALIVE_POLL` seconds while waiting) says the answer is no longer wanted. `checked`
        says the headers were validated already (they come out of an HTTP parser)."""
        try:
            # `checked`: the headers come out of an HTTP parser (a client's request), so h11's
            # per-header validation (~2 µs each) is skipped; framing and Host are still checked.
            event = h11.Request(
                method=method, target=where.target, headers=_headers(headers, where.host, method, body), _parsed=checked
            )
        except h11.LocalProtocolError as exc:
            raise httpx.LocalProtocolError(str(exc), request=request) from exc  # type: ignore[arg-type]
        origin = where.origin
        head: h11.Response | None = None
        conn = self._take(origin)
        if conn is not None:
            try:
                head = await self._exchange(conn, request, event, body, timeouts, alive, reused=True)
            except _Stale:  # closed by the server while idle: once more, on a new connection
                conn.close()
        if head is None:
            conn = await self._connect(request, origin, timeouts.connect)
            head = await self._exchange(conn, request, event, body, timeouts, alive, reused=False)
        assert conn is not None
        return Reply(head, _ResponseStream(self, conn, origin, request, timeouts.read, alive))

    async def _exchange(
        self,
        conn: _Connection,
        request: httpx.Request | None,
        event: h11.Request,
        body: bytes,
        timeouts: Timeouts,
        alive: Alive | None,
        *,
        reused: bool,
    ) -> h11.Response:
        """Send the request, read the response head. On a `reused` connection, failing before any
        response byte raises `_Stale`; any other failure closes `conn` and raises an httpx error."""
        h = conn.h11
        try:
            data = h.send(event)
            if body:
                data += h.send(h11.Data(data=body))
            data += h.send(h11.EndOfMessage())
            try:
                await _within(timeouts.write, conn.stream.send_all(data))
            except trio.TooSlowError as exc:
                raise httpx.WriteTimeout("timed out sending the request", request=request) from exc
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                if reused:
                    raise _Stale from exc
                raise httpx.WriteError(f"sending the request failed: {exc}", request=request) from exc
            read_timeout = timeouts.read
            seen = False
            while True:
                got = h.next_event()
                if got is h11.NEED_DATA:
                    try:
                        chunk = await conn.receive(read_timeout, alive)
                    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                        if reused and not seen:
                            raise _Stale from exc
                        raise httpx.ReadError(f"reading the response failed: {exc}", request=request) from exc
                    if not chunk and not seen:
                        if reused:
                            raise _Stale
                        raise httpx.RemoteProtocolError(
                            "server disconnected without sending a response", request=request
                        )
                    seen = True
                    h.receive_data(chunk)
                elif type(got) is h11.Response:
                    return got
                elif type(got) is not h11.InformationalResponse:  # ConnectionClosed, PAUSED
                    raise httpx.RemoteProtocolError(f"unexpected {type(got).__name__} from server", request=request)
        except trio.TooSlowError as exc:
            conn.close()
            raise httpx.ReadTimeout("timed out waiting for the response", request=request) from exc
        except h11.RemoteProtocolError as exc:
            conn.close()
            raise httpx.RemoteProtocolError(str(exc), request=request) from exc
        except h11.LocalProtocolError as exc:
            conn.close()
            raise httpx.LocalProtocolError(str(exc), request=request) from exc
        except BaseException:  # httpx errors, _Stale, cancellation: the connection is in an unknown state
            conn.close()
            raise

    async def aclose(self) -> None:
        """Close every idle connection; connections still in use close when their response does."""
        self._closed = True
        idle, self._idle = self._idle, {}
        for stack in idle.values():
            for conn in stack:
                conn.close()


def _headers(headers: list[tuple[bytes, bytes]], host: bytes, method: bytes, body: bytes) -> list[tuple[bytes, bytes]]:
    """`headers` with Host ensured and the framing set for `body` (sent in one piece)."""
    out: list[tuple[bytes, bytes]] = []
    has_host = had_length = False
    for name, value in headers:
        lower = name.lower()
        if lower in _FRAMING:
            had_length = True
            continue
        if lower == b"host":
            has_host = True
        out.append((name, value))
    if not has_host:
        out.insert(0, (b"Host", host))
    if body or had_length or method in _BODY_METHODS:
        out.append((b"Content-Length", str(len(body)).encode()))
    return out


class Reply:
    """A response head, and its body as raw bytes to read (`aiter_raw`) and close (`aclose`)."""

    __slots__ = ("status_code", "reason", "headers", "body")

    def __init__(self, head: h11.Response, body: _ResponseStream) -> None:
        self.status_code = head.status_code
        self.reason = head.reason
        self.headers: list[tuple[bytes, bytes]] = head.headers.raw_items()
        self.body = body

    def header(self, name: bytes) -> bytes:
        """The first value of header `name` (lower case), or b""."""
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return b""

    def aiter_raw(self) -> AsyncIterator[bytes]:
        return self.body.__aiter__()

    async def aclose(self) -> None:
        await self.body.aclose()


class _ResponseStream(httpx.AsyncByteStream):
    """A response body: raw bytes as they arrive. The connection goes back to the pool at the end of
    the body; `aclose` before that closes it (the upstream sees the disconnect)."""

    def __init__(
        self,
        transport: LectrTransport,
        conn: _Connection,
        origin: Origin,
        request: httpx.Request | None,
        timeout: float | None,
        alive: Alive | None = None,
    ) -> None:
        self._alive = alive
        self._transport = transport
        self._conn: _Connection | None = conn
        self._origin = origin
        self._request = request
        self._timeout = timeout

    async def __aiter__(self) -> AsyncIterator[bytes]:
        conn = self._conn
        if conn is None:
            return
        h = conn.h11
        request = self._request
        try:
            while True:
                event = h.next_event()
                if event is h11.NEED_DATA:
                    h.receive_data(await conn.receive(self._timeout, self._alive))
                elif type(event) is h11.Data:
                    yield bytes(event.data)
                elif type(event) is h11.EndOfMessage:
                    self._conn = None
                    self._transport._release(conn, self._origin)
                    return
                else:  # PAUSED (a protocol switch) or ConnectionClosed: nothing more to read here
                    self._close()
                    return
        except trio.TooSlowError as exc:
            self._close()
            raise httpx.ReadTimeout("timed out waiting for the response body", request=request) from exc
        except h11.RemoteProtocolError as exc:
            self._close()
            raise httpx.RemoteProtocolError(str(exc), request=request) from exc
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            self._close()
            raise httpx.ReadError(f"reading the response body failed: {exc}", request=request) from exc
        except Abandoned:
            self._close()
            raise

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    async def aclose(self) -> None:
        """Close the response. If the rest of the body is already buffered (no body, a short error
        body skipped by a retry), the connection is kept; otherwise it is closed. Nothing here
        awaits (the socket closes synchronously), so this also completes inside a cancelled scope
        (a client that left) without needing a shield."""
        conn = self._conn
        if conn is None:
            return
        try:
            while True:
                event = conn.h11.next_event()
                if type(event) is h11.EndOfMessage:
                    self._conn = None
                    self._transport._release(conn, self._origin)
                    return
                if type(event) is not h11.Data:  # NEED_DATA, PAUSED, ConnectionClosed
                    break
        except h11.ProtocolError:
            pass
        self._close()
