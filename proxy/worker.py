"""`Worker`: what one proxy worker process holds, and its lifecycle (SPEC §1: events through a writer
task in the app's nursery). Started by Quart's `before_serving` and stopped by `after_serving`
(proxy/app.py), it runs the background tasks: the key directory's and the budget tracker's
reloads, the event writer, the OpenTelemetry exporter when on, the alert sender's election, and
this worker's figures for `/metrics`. The request path itself is `Proxy` in proxy/app.py.
"""

from __future__ import annotations

import gc
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from proxy.accounting.pricing import warm_up as warm_up_prices
from proxy.alerts.sender import Alerter
from proxy.core.config import Settings
from proxy.events.journal import Journal
from proxy.events.writer import EventWriter
from proxy.http.transport import LectrTransport, Timeouts
from proxy.ops.metrics import Metrics, SharedMetrics, render
from proxy.pipeline.directory import Directory
from proxy.pipeline.limits import RateLimiter, StreamSlots
from proxy.pipeline.relay import Upstream
from proxy.pipeline.spend import BudgetTracker
from proxy.pipeline.upstream import make_transport
from proxy.store.db import connect, database_url, migrate

if TYPE_CHECKING:
    from proxy.events.telemetry import Telemetry

_GC_THRESHOLD = 7000
log = logging.getLogger("lectr.proxy")


class Worker:
    """Everything one worker process holds (settings, key directory, budget tracker, event writer,
    upstream client, metrics) and its lifecycle: `start` in the app's nursery, `stop` at shutdown."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.shared_metrics = SharedMetrics(settings.data_dir / "metrics")
        self.rate_limiter = RateLimiter(settings.rate_limit_rps, settings.rate_limit_burst)
        self.streams = StreamSlots(settings.max_streams)
        self.directory: Directory | None = None
        self.budgets: BudgetTracker | None = None
        self.writer: EventWriter | None = None
        self.upstream: LectrTransport | None = None
        self.link: Upstream | None = None  # the transport and its timeouts, as `Relay.run` takes them
        self.telemetry: Telemetry | None = None  # None: export off (the default)
        self.timeouts = Timeouts()
        self._background: list[trio.CancelScope] = []  # the tasks cancelled at stop

    # -- lifecycle (before_serving / after_serving) ----------------------------------------

    async def start(self, nursery: trio.Nursery) -> None:
        settings = self.settings
        url = await trio.to_thread.run_sync(database_url, settings)

        def prepare() -> None:
            with connect(url) as conn:
                migrate(conn)

        await trio.to_thread.run_sync(prepare)
        # Load the price tables now, not at the writer's first flush under load.
        await trio.to_thread.run_sync(warm_up_prices)
        self.upstream, self.timeouts = make_transport(settings)
        self.link = Upstream(self.upstream, self.timeouts)
        self.directory = Directory(url, settings.refresh_seconds, settings.azure_allowed_hosts)
        self.budgets = BudgetTracker(url, settings.budget_refresh_seconds)
        self.writer = EventWriter(
            url,
            Journal(Path(settings.journal_path)),
            batch_size=settings.writer_batch_size,
            flush_seconds=settings.writer_flush_seconds,
            queue_size=settings.writer_queue_size,
            retention_months=settings.retention_months,
            rollup_retention_months=settings.rollup_retention_months,
            watcher=self.budgets,
        )
        await nursery.start(self.writer.run)
        if settings.otel_traces or settings.otel_metrics:
            from proxy.events.telemetry import Telemetry  # the OpenTelemetry SDK is loaded only when exporting

            self.telemetry = Telemetry(settings, self.directory.org_name)
            await nursery.start(self.telemetry.run)
        await nursery.start(self._refresh_forever)
        await nursery.start(self._refresh_budgets_forever)
        nursery.start_soon(self._send_alerts_forever, Alerter(url, settings, self.budgets))
        await trio.to_thread.run_sync(self.shared_metrics.prepare)
        nursery.start_soon(self._publish_metrics_forever)
        # Everything loaded so far (price tables, Quart, the libraries) lives as long as the worker:
        # keep it out of the collector's full passes, which otherwise walk ~90,000 objects and stop
        # every request for ~50 ms each time (the p99 at 50 in flight; docs/PERFORMANCE.md).
        gc.collect()
        gc.freeze()
        # Requests leave no reference cycles (tests check it), so the collector finds next to nothing;
        # at the default threshold (700) it still walked the objects of every request in flight
        # ~30 times a second at 50 in flight (2-4 % of the CPU; 5 % with 2,000 streams). 7,000 makes
        # that ~0.1 %, each pass a few ms.
        gc.set_threshold(_GC_THRESHOLD, *gc.get_threshold()[1:])

    async def _refresh_forever(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        assert self.directory is not None
        with self._cancel_at_stop():
            await self.directory.run(task_status=task_status)

    async def _refresh_budgets_forever(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        assert self.budgets is not None
        with self._cancel_at_stop():
            await self.budgets.run(task_status=task_status)

    async def _send_alerts_forever(self, alerter: Alerter) -> None:
        """Stand for election as the alert sender (proxy/alerts/sender.py); off the hot path."""
        with self._cancel_at_stop():
            await alerter.run()

    async def _publish_metrics_forever(self) -> None:
        """This worker's figures for `/metrics` on the others, every second (a small file, written
        in a thread: a slow disk never holds up the event loop)."""
        with self._cancel_at_stop():
            while True:
                await self.publish_metrics()
                await trio.sleep(1)

    def _cancel_at_stop(self) -> trio.CancelScope:
        scope = trio.CancelScope()
        self._background.append(scope)
        return scope

    async def publish_metrics(self) -> dict[str, Any]:
        snapshot = self.metrics.snapshot(
            self.writer.statistics() if self.writer else None,
            self.telemetry.statistics() if self.telemetry else None,
        )
        await trio.to_thread.run_sync(self.shared_metrics.publish, snapshot)
        return snapshot

    async def render_metrics(self) -> str:
        """Prometheus text for every worker of this server (proxy/ops/metrics.py)."""
        own = await self.publish_metrics()
        snapshots, live = await trio.to_thread.run_sync(self.shared_metrics.collect, own)
        return render(snapshots, live)

    async def stop(self) -> None:
        log.info("shutting down: draining the event writer")
        for scope in self._background:
            scope.cancel()
        if self.writer is not None:
            await self.writer.aclose()
            stats = self.writer.statistics()
            log.info(
                "event writer drained: written=%d spilled=%d dropped=%d", stats.written, stats.spilled, stats.dropped
            )
        if self.telemetry is not None:
            await self.telemetry.aclose()
        await self.publish_metrics()  # the last figures: this worker's requests stay counted in /metrics
        if self.upstream is not None:
            await self.upstream.aclose()
