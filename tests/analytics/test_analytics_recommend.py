"""The recommendation engine: each rule of SPEC §5, the ladders, and the hard rules as properties."""

from __future__ import annotations

from typing import Any

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analytics import TASKS, family_of, ladder, protected_features, recommendation_list, recommendations
from analytics.ladders import PROVIDERS_OF, provider_of_model
from analytics.recommend import Recommendation, _guard, base_models, usage_profile
from tests.analytics._build import ev, frame, raw


def traffic(n: int = 30, **fields: Any) -> list[dict[str, Any]]:
    base = {"feature": "f", "input_tokens": 1000, "output_tokens": 10, "message_count": 1}
    return [ev(**{**base, **fields}) for _ in range(n)]


def cards(*groups: list[dict[str, Any]], window_days: float = 1.0) -> list[Recommendation]:
    events = [e for g in groups for e in g]
    return recommendation_list(frame(*events), window_days, base_models(raw(*events)))


def only(*groups: list[dict[str, Any]]) -> Recommendation:
    found = cards(*groups)
    assert len(found) == 1, found
    return found[0]


def test_classification_is_a_strong_downgrade_to_the_cheapest_rung() -> None:
    card = only(traffic(model="gpt-4.1", task="classification"))
    assert (card.to_model, card.strength, card.confidence, card.task) == ("gpt-4.1-nano", "strong", "high",
                                                                         "classification")


def test_monthly_saving_reprices_observed_tokens_scaled_to_30_days() -> None:
    card = only(traffic(n=20, model="gpt-4o-2024-08-06", task="classification"))
    # gpt-4o $2.50 / $10 per M tokens, gpt-4o-mini $0.15 / $0.60; 20 requests of 1000 in + 10 out in 1 day
    current = 20 * (1000 * 2.5e-6 + 10 * 1e-5) * 30
    proposed = 20 * (1000 * 0.15e-6 + 10 * 0.6e-6) * 30
    assert card.to_model == "gpt-4o-mini"
    assert card.monthly_cost_usd == pytest.approx(current)
    assert card.monthly_saving_usd == pytest.approx(current - proposed)
    assert card.evidence == {
        "requests": 20, "error_rate": 0.0, "prompt_tokens_p50": pytest.approx(1000.0, rel=0.015),
        "response_tokens_p50": pytest.approx(10.0, rel=0.015), "task": "classification",
        "observed_monthly_cost_usd": None, "window_days": 1.0,
    }
    # the same tokens over a 15-day window are half a month's worth
    half = recommendation_list(frame(*traffic(n=20, model="gpt-4o", task="classification")), 15.0)[0]
    assert half.monthly_saving_usd == pytest.approx((current - proposed) / 15)


def test_cached_tokens_are_priced_as_cache_reads() -> None:
    card = only(traffic(n=10, model="gpt-4o", task="classification", cached_input_tokens=800, output_tokens=0))
    current = 10 * (200 * 2.5e-6 + 800 * 1.25e-6) * 30
    proposed = 10 * (200 * 0.15e-6 + 800 * 0.075e-6) * 30
    assert card.monthly_saving_usd == pytest.approx(current - proposed)


@pytest.mark.parametrize(
    ("prompt", "strength"), [(1500, "moderate"), (6000, "conservative")],
)
def test_summarisation_is_more_conservative_with_long_prompts(prompt: int, strength: str) -> None:
    card = only(traffic(model="gpt-4.1", task="summarisation", input_tokens=prompt, output_tokens=200))
    assert (card.to_model, card.strength, card.confidence) == ("gpt-4.1-mini", strength, "high")


@pytest.mark.parametrize(
    ("response", "strength"), [(150, "moderate"), (900, "conservative")],
)
def test_extraction_is_conservative_for_complex_output(response: int, strength: str) -> None:
    card = only(traffic(model="gpt-4.1", task="extraction", output_tokens=response))
    assert (card.to_model, card.strength, card.confidence) == ("gpt-4.1-mini", strength, "high")


def test_generation_is_neutral_so_sizes_decide() -> None:
    short = only(traffic(model="gpt-4o", task="generation", input_tokens=500, output_tokens=30))
    assert (short.confidence, short.task) == ("medium", "generation")
    assert cards(traffic(model="gpt-4o", task="generation", output_tokens=1500)) == []


def test_without_a_task_heuristics_give_medium_confidence_at_most() -> None:
    card = only(traffic(model="llama-3.1-70b-versatile", provider="groq", input_tokens=300, output_tokens=20))
    assert (card.to_model, card.confidence, card.strength, card.task) == (
        "llama-3.1-8b-instant", "medium", "moderate", None
    )
    # few requests: low confidence
    assert only(traffic(n=5, model="gpt-4o", output_tokens=20)).confidence == "low"
    # long prompts and long answers: nothing
    assert cards(traffic(model="gpt-4o", input_tokens=9000, output_tokens=1200)) == []
    # many errors make the evidence noisy: low
    noisy = traffic(n=30, model="gpt-4o", output_tokens=20) + traffic(n=10, model="gpt-4o", status_code=500)
    assert only(noisy).confidence == "low"


@pytest.mark.parametrize("task", ["qa", "summarization", "", "chat"])
def test_unknown_task_values_are_ignored(task: str) -> None:
    with_unknown = only(traffic(model="gpt-4o", task=task, output_tokens=20))
    without = only(traffic(model="gpt-4o", output_tokens=20))
    assert with_unknown.task is None
    assert (with_unknown.to_model, with_unknown.confidence, with_unknown.strength) == (
        without.to_model, without.confidence, without.strength
    )


@pytest.mark.parametrize("task", ["reasoning", "Reasoning", " REASONING "])
def test_reasoning_is_never_downgraded(task: str) -> None:
    # every other signal screams "downgrade": tiny prompts, one-token answers, lots of requests
    assert cards(traffic(n=500, model="o3", task=task, input_tokens=5, output_tokens=1)) == []
    assert cards(traffic(n=500, model="gpt-4o", task=task, input_tokens=5, output_tokens=1)) == []


def test_reasoning_protects_the_feature_from_heuristic_cards() -> None:
    reasoning = traffic(model="gpt-4o", task="reasoning", output_tokens=5)
    untyped = traffic(model="gpt-4o", output_tokens=5)
    classification = traffic(model="gpt-4o", task="classification", output_tokens=5)
    assert cards(reasoning, untyped) == []
    card = only(reasoning, untyped, classification)
    assert card.task == "classification" and "X-Lectr-Task" in card.reason
    protected = protected_features(frame(*reasoning, *untyped)).collect()
    assert protected.rows() == [("f", "openai", "gpt-4o", 30)]


def test_never_across_providers() -> None:
    # an override header sent a Claude model through openai: no ladder applies
    assert cards(traffic(model="claude-3-opus-20240229", provider="openai", task="classification")) == []
    card = only(traffic(model="claude-3-opus-20240229", provider="anthropic", task="classification"))
    assert (card.provider, card.to_model, card.strength) == ("anthropic", "claude-3-5-haiku", "strong")


def test_azure_deployments_use_the_model_azure_reports() -> None:
    card = only(
        traffic(provider="azure", model="prod-gpt4o", response_model="gpt-4o-2024-08-06", task="classification")
    )
    assert (card.provider, card.from_model, card.to_model) == ("azure", "prod-gpt4o", "gpt-4o-mini")
    assert "Azure deployment" in card.reason


def test_small_unknown_and_routed_models_get_no_card() -> None:
    assert cards(traffic(model="gpt-4o-mini", task="classification")) == []
    assert cards(traffic(model="acme-llm", task="classification")) == []
    assert cards(traffic(model="gpt-4o", routed_model="gpt-4o-mini", task="classification")) == []


def test_observed_cost_is_part_of_the_evidence() -> None:
    card = only(traffic(n=10, model="gpt-4o", task="classification", cost_usd=0.01))
    assert card.evidence["observed_monthly_cost_usd"] == pytest.approx(10 * 0.01 * 30)


def test_cards_frame_and_sorting() -> None:
    big = traffic(feature="big", model="claude-3-opus-20240229", provider="anthropic", task="classification")
    small = traffic(feature="small", model="gpt-4o", task="classification")
    got = recommendations(frame(*small, *big), 1.0)
    assert got["feature"].to_list() == ["big", "small"]
    assert got.schema["evidence"] == pl.Struct
    assert recommendations(frame(), 1.0).height == 0


def test_guard_drops_forbidden_cards_whatever_made_them() -> None:
    def card(**kw: Any) -> Recommendation:
        fields = {"feature": "f", "provider": "openai", "from_model": "gpt-4o", "to_model": "gpt-4o-mini",
                  "confidence": "high", "strength": "strong", "task": "classification",
                  "monthly_saving_usd": 1.0, "monthly_cost_usd": 2.0, "evidence": {}, "reason": ""}
        return Recommendation(**{**fields, **kw})

    profiles = usage_profile(frame(*traffic(model="gpt-4o", task="reasoning"))).collect()
    kept = _guard(
        [card(), card(task="reasoning"), card(task=None), card(to_model="claude-3-5-haiku"),
         card(provider="groq", to_model="gpt-4o-mini")],
        profiles,
    )
    assert kept == [card()]


@pytest.mark.parametrize(
    ("model", "prefix"),
    [
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
        ("gpt-4-turbo-2024-04-09", "gpt-4-turbo"),
        ("gpt-4-0613", "gpt-4"),
        ("gpt-4.1-nano-2025-04-14", "gpt-4.1-nano"),
        ("o1-2024-12-17", "o1"),
        ("o1-mini", "o1-mini"),
        ("o3-2025-04-16", "o3"),
        ("gpt-5-2025-08-07", "gpt-5"),
        ("claude-3-opus-20240229", "claude-3-opus"),
        ("claude-3-5-sonnet-latest", "claude-3-5-sonnet"),
        ("claude-3-7-sonnet-20250219", "claude-3-7-sonnet"),
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4"),
        ("claude-opus-4-1-20250805", "claude-opus-4"),
        ("llama-3.1-70b-versatile", "llama-3.1-70b"),
        ("llama-3.3-70b-versatile", "llama-3.3-70b"),
        ("llama-3.1-8b-instant", "llama-3.1-8b"),
        ("models/gemini-1.5-pro-002", "gemini-1.5-pro"),
        ("gemini-2.5-flash-lite", "gemini-2.5-flash-lite"),
        ("GPT-4O", "gpt-4o"),
        ("gpt-4.5-preview", None),
        ("ft:gpt-4o-mini:acme", None),
        ("my-model", None),
    ],
)
def test_family_matching(model: str, prefix: str | None) -> None:
    family = family_of(model)
    assert (family.prefix if family else None) == prefix


def test_ladders_named_in_the_spec() -> None:
    assert [(r.to_model, r.strength) for r in ladder("anthropic", "claude-3-opus")] == [
        ("claude-3-5-sonnet", "conservative"), ("claude-3-5-haiku", "aggressive"),
    ]
    assert [(r.to_model, r.strength) for r in ladder("groq", "llama-3.1-70b-versatile")] == [
        ("llama-3.1-8b-instant", "moderate")
    ]
    assert [(r.to_model, r.strength) for r in ladder("gemini", "gemini-1.5-pro")][0] == ("gemini-1.5-flash", "moderate")
    assert [r.to_model for r in ladder("openai", "gpt-4o")] == ["gpt-4o-mini"]
    assert [r.to_model for r in ladder("azure", "gpt-4o")] == ["gpt-4o-mini"]
    assert [r.to_model for r in ladder("openai", "gpt-5")] == ["gpt-5-mini", "gpt-5-nano"]
    assert [r.to_model for r in ladder("gemini", "gemini-2.5-pro")] == ["gemini-2.5-flash", "gemini-2.5-flash-lite"]
    assert ladder("openai", "claude-3-opus") == ()
    assert ladder("gemini", "gpt-4o") == ()


MODELS = [
    "gpt-4o", "gpt-4o-2024-08-06", "gpt-4o-mini", "gpt-4.1", "o1", "o3", "gpt-5", "claude-3-opus-20240229",
    "claude-3-5-sonnet-20241022", "claude-sonnet-4-20250514", "llama-3.1-70b-versatile", "llama-3.3-70b-versatile",
    "gemini-1.5-pro", "gemini-2.5-pro", "prod-deployment", "acme-llm",
]
TASK_VALUES = [*TASKS, "Reasoning", " reasoning", "REASONING ", "qa", "summarization", "", None]

event = st.fixed_dictionaries(
    {
        "feature": st.sampled_from([None, "a", "b"]),
        "provider": st.sampled_from(["openai", "anthropic", "groq", "gemini", "azure"]),
        "model": st.sampled_from(MODELS),
        "response_model": st.sampled_from([None, *MODELS]),
        "routed_model": st.sampled_from([None, None, None, *MODELS]),
        "task": st.sampled_from(TASK_VALUES),
        "status_code": st.sampled_from([200, 200, 200, 429, 500]),
        "input_tokens": st.one_of(st.none(), st.integers(0, 50_000)),
        "output_tokens": st.one_of(st.none(), st.integers(0, 5_000)),
        "cached_input_tokens": st.one_of(st.none(), st.integers(0, 1_000)),
        "reasoning_tokens": st.one_of(st.none(), st.integers(0, 1_000)),
        "message_count": st.one_of(st.none(), st.integers(1, 40)),
        "cost_usd": st.one_of(st.none(), st.floats(0, 10)),
    }
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(event, min_size=1, max_size=80), st.floats(0.5, 60))
def test_no_input_yields_a_reasoning_downgrade_or_a_cross_provider_card(
    events: list[dict[str, Any]], window_days: float
) -> None:
    built = [ev(**e) for e in events]
    lf = frame(*built)
    reasoning = {
        (e["feature"] or "untagged", e["provider"], e["routed_model"] or e["model"])
        for e in events
        if e["task"] is not None and e["task"].strip().lower() == "reasoning"
    }
    for card in recommendation_list(lf, window_days, base_models(raw(*built))):
        assert card.task in {"classification", "summarisation", "extraction", "generation", None}
        if card.task is None:
            assert (card.feature, card.provider, card.from_model) not in reasoning
        target = family_of(card.to_model)
        assert target is not None and card.provider in PROVIDERS_OF[target.vendor]
        assert provider_of_model(card.provider, card.to_model)
        assert card.to_model in {r.to_model for m in [card.from_model, *MODELS] for r in ladder(card.provider, m)}
        assert card.monthly_saving_usd is None or card.monthly_saving_usd > 0
