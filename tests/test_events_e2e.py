"""Every proxied request becomes exactly one priced event; no secret reaches the database or logs."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from proxy.store.orgs import set_azure
from tests.conftest import TEST_AZURE_HOSTS, ProxyProcess
from tests.fakes import FakeProviders, wait_for
from tests.test_proxy_e2e import MODELS, PROVIDER_KEY, client_for

# (input, output, cached, reasoning) the fakes report for a one-message chat, per provider.
EXPECTED_USAGE = {
    "openai": (14, 6, 4, 2),
    "azure": (14, 6, 4, 2),
    "anthropic": (14, 6, 0, 0),
    "groq": (14, 6, 0, 0),
    "gemini": (14, 13, 0, 7),  # 7 thinking tokens, seen only in total_tokens
}


@pytest.fixture
def org(db: Any, new_org: Any, fakes: FakeProviders) -> Any:
    org, key = new_org("events")
    set_azure(db, org.name, fakes["azure"].base_url, allowed_hosts=TEST_AZURE_HOSTS)
    return org, key


def events(db: Any, org_id: int, expected: int) -> list[dict[str, Any]]:
    def enough() -> list[Any] | None:
        cur = db.execute("SELECT * FROM events WHERE org_id = %s ORDER BY created_at", (org_id,))
        names = [c.name for c in cur.description]
        rows = [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
        return rows if len(rows) >= expected else None

    rows = wait_for(enough, timeout=10)
    assert len(rows) == expected
    return rows


@pytest.mark.parametrize("mode", ["plain", "stream", "stream-usage"])
def test_one_exact_event_per_request_for_every_provider(proxy: ProxyProcess, db: Any, org: Any, mode: str) -> None:
    org_, key = org
    for provider, model in MODELS.items():
        extra = {"X-Lectr-Provider": "azure"} if provider == "azure" else {}
        client = client_for(
            proxy, key, **{"X-Lectr-Feature": f"f-{provider}", "X-Lectr-Task": "summarisation", **extra}
        )
        messages = [{"role": "user", "content": "hi"}]
        if mode == "plain":
            client.chat.completions.create(model=model, messages=messages)
        else:
            options = {"stream_options": {"include_usage": True}} if mode == "stream-usage" else {}
            list(client.chat.completions.create(model=model, messages=messages, stream=True, **options))
    rows = events(db, org_.id, len(MODELS))
    by_feature = {row["feature"]: row for row in rows}
    for provider, model in MODELS.items():
        row = by_feature[f"f-{provider}"]
        assert row["provider"] == provider and row["model"] == model and not row["provider_unknown"]
        assert row["task"] == "summarisation" and row["status_code"] == 200 and row["error_type"] is None
        assert row["stream"] == (mode != "plain") and row["endpoint"] == "chat/completions"
        usage = (row["input_tokens"], row["output_tokens"], row["cached_input_tokens"], row["reasoning_tokens"])
        assert usage == EXPECTED_USAGE[provider], provider
        assert row["usage_estimated"] is False
        assert row["cost_usd"] is not None and row["cost_usd"] > 0, provider
        assert row["price_source"].startswith("genai-prices")
        assert row["message_count"] == 1 and row["request_bytes"] > 0 and row["response_bytes"] > 0
        assert 0 <= row["upstream_ms"] <= row["latency_ms"]
        assert row["ttft_ms"] is not None and row["ttft_ms"] <= row["latency_ms"]
        assert row["response_model"]
    assert by_feature["f-azure"]["response_model"] == "gpt-4o-2024-08-06"  # priced as its base model


def test_errors_timeouts_and_disconnects_are_events(
    proxy: ProxyProcess, db: Any, org: Any, fakes: FakeProviders
) -> None:
    org_, key = org
    base = {"X-Lectr-Key": key, "Authorization": f"Bearer {PROVIDER_KEY}"}
    chat = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    url = f"{proxy.url}/v1/chat/completions"
    assert httpx.post(url, json=chat, headers={**base, "x-fake-scenario": "error-429"}).status_code == 429
    assert httpx.post(url, json=chat, headers={**base, "x-fake-scenario": "error-500"}).status_code == 500
    assert httpx.post(url, json=chat, headers={**base, "x-fake-scenario": "slow"}).status_code == 504
    with httpx.stream(
        "POST",
        url,
        json={**chat, "stream": True},
        headers={**base, "x-fake-scenario": "slow-stream", "x-fake-id": "gone"},
    ) as response:
        next(response.iter_raw())
    with httpx.stream(
        "POST", url, json={**chat, "stream": True}, headers={**base, "x-fake-scenario": "reset-mid-stream"}
    ) as response:
        received = b""
        # Cut short upstream, the answer reaches the client incomplete (no final chunk), as it
        # would from the provider itself: httpx says so.
        with pytest.raises(httpx.RemoteProtocolError):
            for chunk in response.iter_raw():
                received += chunk
    assert received.startswith(b"data: ") and b"[DONE]" not in received
    rows = events(db, org_.id, 5)
    statuses = sorted((row["status_code"], row["error_type"] or "") for row in rows)
    assert [s for s, _ in statuses] == [200, 429, 499, 500, 504]
    by_status = {row["status_code"]: row for row in rows}
    assert by_status[429]["error_message"] == "Rate limit reached for requests"
    assert by_status[504]["error_type"] == "gateway_timeout"
    assert by_status[499]["usage_estimated"] is True and by_status[499]["output_tokens"] >= 1
    reset = by_status[200]
    assert reset["error_type"] is not None and reset["usage_estimated"] is True
    assert httpx.get(f"{proxy.url}/healthz").status_code == 200  # the proxy stays up


def test_no_provider_key_in_any_table_or_log(proxy: ProxyProcess, db: Any, org: Any, fakes: FakeProviders) -> None:
    _, key = org
    client = client_for(proxy, key, **{"X-Lectr-Feature": "secrets"})
    client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "secret prompt text"}])
    list(
        client.chat.completions.create(
            model="claude-3-5-sonnet-20241022",
            stream=True,
            messages=[{"role": "user", "content": "secret prompt text"}],
        )
    )
    httpx.post(
        f"{proxy.url}/v1/chat/completions",
        json={"model": "gpt-4o"},
        headers={"X-Lectr-Key": key, "Authorization": f"Bearer {PROVIDER_KEY}", "x-fake-scenario": "error-500"},
    )
    fakes["openai"].received.clear()
    wait_for(lambda: db.execute("SELECT count(*) FROM events WHERE feature = 'secrets'").fetchone()[0] >= 2)
    tables = [row[0] for row in db.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()]
    for table in tables:
        dump = str(db.execute(f'SELECT * FROM "{table}"').fetchall())  # type: ignore[arg-type]
        assert PROVIDER_KEY not in dump and PROVIDER_KEY[10:] not in dump, table
        assert "secret prompt text" not in dump, table
        assert key not in dump, table  # org keys: hashes only
    logs = proxy.logs()
    assert PROVIDER_KEY not in logs and key not in logs and "secret prompt text" not in logs


def fake_headers(key: str, scenario: str, fake_id: str) -> dict[str, str]:
    """Our key, the provider's, and what the fake provider should do (`x-fake-id` names the request)."""
    return {
        "X-Lectr-Key": key,
        "Authorization": f"Bearer {PROVIDER_KEY}",
        "x-fake-scenario": scenario,
        "x-fake-id": fake_id,
    }


def test_a_client_leaving_before_a_whole_answer_cancels_upstream_and_is_a_499(
    proxy: ProxyProcess, db: Any, org: Any, fakes: FakeProviders
) -> None:
    """No watcher task for non-streamed answers: the transport asks the server, while it waits on the
    provider, whether the client is still there (proxy/http/transport.py `ALIVE_POLL`)."""
    org_, key = org
    headers = fake_headers(key, "slow", "left-early")
    chat = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{proxy.url}/v1/chat/completions", json=chat, headers=headers, timeout=httpx.Timeout(5, read=0.3))
    wait_for(lambda: "left-early" in fakes["openai"].cancelled, timeout=5)
    [row] = events(db, org_.id, 1)
    assert row["status_code"] == 499 and row["error_type"] == "client_disconnected"
    assert row["latency_ms"] < 2000  # noticed within a poll, long before the upstream timeout (2 s)


def test_a_client_leaving_a_silent_stream_cancels_upstream_and_is_a_499(
    proxy: ProxyProcess, db: Any, org: Any, fakes: FakeProviders
) -> None:
    """No watcher task for streams either: while the provider is silent between chunks the transport
    asks the server whether the client is still there; after a chunk the relay checks whether the
    write to the client failed. Here the client leaves during a 10 s silence."""
    org_, key = org
    headers = fake_headers(key, "stall-stream", "left-mid-stream")
    chat = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    with httpx.stream("POST", f"{proxy.url}/v1/chat/completions", json=chat, headers=headers) as response:
        assert next(response.iter_raw()).startswith(b"data: ")
    wait_for(lambda: "left-mid-stream" in fakes["openai"].cancelled, timeout=5)
    [row] = events(db, org_.id, 1)
    assert row["status_code"] == 499 and row["error_type"] == "client_disconnected" and row["stream"] is True
    assert row["latency_ms"] < 3000  # noticed within a poll, long before the provider speaks again
