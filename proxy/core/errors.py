"""Every error the proxy itself answers with, and its one JSON shape on the wire.

One shape that both families of SDKs read as their provider's own: OpenAI's `error` object, inside
Anthropic's envelope (`"type": "error"`, for clients of `/v1/messages`)::

    {"type": "error", "error": {"message": "...", "type": "...", "code": "..."}}

The tree::

    LectrError                      (500 internal_error)
    ├── BadRequest                  (400 invalid_request_error)
    │   ├── MalformedJSON           (400)
    │   ├── MissingModel            (400)
    │   ├── AzureNotConfigured      (400)
    │   ├── MalformedHTTP           (400, framing the server refused)
    │   └── UpgradeRefused          (400, Upgrade requests are never forwarded)
    ├── Unauthorized                (401 authentication_error)
    ├── NotFound                    (404 not_found)
    ├── MethodNotAllowed            (405, with allow)
    ├── RequestTimeout              (408, a request body too slow to arrive)
    ├── PayloadTooLarge             (413)
    ├── HeaderTooLarge              (431)
    ├── RateLimited                 (429, with retry-after)
    ├── BudgetExceeded              (429 budget_exceeded: a hard budget is reached, with retry-after)
    ├── Overloaded                  (503, too many concurrent streams)
    │   └── TooManyConnections      (503, the worker's connection cap)
    ├── TransferCodingNotImplemented (501, any Transfer-Encoding but a lone chunked)
    ├── VersionNotSupported         (505)
    └── UpstreamError               (the provider could not give an answer)
        ├── UpstreamUnreachable     (502 bad_gateway)
        ├── UpstreamIncomplete      (the answer was cut short after it began: only in the event)
        └── UpstreamTimeout         (504 gateway_timeout)

Provider errors that come with a response (4xx/5xx) are not ours: they reach the client unchanged.
Messages never contain a provider key or any request header value.
"""

from __future__ import annotations

import datetime as dt
from typing import Protocol

import orjson


class Budget(Protocol):
    """What a budget's refusal says of it (the store's `Budget` is one; core does not import it)."""

    @property
    def id(self) -> int: ...
    @property
    def feature(self) -> str | None: ...
    @property
    def period(self) -> str: ...
    @property
    def limit_usd(self) -> float: ...
    def describe(self) -> str: ...


class LectrError(Exception):
    status = 500
    type = "internal_error"
    code = "internal_error"

    def __init__(self, message: str, *, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.extra_headers = headers or []

    def body(self) -> bytes:
        return orjson.dumps({"type": "error", "error": {"message": self.message, "type": self.type, "code": self.code}})

    def headers(self) -> list[tuple[bytes, bytes]]:
        body_len = str(len(self.body())).encode()
        return [(b"content-type", b"application/json"), (b"content-length", body_len), *self.extra_headers]


class BadRequest(LectrError):
    status = 400
    type = "invalid_request_error"
    code = "bad_request"


class MalformedJSON(BadRequest):
    code = "malformed_json"


class MissingModel(BadRequest):
    code = "missing_model"


class AzureNotConfigured(BadRequest):
    code = "azure_not_configured"


class MalformedHTTP(BadRequest):
    code = "malformed_http"


class UpgradeRefused(BadRequest):
    code = "upgrade_not_supported"

    def __init__(self, message: str = "Upgrade requests (WebSocket, h2c) are not supported; use HTTP/1.1") -> None:
        super().__init__(message)


class Unauthorized(LectrError):
    status = 401
    type = "authentication_error"
    code = "invalid_lectr_key"


class NotFound(LectrError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class MethodNotAllowed(LectrError):
    status = 405
    type = "invalid_request_error"
    code = "method_not_allowed"


class RequestTimeout(LectrError):
    status = 408
    type = "invalid_request_error"
    code = "request_timeout"


class PayloadTooLarge(LectrError):
    status = 413
    type = "invalid_request_error"
    code = "payload_too_large"


class HeaderTooLarge(LectrError):
    status = 431
    type = "invalid_request_error"
    code = "header_too_large"


class RateLimited(LectrError):
    status = 429
    type = "rate_limit_error"
    code = "lectr_rate_limited"


class BudgetExceeded(LectrError):
    """A hard budget (SPEC §9) is reached: refused before the upstream is called. Made once per
    budget when the tracker finds it reached (`proxy.pipeline.spend`), then raised as is by every request
    it covers; the body names the budget and when its period resets, and adds a `budget` object."""

    status = 429
    type = "budget_exceeded"
    code = "budget_exceeded"

    def __init__(self, budget: Budget, spend_usd: float, resets_at: dt.datetime) -> None:
        reset = resets_at.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        super().__init__(
            f"{budget.describe()} is reached (${spend_usd:,.4f} spent); requests it covers are refused until"
            f" the period resets at {reset}"
        )
        self.feature = budget.feature
        self.resets_at = resets_at
        self._body = orjson.dumps(
            {
                "error": {
                    "message": self.message,
                    "type": self.type,
                    "code": self.code,
                    "budget": {
                        "id": budget.id,
                        "feature": budget.feature,
                        "period": budget.period,
                        "limit_usd": budget.limit_usd,
                        "spend_usd": round(spend_usd, 6),
                        "resets_at": reset,
                    },
                }
            }
        )

    def body(self) -> bytes:
        return self._body

    def headers(self) -> list[tuple[bytes, bytes]]:
        wait = max(1, int((self.resets_at - dt.datetime.now(dt.UTC)).total_seconds()) + 1)
        return [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(self._body)).encode()),
            (b"retry-after", str(wait).encode()),
        ]


class Overloaded(LectrError):
    status = 503
    type = "overloaded_error"
    code = "lectr_overloaded"


class TooManyConnections(Overloaded):
    code = "lectr_too_many_connections"


class TransferCodingNotImplemented(LectrError):
    status = 501
    type = "invalid_request_error"
    code = "transfer_coding_not_implemented"


class VersionNotSupported(LectrError):
    status = 505
    type = "invalid_request_error"
    code = "http_version_not_supported"


class UpstreamError(LectrError):
    status = 502
    type = "upstream_error"
    code = "bad_gateway"


class UpstreamUnreachable(UpstreamError):
    pass


class UpstreamIncomplete(UpstreamError):
    code = "upstream_incomplete"


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "gateway_timeout"
