"""Soak run: the proxy under a steady mixed load for minutes, watching memory and honesty.

    python bench/soak.py [--minutes 10] [--rate 50] [--stream-share 0.3] [--error-share 0.05]

What runs: the proxy as users run it (Hypercorn trio worker, one worker, the real event writer)
on an embedded Postgres in a temporary directory, against the fake providers of `tests/fakes.py`
(real HTTP servers, run in a process of their own so the load generator and the upstream do not
share one GIL) with `LECTR_UPSTREAM_TIMEOUT=2`.

The load is open-loop: a request is started every 1/rate seconds whatever the others are doing.
Mix: ~30 % streams, ~5 % injected provider 500s (`x-fake-scenario: error-500`, relayed as 500),
~0.5 % injected timeouts (`slow`: the fake waits 5 s, the proxy answers 504 after 2 s), the rest
plain chat completions over a few models and features.

Every 10 s it samples the Hypercorn worker's RSS (`VmRSS` of the spawned child) and prints it.
At the end: requests sent, responses by status, unexpected outcomes (a status other than the one
the request's scenario implies, or a client-side failure: must be 0), events in Postgres vs
requests answered (must be equal), and RSS first / after warm-up / last / max. Exits non-zero when
a check fails.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import Database, ProxyProcess, python_workers, status_kb  # noqa: E402
from bench.upstream import free_port  # noqa: E402
from proxy.store.db.connection import stop_embedded  # noqa: E402
from tests.fakes import FakeProviders  # noqa: E402

MODELS = ("gpt-4o-mini", "gpt-4o", "claude-3-5-haiku-latest", "llama-3.1-8b-instant", "gemini-1.5-flash")
FEATURES = ("chat", "search", "summary", "tagging")
SAMPLE_SECONDS = 10.0
WARM_UP_SECONDS = 60.0


def plan_request(rng: random.Random, stream_share: float, error_share: float, slow_share: float) -> dict:
    """One request of the mix: its body, headers and the status it must get."""
    model = rng.choice(MODELS)
    stream = rng.random() < stream_share
    body = {"model": model, "messages": [{"role": "user", "content": "soak " * rng.randint(1, 40)}]}
    if stream:
        body["stream"] = True
    headers = {"x-lectr-feature": rng.choice(FEATURES)}
    expected = 200
    roll = rng.random()
    if roll < error_share:
        headers["x-fake-scenario"] = "error-500"
        expected = 500
    elif roll < error_share + slow_share:
        # The fake only delays whole answers (its streams start at once): a slow request is a plain one.
        headers["x-fake-scenario"] = "slow"
        body.pop("stream", None)
        stream = False
        expected = 504
    return {"body": body, "headers": headers, "expected": expected, "stream": stream}


class Tally:
    def __init__(self) -> None:
        self.sent = 0
        self.statuses: collections.Counter[int] = collections.Counter()
        self.expected: collections.Counter[int] = collections.Counter()
        self.unexpected: collections.Counter[str] = collections.Counter()
        self.in_flight = 0


async def one_request(client: httpx.AsyncClient, url: str, key: str, plan: dict, tally: Tally) -> None:
    tally.in_flight += 1
    headers = {"authorization": "Bearer sk-soak-provider-key-000000", "x-lectr-key": key, **plan["headers"]}
    try:
        if plan["stream"]:
            async with client.stream("POST", url, json=plan["body"], headers=headers) as response:
                data = b"".join([chunk async for chunk in response.aiter_bytes()])
                ok_body = response.status_code != 200 or data.rstrip().endswith(b"data: [DONE]")
        else:
            response = await client.post(url, json=plan["body"], headers=headers)
            ok_body = response.status_code != 200 or b'"usage"' in response.content
        status = response.status_code
        tally.statuses[status] += 1
        tally.expected[plan["expected"]] += 1
        if status != plan["expected"]:
            tally.unexpected[f"status {status} for expected {plan['expected']}"] += 1
        elif not ok_body:
            tally.unexpected["truncated or empty body"] += 1
    except httpx.HTTPError as exc:
        tally.unexpected[f"client {type(exc).__name__}"] += 1
    finally:
        tally.in_flight -= 1


def serve_fakes() -> None:
    """`soak.py --serve-fakes`: the fake providers in this process; prints their env, runs until killed."""
    import hypercorn.config

    hypercorn.config.Config.backlog = 2048  # the default 100 overflows when hundreds of requests are in flight
    fakes = FakeProviders()
    fakes.start()
    print(json.dumps(fakes.env()), flush=True)
    while True:
        time.sleep(SAMPLE_SECONDS)
        fakes.reset()  # the fakes remember every request they get; keep this process flat


def start_fakes() -> tuple[subprocess.Popen[bytes], dict[str, str]]:
    process = subprocess.Popen([sys.executable, __file__, "--serve-fakes"], stdout=subprocess.PIPE)
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        raise SystemExit("the fake providers did not start")
    return process, json.loads(line)


async def drive(args: argparse.Namespace, proxy: ProxyProcess, key: str) -> tuple[Tally, list]:
    rng = random.Random(args.seed)
    tally = Tally()
    samples: list[tuple[float, int]] = []
    url = f"{proxy.url}/v1/chat/completions"
    duration = args.minutes * 60
    limits = httpx.Limits(max_connections=400, max_keepalive_connections=100)
    timeout = httpx.Timeout(30.0)
    worker = python_workers(proxy.pids())[0]
    async with httpx.AsyncClient(limits=limits, timeout=timeout) as client, trio.open_nursery() as nursery:
        start = trio.current_time()
        next_sample = start
        interval = 1.0 / args.rate
        i = 0
        while True:
            now = trio.current_time()
            if now >= next_sample:
                elapsed = now - start
                rss = status_kb(worker, "VmRSS")
                samples.append((elapsed, rss))
                print(
                    f"  t={elapsed:6.0f}s  sent={tally.sent:7d}  in_flight={tally.in_flight:4d}"
                    f"  worker RSS={rss / 1024:6.1f} MB  unexpected={sum(tally.unexpected.values())}",
                    flush=True,
                )
                next_sample += SAMPLE_SECONDS
            if now - start >= duration:
                break
            plan = plan_request(rng, args.stream_share, args.error_share, args.slow_share)
            nursery.start_soon(one_request, client, url, key, plan, tally)
            tally.sent += 1
            i += 1
            await trio.sleep_until(start + i * interval)
        print(f"  load over; waiting for {tally.in_flight} requests in flight", flush=True)
    samples.append((trio.current_time() - start, status_kb(worker, "VmRSS")))
    return tally, samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=50.0, help="requests per second (open loop)")
    parser.add_argument("--stream-share", type=float, default=0.30)
    parser.add_argument("--error-share", type=float, default=0.05, help="injected provider 500s")
    parser.add_argument("--slow-share", type=float, default=0.005, help="injected upstream timeouts (504)")
    parser.add_argument("--seed", type=int, default=8)
    parser.add_argument("--serve-fakes", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_fakes:
        serve_fakes()
        return 0

    started_at = dt.datetime.now(dt.UTC)
    with tempfile.TemporaryDirectory(prefix="lectr-soak-") as tmp:
        folder = Path(tmp)
        print(f"soak: {args.minutes:g} min at {args.rate:g} req/s; embedded Postgres in {folder}", flush=True)
        db = Database.start(folder / "data")
        org_id, key = db.new_org("soak")
        fakes, fakes_env = start_fakes()
        env = {
            "DATABASE_URL": db.url,
            "LECTR_DATA_DIR": str(folder / "proxy"),
            "LECTR_UPSTREAM_TIMEOUT": "2",
            "LECTR_UPSTREAM_CONNECT_TIMEOUT": "2",
            "LECTR_LOG_LEVEL": "WARNING",
            **fakes_env,
        }
        proxy = ProxyProcess(env, folder / "proxy.log", free_port()).start()
        try:
            tally, samples = trio.run(drive, args, proxy, key)
            # Let the writer flush (0.5 s batches), then compare.
            answered = sum(tally.statuses.values())
            deadline = time.monotonic() + 30
            while True:
                by_status_db = db.event_counts(org_id)
                events = sum(by_status_db.values())
                if events >= answered or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            metrics = httpx.get(f"{proxy.url}/metrics", timeout=30).text
        finally:
            code = proxy.stop()
            fakes.kill()
            fakes.wait()
            stop_embedded(folder / "data")
        log_tail = [line for line in proxy.log_path.read_text(errors="replace").splitlines() if "ERROR" in line]

    warm = [rss for t, rss in samples if t >= WARM_UP_SECONDS] or [samples[-1][1]]
    first, after_warm, last, peak = samples[0][1], warm[0], samples[-1][1], max(rss for _, rss in samples)
    growth = (last - after_warm) / after_warm if after_warm else 0.0
    unexpected = sum(tally.unexpected.values())
    dropped = next(
        (int(float(line.split()[-1])) for line in metrics.splitlines() if line.startswith("lectr_writer_dropped")), -1
    )
    checks = {
        "unexpected outcomes == 0": unexpected == 0,
        "events in Postgres == requests answered": events == answered,
        "events by status == responses by status": by_status_db == dict(tally.statuses),
        "writer dropped == 0": dropped == 0,
        "no ERROR lines in the proxy log": not log_tail,
        "RSS flat (last within 10 % of the value after warm-up)": abs(growth) <= 0.10,
    }
    result = {
        "started": started_at.isoformat(timespec="seconds"),
        "machine": f"{os.cpu_count()} cores, {platform.platform()}, Python {platform.python_version()}",
        "minutes": args.minutes,
        "rate": args.rate,
        "sent": tally.sent,
        "answered": answered,
        "responses_by_status": dict(sorted(tally.statuses.items())),
        "expected_by_status": dict(sorted(tally.expected.items())),
        "unexpected": dict(tally.unexpected),
        "events_in_postgres": events,
        "events_by_status": dict(sorted(by_status_db.items())),
        "writer_dropped": dropped,
        "proxy_exit_code": code,
        "error_log_lines": log_tail[:20],
        "rss_mb_series": " ".join(f"{round(t)}s:{rss / 1024:.1f}" for t, rss in samples),
        "rss_mb": {
            "first": round(first / 1024, 1),
            "after_warm_up": round(after_warm / 1024, 1),
            "last": round(last / 1024, 1),
            "max": round(peak / 1024, 1),
            "growth_after_warm_up_pct": round(growth * 100, 1),
        },
        "checks": checks,
    }
    print(json.dumps(result, indent=2))
    failed = [name for name, ok in checks.items() if not ok]
    print("SOAK CHECKS FAILED: " + "; ".join(failed) if failed else "soak: all checks passed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
