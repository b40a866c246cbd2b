"""Budgets and alerts end to end: a real proxy with two workers (Hypercorn, `--workers 2`), the
fake providers, a real webhook receiver, and a database of this module's own (the alert sender is
elected among the workers sharing a database).

- a hard budget crossed under concurrent load: 429 `budget_exceeded` before the upstream, the
  overshoot within the bound of docs/BUDGETS.md, alerts at 80 % and 100 % delivered exactly once
  to a JSON and a Slack webhook by the two workers together;
- a slow receiver never slows the proxy;
- the worker holding the sender's lock killed with SIGKILL: another takes over within 30 s.
"""

from __future__ import annotations

import os
import signal
import statistics
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from proxy.alerts.sender import ELECTION_LOCK
from proxy.store.budgets import add_budget
from proxy.store.webhooks import add_webhook
from tests.conftest import ProxyProcess, fresh_database, proxy_env
from tests.fakes import FakeProviders, wait_for
from tests.receiver import Receiver
from tests.test_proxy_e2e import PROVIDER_KEY

# docs/BUDGETS.md: what a worker may not yet see of the others' spend is what they spent in the
# last F + R + q seconds (writer flush, budget refresh, commit and query time).
FLUSH_SECONDS = 1.0  # LECTR_WRITER_FLUSH_SECONDS (default)
REFRESH_SECONDS = 2.0  # LECTR_BUDGET_REFRESH_SECONDS (default)
QUERY_SECONDS = 0.5  # allowance for a COPY + upsert commit and the refresh query on a busy 2-core VM
CONCURRENCY = 16
MARKER = "PROMPT-MARKER-d41d8cd9"  # never in an alert


@pytest.fixture(scope="module")
def pg_url(pg_server_url: str) -> Iterator[str]:
    yield from fresh_database(pg_server_url)


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    server = Receiver().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def proxy2(pg_url: str, fakes: FakeProviders, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyProcess]:
    data_dir = tmp_path_factory.mktemp("budget-proxy")
    env = proxy_env(pg_url, fakes, data_dir, LECTR_ALLOW_PRIVATE_UPSTREAMS="1", LECTR_ALERT_CHECK_SECONDS="0.5")
    server = ProxyProcess(env, data_dir / "proxy.log", workers=2).start()
    yield server
    server.stop()


def chat(client: httpx.Client, proxy: ProxyProcess, key: str, feature: str) -> httpx.Response:
    return client.post(
        f"{proxy.url}/v1/chat/completions",
        json={"model": "gpt-4o", "messages": [{"role": "user", "content": MARKER}]},
        headers={"X-Lectr-Key": key, "Authorization": f"Bearer {PROVIDER_KEY}", "X-Lectr-Feature": feature},
        timeout=20,
    )


def load(
    proxy: ProxyProcess, key: str, feature: str, seconds: float, after_429: float = 0.0
) -> tuple[float, list[tuple[float, int]]]:
    """CONCURRENCY clients sending back to back for `seconds`, or until `after_429` seconds after
    the first 429: (when they started, (time, status) of every answer)."""
    answers: list[tuple[float, int]] = []
    lock = threading.Lock()
    first_429: list[float] = []
    ready = threading.Barrier(CONCURRENCY + 1)
    clock: list[float] = []

    def client() -> None:
        with httpx.Client() as http:
            ready.wait()  # every client made (a CA bundle each) before the clock starts
            deadline = clock[0] + seconds
            while time.monotonic() < deadline and not (first_429 and time.monotonic() > first_429[0] + after_429):
                status = chat(http, proxy, key, feature).status_code
                now = time.monotonic()
                with lock:
                    answers.append((now, status))
                    if status == 429 and not first_429:
                        first_429.append(now)

    with ThreadPoolExecutor(CONCURRENCY) as pool:
        futures = [pool.submit(client) for _ in range(CONCURRENCY)]
        clock.append(time.monotonic())
        ready.wait()
        for future in futures:
            future.result()
    return clock[0], answers


def cost(db: Any, org_id: int, feature: str) -> tuple[float, int, float]:
    """(total cost, priced requests, the dearest request) of the org's feature, once all are written."""
    row = db.execute(
        "SELECT coalesce(sum(cost_usd), 0)::float8, count(cost_usd), coalesce(max(cost_usd), 0)::float8"
        " FROM events WHERE org_id = %s AND feature = %s",
        (org_id, feature),
    ).fetchone()
    return float(row[0]), int(row[1]), float(row[2])


def settled(db: Any, org_id: int, expected: int) -> None:
    wait_for(lambda: db.execute("SELECT count(*) FROM events WHERE org_id = %s", (org_id,)).fetchone()[0]
             >= expected, timeout=30)


def test_hard_budget_under_load_overshoot_bound_and_alerts_exactly_once(
    proxy2: ProxyProcess, db: Any, new_org: Any, receiver: Receiver, fakes: FakeProviders
) -> None:
    org, key = new_org("budget-e2e")
    add_webhook(db, org.name, f"{receiver.url}/json", "json", allow_private=True)
    add_webhook(db, org.name, f"{receiver.url}/slack", "slack", allow_private=True)

    # The limit: 80 requests' worth (all cost the same: one model, one usage).
    with httpx.Client() as http:
        for _ in range(3):
            assert chat(http, proxy2, key, "warmup").status_code == 200
    settled(db, org.id, 3)
    warm_cost, warm_n, _ = cost(db, org.id, "warmup")
    assert warm_n == 3 and warm_cost > 0
    limit = round(warm_cost / 3 * 80, 6)
    budget_id = add_budget(db, org.name, limit_usd=limit, period="month", feature="chat", hard=True)
    time.sleep(REFRESH_SECONDS + 0.5)  # every worker has loaded it
    upstream_before = sum(MARKER.encode() in r.body for r in fakes["openai"].received)

    started, answers = load(proxy2, key, "chat", 90.0, after_429=2 * (FLUSH_SECONDS + REFRESH_SECONDS))
    ok = [t for t, status in answers if status == 200]
    refused = [t for t, status in answers if status == 429]
    failed = len(answers) - len(ok) - len(refused)  # the fakes, in this process, may be slow: 504s
    assert refused, f"never refused: {len(ok)} answers, limit ${limit}"
    settled(db, org.id, 3 + len(answers))
    spent, priced, dearest = cost(db, org.id, "chat")
    assert priced == len(ok)
    # The spend rate up to the first refusal, through both workers (the bound takes it all as the
    # "other" worker's: the workers' shares are not measured, and the kernel may favour one).
    rate = spent / max(1e-3, min(refused) - started)
    bound = rate * (FLUSH_SECONDS + REFRESH_SECONDS + QUERY_SECONDS) + CONCURRENCY * dearest
    overshoot = spent - limit
    print(f"\nhard budget ${limit:.4f}: spent ${spent:.4f} in {len(ok)} requests, overshoot ${overshoot:.4f}"
          f" ({100 * overshoot / limit:.1f} %), bound ${bound:.4f}; rate ${rate:.4f}/s, {len(refused)} refused,"
          f" {failed} failed upstream")
    assert overshoot <= bound
    # Refusals never reached the upstream; every refusal is an event.
    upstream = sum(MARKER.encode() in r.body for r in fakes["openai"].received) - upstream_before
    assert upstream == len(ok) + failed
    rows = db.execute(
        "SELECT count(*), count(cost_usd) FROM events WHERE org_id = %s AND status_code = 429"
        " AND error_type = 'budget_exceeded'", (org.id,)
    ).fetchone()
    assert rows == (len(refused), 0)

    # The official SDK sees a 429 naming the budget and when it resets; other features still pass.
    client = openai.OpenAI(base_url=f"{proxy2.url}/v1", api_key=PROVIDER_KEY, max_retries=0,
                           default_headers={"X-Lectr-Key": key, "X-Lectr-Feature": "chat"})
    with pytest.raises(openai.RateLimitError) as exc:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    error = exc.value.body
    assert isinstance(error, dict) and error["code"] == "budget_exceeded"
    assert f"budget {budget_id}" in error["message"] and error["budget"]["id"] == budget_id
    assert error["budget"]["resets_at"].endswith("-01T00:00:00Z") and error["budget"]["resets_at"] in error["message"]
    assert exc.value.response.headers["retry-after"].isdigit()
    other = client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}], extra_headers={"X-Lectr-Feature": "search"})
    assert other.status_code == 200

    # 80 % and 100 %: once each, to each webhook, whichever worker sends.
    wait_for(lambda: len(receiver.on("/json")) >= 2 and len(receiver.on("/slack")) >= 2, timeout=20)
    time.sleep(3)  # more rounds of the sender: nothing again
    generic = sorted((d.json() for d in receiver.on("/json")), key=lambda p: p["budget"]["threshold_percent"])
    assert [p["budget"]["threshold_percent"] for p in generic] == [80, 100]
    assert all(p["budget"]["id"] == budget_id and p["org"] == org.name and p["budget"]["hard"] for p in generic)
    assert generic[1]["budget"]["spend_usd"] >= limit
    slack = [d.json()["text"] for d in receiver.on("/slack")]
    assert len(slack) == 2 and sorted("at 80 %" in t for t in slack) == [False, True]
    for delivered in receiver.received:
        assert key.encode() not in delivered.body and PROVIDER_KEY.encode() not in delivered.body
        assert MARKER.encode() not in delivered.body


def test_a_slow_receiver_never_slows_the_proxy(
    proxy2: ProxyProcess, db: Any, new_org: Any, receiver: Receiver
) -> None:
    org, key = new_org("budget-slow")
    with httpx.Client() as http:
        for _ in range(3):
            assert chat(http, proxy2, key, "slowcheck").status_code == 200
        settled(db, org.id, 3)
        add_webhook(db, org.name, f"{receiver.url}/slow", "json", allow_private=True)
        receiver.delay = 6.0
        try:
            add_budget(db, org.name, limit_usd=0.000001, period="day", feature="slowcheck", alert_at=(100,))
            wait_for(lambda: receiver.attempts > 0 and not receiver.on("/slow"), timeout=20)  # the sender waits on it
            latencies = []
            for _ in range(40):
                began = time.perf_counter()
                assert chat(http, proxy2, key, "slowcheck").status_code == 200  # a soft budget never refuses
                latencies.append(time.perf_counter() - began)
            assert not receiver.on("/slow")  # all of it while the receiver was still holding the alert
        finally:
            wait_for(lambda: receiver.on("/slow"), timeout=20)
            receiver.delay = 0.0
    print(f"\nwhile a receiver takes 6 s: proxy p50 {1000 * statistics.median(latencies):.1f} ms,"
          f" max {1000 * max(latencies):.1f} ms")
    assert max(latencies) < 1.0


def lock_holder(db: Any) -> int | None:
    """The pid of the worker holding the alert sender's lock in this database (application_name)."""
    row = db.execute(
        "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
        " WHERE l.locktype = 'advisory' AND l.granted AND l.objid = %s"
        " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        (ELECTION_LOCK,),
    ).fetchone()
    return int(row[0].rsplit("-", 1)[1]) if row else None


def test_a_killed_sender_is_replaced_within_30_seconds(
    proxy2: ProxyProcess, db: Any, new_org: Any, receiver: Receiver, pg_url: str, fakes: FakeProviders,
    tmp_path: Path,
) -> None:
    """Another instance on the same database takes over. (Hypercorn stops every worker of an
    instance when one of them dies, so the successor is a worker of another instance, or of this
    one once its supervisor restarts it.) Election at its default interval (10 s)."""
    env = proxy_env(pg_url, fakes, tmp_path, LECTR_ALLOW_PRIVATE_UPSTREAMS="1", LECTR_ALERT_CHECK_SECONDS="0.5")
    other = ProxyProcess(env, tmp_path / "other.log", workers=1).start()
    try:
        holder = wait_for(lambda: lock_holder(db), timeout=15)
        assert holder not in (proxy2.process.pid, other.process.pid)  # a worker, not a Hypercorn parent
        os.kill(holder, signal.SIGKILL)
        killed = time.monotonic()
        successor = wait_for(lambda: (pid := lock_holder(db)) not in (None, holder) and pid, timeout=35, interval=0.2)
        took = time.monotonic() - killed
        print(f"\nthe alert sender (pid {holder}) killed: pid {successor} took over after {took:.1f} s")
        assert took < 30
        alive = other if other.process.poll() is None else proxy2
        assert alive.process.poll() is None
        # The new sender sends: an alert raised now is delivered, once.
        org, key = new_org("budget-takeover")
        add_webhook(db, org.name, f"{receiver.url}/takeover", "json", allow_private=True)
        with httpx.Client() as http:
            assert chat(http, alive, key, "after").status_code == 200
        add_budget(db, org.name, limit_usd=0.000001, period="day", alert_at=(100,))
        wait_for(lambda: receiver.on("/takeover"), timeout=30)
        time.sleep(2)
        assert len(receiver.on("/takeover")) == 1
    finally:
        other.stop()
    logs = Path(proxy2.log_path).read_text(errors="replace") + other.logs()
    assert logs.count("sends the alerts") >= 2
