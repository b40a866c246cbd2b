"""Helpers for the security tests: raw HTTP/1.1 over a socket, JSON error checks, event lookups."""

from __future__ import annotations

import socket
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg
import pytest

from proxy.store.db import connect
from proxy.store.orgs import Org, create_org, set_azure
from tests.conftest import TEST_AZURE_HOSTS, ProxyProcess
from tests.fakes import FakeProviders

PROVIDER_KEY = "sk-security-provider-key-0123456789abcdef"


@dataclass
class RawResponse:
    status: int | None  # None: the server closed the connection without a status line
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    error: str | None = None  # a socket error seen while sending or reading

    def json(self) -> Any:
        import json

        return json.loads(self.body)


def raw_exchange(port: int, data: bytes, timeout: float = 20.0) -> RawResponse:
    """Send bytes as they are (httpx refuses malformed requests) and read until the server closes.

    The request should carry `Connection: close`. Sending and reading run concurrently, so a
    server that answers early and closes (an oversized header block) is still heard.
    """
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    errors: list[str] = []

    def sender() -> None:
        try:
            sock.sendall(data)
        except OSError as exc:  # the server answered and closed before reading it all
            errors.append(f"send: {type(exc).__name__}")

    thread = threading.Thread(target=sender, daemon=True)
    thread.start()
    received = bytearray()
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
    except OSError as exc:
        errors.append(f"recv: {type(exc).__name__}")
    finally:
        thread.join(timeout)
        sock.close()
    return parse_response(bytes(received), "; ".join(errors) or None)


def parse_response(raw: bytes, error: str | None = None) -> RawResponse:
    head, sep, rest = raw.partition(b"\r\n\r\n")
    if not sep or not head.startswith(b"HTTP/1.1 "):
        return RawResponse(None, body=raw, error=error)
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ")[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = bytearray()
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line.split(b";")[0] or b"0", 16)
            if size == 0:
                break
            body += rest[:size]
            rest = rest[size + 2 :]
        rest = bytes(body)
    elif "content-length" in headers:
        rest = rest[: int(headers["content-length"])]
    return RawResponse(status, headers, rest, error)


def raw_request(
    key: str | bytes | None,
    *,
    method: bytes = b"POST",
    path: bytes = b"/v1/chat/completions",
    headers: bytes = b"",
    body: bytes = b'{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}',
    content_type: bytes = b"application/json",
) -> bytes:
    """A raw HTTP/1.1 request; `headers` are extra header lines, each ending in CRLF."""
    key_line = b""
    if key is not None:
        key_line = b"X-Lectr-Key: " + (key.encode() if isinstance(key, str) else key) + b"\r\n"
    return (
        method + b" " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n" + key_line
        + b"Authorization: Bearer " + PROVIDER_KEY.encode() + b"\r\n"
        + b"Content-Type: " + content_type + b"\r\n"
        + b"Content-Length: " + str(len(body)).encode() + b"\r\n"
        + headers + b"\r\n" + body
    )  # fmt: skip


def assert_json_error(status: int | None, headers: Any, body: bytes, expected: int | None = None) -> dict[str, Any]:
    """The proxy's own error: the status, `application/json` and `{"error": {"message", "type", "code"}}`."""
    import json

    assert status is not None and status >= 400, status
    if expected is not None:
        assert status == expected, (status, body[:300])
    assert headers.get("content-type") == "application/json", (status, dict(headers))
    payload = json.loads(body)
    assert isinstance(payload, dict) and isinstance(payload.get("error"), dict), payload
    error = payload["error"]
    assert isinstance(error.get("message"), str) and error["message"], error
    assert isinstance(error.get("type"), str) and isinstance(error.get("code"), str), error
    return error


def assert_alive(proxy: ProxyProcess) -> None:
    assert proxy.process is not None and proxy.process.poll() is None, "the proxy process died"
    response = httpx.get(f"{proxy.url}/healthz", timeout=30)
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def unique(prefix: str = "sec") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def sec_org(pg_url: str, fakes: FakeProviders) -> Iterator[tuple[Org, str]]:
    """An org of this module's own (module scope, so hypothesis may use it), Azure on the fake."""
    with connect(pg_url) as conn:
        org, key = create_org(conn, unique("security"))
        org = set_azure(conn, org.name, fakes["azure"].base_url, "2024-02-01", allowed_hosts=TEST_AZURE_HOSTS)
    yield org, key


def rows(conn: psycopg.Connection[Any], sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    cur = conn.execute(sql, params)  # type: ignore[arg-type]
    names = [d.name for d in cur.description or []]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
