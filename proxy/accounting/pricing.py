"""Prices from `genai-prices`, for the writer (`price`) and for analytics (`unit_prices`). No I/O.

`genai-prices` computes an exact price in about 0.2 ms, too slow for tens of thousands of events a
second. Below every tier threshold a model's price is linear in each token kind, so for each
(provider, model, day) we ask the library once for the price of each kind and combine those
rates; above `_LINEAR_LIMIT` input tokens (where long-context tiers start) the writer asks it
every time. The recommendations and the demo reprice token volumes with the same rates
(`unit_prices`, floats; tiered long-context surcharges are not modelled there).

Lectr's provider names map to genai-prices' ids in the provider registry (proxy/core/providers.py).
An Azure deployment of a model genai-prices does not list under Azure is priced as OpenAI's.
"""

from __future__ import annotations

import datetime as dt
import warnings
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from importlib.metadata import version
from typing import Any

from proxy.accounting.usage import Usage
from proxy.core.providers import BY_NAME

# No known tier starts below 128k prompt tokens.
_LINEAR_LIMIT = 100_000
# Probe with a small request: the first tier of every tiered price covers it.
_PROBE = 1_000

try:
    _VERSION = version("genai-prices")
except Exception:  # pragma: no cover - only when run from a source tree without metadata
    _VERSION = "unknown"


@dataclass(frozen=True, slots=True)
class Price:
    cost_usd: Decimal
    source: str  # e.g. "genai-prices 0.2.3: openai/gpt-4o"


@dataclass(frozen=True, slots=True)
class _Rates:
    provider: Any
    model: Any
    source: str
    input: Decimal
    cache_read: Decimal
    cache_write: Decimal
    output: Decimal


class _GPUsage:
    """The attribute bag genai-prices reads usage from."""

    __slots__ = ("input_tokens", "cache_read_tokens", "cache_write_tokens", "output_tokens")

    def __init__(self, inp: int, cache_read: int, cache_write: int, out: int) -> None:
        self.input_tokens, self.cache_read_tokens = inp, cache_read
        self.cache_write_tokens, self.output_tokens = cache_write, out


def _exact(provider: Any, model: Any, usage: _GPUsage, when: dt.datetime) -> Decimal:
    return Decimal(model.calc_price(usage, provider, genai_request_timestamp=when).total_price)


@lru_cache(maxsize=4096)
def _rates(provider_id: str, model_ref: str, day: dt.date) -> _Rates | None:
    from genai_prices import data_snapshot

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            provider, model = data_snapshot.get_snapshot().find_provider_model(model_ref, None, provider_id, None)
        except LookupError:
            return None
        when = dt.datetime(day.year, day.month, day.day, 12, tzinfo=dt.UTC)
        per = Decimal(_PROBE)

        def rate(inp: int, read: int, write: int, out: int) -> Decimal:
            return _exact(provider, model, _GPUsage(inp, read, write, out), when) / per

        return _Rates(
            provider,
            model,
            f"genai-prices {_VERSION}: {provider.id}/{model.id}",
            input=rate(_PROBE, 0, 0, 0),
            cache_read=rate(_PROBE, _PROBE, 0, 0),
            cache_write=rate(_PROBE, 0, _PROBE, 0),
            output=rate(0, 0, 0, _PROBE),
        )


def _lookup(provider: str, model: str | None, day: dt.date) -> _Rates | None:
    """The rates of `model` on a Lectr `provider` that day; None for an unknown model or provider."""
    known = BY_NAME.get(provider)
    if known is None or not model:
        return None
    rates = _rates(known.price_id, model, day)
    if rates is None and provider == "azure":
        rates = _rates(BY_NAME["openai"].price_id, model, day)  # Azure deployments of OpenAI base models
    return rates


def price(provider: str, model: str | None, usage: Usage, when: dt.datetime) -> Price | None:
    """The cost of one request, or None when the model has no known price (never a silent 0)."""
    rates = _lookup(provider, model, when.date())
    if rates is None:
        return None
    uncached = max(0, usage.input_tokens - usage.cached_input_tokens - usage.cache_write_tokens)
    if usage.input_tokens > _LINEAR_LIMIT:
        gp = _GPUsage(usage.input_tokens, usage.cached_input_tokens, usage.cache_write_tokens, usage.output_tokens)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cost = _exact(rates.provider, rates.model, gp, when)
    else:
        cost = (
            rates.input * uncached
            + rates.cache_read * usage.cached_input_tokens
            + rates.cache_write * usage.cache_write_tokens
            + rates.output * usage.output_tokens
        )
    return Price(cost, rates.source)


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


def unit_prices(model: str, provider: str, day: dt.date | None = None) -> UnitPrices | None:
    """Today's (or `day`'s) rates for `model` on a Lectr `provider`, or None when genai-prices
    does not know it: the writer's rates, as floats, for analytics' thousands of what-ifs."""
    return _unit_prices(model, provider, day or dt.datetime.now(dt.UTC).date())


@lru_cache(maxsize=2048)
def _unit_prices(model: str, provider: str, day: dt.date) -> UnitPrices | None:
    rates = _lookup(provider, model, day)
    if rates is None:
        return None
    return UnitPrices(rates.model.id, float(rates.input), float(rates.cache_read), float(rates.output))


def warm_up() -> None:
    """Import genai-prices and load its data (a second or so), e.g. at start-up."""
    price("openai", "gpt-4o", Usage(1, 1), dt.datetime.now(dt.UTC))
