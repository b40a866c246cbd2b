"""Faults through the whole proxy: Postgres going away, SIGTERM under load, resets, slow clients."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from proxy.store.db import connect
from proxy.store.orgs import create_org
from tests.conftest import ProxyProcess, proxy_env
from tests.fakes import FakeProviders, wait_for
from tests.pgcontrol import DisposablePostgres
from tests.rollup_check import assert_rollups_match_events
from tests.test_proxy_e2e import PROVIDER_KEY

CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def own_stack(tmp_path: Path, fakes: FakeProviders, disposable_pg: DisposablePostgres) -> Any:
    """A Postgres and a proxy of this test's own, so the test may break them."""
    pg = disposable_pg
    with connect(pg.url) as conn:
        org, key = create_org(conn, "faults")
    env = proxy_env(pg.url, fakes, tmp_path, LECTR_WRITER_QUEUE_SIZE="50", LECTR_REFRESH_SECONDS="0.5")
    proxy = ProxyProcess(env, tmp_path / "proxy.log").start()
    yield pg, proxy, org, key
    proxy.stop()


def test_postgres_down_and_back_loses_no_event(own_stack: Any) -> None:
    pg, proxy, org, key = own_stack
    headers = {"X-Lectr-Key": key, "Authorization": f"Bearer {PROVIDER_KEY}"}
    sent = 0
    with httpx.Client(base_url=proxy.url, headers=headers) as client:
        for _ in range(20):
            assert client.post("/v1/chat/completions", json=CHAT).status_code == 200
            sent += 1
        pg.stop()
        # Keys are in memory: requests keep working while Postgres is away, and more of them than
        # the writer holds in memory (LECTR_WRITER_QUEUE_SIZE=50), so the journal is used.
        for _ in range(150):
            assert client.post("/v1/chat/completions", json=CHAT).status_code == 200
            sent += 1
        assert client.get("/readyz").status_code == 503
        pg.start()
        for _ in range(20):
            assert client.post("/v1/chat/completions", json=CHAT).status_code == 200
            sent += 1
        wait_for(lambda: client.get("/readyz").status_code == 200, timeout=20)
    query = "SELECT count(*) FROM events WHERE org_id = %s"
    wait_for(lambda: pg.count(query, (org.id,)) >= sent, timeout=20)
    assert pg.count(query, (org.id,)) == sent
    assert "spilled" in proxy.logs()
    with connect(pg.url) as conn:  # what was journaled and replayed counted once in the rollups too
        assert assert_rollups_match_events(conn, [org.id]) == sent
    metrics = httpx.get(f"{proxy.url}/metrics").text
    assert "lectr_writer_dropped_total 0" in metrics


def test_a_proxy_killed_outright_loses_no_event(own_stack: Any, fakes: FakeProviders, tmp_path: Path) -> None:
    """SIGKILL (the OOM killer, a crash) gives no chance to drain: the events the writer held are
    in its spool, and the next start writes them, once each."""
    import psutil

    pg, proxy, org, key = own_stack
    headers = {"X-Lectr-Key": key, "Authorization": f"Bearer {PROVIDER_KEY}"}
    with httpx.Client(base_url=proxy.url, headers=headers) as client:
        for _ in range(10):
            assert client.post("/v1/chat/completions", json=CHAT).status_code == 200
        query = "SELECT count(*) FROM events WHERE org_id = %s"
        wait_for(lambda: pg.count(query, (org.id,)) == 10, timeout=10)
        pg.stop()  # nothing can be written now: the next events stay with the writer
        for _ in range(30):  # fewer than the writer holds in memory (50): none goes to the journal
            assert client.post("/v1/chat/completions", json=CHAT).status_code == 200
    spools = (tmp_path / "journal").glob
    wait_for(lambda: sum(p.read_bytes().count(b"\n") for p in spools("spool-*.jsonl")) == 30, timeout=5)
    assert proxy.process is not None
    everything = [psutil.Process(proxy.process.pid), *psutil.Process(proxy.process.pid).children(recursive=True)]
    for process in everything:
        process.kill()
    psutil.wait_procs(everything, timeout=10)
    assert not list((tmp_path / "journal").glob("events-*.jsonl"))  # nothing was spilled or drained
    pg.start()
    again = ProxyProcess(proxy.env, tmp_path / "again.log").start()
    try:
        wait_for(lambda: pg.count(query, (org.id,)) >= 40, timeout=20)
        time.sleep(0.5)
        assert pg.count(query, (org.id,)) == 40
        assert "adopted the event spool" in again.logs()
        with connect(pg.url) as conn:  # the adopted spool's events counted once in the rollups too
            assert assert_rollups_match_events(conn, [org.id]) == 40
    finally:
        again.stop()


def test_sigterm_lets_in_flight_requests_finish_and_drains_events(own_stack: Any, fakes: FakeProviders) -> None:
    pg, proxy, org, key = own_stack
    fakes.reset()
    headers = {"X-Lectr-Key": key, "Authorization": f"Bearer {PROVIDER_KEY}", "x-fake-scenario": "slow-stream"}
    results: list[tuple[int, bytes]] = []

    def stream() -> None:
        with httpx.stream(
            "POST", f"{proxy.url}/v1/chat/completions", json={**CHAT, "stream": True}, headers=headers, timeout=30
        ) as response:
            results.append((response.status_code, b"".join(response.iter_raw())))

    threads = [threading.Thread(target=stream) for _ in range(12)]
    for thread in threads:
        thread.start()
    # Every stream is mid-flight at the provider (each takes ~0.45 s) when SIGTERM arrives.
    wait_for(lambda: len(fakes["openai"].received) >= 12, timeout=10, interval=0.005)
    assert proxy.process is not None
    proxy.process.send_signal(signal.SIGTERM)
    for thread in threads:
        thread.join(30)
    assert len(results) == 12
    assert all(status == 200 and body.endswith(b"data: [DONE]\n\n") for status, body in results)
    assert proxy.process.wait(40) == 0
    assert pg.count("SELECT count(*) FROM events WHERE org_id = %s AND status_code = 200", (org.id,)) == 12


def test_slow_reader_does_not_stall_others(proxy: ProxyProcess, new_org: Any) -> None:
    _, key = new_org("slowreader")
    headers = {"X-Lectr-Key": key, "Authorization": f"Bearer {PROVIDER_KEY}"}
    url = f"{proxy.url}/v1/chat/completions"
    with httpx.stream(
        "POST", url, json={**CHAT, "stream": True}, headers={**headers, "x-fake-scenario": "slow-stream"}
    ) as slow:
        assert slow.status_code == 200  # headers in, body never read while others are served
        started = time.monotonic()
        for _ in range(20):
            assert httpx.post(url, json=CHAT, headers=headers).status_code == 200
        assert time.monotonic() - started < 10


def worker_rss_mb(proxy: ProxyProcess) -> float:
    import psutil

    assert proxy.process is not None
    workers = psutil.Process(proxy.process.pid).children(recursive=True)
    return max(w.memory_info().rss for w in workers if "spawn_main" in " ".join(w.cmdline())) / 2**20


def test_a_client_that_never_reads_holds_bounded_memory(proxy: ProxyProcess, new_org: Any) -> None:
    """The relay reads upstream only as fast as the client takes bytes: a 20 MB stream to a client
    that reads nothing must not pile up in the proxy (and others are still served)."""
    _, key = new_org("neverreads")
    headers = {"X-Lectr-Key": key, "Authorization": f"Bearer {PROVIDER_KEY}"}
    before = worker_rss_mb(proxy)
    with httpx.stream("POST", f"{proxy.url}/v1/chat/completions", json={**CHAT, "stream": True}, timeout=30,
                      headers={**headers, "x-fake-scenario": "big-stream"}) as stalled:
        assert stalled.status_code == 200
        time.sleep(3)  # the upstream would send 20 MB in well under a second
        during = worker_rss_mb(proxy)
        assert httpx.post(f"{proxy.url}/v1/chat/completions", json=CHAT, headers=headers).status_code == 200
        received = sum(len(part) for part in stalled.iter_raw())
    assert received > 20_000_000  # and it all arrives once the client reads
    assert during - before < 12, (before, during)
