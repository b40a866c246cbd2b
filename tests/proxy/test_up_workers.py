"""`lectr up` and the Procfile start one proxy worker per CPU unless told otherwise (issue 19)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from proxy.cli import build_parser
from proxy.ops.up import default_workers, up_proxy_command

ROOT = Path(__file__).resolve().parents[2]


def _workers(command: list[str]) -> int:
    return int(command[command.index("--workers") + 1])


def test_default_workers_is_the_cpus_this_process_may_use() -> None:
    assert default_workers() == len(os.sched_getaffinity(0))


def test_default_workers_follows_the_affinity_mask() -> None:
    """Pinned to one CPU (a container's cpuset, `taskset`), one worker, whatever the host has."""
    before = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {min(before)})
        assert default_workers() == 1
    finally:
        os.sched_setaffinity(0, before)
    assert default_workers() == len(before)


def test_lectr_up_starts_one_worker_per_cpu_by_default() -> None:
    args = build_parser().parse_args(["up"])
    assert args.workers is None
    command = up_proxy_command(args, 8080)
    assert _workers(command) == len(os.sched_getaffinity(0))
    assert command[command.index("--bind") + 1] == "127.0.0.1:8080"
    assert command[-1] == "proxy.app:create_app()"


@pytest.mark.parametrize("workers", [1, 3])
def test_lectr_up_workers_flag_overrides(workers: int) -> None:
    args = build_parser().parse_args(["up", "--workers", str(workers), "--host", "0.0.0.0"])
    command = up_proxy_command(args, 9000)
    assert _workers(command) == workers
    assert command[command.index("--bind") + 1] == "0.0.0.0:9000"


@pytest.mark.parametrize("value", ["0", "-2", "many"])
def test_lectr_up_refuses_a_worker_count_below_one(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["up", "--workers", value])
    assert "--workers" in capsys.readouterr().err


def _procfile_workers(env: dict[str, str]) -> str:
    """The `--workers` value the Procfile's web line gives, expanded by sh as a Procfile runner does."""
    web = next(line for line in (ROOT / "Procfile").read_text().splitlines() if line.startswith("web:"))
    words = web.split()
    expression = words[words.index("--workers") + 1]
    done = subprocess.run(
        ["sh", "-c", f"echo {expression}"], env={"PATH": os.environ["PATH"], **env}, capture_output=True, text=True
    )
    return done.stdout.strip()


def test_procfile_defaults_web_concurrency_to_the_cpu_count() -> None:
    assert _procfile_workers({}) == str(len(os.sched_getaffinity(0)))
    assert _procfile_workers({"WEB_CONCURRENCY": "3"}) == "3"
