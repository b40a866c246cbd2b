"""The writer's rollup upsert alone: Postgres time per flush, today's statement against the ones before.

    python bench/bench_rollup_upsert.py [--rounds 40]

Batches of 5,000 `bench_writer` events are aggregated as the writer does
(`proxy.accounting.rollup.aggregate`), then upserted in turn with three statements, each in its
own committed transaction, into rows that already exist (the steady state: a flush adds to the
current hour's rows):

- `sealed`: the writer's statement since migration 010 (the hours from the watermark on are left
  to the seal, which merges them into `rollup_daily` once they are over: a batch of the current
  hour merges into `rollup_hourly` and `rollup_daily_end_user` only);
- `every flush`: the statement of migrations 008-009, which also merged every batch into the
  day's `rollup_daily` rows;
- `no daily`: the statement before migration 008 (hourly and per end user).

Prints the median time of each. Uses `DATABASE_URL`, else an embedded Postgres in a temporary
directory.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import orjson
from bench_writer import make_event

from proxy.accounting.rollup import aggregate
from proxy.core.config import Settings
from proxy.events.writer import EventWriter
from proxy.store.db import connect, database_url, migrate
from proxy.store.db import rollups as sql
from proxy.store.db.connection import stop_embedded
from proxy.store.orgs import create_org

BATCH = 5_000
_HOURLY = f"{sql._insert('rollup_hourly', sql.HOURLY_COLUMNS, sql.HOURLY_KEY, sql._HOURLY_CONFLICT)} RETURNING 1"
_END_USER = sql._insert("rollup_daily_end_user", sql.DAILY_COLUMNS, sql.DAILY_KEY, sql._DAILY_CONFLICT)
STATEMENTS = {
    "sealed": sql._UPSERT,
    "every flush": (
        f"WITH hourly AS ({_HOURLY}), days AS ("
        f"{sql._insert('rollup_daily', sql.DAYS_COLUMNS, sql.HOURLY_KEY, sql._DAYS_CONFLICT)} RETURNING 1) {_END_USER}"
    ),
    "no daily": f"WITH hourly AS ({_HOURLY}) {_END_USER}",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args()
    settings = Settings.from_env()
    with tempfile.TemporaryDirectory(prefix="lectr-bench-") as tmp:
        url = settings.database_url or database_url(Settings(data_dir=Path(tmp)))
        try:
            with connect(url) as conn:
                migrate(conn)
                org, _ = create_org(conn, f"upsert-{uuid.uuid4().hex[:6]}")
                # `days` as if every hour were sealed: what the statement of 008-009 merged per flush.
                every_hour = dt.datetime.max.replace(tzinfo=dt.UTC)
                batches = [aggregate([EventWriter._finish(make_event(org.id, i))
                                      for i in range(k * BATCH, (k + 1) * BATCH)], every_hour) for k in range(4)]
                print(f"{len(batches[0].hourly)} hourly, {len(batches[0].days)} daily rows per batch of {BATCH:,}")
                times: dict[str, list[float]] = {label: [] for label in STATEMENTS}
                for i in range(args.rounds):
                    batch = batches[i % len(batches)]
                    hourly, days, daily = (orjson.dumps(rows, default=sql._default).decode()
                                           for rows in (batch.hourly, batch.days, batch.daily))
                    labels = list(STATEMENTS)
                    for label in labels[i % 3:] + labels[: i % 3]:  # who goes first takes turns
                        params = {"sealed": (hourly, "[]", daily), "every flush": (hourly, days, daily),
                                  "no daily": (hourly, daily)}[label]
                        with conn.transaction():
                            started = time.perf_counter()
                            conn.execute(STATEMENTS[label], params)  # type: ignore[arg-type]
                            times[label].append(time.perf_counter() - started)
        finally:
            stop_embedded(Path(tmp))
    for label, found in times.items():
        print(f"{label:>12}: median {statistics.median(found) * 1000:.1f} ms per flush of {BATCH:,} events")


if __name__ == "__main__":
    main()
