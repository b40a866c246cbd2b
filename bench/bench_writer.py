"""Event writer benchmark: events/s into Postgres, and the hot-path cost of recording an event.

    python bench/bench_writer.py [--events 200000]
    python bench/bench_writer.py --baseline c4cf6a6 [--rounds 5] [--events 200000]

Uses the embedded Postgres in a temporary directory (or DATABASE_URL). Target: ≥ 20,000 events/s.
The price tables are loaded before the clock starts, as the proxy's worker loads them at start-up
(`proxy.worker`): the figure is the writer's steady pace, not genai-prices' import.

`--baseline REF` is the A/B of issue 16 ("no more than 15 % below today's figure measured in the
same run"): it extracts the commit `REF` of this repository (`git archive`) into a temporary
directory and runs this same script against it and against this tree, each in a process of its
own (`PYTHONPATH` set to the tree), alternating for `--rounds` rounds, then prints each round, the
means and their ratio. The script runs on the layout of today's tree and on the flat `proxy/`
layout of the commits before the house moved (the imports below).
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import io
import os
import random
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import timeit
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parent.parent


# The writer's parts, from today's tree or from one before the move to `proxy/<area>/` (a baseline).
try:
    from proxy.accounting.pricing import warm_up
    from proxy.accounting.record import Event
    from proxy.core.config import Settings
    from proxy.events.journal import Journal
    from proxy.events.writer import EventWriter
    from proxy.store.db import connect, database_url, migrate
    from proxy.store.db.connection import stop_embedded
    from proxy.store.orgs import create_org
except ImportError:
    from proxy.config import Settings  # type: ignore[no-redef]
    from proxy.db import connect, database_url, migrate  # type: ignore[no-redef]
    from proxy.db.connection import stop_embedded  # type: ignore[no-redef]
    from proxy.journal import Journal  # type: ignore[no-redef]
    from proxy.orgs import create_org  # type: ignore[no-redef]
    from proxy.pricing import warm_up  # type: ignore[no-redef]
    from proxy.writer import EventWriter  # type: ignore[no-redef]

    from proxy.events import Event  # type: ignore[no-redef]


MODELS = [
    ("openai", "gpt-4o"),
    ("openai", "gpt-4o-mini"),
    ("anthropic", "claude-3-5-sonnet-20241022"),
    ("groq", "llama-3.1-8b-instant"),
    ("gemini", "gemini-1.5-flash"),
]

# Times spread as real ones are (a log-normal around ~700 ms, the proxy's own share 0.2-0.6 ms,
# the first token at 10-30 %), so the rollups' histograms fill as many buckets as real traffic's.
# 997 of them, drawn once: making an event stays as cheap as before.
_draw = random.Random(16)
TIMES = [
    (latency, latency - _draw.uniform(0.2, 0.6), latency * _draw.uniform(0.1, 0.3))
    for latency in (_draw.lognormvariate(6.5, 0.8) for _ in range(997))
]


def make_event(org_id: int, i: int) -> Event:
    provider, model = MODELS[i % len(MODELS)]
    event = Event(
        org_id=org_id,
        created_at=dt.datetime.now(dt.UTC),
        provider=provider,
        endpoint="chat/completions",
        status_code=200,
        model=model,
        response_model=model,
        feature=f"feature-{i % 7}",
        task="classification",
        stream=bool(i % 2),
        request_id=f"{i:032x}",
    )
    event.input_tokens, event.output_tokens, event.cached_input_tokens = 500 + i % 300, 80 + i % 50, i % 100
    event.cache_write_tokens = event.reasoning_tokens = 0
    event.latency_ms, event.upstream_ms, event.ttft_ms = TIMES[i % len(TIMES)]
    event.request_bytes, event.response_bytes, event.message_count = 2048, 900, 3
    return event


async def throughput(url: str, org_id: int, n: int, journal: Path) -> tuple[float, float]:
    """Events/s from the first `record` to the last row committed, and this process' CPU (all
    its threads: the writer's event loop and its flush thread, which share one GIL) per event."""
    writer = EventWriter(url, Journal(journal), queue_size=max(100_000, n))
    events = [make_event(org_id, i) for i in range(n)]
    await trio.to_thread.run_sync(warm_up)  # as the worker does before it starts its writer
    # The worker's collector settings (proxy/worker.py): what is loaded at start is frozen, the
    # threshold is 7,000. The events made up front are frozen too: in the proxy they never pile up
    # (each lives from its request to its flush), so full passes must not walk 200,000 of them.
    gc.collect()
    gc.freeze()
    gc.set_threshold(7000, *gc.get_threshold()[1:])
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        start, cpu = time.perf_counter(), time.process_time()
        for i, event in enumerate(events):
            writer.record(event)
            if i % 5000 == 0:
                await trio.sleep(0)
        while (stats := writer.statistics()).written < n:
            if stats.rejected or stats.dropped or stats.spilled:  # never all written: say why, do not hang
                raise SystemExit(f"the writer did not write every event: {stats}")
            await trio.sleep(0.01)
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
        await writer.aclose()
    stats = writer.statistics()
    assert stats.dropped == 0 and stats.spilled == 0, stats
    return n / elapsed, cpu / n * 1e6


def record_cost(tmp: Path) -> tuple[float, float]:
    """Microseconds per `Event(...)` and per `record()` (the only writer work a request does)."""
    n = 100_000

    async def main() -> float:
        writer = EventWriter("postgresql://unused@/x?host=/nonexistent", Journal(tmp / "unused"), queue_size=n)
        events = [make_event(1, i) for i in range(n)]
        start = time.perf_counter()
        for event in events:
            writer.record(event)
        return (time.perf_counter() - start) / n * 1e6

    build = timeit.timeit(lambda: make_event(1, 7), number=n) / n * 1e6
    return build, trio.run(main)


def measure(events: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = os.environ.get("DATABASE_URL") or database_url(Settings(data_dir=Path(tmp)))
        try:
            with connect(url) as conn:
                migrate(conn)
                org, _ = create_org(conn, f"bench-writer-{time.time_ns()}")
            rate, cpu = trio.run(throughput, url, org.id, events, Path(tmp) / "journal")
            build, record = record_cost(Path(tmp))
            with connect(url) as conn:
                query = "SELECT count(*), count(cost_usd) FROM events WHERE org_id = %s"
                rows = conn.execute(query, (org.id,)).fetchone()
        finally:
            stop_embedded(Path(tmp))
    print(f"writer measured:           {sys.modules[EventWriter.__module__].__file__}")
    print(f"events written:            {rows[0]:,} ({rows[1]:,} priced)")
    print(f"writer throughput:         {rate:,.0f} events/s (target >= 20,000)")
    print(f"writer CPU per event:      {cpu:.1f} us (this process: event loop and flush thread)")
    print(f"hot path, Event(...):      {build:.2f} us")
    print(f"hot path, writer.record(): {record:.2f} us")


def _run_in(tree: Path, events: int) -> tuple[float, float]:
    """This script, run on the `proxy` package of `tree`: its throughput (events/s) and CPU per event."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run(
        [sys.executable, __file__, "--events", str(events)],
        cwd=tree,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    measured = re.search(r"writer measured:\s+(.+)", out)
    if measured is None or not Path(measured.group(1)).resolve().is_relative_to(tree.resolve()):
        raise SystemExit(f"the run in {tree} did not measure that tree's writer:\n{out}")
    found = re.search(r"writer throughput:\s+([\d,]+)", out)
    cpu = re.search(r"writer CPU per event:\s+([\d.]+)", out)
    if found is None or cpu is None:
        raise SystemExit(f"no throughput in the output of the run in {tree}:\n{out}")
    return float(found.group(1).replace(",", "")), float(cpu.group(1))


def paired(baseline: str, rounds: int, events: int) -> None:
    """Alternate the baseline commit and this tree, `rounds` times each (issue 16's A/B)."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short", baseline], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "baseline"
        base.mkdir()
        archive = subprocess.run(
            ["git", "archive", "--format=tar", commit], cwd=ROOT, check=True, capture_output=True
        ).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(base, filter="data")
        rates: dict[str, list[float]] = {"baseline": [], "this tree": []}
        cpus: dict[str, list[float]] = {"baseline": [], "this tree": []}
        print(f"{events:,} events a run; baseline {commit} against this tree ({ROOT}), {rounds} rounds")
        for tree in (base, ROOT):  # a first run each, not counted: bytecode compiled, files in the page cache
            _run_in(tree, events // 4)
        print("| round | baseline (events/s) | this tree (events/s) | ratio | CPU/event, baseline | this tree |")
        print("|---|---:|---:|---:|---:|---:|")
        for i in range(1, rounds + 1):
            order = [("baseline", base), ("this tree", ROOT)]
            if i % 2 == 0:
                order.reverse()  # who goes first takes turns (the machine's noise drifts)
            for name, tree in order:
                rate, cpu = _run_in(tree, events)
                rates[name].append(rate)
                cpus[name].append(cpu)
            a, b = rates["baseline"][-1], rates["this tree"][-1]
            print(
                f"| {i} | {a:,.0f} | {b:,.0f} | {b / a:.3f} | {cpus['baseline'][-1]:.1f} us "
                f"| {cpus['this tree'][-1]:.1f} us |",
                flush=True,
            )
        a, b = statistics.mean(rates["baseline"]), statistics.mean(rates["this tree"])
        ratios = [y / x for x, y in zip(rates["baseline"], rates["this tree"], strict=True)]
        ca, cb = statistics.mean(cpus["baseline"]), statistics.mean(cpus["this tree"])
        print(f"| mean | {a:,.0f} | {b:,.0f} | **{b / a:.3f}** | {ca:.1f} us | {cb:.1f} us |")
        print(
            f"ratio of the means {b / a:.3f}; per round {min(ratios):.3f}-{max(ratios):.3f}, "
            f"median {statistics.median(ratios):.3f} (target: >= 0.85, at most 15 % below the baseline); "
            f"CPU per event {cb / ca:.3f}x the baseline's"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--baseline", metavar="REF", help="a commit to compare with, in alternating runs")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if args.baseline:
        paired(args.baseline, args.rounds, args.events)
    else:
        measure(args.events)


if __name__ == "__main__":
    main()
