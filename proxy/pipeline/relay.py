"""One upstream exchange relayed to the client over raw ASGI, and the ASGI helpers around it.

`Relay.run` sends one attempt upstream and relays the answer as it comes: a JSON body whole
(it is small, and usage is read from it after the client has it), anything else chunk by chunk
(server-sent events through `SSEStream`, which reads usage and strips what the proxy added).

A whole answer is buffered up to `max_response_bytes` (`LECTR_MAX_RESPONSE_BYTES`); a bigger one
goes out as it comes, byte for byte, and its usage is estimated. Usage is read after the client
has its answer (`prepare_usage`, then `finish`): a compressed body is inflated incrementally and
never past `max_response_bytes` (a gzip bomb yields no usage, not a memory flood), and work on
more than `_INLINE_BYTES` (inflating, or parsing a large body) runs in a worker thread, so a
large answer does not stall the event loop for everyone else.
"""

from __future__ import annotations

import json
import time
import zlib
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import Any, NamedTuple

import httpx
import orjson
import trio

from proxy.accounting.record import Event
from proxy.accounting.usage import Usage, estimate_tokens, from_body
from proxy.core.errors import LectrError, PayloadTooLarge, UpstreamIncomplete
from proxy.http.server import BODY_ERROR, HEAD_WITH_BODY, HEADERS_CHECKED
from proxy.http.transport import Abandoned, Alive, LectrTransport, Reply, Timeouts
from proxy.pipeline import body as bodies
from proxy.pipeline.headers import response_headers
from proxy.pipeline.redact import error_message
from proxy.pipeline.sse import SSEStream
from proxy.pipeline.upstream import Outbound, map_error

_JSON = b"application/json"
_SSE = b"text/event-stream"
# Endpoints that consume tokens: when their usage can't be read, it is estimated.
_TOKEN_ENDPOINTS = frozenset({"chat/completions", "completions", "embeddings", "responses", "messages"})
_AUTH_HEADERS = frozenset({b"authorization", b"x-api-key", b"api-key"})
# Relayed headers were parsed (so validated) on the way in; our server need not check them
# again (proxy/http/server.py, `HEADERS_CHECKED`).
CHECKED = {HEADERS_CHECKED: True}
# Settings.max_response_bytes' default, for callers that do not pass one.
DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024 * 1024
# Reading usage: a body (or what it inflates to) up to this size is handled on the event loop; past
# it, in a worker thread. Measured (docs in `prepare_usage`): 1 MiB is ~1.3-3.2 ms of orjson or
# ~1 ms of inflating, against ~0.15 ms for the thread hop; a normal answer (1-20 KB) never pays it.
_INLINE_BYTES = 1024 * 1024
_UNREAD: Any = object()  # `Relay.parsed` before `prepare_usage` has run


class Retry(Exception):
    """This attempt failed in a way a fallback may fix (429, 5xx, no answer)."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class Upstream(NamedTuple):
    """The worker's upstream client and the timeouts every attempt uses."""

    transport: LectrTransport
    timeouts: Timeouts


class Client(NamedTuple):
    """The client's side of one request: where its answer goes (`send`) and, under our own
    HTTP/1.1 server, how to tell it has left (`alive` while waiting, `gone` between chunks)."""

    send: Any
    alive: Alive | None = None
    gone: Callable[[], bool] | None = None


class Relay:
    """One upstream exchange: timing, relaying and what we learn about usage."""

    def __init__(
        self,
        event: Event,
        info: bodies.RequestInfo,
        started: float,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        self.event = event
        self.max_response_bytes = max_response_bytes
        self.parsed: Any = _UNREAD  # the whole answer's JSON, once `prepare_usage` has read it
        self.info = info
        self.started = started
        self.upstream_seconds = 0.0
        self.response_started = False
        # The last body message has been handed to the server: a disconnect now changes nothing.
        self.final_sent = False
        self.client_gone = False
        self.sent_bytes = 0
        self.sse: SSEStream | None = None
        self.body: bytes | None = None
        self.content_encoding: bytes | None = None
        self.secrets: list[bytes] = []

    async def run(self, upstream: Upstream, outbound: Outbound, client: Client, *, retryable: bool) -> None:
        """One attempt. With `retryable`, a 429/5xx or a failure to get an answer raises `Retry`
        (nothing has reached the client yet) instead of being relayed. With the client's `alive`
        (asked while waiting on the provider) and `gone` (checked after each chunk relayed), a
        client that left is noticed (`client_gone`) and the exchange dropped: the provider sees
        the disconnect."""
        event = self.event
        send, alive, gone = client
        # The credentials this attempt carries: never to be stored, even if the provider echoes them.
        self.secrets.extend(value for name, value in outbound.headers if name.lower() in _AUTH_HEADERS)
        t = time.perf_counter()
        try:
            response = await upstream.transport.open(outbound, upstream.timeouts, alive=alive, checked=True)
        except Abandoned:
            self.upstream_seconds += time.perf_counter() - t
            self.client_gone = True
            return
        except httpx.HTTPError as exc:
            self.upstream_seconds += time.perf_counter() - t
            mapped = map_error(exc, event.provider)
            if retryable:
                raise Retry(mapped.status) from None
            raise mapped from None
        self.upstream_seconds += time.perf_counter() - t
        if retryable and (response.status_code == 429 or response.status_code >= 500):
            await response.aclose()
            raise Retry(response.status_code)
        try:
            event.status_code = response.status_code
            content_type = response.header(b"content-type").lower()
            self.content_encoding = response.header(b"content-encoding").lower() or None
            is_sse = _SSE in content_type
            strip = is_sse and self.info.add_usage_option
            if is_sse:
                self.sse = SSEStream(strip=strip)
            headers = response_headers(response.headers, drop_length=strip)
            if _JSON in content_type and not is_sse:
                await self._relay_whole(response, headers, send, gone)
            else:
                await self._relay_chunks(response, headers, send, gone)
        except Abandoned:  # while waiting on the provider (a whole answer, or between stream chunks)
            self.client_gone = True
        except httpx.HTTPError as exc:
            mapped = map_error(exc, event.provider)
            if retryable and not self.response_started:
                raise Retry(mapped.status) from None
            if self.response_started:
                # Cut short mid-body: the client's response is left unfinished (no final chunk, the
                # connection closes), so it can tell, as it could from the provider itself; a clean
                # end here would pass a truncated answer off as complete. The event says so.
                raise UpstreamIncomplete(
                    f"the answer from {event.provider} was cut short ({type(exc).__name__}); "
                    "the client received it incomplete"
                ) from None
            raise mapped from None
        finally:
            await response.aclose()

    async def _relay_whole(
        self, response: Reply, headers: list[tuple[bytes, bytes]], send: Any, gone: Callable[[], bool] | None
    ) -> None:
        t = time.perf_counter()
        chunks = []
        size = 0
        limit = self.max_response_bytes
        while chunk := await response.receive():
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                # Too big to hold: what is here goes out now, the rest as it comes. Its usage cannot
                # be read (`self.body` stays None): `finish` estimates it.
                self.upstream_seconds += time.perf_counter() - t
                buffered = b"".join(chunks)
                chunks.clear()
                await self._relay_chunks(response, headers, send, gone, first=buffered)
                return
        self.upstream_seconds += time.perf_counter() - t
        self.body = b"".join(chunks)
        self.response_started = True
        await send({"type": "http.response.start", "status": response.status_code, "headers": headers, **CHECKED})
        self.event.ttft_ms = (time.perf_counter() - self.started) * 1000
        self.sent_bytes = len(self.body)
        self.final_sent = True
        await send_final(send, self.body)

    async def _relay_chunks(
        self,
        response: Reply,
        headers: list[tuple[bytes, bytes]],
        send: Any,
        gone: Callable[[], bool] | None,
        first: bytes = b"",
    ) -> None:
        """Relay the body as it comes (`first`: what was already read of it, for a whole answer
        over `max_response_bytes`)."""
        self.response_started = True
        start = {"type": "http.response.start", "status": response.status_code, "headers": headers, **CHECKED}
        if first or response.has_body_ready():
            start[HEAD_WITH_BODY] = True  # the first bytes are here: one write for the head and them
        await send(start)
        if first:
            await self._send_body(send, first)
        sse = self.sse
        # The per-chunk loop: one read and one write; whatever can be looked up once per stream is
        # (docs/PERFORMANCE.md step 18).
        receive, finished, clock = response.body.receive, response.is_finished, time.perf_counter
        feed = sse.feed if sse is not None else None
        event = self.event
        waited = 0.0
        try:
            while True:
                t = clock()
                chunk = await receive()
                waited += clock() - t
                if not chunk:
                    break
                if feed is not None:
                    # What one read brought goes out in one write. (Sending a read's first event
                    # alone, for an earlier first token, cost an extra write and client wake-up per
                    # stream: p99 at 1 in flight +0.4-0.7 ms in a paired A/B, docs/PERFORMANCE.md
                    # step 14.)
                    chunk = feed(chunk)
                if finished():  # that was the last of it: one write for it and the end
                    break
                if not chunk:
                    continue  # all of it held back (a partial event, the usage-only chunk)
                if self.sent_bytes == 0:
                    event.ttft_ms = (clock() - self.started) * 1000
                self.sent_bytes += len(chunk)
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                if gone is not None and gone():
                    self.client_gone = True  # `run` closes the upstream connection on the way out
                    return
        finally:
            self.upstream_seconds += waited
        tail = sse.flush() if sse is not None else b""
        await self._send_body(send, chunk + tail, last=True)

    async def _send_body(self, send: Any, out: bytes, *, last: bool = False) -> None:
        """Relay bytes (the first ones set the time to first token); `last` ends the response."""
        if out and self.sent_bytes == 0:
            self.event.ttft_ms = (time.perf_counter() - self.started) * 1000
        self.sent_bytes += len(out)
        if last:
            self.final_sent = True
            await send_final(send, out)
        elif out:
            await send({"type": "http.response.body", "body": out, "more_body": True})

    async def prepare_usage(self) -> None:
        """Read a whole answer's JSON for `finish` (after the client has it): on the event loop when
        that is small work, else in a worker thread (`trio.to_thread`). Measured on this machine
        (2 cores): the thread hop ~0.15 ms; orjson 1.3 ms (text) to 3.2 ms (floats) per MiB;
        inflating ~1-2 ms per MiB. zlib lets go of the GIL while it inflates (64 MiB in a thread:
        123 ms, the loop's longest pause 36 ms); orjson does not, so a large parse in a thread
        still pauses the loop for its duration (~2.5 ms/MiB of text), bounded by the limit."""
        if self.sse is not None or not self.body or self.parsed is not _UNREAD:
            return
        parsed = _read_json(self.body, self.content_encoding, self._summary(), self.max_response_bytes)
        if isinstance(parsed, partial):  # large: the rest of the work off the loop
            parsed = await trio.to_thread.run_sync(parsed)
        self.parsed = parsed

    def _summary(self) -> bool:
        """Whether usage may be read without parsing the whole answer: an embeddings answer (its
        vectors), and any large one, because orjson holds the GIL, so a whole parse in a thread
        would still pause the loop (~2.5 ms per MiB). `usage` and `model` are top-level keys of
        every answer that has them; a failed summary falls back to the whole parse."""
        if self.event.status_code >= 400:
            return False
        return self.event.endpoint == "embeddings" or len(self.body or b"") > _INLINE_BYTES

    def finish(self) -> None:
        """Fill the event from what was relayed (after the client has its answer, and after
        `prepare_usage`; without it, the body is read here, on the event loop)."""
        event = self.event
        event.latency_ms = (time.perf_counter() - self.started) * 1000
        event.upstream_ms = self.upstream_seconds * 1000
        event.response_bytes = self.sent_bytes
        usage: Usage | None = None
        parsed: Any = None
        if self.sse is not None:
            usage, event.response_model = self.sse.usage, self.sse.response_model
        elif self.body:
            parsed = self.parsed
            if parsed is _UNREAD:
                parsed = _read_json(self.body, self.content_encoding, self._summary(), self.max_response_bytes)
                if isinstance(parsed, partial):
                    parsed = parsed()
            if isinstance(parsed, dict):
                model = parsed.get("model")
                event.response_model = model if isinstance(model, str) else None
                usage = from_body(parsed)
        if event.status_code >= 400 and event.error_message is None:
            event.error_type, event.error_message = error_message(parsed, event.status_code, self.secrets)
        stream_error = self.sse.error if self.sse is not None else None
        if stream_error is not None and event.error_type is None:
            # The provider failed after the stream began (status 200): Anthropic's `event: error`,
            # the Responses API's `error` / `response.failed`.
            event.error_type, event.error_message = error_message(stream_error, event.status_code, self.secrets)
        cut_short = (
            event.status_code == 499
            or event.error_type == "upstream_incomplete"
            or (stream_error is not None and self.sse is not None and self.sse.error_cuts_short)
        )
        if usage is not None and self.sse is not None and cut_short:
            # A stream cut short keeps the usage it saw (Anthropic's `message_start`: input and cache
            # tokens), and what it did not see (the output so far) is estimated, and said to be.
            output = max(usage.output_tokens, self.sse.events)
            event.set_usage(replace(usage, output_tokens=output), estimated=True)
        elif usage is not None:
            event.set_usage(usage)
        elif event.endpoint in _TOKEN_ENDPOINTS and (0 < event.status_code < 400 or event.status_code == 499):
            output = self.sse.events if self.sse is not None else 0
            event.set_usage(Usage(estimate_tokens(event.request_bytes or 0), output), estimated=True)


# An oversized body is read and dropped up to this many times the limit before the 413 goes out:
# most clients send their whole body before reading the answer, and would otherwise see only a
# closed connection. Past that, the 413 is sent at once and the connection closed.
_DRAIN_FACTOR = 4


async def read_body(receive: Any, declared: int | None, limit: int) -> bytes:
    """The whole request body, or PayloadTooLarge (after draining what is reasonable to drain)."""
    too_large: PayloadTooLarge | None = None
    if declared is not None and declared > limit:
        too_large = PayloadTooLarge(f"the request body is {declared} bytes; the limit is {limit}")
        if declared > limit * _DRAIN_FACTOR:
            raise too_large
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            # Our server says why when the body itself was at fault (framing, trailers, too slow).
            raise message.get(BODY_ERROR) or ClientGoneEarly()
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                too_large = too_large or PayloadTooLarge(f"the request body is over the limit of {limit} bytes")
                parts.clear()
                if size > limit * _DRAIN_FACTOR:
                    raise too_large
            else:
                parts.append(chunk)
        if not message.get("more_body", False):
            break
    if too_large is not None:
        raise too_large
    return parts[0] if len(parts) == 1 else b"".join(parts)


class ClientGoneEarly(LectrError):
    status = 499
    type = "client_closed_request"
    code = "client_disconnected"

    def __init__(self) -> None:
        super().__init__("the client closed the connection before sending its whole request")


async def watch_disconnect(receive: Any, scope: trio.CancelScope, relay: Relay) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            if not relay.final_sent:
                relay.client_gone = True
                scope.cancel()
            return


async def send_error(send: Any, exc: LectrError) -> None:
    try:
        await send({"type": "http.response.start", "status": exc.status, "headers": exc.headers()})
        await send_final(send, exc.body())
    except Exception:  # the client is gone; nothing left to tell it
        pass


async def send_final(send: Any, body: bytes) -> None:
    """The last body message, shielded: Hypercorn finishes the HTTP exchange (and readies the
    connection for its next request) inside this call, and must not be interrupted there."""
    with trio.CancelScope(shield=True):
        await send({"type": "http.response.body", "body": body, "more_body": False})


_DECODER = json.JSONDecoder()
# Below this size a whole parse is as cheap as looking for the two fields.
_SUMMARY_MIN_BYTES = 4096


def embeddings_summary(body: bytes) -> dict[str, Any] | None:
    """`{"model": ..., "usage": ...}` of an embeddings answer, read without parsing its vectors
    (a 1,536-float answer is 19 KB: a whole parse was ~6 % of the request's CPU). Both are
    top-level keys after `data`, so their last occurrence is theirs: a key cannot occur inside a
    JSON string, where its quotes would be escaped. None (parse it all) when anything is unusual."""
    if len(body) < _SUMMARY_MIN_BYTES:
        return None
    found: dict[str, Any] = {}
    for key in (b'"usage":', b'"model":'):
        at = body.rfind(key)
        if at < 0:
            return None
        tail = body[at + len(key) : at + len(key) + 2048].decode("utf-8", "replace")
        try:
            found[key[1:-2].decode()], _ = _DECODER.raw_decode(tail.lstrip())
        except ValueError:
            return None
    return found if isinstance(found["usage"], dict) else None


def _read_json(body: bytes, encoding: bytes | None, summary: bool, limit: int) -> Any:
    """A whole answer's JSON (None if unreadable, or if it inflates past `limit` bytes), as far as
    that is small work (`_INLINE_BYTES`); else a `partial` that does the rest, for a worker thread.
    Inflating is incremental (`max_length`): never more than the limit is produced, whatever the
    compression ratio."""
    if encoding in (b"gzip", b"x-gzip"):
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    elif encoding == b"deflate":
        inflater = zlib.decompressobj()
    else:
        return _parse_json(body, summary) if len(body) <= _INLINE_BYTES else partial(_parse_json, body, summary)
    room = min(limit, _INLINE_BYTES)
    try:
        text = inflater.decompress(body, room + 1)
    except zlib.error:
        return None
    if len(text) > room:
        return None if room == limit else partial(_inflate_rest, inflater, text, summary, limit)
    return _parse_json(text, summary) if inflater.eof else None  # not eof: a truncated stream


def _inflate_rest(inflater: Any, text: bytes, summary: bool, limit: int) -> Any:
    """In a worker thread: inflate on (the input left, and what zlib holds) up to `limit`, then parse."""
    try:
        more = inflater.decompress(inflater.unconsumed_tail, limit + 1 - len(text))
    except zlib.error:
        return None
    if len(text) + len(more) > limit or not inflater.eof:
        return None  # over the limit (no usage: estimated), or truncated
    return _parse_json(text + more, summary)


def _parse_json(body: bytes, summary: bool) -> Any:
    if summary:
        found = embeddings_summary(body)
        if found is not None:
            return found
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
