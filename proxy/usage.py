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


def from_body(body: Any) -> Usage | None:
    """Usage from a whole response body or one stream chunk (Groq puts it in `x_groq`)."""
    if not isinstance(body, dict):
        return None
    found = normalise(body.get("usage"))
    if found is None:
        x_groq = body.get("x_groq")
        if isinstance(x_groq, dict):
            found = normalise(x_groq.get("usage"))
    if found is None:
        response = body.get("response")  # Responses API stream: {"type": "response.completed", "response": {...}}
        if isinstance(response, dict):
            found = normalise(response.get("usage"))
    return found


def estimate_tokens(byte_count: int) -> int:
    """A rough token count for text we could not get usage for (about 4 bytes a token)."""
    return max(0, (byte_count + 3) // 4)
