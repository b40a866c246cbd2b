"""The alert sender: one worker across all instances raises and delivers alerts (SPEC §9).

Election: every worker runs an `Alerter`; each tries `pg_try_advisory_lock` on a dedicated
connection every `alert_election_seconds` (10 s). The one that gets it holds it for as long as
that connection lives (a session-level lock), and checks it is still alive before each round.
A worker that dies (even by SIGKILL) takes its connection, and so the lock, with it: Postgres
ends the session when the socket closes, and another worker takes over at its next try (within
10 s, well under the 30 s promised). The connection's `application_name` names the worker's pid.

Each round of the elected worker (`alert_check_seconds`, 5 s):
  1. budget thresholds, from this worker's budget tracker (rollups + unwritten spend): each
     threshold crossed raises an alert once per budget, threshold and period (`alerts.dedup`);
  2. anomalies (every `anomaly_check_seconds`, 5 min; `analytics.anomalies` of the orgs with
     webhooks): an anomaly whose bucket is current and that has no episode, or whose last
     episode ended more than `anomaly_quiet_seconds` ago, starts an episode and raises an alert;
     one seen again sooner continues its episode; an episode not seen in a check ends;
  3. deliveries due are attempted (`proxy.alerts.delivery`).
The anomaly checks run in a task of their own, on a connection of their own, so a slow one never
holds up a delivery.
Alerts live in Postgres, so a new sender picks up where the last left off.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from typing import Any

import psycopg
import trio

from proxy.alerts import delivery
from proxy.alerts.payloads import anomaly_alert, budget_alert, probe_alert
from proxy.core.config import Settings
from proxy.http.transport import LectrTransport
from proxy.pipeline.spend import BudgetTracker
from proxy.store.budgets import period_start
from proxy.store.db import connect
from proxy.store.orgs import get_org

log = logging.getLogger("lectr.alerts")

# The advisory lock's key: any constant, the same in every process (not the migrations' 0x1EC7).
ELECTION_LOCK = 0x1EC7A1E7
_ANOMALY_DAYS = 9  # history loaded for anomalies: a 7-day baseline before today, and a margin
_HOURLY_KINDS = frozenset({"provider_error_rate"})


class Alerter:
    def __init__(self, database_url: str, settings: Settings, tracker: BudgetTracker) -> None:
        self._url = database_url
        self._settings = settings
        self._tracker = tracker
        self._lock_conn: psycopg.Connection[Any] | None = None
        self._conns: dict[str, psycopg.Connection[Any]] = {}  # "work" (rounds), "anomalies"
        self._transport = LectrTransport(max_idle_per_origin=4, idle_expiry=30)
        self._raised: set[tuple[int, str]] = set()  # dedup keys known to be in `alerts`
        self.leader = False

    # -- election ------------------------------------------------------------------------------

    def _try_lock(self) -> bool:
        """Worker thread: try to take the lock on a dedicated connection; keep it if taken."""
        if self._lock_conn is None or self._lock_conn.closed:
            self._lock_conn = connect(self._url, application_name=f"lectr-alerter-{os.getpid()}")
        row = self._lock_conn.execute("SELECT pg_try_advisory_lock(%s)", (ELECTION_LOCK,)).fetchone()
        return bool(row and row[0])

    def _still_held(self) -> bool:
        assert self._lock_conn is not None
        # A session-level lock lasts as long as its session: the session answering is the lock held.
        try:
            self._lock_conn.execute("SELECT 1")
        except (psycopg.Error, OSError):
            return False
        return True

    def _drop_lock(self) -> None:
        conn, self._lock_conn = self._lock_conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # already broken: closing is all we wanted
                pass
        self.leader = False

    async def run(self) -> None:
        """Forever (cancel to stop): stand for election; once elected, send until the lock is lost."""
        settings = self._settings
        try:
            while True:
                try:
                    if await trio.to_thread.run_sync(self._try_lock):
                        self.leader = True
                        log.info("this worker (pid %d) sends the alerts", os.getpid())
                        await self._lead()
                        self._drop_lock()
                except* (psycopg.Error, OSError) as group:
                    log.warning("alert sender: database unavailable (%s)", type(group.exceptions[0]).__name__)
                    self._drop_lock()
                except* Exception as group:  # a bug of ours: logged, and the worker keeps serving
                    log.error("alert sender failed; standing for election again", exc_info=group)
                    self._drop_lock()
                self._close_conns()
                await trio.sleep(settings.alert_election_seconds)
        finally:
            with trio.CancelScope(shield=True):
                self._drop_lock()
                self._close_conns()
                await self._transport.aclose()

    async def _lead(self) -> None:
        """The elected worker's rounds, with the anomaly checks (slower) in a task of their own so
        that they never hold up deliveries; returns when the lock's session is gone."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._check_anomalies_forever)
            while await trio.to_thread.run_sync(self._still_held):
                await self.round()
                await trio.sleep(self._settings.alert_check_seconds)
            log.warning("lost the alert sender's lock; standing for election again")
            nursery.cancel_scope.cancel()

    async def _check_anomalies_forever(self) -> None:
        while True:
            try:
                await self.check_anomalies()
            except (psycopg.Error, OSError):
                raise
            except Exception:  # a bug in the figures must not stop budget alerts
                log.exception("anomaly check failed")
            await trio.sleep(self._settings.anomaly_check_seconds)

    def _connection(self, name: str) -> psycopg.Connection[Any]:
        conn = self._conns.get(name)
        if conn is None or conn.closed:
            conn = self._conns[name] = connect(self._url)
        return conn

    def _close_conns(self) -> None:
        conns, self._conns = self._conns, {}
        for conn in conns.values():
            try:
                conn.close()
            except Exception:  # already broken
                pass

    # -- one round -----------------------------------------------------------------------------

    async def round(self) -> None:
        """Raise the budget alerts due, then attempt the deliveries due."""
        await trio.to_thread.run_sync(self._raise_budget_alerts, dt.datetime.now(dt.UTC))
        await self.deliver()

    async def check_anomalies(self) -> None:
        await trio.to_thread.run_sync(self._raise_anomaly_alerts, dt.datetime.now(dt.UTC))

    async def deliver(self) -> list[delivery.Outcome]:
        conn = await trio.to_thread.run_sync(self._connection, "work")
        items = await trio.to_thread.run_sync(delivery.due, conn)
        if not items:
            return []
        s = self._settings
        return await delivery.attempt_all(
            items, self._transport, conn, timeout=s.alert_timeout, allow_private=s.allow_private_upstreams,
            base=s.alert_backoff_seconds, give_up_after=s.alert_retry_seconds,
        )

    def _org_names(self, conn: psycopg.Connection[Any], org_ids: set[int]) -> dict[int, str]:
        rows = conn.execute("SELECT id, name FROM orgs WHERE id = ANY(%s)", (list(org_ids),)).fetchall()
        return {row[0]: row[1] for row in rows}

    def _raise_budget_alerts(self, now: dt.datetime) -> None:
        """Worker thread: an alert for each threshold crossed and not yet raised in this period."""
        crossed = []
        for budget, spend in self._tracker.snapshot():
            start = period_start(budget.period, now).date().isoformat()
            for threshold in budget.alert_at:
                dedup = f"budget:{budget.id}:{start}:{threshold}"
                if spend >= budget.limit_usd * threshold / 100 and (budget.org_id, dedup) not in self._raised:
                    crossed.append((budget, spend, threshold, dedup))
        if not crossed:
            return
        conn = self._connection("work")
        names = self._org_names(conn, {budget.org_id for budget, *_ in crossed})
        for budget, spend, threshold, dedup in crossed:
            if budget.org_id not in names:
                continue
            payload = budget_alert(names[budget.org_id], budget, spend, threshold, now)
            if delivery.create_alert(conn, budget.org_id, "budget_threshold", dedup, payload) is not None:
                log.info("budget %d crossed %d %% (org %d)", budget.id, threshold, budget.org_id)
            self._raised.add((budget.org_id, dedup))

    def _raise_anomaly_alerts(self, now: dt.datetime) -> None:
        """Worker thread: start, continue or end the anomaly episodes of each org with webhooks."""
        from analytics.anomalies import anomalies
        from analytics.load_rollups import load_rollups

        conn = self._connection("anomalies")
        orgs = conn.execute(
            "SELECT DISTINCT o.id, o.name FROM orgs o JOIN alert_webhooks w ON w.org_id = o.id"
        ).fetchall()
        today = now.replace(hour=0, minute=0, second=0, microsecond=0)
        last_hour = now.replace(minute=0, second=0, microsecond=0) - dt.timedelta(hours=1)
        for org_id, name in orgs:
            # The org's rollups (raw events only for the hour the window ends in): what the
            # dashboard's Anomalies page reads, at a cost that does not grow with traffic.
            rollups = load_rollups(conn, org_id, today - dt.timedelta(days=_ANOMALY_DAYS), now, now=now)
            current: dict[str, dict[str, Any]] = {}
            for row in anomalies(rollups).collect().iter_rows(named=True):
                since = last_hour if row["kind"] in _HOURLY_KINDS else today
                if row["bucket"] is not None and row["bucket"] >= since:
                    what = "/".join(str(row[c]) for c in ("feature", "provider", "model") if row[c] is not None)
                    current.setdefault(f"{row['kind']}:{what or 'untagged'}", row)
            self._episodes(conn, org_id, name, current, now)

    def _episodes(
        self, conn: psycopg.Connection[Any], org_id: int, org_name: str, current: dict[str, dict[str, Any]],
        now: dt.datetime,
    ) -> None:
        quiet = dt.timedelta(seconds=self._settings.anomaly_quiet_seconds)
        with conn.transaction():
            conn.execute(
                "UPDATE anomaly_episodes SET ended_at = %s WHERE org_id = %s AND ended_at IS NULL"
                " AND NOT (subject = ANY(%s))",
                (now, org_id, list(current)),
            )
        for subject, row in current.items():
            last = conn.execute(
                "SELECT id, ended_at FROM anomaly_episodes WHERE org_id = %s AND subject = %s"
                " ORDER BY started_at DESC LIMIT 1",
                (org_id, subject),
            ).fetchone()
            if last is not None and (last[1] is None or now - last[1] < quiet):
                conn.execute(
                    "UPDATE anomaly_episodes SET last_seen_at = %s, ended_at = NULL WHERE id = %s", (now, last[0])
                )
                continue
            episode = conn.execute(
                "INSERT INTO anomaly_episodes (org_id, subject, started_at, last_seen_at) VALUES (%s, %s, %s, %s)"
                " RETURNING id",
                (org_id, subject, now, now),
            ).fetchone()
            assert episode is not None
            delivery.create_alert(conn, org_id, "anomaly", f"anomaly:{episode[0]}", anomaly_alert(org_name, row, now))
            log.info("anomaly episode %d started (org %d, %s)", episode[0], org_id, subject)


def send_test(conn: psycopg.Connection[Any], org_name: str, settings: Settings) -> list[delivery.Outcome]:
    """`lectr alert test`: one test alert to each of the org's webhooks, attempted once now (and
    recorded like any other); the outcomes say whether each was delivered."""
    org = get_org(conn, org_name)
    now = dt.datetime.now(dt.UTC)
    alert_id = delivery.create_alert(conn, org.id, "test", f"test:{os.urandom(8).hex()}", probe_alert(org.name, now))
    assert alert_id is not None
    rows = conn.execute("SELECT id FROM alert_deliveries WHERE alert_id = %s", (alert_id,)).fetchall()
    items = delivery.due(conn, ids=[row[0] for row in rows])

    async def main() -> list[delivery.Outcome]:
        transport = LectrTransport(max_idle_per_origin=1)
        try:
            return await delivery.attempt_all(
                items, transport, conn, timeout=settings.alert_timeout,
                allow_private=settings.allow_private_upstreams, base=settings.alert_backoff_seconds,
                give_up_after=settings.alert_retry_seconds, final=True,
            )
        finally:
            await transport.aclose()

    return sorted(trio.run(main), key=lambda outcome: outcome.webhook_id or 0)


__all__ = ["ELECTION_LOCK", "Alerter", "send_test"]
