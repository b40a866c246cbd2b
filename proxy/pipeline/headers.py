"""Headers in and out: what is consumed, what is forwarded, what never crosses (RFC 9110 §7.6.1)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from proxy.core.errors import BadRequest, HeaderTooLarge
from proxy.http.fields import HOP_BY_HOP

# An end user's name is stored as sent, up to this many characters (SPEC §3).
END_USER_CHARS = 200

# Request fields the proxy sets itself (httpx computes host and length; adapters set auth).
_REQUEST_OWN = frozenset({b"host", b"content-length", b"authorization", b"accept-encoding"})
# Encodings we can read back to find usage in a response body.
_READABLE_ENCODINGS = (b"gzip", b"deflate", b"identity")
_ADAPTER_INPUTS = frozenset({b"authorization", b"x-api-key", b"api-key", b"anthropic-version"})


def upstream_path(scope: dict[str, Any]) -> str:
    """What follows `/v1/`, as the client encoded it, for the upstream URL.

    Refused with 400: control characters (they would end up in the request line) and `.`/`..`
    segments, also percent-encoded ones (they would climb out of the provider's base path).
    """
    path: str = scope["path"]
    if not path.isprintable():
        raise BadRequest("the request path contains control characters")
    segments = path.split("/")
    if "." in segments or ".." in segments:
        raise BadRequest("the request path may not contain '.' or '..' segments")
    raw: bytes | None = scope.get("raw_path")
    if raw and raw.startswith(b"/v1/"):
        return raw[4:].decode("latin-1")
    return quote(path[4:], safe="/:@!$&'()*+,;=-._~")


def clean_text(raw: bytes) -> str:
    """A header value as text we can store: UTF-8 (invalid bytes replaced), no NULs or controls."""
    text = raw.decode("utf-8", "replace")
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else "\ufffd" for ch in text)


@dataclass(slots=True)
class Incoming:
    """One pass over the client's headers: Lectr's own, and those to forward."""

    lectr_key: bytes | None = None
    feature: str | None = None
    task: str | None = None
    provider: str | None = None
    end_user: str | None = None
    content_type: bytes = b""
    content_length: int | None = None
    accept_encoding: bytes | None = None
    forward: list[tuple[bytes, bytes]] = field(default_factory=list)
    # Values adapters may need (auth and version headers), by lower-case name.
    special: dict[bytes, bytes] = field(default_factory=dict)
    # Keys for other providers (`X-Lectr-Auth-<Provider>`), used only by routing to that provider.
    provider_auth: dict[str, bytes] = field(default_factory=dict)
    # The request asks to switch protocols (`Upgrade`: WebSocket, h2c): never forwarded (SPEC §3).
    upgrade: bool = False


def read_request_headers(raw: list[tuple[bytes, bytes]], max_value_bytes: int) -> Incoming:
    """Split the client's headers. Raises HeaderTooLarge for a value over the limit."""
    incoming = Incoming()
    connection_named: set[bytes] = set()
    forward = incoming.forward
    for name, value in raw:
        if len(value) > max_value_bytes:
            raise HeaderTooLarge(
                f"the value of header {name.decode('latin-1')[:64]!r} is {len(value)} bytes; "
                f"the limit is {max_value_bytes}"
            )
        if name.startswith(b"x-lectr-"):
            if name == b"x-lectr-key":
                incoming.lectr_key = value.strip()
            elif name == b"x-lectr-feature":
                incoming.feature = clean_text(value) or None
            elif name == b"x-lectr-task":
                incoming.task = clean_text(value) or None
            elif name == b"x-lectr-user":
                incoming.end_user = clean_text(value)[:END_USER_CHARS] or None
            elif name == b"x-lectr-provider":
                incoming.provider = clean_text(value)
            elif name.startswith(b"x-lectr-auth-"):
                incoming.provider_auth[name[13:].decode("latin-1")] = value
            continue
        if name in _ADAPTER_INPUTS:
            incoming.special[name] = value
            if name != b"authorization":
                continue
        if name in HOP_BY_HOP:
            if name == b"connection":
                connection_named.update(token.strip().lower() for token in value.split(b","))
            elif name == b"upgrade":
                incoming.upgrade = True
            continue
        if name in _REQUEST_OWN:
            if name == b"content-length":
                try:
                    incoming.content_length = int(value)
                except ValueError:
                    incoming.content_length = None
            elif name == b"accept-encoding":
                incoming.accept_encoding = value
            continue
        if name == b"content-type":
            incoming.content_type = value
        forward.append((name, value))
    if connection_named:
        incoming.forward = [(n, v) for n, v in forward if n not in connection_named]
    return incoming


def readable_accept_encoding(value: bytes | None) -> bytes | None:
    """The client's Accept-Encoding restricted to codings we can decode to read usage."""
    if value is None:
        return None
    kept = [
        part.strip() for part in value.split(b",") if part.strip().split(b";")[0].strip().lower() in _READABLE_ENCODINGS
    ]
    return b", ".join(kept) if kept else b"identity"


def response_headers(raw: list[tuple[bytes, bytes]], *, drop_length: bool) -> list[tuple[bytes, bytes]]:
    """The provider's response headers minus hop-by-hop ones (and its length, if we edit the body)."""
    connection_named: set[bytes] = set()
    for name, value in raw:
        if name.lower() == b"connection":
            connection_named.update(token.strip().lower() for token in value.split(b","))
    kept = []
    for name, value in raw:
        lower = name.lower()
        if lower in HOP_BY_HOP or lower in connection_named or (drop_length and lower == b"content-length"):
            continue
        kept.append((lower, value))
    return kept
