"""Prometheus metrics for one worker: requests, latency, the proxy's own overhead, the writer."""

from __future__ import annotations

from bisect import bisect_left
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from proxy.writer import WriterStatistics

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

    def render(self, name: str) -> list[str]:
        lines, running = [f"# TYPE {name} histogram"], 0
        for bound, count in zip(_BUCKETS, self.counts, strict=False):
            running += count
            lines.append(f'{name}_bucket{{le="{bound}"}} {running}')
        lines.append(f'{name}_bucket{{le="+Inf"}} {self.count}')
        lines.append(f"{name}_sum {self.total}")
        lines.append(f"{name}_count {self.count}")
        return lines


class Metrics:
    def __init__(self) -> None:
        self.requests: dict[int, int] = {}
        self.latency = _Histogram()
        self.overhead = _Histogram()

    def observe(self, status: int, latency: float, upstream: float) -> None:
        self.requests[status] = self.requests.get(status, 0) + 1
        self.latency.observe(latency)
        self.overhead.observe(max(0.0, latency - upstream))

    def render(self, writer: WriterStatistics | None) -> str:
        lines = ["# TYPE lectr_requests_total counter"]
        for status, count in sorted(self.requests.items()):
            lines.append(f'lectr_requests_total{{status="{status}"}} {count}')
        lines += self.latency.render("lectr_request_seconds")
        lines += self.overhead.render("lectr_overhead_seconds")
        if writer is not None:
            for name, value in (
                ("queued", writer.queued),
                ("written", writer.written),
                ("spilled", writer.spilled),
                ("replayed", writer.replayed),
                ("dropped", writer.dropped),
                ("rejected", writer.rejected),
                ("failures", writer.failures),
                ("healthy", int(writer.healthy)),
            ):
                kind = "gauge" if name in ("queued", "healthy") else "counter"
                metric = f"lectr_writer_{name}" + ("_total" if kind == "counter" else "")
                lines.append(f"# TYPE {metric} {kind}")
                lines.append(f"{metric} {value}")
        return "\n".join(lines) + "\n"
