"""`Exchange`: one request's state, from ingress to its event, in one object.

Created by `Proxy.handle` when a request arrives under `/v1/` and filled in by the pipeline's steps
in order (proxy/app.py): authenticate (headers, org, the event), read (the body), plan (provider,
budgets, routing: the attempts), relay (the answer, attempt by attempt), record (the event to the
writer). Each step takes the exchange and reads what the steps before it left there, instead of
the request's pieces being passed from hand to hand.

No I/O and no logic here: the fields and their meaning. One is made per request, so it is a slotted
class with a plain `__init__` (no dataclass defaults machinery on the hot path).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from proxy.accounting.record import Event
    from proxy.pipeline.body import RequestInfo
    from proxy.pipeline.headers import Incoming
    from proxy.pipeline.routing import Target
    from proxy.pipeline.upstream import Outbound
    from proxy.store.orgs import Org

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class Attempt(NamedTuple):
    """One upstream request to try: the provider and model it asks (`target`), and the request
    exactly as it goes out (`outbound`)."""

    target: Target
    outbound: Outbound


class Exchange:
    """One proxied request. Fields are None until the step that fills them has run."""

    __slots__ = (
        "scope",
        "receive",
        "send",
        "started",
        "created_at",
        "endpoint",
        "incoming",
        "org",
        "path",
        "event",
        "raw",
        "info",
        "provider",
        "attempts",
        "sent",
    )

    def __init__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Ingress: the ASGI triple, and when the request arrived.
        self.scope = scope
        self.receive = receive
        self.send = send
        self.started = time.perf_counter()  # latency, TTFT and overhead count from here
        self.created_at = dt.datetime.now(dt.UTC)
        self.endpoint: str = scope["path"][4:]  # what follows `/v1/`, as the event stores it
        # authenticate: the client's headers (X-Lectr-* consumed), its org, the upstream path, the event.
        self.incoming: Incoming | None = None
        self.org: Org | None = None
        self.path = ""
        self.event: Event | None = None
        # read: the body as sent, and what the proxy needs from it (model, stream, usage option).
        self.raw = b""
        self.info: RequestInfo | None = None
        # plan: the provider detected (or named), and the attempts in order (routing, fallbacks).
        self.provider = "openai"
        self.attempts: list[Attempt] = []
        # relay: the attempt whose answer the client got (None: the proxy answered itself).
        self.sent: Outbound | None = None
