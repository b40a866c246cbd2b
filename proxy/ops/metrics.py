"""Prometheus metrics: requests, latency, the proxy's own overhead, the writer.

The writer's and the OpenTelemetry export's figures come in as any object with the counters
named in `WriterCounters` and `ExportCounters` (their `statistics()`, dataclasses): metrics
imports neither module, and a snapshot holds only those counters.

Each worker counts its own requests in memory (a list increment on the hot path) and publishes a
snapshot every second to `<data dir>/metrics/<server pid>/<worker pid>.json`. `/metrics`, whichever
worker answers it, adds up the snapshots of every worker of its server: with `--workers N` a scrape
sees the whole server, not one worker at random. A worker that exits keeps its snapshot (its
requests stay counted, so counters never go down while the server runs); its gauges (queue,
health) stop counting. Another server on the same data directory has its own folder; folders of
servers that are gone are removed at start.
"""

from __future__ import annotations

import logging
import os
import shutil
from bisect import bisect_left
from pathlib import Path
from typing import Any, Protocol

import orjson

log = logging.getLogger("lectr.metrics")

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class _Histogram:
    __slots__ = ("counts", "total", "count")

    def __init__(self) -> None:
        self.counts = [0] * (len(_BUCKETS) + 1)
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(_BUCKETS, value)] += 1
        self.total += value
        self.count += 1

    def add(self, other: list[Any]) -> None:
        """Add a snapshot's `[counts, total, count]`."""
        counts, total, count = other
        if len(counts) == len(self.counts):
            self.counts = [a + b for a, b in zip(self.counts, counts, strict=True)]
            self.total += total
            self.count += count

    def snapshot(self) -> list[Any]:
        return [self.counts, self.total, self.count]

    def render(self, name: str) -> list[str]:
        lines, running = [f"# TYPE {name} histogram"], 0
        for bound, count in zip(_BUCKETS, self.counts, strict=False):
            running += count
            lines.append(f'{name}_bucket{{le="{bound}"}} {running}')
        lines.append(f'{name}_bucket{{le="+Inf"}} {self.count}')
        lines.append(f"{name}_sum {self.total}")
        lines.append(f"{name}_count {self.count}")
        return lines


class WriterCounters(Protocol):
    """What /metrics reads of the event writer's `statistics()` (proxy/events/writer.py)."""

    @property
    def queued(self) -> int: ...
    @property
    def written(self) -> int: ...
    @property
    def spilled(self) -> int: ...
    @property
    def replayed(self) -> int: ...
    @property
    def dropped(self) -> int: ...
    @property
    def rejected(self) -> int: ...
    @property
    def failures(self) -> int: ...
    @property
    def healthy(self) -> bool: ...


class ExportCounters(Protocol):
    """What /metrics reads of the OpenTelemetry export's `statistics()` (proxy/events/telemetry.py)."""

    @property
    def queued(self) -> int: ...
    @property
    def exported(self) -> int: ...
    @property
    def dropped(self) -> int: ...
    @property
    def failed_exports(self) -> int: ...


class Metrics:
    def __init__(self) -> None:
        self.requests: dict[int, int] = {}
        self.latency = _Histogram()
        self.overhead = _Histogram()

    def observe(self, status: int, latency: float, upstream: float) -> None:
        self.requests[status] = self.requests.get(status, 0) + 1
        self.latency.observe(latency)
        self.overhead.observe(max(0.0, latency - upstream))

    def snapshot(self, writer: WriterCounters | None, telemetry: ExportCounters | None = None) -> dict[str, Any]:
        """This worker's figures as plain JSON; the writer's and the export's counters by name."""
        return {
            "requests": {str(status): n for status, n in self.requests.items()},
            "latency": self.latency.snapshot(),
            "overhead": self.overhead.snapshot(),
            "writer": _read(writer, (*_WRITER_COUNTERS, "queued", "healthy")),
            "telemetry": _read(telemetry, (*_TELEMETRY_COUNTERS, "queued")),
        }


_KEYS = frozenset({"requests", "latency", "overhead", "writer"})
_WRITER_COUNTERS = ("written", "spilled", "replayed", "dropped", "rejected", "failures")
# OpenTelemetry export (proxy/events/telemetry.py), present when it is on: spans exported and dropped.
_TELEMETRY_COUNTERS = ("exported", "dropped", "failed_exports")


def _read(source: object | None, names: tuple[str, ...]) -> dict[str, Any] | None:
    return None if source is None else {name: getattr(source, name) for name in names}


def render(snapshots: list[dict[str, Any]], live: int) -> str:
    """Prometheus text for the sum of the workers' snapshots (the live ones first: `live` of them)."""
    requests: dict[int, int] = {}
    latency, overhead = _Histogram(), _Histogram()
    writer: dict[str, int] = dict.fromkeys(_WRITER_COUNTERS, 0)
    queued, healthy, writers = 0, 1, 0
    telemetry: dict[str, int] | None = None
    for index, snapshot in enumerate(snapshots):
        for status, count in snapshot["requests"].items():
            requests[int(status)] = requests.get(int(status), 0) + count
        latency.add(snapshot["latency"])
        overhead.add(snapshot["overhead"])
        exporting = snapshot.get("telemetry")
        if exporting is not None:
            telemetry = telemetry or dict.fromkeys(("queued", *_TELEMETRY_COUNTERS), 0)
            for name in _TELEMETRY_COUNTERS:
                telemetry[name] += exporting[name]
            if index < live:
                telemetry["queued"] += exporting["queued"]
        stats = snapshot.get("writer")
        if stats is None:
            continue
        writers += 1
        for name in _WRITER_COUNTERS:
            writer[name] += stats[name]
        if index < live:  # a gauge is about the workers running now
            queued += stats["queued"]
            healthy = min(healthy, int(stats["healthy"]))
    lines = ["# TYPE lectr_workers gauge", f"lectr_workers {live}", "# TYPE lectr_requests_total counter"]
    for status, count in sorted(requests.items()):
        lines.append(f'lectr_requests_total{{status="{status}"}} {count}')
    lines += latency.render("lectr_request_seconds")
    lines += overhead.render("lectr_overhead_seconds")
    if writers:
        values = {"queued": queued, **writer, "healthy": healthy}
        for name in ("queued", *_WRITER_COUNTERS, "healthy"):
            kind = "gauge" if name in ("queued", "healthy") else "counter"
            metric = f"lectr_writer_{name}" + ("_total" if kind == "counter" else "")
            lines.append(f"# TYPE {metric} {kind}")
            lines.append(f"{metric} {values[name]}")
    if telemetry is not None:
        lines += ["# TYPE lectr_telemetry_spans_queued gauge", f"lectr_telemetry_spans_queued {telemetry['queued']}"]
        for name in _TELEMETRY_COUNTERS:
            kind = name if name == "failed_exports" else f"spans_{name}"
            metric = f"lectr_telemetry_{kind}_total"
            lines += [f"# TYPE {metric} counter", f"{metric} {telemetry[name]}"]
    return "\n".join(lines) + "\n"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class SharedMetrics:
    """The snapshots of one server's workers, in a folder of the data directory (see the module
    docstring). Every failure to write or read degrades to this worker's figures, with a warning."""

    def __init__(self, root: Path, server_pid: int | None = None, pid: int | None = None) -> None:
        self.server_pid = os.getppid() if server_pid is None else server_pid
        self.pid = os.getpid() if pid is None else pid
        self.root = root
        self.folder = root / str(self.server_pid)
        self._warned = False

    def prepare(self) -> None:
        """Create our folder; remove those of servers that are gone."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            for entry in self.root.iterdir():
                if entry.name.isdigit() and entry != self.folder and not _alive(int(entry.name)):
                    shutil.rmtree(entry, ignore_errors=True)
        except OSError as exc:
            self._warn(exc)

    def publish(self, snapshot: dict[str, Any]) -> None:
        path = self.folder / f"{self.pid}.json"
        temporary = path.with_suffix(".tmp")
        try:
            try:
                temporary.write_bytes(orjson.dumps(snapshot))
            except FileNotFoundError:  # not prepared, or removed under us
                self.folder.mkdir(parents=True, exist_ok=True)
                temporary.write_bytes(orjson.dumps(snapshot))
            temporary.replace(path)  # readers see the old snapshot or the new one, never half
        except OSError as exc:
            self._warn(exc)

    def collect(self, own: dict[str, Any]) -> tuple[list[dict[str, Any]], int]:
        """Every worker's snapshot (ours as given, live workers first) and how many are live."""
        live: list[dict[str, Any]] = [own]
        gone: list[dict[str, Any]] = []
        try:
            paths = list(self.folder.glob("*.json"))
        except OSError as exc:
            self._warn(exc)
            return live, 1
        for path in paths:
            if not path.stem.isdigit() or int(path.stem) == self.pid:
                continue
            try:
                snapshot = orjson.loads(path.read_bytes())
            except (OSError, orjson.JSONDecodeError):
                continue  # removed or being replaced just now: the next scrape has it
            if not isinstance(snapshot, dict) or not _KEYS <= snapshot.keys():
                continue
            (live if _alive(int(path.stem)) else gone).append(snapshot)
        return live + gone, len(live)

    def _warn(self, exc: OSError) -> None:
        if not self._warned:
            self._warned = True
            log.warning("metrics of other workers unavailable (%s): /metrics shows this worker's", type(exc).__name__)
