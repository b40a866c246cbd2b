"""Provider error messages for events, with anything that looks like a credential removed."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

# Provider key shapes (OpenAI sk-/sk-proj-, Anthropic sk-ant-, Groq gsk_, Google AIza), bearer
# tokens, our own org keys, and any long unbroken token that could be a secret.
_SECRET = re.compile(
    r"(?i)\b(?:sk-[A-Za-z0-9_*\-]{4,}|gsk_[A-Za-z0-9_*]{4,}|AIza[A-Za-z0-9_\-]{10,}|lc_key_[A-Za-z0-9_\-]{4,})"
    r"|bearer\s+\S+"
    r"|\b[A-Za-z0-9_\-]{32,}\b"
)
_MAX_MESSAGE = 1000


def redact(text: str, secrets: Iterable[bytes] = ()) -> str:
    """The text without the given credentials (and their bearer tokens) or anything key-shaped."""
    for secret in secrets:
        value = secret.decode("latin-1")
        for candidate in (value, value.partition(" ")[2]):
            if len(candidate) >= 6:
                text = text.replace(candidate, "[redacted]")
    return _SECRET.sub("[redacted]", text)


def error_message(body: Any, status: int, secrets: Iterable[bytes] = ()) -> tuple[str, str | None]:
    """(error_type, message) from a provider's error body (OpenAI, Anthropic or Gemini shapes),
    with the request's own credentials and anything key-shaped removed."""
    if isinstance(body, list) and body:
        body = body[0]  # Gemini sometimes wraps the error object in a list
    error: Any = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, str):
        return f"http_{status}", redact(error, secrets)[:_MAX_MESSAGE]
    if not isinstance(error, dict):
        return f"http_{status}", None
    kind = error.get("type") or error.get("status") or error.get("code") or f"http_{status}"
    message = error.get("message")
    return (
        redact(str(kind), secrets)[:100],
        redact(message, secrets)[:_MAX_MESSAGE] if isinstance(message, str) else None,
    )
