"""Operations: health, readiness (with the database going away), Prometheus metrics, retention."""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from proxy.accounting.record import Event
from proxy.events.journal import Journal
from proxy.events.writer import EventWriter
from proxy.store.db import connect
from proxy.store.db.migrate import _month_start, drop_old_partitions, ensure_partitions
from proxy.store.orgs import create_org
from tests.conftest import ProxyProcess, proxy_env
from tests.fakes import FakeProviders, wait_for
from tests.pgcontrol import DisposablePostgres
from tests.security.conftest import PROVIDER_KEY, assert_alive

CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
_SAMPLE = re.compile(
    r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[a-zA-Z_][a-zA-Z0-9_]*="[^"]*"(,[a-zA-Z_][a-zA-Z0-9_]*="[^"]*")*\})? (\S+)$'
)


def test_healthz_is_200_json(proxy: ProxyProcess) -> None:
    response = httpx.get(f"{proxy.url}/healthz")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"status": "ok"}


def test_readyz_is_200_json_when_healthy(proxy: ProxyProcess) -> None:
    response = httpx.get(f"{proxy.url}/readyz")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["status"] == "ready"
    assert body["checks"]["database"] is True and body["checks"]["keys_loaded"] is True
    assert body["checks"]["writer_dropped"] == 0


def _parse_metrics(text: str) -> dict[str, float]:
    samples: dict[str, float] = {}
    types: dict[str, str] = {}
    for line in text.splitlines():
        if not line:
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            assert kind in ("counter", "gauge", "histogram", "summary", "untyped"), line
            types[name] = kind
            continue
        if line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        assert match, f"not a Prometheus sample line: {line!r}"
        samples[match.group(1) + (match.group(2) or "")] = float(match.group(4))
    for name in samples:
        base = name.split("{")[0]
        family = re.sub(r"_(bucket|sum|count)$", "", base)
        assert base in types or family in types, f"{name} has no # TYPE line"
    return samples


def test_metrics_is_prometheus_text_with_requests_latency_overhead_and_writer(
    proxy: ProxyProcess, new_org: Any
) -> None:
    _, key = new_org("metrics")
    before = _parse_metrics(httpx.get(f"{proxy.url}/metrics").text)
    headers = {"X-Lectr-Key": key, "Authorization": f"Bearer {PROVIDER_KEY}"}
    for _ in range(3):
        assert httpx.post(f"{proxy.url}/v1/chat/completions", json=CHAT, headers=headers).status_code == 200
    assert httpx.post(f"{proxy.url}/v1/chat/completions", json=CHAT, headers={}).status_code == 401
    response = httpx.get(f"{proxy.url}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    after = _parse_metrics(response.text)
    ok = 'lectr_requests_total{status="200"}'
    assert after[ok] - before.get(ok, 0) >= 3
    assert after['lectr_requests_total{status="401"}'] >= 1
    for histogram in ("lectr_request_seconds", "lectr_overhead_seconds"):
        assert after[f"{histogram}_count"] - before.get(f"{histogram}_count", 0) >= 4
        assert after[f'{histogram}_bucket{{le="+Inf"}}'] == after[f"{histogram}_count"]
        buckets = [v for k, v in after.items() if k.startswith(f"{histogram}_bucket")]
        assert buckets == sorted(buckets), "histogram buckets must be cumulative"
    assert after["lectr_overhead_seconds_sum"] <= after["lectr_request_seconds_sum"]
    for name in (
        "lectr_writer_queued",
        "lectr_writer_written_total",
        "lectr_writer_spilled_total",
        "lectr_writer_dropped_total",
        "lectr_writer_healthy",
    ):
        assert name in after, name
    assert after["lectr_writer_dropped_total"] == 0
    assert after["lectr_writer_healthy"] == 1


# -- readiness with the database down --------------------------------------------------------


@pytest.fixture
def own_stack(tmp_path: Path, fakes: FakeProviders) -> Iterator[tuple[DisposablePostgres, ProxyProcess, str]]:
    pg = DisposablePostgres(tmp_path)
    with connect(pg.url) as conn:
        _, key = create_org(conn, "ops")
    proxy = ProxyProcess(proxy_env(pg.url, fakes, tmp_path), tmp_path / "proxy.log").start()
    yield pg, proxy, key
    proxy.stop()
    pg.stop()


def test_readyz_is_503_while_the_database_is_down_and_200_when_back(
    own_stack: tuple[DisposablePostgres, ProxyProcess, str],
) -> None:
    pg, proxy, key = own_stack
    assert httpx.get(f"{proxy.url}/readyz").status_code == 200
    pg.stop()
    wait_for(lambda: httpx.get(f"{proxy.url}/readyz", timeout=10).status_code == 503, timeout=20)
    response = httpx.get(f"{proxy.url}/readyz", timeout=10)
    assert response.headers["content-type"] == "application/json"
    assert response.json()["status"] == "not ready" and response.json()["checks"]["database"] is False
    # Alive all the while, and still proxying with the keys it holds in memory.
    assert_alive(proxy)
    headers = {"X-Lectr-Key": key, "Authorization": f"Bearer {PROVIDER_KEY}"}
    assert httpx.post(f"{proxy.url}/v1/chat/completions", json=CHAT, headers=headers, timeout=30).status_code == 200
    pg.start()
    wait_for(lambda: httpx.get(f"{proxy.url}/readyz", timeout=10).status_code == 200, timeout=30)
    assert httpx.get(f"{proxy.url}/readyz").json()["status"] == "ready"


# -- retention ---------------------------------------------------------------------------------


def _partitions(conn: Any) -> set[str]:
    rows = conn.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'events'"
    ).fetchall()
    return {r[0] for r in rows}


def _month_name(offset: int, around: dt.datetime | None = None) -> str:
    return f"events_{_month_start(around or dt.datetime.now(dt.UTC), offset):%Y_%m}"


def _insert_event(conn: Any, org_id: int, when: dt.datetime) -> None:
    conn.execute(
        "INSERT INTO events (org_id, created_at, provider, endpoint, status_code, feature)"
        " VALUES (%s, %s, 'openai', 'chat/completions', 200, 'retention')",
        (org_id, when),
    )


@pytest.fixture(scope="module")
def retention_pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DisposablePostgres]:
    """A Postgres of this module's own: dropping partitions must not touch the shared test database."""
    pg = DisposablePostgres(tmp_path_factory.mktemp("retention"))
    yield pg
    pg.stop()


def test_drop_old_partitions_drops_old_months_and_keeps_recent_ones(retention_pg: DisposablePostgres) -> None:
    with connect(retention_pg.url) as conn:
        org, _ = create_org(conn, f"retention-{uuid.uuid4().hex[:6]}")
        present = _partitions(conn)
        # migrate() made 13 months back and 2 ahead, plus the default partition.
        assert {_month_name(k) for k in range(-13, 3)} <= present and "events_default" in present
        now = dt.datetime.now(dt.UTC)
        for offset in (-12, -4, -3, 0):
            _insert_event(conn, org.id, _month_start(now, offset) + dt.timedelta(days=1))
        assert drop_old_partitions(conn, 0) == []  # 0: keep everything
        assert _partitions(conn) == present
        dropped = drop_old_partitions(conn, 3)
        assert set(dropped) == {_month_name(k) for k in range(-13, -3)}
        remaining = _partitions(conn)
        assert remaining == present - set(dropped)
        assert {_month_name(k) for k in range(-3, 3)} <= remaining and "events_default" in remaining
        months = [
            r[0]
            for r in conn.execute(
                "SELECT date_trunc('month', created_at AT TIME ZONE 'UTC') FROM events WHERE org_id = %s ORDER BY 1",
                (org.id,),
            ).fetchall()
        ]
        assert [(m.year, m.month) for m in months] == [
            (_month_start(now, k).year, _month_start(now, k).month) for k in (-3, 0)
        ]
        assert drop_old_partitions(conn, 3) == []  # idempotent


def test_ensure_partitions_creates_months_and_leaves_busy_default_rows(retention_pg: DisposablePostgres) -> None:
    with connect(retention_pg.url) as conn:
        org, _ = create_org(conn, f"partitions-{uuid.uuid4().hex[:6]}")
        far = dt.datetime(2031, 5, 15, tzinfo=dt.UTC)
        assert _month_name(0, far) not in _partitions(conn)
        ensure_partitions(conn, far, months_back=1, months_ahead=1)
        assert {_month_name(k, far) for k in (-1, 0, 1)} <= _partitions(conn)
        ensure_partitions(conn, far, months_back=1, months_ahead=1)  # idempotent
        # A month whose rows already sit in the default partition is left there, and still found.
        busy = dt.datetime(2033, 2, 10, tzinfo=dt.UTC)
        _insert_event(conn, org.id, busy)
        ensure_partitions(conn, busy, months_back=0, months_ahead=1)
        assert _month_name(0, busy) not in _partitions(conn)
        assert _month_name(1, busy) in _partitions(conn)
        count = conn.execute("SELECT count(*) FROM events WHERE org_id = %s AND created_at = %s", (org.id, busy))
        assert count.fetchone()[0] == 1


# -- the journal shared by several writers -------------------------------------------------------


class _RacingJournal(Journal):
    """A journal folder shared with another worker, which replays and deletes a file between our
    listing of the folder and our reading of it (what `--workers N` with one LECTR_JOURNAL_DIR,
    the default, allows)."""

    def __init__(self, folder: Path) -> None:
        super().__init__(folder)
        self.calls = 0

    def files(self) -> list[Path]:
        self.calls += 1
        if self.calls == 2:  # the first call is the writer's constructor; the second its first flush
            return [self.folder / "events-1-gone.jsonl"]  # listed, then deleted by the other worker
        return super().files()


def test_a_journal_file_replayed_by_another_worker_never_duplicates_events(
    retention_pg: DisposablePostgres, tmp_path: Path
) -> None:
    with connect(retention_pg.url) as conn:
        org, _ = create_org(conn, f"journal-race-{uuid.uuid4().hex[:6]}")
    journal = _RacingJournal(tmp_path / "journal")
    writer = EventWriter(retention_pg.url, journal, batch_size=100, flush_seconds=0.05, max_backoff=0.2)
    now = dt.datetime.now(dt.UTC)

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(writer.run)
            for _ in range(3):
                writer.record(Event(org_id=org.id, created_at=now, provider="openai", endpoint="x", status_code=200))
            await trio.sleep(1.5)
            await writer.aclose()

    trio.run(run)
    count = retention_pg.count("SELECT count(*) FROM events WHERE org_id = %s", (org.id,))
    assert count == 3, f"3 events recorded, {count} rows written"


# -- metrics with more than one worker --------------------------------------------------------


def test_metrics_add_up_every_worker_whichever_answers(
    pg_url: str, fakes: FakeProviders, new_org: Any, tmp_path: Path
) -> None:
    server = ProxyProcess(proxy_env(pg_url, fakes, tmp_path), tmp_path / "proxy.log", workers=2).start()
    try:
        _, key = new_org("metrics-workers")
        headers = {"X-Lectr-Key": key, "Authorization": f"Bearer {PROVIDER_KEY}"}
        sent = 0

        async def one_round() -> None:
            nonlocal sent

            async def post() -> None:
                nonlocal sent
                # A connection per request, 16 at once: both workers take some.
                async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
                    response = await client.post("/v1/chat/completions", json=CHAT, headers=headers)
                assert response.status_code == 200
                sent += 1

            async with trio.open_nursery() as nursery:
                for _ in range(16):
                    nursery.start_soon(post)

        def per_worker() -> dict[str, int]:
            files = list((tmp_path / "metrics").glob("*/*.json"))
            return {f.stem: sum(json.loads(f.read_text())["requests"].values()) for f in files}

        for _ in range(10):
            trio.run(one_round)
            counts = per_worker()
            if len(counts) == 2 and all(counts.values()):
                break
        counts = wait_for(lambda: (c := per_worker()) and sum(c.values()) >= sent and c, timeout=10)
        assert len(counts) == 2 and all(counts.values()), counts  # each worker answered some requests
        for _ in range(12):  # new connections: either worker answers the scrape
            scraped = _parse_metrics(httpx.get(f"{server.url}/metrics").text)
            assert scraped["lectr_workers"] == 2
            assert scraped['lectr_requests_total{status="200"}'] == sent
            assert scraped["lectr_request_seconds_count"] == sent
            assert scraped["lectr_writer_dropped_total"] == 0 and scraped["lectr_writer_healthy"] == 1
    finally:
        server.stop()
