"""Differential test: request framing variants through our server (`proxy.http.server.serve_connection`)
and through h11, the parser Hypercorn used before ours. Where the two disagree, ours must be the
stricter one: it may refuse what h11 takes, never take what h11 refuses; where both take a
request, the method, target, version, headers and body the app sees must be the ones h11 sees.

Hypothesis generates the variants, each a valid request with up to three deliberate oddities
(stacking many would make nearly every example one both parsers refuse): Content-Length and
Transfer-Encoding combinations (duplicates, both at once, lists, letter case, whitespace, signs,
leading zeros, wrong lengths), chunk sizes (case, zeros, prefixes, whitespace) and extensions,
trailers (framing and credential fields among them), whitespace in odd places (request line,
before the colon, around values, obs-fold) and line endings (CRLF, bare LF, bare CR) anywhere in
the head and the chunk framing. The variants are ours; the explicit examples are the smuggling
shapes of issue 14 and of llhttp's corpus (`tests/security/http_cases.py`).

One server runs for the whole module, in a thread of its own with its own trio loop (as in
`tests/security/test_conformance.py`, the way Hypercorn's trio worker hosts it); each example
is one real TCP connection to it: the bytes, a half-close, and the answer read to the close. The
app records what it received whole, keyed by the client's port. h11 gets the same bytes and the
end of input, and its events are collected up to the first request's `EndOfMessage`. Only the
first request is compared: what follows it is the next request's business.

h11 lower-cases `Transfer-Encoding` values, so both sides' are compared lower-cased. Header
values are compared twice: without surrounding whitespace (`test_both_accept_the_same_request`:
trailers merged into the headers, a body or target framed differently), and exactly
(`test_header_values_are_stripped`: RFC 9110 §5.5 leaves surrounding whitespace out of a field
value, and h11 does).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import h11
import pytest
import trio
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.security.http_cases import Message
from tests.serving import serving

EXAMPLES = 400
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
OWS = b" \t"


# -- our server, one for the module --------------------------------------------------------------


@dataclass
class Recorder:
    """Requests the app received whole, by the client's port."""

    by_port: dict[int, list[Message]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def app(self) -> Any:
        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                return
            body = b""
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                body += message.get("body", b"")
                if not message.get("more_body", False):
                    break
            query = scope["query_string"]
            target = scope["raw_path"] + (b"?" + query if query else b"")
            headers = tuple((bytes(name), bytes(value)) for name, value in scope["headers"])
            seen = Message(scope["method"].encode("latin-1"), target, scope["http_version"], headers, body)
            with self.lock:
                self.by_port.setdefault(scope["client"][1], []).append(seen)
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"0")]})
            await send({"type": "http.response.body", "body": b""})

        return app

    def take(self, port: int) -> list[Message]:
        with self.lock:
            return self.by_port.pop(port, [])


class ThreadedServer:
    """`serve_connection` on a local port, in a thread running its own trio loop."""

    def __init__(self) -> None:
        self.recorder = Recorder()
        self.port = 0
        self._ready = threading.Event()
        self._token: trio.lowlevel.TrioToken | None = None
        self._scope: trio.CancelScope | None = None
        self._thread = threading.Thread(target=trio.run, args=(self._main,), daemon=True, name="lectr-diff-server")

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        with trio.CancelScope() as scope:
            self._scope = scope
            async with serving(self.recorder.app(), keep_alive_timeout=1.0) as (port, _):
                self.port = port
                self._ready.set()
                await trio.sleep_forever()

    def start(self) -> None:
        self._thread.start()
        assert self._ready.wait(10), "the server did not start"

    def stop(self) -> None:
        if self._token is not None and self._scope is not None:
            trio.from_thread.run_sync(self._scope.cancel, trio_token=self._token)
        self._thread.join(10)

    def first_request(self, raw: bytes) -> Message | None:
        """Send `raw` on a new connection, half-close, read to the close: the first request the app
        received whole, or None."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            port = sock.getsockname()[1]
            self.recorder.take(port)  # a port used before: forget what it saw then
            try:
                sock.sendall(raw)
                sock.shutdown(socket.SHUT_WR)
                while sock.recv(65536):
                    pass
            except OSError:
                pass  # answered and reset before reading it all
        seen = self.recorder.take(port)
        return seen[0] if seen else None


@pytest.fixture(scope="module")
def ours() -> Iterator[ThreadedServer]:
    server = ThreadedServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


# -- h11 ----------------------------------------------------------------------------------------


def h11_first_request(raw: bytes) -> Message | None:
    """The first request h11 takes from `raw` (and then the end of input), or None if it refuses it
    or it never completes."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(raw)
    conn.receive_data(b"")
    head: h11.Request | None = None
    body = b""
    try:
        while True:
            event = conn.next_event()
            if isinstance(event, h11.Request):
                head = event
            elif isinstance(event, h11.Data):
                body += bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                assert head is not None
                headers = tuple((bytes(name), bytes(value)) for name, value in head.headers)
                return Message(bytes(head.method), bytes(head.target), head.http_version.decode(), headers, body)
            else:  # NEED_DATA, PAUSED, ConnectionClosed: no complete request
                return None
    except h11.RemoteProtocolError:
        return None


def normalised(headers: tuple[tuple[bytes, bytes], ...], strip: bool) -> list[tuple[bytes, bytes]]:
    out = []
    for name, value in headers:
        if strip:
            value = value.strip(OWS)
        if name == b"transfer-encoding":
            value = value.lower()  # h11 lower-cases it
        out.append((name, value))
    return out


# -- the variants ----------------------------------------------------------------------------------
# Each example is a valid request with at most a few deliberate oddities, each in one dimension:
# stacking many at once would make nearly every example a request both parsers refuse.

ODDITIES = (
    "request-line",
    "version",
    "host",
    "field",
    "both-framings",
    "length",
    "length-twice",
    "coding",
    "coding-twice",
    "chunk-size",
    "chunk-extension",
    "chunk-end",
    "trailer",
    "line-ending",
)
ALPHABET = st.binary(min_size=0, max_size=24).map(lambda data: bytes(b % 26 + 97 for b in data))


def pick(draw: st.DrawFn, odd: frozenset[str], name: str, normal: list[Any], strange: list[Any]) -> Any:
    """A normal choice, or (when `name` is among this example's oddities) a strange one."""
    return draw(st.sampled_from(strange if name in odd else normal))


def eol(draw: st.DrawFn, odd: frozenset[str]) -> bytes:
    return pick(draw, odd, "line-ending", [b"\r\n"], [b"\r\n", b"\r\n", b"\n", b"\r"])


def content_length(draw: st.DrawFn, odd: frozenset[str], size: int) -> list[bytes]:
    """Content-Length fields for a body of `size` bytes, in the shapes seen in smuggling attempts."""
    value = pick(
        draw,
        odd,
        "length",
        [b"%d" % size],
        [
            b"00%d" % size,
            b"+%d" % size,
            b"-%d" % size,
            b" %d " % size,
            b"%d\t" % size,
            b"%d, %d" % (size, size),
            b"%d,%d" % (size, size + 1),
            b"%d %d" % (size, size),
            b"%d" % (size + 1),
            b"%d" % max(size - 1, 0),
            b"0x%x" % size,
            b"",
            b"99999999999999999999999",
        ],
    )
    name = pick(draw, odd, "length", [b"Content-Length", b"content-length"], [b"CONTENT-LENGTH", b"Content-Length "])
    fields = [name + b":" + (b"" if value[:1] in OWS else b" ") + value]
    if "length-twice" in odd:  # a second one: the same, or another length
        fields.append(b"Content-Length: " + draw(st.sampled_from([b"%d" % size, b"%d" % (size + 2)])))
    return fields


def transfer_encoding(draw: st.DrawFn, odd: frozenset[str]) -> list[bytes]:
    value = pick(
        draw,
        odd,
        "coding",
        [b"chunked"],
        [
            b"Chunked",
            b"CHUNKED",
            b"chunked ",
            b"\tchunked",
            b"chunked,",
            b", chunked",
            b"chunked, chunked",
            b"gzip, chunked",
            b"chunked, gzip",
            b"identity",
            b"identity, chunked",
            b"",
            b"chunked;q=1",
            b"x-chunked",
            b"chunk",
        ],
    )
    names = [b"TRANSFER-ENCODING", b"Transfer-Encoding "]
    name = pick(draw, odd, "coding", [b"Transfer-Encoding", b"transfer-encoding"], names)
    fields = [name + b": " + value]
    if "coding-twice" in odd:
        fields.append(b"Transfer-Encoding: " + draw(st.sampled_from([b"chunked", b"gzip", b"identity"])))
    return fields


def chunked_body(draw: st.DrawFn, odd: frozenset[str], body: bytes) -> bytes:
    """`body` in chunks: sizes in any spelling, extensions, odd line endings, then trailers."""
    cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=3)))
    pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True) if b > a]
    out = b""
    for piece in pieces:
        n = len(piece)
        size = pick(
            draw,
            odd,
            "chunk-size",
            [b"%x" % n, b"%X" % n, b"0%x" % n],
            [
                b"0x%x" % n,
                b"+%x" % n,
                b"-%x" % n,
                b"%x " % n,
                b"%x\t" % n,
                b" %x" % n,
                b"%x" % (n + 1),
                b"%x" % (n - 1),
            ],
        )
        extension = pick(
            draw,
            odd,
            "chunk-extension",
            [b"", b";a", b";a=b", b';a="b c"'],
            [b";", b" ;a", b"; a", b";a =b", b';a="open', b";a\x00", b";a=b c", b";" + b"x" * 300],
        )
        after_data = pick(draw, odd, "chunk-end", [b"\r\n"], [b"\n", b"\r", b"", b"XX", b" \r\n"])
        out += size + extension + eol(draw, odd) + piece + after_data
    last = pick(draw, odd, "chunk-size", [b"0", b"000"], [b"0 ", b"-0", b"0x0", b"+0"])
    out += last + pick(draw, odd, "chunk-extension", [b""], [b";", b"; x", b";x=y"]) + eol(draw, odd)
    normal = [
        b"X-Trailer: 1",
        b"Content-Length: 5",
        b"Transfer-Encoding: chunked",
        b"Authorization: Bearer sk-from-a-trailer",
        b"Host: evil.example",
        b"X-Lectr-Key: lc_key_from_a_trailer",
    ]
    strange = [b"no colon here", b" folded", b"X-T : 1", b"X-T: a\x00b", b"X T: 1"]
    trailers = draw(st.lists(st.sampled_from(normal), max_size=2))
    if "trailer" in odd:
        trailers.append(draw(st.sampled_from(strange)))
    for trailer in trailers:
        out += trailer + eol(draw, odd)
    return out + eol(draw, odd)


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    """A request with at most three oddities in its framing (none at all, about a third of the time)."""
    odd = frozenset(draw(st.sets(st.sampled_from(ODDITIES), max_size=3)))
    method = draw(st.sampled_from([b"POST", b"PUT", b"GET"]))
    target = draw(st.sampled_from([b"/v1/chat/completions", b"/", b"/a?b=1", b"/a%20b"]))
    version = pick(
        draw, odd, "version", [b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0"], [b"HTTP/2.0", b"HTTP/0.9", b"HTTP/1.2"]
    )
    spacing = pick(
        draw, odd, "request-line", [(b" ", b" ", b"")], [(b"  ", b" ", b""), (b" ", b" ", b" "), (b"\t", b" ", b"")]
    )
    line = method + spacing[0] + target + spacing[1] + version + spacing[2]
    host = pick(
        draw, odd, "host", [[b"Host: x"]], [[], [b"Host: x", b"Host: y"], [b"Host : x"], [b"host:x"], [b" Host: x"]]
    )
    normal_fields = [b"X-A: b", b"X-A:b", b"X-A: b c", b"Connection: keep-alive", b"Accept: */*"]
    strange_fields = [b"X-A:  b  ", b"X-A:\tb\t", b"\tcontinued", b"X-A: b\x00c", b"X-A: b\x7fc", b"X A: b", b": b"]
    extra = draw(st.lists(st.sampled_from(normal_fields), max_size=2))
    if "field" in odd:
        extra.append(draw(st.sampled_from(strange_fields)))
    body = draw(ALPHABET)
    framing = "both" if "both-framings" in odd else draw(st.sampled_from(["length", "chunked", "none"]))
    fields: list[bytes] = []
    encoded = body
    if framing in ("length", "both"):
        fields += content_length(draw, odd, len(body))
    if framing in ("chunked", "both"):
        fields += transfer_encoding(draw, odd)
        encoded = chunked_body(draw, odd, body)
    if framing == "none":
        encoded = b""
    headers = draw(st.permutations([*host, *fields, *extra]))
    head = line + eol(draw, odd)
    for header in headers:
        head += header + eol(draw, odd)
    return head + eol(draw, odd) + encoded


# Known shapes, always tried first (issue 14 and llhttp's corpus).
KNOWN = [
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n"
    b"Authorization: Bearer sk-from-a-trailer\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n-17\r\nhello\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;\r\nhello\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nX-A: b  \r\n\r\nhello",
    b"GET / HTTP/2.0\r\nHost: x\r\n\r\n",
    b"POST / HTTP/1.1\nHost: x\nContent-Length: 5\n\nhello",
]


def with_known(test: Any) -> Any:
    for raw in KNOWN:
        test = example(raw=raw)(test)
    return test


@with_known
@SETTINGS
@given(raw=requests())
def test_never_accepts_what_h11_refuses(ours: ThreadedServer, raw: bytes) -> None:
    mine = ours.first_request(raw)
    if mine is not None:
        assert h11_first_request(raw) is not None, f"our server took a request h11 refuses: {raw!r}\napp got {mine}"


@with_known
@SETTINGS
@given(raw=requests())
def test_both_accept_the_same_request(ours: ThreadedServer, raw: bytes) -> None:
    mine = ours.first_request(raw)
    theirs = h11_first_request(raw)
    if mine is None or theirs is None:
        return
    shown = f"\ninput: {raw!r}\nours: {mine}\nh11:  {theirs}"
    assert (mine.method, mine.target, mine.version) == (theirs.method, theirs.target, theirs.version), shown
    assert mine.body == theirs.body, "bodies differ" + shown
    assert normalised(mine.headers, strip=True) == normalised(theirs.headers, strip=True), "headers differ" + shown


@with_known
@SETTINGS
@given(raw=requests())
def test_header_values_are_stripped(ours: ThreadedServer, raw: bytes) -> None:
    mine = ours.first_request(raw)
    theirs = h11_first_request(raw)
    if mine is None or theirs is None:
        return
    assert normalised(mine.headers, strip=False) == normalised(theirs.headers, strip=False), (
        f"header values with surrounding whitespace (RFC 9110 §5.5 excludes it)\ninput: {raw!r}\n"
        f"ours: {mine.headers}\nh11:  {theirs.headers}"
    )
