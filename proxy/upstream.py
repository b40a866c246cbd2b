"""The shared httpx client (one per worker) and the mapping of its errors to ours."""

from __future__ import annotations

import httpx

from proxy.config import Settings
from proxy.errors import UpstreamError, UpstreamTimeout, UpstreamUnreachable


def make_client(settings: Settings) -> httpx.AsyncClient:
    """A client sized for thousands of concurrent streams, with no default headers of its own."""
    timeout = httpx.Timeout(
        connect=settings.connect_timeout,
        read=settings.upstream_timeout,
        write=settings.upstream_timeout,
        pool=settings.connect_timeout,
    )
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=1000, keepalive_expiry=60)
    client = httpx.AsyncClient(timeout=timeout, limits=limits, follow_redirects=False, trust_env=False)
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
