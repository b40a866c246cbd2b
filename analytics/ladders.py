"""Downgrade ladders: for each model family, the cheaper models of the SAME provider to move to.

A family is matched by name prefix, so dated and hosted variants (`gpt-4o-2024-08-06`,
`claude-3-opus-20240229`, `llama-3.1-70b-versatile`, `models/gemini-1.5-pro-002`) find their
ladder. The longest matching prefix wins, which is why the small models are listed too (with no
rung): `gpt-4o-mini` must not be read as `gpt-4o`. A prefix only matches up to a separator
(`-`, `@`, `:` or the end), so `gpt-4` does not swallow `gpt-4.5-preview`.

Rungs run from the most conservative step to the most aggressive one; the engine picks among
them by task (see `recommend`). Each rung's `to_model` is a name the provider serves and that
`genai-prices` can price. Azure deployments use the OpenAI ladders (matched on the model Azure
reports), and a ladder never leaves its provider: that is the one place the rule is encoded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from proxy.core.providers import REGISTRY

Strength = Literal["conservative", "moderate", "aggressive", "strong"]

# Which Lectr providers may use a family's ladder: those serving its vendor's models (the
# registry's `vendor`: Azure serves OpenAI's).
PROVIDERS_OF: dict[str, frozenset[str]] = {
    vendor: frozenset(p.name for p in REGISTRY if p.vendor == vendor)
    for vendor in dict.fromkeys(p.vendor for p in REGISTRY)
}


@dataclass(frozen=True, slots=True)
class Rung:
    to_model: str
    strength: Strength


@dataclass(frozen=True, slots=True)
class Family:
    prefix: str
    vendor: str  # a key of PROVIDERS_OF
    rungs: tuple[Rung, ...] = ()


def _f(prefix: str, vendor: str, *rungs: tuple[str, Strength]) -> Family:
    return Family(prefix, vendor, tuple(Rung(m, s) for m, s in rungs))


FAMILIES: tuple[Family, ...] = (
    # OpenAI (and Azure OpenAI)
    _f("gpt-4o", "openai", ("gpt-4o-mini", "moderate")),
    _f("chatgpt-4o", "openai", ("gpt-4o-mini", "moderate")),
    _f("gpt-4o-mini", "openai"),
    _f("gpt-4-turbo", "openai", ("gpt-4o", "conservative"), ("gpt-4o-mini", "aggressive")),
    _f("gpt-4", "openai", ("gpt-4o", "conservative"), ("gpt-4o-mini", "aggressive")),
    _f("gpt-3.5-turbo", "openai", ("gpt-4o-mini", "conservative")),
    _f("gpt-4.1", "openai", ("gpt-4.1-mini", "moderate"), ("gpt-4.1-nano", "aggressive")),
    _f("gpt-4.1-mini", "openai", ("gpt-4.1-nano", "moderate")),
    _f("gpt-4.1-nano", "openai"),
    _f("gpt-5", "openai", ("gpt-5-mini", "moderate"), ("gpt-5-nano", "aggressive")),
    _f("gpt-5.1", "openai", ("gpt-5-mini", "moderate"), ("gpt-5-nano", "aggressive")),
    _f("gpt-5.2", "openai", ("gpt-5-mini", "moderate"), ("gpt-5-nano", "aggressive")),
    _f("gpt-5-mini", "openai", ("gpt-5-nano", "moderate")),
    _f("gpt-5-nano", "openai"),
    _f("o1", "openai", ("o4-mini", "moderate"), ("o3-mini", "aggressive")),
    _f("o1-mini", "openai"),
    _f("o1-pro", "openai"),
    _f("o3", "openai", ("o4-mini", "moderate")),
    _f("o3-mini", "openai"),
    _f("o3-pro", "openai"),
    _f("o3-deep-research", "openai"),
    _f("o4-mini", "openai"),
    _f("text-embedding-3-large", "openai", ("text-embedding-3-small", "moderate")),
    _f("text-embedding-ada-002", "openai", ("text-embedding-3-small", "conservative")),
    # Anthropic
    _f("claude-3-opus", "anthropic", ("claude-3-5-sonnet", "conservative"), ("claude-3-5-haiku", "aggressive")),
    _f("claude-3-sonnet", "anthropic", ("claude-3-haiku", "moderate")),
    _f("claude-3-5-sonnet", "anthropic", ("claude-3-5-haiku", "moderate")),
    _f("claude-3-7-sonnet", "anthropic", ("claude-3-5-haiku", "moderate")),
    _f("claude-sonnet-4", "anthropic", ("claude-haiku-4-5", "moderate"), ("claude-3-5-haiku", "aggressive")),
    _f("claude-opus-4", "anthropic", ("claude-sonnet-4", "conservative"), ("claude-haiku-4-5", "aggressive")),
    _f("claude-3-5-haiku", "anthropic", ("claude-3-haiku", "moderate")),
    _f("claude-3-haiku", "anthropic"),
    _f("claude-haiku-4-5", "anthropic"),
    # Groq
    _f("llama-3.1-70b", "groq", ("llama-3.1-8b-instant", "moderate")),
    _f("llama-3.3-70b", "groq", ("llama-3.1-8b-instant", "moderate")),
    _f("llama3-70b", "groq", ("llama3-8b-8192", "moderate")),
    _f("llama-3.1-8b", "groq"),
    _f("llama3-8b", "groq"),
    _f("llama-4-maverick", "groq", ("meta-llama/llama-4-scout-17b-16e-instruct", "moderate")),
    _f("gpt-oss-120b", "groq", ("openai/gpt-oss-20b", "moderate")),
    # Gemini
    _f("gemini-1.5-pro", "gemini", ("gemini-1.5-flash", "moderate"), ("gemini-1.5-flash-8b", "aggressive")),
    _f("gemini-1.5-flash", "gemini", ("gemini-1.5-flash-8b", "moderate")),
    _f("gemini-1.5-flash-8b", "gemini"),
    _f("gemini-2.0-flash", "gemini", ("gemini-2.0-flash-lite", "moderate")),
    _f("gemini-2.0-flash-lite", "gemini"),
    _f("gemini-2.5-pro", "gemini", ("gemini-2.5-flash", "moderate"), ("gemini-2.5-flash-lite", "aggressive")),
    _f("gemini-2.5-flash", "gemini", ("gemini-2.5-flash-lite", "moderate")),
    _f("gemini-2.5-flash-lite", "gemini"),
)

# Longest prefix first, so the first match is the most specific one.
_BY_LENGTH = sorted(FAMILIES, key=lambda f: len(f.prefix), reverse=True)
_SEPARATORS = ("-", "@", ":")


def normalise(model: str) -> str:
    """Lower-case, without a path (`models/`, `meta-llama/`, `openai/` on Groq)."""
    return model.strip().lower().rsplit("/", 1)[-1]


def family_of(model: str | None) -> Family | None:
    """The family whose prefix matches `model` at a separator, or None (unknown, fine-tuned)."""
    if not model:
        return None
    name = normalise(model)
    for family in _BY_LENGTH:
        if name.startswith(family.prefix):
            rest = name[len(family.prefix):]
            if not rest or rest.startswith(_SEPARATORS):
                return family
    return None


def ladder(provider: str, model: str | None) -> tuple[Rung, ...]:
    """The rungs down from `model` on `provider`: empty when unknown, already small, or when the
    family belongs to another provider (an override header sent `claude-*` to openai, say)."""
    family = family_of(model)
    if family is None or provider not in PROVIDERS_OF[family.vendor]:
        return ()
    return family.rungs


def provider_of_model(provider: str, model: str) -> bool:
    """Whether `provider` serves `model` according to the ladders (the cross-provider guard)."""
    family = family_of(model)
    return family is not None and provider in PROVIDERS_OF[family.vendor]
