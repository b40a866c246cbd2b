"""The upstream side: one transport per worker, what one request to a provider is, and the mapping
of upstream failures to our errors."""

from __future__ import annotations

import httpx

from proxy.core.config import Settings
from proxy.core.errors import UpstreamError, UpstreamTimeout, UpstreamUnreachable
from proxy.http.transport import AddressNotAllowed, LectrTransport, Timeouts
from proxy.http.transport import Outbound as Outbound  # one request to a provider: defined by the layer that sends it

__all__ = ["Outbound", "make_transport", "map_error"]


def make_transport(settings: Settings) -> tuple[LectrTransport, Timeouts]:
    """A transport sized for thousands of concurrent streams, and the timeouts to use with it.

    `LectrTransport` (h11 + trio, O(1) pool) replaced httpx's client and httpcore's pool, whose
    per-request scan of all connections cost ~2.5 ms CPU per request and stalled at 2,000 streams;
    the proxy calls it without an `httpx.AsyncClient` around it (see docs/PERFORMANCE.md).
    """
    timeouts = Timeouts(
        connect=settings.connect_timeout, read=settings.upstream_timeout, write=settings.upstream_timeout
    )
    return LectrTransport(max_idle_per_origin=1000, idle_expiry=60), timeouts


def map_error(exc: httpx.HTTPError, provider: str) -> UpstreamError:
    """Our error for an upstream failure with no response. Never echoes URLs or headers."""
    if isinstance(exc, httpx.TimeoutException):
        phase = "connecting to" if isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout) else "waiting for"
        return UpstreamTimeout(f"timed out {phase} {provider}")
    if isinstance(exc, AddressNotAllowed):
        return UpstreamUnreachable(
            f"the {provider} endpoint resolves to an address the proxy may not connect to (loopback, private or "
            "metadata); the operator can list a gateway host in LECTR_AZURE_ALLOWED_HOSTS"
        )
    if isinstance(exc, httpx.ConnectError):
        return UpstreamUnreachable(f"could not connect to {provider}")
    return UpstreamUnreachable(f"the connection to {provider} failed ({type(exc).__name__})")
