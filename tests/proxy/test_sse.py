"""The SSE relay: exact bytes when we strip what we added, untouched when the client asked."""

from __future__ import annotations

import json

import pytest

from proxy.sse import SSEStream
from proxy.usage import Usage


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
