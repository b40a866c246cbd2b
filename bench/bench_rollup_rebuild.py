"""Rollup rebuild benchmark: how long recomputing the rollups from raw events takes per million events.

    python bench/bench_rollup_rebuild.py [--events 1000000]

Fills a fresh embedded Postgres (or DATABASE_URL) with `lectr demo` traffic (every provider,
feature, status and end user of the demo, over 30 days), then times the two ways rollups are
rebuilt: all at once, as the upgrade migration (006) does on an existing install, and a UTC day
per transaction, as `lectr rollup rebuild` does.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from analytics.demo import generate
from proxy.core.config import Settings
from proxy.store.db import connect, database_url, migrate
from proxy.store.db.connection import stop_embedded
from proxy.store.db.rollups import rebuild_days


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    args = parser.parse_args()
    days = 30
    per_day = int(args.events / days / 0.84)  # weekends are quieter (0.45 of a weekday)
    with tempfile.TemporaryDirectory() as tmp:
        url = os.environ.get("DATABASE_URL") or database_url(Settings(data_dir=Path(tmp)))
        try:
            with connect(url) as conn:
                migrate(conn)
                start = time.perf_counter()
                generate(conn, days=days, per_day=per_day)
                filled = time.perf_counter() - start
                (events,) = conn.execute("SELECT count(*) FROM events").fetchone() or (0,)
                conn.execute("VACUUM ANALYZE events")
                start = time.perf_counter()
                with conn.transaction():
                    conn.execute("SELECT lectr_rollup_rebuild(NULL, '-infinity', 'infinity')")
                whole = time.perf_counter() - start
                start = time.perf_counter()
                chunks, run = rebuild_days(conn, None, None)
                counted = sum(found for _, found, _ in run)
                daily = time.perf_counter() - start
                (rows,) = conn.execute("SELECT count(*) FROM rollup_hourly").fetchone() or (0,)
        finally:
            stop_embedded(Path(tmp))
    assert counted == events, (counted, events)
    per_million = 1_000_000 / events
    print(f"events:                         {events:,} over {days} days ({filled:.0f} s to generate and COPY)")
    print(f"rollup_hourly rows:             {rows:,}")
    print(f"rebuild at once (migration):    {whole:.1f} s, {whole * per_million:.1f} s per million events")
    print(f"rebuild by day ({len(chunks)} chunks):    {daily:.1f} s, {daily * per_million:.1f} s per million events")


if __name__ == "__main__":
    main()
