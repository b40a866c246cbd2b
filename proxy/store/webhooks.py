"""An org's alert webhooks in Postgres: add (URL checked against SPEC §9's rule), list, remove,
and the delivery log the dashboard shows. Every operation is scoped to one org by name.
"""

from __future__ import annotations

from typing import Any

import psycopg

from proxy.core.addresses import WebhookRefused, webhook_url
from proxy.store.orgs import OrgError, get_org

FORMATS = ("json", "slack")


def add_webhook(
    conn: psycopg.Connection[Any], org_name: str, url: str, fmt: str = "json", *, allow_private: bool = False
) -> int:
    """Add a webhook; return its id. `OrgError` for an unknown org, format, or a URL the rule refuses."""
    org = get_org(conn, org_name)
    if fmt not in FORMATS:
        raise OrgError(f"--format must be json or slack, not {fmt!r}")
    try:
        checked = webhook_url(url, allow_private)
    except WebhookRefused as exc:
        raise OrgError(str(exc)) from None
    row = conn.execute(
        "INSERT INTO alert_webhooks (org_id, url, format) VALUES (%s, %s, %s) RETURNING id", (org.id, checked, fmt)
    ).fetchone()
    assert row is not None
    return int(row[0])


def list_webhooks(conn: psycopg.Connection[Any], org_name: str) -> list[dict[str, Any]]:
    org = get_org(conn, org_name)
    rows = conn.execute(
        "SELECT id, url, format, created_at FROM alert_webhooks WHERE org_id = %s ORDER BY id", (org.id,)
    ).fetchall()
    return [{"id": r[0], "url": r[1], "format": r[2], "created_at": r[3].isoformat()} for r in rows]


def remove_webhook(conn: psycopg.Connection[Any], org_name: str, webhook_id: int) -> None:
    org = get_org(conn, org_name)
    cur = conn.execute("DELETE FROM alert_webhooks WHERE org_id = %s AND id = %s", (org.id, webhook_id))
    if cur.rowcount == 0:
        raise OrgError(f"org {org_name!r} has no webhook {webhook_id}")


def delivery_log(conn: psycopg.Connection[Any], org_id: int, limit: int = 200) -> list[dict[str, Any]]:
    """The org's latest delivery attempts, newest first: when, which alert, which webhook, outcome."""
    rows = conn.execute(
        "SELECT t.at, a.kind, a.payload->>'title', d.webhook_id, d.status, t.outcome, t.status_code, t.error,"
        " t.duration_ms, d.attempts"
        " FROM alert_attempts t JOIN alert_deliveries d ON d.id = t.delivery_id JOIN alerts a ON a.id = d.alert_id"
        " WHERE t.org_id = %s ORDER BY t.at DESC, t.id DESC LIMIT %s",
        (org_id, limit),
    ).fetchall()
    keys = ("at", "kind", "title", "webhook_id", "delivery_status", "outcome", "status_code", "error",
            "duration_ms", "attempts")
    return [dict(zip(keys, row, strict=True)) for row in rows]


__all__ = ["FORMATS", "add_webhook", "delivery_log", "list_webhooks", "remove_webhook"]
