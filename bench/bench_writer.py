"""Event writer benchmark: events/s into Postgres, and the hot-path cost of recording an event.

    python bench/bench_writer.py [--events 200000]

Uses the embedded Postgres in a temporary directory (or DATABASE_URL). Target: ≥ 20,000 events/s.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import tempfile
import time
import timeit
from pathlib import Path

import trio

from proxy.accounting.record import Event
from proxy.core.config import Settings
from proxy.events.journal import Journal
from proxy.events.writer import EventWriter
from proxy.store.db import connect, database_url, migrate
from proxy.store.db.connection import stop_embedded
from proxy.store.orgs import create_org

MODELS = [
    ("openai", "gpt-4o"),
    ("openai", "gpt-4o-mini"),
    ("anthropic", "claude-3-5-sonnet-20241022"),
    ("groq", "llama-3.1-8b-instant"),
    ("gemini", "gemini-1.5-flash"),
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
    event.latency_ms, event.upstream_ms, event.ttft_ms = 812.5, 811.9, 120.0
    event.request_bytes, event.response_bytes, event.message_count = 2048, 900, 3
    return event


async def throughput(url: str, org_id: int, n: int, journal: Path) -> float:
    writer = EventWriter(url, Journal(journal), queue_size=max(100_000, n))
    events = [make_event(org_id, i) for i in range(n)]
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        start = time.perf_counter()
        for i, event in enumerate(events):
            writer.record(event)
            if i % 5000 == 0:
                await trio.sleep(0)
        while writer.statistics().written < n:
            await trio.sleep(0.01)
        elapsed = time.perf_counter() - start
        await writer.aclose()
    stats = writer.statistics()
    assert stats.dropped == 0 and stats.spilled == 0, stats
    return n / elapsed


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = os.environ.get("DATABASE_URL") or database_url(Settings(data_dir=Path(tmp)))
        try:
            with connect(url) as conn:
                migrate(conn)
                org, _ = create_org(conn, f"bench-writer-{time.time_ns()}")
            rate = trio.run(throughput, url, org.id, args.events, Path(tmp) / "journal")
            build, record = record_cost(Path(tmp))
            with connect(url) as conn:
                query = "SELECT count(*), count(cost_usd) FROM events WHERE org_id = %s"
                rows = conn.execute(query, (org.id,)).fetchone()
        finally:
            stop_embedded(Path(tmp))
    print(f"events written:            {rows[0]:,} ({rows[1]:,} priced)")
    print(f"writer throughput:         {rate:,.0f} events/s (target >= 20,000)")
    print(f"hot path, Event(...):      {build:.2f} us")
    print(f"hot path, writer.record(): {record:.2f} us")


if __name__ == "__main__":
    main()
