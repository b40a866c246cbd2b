"""HTTP/1.1 conformance cases for our own server (`proxy/http/server.py`) and client (`proxy/http/transport.py`).

Where they come from: the test corpora of the llhttp project (Node's HTTP parser, which httptools
wraps), `test/request/*.md` and `test/response/*.md` in nodejs/llhttp. Each case below restates one
of their inputs and what their strict parser concludes about it, in our own format: the raw bytes,
whether the message must be accepted or refused, and, when accepted, how it is framed (what an
ASGI app behind `serve_connection` sees, or what `LectrTransport` hands its caller). The section of
the llhttp file a case comes from is in `source`. llhttp's "lenient" variants are not restated as
lenient: the strict outcome is the one that counts.

How we adapted their inputs (`adapted` says so per case):
- Every HTTP/1.1 request carries a `Host` header (RFC 9112 §3.2 makes a server refuse one without;
  ours does), so that the case tests what it was written for and not the missing Host. One case
  keeps the Host out on purpose.
- Where llhttp's input ends in the middle of a message (their log simply stops), we complete it
  when the case is about something else (chunk extensions, pipelining), or keep it cut when the
  truncation is the point (then it must never count as a complete message).
- Header values are stated as RFC 9110 §5.5 defines them: without leading or trailing whitespace.

Our policy may be stricter than llhttp, never looser (SPEC §3): a request `Transfer-Encoding` other
than a lone `chunked` is a 501; framing errors are a 400 JSON error; trailers never become headers;
HTTP/0.9 and HTTP/2.0 request lines on plain TCP are refused; obs-fold and bare LF/CR line endings
are refused. A case where our outcome differs from llhttp's has `llhttp_accepts` set to llhttp's
outcome and `stricter` saying why, in one line.

Methods are an app-level matter (SPEC §3's 405 rule lives in `proxy/app.py`): the server-level
cases use an echo app, so `CONNECT`, `PURGE` or `M-SEARCH` here are about framing only.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

Header = tuple[bytes, bytes]


@dataclass(frozen=True)
class Message:
    """One request as the app must see it: lower-case header names, values without surrounding
    whitespace, trailers nowhere among the headers, the body decoded from its framing."""

    method: bytes
    target: bytes
    version: str
    headers: tuple[Header, ...]
    body: bytes = b""


@dataclass(frozen=True)
class RequestCase:
    name: str
    source: str  # the llhttp corpus file and section this restates
    raw: bytes  # sent as is, then the client half-closes
    accept: bool  # False: after `messages`, the rest is refused and never reaches the app
    messages: tuple[Message, ...] = ()  # every complete request the app must get, in order
    status: tuple[int, ...] = ()  # a refusal must be one of these JSON error statuses (empty: any 4xx/5xx, or a close)
    llhttp_accepts: bool | None = None  # set only where llhttp's strict outcome differs from ours
    stricter: str = ""  # why our outcome differs from llhttp's
    adapted: str = ""  # what we changed from llhttp's input
    or_refuse: str = ""  # an accepted case our policy may refuse instead (stricter, never looser): why

    def __post_init__(self) -> None:
        assert (self.llhttp_accepts is None) == (not self.stricter), self.name
        assert not (self.accept and self.status), self.name
        assert self.accept or not self.or_refuse, self.name


@dataclass(frozen=True)
class ResponseCase:
    name: str
    source: str
    raw: bytes  # what the upstream sends in answer to `GET /case`
    accept: bool  # False: an httpx error, and the connection is never reused
    close: bool  # whether the upstream closes the connection after sending `raw`
    status: int = 0
    reason: bytes = b""
    headers: tuple[Header, ...] = ()  # every header the caller sees (lower-case names), trailers excluded
    body: bytes = b""
    reuse: bool | None = None  # accepted: whether the connection must (True) or must not (False) be reused
    llhttp_accepts: bool | None = None
    stricter: str = ""
    adapted: str = ""

    def __post_init__(self) -> None:
        assert (self.llhttp_accepts is None) == (not self.stricter), self.name
        assert self.accept or self.reuse is None, self.name


def crlf(*lines: bytes) -> bytes:
    """Lines joined with CRLF (an empty line is the end of a head); no CRLF after the last one."""
    return b"\r\n".join(lines)


def hs(*lines: bytes) -> tuple[Header, ...]:
    """Expected headers from `name: value` lines: lower-case name, value without surrounding OWS."""
    out = []
    for line in lines:
        name, sep, value = line.partition(b":")
        assert sep, line
        out.append((name.lower(), value.strip(b" \t")))
    return tuple(out)


def get(target: bytes, *headers: bytes, method: bytes = b"GET", version: str = "1.1", body: bytes = b"") -> Message:
    return Message(method, target, version, hs(*headers), body)


HOST = b"Host: x"
ADDED_HOST = "Host header added (RFC 9112 §3.2)"
TE_501 = "Transfer-Encoding other than a lone chunked is 501 (SPEC §3, RFC 9112 §6.1)"
NOT_HTTP = "not an HTTP-version: a proxy on plain TCP speaks HTTP/1.x only"
OBS_FOLD = "obs-fold is refused (RFC 9112 §5.2 allows a 400), never unfolded into a value"
UPGRADE_BODY = "Upgrade requests are never forwarded (SPEC §3): refusing one is fine, an emptied body is not"
BARE_LF = "bare LF line endings are refused: lenient line endings are how requests get smuggled"

# -- requests ------------------------------------------------------------------------------------

SAMPLE = "request/sample.md"
METHOD = "request/method.md"
INVALID = "request/invalid.md"
URI = "request/uri.md"
CONNECTION = "request/connection.md"
LENGTH = "request/content-length.md"
TE = "request/transfer-encoding.md"

REQUEST_CASES: tuple[RequestCase, ...] = (
    # request/sample.md ---------------------------------------------------------------------------
    RequestCase(
        "options with tab before value",
        f"{SAMPLE}: Simple request",
        crlf(b"OPTIONS /url HTTP/1.1", HOST, b"Header1: Value1", b"Header2:\t Value2", b"", b""),
        True,
        (get(b"/url", HOST, b"Header1: Value1", b"Header2: Value2", method=b"OPTIONS"),),
        adapted=ADDED_HOST,
    ),
    RequestCase(
        "head method",
        f"{SAMPLE}: Request with method starting with H",
        crlf(b"HEAD /url HTTP/1.1", HOST, b"", b""),
        True,
        (get(b"/url", HOST, method=b"HEAD"),),
        adapted=ADDED_HOST,
    ),
    RequestCase(
        "curl get",
        f"{SAMPLE}: curl GET",
        crlf(
            b"GET /test HTTP/1.1",
            b"User-Agent: curl/7.18.0 (i486-pc-linux-gnu) libcurl/7.18.0 OpenSSL/0.9.8g zlib/1.2.3.3 libidn/1.1",
            b"Host: 0.0.0.0=5000",
            b"Accept: */*",
            b"",
            b"",
        ),
        True,
        (
            get(
                b"/test",
                b"User-Agent: curl/7.18.0 (i486-pc-linux-gnu) libcurl/7.18.0 OpenSSL/0.9.8g zlib/1.2.3.3 libidn/1.1",
                b"Host: 0.0.0.0=5000",
                b"Accept: */*",
            ),
        ),
    ),
    RequestCase(
        "firefox get with keep-alive",
        f"{SAMPLE}: Firefox GET",
        crlf(
            b"GET /favicon.ico HTTP/1.1",
            b"Host: 0.0.0.0=5000",
            b"User-Agent: Mozilla/5.0 (X11; U; Linux i686; en-US; rv:1.9) Gecko/2008061015 Firefox/3.0",
            b"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
            b"Accept-Language: en-us,en;q=0.5",
            b"Accept-Encoding: gzip,deflate",
            b"Accept-Charset: ISO-8859-1,utf-8;q=0.7,*;q=0.7",
            b"Keep-Alive: 300",
            b"Connection: keep-alive",
            b"",
            b"",
        ),
        True,
        (
            get(
                b"/favicon.ico",
                b"Host: 0.0.0.0=5000",
                b"User-Agent: Mozilla/5.0 (X11; U; Linux i686; en-US; rv:1.9) Gecko/2008061015 Firefox/3.0",
                b"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
                b"Accept-Language: en-us,en;q=0.5",
                b"Accept-Encoding: gzip,deflate",
                b"Accept-Charset: ISO-8859-1,utf-8;q=0.7,*;q=0.7",
                b"Keep-Alive: 300",
                b"Connection: keep-alive",
            ),
        ),
    ),
    RequestCase(
        "header without space after colon",
        f"{SAMPLE}: DUMBPACK",
        crlf(b"GET /dumbpack HTTP/1.1", HOST, b"aaaaaaaaaaaaa:++++++++++", b"", b""),
        True,
        (get(b"/dumbpack", HOST, b"aaaaaaaaaaaaa: ++++++++++"),),
        adapted=ADDED_HOST,
    ),
    RequestCase(
        "only a host header",
        f"{SAMPLE}: No headers and no body",
        crlf(b"GET /get_no_headers_no_body/world HTTP/1.1", HOST, b"", b""),
        True,
        (get(b"/get_no_headers_no_body/world", HOST),),
        adapted=ADDED_HOST,
    ),
    RequestCase(
        "http/1.1 without host",
        f"{SAMPLE}: No headers and no body",
        crlf(b"GET /get_no_headers_no_body/world HTTP/1.1", b"", b""),
        False,
        status=(400,),
        llhttp_accepts=True,
        stricter="RFC 9112 §3.2: a server MUST answer 400 to an HTTP/1.1 request without Host",
    ),
    RequestCase(
        "one header and no body",
        f"{SAMPLE}: One header and no body",
        crlf(b"GET /get_one_header_no_body HTTP/1.1", HOST, b"Accept: */*", b"", b""),
        True,
        (get(b"/get_one_header_no_body", HOST, b"Accept: */*"),),
        adapted=ADDED_HOST,
    ),
    RequestCase(
        "http/1.0 without body",
        f"{SAMPLE}: Apache bench GET",
        crlf(b"GET /test HTTP/1.0", b"Host: 0.0.0.0:5000", b"User-Agent: ApacheBench/2.3", b"Accept: */*", b"", b""),
        True,
        (get(b"/test", b"Host: 0.0.0.0:5000", b"User-Agent: ApacheBench/2.3", b"Accept: */*", version="1.0"),),
    ),
    RequestCase(
        "empty line before the request line",
        f"{SAMPLE}: Prefix newline",
        b"\r\n" + crlf(b"GET /test HTTP/1.1", HOST, b"", b""),
        True,
        (get(b"/test", HOST),),
        adapted=ADDED_HOST,
    ),
    RequestCase(
        "http/0.9 request line",
        f"{SAMPLE}: No HTTP version",
        crlf(b"GET /", b"", b""),
        False,
        llhttp_accepts=True,
        stricter="HTTP/0.9 request lines are refused, not served as HTTP/1.1 (SPEC §3)",
    ),
    RequestCase(
        "obs-fold in header values",
        f"{SAMPLE}: Line folding in header value with CRLF",
        crlf(b"GET / HTTP/1.1", HOST, b"Line1:   abc", b"\tdef", b" ghi", b"Line2: \t line2\t", b"", b""),
        False,
        status=(400,),
        adapted=ADDED_HOST + "; llhttp accepts this only in lenient-headers mode",
    ),
    RequestCase(
        "obs-fold with bare LF",
        f"{SAMPLE}: Line folding in header value with LF",
        b"GET / HTTP/1.1\r\nHost: x\r\nLine1:   abc\n\tdef\n ghi\n\n",
        False,
        status=(400,),
        adapted=ADDED_HOST,
    ),
    RequestCase(
        "CR without LF after the request line",
        f"{SAMPLE}: No LF after CR",
        b"GET / HTTP/1.1\rLine: 1\r\nHost: x\r\n\r\n",
        False,
        status=(400,),
        adapted=ADDED_HOST,
    ),
    RequestCase(
        "CRLF before a request with a header",
        f"{SAMPLE}: Request starting with CRLF",
        b"\r\n" + crlf(b"GET /url HTTP/1.1", HOST, b"Header1: Value1", b"", b""),
        True,
        (get(b"/url", HOST, b"Header1: Value1"),),
        adapted=ADDED_HOST,
    ),
    RequestCase(
        "utf-8 in a header value",
        f"{SAMPLE}: Extended Characters",
        crlf(b"GET / HTTP/1.1", HOST, b"Test: D\xc3\xbcsseldorf", b"", b""),
        True,
        (get(b"/", HOST, b"Test: D\xc3\xbcsseldorf"),),
        adapted=ADDED_HOST,
    ),
    RequestCase(
        "byte 0xff in a header value",
        f"{SAMPLE}: 255 ASCII in header value",
        crlf(b"OPTIONS /url HTTP/1.1", HOST, b"Header1: Value1", b"Header2: \xffValue2", b"", b""),
        True,
        (get(b"/url", HOST, b"Header1: Value1", b"Header2: \xffValue2", method=b"OPTIONS"),),
        adapted=ADDED_HOST,
    ),
    RequestCase(
        "certificate folded over lines",
        f"{SAMPLE}: X-SSL-Nonsense",
        crlf(
            b"GET / HTTP/1.1",
            HOST,
            b"X-SSL-Nonsense:   -----BEGIN CERTIFICATE-----",
            b"\tMIIFbTCCBFWgAwIBAgICH4cwDQYJKoZIhvcNAQEFBQAwcDELMAkGA1UEBhMCVUsx",
            b"\tRA==",
            b"\t-----END CERTIFICATE-----",
            b"",
            b"",
        ),
        False,
        status=(400,),
        llhttp_accepts=True,
        stricter=OBS_FOLD,
        adapted=ADDED_HOST + "; certificate shortened to two folded lines",
    ),
    # request/method.md ---------------------------------------------------------------------------
    RequestCase(
        "REPORT method",
        f"{METHOD}: REPORT request",
        crlf(b"REPORT /test HTTP/1.1", HOST, b"", b""),
        True,
        (get(b"/test", HOST, method=b"REPORT"),),
        adapted=ADDED_HOST,
    ),
    RequestCase(
        "CONNECT: bytes after the head are not a body",
        f"{METHOD}: CONNECT request",
        crlf(
            b"CONNECT 0-home0.netscape.com:443 HTTP/1.0",
            b"User-agent: Mozilla/1.1N",
            b"Proxy-authorization: basic aGVsbG86d29ybGQ=",
            b"",
            b"some data",
            b"and yet even more data",
        ),
        True,
        (
            get(
                b"0-home0.netscape.com:443",
                b"User-agent: Mozilla/1.1N",
                b"Proxy-authorization: basic aGVsbG86d29ybGQ=",
                method=b"CONNECT",
                version="1.0",
            ),
        ),
    ),
    RequestCase(
        "CONNECT to an upper-case authority",
        f"{METHOD}: CONNECT request with CAPS",
        crlf(
            b"CONNECT HOME0.NETSCAPE.COM:443 HTTP/1.0",
            b"User-agent: Mozilla/1.1N",
            b"Proxy-authorization: basic aGVsbG86d29ybGQ=",
            b"",
            b"",
        ),
        True,
        (
            get(
                b"HOME0.NETSCAPE.COM:443",
                b"User-agent: Mozilla/1.1N",
                b"Proxy-authorization: basic aGVsbG86d29ybGQ=",
                method=b"CONNECT",
                version="1.0",
            ),
        ),
    ),
    RequestCase(
        "CONNECT with content-length: no body",
        f"{METHOD}: CONNECT with body",
        crlf(
            b"CONNECT foo.bar.com:443 HTTP/1.0",
            b"User-agent: Mozilla/1.1N",
            b"Proxy-authorization: basic aGVsbG86d29ybGQ=",
            b"Content-Length: 10",
            b"",
            b'blarfcicle"',
        ),
        True,
        (
            get(
                b"foo.bar.com:443",
                b"User-agent: Mozilla/1.1N",
                b"Proxy-authorization: basic aGVsbG86d29ybGQ=",
                b"Content-Length: 10",
                method=b"CONNECT",
                version="1.0",
            ),
        ),
    ),
    RequestCase(
        "M-SEARCH with asterisk target",
        f"{METHOD}: M-SEARCH request",
        crlf(
            b"M-SEARCH * HTTP/1.1", b"HOST: 239.255.255.250:1900", b'MAN: "ssdp:discover"', b'ST: "ssdp:all"', b"", b""
        ),
        True,
        (get(b"*", b"HOST: 239.255.255.250:1900", b'MAN: "ssdp:discover"', b'ST: "ssdp:all"', method=b"M-SEARCH"),),
    ),
    RequestCase(
        "PATCH with a body",
        f"{METHOD}: PATCH request",
        crlf(
            b"PATCH /file.txt HTTP/1.1",
            b"Host: www.example.com",
            b"Content-Type: application/example",
            b'If-Match: "e0023aa4e"',
            b"Content-Length: 10",
            b"",
            b"cccccccccc",
        ),
        True,
        (
            get(
                b"/file.txt",
                b"Host: www.example.com",
                b"Content-Type: application/example",
                b'If-Match: "e0023aa4e"',
                b"Content-Length: 10",
                method=b"PATCH",
                body=b"cccccccccc",
            ),
        ),
    ),
    RequestCase(
        "PURGE method",
        f"{METHOD}: PURGE request",
        crlf(b"PURGE /file.txt HTTP/1.1", b"Host: www.example.com", b"", b""),
        True,
        (get(b"/file.txt", b"Host: www.example.com", method=b"PURGE"),),
    ),
    RequestCase(
        "SEARCH method",
        f"{METHOD}: SEARCH request",
        crlf(b"SEARCH / HTTP/1.1", b"Host: www.example.com", b"", b""),
        True,
        (get(b"/", b"Host: www.example.com", method=b"SEARCH"),),
    ),
    RequestCase(
        "LINK with a repeated header",
        f"{METHOD}: LINK request",
        crlf(
            b"LINK /images/my_dog.jpg HTTP/1.1",
            b"Host: example.com",
            b'Link: <http://example.com/profiles/joe>; rel="tag"',
            b'Link: <http://example.com/profiles/sally>; rel="tag"',
            b"",
            b"",
        ),
        True,
        (
            get(
                b"/images/my_dog.jpg",
                b"Host: example.com",
                b'Link: <http://example.com/profiles/joe>; rel="tag"',
                b'Link: <http://example.com/profiles/sally>; rel="tag"',
                method=b"LINK",
            ),
        ),
    ),
    RequestCase(
        "UNLINK method",
        f"{METHOD}: LINK request (UNLINK)",
        crlf(
            b"UNLINK /images/my_dog.jpg HTTP/1.1",
            b"Host: example.com",
            b'Link: <http://example.com/profiles/sally>; rel="tag"',
            b"",
            b"",
        ),
        True,
        (
            get(
                b"/images/my_dog.jpg",
                b"Host: example.com",
                b'Link: <http://example.com/profiles/sally>; rel="tag"',
                method=b"UNLINK",
            ),
        ),
    ),
    RequestCase(
        "SOURCE over HTTP/1.1",
        f"{METHOD}: SOURCE request",
        crlf(b"SOURCE /music/sweet/music HTTP/1.1", b"Host: example.com", b"", b""),
        True,
        (get(b"/music/sweet/music", b"Host: example.com", method=b"SOURCE"),),
    ),
    RequestCase(
        "SOURCE over ICE/1.0",
        f"{METHOD}: SOURCE request with ICE",
        crlf(b"SOURCE /music/sweet/music ICE/1.0", b"Host: example.com", b"", b""),
        False,
        llhttp_accepts=True,
        stricter=NOT_HTTP,
    ),
    RequestCase(
        "OPTIONS over RTSP/1.0",
        f"{METHOD}: OPTIONS request with RTSP",
        crlf(b"OPTIONS /music/sweet/music RTSP/1.0", b"Host: example.com", b"", b""),
        False,
        llhttp_accepts=True,
        stricter=NOT_HTTP,
    ),
    RequestCase(
        "ANNOUNCE over RTSP/1.0",
        f"{METHOD}: ANNOUNCE request with RTSP",
        crlf(b"ANNOUNCE /music/sweet/music RTSP/1.0", b"Host: example.com", b"", b""),
        False,
        llhttp_accepts=True,
        stricter=NOT_HTTP,
    ),
    RequestCase(
        "PRI over HTTP/1.1 (not the h2 preface)",
        f"{METHOD}: PRI request HTTP2",
        crlf(b"PRI * HTTP/1.1", b"", b"SM", b"", b""),
        False,
    ),
    # request/invalid.md --------------------------------------------------------------------------
    RequestCase(
        "GET over ICE/1.0",
        f"{INVALID}: ICE protocol and GET method",
        crlf(b"GET /music/sweet/music ICE/1.0", b"Host: example.com", b"", b""),
        False,
        status=(400,),
    ),
    RequestCase(
        "IHTTP protocol",
        f"{INVALID}: ICE protocol, but not really",
        crlf(b"GET /music/sweet/music IHTTP/1.0", b"Host: example.com", b"", b""),
        False,
        status=(400,),
    ),
    RequestCase(
        "PUT over RTSP/1.0",
        f"{INVALID}: RTSP protocol and PUT method",
        crlf(b"PUT /music/sweet/music RTSP/1.0", b"Host: example.com", b"", b""),
        False,
        status=(400,),
    ),
    RequestCase(
        "ANNOUNCE over HTTP/1.0",
        f"{INVALID}: HTTP protocol and ANNOUNCE method",
        crlf(b"ANNOUNCE /music/sweet/music HTTP/1.0", b"Host: example.com", b"", b""),
        False,
        status=(400,),
    ),
    RequestCase(
        "headers separated by a bare CR",
        f"{INVALID}: Headers separated by CR",
        crlf(b"GET / HTTP/1.1", HOST, b"Foo: 1\rBar: 2", b"", b""),
        False,
        status=(400,),
        adapted=ADDED_HOST,
    ),
    RequestCase(
        "bare LF hides a transfer-encoding header",
        f"{INVALID}: Headers separated by LF",
        crlf(
            b"POST / HTTP/1.1", b"Host: localhost:5000", b"x:x\nTransfer-Encoding: chunked", b"", b"1", b"A", b"0", b""
        ),
        False,
        status=(400,),
    ),
    RequestCase(
        "CR and junk where the head should end",
        f"{INVALID}: Headers separated by dummy characters",
        crlf(b"GET / HTTP/1.1", b"Connection: close", b"Host: a", b"\rZGET /evil: HTTP/1.1", b"Host: a", b""),
        False,
        status=(400,),
    ),
    RequestCase(
        "empty header value ended by a bare CR",
        f"{INVALID}: Empty headers separated by CR",
        crlf(
            b"POST / HTTP/1.1",
            b"Connection: Close",
            b"Host: localhost:5000",
            b"x:\rTransfer-Encoding: chunked",
            b"",
            b"1",
            b"A",
            b"0",
            b"",
        ),
        False,
        status=(400,),
    ),
    RequestCase(
        "empty header value ended by a bare LF",
        f"{INVALID}: Empty headers separated by LF",
        crlf(
            b"POST / HTTP/1.1", b"Host: localhost:5000", b"x:\nTransfer-Encoding: chunked", b"", b"1", b"A", b"0", b""
        ),
        False,
        status=(400,),
    ),
    RequestCase(
        "@ in a header name",
        f"{INVALID}: Invalid header token #1",
        crlf(b"GET / HTTP/1.1", HOST, b"Fo@: Failure", b"", b""),
        False,
        status=(400,),
        adapted=ADDED_HOST,
    ),
    RequestCase(
        "control characters in a header name",
        f"{INVALID}: Invalid header token #2",
        crlf(b"GET / HTTP/1.1", HOST, b"Foo\x01\test: Bar", b"", b""),
        False,
        status=(400,),
        adapted=ADDED_HOST,
    ),
    RequestCase(
        "empty header name",
        f"{INVALID}: Invalid header token #3",
        crlf(b"GET / HTTP/1.1", HOST, b": Bar", b"", b""),
        False,
        status=(400,),
        adapted=ADDED_HOST,
    ),
    RequestCase(
        "unknown method MKCOLA",
        f"{INVALID}: Invalid method",
        crlf(b"MKCOLA / HTTP/1.1", HOST, b"", b""),
        False,
        status=(400,),
        adapted=ADDED_HOST,
    ),
    RequestCase(
        "header name folded onto the next line",
        f"{INVALID}: Illegal header field name line folding",
        crlf(b"GET / HTTP/1.1", HOST, b"name", b" : value", b"", b""),
        False,
        status=(400,),
        adapted=ADDED_HOST,
    ),
    RequestCase(
        "corrupted connection header",
        f"{INVALID}: Corrupted Connection header",
        crlf(
            b"GET / HTTP/1.1",
            b"Host: www.example.com",
            b"Connection\r\x1b5\xd5eep-Alive",
            b"Accept-Encoding: gzip",
            b"",
            b"",
        ),
        False,
        status=(400,),
    ),
    RequestCase(
        "corrupted header name",
        f"{INVALID}: Corrupted header name",
        crlf(
            b"GET / HTTP/1.1",
            b"Host: www.example.com",
            b"X-Some-Header\r\x1b5\xd5eep-Alive",
            b"Accept-Encoding: gzip",
            b"",
            b"",
        ),
        False,
        status=(400,),
    ),
    RequestCase(
        "bare LF smuggles a content-length",
        f"{INVALID}: Missing CR between headers",
        crlf(
            b"GET / HTTP/1.1",
            b"Host: localhost",
            b"Dummy: x\nContent-Length: 23",
            b"",
            b"GET / HTTP/1.1",
            b"Dummy: GET /admin HTTP/1.1",
            b"Host: localhost",
            b"",
            b"",
        ),
        False,
        status=(400,),
    ),
    RequestCase(
        "HTTP/5.6",
        f"{INVALID}: Invalid HTTP version",
        crlf(b"GET / HTTP/5.6", HOST, b"", b""),
        False,
        status=(400, 505),
        adapted="a head added after the version",
    ),
    RequestCase(
        "whitespace before the first header",
        f"{INVALID}: Invalid space after start line",
        crlf(b"GET / HTTP/1.1", b" Host: foo", b"", b""),
        False,
        status=(400,),
    ),
    RequestCase(
        "only LF line endings",
        f"{INVALID}: Only LFs present",
        b"POST / HTTP/1.1\nHost: x\nTransfer-Encoding: chunked\nTrailer: Baz\nFoo: abc\nBar: def\n\n"
        b'1\nA\n1;abc\nB\n1;def=ghi\nC\n1;jkl="mno"\nD\n0\n\nBaz: ghi\n\n',
        False,
        status=(400,),
        adapted=ADDED_HOST + "; one LF-only head throughout",
    ),
    RequestCase(
        "form feed as a header value",
        "request/lenient-headers.md: Header value without lenient",
        crlf(b"GET /url HTTP/1.1", HOST, b"Header1: \x0c", b"", b""),
        False,
        status=(400,),
        adapted=ADDED_HOST,
    ),
    # request/uri.md ------------------------------------------------------------------------------
    RequestCase(
        "quotes and backslashes in the target",
        f"{URI}: Quotes in URI",
        crlf(b'GET /with_"lovely"_quotes?foo=\\"bar\\" HTTP/1.1', HOST, b"", b""),
        True,
        (get(b'/with_"lovely"_quotes?foo=\\"bar\\"', HOST),),
        adapted=ADDED_HOST,
    ),
    RequestCase(
        "question mark inside the query",
        f"{URI}: Query URL with question mark",
        crlf(b"GET /test.cgi?foo=bar?baz HTTP/1.1", HOST, b"", b""),
        True,
        (get(b"/test.cgi?foo=bar?baz", HOST),),
        adapted=ADDED_HOST,
    ),
    RequestCase(
        "absolute-form with a query and no path",
        f"{URI}: Host terminated by a query string",
        crlf(b"GET http://hypnotoad.org?hail=all HTTP/1.1", HOST, b"", b""),
        True,
        (get(b"http://hypnotoad.org?hail=all", HOST),),
        adapted=ADDED_HOST,
    ),
    RequestCase(
        "absolute-form with port and a query",
        f"{URI}: host:port terminated by a query string",
        crlf(b"GET http://hypnotoad.org:1234?hail=all HTTP/1.1", HOST, b"", b""),
        True,
        (get(b"http://hypnotoad.org:1234?hail=all", HOST),),
        adapted=ADDED_HOST,
    ),
    RequestCase(
        "vertical bar in the query",
        f"{URI}: Query URL with vertical bar character",
        crlf(b"GET /test.cgi?query=| HTTP/1.1", HOST, b"", b""),
        True,
        (get(b"/test.cgi?query=|", HOST),),
        adapted=ADDED_HOST,
    ),
    RequestCase(
        "absolute-form ending at the port",
        f"{URI}: host:port terminated by a space",
        crlf(b"GET http://hypnotoad.org:1234 HTTP/1.1", HOST, b"", b""),
        True,
        (get(b"http://hypnotoad.org:1234", HOST),),
        adapted=ADDED_HOST,
    ),
    RequestCase(
        "raw utf-8 in the path",
        f"{URI}: Disallow UTF-8 in URI path in strict mode",
        crlf(b"GET /\xce\xb4\xc2\xb6/\xce\xb4t/pope?q=1#narf HTTP/1.1", b"Host: github.com", b"", b""),
        False,
        status=(400,),
    ),
    RequestCase(
        "fragment in the target",
        f"{URI}: Fragment in URI",
        crlf(b"GET /forums/1/topics/2375?page=1#posts-17408 HTTP/1.1", HOST, b"", b""),
        True,
        (get(b"/forums/1/topics/2375?page=1#posts-17408", HOST),),
        adapted=ADDED_HOST,
    ),
    RequestCase(
        "CONNECT to a host with an underscore",
        f"{URI}: Underscore in hostname",
        crlf(
            b"CONNECT home_0.netscape.com:443 HTTP/1.0",
            b"User-agent: Mozilla/1.1N",
            b"Proxy-authorization: basic aGVsbG86d29ybGQ=",
            b"",
            b"",
        ),
        True,
        (
            get(
                b"home_0.netscape.com:443",
                b"User-agent: Mozilla/1.1N",
                b"Proxy-authorization: basic aGVsbG86d29ybGQ=",
                method=b"CONNECT",
                version="1.0",
            ),
        ),
    ),
    RequestCase(
        "absolute-form with userinfo",
        f"{URI}: host:port and basic auth",
        crlf(b"GET http://a%12:b!&*$@hypnotoad.org:1234/toto HTTP/1.1", HOST, b"", b""),
        True,
        (get(b"http://a%12:b!&*$@hypnotoad.org:1234/toto", HOST),),
        adapted=ADDED_HOST,
    ),
    RequestCase(
        "space inside the target",
        f"{URI}: Space in URI",
        crlf(b"GET /foo bar/ HTTP/1.1", HOST, b"", b""),
        False,
        status=(400,),
        adapted=ADDED_HOST,
    ),
    # request/connection.md -----------------------------------------------------------------------
    RequestCase(
        "connection: keep-alive",
        f"{CONNECTION}: Setting flag",
        crlf(b"PUT /url HTTP/1.1", HOST, b"Connection: keep-alive", b"", b""),
        True,
        (get(b"/url", HOST, b"Connection: keep-alive", method=b"PUT"),),
        adapted=ADDED_HOST,
    ),
    RequestCase(
        "two requests on one keep-alive connection",
        f"{CONNECTION}: Restarting when keep-alive is explicitly",
        crlf(b"PUT /url HTTP/1.1", HOST, b"Connection: keep-alive", b"", b"PUT /url HTTP/1.1", HOST)
        + crlf(b"", b"Connection: keep-alive", b"", b""),
        True,
        (
            get(b"/url", HOST, b"Connection: keep-alive", method=b"PUT"),
            get(b"/url", HOST, b"Connection: keep-alive", method=b"PUT"),
        ),
        adapted=ADDED_HOST,
    ),
    RequestCase(
        "nothing after an HTTP/1.0 request",
        f"{CONNECTION}: No restart when keep-alive is off (1.0)",
        crlf(b"PUT /url HTTP/1.0", b"", b"PUT /url HTTP/1.1", HOST, b"", b""),
        False,
        (get(b"/url", method=b"PUT", version="1.0"),),
        adapted=ADDED_HOST + " (to the second request)",
    ),
    RequestCase(
        "CRLF between requests, second one unfinished",
        f"{CONNECTION}: CRLF between requests, implicit keep-alive",
        crlf(
            b"POST / HTTP/1.1",
            b"Host: www.example.com",
            b"Content-Type: application/x-www-form-urlencoded",
            b"Content-Length: 4",
            b"",
            b"q=42",
            b"",
            b"GET / HTTP/1.1",
            b"",
        ),
        True,
        (
            get(
                b"/",
                b"Host: www.example.com",
                b"Content-Type: application/x-www-form-urlencoded",
                b"Content-Length: 4",
                method=b"POST",
                body=b"q=42",
            ),
        ),
    ),
    RequestCase(
        "bare CR inside the connection value",
        f"{CONNECTION}: Not treating \\r as -",
        crlf(b"PUT /url HTTP/1.1", HOST, b"Connection: keep\ralive", b"", b""),
        False,
        status=(400,),
        adapted=ADDED_HOST,
    ),
    RequestCase(
        "connection: close",
        f"{CONNECTION}: Setting flag on close",
        crlf(b"PUT /url HTTP/1.1", HOST, b"Connection: close", b"", b""),
        True,
        (get(b"/url", HOST, b"Connection: close", method=b"PUT"),),
        adapted=ADDED_HOST,
    ),
    RequestCase(
        "nothing after connection: close",
        f"{CONNECTION}: CRLF between requests, explicit close",
        crlf(
            b"POST / HTTP/1.1",
            b"Host: www.example.com",
            b"Content-Type: application/x-www-form-urlencoded",
            b"Content-Length: 4",
            b"Connection: close",
            b"",
            b"q=42",
            b"",
            b"GET / HTTP/1.1",
            HOST,
            b"",
            b"",
        ),
        False,
        (
            get(
                b"/",
                b"Host: www.example.com",
                b"Content-Type: application/x-www-form-urlencoded",
                b"Content-Length: 4",
                b"Connection: close",
                method=b"POST",
                body=b"q=42",
            ),
        ),
        adapted="the second request completed (with a Host), so that it would be served if anything were",
    ),
    RequestCase(
        "several connection tokens",
        f"{CONNECTION}: Parsing multiple tokens, Sample",
        crlf(b"PUT /url HTTP/1.1", HOST, b"Connection: close, token, upgrade, token, keep-alive", b"", b""),
        True,
        (get(b"/url", HOST, b"Connection: close, token, upgrade, token, keep-alive", method=b"PUT"),),
        adapted=ADDED_HOST,
    ),
    RequestCase(
        "connection tokens folded over two lines",
        f"{CONNECTION}: Multiple tokens with folding",
        crlf(
            b"GET /demo HTTP/1.1",
            b"Host: example.com",
            b"Connection: Something,",
            b" Upgrade, ,Keep-Alive",
            b"Upgrade: WebSocket",
            b"",
            b"Hot diggity dogg",
        ),
        False,
        status=(400,),
        llhttp_accepts=True,
        stricter=OBS_FOLD,
        adapted="websocket key headers left out",
    ),
    RequestCase(
        "upgrade: bytes after the head are not a body",
        f"{CONNECTION}: Multiple tokens with folding and LWS",
        crlf(b"GET /demo HTTP/1.1", HOST, b"Connection: keep-alive, upgrade", b"Upgrade: WebSocket", b"")
        + b"\r\nHot diggity dogg",
        True,
        (get(b"/demo", HOST, b"Connection: keep-alive, upgrade", b"Upgrade: WebSocket"),),
        adapted=ADDED_HOST,
    ),
    RequestCase(
        "connection value folded after a comma",
        f"{CONNECTION}: Multiple tokens with folding, LWS, and CRLF",
        crlf(b"GET /demo HTTP/1.1", HOST, b"Connection: keep-alive, ", b" upgrade", b"Upgrade: WebSocket", b"")
        + b"\r\nHot diggity dogg",
        False,
        status=(400,),
        llhttp_accepts=True,
        stricter=OBS_FOLD,
        adapted=ADDED_HOST,
    ),
    RequestCase(
        "space before the colon",
        f"{CONNECTION}: Invalid whitespace token with Connection header field",
        crlf(
            b"PUT /url HTTP/1.1", HOST, b"Connection : upgrade", b"Content-Length: 4", b"Upgrade: ws", b"", b"abcdefgh"
        ),
        False,
        status=(400,),
        adapted=ADDED_HOST,
    ),
    RequestCase(
        "upgrade without a body",
        f"{CONNECTION}: upgrade, Setting a flag and pausing",
        crlf(b"PUT /url HTTP/1.1", HOST, b"Connection: upgrade", b"Upgrade: ws", b"", b""),
        True,
        (get(b"/url", HOST, b"Connection: upgrade", b"Upgrade: ws", method=b"PUT"),),
        adapted=ADDED_HOST,
    ),
    RequestCase(
        "upgrade: the body ends at its content-length",
        f"{CONNECTION}: upgrade, Emitting part of body and pausing",
        crlf(
            b"PUT /url HTTP/1.1", HOST, b"Connection: upgrade", b"Content-Length: 4", b"Upgrade: ws", b"", b"abcdefgh"
        ),
        True,
        (
            get(
                b"/url",
                HOST,
                b"Connection: upgrade",
                b"Content-Length: 4",
                b"Upgrade: ws",
                method=b"PUT",
                body=b"abcd",
            ),
        ),
        adapted=ADDED_HOST,
        or_refuse=UPGRADE_BODY,
    ),
    RequestCase(
        "websocket upgrade GET",
        f"{CONNECTION}: Upgrade GET request",
        crlf(
            b"GET /demo HTTP/1.1",
            b"Host: example.com",
            b"Connection: Upgrade",
            b"Sec-WebSocket-Key2: 12998 5 Y3 1  .P00",
            b"Sec-WebSocket-Protocol: sample",
            b"Upgrade: WebSocket",
            b"Sec-WebSocket-Key1: 4 @1  46546xW%0l 1 5",
            b"Origin: http://example.com",
            b"",
            b"Hot diggity dogg",
        ),
        True,
        (
            get(
                b"/demo",
                b"Host: example.com",
                b"Connection: Upgrade",
                b"Sec-WebSocket-Key2: 12998 5 Y3 1  .P00",
                b"Sec-WebSocket-Protocol: sample",
                b"Upgrade: WebSocket",
                b"Sec-WebSocket-Key1: 4 @1  46546xW%0l 1 5",
                b"Origin: http://example.com",
            ),
        ),
    ),
    RequestCase(
        "upgrade POST with a body",
        f"{CONNECTION}: Upgrade POST request",
        crlf(
            b"POST /demo HTTP/1.1",
            b"Host: example.com",
            b"Connection: Upgrade",
            b"Upgrade: HTTP/2.0",
            b"Content-Length: 15",
            b"",
            b"sweet post bodyHot diggity dogg",
        ),
        True,
        (
            get(
                b"/demo",
                b"Host: example.com",
                b"Connection: Upgrade",
                b"Upgrade: HTTP/2.0",
                b"Content-Length: 15",
                method=b"POST",
                body=b"sweet post body",
            ),
        ),
        or_refuse=UPGRADE_BODY,
    ),
    # request/content-length.md -------------------------------------------------------------------
    RequestCase(
        "content-length with leading zeros",
        f"{LENGTH}: Content-Length with zeroes",
        crlf(b"PUT /url HTTP/1.1", HOST, b"Content-Length: 003", b"", b"abc"),
        True,
        (get(b"/url", HOST, b"Content-Length: 003", method=b"PUT", body=b"abc"),),
        adapted=ADDED_HOST,
    ),
    RequestCase(
        "content-length then another header",
        f"{LENGTH}: Content-Length with follow-up headers",
        crlf(b"PUT /url HTTP/1.1", HOST, b"Content-Length: 003", b"Ohai: world", b"", b"abc"),
        True,
        (get(b"/url", HOST, b"Content-Length: 003", b"Ohai: world", method=b"PUT", body=b"abc"),),
        adapted=ADDED_HOST,
    ),
    RequestCase(
        "content-length overflow",
        f"{LENGTH}: Error on Content-Length overflow",
        crlf(b"PUT /url HTTP/1.1", HOST, b"Content-Length: 1000000000000000000000", b"", b""),
        False,
        status=(400, 413),
        adapted=ADDED_HOST,
    ),
    RequestCase(
        "two different content-lengths",
        f"{LENGTH}: Error on duplicate Content-Length",
        crlf(b"PUT /url HTTP/1.1", HOST, b"Content-Length: 1", b"Content-Length: 2", b"", b"ab"),
        False,
        status=(400,),
        adapted=ADDED_HOST,
    ),
    RequestCase(
        "content-length with transfer-encoding: identity",
        f"{LENGTH}: Error on simultaneous Content-Length and Transfer-Encoding: identity",
        crlf(b"PUT /url HTTP/1.1", HOST, b"Content-Length: 1", b"Transfer-Encoding: identity", b"", b"a"),
        False,
        status=(400, 501),
        adapted=ADDED_HOST,
    ),
    RequestCase(
        "content-length with transfer-encoding: chunked",
        f"{LENGTH}: No error on simultaneous Content-Length and Transfer-Encoding (lenient)",
        crlf(b"PUT /url HTTP/1.1", HOST, b"Content-Length: 1", b"Transfer-Encoding: chunked", b"", b"0", b"", b""),
        False,
        status=(400,),
        adapted=ADDED_HOST + "; llhttp accepts this only in lenient-chunked-length mode",
    ),
    RequestCase(
        "mixed-case content-length on HTTP/1.0",
        f"{LENGTH}: Funky Content-Length with body",
        crlf(b"GET /get_funky_content_length_body_hello HTTP/1.0", b"conTENT-Length: 5", b"", b"HELLO"),
        True,
        (get(b"/get_funky_content_length_body_hello", b"conTENT-Length: 5", version="1.0", body=b"HELLO"),),
    ),
    RequestCase(
        "whitespace around the content-length",
        f"{LENGTH}: Spaces in Content-Length (surrounding)",
        crlf(b"POST / HTTP/1.1", HOST, b"Content-Length:  42 ", b"", b"x" * 42),
        True,
        (get(b"/", HOST, b"Content-Length: 42", method=b"POST", body=b"x" * 42),),
        adapted=ADDED_HOST + "; the 42 body bytes supplied",
    ),
    RequestCase(
        "space inside the content-length",
        f"{LENGTH}: Spaces in Content-Length #2",
        crlf(b"POST / HTTP/1.1", HOST, b"Content-Length: 4 2", b"", b""),
        False,
        status=(400,),
        adapted=ADDED_HOST,
    ),
    RequestCase(
        "two numbers in the content-length",
        f"{LENGTH}: Spaces in Content-Length #3",
        crlf(b"POST / HTTP/1.1", HOST, b"Content-Length: 13 37", b"", b""),
        False,
        status=(400,),
        adapted=ADDED_HOST,
    ),
    RequestCase(
        "empty content-length",
        f"{LENGTH}: Empty Content-Length",
        crlf(b"POST / HTTP/1.1", HOST, b"Content-Length:", b"", b""),
        False,
        status=(400,),
        adapted=ADDED_HOST,
    ),
    RequestCase(
        "CR in place of the dash in content-length",
        f"{LENGTH}: Content-Length with CR instead of dash",
        crlf(b"PUT /url HTTP/1.1", HOST, b"Content\rLength: 003", b"", b"abc"),
        False,
        status=(400,),
        adapted=ADDED_HOST,
    ),
    # request/transfer-encoding.md ----------------------------------------------------------------
    RequestCase(
        "empty transfer-encoding with content-length",
        f"{TE}: Empty Transfer-Encoding with Content-Length",
        crlf(b"POST /first HTTP/1.1", HOST, b"Transfer-Encoding:", b"Content-Length: 5", b"", b"hello"),
        False,
        status=(400, 501),
        adapted=ADDED_HOST,
    ),
    RequestCase(
        "chunked with only the last chunk",
        f"{TE}: chunked, Parsing and setting flag",
        crlf(b"PUT /url HTTP/1.1", HOST, b"Transfer-Encoding: chunked", b"", b"0", b"", b""),
        True,
        (get(b"/url", HOST, b"Transfer-Encoding: chunked", method=b"PUT"),),
        adapted=ADDED_HOST + "; the last chunk supplied",
    ),
    RequestCase(
        "lower-case chunk size",
        f"{TE}: Parse chunks with lowercase size",
        crlf(b"PUT /url HTTP/1.1", HOST, b"Transfer-Encoding: chunked", b"", b"a", b"0123456789", b"0", b"", b""),
        True,
        (get(b"/url", HOST, b"Transfer-Encoding: chunked", method=b"PUT", body=b"0123456789"),),
        adapted=ADDED_HOST,
    ),
    RequestCase(
        "upper-case chunk size",
        f"{TE}: Parse chunks with uppercase size",
        crlf(b"PUT /url HTTP/1.1", HOST, b"Transfer-Encoding: chunked", b"", b"A", b"0123456789", b"0", b"", b""),
        True,
        (get(b"/url", HOST, b"Transfer-Encoding: chunked", method=b"PUT", body=b"0123456789"),),
        adapted=ADDED_HOST,
    ),
    RequestCase(
        "one 30-byte chunk",
        f"{TE}: POST with Transfer-Encoding: chunked",
        crlf(
            b"POST /post_chunked_all_your_base HTTP/1.1",
            HOST,
            b"Transfer-Encoding: chunked",
            b"",
            b"1e",
            b"all your base are belong to us",
            b"0",
            b"",
            b"",
        ),
        True,
        (
            get(
                b"/post_chunked_all_your_base",
                HOST,
                b"Transfer-Encoding: chunked",
                method=b"POST",
                body=b"all your base are belong to us",
            ),
        ),
        adapted=ADDED_HOST,
    ),
    RequestCase(
        "last chunk written 000",
        f"{TE}: Two chunks and triple zero prefixed end chunk",
        crlf(
            b"POST /two_chunks_mult_zero_end HTTP/1.1",
            HOST,
            b"Transfer-Encoding: chunked",
            b"",
            b"5",
            b"hello",
            b"6",
            b" world",
            b"000",
            b"",
            b"",
        ),
        True,
        (get(b"/two_chunks_mult_zero_end", HOST, b"Transfer-Encoding: chunked", method=b"POST", body=b"hello world"),),
        adapted=ADDED_HOST,
    ),
    RequestCase(
        "trailers never become headers",
        f"{TE}: Trailing headers",
        crlf(
            b"POST /chunked_w_trailing_headers HTTP/1.1",
            HOST,
            b"Transfer-Encoding: chunked",
            b"",
            b"5",
            b"hello",
            b"6",
            b" world",
            b"0",
            b"Vary: *",
            b"Content-Type: text/plain",
            b"",
            b"",
        ),
        True,
        (
            get(
                b"/chunked_w_trailing_headers",
                HOST,
                b"Transfer-Encoding: chunked",
                method=b"POST",
                body=b"hello world",
            ),
        ),
        adapted=ADDED_HOST,
    ),
    RequestCase(
        "chunk extensions",
        f"{TE}: Chunk extensions",
        crlf(
            b"POST /chunked_w_unicorns_after_length HTTP/1.1",
            HOST,
            b"Transfer-Encoding: chunked",
            b"",
            b"5;ilovew3;somuchlove=aretheseparametersfor;another=withvalue",
            b"hello",
            b"6;blahblah;blah",
            b" world",
            b"0",
            b"",
            b"",
        ),
        True,
        (
            get(
                b"/chunked_w_unicorns_after_length",
                HOST,
                b"Transfer-Encoding: chunked",
                method=b"POST",
                body=b"hello world",
            ),
        ),
        adapted=ADDED_HOST + "; the final CRLF supplied",
    ),
    RequestCase(
        "chunk extension without a semicolon",
        f"{TE}: No semicolon before chunk extensions",
        crlf(
            b"POST /chunked_w_unicorns_after_length HTTP/1.1",
            b"Host: localhost",
            b"Transfer-encoding: chunked",
            b"",
            b"2 erfrferferf",
            b"aa",
            b"0 rrrr",
            b"",
            b"",
        ),
        False,
        status=(400,),
    ),
    RequestCase(
        "semicolon without an extension",
        f"{TE}: No extension after semicolon",
        crlf(
            b"POST /chunked_w_unicorns_after_length HTTP/1.1",
            b"Host: localhost",
            b"Transfer-encoding: chunked",
            b"",
            b"2;",
            b"aa",
            b"0",
            b"",
            b"",
        ),
        False,
        status=(400,),
    ),
    RequestCase(
        "quoted chunk extension values",
        f"{TE}: Chunk extensions quoting",
        crlf(
            b"POST /chunked_w_unicorns_after_length HTTP/1.1",
            HOST,
            b"Transfer-Encoding: chunked",
            b"",
            b'5;ilovew3="I \\"love\\"; \\\\extensions\\\\";somuchlove="aretheseparametersfor";blah;foo=bar',
            b"hello",
            b"6;blahblah;blah",
            b" world",
            b"0",
            b"",
            b"",
        ),
        True,
        (
            get(
                b"/chunked_w_unicorns_after_length",
                HOST,
                b"Transfer-Encoding: chunked",
                method=b"POST",
                body=b"hello world",
            ),
        ),
        adapted=ADDED_HOST + "; the final CRLF supplied",
    ),
    RequestCase(
        "unbalanced quote in a chunk extension",
        f"{TE}: Unbalanced chunk extensions quoting",
        crlf(
            b"POST /chunked_w_unicorns_after_length HTTP/1.1",
            HOST,
            b"Transfer-Encoding: chunked",
            b"",
            b'5;ilovew3="abc";somuchlove="def; ghi',
            b"hello",
            b"6;blahblah;blah",
            b" world",
            b"0",
            b"",
            b"",
        ),
        False,
        status=(400,),
        adapted=ADDED_HOST,
    ),
    RequestCase(
        "unknown transfer coding",
        f"{TE}: Ignoring pigeons",
        crlf(b"PUT /url HTTP/1.1", HOST, b"Transfer-Encoding: pigeons", b"", b""),
        False,
        status=(501,),
        adapted=ADDED_HOST,
    ),
    RequestCase(
        "transfer-encoding identity with content-length",
        f"{TE}: POST with Transfer-Encoding and Content-Length",
        crlf(
            b"POST /post_identity_body_world?q=search#hey HTTP/1.1",
            HOST,
            b"Accept: */*",
            b"Transfer-Encoding: identity",
            b"Content-Length: 5",
            b"",
            b"World",
        ),
        False,
        status=(400, 501),
        adapted=ADDED_HOST,
    ),
    RequestCase(
        "three empty transfer-encodings with content-length",
        f"{TE}: POST with empty Transfer-Encoding and Content-Length (lenient)",
        crlf(
            b"POST / HTTP/1.1",
            b"Host: foo",
            b"Content-Length: 10",
            b"Transfer-Encoding:",
            b"Transfer-Encoding:",
            b"Transfer-Encoding:",
            b"",
            b"2",
            b"AA",
            b"0",
        ),
        False,
        status=(400, 501),
    ),
    RequestCase(
        "chunked before another coding",
        f"{TE}: POST with chunked before other transfer coding names",
        crlf(
            b"POST /post_identity_body_world?q=search#hey HTTP/1.1",
            HOST,
            b"Accept: */*",
            b"Transfer-Encoding: chunked, deflate",
            b"",
            b"World",
        ),
        False,
        status=(400, 501),
        adapted=ADDED_HOST,
    ),
    RequestCase(
        "chunked then deflate in two headers",
        f"{TE}: POST with chunked and duplicate transfer-encoding",
        crlf(
            b"POST /post_identity_body_world?q=search#hey HTTP/1.1",
            HOST,
            b"Accept: */*",
            b"Transfer-Encoding: chunked",
            b"Transfer-Encoding: deflate",
            b"",
            b"World",
        ),
        False,
        status=(400, 501),
        adapted=ADDED_HOST,
    ),
    RequestCase(
        "deflate, chunked",
        f"{TE}: POST with chunked as last transfer-encoding",
        crlf(
            b"POST /post_identity_body_world?q=search#hey HTTP/1.1",
            HOST,
            b"Accept: */*",
            b"Transfer-Encoding: deflate, chunked",
            b"",
            b"5",
            b"World",
            b"0",
            b"",
            b"",
        ),
        False,
        status=(501,),
        llhttp_accepts=True,
        stricter=TE_501,
        adapted=ADDED_HOST,
    ),
    RequestCase(
        "deflate then chunked in two headers",
        f"{TE}: POST with chunked as last transfer-encoding (multiple headers)",
        crlf(
            b"POST /post_identity_body_world?q=search#hey HTTP/1.1",
            HOST,
            b"Accept: */*",
            b"Transfer-Encoding: deflate",
            b"Transfer-Encoding: chunked",
            b"",
            b"5",
            b"World",
            b"0",
            b"",
            b"",
        ),
        False,
        status=(501,),
        llhttp_accepts=True,
        stricter=TE_501,
        adapted=ADDED_HOST,
    ),
    RequestCase(
        "chunkedchunked",
        f"{TE}: POST with chunkedchunked as transfer-encoding",
        crlf(
            b"POST /post_identity_body_world?q=search#hey HTTP/1.1",
            HOST,
            b"Accept: */*",
            b"Transfer-Encoding: chunkedchunked",
            b"",
            b"5",
            b"World",
            b"0",
            b"",
            b"",
        ),
        False,
        status=(501,),
        adapted=ADDED_HOST,
    ),
    RequestCase(
        "missing last chunk",
        f"{TE}: Missing last-chunk",
        crlf(b"PUT /url HTTP/1.1", HOST, b"Transfer-Encoding: chunked", b"", b"3", b"foo", b"", b""),
        False,
        status=(400,),
        adapted=ADDED_HOST,
    ),
    RequestCase(
        "LF and spaces after a chunk size",
        f"{TE}: Validate chunk parameters",
        crlf(b"PUT /url HTTP/1.1", HOST, b"Transfer-Encoding: chunked", b"", b"3 \n  ") + b"\r\nfoo\r\n\r\n",
        False,
        status=(400,),
        adapted=ADDED_HOST,
    ),
    RequestCase(
        "obs-fold after chunked",
        f"{TE}: Invalid OBS fold after chunked value",
        crlf(b"PUT /url HTTP/1.1", HOST, b"Transfer-Encoding: chunked", b"  abc", b"", b"5", b"World", b"0", b"", b""),
        False,
        status=(400, 501),
        adapted=ADDED_HOST + "; llhttp's case runs in lenient-headers mode, where it still refuses",
    ),
    RequestCase(
        "CR CR after a chunk size",
        f"{TE}: Chunk header not terminated by CRLF",
        crlf(
            b"GET / HTTP/1.1",
            b"Host: a",
            b"Connection: close ",
            b"Transfer-Encoding: chunked ",
            b"",
            b"5\r\r;ABCD",
            b"34",
            b"E",
            b"0",
            b"",
            b"GET / HTTP/1.1 ",
            b"Host: a",
            b"Content-Length: 5",
            b"",
            b"0",
            b"",
        ),
        False,
        status=(400,),
    ),
    RequestCase(
        "chunk data without its CRLF",
        f"{TE}: Chunk data not terminated by CRLF",
        crlf(
            b"GET / HTTP/1.1",
            b"Host: a",
            b"Connection: close ",
            b"Transfer-Encoding: chunked ",
            b"",
            b"5",
            b"ABCDE0",
            b"",
        ),
        False,
        status=(400,),
    ),
    RequestCase(
        "space after a chunk size",
        f"{TE}: Space after chunk header",
        crlf(b"PUT /url HTTP/1.1", HOST, b"Transfer-Encoding: chunked", b"", b"a \r\n0123456789", b"0", b"", b""),
        False,
        status=(400,),
        adapted=ADDED_HOST,
    ),
    # request/pipelining.md and request/finish.md -----------------------------------------------
    RequestCase(
        "three pipelined requests",
        "request/pipelining.md: Should parse multiple events",
        crlf(
            b"POST /aaa HTTP/1.1",
            HOST,
            b"Content-Length: 3",
            b"",
            b"AAA",
            b"PUT /bbb HTTP/1.1",
            HOST,
            b"Content-Length: 4",
            b"",
            b"BBBB",
            b"PATCH /ccc HTTP/1.1",
            HOST,
            b"Content-Length: 4",
            b"",
            b"CCCC",
        ),
        True,
        (
            get(b"/aaa", HOST, b"Content-Length: 3", method=b"POST", body=b"AAA"),
            get(b"/bbb", HOST, b"Content-Length: 4", method=b"PUT", body=b"BBBB"),
            get(b"/ccc", HOST, b"Content-Length: 4", method=b"PATCH", body=b"CCCC"),
        ),
        adapted=ADDED_HOST + "; the third body's length made 4, so that it completes",
    ),
    RequestCase(
        "client leaves before the body",
        "request/finish.md: It should be unsafe to finish after incomplete PUT request",
        crlf(b"PUT / HTTP/1.1", HOST, b"Content-Length: 100", b"", b""),
        False,
        adapted=ADDED_HOST,
    ),
    RequestCase(
        "client leaves inside a header",
        "request/finish.md: It should be unsafe to finish inside of the header",
        crlf(b"PUT / HTTP/1.1", HOST, b"Content-Leng"),
        False,
        adapted=ADDED_HOST,
    ),
)

# Cases llhttp frames correctly that our server refuses by policy (SPEC §3: CONNECT and Upgrade
# requests are never forwarded): the server answers them itself, so no misframed body can reach
# the app. Stricter than llhttp, never looser.
CONNECT_REFUSED = "CONNECT is never served (SPEC §3): 405 from the server, nothing reaches the app"
UPGRADE_REFUSED = "Upgrade requests are never forwarded (SPEC §3): 400 from the server, nothing reaches the app"
_POLICY_REFUSALS = {
    "CONNECT: bytes after the head are not a body": (405, CONNECT_REFUSED),
    "CONNECT to an upper-case authority": (405, CONNECT_REFUSED),
    "CONNECT with content-length: no body": (405, CONNECT_REFUSED),
    "CONNECT to a host with an underscore": (405, CONNECT_REFUSED),
    "upgrade: bytes after the head are not a body": (400, UPGRADE_REFUSED),
    "upgrade without a body": (400, UPGRADE_REFUSED),
    "websocket upgrade GET": (400, UPGRADE_REFUSED),
}


def _by_policy(case: RequestCase) -> RequestCase:
    if case.name not in _POLICY_REFUSALS:
        return case
    status, why = _POLICY_REFUSALS[case.name]
    return replace(case, accept=False, messages=(), status=(status,), llhttp_accepts=True, stricter=why)


REQUEST_CASES = tuple(_by_policy(case) for case in REQUEST_CASES)
assert all(name in {case.name for case in REQUEST_CASES} for name in _POLICY_REFUSALS)

# -- responses ----------------------------------------------------------------------------------

RSAMPLE = "response/sample.md"
RCONNECTION = "response/connection.md"
RLENGTH = "response/content-length.md"
RTE = "response/transfer-encoding.md"
RINVALID = "response/invalid.md"

SOAP = (
    b'<?xml version=\\"1.0\\" encoding=\\"UTF-8\\"?>\n'
    b'<SOAP-ENV:Envelope xmlns:SOAP-ENV=\\"http://schemas.xmlsoap.org/soap/envelope/\\">\n'
    b"  <SOAP-ENV:Body>\n"
    b"    <SOAP-ENV:Fault>\n"
    b"       <faultcode>SOAP-ENV:Client</faultcode>\n"
    b"       <faultstring>Client Error</faultstring>\n"
    b"    </SOAP-ENV:Fault>\n"
    b"  </SOAP-ENV:Body>\n"
    b"</SOAP-ENV:Envelope>"
)
GOOGLE_BODY = (
    b"<HTML><HEAD><meta http-equiv=content-type content=text/html;charset=utf-8>\n"
    b"<TITLE>301 Moved</TITLE></HEAD><BODY>\n"
    b"<H1>301 Moved</H1>\n"
    b"The document has moved\n"
    b'<A HREF="http://www.google.com/">here</A>.\r\n'
    b"</BODY></HTML>"
)  # 213 bytes, against a Content-Length of 219

RESPONSE_CASES: tuple[ResponseCase, ...] = (
    # response/sample.md --------------------------------------------------------------------------
    ResponseCase(
        "content-length 0 with a tab before a value",
        f"{RSAMPLE}: Simple response",
        crlf(b"HTTP/1.1 200 OK", b"Header1: Value1", b"Header2:\t Value2", b"Content-Length: 0", b"", b""),
        True,
        close=False,
        status=200,
        reason=b"OK",
        headers=hs(b"Header1: Value1", b"Header2: Value2", b"Content-Length: 0"),
        reuse=True,
    ),
    ResponseCase(
        "status line not starting with HTTP/",
        f"{RSAMPLE}: Error on invalid response start",
        crlf(b"HTTPER/1.1 200 OK", b"", b""),
        False,
        close=True,
    ),
    ResponseCase(
        "no headers, body until close",
        f"{RSAMPLE}: Empty body should not trigger spurious span callbacks",
        crlf(b"HTTP/1.1 200 OK", b"", b""),
        True,
        close=True,
        status=200,
        reason=b"OK",
        reuse=False,
    ),
    ResponseCase(
        "content-length longer than the body, then close",
        f"{RSAMPLE}: Google 301",
        crlf(
            b"HTTP/1.1 301 Moved Permanently",
            b"Location: http://www.google.com/",
            b"Content-Type: text/html; charset=UTF-8",
            b"X-$PrototypeBI-Version: 1.6.0.3",
            b"Content-Length:  219  ",
            b"",
            GOOGLE_BODY,
        ),
        False,
        close=True,
        adapted="some headers left out; the body is 213 bytes against 219 declared, as in llhttp's input",
    ),
    ResponseCase(
        "chunked body of one LF",
        f"{RSAMPLE}: amazon.com",
        crlf(
            b"HTTP/1.1 301 MovedPermanently",
            b"Date: Wed, 15 May 2013 17:06:33 GMT",
            b"x-amz-id-1: 0GPHKXSJQ826RK7GZEB2",
            b"Vary: Accept-Encoding,User-Agent",
            b"Content-Type: text/html; charset=ISO-8859-1",
            b"Transfer-Encoding: chunked",
            b"",
            b"1",
            b"\n",
            b"0",
            b"",
            b"",
        ),
        True,
        close=False,
        status=301,
        reason=b"MovedPermanently",
        headers=hs(
            b"Date: Wed, 15 May 2013 17:06:33 GMT",
            b"x-amz-id-1: 0GPHKXSJQ826RK7GZEB2",
            b"Vary: Accept-Encoding,User-Agent",
            b"Content-Type: text/html; charset=ISO-8859-1",
            b"Transfer-Encoding: chunked",
        ),
        body=b"\n",
        reuse=True,
        adapted="some headers left out",
    ),
    ResponseCase(
        "404 without headers, body until close",
        f"{RSAMPLE}: No headers and no body",
        crlf(b"HTTP/1.1 404 Not Found", b"", b""),
        True,
        close=True,
        status=404,
        reason=b"Not Found",
        reuse=False,
    ),
    ResponseCase(
        "no reason phrase",
        f"{RSAMPLE}: No reason phrase",
        crlf(b"HTTP/1.1 301", b"", b""),
        True,
        close=True,
        status=301,
        reuse=False,
    ),
    ResponseCase(
        "empty reason phrase after the space",
        f"{RSAMPLE}: Empty reason phrase after space",
        crlf(b"HTTP/1.1 200 ", b"", b""),
        True,
        close=True,
        status=200,
        reuse=False,
    ),
    ResponseCase(
        "LF-only head",
        f"{RSAMPLE}: No carriage ret",
        b"HTTP/1.1 200 OK\nContent-Type: text/html; charset=utf-8\nConnection: close\n\n"
        b"these headers are from http://news.ycombinator.com/",
        False,
        close=True,
        llhttp_accepts=True,
        stricter=BARE_LF,
    ),
    ResponseCase(
        "underscore in a header name",
        f"{RSAMPLE}: Underscore in header key",
        crlf(
            b"HTTP/1.1 200 OK",
            b"Server: DCLK-AdSvr",
            b"Content-Type: text/xml",
            b"Content-Length: 0",
            b"DCLK_imp: v7;x;114750856;0-0;0;17820020;0/0;21603567/21621457/1;;~okv=;dcmt=text/xml;;~cs=o",
            b"",
            b"",
        ),
        True,
        close=False,
        status=200,
        reason=b"OK",
        headers=hs(
            b"Server: DCLK-AdSvr",
            b"Content-Type: text/xml",
            b"Content-Length: 0",
            b"DCLK_imp: v7;x;114750856;0-0;0;17820020;0/0;21603567/21621457/1;;~okv=;dcmt=text/xml;;~cs=o",
        ),
        reuse=True,
    ),
    ResponseCase(
        "empty header value, HTTP/1.0 keep-alive",
        f"{RSAMPLE}: bonjourmadame.fr",
        crlf(
            b"HTTP/1.0 301 Moved Permanently",
            b"Cache-Control: public",
            b"Pragma: ",
            b"Location: http://www.bonjourmadame.fr/",
            b"Content-Length: 0",
            b"Connection: keep-alive",
            b"",
            b"",
        ),
        True,
        close=False,
        status=301,
        reason=b"Moved Permanently",
        headers=hs(
            b"Cache-Control: public",
            b"Pragma: ",
            b"Location: http://www.bonjourmadame.fr/",
            b"Content-Length: 0",
            b"Connection: keep-alive",
        ),
        reuse=True,
        adapted="some headers left out",
    ),
    ResponseCase(
        "odd header names, chunked, connection: close",
        f"{RSAMPLE}: Spaces in header value",
        crlf(
            b"HTTP/1.1 200 OK",
            b"Cache-Control: no-cache, must-revalidate",
            b".et-Cookie: PlaxoCS=1274804622353690521; path=/; domain=.plaxo.com",
            b"_eep-Alive: timeout=45",
            b"_onnection: Keep-Alive",
            b"Transfer-Encoding: chunked",
            b"Content-Type: text/html",
            b"Connection: close",
            b"",
            b"0",
            b"",
            b"",
        ),
        True,
        close=False,
        status=200,
        reason=b"OK",
        headers=hs(
            b"Cache-Control: no-cache, must-revalidate",
            b".et-Cookie: PlaxoCS=1274804622353690521; path=/; domain=.plaxo.com",
            b"_eep-Alive: timeout=45",
            b"_onnection: Keep-Alive",
            b"Transfer-Encoding: chunked",
            b"Content-Type: text/html",
            b"Connection: close",
        ),
        reuse=False,
        adapted="some headers left out",
    ),
    ResponseCase(
        "space inside a header name",
        f"{RSAMPLE}: Spaces in header name in strict mode",
        crlf(
            b"HTTP/1.1 200 OK",
            b"Server: Microsoft-IIS/6.0",
            b"en-US Content-Type: text/xml",
            b"Content-Type: text/xml",
            b"Content-Length: 16",
            b"Connection: keep-alive",
            b"",
            b"<xml>hello</xml>",
        ),
        False,
        close=True,
    ),
    ResponseCase(
        "utf-8 in the reason phrase",
        f"{RSAMPLE}: Non ASCII in status line",
        crlf(b"HTTP/1.1 500 Ori\xc3\xabntatieprobleem", b"Content-Length: 0", b"Connection: close", b"", b""),
        True,
        close=False,
        status=500,
        reason=b"Ori\xc3\xabntatieprobleem",
        headers=hs(b"Content-Length: 0", b"Connection: close"),
        reuse=False,
        adapted="Date header left out",
    ),
    ResponseCase(
        "HTTP/0.9 status line, body until close",
        f"{RSAMPLE}: HTTP version 0.9",
        crlf(b"HTTP/0.9 200 OK", b"", b""),
        True,
        close=True,
        status=200,
        reason=b"OK",
        reuse=False,
    ),
    ResponseCase(
        "no framing headers: body until close",
        f"{RSAMPLE}: No Content-Length, no Transfer-Encoding",
        crlf(b"HTTP/1.1 200 OK", b"Content-Type: text/plain", b"", b"hello world"),
        True,
        close=True,
        status=200,
        reason=b"OK",
        headers=hs(b"Content-Type: text/plain"),
        body=b"hello world",
        reuse=False,
    ),
    ResponseCase(
        "CRLF before the status line",
        f"{RSAMPLE}: Response starting with CRLF",
        b"\r\n" + crlf(b"HTTP/1.1 200 OK", b"Header1: Value1", b"Header2:\t Value2", b"Content-Length: 0", b"", b""),
        True,
        close=False,
        status=200,
        reason=b"OK",
        headers=hs(b"Header1: Value1", b"Header2: Value2", b"Content-Length: 0"),
    ),
    # response/content-length.md ------------------------------------------------------------------
    ResponseCase(
        "connection: close, body until close",
        f"{RLENGTH}: Response without Content-Length, but with body",
        crlf(
            b"HTTP/1.1 200 OK",
            b"Server: Apache",
            b"Content-Type: text/xml; charset=utf-8",
            b"Connection: close",
            b"",
            SOAP,
        ),
        True,
        close=True,
        status=200,
        reason=b"OK",
        headers=hs(b"Server: Apache", b"Content-Type: text/xml; charset=utf-8", b"Connection: close"),
        body=SOAP,
        reuse=False,
        adapted="some headers left out",
    ),
    ResponseCase(
        "content-length-x is not content-length",
        f"{RLENGTH}: Content-Length-X",
        crlf(
            b"HTTP/1.1 200 OK", b"Content-Length-X: 0", b"Transfer-Encoding: chunked", b"", b"2", b"OK", b"0", b"", b""
        ),
        True,
        close=False,
        status=200,
        reason=b"OK",
        headers=hs(b"Content-Length-X: 0", b"Transfer-Encoding: chunked"),
        body=b"OK",
        reuse=True,
    ),
    # response/connection.md ----------------------------------------------------------------------
    ResponseCase(
        "proxy-connection: close",
        f"{RCONNECTION}: Proxy-Connection",
        crlf(
            b"HTTP/1.1 200 OK",
            b"Content-Type: text/html; charset=UTF-8",
            b"Content-Length: 11",
            b"Proxy-Connection: close",
            b"",
            b"hello world",
        ),
        True,
        close=False,
        status=200,
        reason=b"OK",
        headers=hs(b"Content-Type: text/html; charset=UTF-8", b"Content-Length: 11", b"Proxy-Connection: close"),
        body=b"hello world",
        adapted="Date header left out",
    ),
    ResponseCase(
        "HTTP/1.0 keep-alive without a length: body until close",
        f"{RCONNECTION}: HTTP/1.0 with keep-alive and EOF-terminated 200 status",
        crlf(b"HTTP/1.0 200 OK", b"Connection: keep-alive", b"", b"HTTP/1.0 200 OK"),
        True,
        close=True,
        status=200,
        reason=b"OK",
        headers=hs(b"Connection: keep-alive"),
        body=b"HTTP/1.0 200 OK",
        reuse=False,
    ),
    ResponseCase(
        "HTTP/1.0 204 then stray bytes",
        f"{RCONNECTION}: HTTP/1.0 with keep-alive and 204 status",
        crlf(b"HTTP/1.0 204 No content", b"Connection: keep-alive", b"", b"HTTP/1.0 200 OK"),
        True,
        close=False,
        status=204,
        reason=b"No content",
        headers=hs(b"Connection: keep-alive"),
        reuse=False,
    ),
    ResponseCase(
        "HTTP/1.1 without a length: body until close",
        f"{RCONNECTION}: HTTP/1.1 with EOF-terminated 200 status",
        crlf(b"HTTP/1.1 200 OK", b"", b"HTTP/1.1 200 OK"),
        True,
        close=True,
        status=200,
        reason=b"OK",
        body=b"HTTP/1.1 200 OK",
        reuse=False,
    ),
    ResponseCase(
        "HTTP/1.1 204 then stray bytes",
        f"{RCONNECTION}: HTTP/1.1 with 204 status",
        crlf(b"HTTP/1.1 204 No content", b"", b"HTTP/1.1 200 OK"),
        True,
        close=False,
        status=204,
        reason=b"No content",
        reuse=False,
    ),
    ResponseCase(
        "204 with connection: close, then stray bytes",
        f"{RCONNECTION}: HTTP/1.1 with keep-alive disabled and 204 status in strict mode",
        crlf(b"HTTP/1.1 204 No content", b"Connection: close", b"", b"HTTP/1.1 200 OK"),
        True,
        close=False,
        status=204,
        reason=b"No content",
        headers=hs(b"Connection: close"),
        reuse=False,
        adapted="llhttp flags the bytes after the answer as an error; the answer itself is complete",
    ),
    ResponseCase(
        "body longer than its content-length",
        f"{RCONNECTION}: HTTP/1.1 with keep-alive disabled, content-length, and in strict mode",
        crlf(b"HTTP/1.1 200 No content", b"Content-Length: 5", b"Connection: close", b"", b"")
        + b"2ad731e3-4dcd-4f70-b871-0ad284b29ffc",
        True,
        close=False,
        status=200,
        reason=b"No content",
        headers=hs(b"Content-Length: 5", b"Connection: close"),
        body=b"2ad73",
        reuse=False,
    ),
    ResponseCase(
        "body longer than its content-length, keep-alive",
        f"{RCONNECTION}: HTTP/1.1 with keep-alive disabled, content-length, and in strict mode",
        crlf(b"HTTP/1.1 200 OK", b"Content-Length: 5", b"", b"") + b"2ad731e3-4dcd-4f70-b871-0ad284b29ffc",
        True,
        close=False,
        status=200,
        reason=b"OK",
        headers=hs(b"Content-Length: 5"),
        body=b"2ad73",
        reuse=False,
        adapted="Connection: close left out, so that only the stray bytes can stop a reuse",
    ),
    ResponseCase(
        "101 with content-length",
        f"{RCONNECTION}: HTTP 101 response with Upgrade and Content-Length header",
        crlf(
            b"HTTP/1.1 101 Switching Protocols",
            b"Connection: upgrade",
            b"Upgrade: h2c",
            b"Content-Length: 4",
            b"",
            b"bodyproto",
        ),
        False,
        close=True,
        llhttp_accepts=True,
        stricter="the proxy never asks to upgrade: a 101 answer is a protocol error",
    ),
    ResponseCase(
        "101 with chunked",
        f"{RCONNECTION}: HTTP 101 response with Upgrade and Transfer-Encoding header",
        crlf(
            b"HTTP/1.1 101 Switching Protocols",
            b"Connection: upgrade",
            b"Upgrade: h2c",
            b"Transfer-Encoding: chunked",
            b"",
            b"2",
            b"bo",
            b"2",
            b"dy",
            b"0",
            b"",
            b"proto",
        ),
        False,
        close=True,
        llhttp_accepts=True,
        stricter="the proxy never asks to upgrade: a 101 answer is a protocol error",
    ),
    ResponseCase(
        "200 with upgrade headers, body until close",
        f"{RCONNECTION}: HTTP 200 response with Upgrade header",
        crlf(b"HTTP/1.1 200 OK", b"Connection: upgrade", b"Upgrade: h2c", b"", b"body"),
        True,
        close=True,
        status=200,
        reason=b"OK",
        headers=hs(b"Connection: upgrade", b"Upgrade: h2c"),
        body=b"body",
        reuse=False,
    ),
    ResponseCase(
        "200 with upgrade headers and content-length",
        f"{RCONNECTION}: HTTP 200 response with Upgrade header and Content-Length",
        crlf(b"HTTP/1.1 200 OK", b"Connection: upgrade", b"Upgrade: h2c", b"Content-Length: 4", b"", b"body"),
        True,
        close=False,
        status=200,
        reason=b"OK",
        headers=hs(b"Connection: upgrade", b"Upgrade: h2c", b"Content-Length: 4"),
        body=b"body",
    ),
    ResponseCase(
        "200 with upgrade headers and chunked",
        f"{RCONNECTION}: HTTP 200 response with Upgrade header and Transfer-Encoding",
        crlf(
            b"HTTP/1.1 200 OK",
            b"Connection: upgrade",
            b"Upgrade: h2c",
            b"Transfer-Encoding: chunked",
            b"",
            b"2",
            b"bo",
            b"2",
            b"dy",
            b"0",
            b"",
            b"",
        ),
        True,
        close=False,
        status=200,
        reason=b"OK",
        headers=hs(b"Connection: upgrade", b"Upgrade: h2c", b"Transfer-Encoding: chunked"),
        body=b"body",
    ),
    # response/transfer-encoding.md ---------------------------------------------------------------
    ResponseCase(
        "spaces after chunk sizes",
        f"{RTE}: Trailing space on chunked body",
        crlf(
            b"HTTP/1.1 200 OK",
            b"Content-Type: text/plain",
            b"Transfer-Encoding: chunked",
            b"",
            b"25  ",
            b"This is the data in the first chunk",
            b"",
            b"1C",
            b"and this is the second one",
            b"",
            b"0  ",
            b"",
            b"",
        ),
        False,
        close=True,
    ),
    ResponseCase(
        "chunked before deflate",
        f"{RTE}: chunked before other transfer-encoding",
        crlf(b"HTTP/1.1 200 OK", b"Accept: */*", b"Transfer-Encoding: chunked, deflate", b"", b"World"),
        False,
        close=True,
        llhttp_accepts=True,
        stricter="a transfer coding we cannot undo: relaying it raw would hand the client an encoded body",
    ),
    ResponseCase(
        "chunked then identity in two headers",
        f"{RTE}: multiple transfer-encoding where chunked is not the last one",
        crlf(b"HTTP/1.1 200 OK", b"Accept: */*", b"Transfer-Encoding: chunked", b"Transfer-Encoding: identity", b"")
        + b"\r\nWorld",
        False,
        close=True,
        llhttp_accepts=True,
        stricter="a transfer coding we cannot undo: relaying it raw would hand the client an encoded body",
    ),
    ResponseCase(
        "chunkedchunked",
        f"{RTE}: chunkedchunked transfer-encoding does not enable chunked enconding",
        crlf(
            b"HTTP/1.1 200 OK", b"Accept: */*", b"Transfer-Encoding: chunkedchunked", b"", b"2", b"OK", b"0", b"", b""
        ),
        False,
        close=True,
        llhttp_accepts=True,
        stricter="a transfer coding we cannot undo: relaying it raw would hand the client an encoded body",
    ),
    ResponseCase(
        "chunk extensions",
        f"{RTE}: Chunk extensions",
        crlf(
            b"HTTP/1.1 200 OK",
            b"Host: localhost",
            b"Transfer-encoding: chunked",
            b"",
            b"5;ilovew3;somuchlove=aretheseparametersfor",
            b"hello",
            b"6;blahblah;blah",
            b" world",
            b"0",
            b"",
            b"",
        ),
        True,
        close=False,
        status=200,
        reason=b"OK",
        headers=hs(b"Host: localhost", b"Transfer-encoding: chunked"),
        body=b"hello world",
        reuse=True,
    ),
    ResponseCase(
        "chunk extension without a semicolon",
        f"{RTE}: No semicolon before chunk extensions",
        crlf(b"HTTP/1.1 200 OK", b"Host: localhost", b"Transfer-encoding: chunked", b"", b"2 erfrferferf", b"aa")
        + crlf(b"", b"0 rrrr", b"", b""),
        False,
        close=True,
    ),
    ResponseCase(
        "semicolon without an extension",
        f"{RTE}: No extension after semicolon",
        crlf(b"HTTP/1.1 200 OK", b"Host: localhost", b"Transfer-encoding: chunked", b"", b"2;", b"aa", b"0", b"", b""),
        False,
        close=True,
    ),
    ResponseCase(
        "quoted chunk extension values",
        f"{RTE}: Chunk extensions quoting",
        crlf(
            b"HTTP/1.1 200 OK",
            b"Host: localhost",
            b"Transfer-Encoding: chunked",
            b"",
            b'5;ilovew3="I love; extensions";somuchlove="aretheseparametersfor";blah;foo=bar',
            b"hello",
            b"6;blahblah;blah",
            b" world",
            b"0",
            b"",
            b"",
        ),
        True,
        close=False,
        status=200,
        reason=b"OK",
        headers=hs(b"Host: localhost", b"Transfer-Encoding: chunked"),
        body=b"hello world",
        reuse=True,
        adapted="the final CRLF supplied",
    ),
    ResponseCase(
        "unbalanced quote in a chunk extension",
        f"{RTE}: Unbalanced chunk extensions quoting",
        crlf(
            b"HTTP/1.1 200 OK",
            b"Host: localhost",
            b"Transfer-Encoding: chunked",
            b"",
            b'5;ilovew3="abc";somuchlove="def; ghi',
            b"hello",
            b"6;blahblah;blah",
            b" world",
            b"0",
            b"",
            b"",
        ),
        False,
        close=True,
    ),
    ResponseCase(
        "obs-fold after chunked",
        f"{RTE}: Invalid OBS fold after chunked value",
        crlf(b"HTTP/1.1 200 OK", b"Transfer-Encoding: chunked", b"  abc", b"", b"5", b"World", b"0", b"", b""),
        False,
        close=True,
        llhttp_accepts=True,
        stricter=OBS_FOLD,
    ),
    ResponseCase(
        "trailers never become headers",
        "request/transfer-encoding.md: Trailing headers (as a response)",
        crlf(
            b"HTTP/1.1 200 OK",
            b"Transfer-Encoding: chunked",
            b"",
            b"5",
            b"hello",
            b"6",
            b" world",
            b"0",
            b"Vary: *",
            b"Set-Cookie: session=stolen",
            b"",
            b"",
        ),
        True,
        close=False,
        status=200,
        reason=b"OK",
        headers=hs(b"Transfer-Encoding: chunked"),
        body=b"hello world",
        reuse=True,
        adapted="llhttp's request case with trailers, sent as an answer; a Set-Cookie trailer added",
    ),
    # response/invalid.md -------------------------------------------------------------------------
    ResponseCase(
        "HTP/1.1", f"{RINVALID}: Incomplete HTTP protocol", crlf(b"HTP/1.1 200 OK", b"", b""), False, close=True
    ),
    ResponseCase(
        "two-digit major version 01",
        f"{RINVALID}: Extra digit in HTTP major version",
        crlf(b"HTTP/01.1 200 OK", b"", b""),
        False,
        close=True,
    ),
    ResponseCase(
        "two-digit major version 11",
        f"{RINVALID}: Extra digit in HTTP major version #2",
        crlf(b"HTTP/11.1 200 OK", b"", b""),
        False,
        close=True,
    ),
    ResponseCase(
        "two-digit minor version",
        f"{RINVALID}: Extra digit in HTTP minor version",
        crlf(b"HTTP/1.01 200 OK", b"", b""),
        False,
        close=True,
    ),
    ResponseCase(
        "tab after the version",
        f"{RINVALID}: Tab after HTTP version",
        crlf(b"HTTP/1.1\t200 OK", b"", b""),
        False,
        close=True,
    ),
    ResponseCase(
        "CR before the status line, tab after the version",
        f"{RINVALID}: CR before response and tab after HTTP version",
        b"\r" + crlf(b"HTTP/1.1\t200 OK", b"", b""),
        False,
        close=True,
    ),
    ResponseCase(
        "headers separated by a bare CR",
        f"{RINVALID}: Headers separated by CR",
        crlf(b"HTTP/1.1 200 OK", b"Foo: 1\rBar: 2", b"", b""),
        False,
        close=True,
    ),
    # response/pipelining.md ----------------------------------------------------------------------
    ResponseCase(
        "three answers to one request",
        "response/pipelining.md: Should parse multiple events",
        crlf(
            b"HTTP/1.1 200 OK",
            b"Content-Length: 3",
            b"",
            b"AAA",
            b"HTTP/1.1 201 Created",
            b"Content-Length: 4",
            b"",
            b"BBBB",
            b"HTTP/1.1 202 Accepted",
            b"Content-Length: 5",
            b"",
            b"CCCC",
        ),
        True,
        close=False,
        status=200,
        reason=b"OK",
        headers=hs(b"Content-Length: 3"),
        body=b"AAA",
        reuse=False,
        adapted="only one request is sent: the two answers after the first are stray bytes",
    ),
)


def stricter_than_llhttp() -> list[tuple[str, str]]:
    """(case name, why) for every case where our outcome is stricter than llhttp's."""
    cases: list[RequestCase | ResponseCase] = [*REQUEST_CASES, *RESPONSE_CASES]
    return [(case.name, case.stricter) for case in cases if case.stricter]
