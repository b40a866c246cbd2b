"""Costs come from genai-prices; our fast path must agree with its exact calculation."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from genai_prices import Usage as GPUsage
from genai_prices import calc_price

from proxy.accounting.pricing import price, unit_prices
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


def _written_cost(
    provider: str, model: str, usage: Usage, response_model: str | None = None
) -> tuple[Decimal | None, str | None]:
    """What the writer puts on an event (`Event.price`, through `pricing.cost`)."""
    from proxy.accounting.record import Event

    event = Event(
        org_id=1,
        created_at=NOW,
        provider=provider,
        endpoint="chat/completions",
        status_code=200,
        model=model,
        response_model=response_model,
    )
    event.set_usage(usage)
    event.price()
    event.price()  # idempotent
    return event.cost_usd, event.price_source


@pytest.mark.parametrize(
    "provider,model",
    [
        ("openai", "gpt-4o"),
        ("anthropic", "claude-sonnet-4-20250514"),
        ("gemini", "gemini-2.5-pro"),
        ("azure", "gpt-4o-mini"),
    ],
)
@pytest.mark.parametrize(
    "tokens",
    [
        (0, 0, 0, 0),
        (1000, 0, 0, 0),
        (0, 0, 0, 77),
        (1000, 200, 0, 50),
        (5000, 1000, 3000, 120),
        (300, 0, 300, 0),
        (10, 50, 0, 5),
        (250_000, 1000, 0, 10),
    ],
)
def test_the_writers_cost_is_price_for_every_mix_of_token_kinds(
    provider: str, model: str, tokens: tuple[int, int, int, int]
) -> None:
    """The writer's path skips the token kinds it has none of (no Decimal term for them) and keeps
    its rates in a memo of its own; its cost and source are `price`'s, to the last digit."""
    inp, cached, written, out = tokens
    usage = Usage(inp, out, cached_input_tokens=cached, cache_write_tokens=written)
    expected = price(provider, model, usage, NOW)
    assert expected is not None
    assert _written_cost(provider, model, usage) == (expected.cost_usd, expected.source)
    assert _written_cost(provider, model, usage) == (expected.cost_usd, expected.source)  # from the memo


def test_the_writer_prices_an_unknown_answering_model_by_the_model_asked_for() -> None:
    usage = Usage(1000, 100)
    expected = price("openai", "gpt-4o", usage, NOW)
    assert expected is not None
    assert _written_cost("openai", "gpt-4o", usage, "gpt-4o-custom-snapshot-x") == (expected.cost_usd, expected.source)
    assert _written_cost("openai", "no-such-model", usage) == (None, None)
    assert _written_cost("no-such-provider", "gpt-4o", usage) == (None, None)


def test_the_writers_memo_of_rates_stays_bounded() -> None:
    """A flood of model names nobody prices (each remembered as None) empties the memo rather than grow it."""
    from proxy.accounting import pricing

    for i in range(pricing._MEMO_SIZE + 10):
        assert pricing.cost("openai", f"made-up-{i}", 10, 0, 0, 10, NOW) is None
        assert len(pricing._memo) <= pricing._MEMO_SIZE
    found = pricing.cost("openai", "gpt-4o", 1000, 0, 0, 100, NOW)
    expected = price("openai", "gpt-4o", Usage(1000, 100), NOW)
    assert found is not None and expected is not None and found == (expected.cost_usd, expected.source)


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


# The analytics side (`unit_prices`, for recommendations and the demo) reads the writer's rates.
TODAY = dt.datetime.now(dt.UTC)


@pytest.mark.parametrize(
    ("provider", "gp_provider", "model"),
    [
        ("openai", "openai", "gpt-4o"),
        ("openai", "openai", "gpt-4.1-nano"),
        ("anthropic", "anthropic", "claude-3-5-haiku-20241022"),
        ("groq", "groq", "llama-3.1-8b-instant"),
        ("gemini", "google", "gemini-2.5-flash"),
        ("azure", "azure", "gpt-4o-mini"),
    ],
)
def test_unit_prices_are_genai_prices_rates_per_token(provider: str, gp_provider: str, model: str) -> None:
    """What analytics/pricing.py computed before it merged here: 1,000 tokens of each kind priced
    by `calc_price`, divided by 1,000."""
    got = unit_prices(model, provider)
    assert got is not None

    def per_token(**tokens: int) -> float:
        return float(calc_price(GPUsage(**tokens), model, provider_id=gp_provider).total_price) / 1000

    assert got.input == pytest.approx(per_token(input_tokens=1000), rel=1e-12)
    assert got.cached_input == pytest.approx(per_token(input_tokens=1000, cache_read_tokens=1000), rel=1e-12)
    assert got.output == pytest.approx(per_token(output_tokens=1000), rel=1e-12)
    assert got.input > 0 and got.output > 0


@pytest.mark.parametrize(
    ("provider", "model", "usage"),
    [
        ("openai", "gpt-4o", Usage(5000, 700, cached_input_tokens=3000)),
        ("anthropic", "claude-sonnet-4-20250514", Usage(1200, 80, cached_input_tokens=1000)),
        ("gemini", "gemini-1.5-flash", Usage(999, 111)),
        ("azure", "gpt-4o-2024-08-06", Usage(1000, 100)),
    ],
)
def test_unit_prices_cost_what_the_writer_charges(provider: str, model: str, usage: Usage) -> None:
    """A recommendation's 'current cost' of a usage is the cost the writer put on its events."""
    rates = unit_prices(model, provider)
    charged = price(provider, model, usage, TODAY)
    assert rates is not None and charged is not None
    assert rates.cost(usage.input_tokens, usage.cached_input_tokens, usage.output_tokens) == pytest.approx(
        float(charged.cost_usd), rel=1e-12
    )


def test_unit_prices_hand_computed() -> None:
    # gpt-4o: $2.50 input, $1.25 cached input, $10 output per million tokens.
    rates = unit_prices("gpt-4o-2024-08-06", "openai")
    assert rates is not None and rates.model_id == "gpt-4o"
    assert rates.cost(1000, 800, 10) == pytest.approx(200 * 2.5e-6 + 800 * 1.25e-6 + 10 * 1e-5)


def test_unit_prices_unknown_is_none() -> None:
    assert unit_prices("my-fine-tune-that-does-not-exist", "openai") is None
    assert unit_prices("gpt-4o", "bedrock") is None  # not a Lectr provider
    assert unit_prices("", "openai") is None
