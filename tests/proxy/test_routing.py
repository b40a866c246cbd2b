"""Rule matching, priority and fallbacks as plain functions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from proxy.pipeline.routing import MAX_ATTEMPTS, OrgRouting, Target, build, parse_target
from proxy.store.orgs import OrgError, set_azure
from proxy.store.rules import add_rule, get_fallbacks, list_rules, remove_rule, rule_parts, set_fallbacks


def rule(
    rid: int,
    priority: int = 100,
    feature: str | None = None,
    task: str | None = None,
    model: str | None = None,
    provider: str | None = None,
    to_model: str = "gpt-4o-mini",
    to_provider: str | None = None,
    fallbacks: list[str] | None = None,
    enabled: bool = True,
) -> tuple[Any, ...]:
    return (rid, priority, enabled, feature, task, model, provider, to_model, to_provider, fallbacks or [])


def test_parse_target() -> None:
    assert parse_target("gpt-4o-mini") == Target("openai", "gpt-4o-mini")
    assert parse_target("anthropic:claude-3-5-haiku-latest") == Target("anthropic", "claude-3-5-haiku-latest")
    assert parse_target("meta-llama/llama-4-scout-17b") == Target("groq", "meta-llama/llama-4-scout-17b")
    assert parse_target("my-deploy", "azure") == Target("azure", "my-deploy")


@pytest.mark.parametrize(
    ("feature", "task", "model", "provider", "expected"),
    [
        ("classifier", None, "gpt-4o", "openai", 1),
        ("classifier", "classification", "gpt-4o", "openai", 1),
        ("chat", "classification", "gpt-4o", "openai", 2),
        ("chat", None, "claude-3-opus", "anthropic", 3),
        ("chat", None, "gpt-4o", "openai", None),
    ],
)
def test_first_match_by_priority_wins(
    feature: str, task: str | None, model: str, provider: str, expected: int | None
) -> None:
    routing = build(
        [
            rule(3, priority=50, provider="anthropic", to_model="claude-3-5-haiku-latest"),
            rule(2, priority=20, task="classification", to_model="gpt-4o-mini"),
            rule(1, priority=10, feature="classifier", model="gpt-4o", to_model="gpt-4o-mini"),
            rule(4, priority=1, feature="chat", enabled=False),
        ],
        None,
    )
    plan = routing.plan(feature, task, model, provider)
    assert (plan.rule_id if plan else None) == expected


def test_ties_break_by_id_and_conditions_combine() -> None:
    routing = build([rule(9, feature="a", task="t", to_model="m9"), rule(5, feature="a", to_model="m5")], None)
    plan = routing.plan("a", "t", "gpt-4o", "openai")
    assert plan is not None and plan.rule_id == 5 and plan.targets == (Target("openai", "m5"),)
    assert routing.plan("b", "t", "gpt-4o", "openai") is None


def test_fallbacks_from_rule_or_org_capped() -> None:
    routing = build(
        [rule(1, feature="a", fallbacks=["gpt-4o", "gpt-4.1-mini", "gpt-4.1-nano", "o3-mini"])],
        ["groq:llama-3.1-8b-instant"],
    )
    plan = routing.plan("a", None, "gpt-4o", "openai")
    assert plan is not None and len(plan.targets) == MAX_ATTEMPTS
    assert plan.targets[:2] == (Target("openai", "gpt-4o-mini"), Target("openai", "gpt-4o"))
    default = routing.plan("b", None, "gpt-4o", "openai")
    assert default is not None and default.rule_id is None
    assert default.targets == (Target("openai", "gpt-4o"), Target("groq", "llama-3.1-8b-instant"))


def test_empty_routing_changes_nothing() -> None:
    assert OrgRouting().plan("a", "b", "gpt-4o", "openai") is None


def test_rules_store_is_scoped_to_the_org(db: Any, new_org: Any) -> None:
    a, _ = new_org("route-a")
    b, _ = new_org("route-b")
    rid = add_rule(db, a.name, feature="x", to_model="gpt-4o-mini", fallbacks=["gpt-4o"])
    assert [r["id"] for r in list_rules(db, a.name)] == [rid] and list_rules(db, b.name) == []
    with pytest.raises(OrgError):
        remove_rule(db, b.name, rid)  # another org's rule is "not found"
    remove_rule(db, a.name, rid)
    assert list_rules(db, a.name) == []


def test_rules_and_fallbacks_read_back_for_people(db: Any, new_org: Any) -> None:
    org, _ = new_org("route-read")
    add_rule(
        db,
        org.name,
        feature="summary",
        task="classification",
        to_model="claude-3-5-haiku-latest",
        to_provider="anthropic",
        fallbacks=["gpt-4o-mini", "groq:llama-3.1-8b-instant"],
    )
    add_rule(db, org.name, to_model="gpt-4o-mini", priority=5)
    first, second = list_rules(db, org.name)
    assert rule_parts(first) == ([], "gpt-4o-mini", [])
    assert rule_parts(second) == (
        [("feature", "summary"), ("task", "classification")],
        "anthropic:claude-3-5-haiku-latest",
        ["gpt-4o-mini", "groq:llama-3.1-8b-instant"],
    )
    assert get_fallbacks(db, org.name) == []
    set_fallbacks(db, org.name, ["gpt-4o-mini", "gemini-1.5-flash"])
    assert get_fallbacks(db, org.name) == ["gpt-4o-mini", "gemini-1.5-flash"]
    with pytest.raises(OrgError):
        get_fallbacks(db, "no-such-org-anywhere")


def test_lectr_route_commands(db: Any, new_org: Any, pg_url: str, tmp_path: Path) -> None:
    org, _ = new_org("route-cli")
    env = {**os.environ, "DATABASE_URL": pg_url, "LECTR_DATA_DIR": str(tmp_path)}

    def lectr(*args: str) -> str:
        command = [str(Path(sys.executable).parent / "lectr"), "route", *args]
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout

    rid = int(lectr("add", org.name, "--feature", "summary", "--to-model", "gpt-4o-mini", "--fallback", "gpt-4o"))
    listed = lectr("list", org.name)
    assert f"{rid:>5}   100 yes  feature=summary" in listed and "→ gpt-4o-mini (gpt-4o)" in listed
    assert [r["id"] for r in json.loads(lectr("list", org.name, "--json"))] == [rid]
    fallbacks = ["claude-3-5-haiku-latest", "gpt-4o-mini"]
    assert "claude-3-5-haiku-latest, gpt-4o-mini" in lectr("fallbacks", org.name, *fallbacks)
    assert get_fallbacks(db, org.name) == fallbacks
    lectr("rm", org.name, str(rid))
    assert "has no routing rules" in lectr("list", org.name)


def test_guard_rails(db: Any, new_org: Any) -> None:
    org, _ = new_org("route-guard")
    with pytest.raises(OrgError, match="Azure endpoint"):
        add_rule(db, org.name, to_model="my-deploy", to_provider="azure")
    with pytest.raises(OrgError, match="Azure endpoint"):
        add_rule(db, org.name, to_model="gpt-4o", fallbacks=["azure:my-deploy"])
    with pytest.raises(OrgError, match="unknown provider"):
        add_rule(db, org.name, to_model="x", to_provider="openia")
    set_azure(db, org.name, "https://res.openai.azure.com")
    assert add_rule(db, org.name, to_model="my-deploy", to_provider="azure") > 0
