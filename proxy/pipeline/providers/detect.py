"""Provider detection from the request's `model`, with the `X-Lectr-Provider` override."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

PROVIDERS = ("openai", "anthropic", "groq", "gemini", "azure")

# Prefixes of model names per provider, checked in order. Groq hosts open-weight families
# (and OpenAI's open-weight gpt-oss under `openai/`), so those are listed before OpenAI's.
_PREFIXES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("anthropic", ("claude-",)),
    ("gemini", ("gemini-", "models/gemini-")),
    (
        "groq",
        (
            "llama-",
            "llama3",
            "meta-llama/",
            "mixtral-",
            "gemma",
            "qwen",
            "deepseek-r1-distill-",
            "openai/gpt-oss-",
            "moonshotai/",
            "groq/",
            "compound-",
            "allam-",
            "mistral-saba-",
            "playai-",
            "distil-whisper-",
            "whisper-large-v3",
        ),
    ),
    (
        "openai",
        (
            "gpt-",
            "o1",
            "o3",
            "o4",
            "chatgpt-",
            "text-embedding-",
            "dall-e-",
            "whisper-",
            "tts-",
            "omni-moderation-",
            "text-moderation-",
            "davinci-",
            "babbage-",
            "codex-",
            "computer-use-",
        ),
    ),
)


@dataclass(frozen=True, slots=True)
class Detection:
    provider: str
    # True when neither the model nor the header named a provider we know (we fell back to openai).
    unknown: bool


@lru_cache(maxsize=4096)
def detect_model(model: str) -> str | None:
    """The provider whose naming the model follows, or None."""
    name = model.strip().lower()
    for provider, prefixes in _PREFIXES:
        if name.startswith(prefixes):
            return provider
    return None


def detect(model: str | None, header: str | None, anthropic_client: bool = False) -> Detection:
    """Who serves this request. A valid header wins; an invalid one falls back to openai, flagged.

    `anthropic_client`: the request carries `anthropic-version`, which only Anthropic's SDKs and
    API send. When the model names no provider (or there is none: `models.list()`, batches,
    files), that says the request is for Anthropic; otherwise its key would go to OpenAI."""
    if header is not None:
        wanted = header.strip().lower()
        if wanted in PROVIDERS:
            return Detection(wanted, False)
        return Detection("openai", True)
    found = detect_model(model) if model else None
    if found is None:
        return Detection("anthropic", False) if anthropic_client else Detection("openai", True)
    return Detection(found, False)
