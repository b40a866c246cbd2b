"""Clients wrk cannot be: a time-to-first-byte probe, and 2,000 concurrent paced streams.

Both speak HTTP/1.1 over raw sockets (no client library) so the client's own cost is tiny and
the same for the proxy and the baseline. A stream counts as complete only when its body is
whole (chunked terminator or Content-Length reached), the status is 200, it holds the 30 content
chunks and ends with `data: [DONE]`.
"""

from __future__ import annotations

import selectors
import socket
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

_HEADER_END = b"\r\n\r\n"
_CHUNKED_END = b"\r\n0\r\n\r\n"


def build_request(port: int, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@dataclass
class _Response:
    """Incremental reader for one response on a connection."""

    buffer: bytearray = field(default_factory=bytearray)
    header_end: int = -1
    status: int = 0
    length: int | None = None
    chunked: bool = False

    def feed(self, data: bytes) -> bool:
        """Add bytes; True once the whole response is in."""
        self.buffer += data
        if self.header_end < 0:
            end = self.buffer.find(_HEADER_END)
            if end < 0:
                return False
            self.header_end = end + 4
            head = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
            self.status = int(head[0].split(" ", 2)[1])
            for line in head[1:]:
                name, _, value = line.partition(":")
                name, value = name.strip().lower(), value.strip()
                if name == "content-length":
                    self.length = int(value)
                elif name == "transfer-encoding" and "chunked" in value.lower():
                    self.chunked = True
        body_len = len(self.buffer) - self.header_end
        if self.chunked:
            return self.buffer.endswith(_CHUNKED_END)
        return self.length is not None and body_len >= self.length

    def has_data(self) -> bool:
        """The first SSE `data:` bytes have arrived."""
        return self.header_end >= 0 and self.buffer.find(b"data:", self.header_end) >= 0

    def body(self) -> bytes:
        raw = bytes(self.buffer[self.header_end :])
        if not self.chunked:
            return raw
        out: list[bytes] = []
        pos = 0
        while True:
            line_end = raw.index(b"\r\n", pos)
            size = int(raw[pos:line_end].split(b";")[0], 16)
            if size == 0:
                return b"".join(out)
            start = line_end + 2
            out.append(raw[start : start + size])
            pos = start + size + 2

    def check_stream(self, chunks: int) -> str | None:
        """None when this is a complete, well-formed SSE answer; else what is wrong."""
        if self.status != 200:
            return f"status {self.status}"
        body = self.body()
        events = [e for e in body.split(b"\n\n") if e.startswith(b"data:")]
        if not events or events[-1] != b"data: [DONE]":
            return "no [DONE]"
        content = [e for e in events[:-1] if b'"choices":[{' in e]
        if len(content) != chunks:
            return f"{len(content)} content chunks, expected {chunks}"
        return None


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    ordered = sorted(values)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {
        "n": len(values),
        "p50": pick(0.50),
        "p90": pick(0.90),
        "p99": pick(0.99),
        "max": ordered[-1],
        "mean": statistics.fmean(values),
    }


def ttfb_probe(
    port: int, path: str, body: bytes, headers: dict[str, str], *, requests: int, chunks: int, warmup: int = 20
) -> dict[str, Any]:
    """One keep-alive connection, one request at a time: ms from sending to the first `data:` byte."""
    request = build_request(port, path, body, headers)
    ttfb: list[float] = []
    total: list[float] = []
    errors: list[str] = []
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        for i in range(warmup + requests):
            response = _Response()
            first = None
            started = time.perf_counter()
            sock.sendall(request)
            while True:
                data = sock.recv(65536)
                if not data:
                    raise RuntimeError("the server closed the connection")
                done = response.feed(data)
                if first is None and response.has_data():
                    first = time.perf_counter()
                if done:
                    break
            finished = time.perf_counter()
            if i < warmup:
                continue
            problem = response.check_stream(chunks)
            if problem or first is None:
                errors.append(problem or "no data")
                continue
            ttfb.append((first - started) * 1000)
            total.append((finished - started) * 1000)
    finally:
        sock.close()
    return {
        "ttfb_ms": percentiles(ttfb),
        "total_ms": percentiles(total),
        "errors": len(errors),
        "error_examples": errors[:5],
    }


def concurrent_streams(
    port: int, path: str, body: bytes, headers: dict[str, str], *, count: int, chunks: int, timeout: float = 60.0
) -> dict[str, Any]:
    """Open `count` streams at once (one connection each) and wait for all of them to finish.

    One thread, one epoll loop over non-blocking sockets: the cheapest client Python can be, so
    that with 2,000 streams the client, not the server, is the last thing to run out of CPU.
    """
    request = build_request(port, path, body, headers)
    selector = selectors.DefaultSelector()
    durations: list[float] = []
    ttfb: list[float] = []
    errors: list[str] = []
    started = time.perf_counter()
    for _ in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.connect_ex(("127.0.0.1", port))
        state = {"sock": sock, "response": _Response(), "sent": 0, "first": None}
        selector.register(sock, selectors.EVENT_WRITE, state)
    open_streams = count
    deadline = started + timeout

    def finish(state: dict[str, Any], problem: str | None) -> None:
        nonlocal open_streams
        selector.unregister(state["sock"])
        state["sock"].close()
        open_streams -= 1
        if problem is None:
            problem = state["response"].check_stream(chunks)
        if problem is not None:
            errors.append(problem)
            return
        now = time.perf_counter()
        durations.append(now - started)
        ttfb.append(((state["first"] or now) - started) * 1000)

    while open_streams and time.perf_counter() < deadline:
        for key, events in selector.select(timeout=1.0):
            state = key.data
            sock = state["sock"]
            try:
                if events & selectors.EVENT_WRITE:
                    state["sent"] += sock.send(request[state["sent"] :])
                    if state["sent"] == len(request):
                        selector.modify(sock, selectors.EVENT_READ, state)
                    continue
                data = sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError as exc:
                finish(state, f"{type(exc).__name__}: {exc}"[:200])
                continue
            if not data:
                finish(state, "connection closed before the end of the response")
                continue
            response = state["response"]
            done = response.feed(data)
            if state["first"] is None and response.has_data():
                state["first"] = time.perf_counter()
            if done:
                finish(state, None)
    for key in list(selector.get_map().values()):
        finish(key.data, f"not finished after {timeout:.0f} s")
    selector.close()
    return {
        "streams": count,
        "completed": len(durations),
        "errors": len(errors),
        "error_examples": sorted(set(errors))[:5],
        "wall_s": time.perf_counter() - started,
        "stream_s": percentiles(durations),
        "ttfb_ms": percentiles(ttfb),
    }
