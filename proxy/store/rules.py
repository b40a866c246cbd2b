"""Routing rules in Postgres: add, list, remove, org fallbacks (CLI and dashboard use these).

Every operation is scoped to one org by name: a rule id of another org is "not found".
"""

from __future__ import annotations

from typing import Any

import psycopg

from proxy.core.providers import PROVIDERS, parse_target
from proxy.store.orgs import OrgError, get_org

_COLUMNS = (
    "id",
    "priority",
    "enabled",
    "match_feature",
    "match_task",
    "match_model",
    "match_provider",
    "to_model",
    "to_provider",
    "fallbacks",
)


def _check_target(org_azure: str | None, provider: str | None, what: str) -> None:
    if provider is None:
        return
    if provider not in PROVIDERS:
        raise OrgError(f"{what}: unknown provider {provider!r} (one of {', '.join(PROVIDERS)})")
    if provider == "azure" and not org_azure:
        raise OrgError(f"{what}: the org has no Azure endpoint; set one with `lectr org azure` first")


def add_rule(
    conn: psycopg.Connection[Any],
    org_name: str,
    *,
    to_model: str,
    feature: str | None = None,
    task: str | None = None,
    model: str | None = None,
    provider: str | None = None,
    to_provider: str | None = None,
    priority: int = 100,
    fallbacks: list[str] | None = None,
    enabled: bool = True,
) -> int:
    """Add a rule; return its id. Refuses targets the org cannot reach."""
    org = get_org(conn, org_name)
    to_model = to_model.strip()
    if not to_model:
        raise OrgError("a rule needs --to-model")
    provider = provider.strip().lower() if provider else None
    to_provider = to_provider.strip().lower() if to_provider else None
    if provider is not None and provider not in PROVIDERS:
        raise OrgError(f"condition: unknown provider {provider!r} (one of {', '.join(PROVIDERS)})")
    _check_target(org.azure_endpoint, parse_target(to_model, to_provider).provider, "target")
    for fallback in fallbacks or []:
        _check_target(org.azure_endpoint, parse_target(fallback).provider, f"fallback {fallback!r}")
    row = conn.execute(
        "INSERT INTO routing_rules (org_id, priority, enabled, match_feature, match_task, match_model,"
        " match_provider, to_model, to_provider, fallbacks) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
        " RETURNING id",
        (
            org.id,
            priority,
            enabled,
            feature or None,
            task or None,
            model or None,
            provider,
            to_model,
            to_provider,
            list(fallbacks or []),
        ),
    ).fetchone()
    assert row is not None
    return int(row[0])


def list_rules(conn: psycopg.Connection[Any], org_name: str) -> list[dict[str, Any]]:
    org = get_org(conn, org_name)
    cur = conn.execute(
        f"SELECT {', '.join(_COLUMNS)} FROM routing_rules WHERE org_id = %s ORDER BY priority, id",  # type: ignore[arg-type]
        (org.id,),
    )
    return [dict(zip(_COLUMNS, row, strict=True)) for row in cur.fetchall()]


def remove_rule(conn: psycopg.Connection[Any], org_name: str, rule_id: int) -> None:
    org = get_org(conn, org_name)
    cur = conn.execute("DELETE FROM routing_rules WHERE org_id = %s AND id = %s", (org.id, rule_id))
    if cur.rowcount == 0:
        raise OrgError(f"org {org_name!r} has no routing rule {rule_id}")


def set_enabled(conn: psycopg.Connection[Any], org_name: str, rule_id: int, enabled: bool) -> None:
    org = get_org(conn, org_name)
    cur = conn.execute(
        "UPDATE routing_rules SET enabled = %s WHERE org_id = %s AND id = %s", (enabled, org.id, rule_id)
    )
    if cur.rowcount == 0:
        raise OrgError(f"org {org_name!r} has no routing rule {rule_id}")


_CONDITIONS = (
    ("feature", "match_feature"),
    ("task", "match_task"),
    ("model", "match_model"),
    ("provider", "match_provider"),
)


def rule_parts(rule: dict[str, Any]) -> tuple[list[tuple[str, str]], str, list[str]]:
    """A rule (as `list_rules` gives it) for people: its conditions as (label, value), its target
    as `provider:model` (or `model`) and its fallbacks; the CLI and the dashboard lay them out."""
    when = [(label, rule[column]) for label, column in _CONDITIONS if rule[column]]
    target = f"{rule['to_provider'] + ':' if rule['to_provider'] else ''}{rule['to_model']}"
    return when, target, list(rule["fallbacks"] or [])


def get_fallbacks(conn: psycopg.Connection[Any], org_name: str) -> list[str]:
    """The org's default fallbacks (empty when none)."""
    org = get_org(conn, org_name)
    row = conn.execute("SELECT fallbacks FROM orgs WHERE id = %s", (org.id,)).fetchone()
    return list(row[0]) if row and row[0] else []


def set_fallbacks(conn: psycopg.Connection[Any], org_name: str, fallbacks: list[str]) -> None:
    """The org's default fallbacks, for requests no rule matches."""
    org = get_org(conn, org_name)
    for fallback in fallbacks:
        _check_target(org.azure_endpoint, parse_target(fallback).provider, f"fallback {fallback!r}")
    conn.execute("UPDATE orgs SET fallbacks = %s WHERE id = %s", (list(fallbacks), org.id))


def load_all(conn: psycopg.Connection[Any]) -> tuple[list[tuple[Any, ...]], dict[int, list[str]]]:
    """Every org's rules (org_id first) and non-empty default fallbacks, for the in-memory directory."""
    rules = conn.execute(
        f"SELECT org_id, {', '.join(_COLUMNS)} FROM routing_rules ORDER BY org_id"  # type: ignore[arg-type]
    ).fetchall()
    fallbacks = {row[0]: list(row[1]) for row in conn.execute("SELECT id, fallbacks FROM orgs WHERE fallbacks <> '{}'")}
    return rules, fallbacks
