"""Sending alerts to webhooks, and the record of every attempt (SPEC §9).

An alert is a row of `alerts`; each webhook of its org gets a row of `alert_deliveries`, which
the elected sender (`proxy.alerts.sender`) works through: an attempt is one POST with a timeout; a 2xx
answer delivers it; anything else (an error status, no answer, a refused address) schedules the
next attempt after a delay that doubles from `alert_backoff_seconds` up to 10 minutes, until
`alert_retry_seconds` (an hour) after the alert, when the delivery is marked failed. Every attempt
is a row of `alert_attempts` (the dashboard's delivery log).

Connections go through our own transport with the address rule at connect (`guarded`): the
webhook URL was checked when it was set, and its host is resolved and checked again here, then
connected to by the checked address (DNS rebinding finds nothing to swap). Only
`LECTR_ALLOW_PRIVATE_UPSTREAMS=1` lifts it. Sending runs in the sender's own tasks with its own
connection pool, never on a request's path: a slow receiver costs the proxy nothing but a task.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import psycopg
import trio

from proxy.alerts.payloads import render
from proxy.http.transport import AddressNotAllowed, LectrTransport, Outbound, Timeouts, destination

log = logging.getLogger("lectr.alerts")

_MAX_BACKOFF = 600.0
_MAX_ANSWER = 64 * 1024  # read at most this much of a receiver's answer (then close)
_CONCURRENCY = 8


@dataclass(frozen=True, slots=True)
class Due:
    """One delivery to attempt now."""

    delivery_id: int
    org_id: int
    alert_id: int
    webhook_id: int | None
    url: str | None
    format: str
    payload: dict[str, Any]
    attempts: int
    created_at: dt.datetime


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one attempt gave."""

    delivery_id: int
    webhook_id: int | None
    format: str
    delivered: bool
    status_code: int | None
    error: str | None
    duration_ms: float

    def describe(self) -> str:
        if self.delivered:
            return f"delivered (HTTP {self.status_code}, {self.duration_ms:.0f} ms)"
        return f"NOT delivered ({self.error})"


_DUE = (
    "SELECT d.id, d.org_id, d.alert_id, d.webhook_id, w.url, coalesce(w.format, 'json'), a.payload, d.attempts,"
    " d.created_at FROM alert_deliveries d JOIN alerts a ON a.id = d.alert_id"
    " LEFT JOIN alert_webhooks w ON w.id = d.webhook_id"
    " WHERE d.status = 'pending' AND d.next_attempt_at <= now() {extra} ORDER BY d.next_attempt_at, d.id LIMIT %s"
)


def due(conn: psycopg.Connection[Any], limit: int = 100, ids: list[int] | None = None) -> list[Due]:
    """Deliveries whose next attempt is due (or exactly `ids`, due or not)."""
    if ids is not None:
        query = _DUE.format(extra="").replace("d.next_attempt_at <= now()", "d.id = ANY(%s)")
        rows = conn.execute(query, (ids, limit)).fetchall()  # type: ignore[arg-type]
    else:
        rows = conn.execute(_DUE.format(extra=""), (limit,)).fetchall()  # type: ignore[arg-type]
    return [Due(*row) for row in rows]


def create_alert(
    conn: psycopg.Connection[Any], org_id: int, kind: str, dedup: str, payload: dict[str, Any]
) -> int | None:
    """Raise an alert once (None when `dedup` was raised before), with a delivery per webhook."""
    with conn.transaction():
        row = conn.execute(
            "INSERT INTO alerts (org_id, kind, dedup, payload) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT (org_id, dedup) DO NOTHING RETURNING id",
            (org_id, kind, dedup, orjson.dumps(payload).decode()),
        ).fetchone()
        if row is None:
            return None
        conn.execute(
            "INSERT INTO alert_deliveries (alert_id, webhook_id, org_id)"
            " SELECT %s, id, org_id FROM alert_webhooks WHERE org_id = %s",
            (row[0], org_id),
        )
    return int(row[0])


def backoff(attempts: int, base: float) -> float:
    """Seconds before attempt `attempts + 1`: base, 2×base, 4×base, ... at most 10 minutes."""
    return min(_MAX_BACKOFF, base * 2 ** max(0, attempts - 1))


def record(
    conn: psycopg.Connection[Any], item: Due, outcome: Outcome, *, base: float, give_up_after: float, final: bool
) -> str:
    """Store an attempt and the delivery's new state; returns the attempt's outcome label."""
    attempts = item.attempts + 1
    now = dt.datetime.now(dt.UTC)
    wait = backoff(attempts, base)
    if outcome.delivered:
        label, status, next_at = "delivered", "delivered", now
    elif final or item.webhook_id is None or (now - item.created_at).total_seconds() + wait > give_up_after:
        label, status, next_at = "failed", "failed", now
    else:
        label, status, next_at = "retry", "pending", now + dt.timedelta(seconds=wait)
    with conn.transaction():
        conn.execute(
            "INSERT INTO alert_attempts (delivery_id, org_id, status_code, outcome, error, duration_ms)"
            " VALUES (%s, %s, %s, %s, %s, %s)",
            (item.delivery_id, item.org_id, outcome.status_code, label, outcome.error, outcome.duration_ms),
        )
        conn.execute(
            "UPDATE alert_deliveries SET status = %s, attempts = %s, next_attempt_at = %s,"
            " finished_at = CASE WHEN %s <> 'pending' THEN now() END WHERE id = %s",
            (status, attempts, next_at, status, item.delivery_id),
        )
    return label


async def post(transport: LectrTransport, item: Due, timeout: float, allow_private: bool) -> Outcome:
    """One attempt: POST the rendered alert; never raises for the receiver's faults."""
    started = time.perf_counter()

    def done(delivered: bool, status: int | None, error: str | None) -> Outcome:
        elapsed = (time.perf_counter() - started) * 1000
        return Outcome(item.delivery_id, item.webhook_id, item.format, delivered, status, error, elapsed)

    if item.url is None:
        return done(False, None, "the webhook was removed")
    if not allow_private and not item.url.lower().startswith("https://"):
        return done(False, None, "refused: not https:// (LECTR_ALLOW_PRIVATE_UPSTREAMS is not set)")
    body = orjson.dumps(render(item.payload, item.alert_id, item.format))
    headers = [(b"content-type", b"application/json"), (b"user-agent", b"lectr-alerts/1")]
    try:
        where = destination(item.url, guarded=not allow_private)
    except ValueError:
        return done(False, None, "the webhook URL cannot be used")
    status: int | None = None
    try:
        with trio.fail_after(timeout):
            reply = await transport.open(Outbound(b"POST", where, headers, body), Timeouts(timeout, timeout, timeout))
            status = reply.status_code
            try:
                read = 0
                while read < _MAX_ANSWER and (chunk := await reply.receive()):
                    read += len(chunk)
            finally:
                await reply.aclose()
    except trio.TooSlowError:
        return done(False, status, f"no answer within {timeout:g} s")
    except AddressNotAllowed:
        return done(False, None, "refused: the host resolves to a loopback, private, link-local or metadata address")
    except httpx.HTTPError as exc:
        return done(False, status, f"{type(exc).__name__}: could not reach the receiver")
    except Exception as exc:  # whatever a receiver does, it is this attempt's failure, nothing more
        log.warning("alert %d: unexpected failure sending to webhook %s", item.alert_id, item.webhook_id, exc_info=True)
        return done(False, status, f"{type(exc).__name__}: the attempt failed")
    if 200 <= status < 300:
        return done(True, status, None)
    return done(False, status, f"the receiver answered HTTP {status}")


async def attempt_all(
    items: list[Due],
    transport: LectrTransport,
    conn: psycopg.Connection[Any],
    *,
    timeout: float,
    allow_private: bool,
    base: float,
    give_up_after: float,
    final: bool = False,
) -> list[Outcome]:
    """Attempt each delivery (a few at a time) and record each outcome as it comes (on `conn`, in
    worker threads, one at a time)."""
    outcomes: list[Outcome] = []
    limiter = trio.CapacityLimiter(_CONCURRENCY)
    conn_lock = trio.Lock()

    def store(conn: psycopg.Connection[Any], item: Due, outcome: Outcome) -> str:
        return record(conn, item, outcome, base=base, give_up_after=give_up_after, final=final)


    async def one(item: Due) -> None:
        async with limiter:
            outcome = await post(transport, item, timeout, allow_private)
        async with conn_lock:
            label = await trio.to_thread.run_sync(store, conn, item, outcome)
        outcomes.append(outcome)
        if label != "delivered":
            log.warning("alert %d to webhook %s: %s (%s)", item.alert_id, item.webhook_id, label, outcome.error)

    async with trio.open_nursery() as nursery:
        for item in items:
            nursery.start_soon(one, item)
    return outcomes


__all__ = ["Due", "Outcome", "attempt_all", "backoff", "create_alert", "due", "post", "record"]
