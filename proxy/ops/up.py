"""`lectr up`: the proxy and the dashboard together (the Procfile's two processes), one command.

On the embedded database this process owns the Postgres server and hands its URL to both
children, so it starts once and stops when `lectr up` stops.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from proxy.core.config import Settings
from proxy.store.db import connect, database_url, migrate
from proxy.store.orgs import ensure_org

DASHBOARD_ENTRY = Path(__file__).resolve().parents[2] / "dashboard" / "streamlit_app.py"


def default_workers() -> int:
    """One proxy worker per CPU this process may run on (its affinity mask: what `taskset`, a
    container's cpuset or `nproc` allow, not every CPU of the host). A worker is one trio loop on one
    core: streams are CPU-bound per chunk, so fewer workers than cores leaves cores idle."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # no affinity call on this OS (macOS)
        return max(1, os.cpu_count() or 1)


def up_proxy_command(args: argparse.Namespace, port: int) -> list[str]:
    """The proxy command `lectr up` runs: `--workers N` if given, else one worker per CPU."""
    workers = args.workers if args.workers is not None else default_workers()
    return proxy_command(args.host, port, workers)


def proxy_command(host: str, port: int, workers: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "hypercorn",
        "--worker-class",
        "trio",
        "--config",
        "python:proxy.hypercorn_config",
        "--bind",
        f"{host}:{port}",
        "--workers",
        str(workers),
        "proxy.app:create_app()",
    ]


def dashboard_command(host: str, port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(DASHBOARD_ENTRY),
        "--server.port",
        str(port),
        "--server.address",
        host,
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
    ]


def _wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    return False


def run_up(args: argparse.Namespace, settings: Settings) -> int:
    proxy_port = args.proxy_port or settings.port
    url = database_url(settings)
    with connect(url) as conn:
        migrate(conn)
        _, key = ensure_org(conn, "default")
    if key:
        print("Created org 'default'. Its key is shown once; store it now (e.g. export LECTR_KEY=...):")
        print(f"  {key}")
    env = {**os.environ, "DATABASE_URL": url, "LECTR_PROXY_URL": f"http://{args.host}:{proxy_port}/v1"}
    children = [
        subprocess.Popen(up_proxy_command(args, proxy_port), env=env),
        subprocess.Popen(dashboard_command(args.host, args.dashboard_port), env=env),
    ]
    proxy_proc, dashboard_proc = children
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        ok = _wait_ready(f"http://{args.host}:{proxy_port}/healthz", proxy_proc)
        ok = ok and _wait_ready(f"http://{args.host}:{args.dashboard_port}/_stcore/health", dashboard_proc)
        if ok:
            print(f"Lectr proxy:     http://{args.host}:{proxy_port}/v1   (set it as your OpenAI base URL)")
            print(f"Lectr dashboard: http://{args.host}:{args.dashboard_port}")
            print("Press Ctrl-C to stop both.", flush=True)
        while not stopping and all(child.poll() is None for child in children):
            time.sleep(0.2)
    finally:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(40)
            except subprocess.TimeoutExpired:
                child.kill()
    failed = [child.returncode for child in children if child.returncode not in (0, -signal.SIGTERM, None)]
    if not stopping or failed:
        print("lectr up: a process stopped unexpectedly; both are stopped now", file=sys.stderr)
        return 1
    print("Stopped.")
    return 0
