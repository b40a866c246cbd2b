"""The recommendation engine: cheaper models per (feature, model), within one provider only.

Rules, in order (SPEC §5):

1. Traffic is grouped per (feature, provider, model, task), the task normalised (trimmed,
   lower-cased) and kept only when it is one of the five; anything else counts as no task. A
   feature that mixes tasks gets one card per task, so a card maps to a routing rule and
   reasoning requests are never swept into somebody else's downgrade.
2. `reasoning` is never downgraded: no card for it, whatever the other signals say. A
   (feature, model) that carries any reasoning traffic gets no heuristic (task-less) card either,
   since those requests cannot be told apart from the reasoning ones. `_guard` checks the rule
   again on the finished cards, as the last step.
3. A declared task is the strongest signal (confidence `high`): `classification` takes the most
   aggressive rung (strength `strong`); `summarisation` and `extraction` take the first rung,
   labelled `conservative` when prompts are long or responses long (complex nested output);
   `generation` is neutral, so the heuristics decide, as they do without a task.
4. Heuristics (no task, or `generation`) score prompt and response size (medians from the
   rollups' token histograms), conversation length (the mean message count), the share of
   reasoning tokens; confidence is `medium` at most, `low` when the evidence is thin
   (few requests, many errors).
5. Ladders come from `ladders`, which only ever offer a model of the same provider.
6. The monthly saving reprices the observed tokens (window scaled to 30 days) with genai-prices
   at the current and the proposed model; a card that saves nothing is dropped.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import polars as pl

from analytics.ladders import Rung, Strength, ladder, provider_of_model
from analytics.metrics import FEATURE, count
from analytics.rollups import cost, mean, with_quantiles
from proxy.accounting.pricing import unit_prices

# The histograms the recommendations read (typical prompt and response sizes).
RECOMMEND_HISTOGRAMS = ("input_tokens", "output_tokens")
TASKS = ("classification", "summarisation", "extraction", "generation", "reasoning")
Confidence = Literal["high", "medium", "low"]

# Thresholds, in tokens unless said otherwise (typical = median over the requests with usage).
LONG_PROMPT = 4000  # summarisation of long documents: only the conservative step
COMPLEX_OUTPUT = 600  # extraction with long (nested) output: only the conservative step
MIN_REQUESTS = 20  # fewer requests than this: confidence low
NOISY_ERROR_RATE = 0.2  # heuristics on a group failing this often: confidence low
MONTH_DAYS = 30.0

TASK: pl.Expr = (
    pl.col("task").str.strip_chars().str.to_lowercase().replace_strict(
        {t: t for t in TASKS}, default=None, return_dtype=pl.String
    )
)


def usage_profile(events: pl.LazyFrame, base_models: pl.LazyFrame | pl.DataFrame | None = None) -> pl.LazyFrame:
    """Per (feature, provider, model, task): the evidence the rules read, from a rollup frame.

    Columns: feature, provider, model, task (one of `TASKS` or null), base_model (what Azure
    reports for a deployment, from `base_models` (provider, model, base_model), else the
    model), requests, errors, error_rate, prompt_tokens_p50, response_tokens_p50,
    response_tokens_p90 (from the token histograms, over the requests with usage),
    message_count_avg, reasoning_share, input_tokens, cached_input_tokens, output_tokens,
    cost_usd (observed, null when unpriced), protected (the feature and model also carry
    reasoning traffic). `model` is the model that served the traffic (`routed_model` when a
    routing rule fired).
    """
    keys = ["feature", "provider", "model", "task"]
    grouped = (
        events.with_columns(
            FEATURE.alias("feature"),
            TASK.alias("task"),
            pl.coalesce("routed_model", "model").alias("model"),
        )
        .filter(pl.col("model").is_not_null())
    )
    sums = grouped.group_by(keys).agg(
        count("requests").alias("requests"),
        count("errors").alias("errors"),
        (pl.col("errors").sum() / pl.col("requests").sum()).alias("error_rate"),
        mean("message_count").alias("message_count_avg"),
        (pl.col("reasoning_tokens").sum() / pl.col("output_tokens").sum()).alias("reasoning_share"),
        count("input_tokens").alias("input_tokens"),
        count("cached_input_tokens").alias("cached_input_tokens"),
        count("output_tokens").alias("output_tokens"),
        cost().alias("cost_usd"),
    )
    sizes = {
        "prompt_tokens_p50": ("input_tokens", 0.5),
        "response_tokens_p50": ("output_tokens", 0.5),
        "response_tokens_p90": ("output_tokens", 0.9),
    }
    bases = (
        pl.LazyFrame(schema={"provider": pl.String, "model": pl.String, "base_model": pl.String})
        if base_models is None else base_models.lazy().select("provider", "model", "base_model")
    ).unique(["provider", "model"], keep="first")
    return (
        with_quantiles(sums, grouped, keys, sizes)
        .join(bases, on=["provider", "model"], how="left", nulls_equal=True)
        .with_columns(
            base_model=pl.coalesce("base_model", "model"),
            protected=(pl.col("task") == "reasoning").any().over("feature", "provider", "model"),
            reasoning_share=pl.when(pl.col("reasoning_share").is_finite()).then(pl.col("reasoning_share")),
        )
        .select(
            *keys, "base_model", "requests", "errors", "error_rate", "prompt_tokens_p50", "response_tokens_p50",
            "response_tokens_p90", "message_count_avg", "reasoning_share", "input_tokens", "cached_input_tokens",
            "output_tokens", "cost_usd", "protected",
        )
        .sort(keys, nulls_last=True)
    )


def base_models(events: pl.LazyFrame) -> pl.LazyFrame:
    """(provider, model, base_model) from raw events: what Azure answered each deployment with
    (the latest), for `usage_profile`. The database path is `load_rollups.azure_base_models`."""
    return (
        events.filter((pl.col("provider") == "azure") & pl.col("response_model").is_not_null())
        .group_by("provider", pl.coalesce("routed_model", "model").alias("model"))
        .agg(pl.col("response_model").sort_by("created_at").last().alias("base_model"))
    )


def protected_features(events: pl.LazyFrame) -> pl.LazyFrame:
    """Feature/model pairs held back by the reasoning rule: feature, provider, model,
    reasoning_requests. The dashboard lists them as protected."""
    return (
        events.filter(TASK == "reasoning")
        .group_by(FEATURE.alias("feature"), "provider", pl.coalesce("routed_model", "model").alias("model"))
        .agg(count("requests").alias("reasoning_requests"))
        .sort("feature", "provider", "model", nulls_last=True)
    )


@dataclass(frozen=True, slots=True)
class Recommendation:
    """One card. `evidence` holds requests, error_rate, prompt_tokens_p50, response_tokens_p50,
    task and the observed monthly cost; `signals` names the rules that fired."""

    feature: str
    provider: str
    from_model: str
    to_model: str
    confidence: Confidence
    strength: Strength
    task: str | None
    monthly_saving_usd: float | None
    monthly_cost_usd: float | None
    evidence: dict[str, Any]
    reason: str
    signals: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _num(value: Any) -> float:
    return 0.0 if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def heuristic_score(p: Mapping[str, Any]) -> tuple[int, list[str]]:
    """Size signals → a score (higher: a smaller model is more likely to do) and their names."""
    score, why = 0, list[str]()
    response, prompt = p.get("response_tokens_p50"), p.get("prompt_tokens_p50")
    if response is not None:
        if response <= 50:
            score, why = score + 2, [*why, "short responses"]
        elif response <= 300:
            score, why = score + 1, [*why, "moderate responses"]
        elif response > 1000:
            score, why = score - 2, [*why, "long responses"]
    if prompt is not None:
        if prompt <= 2000:
            score, why = score + 1, [*why, "short prompts"]
        elif prompt > 8000:
            score, why = score - 1, [*why, "long prompts"]
    if _num(p.get("message_count_avg")) > 8:
        score, why = score - 1, [*why, "long conversations"]
    if _num(p.get("reasoning_share")) > 0.5:
        score, why = score - 1, [*why, "mostly reasoning tokens"]
    return score, why


def _choose(p: Mapping[str, Any], rungs: tuple[Rung, ...]) -> tuple[Rung, Strength, Confidence, list[str]] | None:
    """Pick the rung, the card's strength and confidence from the task, else the heuristics."""
    task = p.get("task")
    thin = p["requests"] < MIN_REQUESTS
    high: Confidence = "low" if thin else "high"
    if task == "classification":
        return rungs[-1], "strong", high, ["task: classification"]
    if task == "summarisation":
        if _num(p.get("prompt_tokens_p50")) > LONG_PROMPT:
            return rungs[0], "conservative", high, ["task: summarisation", "long prompts"]
        return rungs[0], rungs[0].strength, high, ["task: summarisation"]
    if task == "extraction":
        complex_output = max(_num(p.get("response_tokens_p50")), _num(p.get("response_tokens_p90")) / 2)
        if complex_output > COMPLEX_OUTPUT:
            return rungs[0], "conservative", high, ["task: extraction", "complex output"]
        return rungs[0], rungs[0].strength, high, ["task: extraction"]
    if task is None and p.get("protected"):
        return None  # the same feature and model also serve reasoning: heuristics stay out
    score, why = heuristic_score(p)
    if task == "generation":
        why = ["task: generation (neutral)", *why]
    noisy = thin or _num(p.get("error_rate")) > NOISY_ERROR_RATE
    if score >= 3:
        return rungs[0], rungs[0].strength, "low" if noisy else "medium", why
    if score == 2:
        return rungs[0], "conservative", "low", why
    return None


def _reason(p: Mapping[str, Any], rung: Rung, saving: float | None, signals: list[str]) -> str:
    what = f"declared task {p['task']}" if p.get("task") else "no declared task, judged from sizes"
    sizes = (
        f"typical prompt {_num(p.get('prompt_tokens_p50')):.0f} and response "
        f"{_num(p.get('response_tokens_p50')):.0f} tokens over {p['requests']} requests"
    )
    money = f"about ${saving:,.2f} a month" if saving is not None else "an unknown amount (current model unpriced)"
    text = (
        f"{p['feature']} on {p['model']} ({what}; {', '.join(signals) or 'no strong signal'}): {sizes}. "
        f"Moving it to {rung.to_model} on {p['provider']} would save {money}."
    )
    if p["provider"] == "azure":
        text += f" Needs an Azure deployment of {rung.to_model}."
    if p.get("protected"):
        text += " This feature also sends reasoning requests; route by X-Lectr-Task so they stay put."
    return text


def decide(p: Mapping[str, Any], window_days: float) -> Recommendation | None:
    """The card for one `usage_profile` row, or None. `window_days`: the length of the window
    the profile covers, used to scale volumes to a month."""
    if p.get("task") == "reasoning":
        return None
    provider, base = p["provider"], p.get("base_model") or p["model"]
    rungs = ladder(provider, base)
    if not rungs:
        return None
    chosen = _choose(p, rungs)
    if chosen is None:
        return None
    rung, strength, confidence, signals = chosen
    scale = MONTH_DAYS / window_days
    tokens = (_num(p.get("input_tokens")), _num(p.get("cached_input_tokens")), _num(p.get("output_tokens")))
    target = unit_prices(rung.to_model, provider)
    current = unit_prices(base, provider)
    observed = None if p.get("cost_usd") is None else float(p["cost_usd"]) * scale
    monthly = current.cost(*tokens) * scale if current is not None else observed
    proposed = target.cost(*tokens) * scale if target is not None else None
    saving = None if monthly is None or proposed is None else monthly - proposed
    if saving is not None and saving <= 0:
        return None
    evidence = {
        "requests": int(p["requests"]),
        "error_rate": _num(p.get("error_rate")),
        "prompt_tokens_p50": p.get("prompt_tokens_p50"),
        "response_tokens_p50": p.get("response_tokens_p50"),
        "task": p.get("task"),
        "observed_monthly_cost_usd": observed,
        "window_days": window_days,
    }
    return Recommendation(
        feature=p["feature"], provider=provider, from_model=p["model"], to_model=rung.to_model,
        confidence=confidence, strength=strength, task=p.get("task"), monthly_saving_usd=saving,
        monthly_cost_usd=monthly, evidence=evidence, reason=_reason(p, rung, saving, signals),
        signals=signals,
    )


def _guard(cards: Iterable[Recommendation], profiles: pl.DataFrame) -> list[Recommendation]:
    """The hard rules, checked last and independently of how the cards were made."""
    reasoning = {
        (r["feature"], r["provider"], r["model"])
        for r in profiles.filter(pl.col("task") == "reasoning").iter_rows(named=True)
    }
    return [
        c for c in cards
        if c.task != "reasoning"
        and (c.task is not None or (c.feature, c.provider, c.from_model) not in reasoning)
        and provider_of_model(c.provider, c.to_model)
    ]


CARD_SCHEMA: dict[str, pl.DataType] = {
    "feature": pl.String(), "provider": pl.String(), "from_model": pl.String(), "to_model": pl.String(),
    "confidence": pl.String(), "strength": pl.String(), "task": pl.String(),
    "monthly_saving_usd": pl.Float64(), "monthly_cost_usd": pl.Float64(),
    "evidence": pl.Struct({
        "requests": pl.Int64(), "error_rate": pl.Float64(), "prompt_tokens_p50": pl.Float64(),
        "response_tokens_p50": pl.Float64(), "task": pl.String(),
        "observed_monthly_cost_usd": pl.Float64(), "window_days": pl.Float64(),
    }),
    "reason": pl.String(), "signals": pl.List(pl.String()),
}


def recommendation_list(
    events: pl.LazyFrame, window_days: float, base_models: pl.LazyFrame | pl.DataFrame | None = None
) -> list[Recommendation]:
    """The cards as objects, largest saving first (unknown savings last). `base_models`: see
    `usage_profile` (Azure deployments are priced and laddered by the model Azure reports)."""
    profiles = usage_profile(events, base_models).collect()
    cards = [c for c in (decide(p, window_days) for p in profiles.iter_rows(named=True)) if c is not None]
    cards = _guard(cards, profiles)
    return sorted(cards, key=lambda c: (c.monthly_saving_usd is None, -(c.monthly_saving_usd or 0.0), c.feature))


def recommendations(
    events: pl.LazyFrame, window_days: float, base_models: pl.LazyFrame | pl.DataFrame | None = None
) -> pl.DataFrame:
    """The cards as a frame (`CARD_SCHEMA`): feature, provider, from_model, to_model, confidence,
    strength, task, monthly_saving_usd, monthly_cost_usd, evidence (struct), reason, signals.

    `events`, a rollup frame, should cover `window_days` days (e.g. `load_rollups(conn, org,
    now - 7d, now, histograms=RECOMMEND_HISTOGRAMS)`).
    """
    cards = recommendation_list(events, window_days, base_models)
    return pl.DataFrame([c.to_dict() for c in cards], schema=CARD_SCHEMA)
