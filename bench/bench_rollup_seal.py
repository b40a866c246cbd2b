"""The daily seal (`lectr_rollup_seal`, migration 010): how long it holds the writers, per day sealed.

    python bench/bench_rollup_seal.py [--groups 100 1000 5000] [--rounds 3]

Once a UTC day is over, the first writer to notice seals it: it rebuilds the day's `rollup_daily`
rows from its 24 hours of `rollup_hourly` rows, for every org, holding SHARE ROW EXCLUSIVE on both
tables (writers' upserts wait; they keep taking events). This builds yesterday's hours for
`--groups` groups with real histograms (one hour of `bench_writer` events aggregated as the writer
does, 35 groups, copied under new feature names and into each hour of the day by SQL), moves the
watermark back a day and times the seal, best of `--rounds`. Uses `DATABASE_URL`, else an
embedded Postgres in a temporary directory.
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
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    settings = Settings.from_env()
    yesterday = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    midnight = dt.datetime(yesterday.year, yesterday.month, yesterday.day, tzinfo=dt.UTC)
    print("| groups (this org) | hourly rows sealed (all orgs) | seal (best) | per 1,000 hourly rows |")
    print("|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory(prefix="lectr-bench-") as tmp:
        url = settings.database_url or database_url(Settings(data_dir=Path(tmp)))
        try:
            with connect(url) as conn:
                migrate(conn)
                for groups in args.groups:
                    org, _ = create_org(conn, f"seal-{uuid.uuid4().hex[:6]}")
                    rows = aggregate([EventWriter._finish(make_event(org.id, i)) for i in range(EVENTS)]).hourly
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
                        conn.execute("DELETE FROM rollup_hourly WHERE org_id = %s AND hour >= %s",
                                     (org.id, midnight + dt.timedelta(days=1)))
                    conn.execute("ANALYZE rollup_hourly")
                    (n,) = conn.execute("SELECT count(*) FROM rollup_hourly WHERE hour >= %s AND hour < %s",
                                        (midnight, midnight + dt.timedelta(days=1))).fetchone() or (0,)
                    best = float("inf")
                    for _ in range(args.rounds):
                        conn.execute("UPDATE rollup_daily_sealed SET through = %s", (yesterday,))
                        started = time.perf_counter()
                        sql.seal(conn)
                        best = min(best, time.perf_counter() - started)
                    print(f"| {groups:,} | {n:,} | {best * 1000:,.0f} ms | {best * 1e6 / n:,.0f} ms |", flush=True)
        finally:
            stop_embedded(Path(tmp))


if __name__ == "__main__":
    main()
