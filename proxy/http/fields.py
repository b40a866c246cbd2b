"""Header fields on the wire (RFC 9110): their syntax, the hop-by-hop ones, the methods we answer.

The HTTP room's own rules, used by the server and the client alike; what Lectr does with a
request's headers (its X-Lectr-* fields, what is forwarded) is the pipeline's (pipeline/headers.py).
"""

from __future__ import annotations

import re

# RFC 9110's field syntax, for headers that did not come out of a parser: a token for the name, no
# control character but TAB in the value (so no CR/LF: no header injection).
TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_FIELD_VALUE = re.compile(rb"[^\x00-\x08\x0a-\x1f\x7f]*")


def valid_field(name: bytes, value: bytes) -> bool:
    return TOKEN.fullmatch(name) is not None and _FIELD_VALUE.fullmatch(value) is not None


# The methods the proxy answers under /v1/ (SPEC §3), for `allow` on a 405 (app and server alike).
ALLOW = (b"allow", b"GET, POST, DELETE, HEAD, OPTIONS")

# Hop-by-hop fields: meaningful for one connection only, never forwarded.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"transfer-encoding",
        b"upgrade",
        b"te",
        b"trailer",
        b"proxy-authenticate",
        b"proxy-authorization",
    }
)
