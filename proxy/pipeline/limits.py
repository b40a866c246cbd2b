"""Per-worker limits: each org's request rate (token bucket) and concurrent streams (plain functions)."""

from __future__ import annotations

import math
import time

from proxy.core.errors import Overloaded, RateLimited


class RateLimiter:
    """A token bucket per org: `rate` requests a second, bursts up to `burst`. Off when rate is 0.

    Limits are per worker process: with N workers an org may reach N × rate in total.
    """

    def __init__(self, rate: float, burst: float | None = None) -> None:
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, rate)
        self._buckets: dict[int, tuple[float, float]] = {}  # org_id -> (tokens, last refill)

    def check(self, org_id: int) -> None:
        """Take a token or raise RateLimited (429 with `retry-after`)."""
        if self.rate <= 0:
            return
        now = time.monotonic()
        tokens, last = self._buckets.get(org_id, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens < 1.0:
            self._buckets[org_id] = (tokens, now)
            wait = math.ceil((1.0 - tokens) / self.rate)
            raise RateLimited(
                f"rate limit of {self.rate:g} requests/s for this org reached; retry in {wait} s",
                headers=[(b"retry-after", str(wait).encode())],
            )
        self._buckets[org_id] = (tokens - 1.0, now)


class StreamSlots:
    """At most `limit` streams relayed at once by this worker; beyond that, 503 with `retry-after`."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0

    def acquire(self) -> None:
        if self.active >= self.limit:
            raise Overloaded(
                f"this proxy worker is relaying its maximum of {self.limit} streams; retry shortly",
                headers=[(b"retry-after", b"1")],
            )
        self.active += 1

    def release(self) -> None:
        self.active -= 1
