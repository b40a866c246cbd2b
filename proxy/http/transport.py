"""A lean httpx transport: HTTP/1.1 over trio streams, with a LIFO stack of idle connections.

Why: httpx's default transport (httpcore 1.0) cost ~2.5 ms CPU per request here, and its pool walks
every open connection (with an `is_idle` pass per idle one) on each request start and response
close: O(n^2) per event, which stalled the worker at 2,000 open streams (docs/PERFORMANCE.md).
This transport keeps only what the proxy needs:

- per origin (scheme, host, port) a stack of idle connections; a request takes the top one, checks
  that one only (last answer ended cleanly with nothing after it, socket not readable, TLS layer empty,
  not past `idle_expiry`) and returns it when the response body has been read to the end; extras above
  `max_idle_per_origin` are closed.
  Nothing ever scans all connections.
- a connection is reused only when nothing is left after its answer: not in the socket, not in
  the parser (any byte after the end of the message: a longer body than its Content-Length, a body
  on a HEAD/204/304, a second answer, garbage), not in the TLS layer (decrypted bytes in the
  `SSLObject`, records in trio's incoming BIO). Otherwise the next request, from any tenant, would
  read them as its answer. A complete answer followed by garbage is still delivered, then closed.
- a request whose *reused* connection turns out dead is sent again once on a fresh connection only
  when that is safe: the send itself failed (so the request never reached the server whole), or
  the method is idempotent (RFC 9110 §9.2.2). A POST sent in full and met by a close or reset
  without a response byte may have been processed (charged): `RemoteProtocolError`, never resent.
- a response's head, with any interim (1xx) answers and its trailers, is bounded by
  `MAX_HEAD_BYTES` (`RemoteProtocolError` beyond). Trailers are read and dropped: never headers.
- timeouts come from `request.extensions["timeout"]`; errors are raised as httpx's own exception
  types (`ConnectError`, `ConnectTimeout`, `ReadTimeout`, `WriteTimeout`, `ReadError`,
  `WriteError`, `RemoteProtocolError`), so callers (`proxy.pipeline.upstream.map_error`) see no difference.
- response bodies are the raw bytes as they arrive (no decoding): the proxy relays them as is.
  Closing a response before its end closes its connection; that is how a client that leaves
  cancels the upstream request.

The proxy's hot path calls `LectrTransport.open` directly with an `Outbound` (method, a
`Destination`: a URL parsed once and cached, headers, body) and gets a `Reply`: no
`httpx.AsyncClient` (its auth, redirect and cookie machinery cost ~15 % of the proxy's CPU per
request, and a shared cookie jar has no place in a multi-tenant proxy), no
`httpx.Request`/`Response` objects. `handle_async_request` keeps the
transport usable under `httpx.AsyncClient(transport=...)`, on the same code.

Responses are parsed by httptools (llhttp, Node's parser, in C), one parser per answer; requests
are written here (validated unless the headers came out of a parser already; even then one C-level
scan of the written head refuses any CR, LF or NUL inside a name, value or the request line, so no
parser change can open header injection). h11 did both before and cost ~110 µs per exchange, the
largest single item in the profile after the server's own.

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

import httptools
import httpx
import trio

from proxy.core.addresses import address_forbidden
from proxy.http import sockio
from proxy.http.fields import TOKEN, valid_field
from proxy.http.watch import ALIVE_POLL as ALIVE_POLL  # re-exported: `alive` runs this often while waiting
from proxy.http.watch import Watch

_READ_SIZE = 65536
_DEFAULT_PORTS = {b"http": 80, b"https": 443}
_FRAMING = (b"content-length", b"transfer-encoding")
_BODY_METHODS = (b"POST", b"PUT", b"PATCH")
# RFC 9110 §9.2.2: sending these again has the effect of sending them once, so a reused connection
# that dies after the request went out may be retried for them (and only them) on a fresh one.
_IDEMPOTENT = frozenset((b"GET", b"HEAD", b"OPTIONS", b"DELETE", b"PUT"))
# The most a response may send outside its body: status line, headers, interim (1xx) answers,
# chunk-size lines and trailers. Providers send a few KB; a hostile upstream could otherwise send
# an endless head that httptools buffers whole. Checked per read, so at most one read (64 KiB) more.
MAX_HEAD_BYTES = 256 * 1024

_TARGET = re.compile(rb"[\x21-\x7e]+")
_HOST = re.compile(rb"[A-Za-z0-9._~%!$&'()*+,;=:\[\]-]+")

# The pool's key: (scheme, host, port), with a fourth item (True) for a guarded destination. A
# connection whose address was checked and one whose address was not never share a stack: the
# check cannot be skipped by reusing an unchecked connection to the same name (or the reverse).
Origin = tuple[bytes, bytes, int] | tuple[bytes, bytes, int, bool]


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

    @property
    def guarded(self) -> bool:
        """Whether connecting checks the address (`AddressNotAllowed`). Read from the origin, the one
        place `_connect` sees, so a Destination cannot say guarded while its connections are not."""
        return len(self.origin) > 3


class Outbound(NamedTuple):
    """One request to send, exactly as it will go out (Host and the body's framing are added):
    what `LectrTransport.open` takes. The pipeline builds it once per attempt
    (`proxy.pipeline.upstream` re-exports it) and it reaches the wire as is."""

    method: bytes
    where: Destination
    headers: list[tuple[bytes, bytes]]
    body: bytes


@lru_cache(maxsize=4096)
def destination(url: str, guarded: bool = False) -> Destination:
    """Parse `url` once (cached: a proxy sends to a handful of URLs). ValueError if unusable.
    `guarded`: the URL is a tenant's (an Azure endpoint), so its connections never go to a loopback,
    private, link-local or metadata address (`proxy.core.addresses.address_forbidden`)."""
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
    port = parts.port or _DEFAULT_PORTS[scheme]
    origin: Origin = (scheme, host, port, True) if guarded else (scheme, host, port)
    return Destination(origin, target.encode("ascii"), host_header)


class AddressNotAllowed(httpx.ConnectError):
    """A guarded destination's name resolved to an address the proxy must not connect to. Nothing
    was sent; the message names the host only (never the URL's user info, path or query)."""


async def _open_checked(hostname: str, port: int, request: httpx.Request | None) -> trio.SocketStream:
    """A TCP connection to `hostname` for a guarded destination: one lookup, refused if ANY address
    is forbidden (a name with one public and one internal address must not be a coin toss), then a
    connection to the checked addresses themselves, in order. Never the name again: a second lookup
    could answer differently (DNS rebinding). TLS still uses the name (SNI, certificate)."""
    infos = await trio.socket.getaddrinfo(hostname, port, type=trio.socket.SOCK_STREAM)
    for family, _, _, _, sockaddr in infos:
        if family not in (trio.socket.AF_INET, trio.socket.AF_INET6) or address_forbidden(str(sockaddr[0])):
            raise AddressNotAllowed(
                f"the address of {hostname[:100]} is not allowed for upstream connections"
                " (loopback, private, link-local or metadata address)",
                request=request,
            )
    error: OSError = OSError(f"no address for {hostname[:100]}")
    for family, kind, proto, _, sockaddr in infos:
        sock = trio.socket.socket(family, kind, proto)
        try:
            await sock.connect(sockaddr)
        except OSError as exc:
            sock.close()
            error = exc
            continue
        except BaseException:
            sock.close()
            raise
        return trio.SocketStream(sock)
    raise error


Alive = Callable[[], Awaitable[bool]]


class _Call(NamedTuple):
    """One `open` call, as its steps share it (`_exchange` for the head, `_ResponseStream` for the
    body): built once per request, so no step takes the request's pieces one by one."""

    origin: Origin  # the pool's key: where the connection comes from and goes back to
    data: bytes  # the request as written: head and body
    skip_body: bool  # a HEAD: the answer is a head only, whatever it says
    timeouts: Timeouts
    alive: Alive | None  # the caller's check, asked while waiting (`Abandoned`)
    request: httpx.Request | None  # labels errors only


class Abandoned(Exception):
    """The caller's `alive` check said no while waiting on the upstream: the request was dropped
    (its connection closed, so the upstream sees the disconnect)."""


class _Stale(Exception):
    """A reused connection failed before any response byte, and sending the request again is safe
    (it never reached the server whole, or its method is idempotent)."""


def _not_resent(request: httpx.Request | None) -> httpx.RemoteProtocolError:
    # The whole request went out on a reused connection, and it closed (or was reset) without a byte
    # of answer: the server may have read and processed it. Sending it again could charge twice.
    return httpx.RemoteProtocolError(
        "the server closed a reused connection without answering; the request had been sent in full"
        " and is not sent again (it may have been processed)",
        request=request,
    )


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
    """One upstream HTTP/1.1 connection: the trio stream, its socket, and whether it may be reused."""

    __slots__ = ("stream", "socket", "raw", "reusable", "idle_since", "tls")

    def __init__(self, stream: trio.abc.Stream, socket: Any) -> None:
        self.stream = stream
        self.socket = socket  # the trio socket under any TLS layer: for liveness checks and closing
        # Plain TCP: the standard-library socket, which response bodies are read from directly
        # (`proxy.http.sockio`); under TLS, None (bodies go through the `SSLStream`).
        self.raw = sockio.raw(stream.socket) if isinstance(stream, trio.SocketStream) else None
        self.reusable = False  # set when a response ended cleanly on a keep-alive connection
        self.idle_since = 0.0
        # Under TLS, bytes the server sent after the answer can sit above the socket: decrypted in
        # the SSLObject, or as whole records in trio's incoming BIO (one TCP read brings several
        # records; OpenSSL decrypts one per read). `usable()` looks there too. trio keeps both
        # private: if they are renamed, this fails loudly here rather than skipping the check.
        self.tls: tuple[ssl.SSLObject, ssl.MemoryBIO] | None = None
        if isinstance(stream, trio.SSLStream):
            self.tls = (stream._ssl_object, stream._incoming)

    def usable(self) -> bool:
        """Ready for a new request: the last exchange ended cleanly and nothing (EOF, stray bytes)
        waits to be read, in the socket or in the TLS layer."""
        if not self.reusable:
            return False
        tls = self.tls
        if tls is not None and (tls[0].pending() or tls[1].pending):
            return False
        try:
            return self.socket.fileno() != -1 and not self.socket.is_readable()
        except (OSError, ValueError):
            return False

    async def read(self) -> bytes:
        """The next bytes from the server, b"" at its end; no timeout (see `receive`)."""
        raw = self.raw
        if raw is not None:
            return await sockio.receive_some(raw, _READ_SIZE)
        return bytes(await self.stream.receive_some(_READ_SIZE))  # TLS; bytes() of bytes does not copy

    async def receive(self, watch: Watch, timeout: float | None, alive: Alive | None = None) -> bytes:
        """The next bytes from the server: `trio.TooSlowError` after `timeout`, and with `alive`,
        asked every `ALIVE_POLL` seconds of waiting whether the caller still wants the answer,
        `Abandoned` if not (a cheaper way to notice a client that left than a watcher task per
        request). Both are `watch`'s: a cancel scope per read cost ~10 µs (`proxy.http.watch`)."""
        if timeout is None and alive is None:
            return await self.read()
        waiter = _Waiter(self, timeout, alive)
        watch.add(waiter)
        waiter.waiting_since = trio.current_time()
        try:
            return await self.read()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            if waiter.expired == "timeout":
                raise trio.TooSlowError from None
            if waiter.expired == "abandoned":
                raise Abandoned from None
            raise
        finally:
            waiter.waiting_since = 0.0
            watch.discard(waiter)

    def close(self) -> None:
        """Close at once: synchronous (no TLS close_notify), so cancellation cannot interrupt it, and
        the peer sees the connection end immediately."""
        try:
            self.socket.close()
        except OSError:
            pass


class _Waiter:
    """One read of a response head, as the transport's `Watch` sees it (`proxy.http.watch.Watched`)."""

    __slots__ = ("conn", "timeout", "alive", "waiting_since", "asked_at", "expired")

    def __init__(self, conn: _Connection, timeout: float | None, alive: Alive | None) -> None:
        self.conn = conn
        self.timeout = timeout
        self.alive = alive
        self.waiting_since = 0.0
        self.asked_at = 0.0
        self.expired: str | None = None

    def expire(self, reason: str) -> None:
        self.expired = reason
        self.conn.close()


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
        self.watch = Watch()  # read timeouts and client checks of the bodies being read
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

    def _release(self, conn: _Connection, origin: Origin, response: _Response) -> None:
        """After a complete response: back on the stack if the connection stays open, else closed."""
        if self._closed or not response.complete or not response.keep_alive:
            conn.close()
            return
        conn.reusable = True
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
        scheme, host, port = origin[0], origin[1], origin[2]
        hostname = host.decode("ascii")
        try:
            with _limit(timeout):
                if len(origin) > 3:  # guarded (see `Destination.guarded`)
                    tcp = await _open_checked(hostname, port, request)
                else:
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
            Outbound(request.method.encode("ascii"), where, request.headers.raw, body),
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
        outbound: Outbound,
        timeouts: Timeouts,
        *,
        alive: Alive | None = None,
        checked: bool = False,
        request: httpx.Request | None = None,
    ) -> Reply:
        """Send `outbound` and return the response head with its body still to read. Failures
        raise httpx's exception types (`request` only labels them); `Abandoned` if `alive` (asked
        every `ALIVE_POLL` seconds while waiting) says the answer is no longer wanted. `checked`
        says the headers were validated already (they come out of an HTTP parser)."""
        method = outbound.method
        origin = outbound.where.origin
        call = _Call(
            origin,
            _request_head(outbound, checked, request) + outbound.body,
            method == b"HEAD",
            timeouts,
            alive,
            request,
        )
        response: _Response | None = None
        conn = self._take(origin)
        if conn is not None:
            try:
                response = await self._exchange(conn, call, reused=True, resend=method in _IDEMPOTENT)
            except _Stale:  # closed by the server while idle, and safe to send again: on a new connection
                conn.close()
        if response is None:
            conn = await self._connect(request, origin, timeouts.connect)
            response = await self._exchange(conn, call, reused=False)
        assert conn is not None
        return Reply(response, _ResponseStream(self, conn, response, call))

    async def _exchange(self, conn: _Connection, call: _Call, *, reused: bool, resend: bool = False) -> _Response:
        """Send the request, read the response head. On a `reused` connection, failing to send, or
        (with `resend`: an idempotent method) failing after the send before any response byte,
        raises `_Stale`; any other failure closes `conn` and raises an httpx error."""
        data, timeouts, alive, request = call.data, call.timeouts, call.alive, call.request
        conn.reusable = False
        try:
            try:
                sent = 0
                if conn.raw is not None:  # plain TCP: a request the socket takes at once needs no scope
                    try:
                        sent = conn.raw.send(data)
                    except BlockingIOError:
                        pass
                if sent < len(data):
                    await _within(timeouts.write, conn.stream.send_all(memoryview(data)[sent:]))
            except trio.TooSlowError as exc:
                raise httpx.WriteTimeout("timed out sending the request", request=request) from exc
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                if reused:  # the server had closed it: the request never reached it whole
                    raise _Stale from exc
                raise httpx.WriteError(f"sending the request failed: {exc}", request=request) from exc
            response = _Response(call.skip_body)
            seen = False
            while not response.head_done:
                try:
                    chunk = await conn.receive(self.watch, timeouts.read, alive)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                    if reused and not seen:
                        if resend:
                            raise _Stale from exc
                        raise _not_resent(request) from exc
                    raise httpx.ReadError(f"reading the response failed: {exc}", request=request) from exc
                if not chunk:
                    if reused and not seen:
                        if resend:
                            raise _Stale
                        raise _not_resent(request)
                    raise httpx.RemoteProtocolError("server disconnected without sending a response", request=request)
                seen = True
                response.feed(chunk, request)
            return response
        except trio.TooSlowError as exc:
            conn.close()
            raise httpx.ReadTimeout("timed out waiting for the response", request=request) from exc
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
    """A response head, and its body as raw bytes to read (`receive`, or `aiter_raw`) and close
    (`aclose`)."""

    __slots__ = ("status_code", "reason", "headers", "body")

    def __init__(self, response: _Response, body: _ResponseStream) -> None:
        self.status_code = response.status
        self.reason = response.reason
        self.headers: list[tuple[bytes, bytes]] = response.headers
        self.body = body

    def header(self, name: bytes) -> bytes:
        """The first value of header `name` (lower case), or b""."""
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return b""

    async def receive(self) -> bytes:
        """The next body bytes as they arrive; b"" at the end."""
        return await self.body.receive()

    def aiter_raw(self) -> AsyncIterator[bytes]:
        return self.body.__aiter__()

    def has_body_ready(self) -> bool:
        """Whether body bytes (or the end) arrived with the head: reading on will not wait."""
        response = self.body._response
        return bool(response.chunks) or response.complete

    def is_finished(self) -> bool:
        """Whether everything has arrived and been handed out: nothing more will come."""
        response = self.body._response
        return response.complete and not response.chunks

    async def aclose(self) -> None:
        await self.body.aclose()


class _ResponseStream(httpx.AsyncByteStream):
    """A response body: raw bytes as they arrive. The connection goes back to the pool at the end of
    the body; `aclose` before that closes it (the upstream sees the disconnect). Its read timeout
    and `alive` checks are the transport's `Watch`'s (`proxy.http.watch`): no cancel scope per read."""

    __slots__ = (
        "alive",
        "timeout",
        "waiting_since",
        "asked_at",
        "expired",
        "_transport",
        "_conn",
        "_origin",
        "_response",
        "_request",
    )

    def __init__(self, transport: LectrTransport, conn: _Connection, response: _Response, call: _Call) -> None:
        # The call's parts are copied into slots, not read through `call`: `receive` runs per chunk.
        self.alive = call.alive
        self.timeout = call.timeouts.read
        self.waiting_since = 0.0  # when the current read began (0.0: not reading)
        self.asked_at = 0.0
        self.expired: str | None = None  # why the `Watch` closed the connection, if it did
        self._transport = transport
        self._conn: _Connection | None = conn
        self._origin = call.origin
        self._response = response
        self._request = call.request
        if not response.complete:
            transport.watch.add(self)

    def expire(self, reason: str) -> None:
        """The `Watch`'s verdict ("timeout", "abandoned"): close the connection, which wakes the read."""
        self.expired = reason
        conn = self._conn
        if conn is not None:
            conn.close()

    async def receive(self) -> bytes:
        """The next body bytes as they arrive; b"" once the body is over (the connection is then
        back in the pool). A plain method, not an async generator: a stream left unfinished (the
        relay stops at the last byte) leaves nothing for trio's generator finaliser to do."""
        conn = self._conn
        if conn is None:
            return b""
        response = self._response
        chunks = response.chunks
        request = self._request
        try:
            while True:
                if chunks:
                    if len(chunks) == 1:
                        return chunks.popleft()
                    # One read of a chunked body brings as many pieces as it held chunks (an SSE
                    # answer sent at once: one per event): handed out together, they go to the
                    # client in one write instead of one each.
                    data = b"".join(chunks)
                    chunks.clear()
                    return data
                if response.complete:
                    self._conn = None
                    self._transport.watch.discard(self)
                    self._transport._release(conn, self._origin, response)
                    return b""
                self.waiting_since = trio.current_time()
                try:
                    data = await conn.read()
                finally:
                    self.waiting_since = 0.0
                if not data:
                    if response.ends_at_close:  # no length and not chunked: the close is its end
                        self._close()
                        return b""
                    raise httpx.RemoteProtocolError(
                        "peer closed connection without sending complete message body", request=request
                    )
                response.feed(data, request)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            self._close()
            if self.expired == "timeout":
                raise httpx.ReadTimeout("timed out waiting for the response body", request=request) from None
            if self.expired == "abandoned":
                raise Abandoned from None
            raise httpx.ReadError(f"reading the response body failed: {exc}", request=request) from exc
        except BaseException:  # protocol errors, Abandoned, cancellation
            self._close()
            raise

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while chunk := await self.receive():
            yield chunk

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        self._transport.watch.discard(self)
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
        self._conn = None
        self._transport.watch.discard(self)
        if self._response.complete:
            self._transport._release(conn, self._origin, self._response)
        else:
            conn.close()


class _Response:
    """One response as httptools (llhttp, in C) parses it: the head, then body pieces as they come."""

    __slots__ = (
        "parser",
        "status",
        "reason",
        "headers",
        "head_done",
        "chunks",
        "complete",
        "keep_alive",
        "ends_at_close",
        "skip_body",
        "head_bytes",
        "unaccounted",
    )

    def __init__(self, skip_body: bool) -> None:
        self.parser: httptools.HttpResponseParser | None = httptools.HttpResponseParser(self)
        self.status = 0
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_done = False
        self.chunks: deque[bytes] = deque()
        self.complete = False
        self.keep_alive = False
        self.ends_at_close = False
        self.skip_body = skip_body  # the answer to a HEAD request: a head only, whatever it says
        # Against MAX_HEAD_BYTES: the status lines and fields seen (head, interim answers, trailers),
        # and the bytes fed since the last callback (a field or chunk-size line still arriving,
        # which httptools buffers: an endless one must not be).
        self.head_bytes = 0
        self.unaccounted = 0

    def feed(self, data: bytes, request: httpx.Request | None) -> None:
        parser = self.parser
        if parser is None:
            if data:  # bytes after a complete answer: the connection is not reused
                self.keep_alive = False
            return
        self.unaccounted += len(data)
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            if self.complete:  # an upgrade answer after the complete one: dropped, as below
                self.keep_alive = False
                return
            raise httpx.RemoteProtocolError("the server switched protocols", request=request) from exc
        except httptools.HttpParserError as exc:
            if self.complete:
                # Stray bytes after a complete answer (llhttp parses on into them): the answer
                # stands and is delivered; the connection is never reused.
                self.keep_alive = False
                return
            raise httpx.RemoteProtocolError(f"malformed response: {exc}", request=request) from exc
        if self.head_bytes + self.unaccounted > MAX_HEAD_BYTES:
            raise httpx.RemoteProtocolError(
                f"the response head (with interim answers and trailers) is over {MAX_HEAD_BYTES} bytes",
                request=request,
            )

    # httptools callbacks
    def on_message_begin(self) -> None:
        if self.complete:
            # A second answer in the bytes after a complete one (a misbehaving server): ignored,
            # and the connection is not reused.
            self.keep_alive = False
            return
        self.reason = b""
        self.headers = []

    def on_status(self, status: bytes) -> None:
        if not self.complete:
            self.reason += status
            self.head_bytes += len(status) + 15  # with "HTTP/1.1 200 " and CRLF
            self.unaccounted = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.complete:
            return  # a header of an answer after the complete one (see on_message_begin)
        self.head_bytes += len(name) + len(value) + 4
        self.unaccounted = 0
        if not self.head_done:
            self.headers.append((name, value))
        # Else a trailer (httptools reports them as headers, after the body): counted, and dropped.
        # Appended, it would reach the client as a header whenever it came in the head's read.

    def on_headers_complete(self) -> None:
        parser = self.parser
        if parser is None:
            return  # a second answer after a complete one (see on_message_begin)
        status = parser.get_status_code()
        if status < 200:
            return  # an interim answer (100 Continue): the final one follows
        self.status = status
        self.head_done = True
        framed = status in (204, 304) or self.skip_body
        keep_alive = parser.get_http_version() == "1.1"
        for name, value in self.headers:
            lower = name.lower()
            if lower == b"content-length" or lower == b"transfer-encoding":
                framed = True
            elif lower == b"connection":
                tokens = value.lower()
                if b"close" in tokens:
                    keep_alive = False
                elif b"keep-alive" in tokens:
                    keep_alive = True
        self.ends_at_close = not framed
        # After a HEAD's head the next answer gets a fresh parser. A body sent anyway either came in
        # the same read (`on_body` after the end: not reused) or waits in the socket or the TLS
        # layer, and `usable()` then drops the connection.
        self.keep_alive = keep_alive and framed
        if self.skip_body:
            self._done()

    def on_body(self, body: bytes) -> None:
        if self.complete:  # a body on a HEAD's answer: bytes after its end, never to be reused
            self.keep_alive = False
            return
        self.unaccounted = 0
        if body and self.head_done:
            self.chunks.append(body)

    def on_message_complete(self) -> None:
        if self.head_done:
            self._done()

    def _done(self) -> None:
        # The parser holds our callbacks and we hold the parser: a cycle that only the garbage
        # collector would free, ~17 objects a request, and its gen-0 passes (0.1-1 ms each, every
        # ~50 requests) were part of the tail at 1 in flight (docs/PERFORMANCE.md). Cut it here.
        self.complete = True
        self.parser = None


def _request_head(outbound: Outbound, checked: bool, request: httpx.Request | None) -> bytes:
    """The request line and headers, with Host and the body's framing. Unless `checked` (headers that
    came out of an HTTP parser), every name and value is validated: no header injection. Checked or
    not, the written head is scanned once for CR, LF and NUL that are not our own line ends."""
    method, where, headers, body = outbound
    lines = [b"%b %b HTTP/1.1\r\n" % (method, where.target)]
    for name, value in _headers(headers, where.host, method, body):
        if not checked and not valid_field(name, value):
            raise httpx.LocalProtocolError(f"invalid request header {name[:40]!r}", request=request)
        lines.append(b"%b: %b\r\n" % (name, value))
    if not checked and not (TOKEN.fullmatch(method) and _TARGET.fullmatch(where.target)):
        raise httpx.LocalProtocolError("invalid request line", request=request)
    lines.append(b"\r\n")
    head = b"".join(lines)
    # Not trusting the parser alone: each line we wrote ends in the one CR LF we put there, so any
    # other CR, LF (bare or paired) or NUL came from a name, a value or the request line, and would
    # split or end the head upstream. One C-level pass (`translate` deletes them; ~0.3 µs for 10
    # headers), so that no parser upgrade or relaying bug can open header injection.
    if len(head) - len(head.translate(None, b"\r\n\x00")) != 2 * len(lines):
        raise httpx.LocalProtocolError("a request header or the request line holds CR, LF or NUL", request=request)
    return head
