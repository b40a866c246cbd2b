"""Anthropic's Messages API natively: the official `anthropic` SDK → the proxy → a fake that speaks it.

The SDK's `base_url` is the proxy's root (it posts to `{base_url}/v1/messages`) and it sends its own
`anthropic-version`; its key goes as `x-api-key` (SDKs before 2.x, curl) or, from the 2.x SDKs on,
as `Authorization: Bearer`, which the proxy rewrites to `x-api-key`; the org key rides in `X-Lectr-Key`. Each request
leaves one event whose tokens of each kind and cost are checked exactly (`tests/native_expect.py`).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import anthropic
import httpx
import pytest

from tests.conftest import ProxyProcess
from tests.fakes import FakeProviders
from tests.fakes_native import (
    ANTHROPIC_CACHE_READ,
    ANTHROPIC_CACHE_WRITE,
    ANTHROPIC_INPUT,
    ANTHROPIC_OUTPUT,
    TEXT,
)
from tests.native_expect import Expected, assert_event, rows
from tests.test_proxy_e2e import PROVIDER_KEY

MODEL = "claude-sonnet-4-0"
SNAPSHOT = "claude-sonnet-4-20250514"
# A system prompt marked for caching: the fake then reports cache reads and writes, as Anthropic does.
CACHED_SYSTEM = [{"type": "text", "text": "You are terse. " * 200, "cache_control": {"type": "ephemeral"}}]
MESSAGES = [{"role": "user", "content": "Say hello"}]
ALL_INPUT = ANTHROPIC_INPUT + ANTHROPIC_CACHE_READ + ANTHROPIC_CACHE_WRITE


@pytest.fixture
def org(new_org: Any, fakes: FakeProviders) -> Any:
    org, key = new_org("anthropic-native")
    fakes.reset()
    return org, key


def sdk(proxy: ProxyProcess, key: str | None, **options: Any) -> anthropic.Anthropic:
    headers = {"X-Lectr-Key": key, "X-Lectr-Feature": "anthropic-sdk"} if key else {}
    options.setdefault("api_key", PROVIDER_KEY)
    return anthropic.Anthropic(base_url=proxy.url, default_headers=headers, max_retries=0, timeout=20, **options)


def expected(stream: bool, endpoint: str = "messages") -> Expected:
    return Expected(
        provider="anthropic",
        endpoint=endpoint,
        stream=stream,
        model=MODEL,
        response_model=SNAPSHOT,
        input_tokens=ALL_INPUT,
        output_tokens=ANTHROPIC_OUTPUT,
        cached_input_tokens=ANTHROPIC_CACHE_READ,
        cache_write_tokens=ANTHROPIC_CACHE_WRITE,
    )


def test_hand_computed_cost_matches_genai_prices_rates() -> None:
    """claude-sonnet-4: $3 input, $0.30 cache read, $3.75 cache write, $15 output per million."""
    by_hand = (
        Decimal(ANTHROPIC_INPUT) * 3
        + Decimal(ANTHROPIC_CACHE_READ) * Decimal("0.30")
        + Decimal(ANTHROPIC_CACHE_WRITE) * Decimal("3.75")
        + Decimal(ANTHROPIC_OUTPUT) * 15
    ) / 1_000_000
    assert by_hand == Decimal("0.003675")
    assert expected(stream=False).cost() == by_hand


@pytest.mark.parametrize("auth", ["api_key", "x-api-key"])
def test_messages_create_with_cache_tokens(
    proxy: ProxyProcess, fakes: FakeProviders, db: Any, org: Any, auth: str
) -> None:
    org_, key = org
    beta = "prompt-caching-2024-07-31,token-efficient-tools-2025-02-19"
    # `api_key`: however this SDK sends it (2.x: a Bearer); `x-api-key`: the header itself.
    client = sdk(proxy, key) if auth == "api_key" else sdk(proxy, key, api_key=None)
    own = {"x-api-key": PROVIDER_KEY} if auth == "x-api-key" else {}
    message = client.messages.create(
        model=MODEL,
        max_tokens=256,
        system=CACHED_SYSTEM,
        messages=MESSAGES,
        extra_headers={"anthropic-beta": beta, **own},
        metadata={"user_id": "customer-42"},
    )
    assert message.content[0].text == TEXT and message.model == SNAPSHOT
    usage = message.usage
    assert (usage.input_tokens, usage.cache_read_input_tokens, usage.cache_creation_input_tokens) == (
        ANTHROPIC_INPUT,
        ANTHROPIC_CACHE_READ,
        ANTHROPIC_CACHE_WRITE,
    )
    received = fakes["anthropic"].received[-1]
    assert received.path == "/v1/messages"
    assert received.headers["x-api-key"] == PROVIDER_KEY and "authorization" not in received.headers
    assert received.headers["anthropic-version"] == client.default_headers["anthropic-version"]  # the SDK's own
    assert received.headers["anthropic-beta"] == beta
    assert not any(name.startswith("x-lectr-") for name in received.headers)
    [row] = rows(db, org_.id, 1)
    assert_event(row, expected(stream=False))
    assert row["feature"] == "anthropic-sdk" and row["message_count"] == 1
    assert row["end_user"] == "customer-42"  # the body's metadata.user_id


def test_messages_stream_merges_start_and_delta_usage(
    proxy: ProxyProcess, fakes: FakeProviders, db: Any, org: Any
) -> None:
    """`message_start` carries input and cache tokens, `message_delta` only the output: both count."""
    org_, key = org
    with sdk(proxy, key).messages.stream(
        model=MODEL, max_tokens=256, system=CACHED_SYSTEM, messages=MESSAGES
    ) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert final.content[0].text == TEXT
    assert final.usage.output_tokens == ANTHROPIC_OUTPUT and final.usage.input_tokens == ANTHROPIC_INPUT
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop" and "message_delta" in kinds
    assert fakes["anthropic"].received[-1].json()["stream"] is True
    [row] = rows(db, org_.id, 1)
    assert_event(row, expected(stream=True))


def test_bearer_is_rewritten_and_version_added_only_when_absent(
    proxy: ProxyProcess, fakes: FakeProviders, db: Any, org: Any
) -> None:
    org_, key = org
    # The SDK with `auth_token` sends `Authorization: Bearer`; Anthropic wants `x-api-key`.
    message = sdk(proxy, key, api_key=None, auth_token=PROVIDER_KEY).messages.create(
        model=MODEL, max_tokens=64, system=CACHED_SYSTEM, messages=MESSAGES
    )
    assert message.content[0].text == TEXT
    received = fakes["anthropic"].received[-1]
    assert received.headers["x-api-key"] == PROVIDER_KEY and "authorization" not in received.headers
    # A bare client: no anthropic-version (the proxy adds one), then its own (passed unchanged).
    body = {"model": MODEL, "max_tokens": 64, "messages": MESSAGES, "system": CACHED_SYSTEM}
    for sent, arrived in ((None, "2023-06-01"), ("2099-01-01", "2099-01-01")):
        headers = {"X-Lectr-Key": key, "x-api-key": PROVIDER_KEY}
        if sent:
            headers["anthropic-version"] = sent
        response = httpx.post(f"{proxy.url}/v1/messages", json=body, headers=headers)
        assert response.status_code == 200, response.text
        assert [v for k, v in fakes["anthropic"].received[-1].raw_headers if k == "anthropic-version"] == [arrived]
    for row in rows(db, org_.id, 3):
        assert_event(row, expected(stream=False))


def test_count_tokens_is_forwarded_and_costs_nothing(
    proxy: ProxyProcess, fakes: FakeProviders, db: Any, org: Any
) -> None:
    org_, key = org
    counted = sdk(proxy, key).messages.count_tokens(model=MODEL, system=CACHED_SYSTEM, messages=MESSAGES)
    assert counted.input_tokens == ALL_INPUT
    assert fakes["anthropic"].received[-1].path == "/v1/messages/count_tokens"
    [row] = rows(db, org_.id, 1)
    assert (row["provider"], row["endpoint"], row["status_code"], row["model"]) == (
        "anthropic",
        "messages/count_tokens",
        200,
        MODEL,
    )
    # Counting tokens is free: no usage, no cost, nothing estimated.
    assert (row["input_tokens"], row["output_tokens"], row["cost_usd"], row["usage_estimated"]) == (
        None,
        None,
        None,
        False,
    )


def test_requests_without_a_model_go_to_anthropic_for_its_sdk(
    proxy: ProxyProcess, fakes: FakeProviders, db: Any, org: Any
) -> None:
    """`models.list()` (or a batch, a file) has no body to detect from: the SDK's `anthropic-version`
    header says whose API it is."""
    org_, key = org
    page = sdk(proxy, key).models.list()
    assert [model.id for model in page.data] == [SNAPSHOT]
    received = fakes["anthropic"].received[-1]
    assert (received.method, received.path, received.headers["x-api-key"]) == ("GET", "/v1/models", PROVIDER_KEY)
    [row] = rows(db, org_.id, 1)
    assert (row["provider"], row["provider_unknown"], row["endpoint"], row["status_code"]) == (
        "anthropic",
        False,
        "models",
        200,
    )


def test_missing_lectr_key_is_an_anthropic_shaped_401_without_the_key(
    proxy: ProxyProcess, fakes: FakeProviders, org: Any
) -> None:
    with pytest.raises(anthropic.AuthenticationError) as caught:
        sdk(proxy, None).messages.create(model=MODEL, max_tokens=16, messages=MESSAGES)
    error = caught.value
    assert error.status_code == 401
    assert error.body["type"] == "error" and error.body["error"]["type"] == "authentication_error"
    assert "X-Lectr-Key" in error.body["error"]["message"]
    assert PROVIDER_KEY not in error.response.text
    assert fakes["anthropic"].received == []


def test_provider_errors_reach_the_sdk_unchanged(proxy: ProxyProcess, fakes: FakeProviders, db: Any, org: Any) -> None:
    org_, key = org
    with pytest.raises(anthropic.RateLimitError) as caught:
        sdk(proxy, key).messages.create(
            model=MODEL, max_tokens=16, messages=MESSAGES, extra_headers={"x-fake-scenario": "error-429"}
        )
    assert caught.value.body == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": "Rate limit reached for requests"},
    }
    [row] = rows(db, org_.id, 1)
    assert (row["status_code"], row["error_type"], row["error_message"]) == (
        429,
        "rate_limit_error",
        "Rate limit reached for requests",
    )


def test_error_event_mid_stream_is_recorded_with_the_usage_seen(
    proxy: ProxyProcess, fakes: FakeProviders, db: Any, org: Any
) -> None:
    """Anthropic reports an overload after the stream began as `event: error` (status 200)."""
    org_, key = org
    with pytest.raises(anthropic.APIStatusError) as caught:
        with sdk(proxy, key).messages.stream(
            model=MODEL,
            max_tokens=64,
            system=CACHED_SYSTEM,
            messages=MESSAGES,
            extra_headers={"x-fake-scenario": "stream-error-event"},
        ) as stream:
            for _ in stream:
                pass
    assert caught.value.body["error"]["type"] == "overloaded_error"
    [row] = rows(db, org_.id, 1)
    assert (row["status_code"], row["error_type"], row["error_message"]) == (200, "overloaded_error", "Overloaded")
    # message_start's input and cache tokens are kept; the output was never reported, so it is estimated.
    assert (row["input_tokens"], row["cached_input_tokens"], row["cache_write_tokens"]) == (
        ALL_INPUT,
        ANTHROPIC_CACHE_READ,
        ANTHROPIC_CACHE_WRITE,
    )
    assert row["usage_estimated"] is True and row["output_tokens"] >= 1 and row["cost_usd"] > 0


def test_stream_is_complete_at_message_stop_even_if_the_client_leaves_then(
    proxy: ProxyProcess, fakes: FakeProviders, db: Any, org: Any
) -> None:
    """`message_stop` is Anthropic's last event (there is no `[DONE]`): a client that closes its
    connection right after it, before the provider has closed the stream, got a whole answer."""
    org_, key = org
    body = {"model": MODEL, "max_tokens": 64, "messages": MESSAGES, "system": CACHED_SYSTEM, "stream": True}
    headers = {"X-Lectr-Key": key, "x-api-key": PROVIDER_KEY, "x-fake-scenario": "linger-after-end"}
    seen = b""
    with httpx.stream("POST", f"{proxy.url}/v1/messages", json=body, headers=headers, timeout=10) as response:
        for chunk in response.iter_raw():
            seen += chunk
            if b"event: message_stop" in seen:
                break
    [row] = rows(db, org_.id, 1)
    assert_event(row, expected(stream=True))
