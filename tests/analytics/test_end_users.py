"""End users (SPEC §5): the daily end-user rollup plus raw edges give exactly the raw figures."""

from __future__ import annotations

import datetime as dt
import json
import random
import subprocess
import sys
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import polars as pl
import psycopg
import pytest

from analytics.end_users import UNTAGGED, load_end_users, split_days, top_end_users
from proxy.store.db.rollups import rebuild_org

COLUMNS = ("id", "org_id", "created_at", "provider", "model", "feature", "endpoint", "status_code", "error_type",
           "latency_ms", "input_tokens", "output_tokens", "cached_input_tokens", "cost_usd", "end_user")
START = dt.datetime(2026, 3, 2, tzinfo=dt.UTC)



def traffic(org_id: int, seed: int = 5) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows = []
    for _ in range(3000):
        failed = rng.random() < 0.1
        priced = not failed and rng.random() < 0.9
        rows.append({
            "id": uuid.uuid4(), "org_id": org_id, "provider": "openai", "model": "gpt-4o",
            "endpoint": "chat/completions",
            "created_at": START + dt.timedelta(seconds=rng.uniform(0, 6 * 86400)),
            "feature": rng.choice(["chat", "search", None]),
            "end_user": rng.choice([f"user-{i}" for i in range(12)] + [None]),
            "status_code": 500 if failed else 200, "error_type": "upstream_error" if failed else None,
            "latency_ms": rng.uniform(50, 900) if rng.random() < 0.95 else None,
            "input_tokens": None if failed else rng.randint(1, 4000),
            "output_tokens": None if failed else rng.randint(0, 800),
            "cached_input_tokens": None if failed else rng.randint(0, 10),
            "cost_usd": Decimal(rng.randint(1, 10**7)) / Decimal(10**10) if priced else None,
        })
    return rows


@pytest.fixture
def org_with_traffic(db: psycopg.Connection[Any], new_org: Any) -> tuple[int, list[dict[str, Any]]]:
    org, _ = new_org("endusers")
    rows = traffic(org.id)
    with db.cursor() as cur, cur.copy(f"COPY events ({', '.join(COLUMNS)}) FROM STDIN") as copy:
        for r in rows:
            copy.write_row([r.get(c) for c in COLUMNS])
    rebuild_org(db, org.id)  # the rollups, as `lectr rollup rebuild` computes them
    return org.id, rows


def raw_top(rows: list[dict[str, Any]], start: dt.datetime, end: dt.datetime, feature: Any = "all") -> pl.DataFrame:
    """The same figures straight from the rows, in Python: the expected answer."""
    kept = [r for r in rows if start <= r["created_at"] < end and r["end_user"] is not None
            and (feature == "all" or r["feature"] == feature)]
    by_user: dict[str, dict[str, Any]] = {}
    for r in kept:
        u = by_user.setdefault(r["end_user"], {"end_user": r["end_user"], "requests": 0, "errors": 0,
                                               "input_tokens": 0, "output_tokens": 0, "cost": Decimal(0)})
        u["requests"] += 1
        u["errors"] += r["status_code"] >= 400
        u["input_tokens"] += r["input_tokens"] or 0
        u["output_tokens"] += r["output_tokens"] or 0
        u["cost"] += r["cost_usd"] or 0
    return pl.DataFrame(list(by_user.values())).sort("end_user")


def test_whole_days_and_edges_are_split_at_utc_midnight() -> None:
    start, end = START + dt.timedelta(hours=5, minutes=3), START + dt.timedelta(days=3, hours=2)
    days, edges = split_days(start, end)
    assert days == ((START + dt.timedelta(days=1)).date(), (START + dt.timedelta(days=3)).date())
    assert edges == [(start, START + dt.timedelta(days=1)), (START + dt.timedelta(days=3), end)]
    two_days = START + dt.timedelta(days=2)
    assert split_days(START, two_days) == ((START.date(), two_days.date()), [])
    inside = (START + dt.timedelta(hours=1), START + dt.timedelta(hours=20))
    assert split_days(*inside) == (None, [inside])


@pytest.mark.parametrize(
    ("start_hours", "end_hours"), [(0, 144), (5.5, 130.25), (30.1, 31.7), (-10, 200), (24, 72)]
)
def test_figures_equal_the_raw_events_exactly(
    pg_url: str, org_with_traffic: tuple[int, list[dict[str, Any]]], start_hours: float, end_hours: float
) -> None:
    org_id, rows = org_with_traffic
    start, end = START + dt.timedelta(hours=start_hours), START + dt.timedelta(hours=end_hours)
    got = top_end_users(load_end_users(pg_url, org_id, start, end), limit=None).collect().sort("end_user")
    want = raw_top(rows, start, end)
    assert got["end_user"].to_list() == want["end_user"].to_list()
    for column in ("requests", "errors", "input_tokens", "output_tokens"):
        assert got[column].to_list() == want[column].to_list(), column
    for mine, exact in zip(got["cost_usd"].to_list(), want["cost"].to_list(), strict=True):
        assert mine == pytest.approx(float(exact), rel=1e-12, abs=1e-12)
    assert got["share"].sum() == pytest.approx(1.0)


def test_ranked_by_cost_and_narrowed_to_a_feature(
    pg_url: str, org_with_traffic: tuple[int, list[dict[str, Any]]]
) -> None:
    org_id, rows = org_with_traffic
    start, end = START + dt.timedelta(hours=7), START + dt.timedelta(days=5, hours=3)
    top = top_end_users(load_end_users(pg_url, org_id, start, end), limit=5).collect()
    costs = top["cost_usd"].to_list()
    assert len(top) == 5 and costs == sorted(costs, reverse=True)
    assert set(top["features"].to_list()) <= {1, 2, 3}
    only_search = top_end_users(load_end_users(pg_url, org_id, start, end, features=["search"]), limit=None).collect()
    want = raw_top(rows, start, end, feature="search")
    assert only_search.sort("end_user")["requests"].to_list() == want["requests"].to_list()
    untagged = top_end_users(load_end_users(pg_url, org_id, start, end, features=[None]), limit=None).collect()
    assert untagged["requests"].sum() == raw_top(rows, start, end, feature=None)["requests"].sum()
    per_feature = top_end_users(load_end_users(pg_url, org_id, start, end), by_feature=True, limit=3).collect()
    assert set(per_feature["feature"].to_list()) == {"chat", "search", UNTAGGED}
    assert per_feature.group_by("feature").len()["len"].max() == 3


def test_cli_report_by_end_user(pg_url: str, db: psycopg.Connection[Any], new_org: Any, tmp_path: Path) -> None:
    org, _ = new_org("enduser-cli")
    now = dt.datetime.now(dt.UTC)
    rows = [
        {"id": uuid.uuid4(), "org_id": org.id, "created_at": now - dt.timedelta(days=d, minutes=5),
         "provider": "openai", "model": "gpt-4o", "feature": feature, "endpoint": "chat/completions",
         "status_code": 200,
         "latency_ms": 100.0, "input_tokens": 10, "output_tokens": 5, "cost_usd": Decimal(cost), "end_user": user}
        for d, user, feature, cost in [
            (0, "big", "chat", "2.5"), (2, "big", "search", "1.0"), (1, "small", "chat", "0.5"),
            (10, "old", "chat", "9"),
        ]
    ]
    with db.cursor() as cur, cur.copy(f"COPY events ({', '.join(COLUMNS)}) FROM STDIN") as copy:
        for r in rows:
            copy.write_row([r.get(c) for c in COLUMNS])
    rebuild_org(db, org.id)  # the rollups, as `lectr rollup rebuild` computes them
    lectr = str(Path(sys.executable).parent / "lectr")
    env = {"DATABASE_URL": pg_url, "PATH": "/usr/bin:/bin", "LECTR_DATA_DIR": str(tmp_path)}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([lectr, "report", "--org", org.name, *args], env=env, capture_output=True, text=True,
                              timeout=60)

    done = run("--by", "end-user", "--json")
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert [(r["end_user"], r["requests"], r["cost_usd"], r["features"]) for r in found] == [
        ("big", 2, 3.5, 2), ("small", 1, 0.5, 1)
    ]
    chat = json.loads(run("--by", "end-user", "--feature", "chat", "--json").stdout)
    assert [(r["end_user"], r["cost_usd"]) for r in chat] == [("big", 2.5), ("small", 0.5)]
    text = run("--by", "end-user").stdout
    assert "big" in text and "$3.50" in text and "old" not in text
    refused = run("--feature", "chat")
    assert refused.returncode != 0 and "--by end-user" in refused.stderr
