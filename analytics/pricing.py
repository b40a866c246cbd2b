"""Per-token prices from `genai-prices`, cached per (model, provider).

The recommendation engine reprices observed token volumes at another model's rates and the demo
prices generated traffic; both need thousands of lookups, so each model is priced once: the
library is asked for 1,000 input, cached-input and output tokens (below every long-context tier)
and the per-token rates are kept. Tiered long-context surcharges are therefore not modelled.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

# Lectr's provider names → genai-prices provider ids.
GENAI_PROVIDER: dict[str, str] = {
    "openai": "openai",
    "azure": "azure",
    "anthropic": "anthropic",
    "groq": "groq",
    "gemini": "google",
}

_PROBE = 1000


@dataclass(frozen=True, slots=True)
class UnitPrices:
    """USD per token: uncached input, cached input (a cache read), output (reasoning included)."""

    model_id: str
    input: float
    cached_input: float
    output: float

    def cost(self, input_tokens: float, cached_input_tokens: float, output_tokens: float) -> float:
        """Cost of a usage; `input_tokens` includes the cached ones, as in events."""
        cached = min(max(cached_input_tokens, 0.0), max(input_tokens, 0.0))
        return (input_tokens - cached) * self.input + cached * self.cached_input + output_tokens * self.output


@lru_cache(maxsize=2048)
def unit_prices(model: str, provider: str) -> UnitPrices | None:
    """Rates for `model` on a Lectr `provider`, or None when genai-prices does not know it."""
    provider_id = GENAI_PROVIDER.get(provider)
    if provider_id is None or not model:
        return None
    # Imported here: the price snapshot takes ~0.3 s to load and only recommendations need it.
    from genai_prices import Usage, calc_price

    def probe(**tokens: int) -> tuple[str, float]:
        price = calc_price(Usage(**tokens), model, provider_id=provider_id)  # type: ignore[arg-type]
        return price.model.id, float(price.total_price) / _PROBE

    try:
        model_id, per_input = probe(input_tokens=_PROBE)
        _, per_cached = probe(input_tokens=_PROBE, cache_read_tokens=_PROBE)
        _, per_output = probe(output_tokens=_PROBE)
    except LookupError:
        return None
    return UnitPrices(model_id, per_input, per_cached, per_output)
