"""Hostile input against the real proxy (Hypercorn subprocess): never a crash, always a JSON error.

Invariants checked everywhere: the proxy answers `/healthz` afterwards; no 500 without a JSON body;
every error the proxy itself answers has `content-type: application/json` and a
`{"error": {"message", "type", "code"}}` body; stored events hold valid UTF-8 without NULs.

What Hypercorn (h11) rejects before the app sees it, with its own bare answer (empty body, no
content type) and the connection closed — not ours to shape, only to survive:
- a request line or header block over `h11_max_incomplete_size` (1 MiB): `431`;
- a NUL or a bare CR in a header value, a space in a header name or the request target, an
  unparsable Content-Length: `400`. (Other C0 controls, DEL and bytes 0x80-0xFF do reach the app,
  which stores X-Lectr-* values with them replaced by U+FFFD.)
Everything else reaches the app: header values over `LECTR_MAX_HEADER_BYTES` (16 KiB) get the
app's `431` JSON, bodies over `LECTR_MAX_BODY_BYTES` (1 MiB in the test session) its `413` JSON.
"""

from __future__ import annotations

import json
import string
import time
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.store.db import connect
from tests.conftest import ProxyProcess
from tests.fakes import FakeProviders, wait_for
from tests.security.conftest import (
    PROVIDER_KEY,
    assert_alive,
    assert_json_error,
    raw_exchange,
    raw_request,
    rows,
    unique,
)

CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
MIB = 1024 * 1024


def _headers(key: str, **extra: str) -> dict[str, str]:
    return {"X-Lectr-Key": key, "Authorization": f"Bearer {PROVIDER_KEY}", **extra}


def _events_with_feature(pg_url: str, prefix: str, expected: int, timeout: float = 15.0) -> list[dict[str, Any]]:
    """Events whose feature starts with `prefix`, once at least `expected` of them are written."""
    with connect(pg_url) as conn:
        query = "SELECT * FROM events WHERE starts_with(feature, %s) ORDER BY created_at"
        wait_for(lambda: len(rows(conn, query, (prefix,))) >= expected, timeout=timeout)
        return rows(conn, query, (prefix,))


def _assert_clean_text(value: str | None) -> None:
    if value is None:
        return
    value.encode("utf-8")  # no lone surrogates
    assert "\x00" not in value and value.isprintable(), repr(value)


# -- bodies -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"", 400, "malformed_json"),
        (b"{", 400, "malformed_json"),
        (b"\x00\x01\x02\xff\xfe garbage", 400, "malformed_json"),
        (b'{"model": "gpt-4o\xff\xfe"}', 400, "malformed_json"),  # invalid UTF-8 inside a JSON string
        (b'{"model": "gpt-4o\\ud800"}', 400, "malformed_json"),  # a lone surrogate escape
        (b"[" * 100_000 + b"]" * 100_000, 400, "malformed_json"),  # nesting far past any parser limit
        (b'"just a string"', 400, "malformed_json"),
        (b"[1, 2, 3]", 400, "malformed_json"),
        (b"null", 400, "malformed_json"),
        (b'{"model": 123}', 400, "missing_model"),
        (b'{"model": {"$gt": ""}}', 400, "missing_model"),
        (b'{"model": "   "}', 400, "missing_model"),
        (b'{"messages": []}', 400, "missing_model"),
    ],
)
def test_malformed_bodies_are_json_400s(
    proxy: ProxyProcess, fakes: FakeProviders, sec_org: Any, body: bytes, status: int, code: str
) -> None:
    _, key = sec_org
    fakes.reset()
    response = httpx.post(
        f"{proxy.url}/v1/chat/completions", content=body, headers=_headers(key, **{"content-type": "application/json"})
    )
    error = assert_json_error(response.status_code, response.headers, response.content, status)
    assert error["code"] == code
    assert not fakes["openai"].received
    assert_alive(proxy)


def test_oversized_bodies_are_json_413s_declared_or_chunked(
    proxy: ProxyProcess, fakes: FakeProviders, sec_org: Any
) -> None:
    _, key = sec_org
    fakes.reset()
    big = b'{"model": "gpt-4o", "pad": "' + b"x" * (2 * MIB) + b'"}'
    with httpx.Client(base_url=proxy.url, headers=_headers(key), timeout=60) as client:
        declared = client.post("/v1/chat/completions", content=big, headers={"content-type": "application/json"})
        assert_json_error(declared.status_code, declared.headers, declared.content, 413)

        def chunks() -> Any:  # no Content-Length: the limit must hold while reading
            for i in range(0, len(big), 64 * 1024):
                yield big[i : i + 64 * 1024]

        chunked = client.post("/v1/chat/completions", content=chunks(), headers={"content-type": "application/json"})
        assert_json_error(chunked.status_code, chunked.headers, chunked.content, 413)
        # A 10 MB body of garbage on a path that does not parse JSON: still the size limit first.
        garbage = client.post("/v1/files", content=b"\xff" * (10 * MIB), headers={"content-type": "text/plain"})
        assert_json_error(garbage.status_code, garbage.headers, garbage.content, 413)
        # Just under the limit is fine.
        ok = client.post(
            "/v1/chat/completions",
            content=b'{"model": "gpt-4o", "pad": "' + b"x" * (MIB - 100) + b'"}',
            headers={"content-type": "application/json"},
        )
        assert ok.status_code == 200
    assert len(fakes["openai"].received) == 1
    assert_alive(proxy)


def test_lying_content_length_and_early_close(proxy: ProxyProcess, sec_org: Any) -> None:
    """A body shorter than its Content-Length, then the client leaves: no crash, no stuck worker."""
    _, key = sec_org
    request = raw_request(key, body=b'{"model":"gpt-4o"}')
    request = request.replace(b"Content-Length: 18", b"Content-Length: 5000")
    import socket

    for _ in range(5):
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
            sock.sendall(request)
            time.sleep(0.05)
    assert_alive(proxy)


# -- headers ----------------------------------------------------------------------------------


def test_five_hundred_headers_are_forwarded(proxy: ProxyProcess, fakes: FakeProviders, sec_org: Any) -> None:
    _, key = sec_org
    fakes.reset()
    many = {f"x-custom-{i}": f"value-{i}-" + "v" * 50 for i in range(500)}
    response = httpx.post(f"{proxy.url}/v1/chat/completions", json=CHAT, headers=_headers(key, **many))
    assert response.status_code == 200
    received = fakes["openai"].received[-1].headers
    assert all(received.get(name) == value for name, value in many.items())
    assert not any(name.startswith("x-lectr-") for name in received)
    assert_alive(proxy)


@pytest.mark.parametrize("name", ["X-Lectr-Feature", "X-Lectr-Task", "X-Lectr-Key", "Authorization", "X-Other"])
def test_header_value_over_the_app_limit_is_json_431(
    proxy: ProxyProcess, fakes: FakeProviders, sec_org: Any, name: str
) -> None:
    _, key = sec_org
    fakes.reset()
    headers = _headers(key)
    headers[name] = "h" * (100 * 1024)  # over 16 KiB, under Hypercorn's 1 MiB
    response = httpx.post(f"{proxy.url}/v1/chat/completions", json=CHAT, headers=headers, timeout=30)
    error = assert_json_error(response.status_code, response.headers, response.content, 431)
    assert error["code"] == "header_too_large"
    assert "hhhh" not in error["message"]  # the value is not echoed
    assert not fakes["openai"].received
    assert_alive(proxy)


def test_ten_megabyte_header_is_refused_by_hypercorn_and_the_proxy_survives(proxy: ProxyProcess, sec_org: Any) -> None:
    _, key = sec_org
    request = raw_request(key, headers=b"X-Lectr-Feature: " + b"f" * (10 * MIB) + b"\r\n")
    response = raw_exchange(proxy.port, request)
    # h11's limit (1 MiB) is hit before the app sees the request: Hypercorn's own bare 431.
    assert response.status is not None and 400 <= response.status < 500, response
    assert_alive(proxy)


def test_huge_request_line_is_refused_by_hypercorn_and_the_proxy_survives(proxy: ProxyProcess) -> None:
    request = b"GET /v1/" + b"a" * (2 * MIB) + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    response = raw_exchange(proxy.port, request)
    assert response.status is not None and 400 <= response.status < 500, response
    assert_alive(proxy)


@pytest.mark.parametrize(
    "line",
    [
        b"X-Lectr-Feature: a\x00b\r\n",  # NUL in a header value
        b"X-Lectr-Feature: a\rX-Evil: 1\r\n",  # a bare CR: header splitting attempt
        b"X-Bad Name: 1\r\n",  # a space in a header name
        b"Content-Length: 12abc\r\n",
    ],
)
def test_header_bytes_h11_forbids_get_a_4xx_from_hypercorn(
    proxy: ProxyProcess, fakes: FakeProviders, sec_org: Any, line: bytes
) -> None:
    _, key = sec_org
    fakes.reset()
    response = raw_exchange(proxy.port, raw_request(key, headers=line))
    assert response.status is not None and 400 <= response.status < 500, response
    assert not fakes["openai"].received
    assert_alive(proxy)


def test_invalid_utf8_and_controls_in_lectr_headers_are_stored_sanitised(
    proxy: ProxyProcess, fakes: FakeProviders, pg_url: str, sec_org: Any
) -> None:
    """Bytes a strict HTTP parser lets through (obs-text 0x80-0xFF, TAB, invalid UTF-8, bidi
    controls): the request is served, nothing `X-Lectr-*` is forwarded, feature/task are stored as
    valid, printable UTF-8. Controls RFC 9110 forbids in a field value (C0 but TAB, DEL), a bare LF
    as a line end and obs-fold get a JSON 400 and reach neither the provider nor the events."""
    _, key = sec_org
    prefix = unique("hdr")
    p = prefix.encode()
    served = [
        b"X-Lectr-Feature: " + p + b"-caf\xc3\x28\xff\xfe\xc0\xaf\r\nX-Lectr-Task: \xed\xa0\x80surrogate\r\n",
        b"X-Lectr-Feature: " + p + b"-tab\tdone\r\nX-Lectr-Task: t\xff\r\n",
        b"X-Lectr-Feature: " + p + b"-\xe2\x80\xae\xe2\x80\x8bbidi\r\n",  # RTL override, zero-width space
    ]
    refused = [
        b"X-Lectr-Feature: " + p + b"-del\x7fx\r\n",
        b"X-Lectr-Feature: " + p + b"-esc\x1b[31mred\x01\x08\r\nX-Lectr-Task: \x1b]0;title\x07\r\n",  # ESC, BEL...
        b"X-Lectr-Feature: " + p + b"-lf\nX-Smuggled-By-LF: 1\r\n",  # a bare LF as a line end
        b"X-Lectr-Feature: " + p + b"-fold\r\n folded-on\r\n",  # obs-fold
    ]
    fakes.reset()
    for line in served:
        response = raw_exchange(proxy.port, raw_request(key, headers=line))
        assert response.status == 200, response
    for line in refused:
        response = raw_exchange(proxy.port, raw_request(key, headers=line))
        assert response.status == 400, response
        assert_json_error(response.status, response.headers, response.body)
    assert len(fakes["openai"].received) == len(served)
    for received in fakes["openai"].received:
        assert not any(name.startswith("x-lectr-") for name in received.headers)
        for name, value in received.raw_headers:
            assert "\r" not in name + value and "\n" not in name + value
    events = _events_with_feature(pg_url, prefix, len(served))
    assert len(events) == len(served)
    for event in events:
        _assert_clean_text(event["feature"])
        _assert_clean_text(event["task"])
        assert event["status_code"] == 200
    features = sorted(e["feature"][len(prefix) :] for e in events)
    assert "-tab\ufffddone" in features  # a control character, even TAB, is not stored as such
    assert_alive(proxy)


def test_crlf_cannot_be_injected_through_httpx_either(proxy: ProxyProcess, sec_org: Any) -> None:
    """A well-behaved client library refuses CR/LF in values; the proxy never builds such a header."""
    _, key = sec_org
    with pytest.raises((httpx.LocalProtocolError, ValueError)):
        httpx.post(
            f"{proxy.url}/v1/chat/completions", json=CHAT, headers=_headers(key, **{"X-Lectr-Feature": "a\r\nb"})
        )
    assert_alive(proxy)


# -- paths and body values that become part of the upstream request or the event -----------


@pytest.mark.parametrize(
    "path",
    [
        b"/v1/chat/completions%0d%0aX-Injected:%201",  # CR LF decoded into the path
        b"/v1/chat%00/completions",  # NUL decoded into the path
        b"/v1/chat/completions%09tab",
        b"/v1/%7f",
    ],
)
def test_control_characters_in_the_path_are_a_json_4xx(
    proxy: ProxyProcess, fakes: FakeProviders, sec_org: Any, path: bytes
) -> None:
    """Hypercorn percent-decodes the path; a decoded control character must be the client's error
    (a JSON 4xx), never an internal error, and must never reach the upstream request line."""
    _, key = sec_org
    fakes.reset()
    response = raw_exchange(proxy.port, raw_request(key, path=path))
    error = assert_json_error(response.status, response.headers, response.body)
    assert response.status is not None and response.status < 500, (response.status, error)
    assert not fakes["openai"].received
    assert_alive(proxy)


@pytest.mark.parametrize(
    "path", [b"/v1/%2e%2e/%2e%2e/admin", b"/v1/chat/%2e%2e/%2e%2e/%2e%2e/internal", b"/v1/%2E%2E/secret"]
)
def test_dot_segments_never_leave_the_upstream_base_path(
    proxy: ProxyProcess, fakes: FakeProviders, sec_org: Any, path: bytes
) -> None:
    """`/v1/..` must not let a client reach paths outside the configured base URL (`.../v1`) of the
    upstream: a self-hoster's gateway may serve other things beside it. Either the request is
    refused (JSON 4xx) or whatever is sent upstream stays under the base path."""
    _, key = sec_org
    fakes.reset()
    response = raw_exchange(proxy.port, raw_request(key, path=path))
    if fakes["openai"].received:
        upstream_path = fakes["openai"].received[-1].path
        assert upstream_path.startswith("/v1/"), f"the upstream was asked for {upstream_path!r}"
    else:
        assert_json_error(response.status, response.headers, response.body)
        assert response.status is not None and response.status < 500
    assert_alive(proxy)


def test_nul_and_controls_in_model_reach_the_events_table(
    proxy: ProxyProcess, fakes: FakeProviders, pg_url: str, sec_org: Any
) -> None:
    """A model name with NUL/control characters (valid JSON escapes) is the provider's to judge,
    but the request reached an upstream, so its event must be written (SPEC §8: never a lost
    event), with text Postgres can store."""
    _, key = sec_org
    prefix = unique("model")
    fakes.reset()
    for i, model in enumerate(["gpt-4o\u0000evil", "gpt-4o\u0001\u001b[2J", "gpt-\u202e4o"]):
        response = httpx.post(
            f"{proxy.url}/v1/chat/completions",
            json={"model": model, "messages": []},
            headers=_headers(key, **{"X-Lectr-Feature": f"{prefix}-{i}"}),
        )
        assert response.status_code == 200
    events = _events_with_feature(pg_url, prefix, 3, timeout=20)
    assert len(events) == 3
    for event in events:
        assert "\x00" not in (event["model"] or "") and "\x00" not in (event["response_model"] or "")
    metrics = httpx.get(f"{proxy.url}/metrics").text
    assert "lectr_writer_rejected_total 0" in metrics, [m for m in metrics.splitlines() if "rejected" in m]
    assert_alive(proxy)


# -- property-based: random requests --------------------------------------------------------

_FRAMING = {"content-length", "transfer-encoding", "host", "connection", "expect", "upgrade", "te", "trailer"}
_TOKEN = string.ascii_lowercase + string.digits + "-_"
_VALUE = "".join(chr(c) for c in range(0x21, 0x7F))  # visible ASCII; inner spaces added below
_SEGMENT = st.text(alphabet=string.ascii_letters + string.digits + "-_.~", min_size=1, max_size=12) | st.sampled_from(
    ["chat", "completions", "embeddings", "models", "responses", "%20", "%2F", "%ff", "%e2%82%ac", "..", "."]
)
_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
_MODELS = st.sampled_from(
    ["gpt-4o", "gpt-4o-mini", "claude-3-5-haiku-latest", "llama-3.1-8b-instant", "gemini-1.5-flash", "no-such"]
) | st.text(max_size=20)


@st.composite
def _bodies(draw: Any) -> tuple[bytes, str | None]:
    kind = draw(st.sampled_from(["chat", "json", "garbage", "empty"]))
    if kind == "chat":
        payload: dict[str, Any] = {"model": draw(_MODELS), "messages": [{"role": "user", "content": "hi"}]}
        if draw(st.booleans()):
            payload["stream"] = draw(st.sampled_from([True, False, "yes", 1, None]))
        if draw(st.booleans()):
            payload["stream_options"] = draw(_JSON_VALUES)
        if draw(st.booleans()):
            payload[draw(st.text(max_size=8))] = draw(_JSON_VALUES)
        body = json.dumps(payload).encode()
    elif kind == "json":
        body = json.dumps(draw(_JSON_VALUES)).encode()
    elif kind == "garbage":
        body = draw(st.binary(max_size=2000))
    else:
        body = b""
    content_type = draw(st.sampled_from(["application/json", "text/plain", "application/x-www-form-urlencoded", None]))
    return body, content_type


@st.composite
def _requests(draw: Any) -> dict[str, Any]:
    segments = draw(st.lists(_SEGMENT, min_size=1, max_size=4))
    path = "/v1/" + "/".join(segments)
    if draw(st.booleans()):
        path += "?" + draw(st.text(alphabet=_TOKEN + "=&", max_size=20))
    method = draw(st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"]))
    headers: dict[str, str] = {}
    for _ in range(draw(st.integers(0, 6))):
        name = draw(st.text(alphabet=_TOKEN, min_size=1, max_size=20))
        if draw(st.booleans()):
            name = "x-lectr-" + draw(st.sampled_from(["feature", "task", "provider", "auth-openai", "auth-groq", name]))
        if name.lower() in _FRAMING or name.lower().startswith("x-fake-"):
            continue
        value = draw(st.text(alphabet=_VALUE, max_size=60))
        if draw(st.booleans()) and len(value) > 2:
            value = value[:1] + " " + value[1:]
        headers[name] = value
    if draw(st.sampled_from(["own", "own", "own", "none", "garbage"])) == "own":
        headers["x-lectr-key"] = "OWN"
    elif "x-lectr-key" not in headers and draw(st.booleans()):
        headers["x-lectr-key"] = "lc_key_" + draw(st.text(alphabet=_TOKEN, max_size=32))
    headers.setdefault("authorization", f"Bearer {PROVIDER_KEY}")
    body, content_type = draw(_bodies())
    if content_type is not None:
        headers["content-type"] = content_type
    return {"method": method, "path": path, "headers": headers, "body": body}


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(request=_requests())
def test_random_requests_keep_the_invariants(
    proxy: ProxyProcess, fakes: FakeProviders, sec_org: Any, request: dict[str, Any]
) -> None:
    _, key = sec_org
    headers = {k: (key if v == "OWN" else v) for k, v in request["headers"].items()}
    with httpx.Client(timeout=30) as client:
        response = client.request(
            request["method"], f"{proxy.url}{request['path']}", headers=headers, content=request["body"]
        )
    from_provider = "x-fake-provider" in response.headers
    if from_provider:
        # The provider's own answer, relayed: the fakes answer 2xx/4xx here (no failure scenario is sent).
        assert response.status_code < 500, (response.status_code, response.content[:300])
    else:
        if request["method"] in ("OPTIONS", "HEAD") and response.status_code < 400:
            # Answered by the proxy itself (SPEC §3), never forwarded: no body, the methods allowed.
            assert response.content == b"" and "POST" in response.headers["allow"], response.headers
        else:
            assert response.status_code >= 400, response.status_code
            if response.status_code >= 500:
                assert response.status_code in (502, 503, 504), (response.status_code, response.content[:300])
            if request["method"] != "HEAD":
                assert_json_error(response.status_code, response.headers, response.content)
    assert_alive(proxy)
    fakes.reset()


def test_events_from_random_traffic_are_clean(proxy: ProxyProcess, pg_url: str, sec_org: Any) -> None:
    """After everything above: every stored event of this module's org has clean text fields."""
    org, key = sec_org
    response = raw_exchange(proxy.port, raw_request(key, headers=b"X-Lectr-Feature: last\xff\xfe\r\n"))
    assert response.status == 200
    query = "SELECT feature, task, provider_header, endpoint FROM events WHERE org_id = %s"
    with connect(pg_url) as conn:
        wait_for(lambda: any(r["feature"] == "last\ufffd\ufffd" for r in rows(conn, query, (org.id,))), timeout=15)
        stored = rows(conn, query, (org.id,))
    for event in stored:
        for column in ("feature", "task", "provider_header"):
            _assert_clean_text(event[column])
        assert "\x00" not in event["endpoint"]
    assert_alive(proxy)
