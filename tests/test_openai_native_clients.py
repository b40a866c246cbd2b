"""Real OpenAI clients through the proxy: the `openai` SDK's Responses API and LangChain's `ChatOpenAI`.

The fakes speak the Responses API event for event (`tests/fakes_native.py`), so the SDK's own
stream accumulator (which needs each output item and content part before its text deltas) reads it
unchanged. Each request leaves one event, checked exactly (`tests/native_expect.py`).
"""

from __future__ import annotations

from typing import Any

import pytest
from langchain_openai import ChatOpenAI

from tests.conftest import ProxyProcess
from tests.fakes import CONTENT, FakeProviders
from tests.fakes_native import (
    RESPONSES_CACHED,
    RESPONSES_INPUT,
    RESPONSES_OUTPUT,
    RESPONSES_REASONING,
    TEXT,
)
from tests.native_expect import Expected, assert_event, rows
from tests.test_proxy_e2e import PROVIDER_KEY, client_for

RESPONSES_MODEL = "o4-mini"
# The order the real API emits a reasoning model's streamed answer in.
RESPONSES_EVENTS = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.output_item.done",
    "response.output_item.added",
    "response.content_part.added",
    *["response.output_text.delta"] * 6,
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]


@pytest.fixture
def org(new_org: Any, fakes: FakeProviders) -> Any:
    org, key = new_org("openai-native")
    fakes.reset()
    return org, key


def responses_expected(stream: bool) -> Expected:
    return Expected(
        provider="openai",
        endpoint="responses",
        stream=stream,
        model=RESPONSES_MODEL,
        response_model="o4-mini-2025-04-16",
        input_tokens=RESPONSES_INPUT,
        output_tokens=RESPONSES_OUTPUT,
        cached_input_tokens=RESPONSES_CACHED,
        reasoning_tokens=RESPONSES_REASONING,
    )


def test_responses_create(proxy: ProxyProcess, fakes: FakeProviders, db: Any, org: Any) -> None:
    org_, key = org
    response = client_for(proxy, key).responses.create(model=RESPONSES_MODEL, input="Say hello")
    assert response.output_text == TEXT
    usage = response.usage
    assert usage is not None
    assert (usage.input_tokens, usage.input_tokens_details.cached_tokens) == (RESPONSES_INPUT, RESPONSES_CACHED)
    assert usage.output_tokens_details.reasoning_tokens == RESPONSES_REASONING
    received = fakes["openai"].received[-1]
    assert received.path == "/v1/responses" and "stream_options" not in received.json()
    [row] = rows(db, org_.id, 1)
    assert_event(row, responses_expected(stream=False))


def test_responses_stream(proxy: ProxyProcess, fakes: FakeProviders, db: Any, org: Any) -> None:
    org_, key = org
    client = client_for(proxy, key)
    with client.responses.stream(model=RESPONSES_MODEL, input="Say hello") as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds == RESPONSES_EVENTS
    assert final.output_text == TEXT and final.usage is not None
    assert final.usage.output_tokens_details.reasoning_tokens == RESPONSES_REASONING
    # The proxy never adds `stream_options` to the Responses API (it has no such option).
    sent = fakes["openai"].received[-1].json()
    assert sent["stream"] is True and "stream_options" not in sent
    # The same request with `stream=True` on `create`: the events arrive numbered, in order.
    numbers = [
        event.sequence_number for event in client.responses.create(model=RESPONSES_MODEL, input="Hi", stream=True)
    ]
    assert numbers == list(range(len(RESPONSES_EVENTS)))
    for row in rows(db, org_.id, 2):
        assert_event(row, responses_expected(stream=True))


def test_responses_failed_in_stream_keeps_its_usage(
    proxy: ProxyProcess, fakes: FakeProviders, db: Any, org: Any
) -> None:
    """`response.failed` carries the final usage: recorded exactly, with the error it reports."""
    org_, key = org
    stream = client_for(proxy, key).responses.create(
        model=RESPONSES_MODEL, input="Hi", stream=True, extra_headers={"x-fake-scenario": "stream-error-event"}
    )
    assert [event.type for event in stream][-1] == "response.failed"
    [row] = rows(db, org_.id, 1)
    assert (row["status_code"], row["error_type"], row["error_message"]) == (
        200,
        "server_error",
        "The model failed to finish",
    )
    assert (row["input_tokens"], row["output_tokens"], row["reasoning_tokens"], row["usage_estimated"]) == (
        RESPONSES_INPUT,
        RESPONSES_OUTPUT,
        RESPONSES_REASONING,
        False,
    )
    assert row["cost_usd"] == responses_expected(stream=True).cost()


@pytest.mark.parametrize("stream_usage", [None, True], ids=["default", "stream_usage"])
def test_langchain_chat_openai_streaming(
    proxy: ProxyProcess, fakes: FakeProviders, db: Any, org: Any, stream_usage: bool | None
) -> None:
    """LangChain streams chat completions; with a base URL of its own it asks for no usage unless
    `stream_usage=True`. Either way the proxy records exact usage, and the client sees only what
    it asked for."""
    org_, key = org
    options: dict[str, Any] = {} if stream_usage is None else {"stream_usage": stream_usage}
    chat = ChatOpenAI(
        model="gpt-4o-mini",
        api_key=PROVIDER_KEY,
        base_url=f"{proxy.url}/v1",
        default_headers={"X-Lectr-Key": key},
        max_retries=0,
        **options,
    )
    chunks = list(chat.stream("Say hello"))
    assert "".join(str(chunk.content) for chunk in chunks) == CONTENT
    reported = [chunk.usage_metadata for chunk in chunks if chunk.usage_metadata]
    sent = fakes["openai"].received[-1].json()
    # Upstream always gets the usage option: the client's own, or the proxy's (stripped on return).
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    [row] = rows(db, org_.id, 1)
    # The fake's chat usage for one message: 14 prompt (4 cached), 6 completion (2 reasoning).
    assert_event(
        row,
        Expected(
            provider="openai",
            endpoint="chat/completions",
            stream=True,
            model="gpt-4o-mini",
            response_model="gpt-4o-mini",
            input_tokens=14,
            output_tokens=6,
            cached_input_tokens=4,
            reasoning_tokens=2,
        ),
    )
    if stream_usage:
        [usage] = reported
        assert (usage["input_tokens"], usage["output_tokens"]) == (row["input_tokens"], row["output_tokens"])
        assert usage["input_token_details"]["cache_read"] == row["cached_input_tokens"]
        assert usage["output_token_details"]["reasoning"] == row["reasoning_tokens"]
    else:
        assert reported == []  # the usage chunk the proxy asked for never reached the client
