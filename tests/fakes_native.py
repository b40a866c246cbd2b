"""The native wire formats of the fake providers: Anthropic's Messages API and OpenAI's Responses API.

`tests/fakes.py` routes `/v1/messages` (anthropic) and `/v1/responses` (openai, azure) here. Each
answer is what the real API sends, event for event and in its order, so the official SDKs (which
check the order: a text delta needs its output item and content part first) read it unchanged:

- Anthropic, streamed: `message_start` (input and cache tokens, `output_tokens: 1`),
  `content_block_start`, `ping` (written `{"type": "ping"}`, with its space), one
  `content_block_delta` per word, `content_block_stop`, `message_delta` (the stop reason and
  *only* `output_tokens`), `message_stop`; every event with its `event:` line. A plain answer
  has the same usage in one object. `messages/count_tokens` answers `{"input_tokens": N}`,
  `models` Anthropic's model list.
- Responses, streamed: `response.created`, `response.in_progress` (both with `usage: null`), for
  a reasoning model a reasoning item (`output_item.added`/`.done`), then the message item:
  `output_item.added`, `content_part.added`, one `output_text.delta` per word,
  `output_text.done`, `content_part.done`, `output_item.done`, and `response.completed` with the
  whole response and its usage; `sequence_number` counts from 0, and there is no `[DONE]`.

Usage is fixed per model family so a test can compute the cost by hand (see `anthropic_usage`
and `responses_usage`). Anthropic reports cache tokens only when the request has a
`cache_control` block, as the real API does. Scenarios (`x-fake-scenario`): `stream-error-event`
(Anthropic's `event: error` after the first delta, status 200; for Responses a `response.failed`
with usage), `linger-after-end` (five SSE comments 0.2 s apart after the last event, then the end).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

TEXT_WORDS = ["Hello", " from", " the", " fake", " provider", "!"]
TEXT = "".join(TEXT_WORDS)
Plan = tuple[int, list[tuple[bytes, bytes]], Iterator[tuple[float, bytes | None]]]

# What the real APIs answer for these aliases (the response names the dated snapshot).
_SNAPSHOTS = {
    "claude-sonnet-4-0": "claude-sonnet-4-20250514",
    "claude-3-5-haiku-latest": "claude-3-5-haiku-20241022",
    "o4-mini": "o4-mini-2025-04-16",
    "gpt-4o-mini": "gpt-4o-mini-2024-07-18",
    "gpt-4o": "gpt-4o-2024-08-06",
}

# Anthropic: fresh input, cache reads and writes (with a `cache_control` block), output.
ANTHROPIC_INPUT, ANTHROPIC_CACHE_READ, ANTHROPIC_CACHE_WRITE, ANTHROPIC_OUTPUT = 50, 2000, 300, 120
# Responses API: input (cached part included), cached, output (reasoning part included), reasoning.
RESPONSES_INPUT, RESPONSES_CACHED, RESPONSES_OUTPUT, RESPONSES_REASONING = 1200, 1024, 300, 256


def snapshot(model: str) -> str:
    return _SNAPSHOTS.get(model, model)


def _sse(name: str, payload: dict[str, Any], *, ping_style: bool = False) -> bytes:
    data = json.dumps(payload) if ping_style else json.dumps(payload, separators=(",", ":"))
    return f"event: {name}\ndata: {data}\n\n".encode()


def _json(headers: list[tuple[bytes, bytes]], payload: Any, status: int = 200) -> Plan:
    body = json.dumps(payload, separators=(",", ":")).encode()
    extra = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    return status, [*headers, *extra], iter([(0.0, body)])


def _stream(headers: list[tuple[bytes, bytes]], events: list[bytes], scenario: str) -> Plan:
    extra = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache")]
    plan: list[tuple[float, bytes | None]] = [(0.0, event) for event in events]
    if scenario == "linger-after-end":
        plan += [(0.2, b": the provider has not closed the stream yet\n\n")] * 5  # SSE comments
    return 200, [*headers, *extra], iter(plan)


# -- Anthropic Messages ----------------------------------------------------------------------------


def anthropic_usage(data: dict[str, Any], output: int = ANTHROPIC_OUTPUT) -> dict[str, Any]:
    cached = "cache_control" in json.dumps(data)
    read, write = (ANTHROPIC_CACHE_READ, ANTHROPIC_CACHE_WRITE) if cached else (0, 0)
    return {
        "input_tokens": ANTHROPIC_INPUT,
        "cache_creation_input_tokens": write,
        "cache_read_input_tokens": read,
        "cache_creation": {"ephemeral_5m_input_tokens": write, "ephemeral_1h_input_tokens": 0},
        "output_tokens": output,
        "service_tier": "standard",
    }


def anthropic(headers: list[tuple[bytes, bytes]], endpoint: str, data: dict[str, Any], scenario: str) -> Plan:
    headers = [*headers, (b"request-id", b"req_011CFakeAnthropic"), (b"anthropic-organization-id", b"org-fake")]
    if endpoint == "messages/count_tokens":
        usage = anthropic_usage(data)
        total = usage["input_tokens"] + usage["cache_creation_input_tokens"] + usage["cache_read_input_tokens"]
        return _json(headers, {"input_tokens": total})
    if endpoint == "models":
        listed = {"type": "model", "id": "claude-sonnet-4-20250514", "display_name": "Claude Sonnet 4",
                  "created_at": "2025-05-22T00:00:00Z"}  # fmt: skip
        page = {"data": [listed], "has_more": False, "first_id": listed["id"], "last_id": listed["id"]}
        return _json(headers, page)
    if endpoint != "messages":
        return _json(headers, {"type": "error", "error": {"type": "not_found_error", "message": "Not found"}}, 404)
    model = snapshot(str(data.get("model")))
    message: dict[str, Any] = {
        "id": "msg_01FakeMessage",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": anthropic_usage(data, output=1),
    }
    if not data.get("stream"):
        whole = {
            **message,
            "content": [{"type": "text", "text": TEXT}],
            "stop_reason": "end_turn",
            "usage": anthropic_usage(data),
        }
        return _json(headers, whole)
    events = [
        _sse("message_start", {"type": "message_start", "message": message}),
        _sse(
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        ),
        _sse("ping", {"type": "ping"}, ping_style=True),
    ]
    for word in TEXT_WORDS:
        delta = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": word}}
        events.append(_sse("content_block_delta", delta))
        if scenario == "stream-error-event":
            error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
            events.append(_sse("error", error))
            return _stream(headers, events, scenario)
    events += [
        _sse("content_block_stop", {"type": "content_block_stop", "index": 0}),
        _sse(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": ANTHROPIC_OUTPUT},
            },
        ),
        _sse("message_stop", {"type": "message_stop"}),
    ]
    return _stream(headers, events, scenario)


# -- OpenAI Responses ------------------------------------------------------------------------------


def reasoning_model(model: str) -> bool:
    return model.startswith(("o1", "o3", "o4", "gpt-5"))


def responses_usage(model: str) -> dict[str, Any]:
    reasoning = RESPONSES_REASONING if reasoning_model(model) else 0
    return {
        "input_tokens": RESPONSES_INPUT,
        "input_tokens_details": {"cached_tokens": RESPONSES_CACHED},
        "output_tokens": RESPONSES_OUTPUT,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": RESPONSES_INPUT + RESPONSES_OUTPUT,
    }


def _response(data: dict[str, Any], status: str, output: list[Any], usage: Any) -> dict[str, Any]:
    model = snapshot(str(data.get("model")))
    return {
        "id": "resp_fake1",
        "object": "response",
        "created_at": 1763791200,
        "status": status,
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": data.get("instructions"),
        "max_output_tokens": data.get("max_output_tokens"),
        "model": model,
        "output": output,
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": {"effort": "medium", "summary": None}
        if reasoning_model(model)
        else {"effort": None, "summary": None},
        "service_tier": "default",
        "store": True,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}, "verbosity": "medium"},
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": usage,
        "user": None,
        "metadata": {},
    }


def responses(headers: list[tuple[bytes, bytes]], data: dict[str, Any], scenario: str) -> Plan:
    model = snapshot(str(data.get("model")))
    reasoning_item = {"id": "rs_fake1", "type": "reasoning", "summary": []}
    part = {"type": "output_text", "annotations": [], "logprobs": [], "text": TEXT}
    message_item = {"id": "msg_fake1", "type": "message", "status": "completed", "content": [part], "role": "assistant"}
    output = ([reasoning_item] if reasoning_model(model) else []) + [message_item]
    if not data.get("stream"):
        return _json(headers, _response(data, "completed", output, responses_usage(model)))
    events: list[bytes] = []

    def emit(kind: str, **fields: Any) -> None:
        events.append(_sse(kind, {"type": kind, "sequence_number": len(events), **fields}))

    emit("response.created", response=_response(data, "in_progress", [], None))
    emit("response.in_progress", response=_response(data, "in_progress", [], None))
    index = 0
    if reasoning_model(model):
        emit("response.output_item.added", output_index=0, item=reasoning_item)
        emit("response.output_item.done", output_index=0, item=reasoning_item)
        index = 1
    started = {**message_item, "status": "in_progress", "content": []}
    where = {"item_id": "msg_fake1", "output_index": index, "content_index": 0}
    emit("response.output_item.added", output_index=index, item=started)
    emit("response.content_part.added", **where, part={**part, "text": ""})
    for number, word in enumerate(TEXT_WORDS):
        emit("response.output_text.delta", **where, delta=word, logprobs=[], obfuscation="x" * (number % 3 + 1))
        if scenario == "stream-error-event":
            failed = _response(data, "failed", [], responses_usage(model))
            failed["error"] = {"code": "server_error", "message": "The model failed to finish"}
            emit("response.failed", response=failed)
            return _stream(headers, events, scenario)
    emit("response.output_text.done", **where, text=TEXT, logprobs=[])
    emit("response.content_part.done", **where, part=part)
    emit("response.output_item.done", output_index=index, item=message_item)
    emit("response.completed", response=_response(data, "completed", output, responses_usage(model)))
    return _stream(headers, events, scenario)
