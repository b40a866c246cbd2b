"""Alerts: the webhook URL rule, the CLI, payloads, retries, thresholds once, anomaly episodes.

Real parts: Postgres, a real HTTP receiver (tests/receiver.py), our transport; the sender
(`Alerter`) runs in-process here with short intervals (the multi-worker election and the proxy
are in tests/test_budgets_e2e.py).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import trio

from proxy.accounting.record import COLUMNS, Event, new_id
from proxy.alerts.sender import Alerter, send_test
from proxy.core.addresses import WebhookRefused, webhook_url
from proxy.core.config import Settings
from proxy.pipeline.spend import BudgetTracker
from proxy.store.budgets import add_budget
from proxy.store.db import ensure_partitions
from proxy.store.db.rollups import rebuild_org
from proxy.store.orgs import OrgError
from proxy.store.webhooks import add_webhook, delivery_log
from tests.conftest import fresh_database
from tests.receiver import Receiver

UTC = dt.UTC
LECTR = str(Path(sys.executable).parent / "lectr")


@pytest.fixture(scope="module")
def pg_url(pg_server_url: str) -> Iterator[str]:
    """A database of this module's own: its alert senders compete with no proxy of other tests."""
    yield from fresh_database(pg_server_url)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver().start()
    yield server
    server.stop()


def public(host: str, port: int) -> list[str]:
    return {"hooks.slack.com": ["3.5.6.7"], "inside.example": ["10.1.2.3"], "mixed.example": ["8.8.8.8", "127.0.0.1"],
            "meta.example": ["169.254.169.254"]}[host]


@pytest.mark.parametrize(
    ("url", "allow_private", "refused"),
    [
        ("https://hooks.slack.com/services/T0/B0/secret", False, None),
        ("https://8.8.8.8:8443/hook?x=1", False, None),
        ("http://hooks.slack.com/services/T0/B0/secret", False, "http://"),
        ("https://127.0.0.1/hook", False, "loopback"),
        ("https://[::1]/hook", False, "loopback"),
        ("https://169.254.169.254/latest", False, "metadata"),
        ("https://10.0.0.8/hook", False, "private"),
        ("https://inside.example/hook", False, "private"),  # a name that resolves inside
        ("https://mixed.example/hook", False, "private"),  # one inside address is enough
        ("https://meta.example/hook", False, "metadata"),
        ("https://[::ffff:127.0.0.1]/hook", False, "loopback"),
        ("https://user:pw@hooks.slack.com/x", False, "user info"),
        ("https://hooks.slack.com/x#frag", False, "fragment"),
        ("ftp://hooks.slack.com/x", False, "http(s)"),
        ("https://hooks.slack.com:0/x", False, "port"),
        ("", False, "empty"),
        ("http://127.0.0.1:9/hook", True, None),  # the operator allows private upstreams
        ("http://localhost:9/hook", True, None),
    ],
)
def test_webhook_url_rule(url: str, allow_private: bool, refused: str | None) -> None:
    if refused is None:
        assert webhook_url(url, allow_private, resolve=public) == url
        return
    with pytest.raises(WebhookRefused) as exc:
        webhook_url(url, allow_private, resolve=public)
    assert refused in str(exc.value) and "LECTR_ALLOW_PRIVATE_UPSTREAMS" in str(exc.value)
    if "secret" in url:
        assert "secret" not in str(exc.value)  # the URL (a Slack token) is never repeated


def lectr(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([LECTR, *args], env=env, capture_output=True, text=True, timeout=120)


def cli_env(pg_url: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, "DATABASE_URL": pg_url, "LECTR_DATA_DIR": str(tmp_path), **extra}
    env.pop("LECTR_ALLOW_PRIVATE_UPSTREAMS", None)
    return {**env, **extra}


def test_cli_webhooks_and_test_alert_json_and_slack(
    db: Any, new_org: Any, pg_url: str, tmp_path: Path, receiver: Receiver
) -> None:
    org, key = new_org("alert-cli")
    strict = cli_env(pg_url, tmp_path)
    done = lectr(strict, "alert", "webhook", org.name, "--url", f"{receiver.url}/json")
    assert done.returncode == 2 and "refused" in done.stderr and "LECTR_ALLOW_PRIVATE_UPSTREAMS" in done.stderr
    loose = cli_env(pg_url, tmp_path, LECTR_ALLOW_PRIVATE_UPSTREAMS="1")
    ids = []
    for path, fmt in (("/json", "json"), ("/slack", "slack")):
        done = lectr(loose, "alert", "webhook", org.name, "--url", f"{receiver.url}{path}", "--format", fmt)
        assert done.returncode == 0, done.stderr
        ids.append(int(done.stdout.strip().splitlines()[-1]))
    listed = json.loads(lectr(loose, "alert", "list", org.name, "--json").stdout)
    assert [(h["id"], h["format"]) for h in listed] == [(ids[0], "json"), (ids[1], "slack")]

    done = lectr(loose, "alert", "test", org.name)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("delivered (HTTP 200") == 2
    [generic] = receiver.on("/json")
    payload = generic.json()
    assert generic.headers["content-type"] == "application/json"
    assert payload["type"] == "lectr.alert" and payload["kind"] == "test" and payload["org"] == org.name
    assert isinstance(payload["alert_id"], int) and payload["budget"] is None and payload["created_at"].endswith("Z")
    [slack] = receiver.on("/slack")
    message = slack.json()
    assert set(message) == {"text", "blocks"} and "Test alert from Lectr" in message["text"]
    assert message["blocks"][0]["text"]["type"] == "mrkdwn"
    for delivered in receiver.received:
        assert key.encode() not in delivered.body  # never the org key
    log = delivery_log(db, org.id)
    assert [(e["outcome"], e["status_code"], e["kind"]) for e in log] == [("delivered", 200, "test")] * 2

    receiver.status = 500
    done = lectr(loose, "alert", "test", org.name)
    assert done.returncode == 1 and done.stdout.count("NOT delivered (the receiver answered HTTP 500)") == 2
    assert [e["outcome"] for e in delivery_log(db, org.id)][:2] == ["failed", "failed"]


def test_the_address_is_checked_again_when_connecting(db: Any, new_org: Any, receiver: Receiver) -> None:
    """A URL stored before the rule (or by hand) that points inside is refused at connect."""
    org, _ = new_org("alert-ssrf")
    port = receiver.url.rsplit(":", 1)[1]
    db.execute("INSERT INTO alert_webhooks (org_id, url, format) VALUES (%s, %s, 'json')",
               (org.id, f"https://localhost:{port}/inside"))
    db.execute("INSERT INTO alert_webhooks (org_id, url, format) VALUES (%s, %s, 'json')",
               (org.id, f"http://127.0.0.1:{port}/plain"))
    outcomes = send_test(db, org.name, Settings(alert_timeout=2))
    errors = sorted(o.error or "" for o in outcomes)
    assert not any(o.delivered for o in outcomes) and receiver.attempts == 0
    assert "loopback" in errors[1] and "not https://" in errors[0]
    with pytest.raises(OrgError, match="refused"):
        add_webhook(db, org.name, f"https://localhost:{port}/inside")


def settings(**overrides: Any) -> Settings:
    base: dict[str, Any] = dict(allow_private_upstreams=True, alert_check_seconds=0.1, alert_election_seconds=0.1,
                                alert_backoff_seconds=0.2, alert_timeout=2.0, anomaly_check_seconds=3600)
    return Settings(**{**base, **overrides})


def rollup(db: Any, org_id: int, cost: float, feature: str | None = None, hour: dt.datetime | None = None) -> None:
    hour = hour or dt.datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    db.execute(
        "INSERT INTO rollup_hourly (org_id, hour, feature, provider, model, requests, cost_usd)"
        " VALUES (%s, %s, %s, 'openai', 'gpt-4o', 1, %s)",
        (org_id, hour, feature, Decimal(str(cost))),
    )


async def wait_until(check: Any, timeout: float = 15.0) -> None:
    with trio.fail_after(timeout):
        while not await trio.to_thread.run_sync(check):
            await trio.sleep(0.05)


async def test_thresholds_alert_once_and_retries_back_off_until_delivered(
    db: Any, new_org: Any, pg_url: str, receiver: Receiver
) -> None:
    org, _ = new_org("alert-budget")
    add_webhook(db, org.name, f"{receiver.url}/hook", "json", allow_private=True)
    bid = add_budget(db, org.name, limit_usd=10, period="month", feature="chat", alert_at=(50, 80, 100))
    rollup(db, org.id, 8.5, "chat")  # 85 %: the 50 % and 80 % thresholds, not 100 %
    receiver.fail_first = 3
    tracker = BudgetTracker(pg_url)
    await tracker.refresh()
    alerter = Alerter(pg_url, settings(), tracker)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(alerter.run)
        await wait_until(lambda: len(receiver.on("/hook")) >= 2)
        await trio.sleep(1.0)  # more rounds: nothing is raised or sent twice
        assert alerter.leader
        nursery.cancel_scope.cancel()
    mine = [d.json() for d in receiver.on("/hook") if d.json()["org"] == org.name]
    assert sorted(p["budget"]["threshold_percent"] for p in mine) == [50, 80]
    alert = next(p for p in mine if p["budget"]["threshold_percent"] == 80)
    assert alert["kind"] == "budget_threshold" and alert["budget"]["id"] == bid
    assert alert["budget"]["spend_usd"] == pytest.approx(8.5) and alert["budget"]["limit_usd"] == 10
    assert alert["budget"]["feature"] == "chat" and alert["budget"]["period"] == "month"
    assert alert["budget"]["resets_at"].endswith("01T00:00:00Z")
    rows = db.execute(
        "SELECT t.outcome, t.status_code, t.at FROM alert_attempts t WHERE t.org_id = %s ORDER BY t.at", (org.id,)
    ).fetchall()
    assert [r[0] for r in rows].count("retry") == 3 and [r[0] for r in rows].count("delivered") == 2
    assert all(r[1] == 500 for r in rows if r[0] == "retry")
    # The retries of one delivery wait longer each time (0.2 s, 0.4 s, ...).
    by_delivery = db.execute(
        "SELECT array_agg(t.at ORDER BY t.at) FROM alert_attempts t JOIN alert_deliveries d ON d.id = t.delivery_id"
        " WHERE t.org_id = %s GROUP BY d.id HAVING count(*) >= 3", (org.id,)
    ).fetchall()
    assert by_delivery
    times = by_delivery[0][0]
    gaps = [(b - a).total_seconds() for a, b in zip(times, times[1:], strict=False)]
    assert gaps[0] >= 0.19 and all(later > earlier for earlier, later in zip(gaps, gaps[1:], strict=False))

    # Over 100 % later in the same period: only the new threshold is raised.
    db.execute("UPDATE rollup_hourly SET cost_usd = 12 WHERE org_id = %s", (org.id,))
    await tracker.refresh()
    await alerter.round()
    await wait_until(lambda: len(receiver.on("/hook")) >= 3)
    assert sorted(d.json()["budget"]["threshold_percent"] for d in receiver.on("/hook")) == [50, 80, 100]


async def test_delivery_gives_up_after_the_retry_window(db: Any, new_org: Any, pg_url: str, receiver: Receiver) -> None:
    org, _ = new_org("alert-giveup")
    add_webhook(db, org.name, f"{receiver.url}/down", "slack", allow_private=True)
    add_budget(db, org.name, limit_usd=1, period="day", alert_at=(100,))
    rollup(db, org.id, 2.0)
    receiver.status = 503
    tracker = BudgetTracker(pg_url)
    await tracker.refresh()
    alerter = Alerter(pg_url, settings(alert_retry_seconds=1.0, alert_backoff_seconds=0.1), tracker)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(alerter.run)
        await wait_until(lambda: db.execute(
            "SELECT count(*) FROM alert_deliveries WHERE org_id = %s AND status = 'failed'", (org.id,)
        ).fetchone()[0] == 1)
        nursery.cancel_scope.cancel()
    outcomes = [e["outcome"] for e in delivery_log(db, org.id)]
    assert outcomes[0] == "failed" and outcomes.count("retry") >= 2 and "delivered" not in outcomes


def insert_events(db: Any, org_id: int, days: dict[int, float], feature: str = "reports") -> None:
    """Events (and their rollups) of `feature`: per day back from today, that day's cost in one event."""
    now = dt.datetime.now(UTC)
    ensure_partitions(db, now, months_back=1, months_ahead=1)
    events = []
    for back, cost in days.items():
        at = now - dt.timedelta(days=back) if back else now - dt.timedelta(minutes=1)
        event = Event(org_id=org_id, created_at=at, provider="openai", endpoint="chat/completions",
                      status_code=200, feature=feature, model="gpt-4o", cost_usd=Decimal(str(cost)),
                      latency_ms=100.0, input_tokens=10, output_tokens=10, id=new_id())
        events.append(event)
    with db.cursor() as cur, cur.copy(f"COPY events ({', '.join(COLUMNS)}) FROM STDIN") as copy:
        for event in events:
            copy.write_row(event.row())
    rebuild_org(db, org_id)  # their rollups, as the writer and `lectr rollup rebuild` make them


async def test_anomalies_alert_once_per_episode_with_a_quiet_period(
    db: Any, new_org: Any, pg_url: str, receiver: Receiver
) -> None:
    org, _ = new_org("alert-anomaly")
    add_webhook(db, org.name, f"{receiver.url}/anomaly", "json", allow_private=True)
    insert_events(db, org.id, {back: 1.0 + 0.05 * (back % 3) for back in range(1, 9)} | {0: 30.0})
    tracker = BudgetTracker(pg_url)
    alerter = Alerter(pg_url, settings(anomaly_check_seconds=0.0, anomaly_quiet_seconds=3600), tracker)
    alerter.leader = True
    for _ in range(3):  # seen in three checks: one episode, one alert
        await alerter.check_anomalies()
        await alerter.round()
    await wait_until(lambda: len(receiver.on("/anomaly")) >= 1)
    [alert] = [d.json() for d in receiver.on("/anomaly")]
    assert alert["kind"] == "anomaly" and alert["anomaly"]["kind"] == "feature_cost"
    assert alert["anomaly"]["feature"] == "reports" and alert["anomaly"]["value"] == pytest.approx(30.0)
    assert "reports" in alert["title"] and alert["org"] == org.name

    # It ends (the spike is gone), comes back within the quiet period: the same episode, no alert.
    spike = ("DELETE FROM {} WHERE org_id = %s AND cost_usd = 30")
    db.execute(spike.format("events"), (org.id,))
    db.execute(spike.format("rollup_hourly"), (org.id,))
    await alerter.check_anomalies()
    ended = db.execute("SELECT ended_at FROM anomaly_episodes WHERE org_id = %s", (org.id,)).fetchall()
    assert len(ended) == 1 and ended[0][0] is not None
    insert_events(db, org.id, {0: 30.0})
    await alerter.check_anomalies()
    await alerter.round()
    await trio.sleep(0.3)
    assert len(receiver.on("/anomaly")) == 1
    assert db.execute("SELECT count(*) FROM anomaly_episodes WHERE org_id = %s", (org.id,)).fetchone()[0] == 1

    # After the quiet period, a new episode and a new alert.
    db.execute(spike.format("events"), (org.id,))
    db.execute(spike.format("rollup_hourly"), (org.id,))
    await alerter.check_anomalies()
    db.execute("UPDATE anomaly_episodes SET ended_at = ended_at - interval '2 hours' WHERE org_id = %s", (org.id,))
    insert_events(db, org.id, {0: 30.0})
    await alerter.check_anomalies()
    await alerter.round()
    await wait_until(lambda: len(receiver.on("/anomaly")) >= 2)
    assert db.execute("SELECT count(*) FROM anomaly_episodes WHERE org_id = %s", (org.id,)).fetchone()[0] == 2
