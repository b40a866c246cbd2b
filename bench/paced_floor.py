"""Paced streams against trio's floor (`paced-floor`), and across workers (`paced-workers`).

Both use nginx's `steady` server: 40 SSE chunks 25 ms apart (a 1 s answer at 40 tokens/s), then the
usage chunk and `[DONE]`, and wrk holding 50, 200 or 1,000 streams open back to back (issue 19).

- `paced-floor`: nginx direct, the bare trio relay (`floor_relay.py`: accept, forward, relay bytes)
  and Lectr (one worker), each proxy pinned to the last CPU and wrk and nginx to CPU 0, so that
  each proxy's CPU time is its own. The proxies take turns in rounds (order rotated every round)
  so that all see the same moments of a shared machine, merged per side. `--base-root DIR` adds
  Lectr from another checkout (e.g. `git worktree add /tmp/base main`) to the rounds: before and
  after in the same run.
- `paced-workers`: Lectr with 1 worker and with one per CPU (`proxy.ops.up.default_workers()`), not
  pinned: wrk, nginx, Postgres and the workers share the machine's cores, as they would on a
  one-box deployment.

CPU per stream is the proxy's CPU time (utime + stime of its process tree, read before the wrk run
and 1.5 s after it, once the streams wrk abandoned at its deadline have ended) over the streams it
served. wrk stops with up to one stream per connection unfinished, so streams are counted as
`bytes read / bytes of one whole answer` (the answer measured once per target beforehand): the
partial streams count for what they got. CPU per chunk divides by the 42 upstream writes of a
stream (40 chunks, the usage chunk, `[DONE]`). Stream durations are wrk's latency distribution
(with its coordinated-omission correction: see `wrk.lua`). Each proxy's share of its core is
reported too: one that gets less than it needs falls behind, its reads then bring several chunks
each, and its CPU per stream drops, so only sides with similar shares compare.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from harness import ROOT, cpu_seconds, machine_jiffies, pinned, process_tree, status_kb, wrk
from probes import _Response, build_request
from run import Row, Run, _check_events, _peak_rss, chat_body
from upstream import STEADY_CHUNKS, free_port

from proxy.ops.up import default_workers

STREAMS = (50, 200, 1000)  # 50: few enough that a proxy keeps pace even on a busy machine
ROUNDS = 2  # relay/Lectr rounds per concurrency
WRITES = STEADY_CHUNKS + 2  # upstream writes per stream: the chunks, the usage chunk, [DONE]
TARGET_RATIO = 1.25  # Lectr's CPU per stream against the bare relay's, at 200 streams
TARGET_AT = 200
PATH = "/v1/chat/completions"


def _cpus() -> tuple[str | None, str | None]:
    """(proxy CPU, load CPU): the last CPU for the proxy, CPU 0 for wrk and nginx; none on one CPU."""
    available = sorted(os.sched_getaffinity(0))
    if len(available) < 2:
        return None, None
    return str(available[-1]), str(available[0])


def _answer_bytes(port: int, headers: dict[str, str]) -> int:
    """Bytes of one whole answer from this target (head and chunked body), as wrk counts them."""
    response = _Response()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(build_request(port, PATH, chat_body(stream=True), headers))
        while not response.feed(sock.recv(65536)):
            pass
    problem = response.check_stream(STEADY_CHUNKS)
    if problem:
        raise SystemExit(f"paced-floor: the answer on port {port} is wrong: {problem}")
    return len(response.buffer)


def _measure(
    run: Run, port: int, key: str, connections: int, pids: list[int] | None, answer: int, cpus: str | None
) -> dict[str, Any]:
    """One wrk run against `port`; the proxy's CPU over it (when `pids`), streams by bytes read."""
    body = run.body_file("paced-floor", chat_body(stream=True))
    before = cpu_seconds(pids) if pids else 0.0
    busy_before, total_before = machine_jiffies()
    # Past one core's worth, streams stretch to several seconds: 1,000 get three times as long.
    seconds = max(run.args.duration, 3.0) * (3 if connections > TARGET_AT else 1)
    result = wrk(
        f"http://127.0.0.1:{port}{PATH}",
        connections=connections,
        duration=seconds,
        body_file=body,
        key=key,
        timeout=60.0,
        cpus=cpus,
    )
    busy, total = machine_jiffies()
    time.sleep(1.5)  # the streams wrk abandoned end (at their next chunk) before CPU is read
    result["machine_busy"] = (busy - busy_before) / max(1, total - total_before)
    result["streams"] = result["bytes"] / answer  # whole answers' worth, partial ones pro rata
    if pids:
        result["cpu_s"] = cpu_seconds(pids) - before
        result["cores"] = result["cpu_s"] / (result["duration_us"] / 1e6 + 1.5)  # the share of a core it got
        result["cpu_ms_per_stream"] = result["cpu_s"] / max(1e-9, result["streams"]) * 1000
        result["cpu_us_per_chunk"] = result["cpu_ms_per_stream"] * 1000 / WRITES
    return result


def _merge(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Rounds of one side added up: rates over the summed time, p99 the worst round's."""
    seconds = sum(r["duration_us"] for r in rounds) / 1e6
    streams = sum(r["streams"] for r in rounds)
    out: dict[str, Any] = {
        "rounds": len(rounds),
        "requests": sum(r["requests"] for r in rounds),
        "streams": streams,
        "streams_per_s": sum(r["requests"] for r in rounds) / seconds,
        "p50_s": max(r["latency_us"]["p50"] for r in rounds) / 1e6,
        "p99_s": max(r["latency_us"]["p99"] for r in rounds) / 1e6,
        "errors": sum(r["error_total"] for r in rounds),
        "machine_busy": sum(r["machine_busy"] for r in rounds) / len(rounds),
    }
    if "cpu_s" in rounds[0]:
        out["cores"] = [round(r["cores"], 2) for r in rounds]
        out["cpu_s"] = sum(r["cpu_s"] for r in rounds)
        out["cpu_ms_per_stream"] = out["cpu_s"] / max(1e-9, streams) * 1000
        out["cpu_us_per_chunk"] = out["cpu_ms_per_stream"] * 1000 / WRITES
    return out


class _Relay:
    """`floor_relay.py` in a process of its own, pinned like the proxy."""

    def __init__(self, upstream_port: int, cpus: str | None) -> None:
        self.port = free_port()
        command = [sys.executable, str(Path(__file__).with_name("floor_relay.py")), "--port", str(self.port)]
        command += ["--upstream", f"127.0.0.1:{upstream_port}"]
        self.process = subprocess.Popen(pinned(command, cpus), cwd=ROOT)
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.stop()
                    raise SystemExit("the bare trio relay did not start") from None
                time.sleep(0.1)

    def pids(self) -> list[int]:
        return process_tree(self.process.pid)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


def _pin_nginx(run: Run, cpu: str | None) -> None:
    for pid in run.upstream.worker_pids():
        os.sched_setaffinity(pid, {int(cpu)} if cpu is not None else os.sched_getaffinity(0))


def paced_floor_scenario(run: Run) -> None:
    name = "paced-floor"
    proxy_cpu, load_cpu = _cpus()
    _pin_nginx(run, load_cpu)
    proxy, org_id, key = run.start_proxy(name, run.upstream.steady_url, cpus=proxy_cpu)
    base_root = getattr(run.args, "base_root", None)
    base = base_key = None
    if base_root is not None:
        base, _, base_key = run.start_proxy(f"{name}-base", run.upstream.steady_url, cpus=proxy_cpu, root=base_root)
    relay = _Relay(run.upstream.steady_port, proxy_cpu)
    headers = {"X-Lectr-Key": key, "Authorization": "Bearer sk-bench", "Content-Type": "application/json"}
    out: dict[str, Any] = {"proxy_cpu": proxy_cpu, "load_cpu": load_cpu, "loadavg": os.getloadavg()}
    client_ok = cutoff = 0
    try:
        targets = {"relay": (relay.port, relay.pids(), key), "lectr": (proxy.port, proxy.pids(), key)}
        if base is not None and base_key is not None:
            targets["base"] = (base.port, base.pids(), base_key)  # its own org: its events stay apart
        answers = {"nginx": _answer_bytes(run.upstream.steady_port, headers)}
        for side, (port, _, side_key) in targets.items():
            answers[side] = _answer_bytes(port, {**headers, "X-Lectr-Key": side_key})
        client_ok = 1
        out["answer_bytes"] = answers
        order = list(targets)
        for connections in STREAMS:
            sides: dict[str, list[dict[str, Any]]] = {"nginx": [], **{side: [] for side in order}}
            sides["nginx"].append(
                _measure(run, run.upstream.steady_port, key, connections, None, answers["nginx"], load_cpu)
            )
            for index in range(ROUNDS):
                for side in order[index % len(order) :] + order[: index % len(order)]:
                    port, pids, side_key = targets[side]
                    sides[side].append(_measure(run, port, side_key, connections, pids, answers[side], load_cpu))
                    print(f"   {connections} streams, round {index + 1}, {side} done", flush=True)
            merged = {side: _merge(rounds) for side, rounds in sides.items()}
            lectr_rounds = sides["lectr"]
            client_ok += sum(r["requests"] - r["errors"]["status"] for r in lectr_rounds)
            cutoff += connections * len(lectr_rounds)
            out[f"c{connections}"] = {"merged": merged, "rounds": sides}
            for side, figures in merged.items():
                if figures["errors"]:
                    run.problems.append(f"{name}: {side} at {connections} streams had {figures['errors']} errors")
        out["rss"] = _peak_rss(proxy)
        out["events"] = _check_events(run, name, proxy, org_id, client_ok, cutoff)
    finally:
        relay.stop()
        proxy.stop()
        if base is not None:
            base.stop()
        _pin_nginx(run, None)
    run.results[name] = out
    _floor_rows(run, name, out)


def _floor_rows(run: Run, name: str, out: dict[str, Any]) -> None:
    for connections in STREAMS:
        m = out[f"c{connections}"]["merged"]
        nginx, relay, lectr = m["nginx"], m["relay"], m["lectr"]
        ratio = lectr["cpu_ms_per_stream"] / relay["cpu_ms_per_stream"]
        at = f"{connections} streams"
        if "base" in m:
            old = m["base"]
            run.add(
                Row(
                    name,
                    f"{at}: `--base-root` Lectr: streams/s · p99 (s) · CPU per stream (ms) · per chunk (µs)",
                    f"bare relay {relay['cpu_ms_per_stream']:.2f} ms",
                    f"{old['streams_per_s']:.0f} · {old['p99_s']:.2f} · {old['cpu_ms_per_stream']:.2f} · "
                    f"{old['cpu_us_per_chunk']:.0f}",
                    f"×{old['cpu_ms_per_stream'] / relay['cpu_ms_per_stream']:.2f} the bare relay; this checkout "
                    f"×{lectr['cpu_ms_per_stream'] / old['cpu_ms_per_stream']:.2f} of it",
                )
            )
        run.add(
            Row(
                name,
                f"{at}: streams/s · p99 duration (s)",
                f"nginx {nginx['streams_per_s']:.0f} · {nginx['p99_s']:.2f}; "
                f"bare relay {relay['streams_per_s']:.0f} · {relay['p99_s']:.2f}",
                f"{lectr['streams_per_s']:.0f} · {lectr['p99_s']:.2f}",
                f"{lectr['rounds']} rounds each, proxies on CPU {out['proxy_cpu']}",
            ),
            Row(
                name,
                f"{at}: CPU per stream (ms) · per chunk (µs)",
                f"bare relay {relay['cpu_ms_per_stream']:.2f} · {relay['cpu_us_per_chunk']:.0f}",
                f"{lectr['cpu_ms_per_stream']:.2f} · {lectr['cpu_us_per_chunk']:.0f}",
                f"×{ratio:.2f} the bare relay",
                f"≤ ×{TARGET_RATIO}" if connections == TARGET_AT else "",
                ratio <= TARGET_RATIO if connections == TARGET_AT else None,
            ),
            Row(
                name,
                f"{at}: share of its core each proxy got, per round · p50 duration (s)",
                f"bare relay {relay['cores']} · {relay['p50_s']:.2f}",
                f"{lectr['cores']} · {lectr['p50_s']:.2f}"
                + (f"; `--base-root` {m['base']['cores']} · {m['base']['p50_s']:.2f}" if "base" in m else ""),
                "p50 over ~1.0 s: the proxy fell behind, reads coalesce chunks and CPU per stream drops",
            ),
        )
    events = out["events"]
    run.add(
        Row(
            name,
            "events written == streams answered",
            "",
            f"{events['events_by_status']}",
            f"proxy answered {events['proxy_answered_by_status']}",
            "equal (±cut-off)",
            events["ok"],
        )
    )


def paced_workers_scenario(run: Run) -> None:
    """Lectr at 1,000 paced streams with 1 worker and with one per CPU, nothing pinned."""
    name = "paced-workers"
    connections = STREAMS[-1]
    counts = sorted({1, default_workers()})
    out: dict[str, Any] = {"loadavg": os.getloadavg()}
    for workers in counts:
        proxy, org_id, key = run.start_proxy(f"{name}-{workers}", run.upstream.steady_url, workers=workers)
        headers = {"X-Lectr-Key": key, "Authorization": "Bearer sk-bench", "Content-Type": "application/json"}
        try:
            idle_mb = [status_kb(pid, "VmRSS") / 1024 for pid in proxy.worker_pids()]
            answer = _answer_bytes(proxy.port, headers)
            result = _measure(run, proxy.port, key, connections, proxy.pids(), answer, None)
            result["rss"] = _peak_rss(proxy)
            result["rss"]["idle_per_worker_mb"] = idle_mb
            client_ok = 1 + result["requests"] - result["errors"]["status"]
            result["events"] = _check_events(run, f"{name}-{workers}", proxy, org_id, client_ok, connections)
        finally:
            proxy.stop()
        if result["error_total"]:
            run.problems.append(f"{name}: {workers} workers had client errors {result['errors']}")
        out[workers] = result
    run.results[name] = out
    one = out[1]
    for workers in counts:
        r = out[workers]
        run.add(
            Row(
                name,
                f"{workers} worker(s), {connections} streams: streams/s · p99 (s) · CPU/stream (ms) · machine busy",
                "",
                f"{r['rps']:.0f} · {r['latency_us']['p99'] / 1e6:.2f} · {r['cpu_ms_per_stream']:.2f} · "
                f"{r['machine_busy'] * 100:.0f}%",
                f"×{r['rps'] / one['rps']:.2f} vs 1 worker; RSS per worker "
                f"{max(r['rss']['idle_per_worker_mb']):.0f} MB idle, {r['rss']['max_worker_mb']:.0f} MB peak",
                "",
                r["events"]["ok"],
            )
        )


def profile(seconds: int = 10, connections: int = TARGET_AT) -> None:
    """py-spy on Lectr's worker and on the bare relay, each under `connections` steady streams
    (wrk on CPU 0, the profiled process on the last CPU): bench/out/profile-steady-{lectr,relay}.*"""
    import argparse
    import tempfile

    from harness import Database
    from profile_proxy import OUT, _record, render, summarise
    from upstream import Upstream

    from proxy.store.db.connection import stop_embedded

    proxy_cpu, load_cpu = _cpus()
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="lectr-steady-") as tmp:
        work = Path(tmp)
        upstream = Upstream(work / "nginx").start()
        try:
            run = Run(argparse.Namespace(duration=seconds + 1), Database.start(work / "pg"), upstream, work)
            _pin_nginx(run, load_cpu)
            proxy, _, key = run.start_proxy("steady", upstream.steady_url, cpus=proxy_cpu)
            relay = _Relay(upstream.steady_port, proxy_cpu)
            headers = {"X-Lectr-Key": key, "Authorization": "Bearer sk-bench", "Content-Type": "application/json"}
            try:
                for side, port, pid in (
                    ("lectr", proxy.port, proxy.worker_pids()[0]),
                    ("relay", relay.port, relay.process.pid),
                ):
                    answer = _answer_bytes(port, headers)
                    for fmt, suffix in (("raw", "txt"), ("flamegraph", "svg")):
                        recorder = _record(pid, OUT / f"profile-steady-{side}.{suffix}", fmt, seconds)
                        result = _measure(run, port, key, connections, None, answer, load_cpu)
                        recorder.communicate(timeout=60)
                    text = render(
                        summarise(OUT / f"profile-steady-{side}.txt", top=40),
                        f"{side}, {connections} steady streams, {result['rps']:.0f} streams/s while sampled",
                    )
                    (OUT / f"profile-steady-{side}-summary.txt").write_text(text)
                    print(text)
            finally:
                relay.stop()
                proxy.stop()
        finally:
            upstream.stop()
            stop_embedded(work / "pg")


if __name__ == "__main__":
    profile()
