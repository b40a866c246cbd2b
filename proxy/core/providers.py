"""The providers Lectr speaks to, in one table every room reads.

A provider's name is a key across the house: the `X-Lectr-Provider` header, routing rules and
their targets, the `provider` column of events, the dashboard's pickers. Each name carries what
the other rooms need to know about it: the model-name prefixes that detect it, its default base
URL (and the variable overriding it), its id in `genai-prices`, its OpenTelemetry name, and whose
models it serves (for the recommendations' ladders). Pure data and two pure functions, so the
pipeline, the store, accounting, the CLI, analytics and the dashboard may all import it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache


@dataclass(frozen=True, slots=True)
class Provider:
    name: str
    # Its provider id in genai-prices (which calls Gemini's API "google").
    price_id: str
    # `gen_ai.provider.name` in the OpenTelemetry GenAI conventions (a well-known value).
    otel_name: str
    # Whose model family it serves: Azure runs OpenAI's models (analytics/ladders.py).
    vendor: str
    # Where its API lives unless `LECTR_<NAME>_BASE_URL` says otherwise; None for Azure, whose
    # endpoint each org sets.
    base_url: str | None
    # Model-name prefixes that say a request is for it (lower case; see `detect_model`).
    model_prefixes: tuple[str, ...] = ()

    @property
    def base_url_variable(self) -> str:
        return f"LECTR_{self.name.upper()}_BASE_URL"


REGISTRY: tuple[Provider, ...] = (
    Provider(
        "openai",
        price_id="openai",
        otel_name="openai",
        vendor="openai",
        base_url="https://api.openai.com/v1",
        model_prefixes=(
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
    Provider(
        "anthropic",
        price_id="anthropic",
        otel_name="anthropic",
        vendor="anthropic",
        base_url="https://api.anthropic.com/v1",
        model_prefixes=("claude-",),
    ),
    Provider(
        "groq",
        price_id="groq",
        otel_name="groq",
        vendor="groq",
        base_url="https://api.groq.com/openai/v1",
        # Open-weight families (and OpenAI's open-weight gpt-oss under `openai/`).
        model_prefixes=(
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
    Provider(
        "gemini",
        price_id="google",
        otel_name="gcp.gemini",
        vendor="gemini",
        base_url="https://generativelanguage.googleapis.com/v1beta/openai",
        model_prefixes=("gemini-", "models/gemini-"),
    ),
    # Deployments are named by each org, so no model name says "azure": only a header or a rule does.
    Provider("azure", price_id="azure", otel_name="azure.ai.openai", vendor="openai", base_url=None),
)

BY_NAME: dict[str, Provider] = {provider.name: provider for provider in REGISTRY}
# Every provider's name, in the order people see them (error messages, the dashboard's pickers).
PROVIDERS: tuple[str, ...] = tuple(BY_NAME)
# Where a request goes when nothing names its provider (flagged as unknown in its event).
FALLBACK = "openai"

# Detection checks these providers' prefixes in this order: Groq hosts open-weight models whose
# names overlap OpenAI's (`whisper-large-v3`, `openai/gpt-oss-`), so Groq comes before OpenAI.
_DETECTION_ORDER = ("anthropic", "gemini", "groq", "openai")
_PREFIXES: tuple[tuple[str, tuple[str, ...]], ...] = tuple(
    (name, BY_NAME[name].model_prefixes) for name in _DETECTION_ORDER
)


@lru_cache(maxsize=4096)
def detect_model(model: str) -> str | None:
    """The provider whose naming the model follows, or None."""
    name = model.strip().lower()
    for provider, prefixes in _PREFIXES:
        if name.startswith(prefixes):
            return provider
    return None


@dataclass(frozen=True, slots=True)
class Target:
    """A model on a provider: where a routing rule or a fallback sends a request."""

    provider: str
    model: str


def parse_target(text: str, default_provider: str | None = None) -> Target:
    """`model` or `provider:model`; without a provider, the rule's or the model's own."""
    head, sep, tail = text.partition(":")
    if sep and head.strip().lower() in PROVIDERS:
        return Target(head.strip().lower(), tail.strip())
    model = text.strip()
    return Target(default_provider or detect_model(model) or FALLBACK, model)
