"""Costs come from genai-prices; our fast path must agree with its exact calculation."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from genai_prices import Usage as GPUsage
from genai_prices import calc_price

from proxy.accounting.pricing import price
from proxy.accounting.usage import Usage

NOW = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("provider", "gp_provider", "model", "usage"),
    [
        ("openai", "openai", "gpt-4o", Usage(1000, 500, cached_input_tokens=200)),
        ("openai", "openai", "o3-mini", Usage(2000, 3000, reasoning_tokens=2500)),
        (
            "anthropic",
            "anthropic",
            "claude-3-5-sonnet-20241022",
            Usage(10_000, 100, cached_input_tokens=6000, cache_write_tokens=3000),
        ),
        ("groq", "groq", "llama-3.1-8b-instant", Usage(1234, 56)),
        ("gemini", "google", "gemini-1.5-flash", Usage(999, 111)),
        ("azure", "azure", "gpt-4o-2024-08-06", Usage(1000, 100)),
        ("gemini", "google", "gemini-2.5-pro", Usage(250_000, 1000)),  # long-context tier: exact path
    ],
)
def test_price_matches_genai_prices(provider: str, gp_provider: str, model: str, usage: Usage) -> None:
    got = price(provider, model, usage, NOW)
    assert got is not None
    expected = calc_price(
        GPUsage(
            input_tokens=usage.input_tokens,
            cache_read_tokens=usage.cached_input_tokens,
            cache_write_tokens=usage.cache_write_tokens,
            output_tokens=usage.output_tokens,
        ),
        model,
        provider_id=gp_provider,
        genai_request_timestamp=NOW,
    ).total_price
    assert abs(got.cost_usd - Decimal(expected)) < Decimal("1e-12")
    assert got.source.startswith("genai-prices ")


def test_cached_tokens_are_cheaper() -> None:
    plain = price("openai", "gpt-4o", Usage(1000, 0), NOW)
    cached = price("openai", "gpt-4o", Usage(1000, 0, cached_input_tokens=1000), NOW)
    assert plain and cached and cached.cost_usd < plain.cost_usd


def test_unknown_model_has_no_price_not_zero() -> None:
    assert price("openai", "my-fine-tune-that-does-not-exist", Usage(10, 10), NOW) is None
    assert price("openai", None, Usage(10, 10), NOW) is None


def test_azure_deployment_falls_back_to_openai_base_model() -> None:
    found = price("azure", "gpt-4o-mini", Usage(1000, 1000), NOW)
    assert found is not None and found.cost_usd > 0


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        # claude-sonnet-4: $3 input, $0.30 cache read, $3.75 cache write, $15 output per million:
        # 50 × 3 + 2000 × 0.30 + 300 × 3.75 + 120 × 15 = 3,675 µ$.
        ("claude-sonnet-4-20250514", Decimal("0.003675")),
        # claude-3-5-haiku: $0.80, $0.08, $1, $4: 50 × 0.8 + 2000 × 0.08 + 300 × 1 + 120 × 4 = 980 µ$.
        ("claude-3-5-haiku-20241022", Decimal("0.00098")),
    ],
)
def test_anthropic_cache_reads_and_writes_at_their_own_rates(model: str, expected: Decimal) -> None:
    """A hand-computed figure from genai-prices' published rates: 50 fresh input tokens, 2,000 read
    from the cache, 300 written to it (all three in `input_tokens`), 120 output."""
    got = price("anthropic", model, Usage(2350, 120, cached_input_tokens=2000, cache_write_tokens=300), NOW)
    assert got is not None and got.cost_usd == expected
