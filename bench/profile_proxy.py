"""Where the proxy's CPU goes under load: py-spy on the Hypercorn worker, summarised.

    python bench/run.py --profile [--scenario chat]     # profiles after the scenarios
    python bench/profile_proxy.py bench/out/profile-chat.txt   # re-summarise a raw profile

For the non-streaming and the streaming load (wrk, 50 in flight, a fresh proxy each) it records
py-spy twice (sampling pauses the process, so these runs are never the measured ones):
`profile-<load>.svg`, a flame graph to look at, and `profile-<load>.txt`, collapsed stacks of all
threads with idle time excluded (py-spy pauses the worker for each sample, so stacks are exact).
The latter is summarised into `profile-<load>-summary.txt`: self and inclusive time by function
and by component (httpx, httpcore, h11, hypercorn, trio, proxy, ...). The 2,000 paced streams are
profiled the same way (`profile-paced.*`).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import wrk  # noqa: E402

OUT = Path(__file__).resolve().parent / "out"
_IDLE_LEAF = "WorkerThread._work "
_SYSCALL_FRAMES = {"_SocketType._nonblocking_helper", "_SocketType.is_readable", "_SocketType.accept"}
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^():]*)(?::(?P<line>\d+))?\)$")


def component(path: str) -> str:
    """The package a frame's file belongs to: `httpx`, `h11`, `proxy`, `stdlib:ssl`..."""
    if "site-packages/" in path:
        path = path.split("site-packages/", 1)[1]
    match = re.search(r"python3\.\d+/(.+)", path)
    if match:
        return "stdlib:" + match.group(1).split("/", 1)[0].removesuffix(".py")
    if "/proxy/" in path or path.startswith("proxy/"):
        return "proxy (ours)"
    if path.startswith("<"):
        return path
    head = path.split("/", 1)[0].removesuffix(".py")
    return f"stdlib:{head}" if head in sys.stdlib_module_names else head


def _frame(raw: str) -> tuple[str, str]:
    match = _FRAME.match(raw.strip())
    if not match:
        return raw.strip(), ""
    path = match.group("file")
    short = path.split("site-packages/", 1)[-1]
    short = re.sub(r".*/(proxy/)", r"\1", short)
    short = re.sub(r".*/python3\.\d+/", "", short)
    return f"{match.group('func')} ({short})", path


def summarise(raw: Path, top: int = 25) -> dict[str, Any]:
    self_fn: Counter[str] = Counter()
    incl_fn: Counter[str] = Counter()
    self_comp: Counter[str] = Counter()
    incl_comp: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        parts = stack.split(";")
        if parts and parts[0].startswith(("thread ", "process ")):
            threads[parts[0].split(" (")[0] if parts[0].startswith("process") else parts[0]] += count
            parts = [p for p in parts if not p.startswith(("thread ", "process "))]
        if not parts:
            continue
        frames = [_frame(p) for p in parts]
        leaf_name, leaf_path = frames[-1]
        if leaf_name.startswith(_IDLE_LEAF) and leaf_path.endswith("trio/_core/_thread_cache.py"):
            continue  # a thread of trio's cache waiting for a job: py-spy does not see it as idle
        total += count
        self_fn[leaf_name] += count
        # Time inside a socket call is the kernel's (send/recv/select), not trio's Python.
        syscall = leaf_path.endswith("trio/_socket.py") and leaf_name.split(" ")[0] in _SYSCALL_FRAMES
        self_comp["socket syscalls (via trio/_socket.py)" if syscall else component(leaf_path)] += count
        for name in {name for name, _ in frames}:
            incl_fn[name] += count
        for comp in {component(path) for _, path in frames}:
            incl_comp[comp] += count

    def share(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(name, 100.0 * n / total) for name, n in counter.most_common(top)] if total else []

    return {
        "samples": total,
        "self_by_function": share(self_fn),
        "inclusive_by_function": share(incl_fn),
        "self_by_component": share(self_comp),
        "inclusive_by_component": share(incl_comp),
        "threads": share(threads),
    }


def render(summary: dict[str, Any], title: str) -> str:
    lines = [f"# {title}: {summary['samples']} samples (CPU only, idle excluded)"]
    for key, label in (
        ("self_by_component", "self time by component"),
        ("inclusive_by_component", "inclusive time by component (on the stack)"),
        ("self_by_function", "self time by function"),
        ("inclusive_by_function", "inclusive time by function"),
        ("threads", "samples by thread"),
    ):
        lines.append(f"\n## {label}")
        lines += [f"{pct:6.1f}%  {name}" for name, pct in summary[key]]
    return "\n".join(lines) + "\n"


def _record(pid: int, output: Path, fmt: str, seconds: int) -> subprocess.Popen[bytes]:
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    command = [
        pyspy,
        "record",
        "--pid",
        str(pid),
        "--rate",
        "250",
        "--duration",
        str(seconds),
        "--format",
        fmt,
        "--output",
        str(output),
    ]
    if fmt == "raw":
        command.append("--threads")
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def profile_all(run: Any, seconds: int = 10) -> dict[str, Any]:
    """Profile a fresh proxy under the chat and the stream load; returns the summaries."""
    from run import chat_body

    if shutil.which("py-spy") is None and not Path(sys.executable).with_name("py-spy").exists():
        raise SystemExit("py-spy is missing: pip install py-spy")
    results: dict[str, Any] = {}
    for load, body, mode in (("chat", chat_body(), ""), ("stream", chat_body(stream=True), "stream")):
        print(f"-- profile {load}", flush=True)
        proxy, _, key = run.start_proxy(f"profile-{load}", run.upstream.fast_url)
        body_file = run.body_file(f"profile-{load}", body)
        url = proxy.url + "/v1/chat/completions"
        try:
            wrk(url, connections=50, duration=1, body_file=body_file, key=key, mode=mode)
            pid = proxy.worker_pids()[0]
            loads = {}
            for fmt, suffix in (("raw", "txt"), ("flamegraph", "svg")):
                recorder = _record(pid, OUT / f"profile-{load}.{suffix}", fmt, seconds)
                loads[fmt] = wrk(url, connections=50, duration=seconds + 1, body_file=body_file, key=key, mode=mode)
                _, err = recorder.communicate(timeout=60)
                if recorder.returncode != 0:
                    raise SystemExit(f"py-spy failed: {err.decode(errors='replace')[-2000:]}")
        finally:
            proxy.stop()
        summary = summarise(OUT / f"profile-{load}.txt")
        text = render(summary, f"{load}, 50 in flight, {loads['raw']['rps']:.0f} req/s while sampled")
        (OUT / f"profile-{load}-summary.txt").write_text(text)
        print(text)
        results[load] = {"rps_while_sampled": loads["raw"]["rps"], **summary}
    results["paced"] = _profile_paced(run, seconds)
    return results


def _profile_paced(run: Any, seconds: int) -> dict[str, Any]:
    """The 2,000 paced streams: where a worker's CPU goes with thousands of open connections."""
    from probes import concurrent_streams
    from run import PACED_STREAMS, chat_body
    from upstream import STREAM_CHUNKS

    print("-- profile paced", flush=True)
    proxy, _, key = run.start_proxy("profile-paced", run.upstream.paced_url)
    headers = {"X-Lectr-Key": key, "Authorization": "Bearer sk-bench", "Content-Type": "application/json"}
    raw = OUT / "profile-paced.txt"
    try:
        recorder = _record(proxy.worker_pids()[0], raw, "raw", seconds)
        streams = concurrent_streams(
            proxy.port,
            "/v1/chat/completions",
            chat_body(stream=True),
            headers,
            count=PACED_STREAMS,
            chunks=STREAM_CHUNKS,
            timeout=seconds + 5,
        )
        recorder.communicate(timeout=60)
    finally:
        proxy.stop()
    summary = summarise(raw)
    text = render(summary, f"paced, {PACED_STREAMS} streams at once, {streams['completed']} completed while sampled")
    (OUT / "profile-paced-summary.txt").write_text(text)
    print(text)
    return {"completed_while_sampled": streams["completed"], **summary}


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        print(render(summarise(Path(arg)), arg))
