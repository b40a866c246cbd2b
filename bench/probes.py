"""Clients wrk cannot be: a time-to-first-byte probe, and 2,000 concurrent paced streams.

Both speak HTTP/1.1 over raw sockets (no client library) so the client's own cost is tiny and
the same for the proxy and the baseline. A stream counts as complete only when its body is
whole (chunked terminator or Content-Length reached), the status is 200, it holds the 30 content
chunks and ends with `data: [DONE]`.
"""

from __future__ import annotations

import socket
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import trio

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
        out, pos = [], 0
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

    return {"n": len(values), "p50": pick(0.50), "p90": pick(0.90), "p99": pick(0.99),
            "max": ordered[-1], "mean": statistics.fmean(values)}


def ttfb_probe(port: int, path: str, body: bytes, headers: dict[str, str], *, requests: int, chunks: int,
               warmup: int = 20) -> dict[str, Any]:
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
    return {"ttfb_ms": percentiles(ttfb), "total_ms": percentiles(total), "errors": len(errors),
            "error_examples": errors[:5]}


async def _one_stream(port: int, request: bytes, chunks: int, timeout: float, out: dict[str, list[Any]]) -> None:
    started = trio.current_time()
    response = _Response()
    first = None
    try:
        with trio.fail_after(timeout):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                await stream.send_all(request)
                while True:
                    data = await stream.receive_some(65536)
                    if not data:
                        raise RuntimeError("connection closed before the end of the response")
                    done = response.feed(data)
                    if first is None and response.has_data():
                        first = trio.current_time()
                    if done:
                        break
    except (OSError, RuntimeError, trio.TooSlowError, ValueError) as exc:
        out["errors"].append(f"{type(exc).__name__}: {exc}"[:200])
        return
    problem = response.check_stream(chunks)
    if problem is not None:
        out["errors"].append(problem)
        return
    out["durations"].append(trio.current_time() - started)
    out["ttfb"].append(((first or started) - started) * 1000)


async def _many_streams(port: int, request: bytes, count: int, chunks: int, timeout: float) -> dict[str, Any]:
    out: dict[str, list[Any]] = {"durations": [], "ttfb": [], "errors": []}
    started = trio.current_time()
    async with trio.open_nursery() as nursery:
        for _ in range(count):
            nursery.start_soon(_one_stream, port, request, chunks, timeout, out)
    wall = trio.current_time() - started
    return {
        "streams": count,
        "completed": len(out["durations"]),
        "errors": len(out["errors"]),
        "error_examples": sorted(set(out["errors"]))[:5],
        "wall_s": wall,
        "stream_s": percentiles(out["durations"]),
        "ttfb_ms": percentiles(out["ttfb"]),
    }


def concurrent_streams(port: int, path: str, body: bytes, headers: dict[str, str], *, count: int, chunks: int,
                       timeout: float = 60.0) -> dict[str, Any]:
    """Open `count` streams at once (one connection each) and wait for all of them to finish."""
    request = build_request(port, path, body, headers)
    return trio.run(_many_streams, port, request, count, chunks, timeout)
