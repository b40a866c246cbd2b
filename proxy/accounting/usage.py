"""Token usage, normalised across providers (pure functions, no I/O).

Our columns mean the same thing for every provider:

- `input_tokens`: every prompt token, *including* cache reads and cache writes;
- `cached_input_tokens` / `cache_write_tokens`: the parts of `input_tokens` read from / written
  to the provider's prompt cache (billed at their own rates);
- `output_tokens`: every generated token, *including* reasoning ("thinking") tokens;
- `reasoning_tokens`: the part of `output_tokens` spent reasoning.

Shapes handled: OpenAI/Azure/Groq/Gemini chat and embeddings (`prompt_tokens`, details objects;
OpenAI counts cached tokens inside `prompt_tokens` and reasoning inside `completion_tokens`, so
they are never added twice), the Responses API (`input_tokens` + details), Anthropic's native
Messages API (`input_tokens` *excludes* `cache_read_input_tokens` and
`cache_creation_input_tokens`, so they are added), Groq's `x_groq.usage` in stream chunks, and
Gemini's thinking tokens, which it reports only through `total_tokens` exceeding the sum.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _details(usage: dict[str, Any], key: str) -> dict[str, Any]:
    value = usage.get(key)
    return value if isinstance(value, dict) else {}


def normalise(usage: Any) -> Usage | None:
    """Normalise one provider `usage` object; None when it holds no token counts."""
    if not isinstance(usage, dict):
        return None
    if "prompt_tokens" in usage or "completion_tokens" in usage:
        prompt = _int(usage.get("prompt_tokens"))
        completion = _int(usage.get("completion_tokens"))
        prompt_details = _details(usage, "prompt_tokens_details")
        completion_details = _details(usage, "completion_tokens_details")
        cached = _int(prompt_details.get("cached_tokens"))
        cache_write = _int(prompt_details.get("cache_write_tokens")) or _int(
            prompt_details.get("cache_creation_tokens")
        )
        reasoning = _int(completion_details.get("reasoning_tokens"))
        total = _int(usage.get("total_tokens"))
        if not reasoning and total > prompt + completion:
            # Gemini's compatibility layer leaves thinking tokens out of completion_tokens.
            reasoning = total - prompt - completion
            completion += reasoning
        return Usage(prompt, completion, min(cached, prompt), cache_write, min(reasoning, completion))
    if "input_tokens" in usage or "output_tokens" in usage:
        base_input = _int(usage.get("input_tokens"))
        output = _int(usage.get("output_tokens"))
        if "cache_read_input_tokens" in usage or "cache_creation_input_tokens" in usage:
            # Anthropic Messages: input_tokens counts only the uncached part.
            cached = _int(usage.get("cache_read_input_tokens"))
            write = _int(usage.get("cache_creation_input_tokens"))
            return Usage(base_input + cached + write, output, cached, write, 0)
        cached = _int(_details(usage, "input_tokens_details").get("cached_tokens"))
        reasoning = _int(_details(usage, "output_tokens_details").get("reasoning_tokens"))
        return Usage(base_input, output, min(cached, base_input), 0, min(reasoning, output))
    return None


# Where a body or stream event keeps its usage object, besides `usage` itself: Groq's stream chunks
# (`x_groq`), the Responses API's final events (`response.completed`/`.incomplete`/`.failed`
# carry the whole response), Anthropic's `message_start` (the message, with input and cache tokens).
_USAGE_HOLDERS = ("x_groq", "response", "message")


def raw_usage(body: Any) -> dict[str, Any] | None:
    """The provider's own usage object in a whole body or one stream event, as it is."""
    if not isinstance(body, dict):
        return None
    usage = body.get("usage")
    if isinstance(usage, dict) and usage:
        return usage
    for key in _USAGE_HOLDERS:
        holder = body.get(key)
        if isinstance(holder, dict):
            usage = holder.get("usage")
            if isinstance(usage, dict) and usage:
                return usage
    return None


def merge_raw(into: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Merge one event's usage object into what the stream reported before, field by field.

    Every provider's stream counts are running totals (Anthropic's `message_delta`, Gemini's
    repeated usage, a final usage chunk), so a field seen twice keeps its larger value: never
    summed twice, and never dropped by a later event that leaves it out, says null or says 0
    (Anthropic's `message_delta` carries only `output_tokens`; its `message_start` has the input
    and cache tokens). Nested details objects merge the same way."""
    for key, value in new.items():
        if value is None:
            continue
        old = into.get(key)
        if isinstance(value, dict):
            into[key] = merge_raw(dict(old) if isinstance(old, dict) else {}, value)
        elif isinstance(value, int | float) and not isinstance(value, bool) and isinstance(old, int | float):
            into[key] = max(old, value)
        else:
            into[key] = value
    return into


def from_body(body: Any) -> Usage | None:
    """Usage from a whole response body or one stream event."""
    return normalise(raw_usage(body))


def estimate_tokens(byte_count: int) -> int:
    """A rough token count for text we could not get usage for (about 4 bytes a token)."""
    return max(0, (byte_count + 3) // 4)
