"""The seal of `rollup_daily` (migration 010): how long it holds the writers, per hour sealed.

    python bench/bench_rollup_seal.py [--groups 100 1000 5000]

When an hour is over, the first writer to notice merges its `rollup_hourly` rows into
`rollup_daily` (`proxy.store.db.rollups.seal`). While it does, writers wait at the first statement
of their transaction (they keep taking events). This builds the 24 hours of yesterday for
`--groups` groups with real histograms (one hour of `bench_writer` events aggregated as the writer
does, 35 groups, copied under new feature names into every hour by SQL), so the day's rows grow
hour by hour as in production, moves the watermark back to yesterday's midnight and times the seal
of the day, an hour per transaction: the figure per hour is the writers' wait once an hour. Uses
`DATABASE_URL`, else an embedded Postgres in a temporary directory.
"""

from __future__ import annotations

import argparse
import datetime as dt
import tempfile
import time
import uuid
from pathlib import Path

import orjson
from bench_writer import make_event

from proxy.accounting.rollup import HOURLY_COLUMNS, aggregate
from proxy.core.config import Settings
from proxy.events.writer import EventWriter
from proxy.store.db import connect, database_url, migrate
from proxy.store.db import rollups as sql
from proxy.store.db.connection import stop_embedded
from proxy.store.orgs import create_org

EVENTS = 20_000  # one hour's sample: 35 groups, ~50-150 buckets per latency histogram


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--groups", type=int, nargs="+", default=[100, 1000, 5000])
    args = parser.parse_args()
    settings = Settings.from_env()
    now = dt.datetime.now(dt.UTC)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0) - dt.timedelta(days=1)
    print("| groups | hourly rows sealed | whole seal | per hour sealed (writers wait) | per 1,000 hourly rows |")
    print("|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory(prefix="lectr-bench-") as tmp:
        url = settings.database_url or database_url(Settings(data_dir=Path(tmp)))
        try:
            with connect(url) as conn:
                migrate(conn)
                for groups in args.groups:
                    conn.execute("DELETE FROM rollup_hourly")  # only this round's rows
                    conn.execute("DELETE FROM rollup_daily")
                    org, _ = create_org(conn, f"seal-{uuid.uuid4().hex[:6]}")
                    rows = aggregate([EventWriter._finish(make_event(org.id, i)) for i in range(EVENTS)], now).hourly
                    copies = -(-groups // len(rows))
                    rest = [c for c in HOURLY_COLUMNS if c not in ("org_id", "hour", "feature")]
                    with conn.transaction():
                        conn.execute(sql._insert("rollup_hourly", HOURLY_COLUMNS, sql.HOURLY_KEY, sql._HOURLY_CONFLICT),
                                     (orjson.dumps(rows, default=sql._default).decode(),))
                        # The sample's hour becomes every hour of yesterday, under `copies` names per feature.
                        conn.execute(
                            f"INSERT INTO rollup_hourly (org_id, hour, feature, {', '.join(rest)})"  # noqa: S608
                            " SELECT r.org_id, %(midnight)s + h * interval '1 hour', r.feature || '-' || k,"
                            f" {', '.join('r.' + c for c in rest)}"
                            " FROM rollup_hourly r, generate_series(0, 23) h, generate_series(1, %(copies)s) k"
                            " WHERE r.org_id = %(org)s",
                            {"midnight": midnight, "copies": copies, "org": org.id},
                        )
                        conn.execute("DELETE FROM rollup_hourly WHERE hour >= %s", (midnight + dt.timedelta(days=1),))
                        conn.execute("UPDATE rollup_daily_sealed SET through = %s", (midnight,))
                    conn.execute("ANALYZE rollup_hourly")
                    (n,) = conn.execute("SELECT count(*) FROM rollup_hourly").fetchone() or (0,)
                    started = time.perf_counter()
                    sql.seal(conn, hours_per_transaction=1)
                    took = time.perf_counter() - started
                    print(f"| {groups:,} | {n:,} | {took * 1000:,.0f} ms | {took * 1000 / 24:,.0f} ms "
                          f"| {took * 1e6 / n:,.0f} ms |", flush=True)
        finally:
            stop_embedded(Path(tmp))


if __name__ == "__main__":
    main()
