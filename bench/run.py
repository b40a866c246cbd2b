"""Proxy benchmark: the proxy against a direct-to-upstream baseline, side by side, in one run.

    python bench/run.py [--quick] [--scenario NAME ...] [--duration S] [--profile]

Needs `nginx`, its echo module and `wrk` (`apt-get install -y nginx libnginx-mod-http-echo wrk`);
installs nothing. Every scenario starts a fresh proxy (one Hypercorn trio worker unless stated,
event writer on, embedded Postgres) and a fresh org, measures the baseline (wrk straight at nginx
with the same request) and the proxy (at 1 in flight in alternating 1 s rounds, each request timed
by the client; at 50 in flight back to back), then checks its own honesty: events written ==
requests the proxy answered, zero client errors. Prints a table; writes bench/out/results.json
and bench/out/results.md. `--profile` adds py-spy profiles of the proxy under load (see
profile_proxy.py).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (  # noqa: E402
    Database,
    ProxyProcess,
    cpu_seconds,
    distribution,
    machine_jiffies,
    raise_fd_limit,
    status_kb,
    wrk,
)
from probes import concurrent_streams, ttfb_probe  # noqa: E402
from upstream import STREAM_CHUNKS, Upstream, free_port  # noqa: E402

from proxy.store.db.connection import stop_embedded  # noqa: E402

OUT = Path(__file__).resolve().parent / "out"
SCENARIOS = ("chat", "stream", "paced", "paced-floor", "paced-workers", "embeddings", "body100k", "workers2", "floor")
PACED_STREAMS = 2000
TTFB_REQUESTS = 300

# Targets (one worker, logging on, against the baseline of the same run).
T_C1_P50, T_C1_P99 = 1.0, 2.5  # ms of overhead at 1 request in flight
T_RPS, T_C50_P99 = 800.0, 100.0  # req/s per worker at 50 in flight, p99 ms
T_TTFB = 1.5  # ms of streaming time-to-first-byte overhead (p50)
T_RSS_MB = 300.0


def chat_body(stream: bool = False, content: str = "Say hello to the benchmark.") -> bytes:
    body: dict[str, Any] = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "system", "content": "You are terse."}, {"role": "user", "content": content}],
    }
    if stream:
        body["stream"] = True
    return json.dumps(body, separators=(",", ":")).encode()


def big_body(size: int = 100 * 1024) -> bytes:
    words = "the quick brown fox jumps over the lazy dog while a proxy forwards every byte "
    text = (words * (size // len(words) + 1))[: size - len(chat_body(content=""))]
    return chat_body(content=text)


EMBEDDINGS = json.dumps(
    {"model": "text-embedding-3-small", "input": "The food was delicious and the waiter was friendly."}
).encode()


@dataclass
class Row:
    scenario: str
    figure: str
    baseline: str
    proxy: str
    overhead: str
    target: str = ""
    ok: bool | None = None


@dataclass
class Run:
    args: argparse.Namespace
    db: Database
    upstream: Upstream
    work: Path
    rows: list[Row] = field(default_factory=list)
    results: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def start_proxy(
        self,
        name: str,
        base_url: str,
        workers: int = 1,
        extra_env: dict[str, str] | None = None,
        root: Path | None = None,
        cpus: str | None = None,
    ) -> tuple[ProxyProcess, int, str]:
        org_id, key = self.db.new_org(name)
        data = self.work / f"proxy-{name}"
        data.mkdir(parents=True, exist_ok=True)
        env = {
            "DATABASE_URL": self.db.url,
            "LECTR_DATA_DIR": str(data),
            "LECTR_OPENAI_BASE_URL": base_url,
            "LECTR_LOG_LEVEL": "INFO",
            **(extra_env or {}),
        }
        proxy = ProxyProcess(env, data / "proxy.log", free_port(), workers, root, cpus).start()
        return proxy, org_id, key

    def body_file(self, name: str, body: bytes) -> Path:
        path = self.work / f"{name}.json"
        path.write_bytes(body)
        return path

    def add(self, *rows: Row) -> None:
        self.rows.extend(rows)


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def _ms(us: float) -> float:
    return us / 1000.0


def _check_events(run: Run, name: str, proxy: ProxyProcess, org_id: int, client_ok: int, cutoff: int) -> dict[str, Any]:
    """Wait for the writer to flush, then compare rows in `events` with what was answered.

    `client_ok` responses were received whole by our clients; up to `cutoff` more may have been
    in flight when wrk stopped at its deadline (wrk drops those: the proxy records them as they
    ended, 200 if it had sent the answer, 499 if not).
    """
    time.sleep(1.0)  # requests wrk abandoned at its deadline finish (as 200 or 499) in the proxy
    answered = proxy.requests_total()  # None with several workers (each counts its own)
    deadline = time.monotonic() + 20
    events: dict[int, int] = {}
    stable_since, last = time.monotonic(), -1
    while time.monotonic() < deadline:
        events = run.db.event_counts(org_id)
        total = sum(events.values())
        if answered is not None and total >= sum(answered.values()):
            break
        if total != last:
            stable_since, last = time.monotonic(), total
        elif answered is None and time.monotonic() - stable_since > 3:
            break
        time.sleep(0.5)
    total = sum(events.values())
    ok_events = events.get(200, 0)
    other = {status: n for status, n in events.items() if status != 200}
    problems = []
    if answered is not None and total != sum(answered.values()):
        problems.append(f"events written {total} != requests answered by the proxy {sum(answered.values())}")
    if answered is not None and answered != events:
        problems.append(f"events by status {events} != proxy's count by status {answered}")
    if ok_events < client_ok:
        problems.append(f"only {ok_events} 200-events for {client_ok} answers the clients received")
    if ok_events > client_ok + cutoff:
        problems.append(f"{ok_events} 200-events but clients received {client_ok} (+{cutoff} cut off at most)")
    if set(other) - {499} or sum(other.values()) > cutoff:
        problems.append(f"unexpected non-200 events: {other}")
    for problem in problems:
        run.problems.append(f"{name}: {problem}")
    return {
        "events_by_status": events,
        "proxy_answered_by_status": answered,
        "client_received": client_ok,
        "cutoff_allowance": cutoff,
        "ok": not problems,
        "problems": problems,
    }


def _peak_rss(proxy: ProxyProcess) -> dict[str, Any]:
    workers = proxy.worker_pids()
    per_worker = [status_kb(pid, "VmHWM") / 1024 for pid in workers]
    return {
        "per_worker_mb": per_worker,
        "max_worker_mb": max(per_worker, default=0.0),
        "tree_mb": sum(status_kb(pid, "VmHWM") for pid in proxy.pids()) / 1024,
    }


def _load(
    run: Run,
    url: str,
    connections: int,
    body: Path,
    key: str,
    mode: str,
    pids: list[int] | None = None,
    duration: float | None = None,
) -> dict[str, Any]:
    """One wrk run. At 1 in flight each request is timed by the client and `latency_us` is that raw
    distribution (wrk's own, with its coordinated-omission correction, stays as `wrk_latency_us`)."""
    before = cpu_seconds(pids) if pids else 0.0
    nginx_before = cpu_seconds(run.upstream.worker_pids())
    busy_before, total_before = machine_jiffies()
    timed = connections == 1
    result = wrk(
        url,
        connections=connections,
        duration=duration or run.args.duration,
        body_file=body,
        key=key,
        mode=mode,
        timed=timed,
    )
    if timed:
        result["wrk_latency_us"] = result["latency_us"]
        result["latency_us"] = distribution(result["raw_us"])
    if pids:
        result["cpu_s"] = cpu_seconds(pids) - before
        result["cpu_s_per_1000"] = result["cpu_s"] / max(1, result["requests"]) * 1000
    result["nginx_cpu_s"] = cpu_seconds(run.upstream.worker_pids()) - nginx_before
    busy, total = machine_jiffies()
    result["machine_busy"] = (busy - busy_before) / max(1, total - total_before)
    return result


def _one_in_flight(
    run: Run, base_url: str, proxy_url: str, body: Path, key: str, mode: str, pids: list[int]
) -> dict[str, dict[str, Any]]:
    """Baseline and proxy at 1 request in flight, in alternating 1-second rounds, so that both see
    the same moments of a shared machine (its noise drifts over seconds), merged per side."""
    rounds: dict[str, list[dict[str, Any]]] = {"baseline": [], "proxy": []}
    for _ in range(max(1, int(run.args.duration))):
        rounds["baseline"].append(_load(run, base_url, 1, body, key, mode, duration=1))
        rounds["proxy"].append(_load(run, proxy_url, 1, body, key, mode, pids, duration=1))
    return {side: _merge(results) for side, results in rounds.items()}


def _merge(results: list[dict[str, Any]]) -> dict[str, Any]:
    raw: dict[int, int] = {}
    for result in results:
        for us, count in result["raw_us"].items():
            raw[us] = raw.get(us, 0) + count
    merged: dict[str, Any] = {
        "rounds": len(results),
        "connections": 1,
        "raw_us": raw,
        "latency_us": distribution(raw),
        # wrk's own p99 per round (coordinated-omission corrected; see wrk.lua), for comparison.
        "wrk_p99_us_by_round": [result["wrk_latency_us"]["p99"] for result in results],
    }
    for name in ("requests", "duration_us", "bytes", "error_total", "cpu_s", "nginx_cpu_s"):
        merged[name] = sum(result.get(name, 0) for result in results)
    merged["errors"] = {name: sum(result["errors"][name] for result in results) for name in results[0]["errors"]}
    merged["rps"] = merged["requests"] / (merged["duration_us"] / 1e6)
    merged["cpu_s_per_1000"] = merged["cpu_s"] / max(1, merged["requests"]) * 1000
    return merged


def wrk_scenario(run: Run, name: str, path: str, body: bytes, *, mode: str = "", ttfb: bool = False) -> None:
    proxy, org_id, key = run.start_proxy(name, run.upstream.fast_url)
    body_file = run.body_file(name, body)
    base_url = f"http://127.0.0.1:{run.upstream.fast_port}{path}"
    out: dict[str, Any] = {"request_bytes": len(body)}
    client_ok = cutoff = errors = 0
    try:
        # Warm up: connection pools, imports on first use, the writer's first flush.
        warm = wrk(proxy.url + path, connections=50, duration=1, body_file=body_file, key=key, mode=mode)
        client_ok, cutoff, errors = warm["requests"], 50, warm["error_total"]
        for connections in (1, 50):
            if connections == 1:
                out["c1"] = _one_in_flight(run, base_url, proxy.url + path, body_file, key, mode, proxy.pids())
            else:
                out["c50"] = {
                    "baseline": _load(run, base_url, connections, body_file, key, mode),
                    "proxy": _load(run, proxy.url + path, connections, body_file, key, mode, proxy.pids()),
                }
            base, prox = out[f"c{connections}"]["baseline"], out[f"c{connections}"]["proxy"]
            client_ok += prox["requests"] - prox["errors"]["status"]
            cutoff += connections * prox.get("rounds", 1)  # each wrk run may leave its last requests unread
            errors += prox["error_total"]
            if base["error_total"]:
                run.problems.append(f"{name}: baseline c{connections} had errors {base['errors']}")
        if ttfb:
            headers = {
                "X-Lectr-Key": key,
                "Authorization": "Bearer sk-bench",
                "Content-Type": "application/json",
                "X-Bench-Mode": mode,
            }
            base_probe = ttfb_probe(
                run.upstream.fast_port, path, body, headers, requests=TTFB_REQUESTS, chunks=STREAM_CHUNKS
            )
            proxy_probe = ttfb_probe(proxy.port, path, body, headers, requests=TTFB_REQUESTS, chunks=STREAM_CHUNKS)
            out["ttfb"] = {"baseline": base_probe, "proxy": proxy_probe}
            client_ok += proxy_probe["ttfb_ms"]["n"] + 20  # + the probe's warm-up requests
            errors += proxy_probe["errors"] + base_probe["errors"]
        out["rss"] = _peak_rss(proxy)
        out["events"] = _check_events(run, name, proxy, org_id, client_ok, cutoff)
        out["writer"] = proxy.writer_stats()
    finally:
        proxy.stop()
    if errors:
        run.problems.append(f"{name}: {errors} client-side errors against the proxy")
    run.results[name] = out
    _wrk_rows(run, name, out)


def _wrk_rows(run: Run, name: str, out: dict[str, Any]) -> None:
    c1, c50 = out["c1"], out["c50"]
    b1, p1 = c1["baseline"]["latency_us"], c1["proxy"]["latency_us"]
    over50 = _ms(p1["p50"] - b1["p50"])
    over99 = _ms(p1["p99"] - b1["p99"])
    b50, p50 = c50["baseline"], c50["proxy"]
    run.add(
        Row(
            name,
            "1 in flight: p50 latency (ms)",
            f"{_ms(b1['p50']):.2f}",
            f"{_ms(p1['p50']):.2f}",
            f"+{over50:.2f}",
            f"≤ +{T_C1_P50}",
            over50 <= T_C1_P50,
        ),
        Row(
            name,
            "1 in flight: p99 latency (ms)",
            f"{_ms(b1['p99']):.2f}",
            f"{_ms(p1['p99']):.2f}",
            f"+{over99:.2f}",
            f"≤ +{T_C1_P99}",
            over99 <= T_C1_P99,
        ),
        Row(
            name,
            "1 in flight: p99 as wrk reports it (ms, CO-corrected; median of rounds)",
            f"{_ms(_median(c1['baseline']['wrk_p99_us_by_round'])):.2f}",
            f"{_ms(_median(c1['proxy']['wrk_p99_us_by_round'])):.2f}",
            f"{c1['proxy']['rounds']} rounds, n={p1['n']} / {b1['n']}",
        ),
        Row(
            name,
            "50 in flight: throughput (req/s)",
            f"{b50['rps']:.0f}",
            f"{p50['rps']:.0f}",
            f"{p50['rps'] / b50['rps'] * 100:.1f}% of baseline",
            f"≥ {T_RPS:.0f}",
            p50["rps"] >= T_RPS,
        ),
        Row(
            name,
            "50 in flight: p99 latency (ms)",
            f"{_ms(b50['latency_us']['p99']):.2f}",
            f"{_ms(p50['latency_us']['p99']):.2f}",
            f"+{_ms(p50['latency_us']['p99'] - b50['latency_us']['p99']):.2f}",
            f"≤ {T_C50_P99:.0f}",
            _ms(p50["latency_us"]["p99"]) <= T_C50_P99,
        ),
        Row(
            name,
            "CPU-seconds per 1,000 requests (50 in flight)",
            f"nginx {b50['nginx_cpu_s'] / max(1, b50['requests']) * 1000:.3f}",
            f"{p50['cpu_s_per_1000']:.3f}",
            f"{p50['cpu_s_per_1000'] * 1000 / 1000:.2f} ms CPU/request",
        ),
        Row(
            name,
            "peak RSS (MB, VmHWM)",
            "",
            f"{out['rss']['max_worker_mb']:.0f}",
            "",
            f"≤ {T_RSS_MB:.0f}",
            out["rss"]["max_worker_mb"] <= T_RSS_MB,
        ),
    )
    if "ttfb" in out:
        b, p = out["ttfb"]["baseline"]["ttfb_ms"], out["ttfb"]["proxy"]["ttfb_ms"]
        run.add(
            Row(
                name,
                f"TTFB p50 (ms, first `data:`, n={p['n']})",
                f"{b['p50']:.2f}",
                f"{p['p50']:.2f}",
                f"+{p['p50'] - b['p50']:.2f}",
                f"≤ +{T_TTFB}",
                p["p50"] - b["p50"] <= T_TTFB,
            ),
            Row(name, "TTFB p99 (ms)", f"{b['p99']:.2f}", f"{p['p99']:.2f}", f"+{p['p99'] - b['p99']:.2f}"),
        )
    events = out["events"]
    run.add(
        Row(
            name,
            "events written == requests answered",
            "",
            f"{sum(events['events_by_status'].values())} rows {events['events_by_status']}",
            f"proxy answered {events['proxy_answered_by_status']}",
            "equal, 0 errors",
            events["ok"],
        )
    )


def _brief(streams: dict[str, Any]) -> str:
    return (
        f"{streams['completed']}/{streams['streams']} complete, {streams['errors']} errors "
        f"{streams['error_examples'][:2]}, wall {streams['wall_s']:.2f} s"
    )


def paced_scenario(run: Run) -> None:
    name = "paced"
    proxy, org_id, key = run.start_proxy(name, run.upstream.paced_url)
    body = chat_body(stream=True)
    headers = {"X-Lectr-Key": key, "Authorization": "Bearer sk-bench", "Content-Type": "application/json"}
    path = "/v1/chat/completions"
    out: dict[str, Any] = {"streams": PACED_STREAMS}
    try:
        nginx_before = cpu_seconds(run.upstream.worker_pids())
        base = concurrent_streams(
            run.upstream.paced_port, path, body, headers, count=PACED_STREAMS, chunks=STREAM_CHUNKS
        )
        base["nginx_cpu_s"] = cpu_seconds(run.upstream.worker_pids()) - nginx_before
        before = cpu_seconds(proxy.pids())
        prox = concurrent_streams(proxy.port, path, body, headers, count=PACED_STREAMS, chunks=STREAM_CHUNKS)
        prox["cpu_s"] = cpu_seconds(proxy.pids()) - before
        print(f"   baseline: {_brief(base)}\n   proxy:    {_brief(prox)}", flush=True)
        out.update(baseline=base, proxy=prox, rss=_peak_rss(proxy))
        out["events"] = _check_events(run, name, proxy, org_id, prox["completed"], 0)
        out["writer"] = proxy.writer_stats()
    finally:
        proxy.stop()
    run.results[name] = out
    if prox["errors"] or base["errors"]:
        run.problems.append(f"paced: errors proxy={prox['error_examples']} baseline={base['error_examples']}")
    rss = out["rss"]["max_worker_mb"]
    b_s, p_s = base["stream_s"], prox["stream_s"]
    run.add(
        Row(
            name,
            f"{PACED_STREAMS} streams completed",
            f"{base['completed']}",
            f"{prox['completed']}",
            f"{prox['errors']} errors",
            "all, 0 errors",
            prox["completed"] == PACED_STREAMS and prox["errors"] == 0,
        ),
        Row(
            name,
            "stream duration p50 / p99 (s)",
            f"{b_s.get('p50', 0):.2f} / {b_s.get('p99', 0):.2f}",
            f"{p_s.get('p50', 0):.2f} / {p_s.get('p99', 0):.2f}",
            f"+{p_s.get('p99', 0) - b_s.get('p99', 0):.2f} s at p99",
        ),
        Row(
            name,
            "first `data:` p50 / p99 (ms)",
            f"{base['ttfb_ms'].get('p50', 0):.1f} / {base['ttfb_ms'].get('p99', 0):.1f}",
            f"{prox['ttfb_ms'].get('p50', 0):.1f} / {prox['ttfb_ms'].get('p99', 0):.1f}",
            "",
        ),
        Row(
            name,
            "CPU-seconds per 1,000 streams",
            f"nginx {base['nginx_cpu_s'] / PACED_STREAMS * 1000:.2f}",
            f"{prox['cpu_s'] / PACED_STREAMS * 1000:.2f}",
            "",
        ),
        Row(name, "peak RSS (MB, VmHWM)", "", f"{rss:.0f}", "", f"≤ {T_RSS_MB:.0f}", rss <= T_RSS_MB),
        Row(
            name,
            "events written == streams",
            "",
            f"{out['events']['events_by_status']}",
            f"proxy answered {out['events']['proxy_answered_by_status']}",
            "equal",
            out["events"]["ok"],
        ),
    )


def workers2_scenario(run: Run) -> None:
    name = "workers2"
    proxy, org_id, key = run.start_proxy(name, run.upstream.fast_url, workers=2)
    body_file = run.body_file(name, chat_body())
    path = "/v1/chat/completions"
    try:
        warm = wrk(proxy.url + path, connections=50, duration=1, body_file=body_file, key=key)
        base = _load(run, f"http://127.0.0.1:{run.upstream.fast_port}{path}", 50, body_file, key, "")
        prox = _load(run, proxy.url + path, 50, body_file, key, "", proxy.pids())
        rss = _peak_rss(proxy)
        client_ok = warm["requests"] + prox["requests"] - prox["errors"]["status"]
        events = _check_events(run, name, proxy, org_id, client_ok, 100)
    finally:
        proxy.stop()
    if prox["error_total"]:
        run.problems.append(f"workers2: client errors {prox['errors']}")
    one = run.results.get("chat", {}).get("c50", {}).get("proxy")
    scaling = f"×{prox['rps'] / one['rps']:.2f} vs 1 worker" if one else "(run `chat` too for the ratio)"
    run.results[name] = {"baseline": base, "proxy": prox, "rss": rss, "events": events, "scaling": scaling}
    run.add(
        Row(
            name,
            "2 workers, 50 in flight: throughput (req/s)",
            f"{base['rps']:.0f}",
            f"{prox['rps']:.0f}",
            scaling,
            f"≥ {2 * T_RPS:.0f} (2 × 800)",
            prox["rps"] >= 2 * T_RPS,
        ),
        Row(
            name,
            "CPU per request (ms) / machine busy (all cores, incl. steal), 50 in flight",
            f"1 worker: {one['cpu_s_per_1000']:.2f} / {one['machine_busy'] * 100:.0f}%" if one else "",
            f"2 workers: {prox['cpu_s_per_1000']:.2f} / {prox['machine_busy'] * 100:.0f}%",
            f"{os.cpu_count()} cores for wrk, nginx, Postgres and the workers",
        ),
        Row(
            name,
            "2 workers, 50 in flight: p99 latency (ms)",
            f"{_ms(base['latency_us']['p99']):.2f}",
            f"{_ms(prox['latency_us']['p99']):.2f}",
            "",
            f"≤ {T_C50_P99:.0f}",
            _ms(prox["latency_us"]["p99"]) <= T_C50_P99,
        ),
        Row(
            name,
            "events written == requests answered",
            "",
            f"{events['events_by_status']}",
            f"clients received {client_ok}",
            "equal (±cut-off)",
            events["ok"],
        ),
    )


def floor_scenario(run: Run) -> None:
    """The stack's own floor: Hypercorn's trio worker answering by itself (with its own HTTP/1.1
    protocol code and with ours), a bare httpx relay, and a bare h11 relay on our handler."""
    import subprocess

    from harness import ROOT, process_tree
    from harness import status_kb as _kb

    body_file = run.body_file("floor", chat_body())
    path = "/v1/chat/completions"
    out: dict[str, Any] = {}
    base1 = _load(run, f"http://127.0.0.1:{run.upstream.fast_port}{path}", 1, body_file, "", "")
    base50 = _load(run, f"http://127.0.0.1:{run.upstream.fast_port}{path}", 50, body_file, "", "")
    for app, label in (
        ("floor_apps:static", "Hypercorn alone, canned answer"),
        ("floor_lean:static", "Hypercorn worker + Lectr's HTTP/1.1 handler, canned answer"),
        ("floor_apps:relay", "Hypercorn + httpx relay, no Lectr"),
        ("floor_lean:relay_h11", "Lectr's HTTP/1.1 handler + bare h11 relay, no Lectr logic"),
    ):
        port = free_port()
        env = {
            **os.environ,
            "FLOOR_UPSTREAM": run.upstream.fast_url + "/chat/completions",
            "PYTHONPATH": str(Path(__file__).resolve().parent),
        }
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "hypercorn",
                "--worker-class",
                "trio",
                "--config",
                "python:proxy.hypercorn_config",
                "--bind",
                f"127.0.0.1:{port}",
                app,
            ],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            url = f"http://127.0.0.1:{port}{path}"
            deadline = time.monotonic() + 30
            while True:
                try:
                    wrk(url, connections=1, duration=1, body_file=body_file, key="")
                    break
                except SystemExit:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            wrk(url, connections=50, duration=1, body_file=body_file, key="")
            c1 = _load(run, url, 1, body_file, "", "", process_tree(process.pid))
            c50 = _load(run, url, 50, body_file, "", "", process_tree(process.pid))
            rss = max(_kb(pid, "VmHWM") for pid in process_tree(process.pid)) / 1024
        finally:
            process.terminate()
            process.wait(30)
        out[app] = {"c1": c1, "c50": c50, "rss_mb": rss}
        errors = c1["error_total"] + c50["error_total"]
        if errors:
            run.problems.append(f"floor/{app}: {errors} client errors")
        b, p = base1["latency_us"], c1["latency_us"]
        run.add(
            Row(
                "floor",
                f"{label}: 1 in flight p50 / p99 (ms)",
                f"{_ms(b['p50']):.2f} / {_ms(b['p99']):.2f}",
                f"{_ms(p['p50']):.2f} / {_ms(p['p99']):.2f}",
                f"+{_ms(p['p50'] - b['p50']):.2f} / +{_ms(p['p99'] - b['p99']):.2f}",
            ),
            Row(
                "floor",
                f"{label}: 50 in flight req/s, p99 (ms)",
                f"{base50['rps']:.0f}, {_ms(base50['latency_us']['p99']):.1f}",
                f"{c50['rps']:.0f}, {_ms(c50['latency_us']['p99']):.1f}",
                f"{c50['cpu_s_per_1000']:.2f} CPU-s / 1,000 req",
            ),
        )
    run.results["floor"] = {"baseline": {"c1": base1, "c50": base50}, **out}


def machine() -> dict[str, Any]:
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def render(run: Run) -> str:
    lines = [
        "| scenario | figure | baseline (nginx direct) | proxy | overhead | target | pass |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in run.rows:
        verdict = "" if r.ok is None else ("pass" if r.ok else "**FAIL**")
        lines.append(
            f"| {r.scenario} | {r.figure} | {r.baseline} | {r.proxy} | {r.overhead} | {r.target} | {verdict} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2 s per load phase instead of 5 s")
    parser.add_argument("--duration", type=float, help="seconds per wrk phase (default 5, 2 with --quick)")
    parser.add_argument("--scenario", action="append", choices=SCENARIOS, help="run only these (repeatable)")
    parser.add_argument("--profile", action="store_true", help="also record py-spy profiles (bench/out/profile-*)")
    parser.add_argument(
        "--base-root", type=Path, help="paced-floor: also run Lectr from this checkout, in the same rounds"
    )
    args = parser.parse_args(argv)
    args.duration = args.duration or (2.0 if args.quick else 5.0)
    for tool in ("nginx", "wrk"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            raise SystemExit(f"`{tool}` is missing: apt-get install -y nginx libnginx-mod-http-echo wrk")
    fd_limit = raise_fd_limit()
    if fd_limit < 2 * PACED_STREAMS + 1000:
        print(f"warning: open-file limit is {fd_limit}; {PACED_STREAMS} streams need about {4 * PACED_STREAMS}")
    OUT.mkdir(parents=True, exist_ok=True)
    scenarios = args.scenario or list(SCENARIOS)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="lectr-bench-") as tmp:
        work = Path(tmp)
        upstream = Upstream(work / "nginx").start()
        try:
            db = Database.start(work / "pg")
            run = Run(args, db, upstream, work)
            for name in scenarios:
                print(f"-- {name}", flush=True)
                if name == "chat":
                    wrk_scenario(run, name, "/v1/chat/completions", chat_body())
                elif name == "stream":
                    wrk_scenario(run, name, "/v1/chat/completions", chat_body(stream=True), mode="stream", ttfb=True)
                elif name == "embeddings":
                    wrk_scenario(run, name, "/v1/embeddings", EMBEDDINGS)
                elif name == "body100k":
                    wrk_scenario(run, name, "/v1/chat/completions", big_body())
                elif name == "paced":
                    paced_scenario(run)
                elif name == "paced-floor":
                    from paced_floor import paced_floor_scenario

                    paced_floor_scenario(run)
                elif name == "paced-workers":
                    from paced_floor import paced_workers_scenario

                    paced_workers_scenario(run)
                elif name == "workers2":
                    workers2_scenario(run)
                elif name == "floor":
                    floor_scenario(run)
            if args.profile:
                from profile_proxy import profile_all

                run.results["profile"] = profile_all(run)
        finally:
            upstream.stop()
            stop_embedded(work / "pg")
    info = machine()
    command = "python bench/run.py " + " ".join(argv if argv is not None else sys.argv[1:])
    table = render(run)
    verdict = (
        "all checks passed" if not run.problems and all(r.ok is not False for r in run.rows) else "SOME CHECKS FAILED"
    )
    header = (
        f"{info['date']} · {info['nproc']} × {info['cpu']} · Python {info['python']} · "
        f"`{command.strip()}` · {args.duration:g} s per load phase · {time.monotonic() - started:.0f} s total"
    )
    print("\n" + header + "\n\n" + table + "\n")
    if run.problems:
        print("!" * 78)
        print("HONESTY CHECKS FAILED — these figures are not trustworthy as they stand:")
        for problem in run.problems:
            print("  - " + problem)
        print("!" * 78)
    print(verdict)
    payload = {
        "machine": info,
        "command": command.strip(),
        "duration_s": args.duration,
        "rows": [r.__dict__ for r in run.rows],
        "problems": run.problems,
        "results": run.results,
    }
    (OUT / "results.json").write_text(json.dumps(payload, indent=2, default=str))
    (OUT / "results.md").write_text(header + "\n\n" + table + "\n")
    return 0 if verdict == "all checks passed" else 1


if __name__ == "__main__":
    sys.exit(main())
