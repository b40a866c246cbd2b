"""The provider registry (proxy/core/providers.py): one list of names, and every reader agrees on it.

A provider added to the registry must come with everything the rooms need: an adapter, a price
id genai-prices knows, an OpenTelemetry name, a base URL (or a reason not to have one), ladders'
vendor, a fake provider in the end-to-end tests. Each test below fails when one is missing.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from genai_prices import data_snapshot

from analytics.ladders import FAMILIES, PROVIDERS_OF
from proxy.accounting.pricing import price
from proxy.accounting.usage import Usage
from proxy.core.config import DEFAULT_BASE_URLS, Settings
from proxy.core.providers import BY_NAME, FALLBACK, PROVIDERS, REGISTRY, Target, parse_target
from proxy.events.telemetry import PROVIDER_NAMES
from proxy.pipeline import routing
from proxy.pipeline.providers import adapter_for, detect
from proxy.store.orgs import OrgError, set_azure
from proxy.store.rules import add_rule, list_rules
from tests import fakes

NOW = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
# A model each provider serves and genai-prices prices: one row per registry entry.
A_MODEL = {
    "openai": "gpt-4o-mini",
    "anthropic": "claude-3-5-haiku-20241022",
    "groq": "llama-3.1-8b-instant",
    "gemini": "gemini-2.0-flash",
    "azure": "gpt-4o",
}


def test_names_are_lowercase_unique_and_the_fallback_is_one_of_them() -> None:
    assert PROVIDERS == ("openai", "anthropic", "groq", "gemini", "azure")
    assert len(set(PROVIDERS)) == len(PROVIDERS) and all(name == name.lower() for name in PROVIDERS)
    assert FALLBACK in PROVIDERS and set(BY_NAME) == set(PROVIDERS)


def test_every_provider_has_its_adapter_and_is_accepted_by_the_header() -> None:
    for name in PROVIDERS:
        assert adapter_for(name).name == name
        assert detect("gpt-4o", name.upper()) == detect(None, f" {name} ")
        assert (detect(None, name).provider, detect(None, name).unknown) == (name, False)


@pytest.mark.parametrize("provider", REGISTRY, ids=lambda p: p.name)
def test_detection_and_routing_read_the_same_prefixes(provider: Any) -> None:
    """Every prefix of a provider detects it, from the request and in a routing target alike."""
    for prefix in provider.model_prefixes:
        model = f"{prefix}test-1"
        assert detect(model, None).provider == provider.name, model
        assert parse_target(model) == Target(provider.name, model)
        assert parse_target(f"{provider.name}:{model}") == Target(provider.name, model)
    assert parse_target(f"{provider.name.upper()}: my-model ") == Target(provider.name, "my-model")


def test_only_azure_is_never_detected_from_a_model_name() -> None:
    assert [p.name for p in REGISTRY if not p.model_prefixes] == ["azure"]
    assert parse_target("my-deployment") == Target(FALLBACK, "my-deployment")
    assert parse_target("my-deployment", "azure") == Target("azure", "my-deployment")


def test_routing_and_the_store_parse_targets_with_the_registry() -> None:
    assert routing.parse_target is parse_target and routing.Target is Target


@pytest.mark.parametrize("provider", REGISTRY, ids=lambda p: p.name)
def test_every_price_id_is_genai_prices_own_and_prices_a_model(provider: Any) -> None:
    found = data_snapshot.get_snapshot().find_provider(None, provider.price_id, None)
    assert found.id == provider.price_id
    got = price(provider.name, A_MODEL[provider.name], Usage(1000, 100), NOW)
    assert got is not None and got.cost_usd > 0
    assert f": {provider.price_id}/" in got.source


def test_a_model_per_provider_in_the_table_above() -> None:
    assert set(A_MODEL) == set(PROVIDERS)


def test_base_urls_and_their_variables() -> None:
    assert set(DEFAULT_BASE_URLS) == {p.name for p in REGISTRY if p.name != "azure"}
    assert Settings.from_env({}).base_urls == DEFAULT_BASE_URLS
    assert all(url.startswith("https://") for url in DEFAULT_BASE_URLS.values())
    for name in DEFAULT_BASE_URLS:
        variable = f"LECTR_{name.upper()}_BASE_URL"
        assert BY_NAME[name].base_url_variable == variable
        settings = Settings.from_env({variable: "http://127.0.0.1:9/v1/"})
        assert settings.base_urls[name] == "http://127.0.0.1:9/v1"
        others = [other for other in DEFAULT_BASE_URLS if other != name]
        assert all(settings.base_urls[other] == DEFAULT_BASE_URLS[other] for other in others)


def test_telemetry_names_every_provider() -> None:
    assert set(PROVIDER_NAMES) == set(PROVIDERS)
    assert PROVIDER_NAMES["gemini"] == "gcp.gemini" and PROVIDER_NAMES["azure"] == "azure.ai.openai"


def test_ladders_are_by_registry_vendor() -> None:
    assert PROVIDERS_OF["openai"] == {"openai", "azure"}
    assert set().union(*PROVIDERS_OF.values()) == set(PROVIDERS)
    assert {family.vendor for family in FAMILIES} <= set(PROVIDERS_OF)


def test_the_fake_providers_cover_the_registry() -> None:
    assert set(fakes.PROVIDERS) == set(PROVIDERS)


def test_the_store_accepts_the_registry_names_and_refuses_others(db: Any, new_org: Any) -> None:
    org, _ = new_org("registry")
    set_azure(db, org.name, "https://res.openai.azure.com")
    for name in PROVIDERS:
        add_rule(db, org.name, to_model="m", provider=name, to_provider=name, fallbacks=[f"{name}:m2"])
    assert [(r["match_provider"], r["to_provider"]) for r in list_rules(db, org.name)] == [(n, n) for n in PROVIDERS]
    listed = ", ".join(PROVIDERS)
    with pytest.raises(OrgError, match=f"unknown provider 'bedrock' \\(one of {listed}\\)"):
        add_rule(db, org.name, to_model="m", provider="bedrock")
    with pytest.raises(OrgError, match="unknown provider 'bedrock'"):
        add_rule(db, org.name, to_model="m", to_provider="bedrock")
