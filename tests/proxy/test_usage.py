"""Usage normalisation: one table of cases per provider."""

from __future__ import annotations

from typing import Any

import pytest

from proxy.accounting.usage import Usage, from_body, normalise

OPENAI = [
    ({"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}, Usage(10, 5)),
    (
        {
            "prompt_tokens": 100,
            "completion_tokens": 50,
            "total_tokens": 150,
            "prompt_tokens_details": {"cached_tokens": 60},
            "completion_tokens_details": {"reasoning_tokens": 20},
        },
        Usage(100, 50, cached_input_tokens=60, reasoning_tokens=20),  # never counted twice
    ),
    ({"prompt_tokens": 8, "total_tokens": 8}, Usage(8, 0)),  # embeddings
    (  # Responses API
        {
            "input_tokens": 30,
            "output_tokens": 9,
            "input_tokens_details": {"cached_tokens": 10},
            "output_tokens_details": {"reasoning_tokens": 4},
        },
        Usage(30, 9, cached_input_tokens=10, reasoning_tokens=4),
    ),
]
ANTHROPIC = [
    ({"prompt_tokens": 14, "completion_tokens": 6, "total_tokens": 20}, Usage(14, 6)),  # OpenAI-compatible endpoint
    (  # native Messages API: input_tokens excludes cache reads and writes
        {"input_tokens": 50, "output_tokens": 7, "cache_read_input_tokens": 1000, "cache_creation_input_tokens": 200},
        Usage(1250, 7, cached_input_tokens=1000, cache_write_tokens=200),
    ),
]
GROQ = [
    ({"prompt_tokens": 14, "completion_tokens": 6, "total_tokens": 20, "queue_time": 0.01}, Usage(14, 6)),
]
GEMINI = [
    # thinking tokens only visible through total_tokens
    ({"prompt_tokens": 14, "completion_tokens": 6, "total_tokens": 27}, Usage(14, 13, reasoning_tokens=7)),
    (
        {
            "prompt_tokens": 14,
            "completion_tokens": 16,
            "total_tokens": 30,
            "completion_tokens_details": {"reasoning_tokens": 10},
        },
        Usage(14, 16, reasoning_tokens=10),
    ),
]


@pytest.mark.parametrize(("raw", "expected"), OPENAI + ANTHROPIC + GROQ + GEMINI)
def test_normalise(raw: dict[str, Any], expected: Usage) -> None:
    assert normalise(raw) == expected


@pytest.mark.parametrize("raw", [None, {}, "x", {"foo": 1}, []])
def test_no_usage(raw: Any) -> None:
    assert normalise(raw) is None


def test_bad_values_are_zero_not_crashes() -> None:
    assert normalise({"prompt_tokens": "10", "completion_tokens": -3, "total_tokens": None}) == Usage(0, 0)


def test_groq_stream_chunk_usage_in_x_groq() -> None:
    chunk = {"choices": [], "x_groq": {"id": "r", "usage": {"prompt_tokens": 3, "completion_tokens": 2}}}
    assert from_body(chunk) == Usage(3, 2)


def test_responses_stream_completed_event() -> None:
    event = {"type": "response.completed", "response": {"usage": {"input_tokens": 5, "output_tokens": 1}}}
    assert from_body(event) == Usage(5, 1)


def test_embeddings_summary_reads_model_and_usage_without_the_vectors() -> None:
    import orjson

    from proxy.pipeline.relay import embeddings_summary

    vectors = [{"object": "embedding", "index": i, "embedding": [0.001 * j for j in range(1536)]} for i in range(2)]
    body = orjson.dumps(
        {
            "object": "list",
            "data": vectors,
            "model": "text-embedding-3-small",
            "usage": {"prompt_tokens": 17, "total_tokens": 17},
        }
    )
    assert embeddings_summary(body) == {
        "model": "text-embedding-3-small",
        "usage": {"prompt_tokens": 17, "total_tokens": 17},
    }
    spaced = body.replace(b'"usage":{', b'"usage" : {').replace(b'"model":"', b'"model": "')
    assert embeddings_summary(spaced) is None  # not the shape we look for: the whole parse decides
    assert embeddings_summary(body[:-30]) is None  # truncated usage: not guessed
    assert embeddings_summary(b'{"usage":{"prompt_tokens":1},"model":"m"}') is None  # small: parsed whole


def test_a_big_embeddings_answer_gets_exact_usage_in_its_event() -> None:
    import datetime as dt

    import orjson

    from proxy.accounting.record import Event
    from proxy.pipeline.body import RequestInfo
    from proxy.pipeline.relay import Relay

    data = [{"object": "embedding", "index": 0, "embedding": [0.5] * 3072}]
    body = orjson.dumps(
        {
            "object": "list",
            "data": data,
            "model": "text-embedding-3-large",
            "usage": {"prompt_tokens": 9, "total_tokens": 9},
        }
    )
    event = Event(
        org_id=1, created_at=dt.datetime.now(dt.UTC), provider="openai", endpoint="embeddings", status_code=200
    )
    relay = Relay(event, RequestInfo(), 0.0)
    relay.body = body
    relay.finish()
    assert (event.input_tokens, event.response_model, event.usage_estimated) == (9, "text-embedding-3-large", False)
