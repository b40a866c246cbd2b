"""Isolation between orgs: events, analytics, the CLI, routing rules and the dashboard's key lookup.

Two orgs send distinguishable traffic through the real proxy (their own features and models);
each org's view, by every route to the data, holds its own traffic and nothing of the other's.
The dashboard's own page-level isolation tests live in tests/dashboard.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from analytics import commands
from analytics.load import load_events
from analytics.load_rollups import load_rollups
from analytics.metrics import breakdown
from analytics.recommend import recommendations
from proxy.store.db import connect
from proxy.store.orgs import Org, OrgError, create_org, org_for_key, rotate_key
from proxy.store.rules import add_rule, list_rules, remove_rule, set_enabled, set_fallbacks
from tests.conftest import ProxyProcess
from tests.fakes import FakeProviders, wait_for
from tests.security.conftest import PROVIDER_KEY, rows, unique

REQUESTS = 24  # over the recommender's 20-request threshold


@pytest.fixture(scope="module")
def two_orgs(proxy: ProxyProcess, pg_url: str, fakes: FakeProviders) -> Iterator[dict[str, Any]]:
    """Org A: gpt-4o for features alpha-*; org B: llama 70B for features beta-*; both `classification`."""
    with connect(pg_url) as conn:
        a, key_a = create_org(conn, unique("iso-a"))
        b, key_b = create_org(conn, unique("iso-b"))
    tag = unique("t")
    plan = {
        "A": (a, key_a, [(f"alpha-search-{tag}", "gpt-4o"), (f"alpha-chat-{tag}", "gpt-4o-mini")]),
        "B": (b, key_b, [(f"beta-summary-{tag}", "llama-3.1-70b-versatile")]),
    }
    with httpx.Client(base_url=proxy.url, timeout=30) as client:
        for _, key, pairs in plan.values():
            for feature, model in pairs:
                for _ in range(REQUESTS):
                    response = client.post(
                        "/v1/chat/completions",
                        json={"model": model, "messages": [{"role": "user", "content": "label this"}]},
                        headers={
                            "X-Lectr-Key": key,
                            "Authorization": f"Bearer {PROVIDER_KEY}",
                            "X-Lectr-Feature": feature,
                            "X-Lectr-Task": "classification",
                        },
                    )
                    assert response.status_code == 200
    total = {a.id: 2 * REQUESTS, b.id: REQUESTS}
    with connect(pg_url) as conn:
        query = "SELECT count(*) FROM events WHERE org_id = %s"
        wait_for(lambda: all(conn.execute(query, (k,)).fetchone()[0] >= n for k, n in total.items()), timeout=30)
    yield {
        "A": {"org": a, "key": key_a, "features": {f for f, _ in plan["A"][2]}, "models": {m for _, m in plan["A"][2]}},
        "B": {"org": b, "key": key_b, "features": {f for f, _ in plan["B"][2]}, "models": {m for _, m in plan["B"][2]}},
    }


def _other(name: str) -> str:
    return "B" if name == "A" else "A"


def test_events_carry_the_org_of_the_key(two_orgs: dict[str, Any], db: Any) -> None:
    for name, org in two_orgs.items():
        stored = rows(db, "SELECT feature, model FROM events WHERE org_id = %s", (org["org"].id,))
        assert len(stored) == REQUESTS * len(org["features"])
        assert {r["feature"] for r in stored} == org["features"]
        assert {r["model"] for r in stored} == org["models"]
        other = two_orgs[_other(name)]
        assert not {r["feature"] for r in stored} & other["features"]
    # And from the other side: every row with A's features belongs to A.
    for org in two_orgs.values():
        owners = rows(db, "SELECT DISTINCT org_id FROM events WHERE feature = ANY(%s)", (list(org["features"]),))
        assert owners == [{"org_id": org["org"].id}]


def test_analytics_load_breakdown_and_recommendations_see_one_org(two_orgs: dict[str, Any], pg_url: str) -> None:
    now = dt.datetime.now(dt.UTC)
    for name, org in two_orgs.items():
        other = two_orgs[_other(name)]
        events = load_events(pg_url, org["org"].id, now - dt.timedelta(days=1), now + dt.timedelta(minutes=1))
        frame = events.collect()
        assert frame.height == REQUESTS * len(org["features"])
        assert set(frame["feature"].to_list()) == org["features"]
        assert set(frame["model"].to_list()) == org["models"]
        # The figures read the rollups the writer kept with those events: one org's too.
        rollups = load_rollups(pg_url, org["org"].id, now - dt.timedelta(days=1), now + dt.timedelta(minutes=1))
        features = breakdown(rollups).collect()
        assert set(features["feature"].to_list()) == org["features"]
        assert int(features["requests"].sum()) == frame.height
        cards = recommendations(rollups, 14.0)
        assert cards.height >= 1, f"org {name} should get a downgrade card for its classification traffic"
        assert set(cards["feature"].to_list()) <= org["features"]
        assert not set(cards["feature"].to_list()) & other["features"]
        assert set(cards["from_model"].to_list()) <= org["models"]


def test_report_and_recommend_commands_see_one_org(two_orgs: dict[str, Any], db: Any) -> None:
    for name, org in two_orgs.items():
        other = two_orgs[_other(name)]
        report = json.loads(commands.report(db, org["org"].name, days=7, as_json=True))
        assert {r["feature"] for r in report} == org["features"]
        assert sum(r["requests"] for r in report) == REQUESTS * len(org["features"])
        cards = json.loads(commands.recommend(db, org["org"].name, as_json=True))
        assert cards and {c["feature"] for c in cards} <= org["features"]
        assert not {c["feature"] for c in cards} & other["features"]
        text = commands.report(db, org["org"].name, days=7)
        assert not any(feature in text for feature in other["features"])


def test_lectr_cli_report_and_recommend_see_one_org(two_orgs: dict[str, Any], pg_url: str, tmp_path: Path) -> None:
    lectr = Path(sys.executable).parent / "lectr"
    env = {**os.environ, "DATABASE_URL": pg_url, "LECTR_DATA_DIR": str(tmp_path)}
    for name, org in two_orgs.items():
        other = two_orgs[_other(name)]
        for command in (
            ["report", "--org", org["org"].name, "--json"],
            ["recommend", "--org", org["org"].name, "--json"],
        ):
            done = subprocess.run([str(lectr), *command], env=env, capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, done.stderr
            found = {item["feature"] for item in json.loads(done.stdout)}
            assert found and found <= org["features"], (command, found)
            assert not any(feature in done.stdout for feature in other["features"])


def test_routing_rules_are_scoped_to_their_org(two_orgs: dict[str, Any], db: Any) -> None:
    a, b = two_orgs["A"]["org"], two_orgs["B"]["org"]
    rule_a = add_rule(db, a.name, to_model="gpt-4o-mini", feature=next(iter(two_orgs["A"]["features"])))
    assert [r["id"] for r in list_rules(db, a.name)] == [rule_a]
    assert list_rules(db, b.name) == []
    with pytest.raises(OrgError):
        remove_rule(db, b.name, rule_a)
    with pytest.raises(OrgError):
        set_enabled(db, b.name, rule_a, False)
    set_fallbacks(db, b.name, ["llama-3.1-8b-instant"])
    assert rows(db, "SELECT fallbacks FROM orgs WHERE id = %s", (a.id,)) == [{"fallbacks": []}]
    assert [r["enabled"] for r in list_rules(db, a.name)] == [True]  # B's attempts changed nothing
    remove_rule(db, a.name, rule_a)
    set_fallbacks(db, b.name, [])


def test_dashboard_sign_in_lookup_returns_only_the_keys_org(two_orgs: dict[str, Any], db: Any) -> None:
    for org in two_orgs.values():
        found = org_for_key(db, org["key"])
        assert isinstance(found, Org) and found.id == org["org"].id
    key_a = two_orgs["A"]["key"]
    for wrong in ("", " ", key_a + " ", " " + key_a, key_a.upper(), key_a[:-1], key_a + "x", "lc_key_" + "A" * 32):
        assert org_for_key(db, wrong) is None, repr(wrong)
    # A rotated org: its old key signs in nowhere, the new one to that org only.
    c, old = create_org(db, unique("iso-c"))
    new = rotate_key(db, c.name)
    assert org_for_key(db, old) is None
    rotated = org_for_key(db, new)
    assert rotated is not None and rotated.id == c.id
