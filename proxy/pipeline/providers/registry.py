"""The adapter for each provider name."""

from __future__ import annotations

from proxy.pipeline.providers.anthropic import Anthropic
from proxy.pipeline.providers.azure import Azure
from proxy.pipeline.providers.base import Adapter
from proxy.pipeline.providers.openai import OpenAICompatible

_ADAPTERS: dict[str, Adapter] = {
    "openai": OpenAICompatible("openai"),
    "groq": OpenAICompatible("groq"),
    "gemini": OpenAICompatible("gemini"),
    "anthropic": Anthropic(),
    "azure": Azure(),
}


def adapter_for(provider: str) -> Adapter:
    return _ADAPTERS[provider]
