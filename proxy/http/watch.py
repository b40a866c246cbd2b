"""Read timeouts and client checks for response bodies: one task per worker, not a scope per read.

While a response body is relayed, each read from the provider must end after the read timeout
(`LECTR_UPSTREAM_TIMEOUT`), and a provider that goes quiet must not keep a departed client's
request open: every `ALIVE_POLL` seconds of waiting, the client is asked whether it is still there.
Both used to be a trio cancel scope with a deadline around every read: entering and leaving one
cost ~10 µs in trio 0.22 (a generator-based context manager re-files the deadline each time),
the largest single item of a paced stream's CPU per chunk (docs/PERFORMANCE.md step 18).

Now a read only notes when it started waiting (`Watched.waiting_since`), and one task, started
the first time a body is watched and gone again once nothing is, looks every `TICK` seconds at the
bodies being relayed. A read past its timeout, or whose client has left, is ended by closing its
connection (`Watched.expire`): the read wakes at once with `trio.ClosedResourceError`, and the
reader turns the recorded reason into `httpx.ReadTimeout` or `Abandoned`. A closed connection is
what both outcomes ended with before, so nothing else changes; the timeout fires between
`timeout` and `timeout + TICK` seconds. The look is O(bodies in flight) per tick: ~1 µs each, so
2,000 open streams cost ~8 ms of CPU a second, against ~20 ms a second of scopes at 2,000 chunks/s.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

import trio

TICK = 0.25
# While waiting on the provider, the caller's `alive` check runs this often (seconds).
ALIVE_POLL = 1.0


class Watched(Protocol):
    """A body being read: when its current read began waiting (0.0: not waiting), its limits."""

    waiting_since: float
    timeout: float | None
    alive: Callable[[], Awaitable[bool]] | None
    asked_at: float  # when `alive` was last asked

    def expire(self, reason: str) -> None: ...


class Watch:
    """The bodies of one transport being read, and the task that looks at them."""

    def __init__(self) -> None:
        self.bodies: set[Watched] = set()
        self._token: trio.lowlevel.TrioToken | None = None

    def add(self, body: Watched) -> None:
        if body.timeout is None and body.alive is None:
            return  # nothing to watch for
        self.bodies.add(body)
        token = trio.lowlevel.current_trio_token()
        if self._token is not token:  # no task yet in this run (or it ended: nothing was watched)
            self._token = token
            trio.lowlevel.spawn_system_task(self._run, token, name="lectr.transport.watch")

    def discard(self, body: Watched) -> None:
        self.bodies.discard(body)

    async def _run(self, token: trio.lowlevel.TrioToken) -> None:
        try:
            while self._token is token:
                await trio.sleep(TICK)
                if not self.bodies:
                    self._token = None  # the next body watched starts a new task
                    return
                await self.look(trio.current_time())
        except trio.Cancelled:
            if self._token is token:
                self._token = None
            raise

    async def look(self, now: float) -> None:
        """Expire the reads past their timeout, and those whose client has left."""
        for body in list(self.bodies):
            since = body.waiting_since
            if not since:
                continue
            timeout = body.timeout
            if timeout is not None and now - since >= timeout:
                body.expire("timeout")
                continue
            alive = body.alive
            if alive is None or now - max(since, body.asked_at) < ALIVE_POLL:
                continue
            body.asked_at = now
            try:
                still_there = await alive()
            except Exception:  # a check that fails says nothing: ask again next time
                continue
            if not still_there and body.waiting_since:
                body.expire("abandoned")
