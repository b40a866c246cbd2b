"""The sum of the workers' snapshots behind /metrics (proxy/ops/metrics.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import orjson

from proxy.events.telemetry import TelemetryStatistics
from proxy.events.writer import WriterStatistics
from proxy.ops.metrics import Metrics, SharedMetrics, render


def _gone_pid() -> int:
    """The pid of a process that has exited."""
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


def _stats(queued: int, written: int, healthy: bool) -> WriterStatistics:
    return WriterStatistics(queued, written, 0, 0, 0, 0, 0, healthy, 0)


def _metrics(*observations: tuple[int, float]) -> Metrics:
    metrics = Metrics()
    for status, seconds in observations:
        metrics.observe(status, seconds, seconds / 2)
    return metrics


def _values(text: str) -> dict[str, float]:
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line[0] != "#"}


def test_counters_add_up_over_workers_alive_or_gone_and_gauges_over_the_living(tmp_path: Path) -> None:
    server, me, other, gone = 4242, os.getpid(), os.getppid(), _gone_pid()
    SharedMetrics(tmp_path, server, other).publish(
        _metrics((200, 0.002), (429, 0.2)).snapshot(_stats(queued=5, written=10, healthy=False))
    )
    SharedMetrics(tmp_path, server, gone).publish(_metrics((200, 0.02)).snapshot(_stats(7, 100, healthy=True)))
    (tmp_path / str(server) / "junk.json").write_text("not json")  # ignored
    (tmp_path / str(server) / "123.json").write_text("{half a snap")  # being replaced: skipped
    (tmp_path / str(server) / "124.json").write_text('{"requests": {}}')  # not a snapshot: skipped
    shared = SharedMetrics(tmp_path, server, me)
    own = _metrics((200, 0.001)).snapshot(_stats(queued=1, written=1, healthy=True))
    snapshots, live = shared.collect(own)
    assert live == 2 and snapshots[0] is own and len(snapshots) == 3
    values = _values(render(snapshots, live))
    assert values["lectr_workers"] == 2
    assert values['lectr_requests_total{status="200"}'] == 3
    assert values['lectr_requests_total{status="429"}'] == 1
    assert values["lectr_request_seconds_count"] == 4
    assert values['lectr_request_seconds_bucket{le="0.001"}'] == 1
    assert values['lectr_request_seconds_bucket{le="0.0025"}'] == 2
    assert values['lectr_request_seconds_bucket{le="+Inf"}'] == 4
    assert abs(values["lectr_request_seconds_sum"] - 0.223) < 1e-9
    assert values["lectr_writer_written_total"] == 111  # the gone worker's rows stay counted
    assert values["lectr_writer_queued"] == 6  # its queue does not
    assert values["lectr_writer_healthy"] == 0  # one live worker's writer is failing


def test_one_worker_alone_and_folders_of_servers_that_are_gone(tmp_path: Path) -> None:
    old = tmp_path / str(_gone_pid())
    old.mkdir()
    (old / "1.json").write_text("{}")
    shared = SharedMetrics(tmp_path, os.getppid(), os.getpid())
    shared.prepare()
    assert not old.exists() and shared.folder.is_dir()
    own = _metrics((200, 0.01)).snapshot(None)
    shared.publish(own)
    snapshots, live = shared.collect(own)
    assert (snapshots, live) == ([own], 1)  # our own file is not read twice
    values = _values(render(snapshots, live))
    assert values['lectr_requests_total{status="200"}'] == 1 and "lectr_writer_healthy" not in values


def test_an_unwritable_data_directory_leaves_this_workers_figures(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("a file where the folder should be")
    shared = SharedMetrics(blocked / "metrics", 1, os.getpid())
    shared.prepare()
    own = _metrics((200, 0.01)).snapshot(None)
    shared.publish(own)
    assert shared.collect(own) == ([own], 1)


def test_the_writers_and_the_exports_statistics_are_read_by_counter_name() -> None:
    """metrics imports neither the writer nor the telemetry export: any object with the counters
    will do, and the snapshot keeps those counters only (plain JSON for the other workers)."""
    writer = SimpleNamespace(
        queued=3, written=5, spilled=1, replayed=4, dropped=0, rejected=2, failures=1, healthy=False, journal_files=7
    )
    export = TelemetryStatistics(queued=2, exported=40, dropped=1, failed_exports=1)
    snapshot = _metrics((200, 0.01)).snapshot(writer, export)
    assert snapshot["writer"] == {
        "written": 5, "spilled": 1, "replayed": 4, "dropped": 0, "rejected": 2, "failures": 1, "queued": 3,
        "healthy": False,
    }
    assert snapshot["telemetry"] == {"exported": 40, "dropped": 1, "failed_exports": 1, "queued": 2}
    assert orjson.loads(orjson.dumps(snapshot)) == snapshot
    values = _values(render([snapshot], 1))
    assert (values["lectr_writer_replayed_total"], values["lectr_writer_rejected_total"]) == (4, 2)
    assert (values["lectr_writer_queued"], values["lectr_writer_healthy"]) == (3, 0)
    assert values["lectr_telemetry_spans_exported_total"] == 40 and values["lectr_telemetry_spans_queued"] == 2
    real = _metrics((200, 0.01)).snapshot(WriterStatistics(3, 5, 1, 4, 0, 2, 1, False, 7), export)
    assert real["writer"] == snapshot["writer"]
