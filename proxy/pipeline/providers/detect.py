"""Provider detection from the request's `model`, with the `X-Lectr-Provider` override.

The names and the model-name prefixes are the registry's (proxy/core/providers.py); this adds
the request's own signals: the header, and an Anthropic SDK's `anthropic-version`.
"""

from __future__ import annotations

from dataclasses import dataclass

from proxy.core.providers import FALLBACK, PROVIDERS, detect_model

__all__ = ["PROVIDERS", "Detection", "detect", "detect_model"]


@dataclass(frozen=True, slots=True)
class Detection:
    provider: str
    # True when neither the model nor the header named a provider we know (we fell back to openai).
    unknown: bool


def detect(model: str | None, header: str | None, anthropic_client: bool = False) -> Detection:
    """Who serves this request. A valid header wins; an invalid one falls back to openai, flagged.

    `anthropic_client`: the request carries `anthropic-version`, which only Anthropic's SDKs and
    API send. When the model names no provider (or there is none: `models.list()`, batches,
    files), that says the request is for Anthropic; otherwise its key would go to OpenAI."""
    if header is not None:
        wanted = header.strip().lower()
        if wanted in PROVIDERS:
            return Detection(wanted, False)
        return Detection(FALLBACK, True)
    found = detect_model(model) if model else None
    if found is None:
        return Detection("anthropic", False) if anthropic_client else Detection(FALLBACK, True)
    return Detection(found, False)
