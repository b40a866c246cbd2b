"""The SSE relay: exact bytes when we strip what we added, untouched when the client asked."""

from __future__ import annotations

import json

import pytest

from proxy.accounting.usage import Usage
from proxy.pipeline.sse import SSEStream


def chunk(content: str | None, *, usage: object = "absent", choices: object = None) -> bytes:
    obj: dict[str, object] = {"id": "c1", "object": "chat.completion.chunk", "model": "gpt-4o-2024-08-06"}
    obj["choices"] = choices if choices is not None else [{"index": 0, "delta": {"content": content}}]
    if usage != "absent":
        obj["usage"] = usage
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


WITHOUT = [chunk("Hel"), chunk("lo"), b"data: [DONE]\n\n"]
WITH = [
    chunk("Hel", usage=None),
    chunk("lo", usage=None),
    chunk(None, usage={"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}, choices=[]),
    b"data: [DONE]\n\n",
]


def relay(stream: SSEStream, parts: list[bytes]) -> bytes:
    return b"".join(stream.feed(part) for part in parts) + stream.flush()


@pytest.mark.parametrize("split", [1, 7, 64, 10_000])
def test_strip_restores_the_stream_without_the_option(split: int) -> None:
    data = b"".join(WITH)
    parts = [data[i : i + split] for i in range(0, len(data), split)]
    stream = SSEStream(strip=True)
    assert relay(stream, parts) == b"".join(WITHOUT)
    assert stream.usage == Usage(9, 2) and stream.done and stream.response_model == "gpt-4o-2024-08-06"


def test_passthrough_when_client_asked() -> None:
    stream = SSEStream(strip=False)
    assert relay(stream, WITH) == b"".join(WITH)
    assert stream.usage == Usage(9, 2)


def test_crlf_framing_and_comments() -> None:
    data = b": keep-alive\r\n\r\n" + b"".join(WITH).replace(b"\n\n", b"\r\n\r\n")
    stream = SSEStream(strip=True)
    out = relay(stream, [data])
    assert out == b": keep-alive\r\n\r\n" + b"".join(WITHOUT).replace(b"\n\n", b"\r\n\r\n")
    assert stream.usage == Usage(9, 2)


def test_stream_cut_before_usage_has_no_usage_but_counts_events() -> None:
    stream = SSEStream(strip=True)
    relay(stream, WITH[:2])
    assert stream.usage is None and stream.events == 2 and not stream.done


def test_groq_x_groq_usage_is_read_and_kept() -> None:
    last = (
        b'data: {"id":"c","choices":[{"delta":{},"finish_reason":"stop"}],'
        b'"x_groq":{"id":"r","usage":{"prompt_tokens":3,"completion_tokens":1}}}\n\n'
    )
    stream = SSEStream(strip=True)
    assert relay(stream, [last]) == last
    assert stream.usage == Usage(3, 1)


# -- usage merged across a stream's events, per provider -------------------------------------------


def sse(*events: tuple[str | None, dict[str, object]]) -> list[bytes]:
    out = []
    for name, payload in events:
        line = b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"
        out.append((b"event: " + name.encode() + b"\n" if name else b"") + line)
    return out


ANTHROPIC_START_AND_DELTA = sse(
    (
        "message_start",
        {
            "type": "message_start",
            "message": {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "model": "claude-3-5-sonnet-20241022",
                "content": [],
                "stop_reason": None,
                "usage": {
                    "input_tokens": 50,
                    "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": 2000,
                    "output_tokens": 1,
                },
            },
        },
    ),
    ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
    ("ping", {"type": "ping"}),
    ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}}),
    ("content_block_stop", {"type": "content_block_stop", "index": 0}),
    ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 15}}),
    ("message_stop", {"type": "message_stop"}),
)
# Gemini's compatibility layer repeats a running usage on several chunks.
GEMINI_REPEATED = sse(
    (None, {"model": "gemini-2.0-flash", "choices": [{"delta": {"content": "a"}}],
            "usage": {"prompt_tokens": 7, "completion_tokens": 1, "total_tokens": 8}}),
    (None, {"model": "gemini-2.0-flash", "choices": [{"delta": {"content": "b"}}],
            "usage": {"prompt_tokens": 7, "completion_tokens": 4, "total_tokens": 11}}),
) + [b"data: [DONE]\n\n"]  # fmt: skip
OPENAI_LAST_ONLY = sse(
    (None, {"model": "gpt-4o", "choices": [{"delta": {"content": "a"}}], "usage": None}),
    (None, {"model": "gpt-4o", "choices": [], "usage": {
        "prompt_tokens": 30, "completion_tokens": 9, "total_tokens": 39,
        "prompt_tokens_details": {"cached_tokens": 20}, "completion_tokens_details": {"reasoning_tokens": 4}}}),
) + [b"data: [DONE]\n\n"]  # fmt: skip
GROQ_X_GROQ = sse(
    (None, {"model": "llama-3.1-8b-instant", "choices": [{"delta": {"content": "a"}}]}),
    (None, {"model": "llama-3.1-8b-instant", "choices": [{"delta": {}, "finish_reason": "stop"}],
            "x_groq": {"id": "req_1", "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}}}),
) + [b"data: [DONE]\n\n"]  # fmt: skip


def responses_stream(final: str) -> list[bytes]:
    usage = {"input_tokens": 40, "input_tokens_details": {"cached_tokens": 32}, "output_tokens": 12,
             "output_tokens_details": {"reasoning_tokens": 5}, "total_tokens": 52}  # fmt: skip
    return sse(
        ("response.created", {"type": "response.created", "response": {"model": "o4-mini", "usage": None}}),
        ("response.output_text.delta", {"type": "response.output_text.delta", "delta": "Hi"}),
        (final, {"type": final, "response": {"model": "o4-mini", "status": final.split(".")[1], "usage": usage}}),
    )


NO_USAGE = sse((None, {"model": "gpt-4o", "choices": [{"delta": {"content": "a"}}]})) + [b"data: [DONE]\n\n"]


@pytest.mark.parametrize(
    ("events", "usage", "model"),
    [
        pytest.param(ANTHROPIC_START_AND_DELTA, Usage(2050, 15, 2000, 0, 0), "claude-3-5-sonnet-20241022",
                     id="anthropic-start-and-delta"),
        pytest.param(GEMINI_REPEATED, Usage(7, 4), "gemini-2.0-flash", id="gemini-repeated"),
        pytest.param(OPENAI_LAST_ONLY, Usage(30, 9, 20, 0, 4), "gpt-4o", id="openai-last-event-only"),
        pytest.param(GROQ_X_GROQ, Usage(12, 3), "llama-3.1-8b-instant", id="groq-x-groq"),
        pytest.param(responses_stream("response.completed"), Usage(40, 12, 32, 0, 5), "o4-mini",
                     id="responses-completed"),
        pytest.param(responses_stream("response.incomplete"), Usage(40, 12, 32, 0, 5), "o4-mini",
                     id="responses-incomplete"),
        pytest.param(responses_stream("response.failed"), Usage(40, 12, 32, 0, 5), "o4-mini", id="responses-failed"),
        pytest.param(NO_USAGE, None, "gpt-4o", id="no-usage"),
    ],
)  # fmt: skip
@pytest.mark.parametrize("split", [3, 10_000])
def test_stream_usage_is_merged_field_by_field(
    events: list[bytes], usage: Usage | None, model: str, split: int
) -> None:
    data = b"".join(events)
    stream = SSEStream(strip=False)
    assert relay(stream, [data[i : i + split] for i in range(0, len(data), split)]) == data
    assert stream.usage == usage
    assert stream.response_model == model


def test_a_later_event_never_drops_or_doubles_a_field() -> None:
    """Anthropic's newer `message_delta` repeats the running totals, some as 0 or null: still one
    count of each, the largest seen."""
    events = ANTHROPIC_START_AND_DELTA[:-2] + sse(
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                           "usage": {"input_tokens": 50, "cache_read_input_tokens": None,
                                     "cache_creation_input_tokens": 0, "output_tokens": 15}}),
        ("message_stop", {"type": "message_stop"}),
    )  # fmt: skip
    stream = SSEStream(strip=False)
    relay(stream, events)
    assert stream.usage == Usage(2050, 15, 2000, 0, 0)


ANTHROPIC_ERROR = ANTHROPIC_START_AND_DELTA[:2] + sse(
    ("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
)
RESPONSES_ERROR_EVENT = responses_stream("response.completed")[:2] + sse(
    ("error", {"type": "error", "code": "ERR_SOMETHING", "message": "Something went wrong", "param": None}),
)
RESPONSES_FAILED = responses_stream("response.completed")[:2] + sse(
    ("response.failed", {"type": "response.failed", "response": {
        "model": "o4-mini", "status": "failed", "error": {"code": "server_error", "message": "failed"},
        "usage": {"input_tokens": 40, "output_tokens": 12}}}),
)  # fmt: skip
CHAT_ERROR_CHUNK = sse(
    (None, {"model": "gpt-4o", "choices": [{"delta": {"content": "a"}}]}),
    (None, {"error": {"message": "The server had an error", "type": "server_error"}}),
)
# Text that merely mentions errors is no error: inside a JSON string the key's quotes are escaped.
ERROR_IN_TEXT = sse(
    (None, {"model": "gpt-4o", "choices": [{"delta": {"content": '{"type":"error","error":{"x":1}}'}}]}),
) + [b"data: [DONE]\n\n"]


@pytest.mark.parametrize(
    ("events", "error", "cuts_short", "done"),
    [
        pytest.param(ANTHROPIC_ERROR, {"type": "overloaded_error", "message": "Overloaded"}, True, False,
                     id="anthropic-error-event"),
        pytest.param(RESPONSES_ERROR_EVENT, {"type": "ERR_SOMETHING", "message": "Something went wrong"}, True, False,
                     id="responses-error-event"),
        pytest.param(RESPONSES_FAILED, {"code": "server_error", "message": "failed"}, False, True,
                     id="responses-failed"),
        pytest.param(CHAT_ERROR_CHUNK, {"message": "The server had an error", "type": "server_error"}, True, False,
                     id="chat-error-chunk"),
        pytest.param(ANTHROPIC_START_AND_DELTA, None, False, True, id="anthropic-message-stop"),
        pytest.param(responses_stream("response.completed"), None, False, True, id="responses-completed"),
        pytest.param(responses_stream("response.incomplete"), None, False, True, id="responses-incomplete"),
        pytest.param(ERROR_IN_TEXT, None, False, True, id="error-only-in-text"),
    ],
)  # fmt: skip
def test_errors_inside_a_stream_and_its_last_event(
    events: list[bytes], error: dict[str, str] | None, cuts_short: bool, done: bool
) -> None:
    stream = SSEStream(strip=False)
    data = b"".join(events)
    assert relay(stream, [data[i : i + 5] for i in range(0, len(data), 5)]) == data
    assert stream.error == (None if error is None else {"error": error})
    assert (stream.error_cuts_short, stream.done) == (cuts_short, done)
