"""The adapter for each provider name."""

from __future__ import annotations

from proxy.providers.anthropic import Anthropic
from proxy.providers.azure import Azure
from proxy.providers.base import Adapter
from proxy.providers.openai import OpenAICompatible

_ADAPTERS: dict[str, Adapter] = {
    "openai": OpenAICompatible("openai"),
    "groq": OpenAICompatible("groq"),
    "gemini": OpenAICompatible("gemini"),
    "anthropic": Anthropic(),
    "azure": Azure(),
}


def adapter_for(provider: str) -> Adapter:
    return _ADAPTERS[provider]
