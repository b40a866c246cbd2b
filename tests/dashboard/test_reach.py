"""Raw events dropped by retention, rollups kept: the figures still count every request and the
dashboard says how far back the request log (raw events) reaches."""

from __future__ import annotations

import datetime as dt
import uuid

from dashboard import format as fmt
from proxy.store.db import connect
from proxy.store.orgs import create_org
from tests.dashboard.conftest import SeededOrg, insert_events, open_page, sign_in
from tests.rollups_sql import refill


def test_request_log_reach_after_raw_retention(app_env: None, pg_url: str, end: dt.datetime) -> None:
    with connect(pg_url) as conn:
        org, key = create_org(conn, f"reach-{uuid.uuid4().hex[:8]}")
        rows = [{"created_at": end - dt.timedelta(hours=3 + 6 * i), "provider": "openai", "model": "gpt-4o",
                 "feature": "chat", "status_code": 200, "latency_ms": 300.0, "cost_usd": 0.01}
                for i in range(40)]  # 10 days of traffic
        insert_events(conn, org.id, rows)
        refill(conn, org.id)
        cutoff = end - dt.timedelta(days=4)
        conn.execute("DELETE FROM events WHERE org_id = %s AND created_at < %s", (org.id, cutoff))
        oldest = conn.execute("SELECT min(created_at) FROM events WHERE org_id = %s", (org.id,)).fetchone()[0]  # type: ignore[index]
    seeded = SeededOrg(org.id, org.name, key)

    at = open_page(sign_in(seeded.key), "overview", "30d")
    assert next(m.value for m in at.metric if m.label == "Requests") == fmt.count(40)  # every request, from rollups
    captions = "\n".join(c.value for c in at.caption)
    assert "hourly rollups kept since" in captions and f"{oldest:%Y-%m-%d %H:%M}" in captions

    at = open_page(at, "requests", "30d")
    captions = "\n".join(c.value for c in at.caption)
    assert f"The request log reaches back to {oldest:%Y-%m-%d %H:%M} UTC" in captions
    assert "16 matching requests" in captions  # the log lists only the raw events left

    at = open_page(at, "overview", "24h")  # a period within the raw events: nothing to say
    assert "hourly rollups kept since" not in "\n".join(c.value for c in at.caption)
