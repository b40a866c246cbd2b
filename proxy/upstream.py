"""The shared httpx client (one per worker) and the mapping of its errors to ours."""

from __future__ import annotations

import httpx

from proxy.config import Settings
from proxy.errors import UpstreamError, UpstreamTimeout, UpstreamUnreachable
from proxy.transport import LectrTransport


def make_client(settings: Settings) -> httpx.AsyncClient:
    """A client sized for thousands of concurrent streams, with no default headers of its own.

    It runs on `LectrTransport` (h11 + trio, O(1) pool) instead of httpcore's pool, whose per-request
    scan of all connections cost ~2.5 ms CPU per request and stalled at 2,000 streams (see PERFORMANCE.md).
    """
    timeout = httpx.Timeout(
        connect=settings.connect_timeout,
        read=settings.upstream_timeout,
        write=settings.upstream_timeout,
        pool=settings.connect_timeout,
    )
    transport = LectrTransport(max_idle_per_origin=1000, idle_expiry=60)
    client = httpx.AsyncClient(transport=transport, timeout=timeout, follow_redirects=False, trust_env=False)
    # httpx would add User-Agent, Accept and Accept-Encoding of its own: the provider must see the client's.
    client.headers = httpx.Headers()
    return client


def map_error(exc: httpx.HTTPError, provider: str) -> UpstreamError:
    """Our error for an upstream failure with no response. Never echoes URLs or headers."""
    if isinstance(exc, httpx.TimeoutException):
        phase = "connecting to" if isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout) else "waiting for"
        return UpstreamTimeout(f"timed out {phase} {provider}")
    if isinstance(exc, httpx.ConnectError):
        return UpstreamUnreachable(f"could not connect to {provider}")
    return UpstreamUnreachable(f"the connection to {provider} failed ({type(exc).__name__})")
