"""Prices from `genai-prices`, for the writer (`price`) and for analytics (`unit_prices`). No I/O.

`genai-prices` computes an exact price in about 0.2 ms, too slow for tens of thousands of events a
second. Below every tier threshold a model's price is linear in each token kind, so for each
(provider, model, day) we ask the library once for the price of each kind and combine those
rates; above `_LINEAR_LIMIT` input tokens (where long-context tiers start) the writer asks it
every time. The recommendations and the demo reprice token volumes with the same rates
(`unit_prices`, floats; tiered long-context surcharges are not modelled there).

Lectr's provider names map to genai-prices' ids in the provider registry (proxy/core/providers.py).
An Azure deployment of a model genai-prices does not list under Azure is priced as OpenAI's.

Importing genai-prices (pydantic, httpx and the price data) costs 0.3-0.5 s, most of what a
`lectr recommend` process spends beyond polars and psycopg. So `unit_prices` can answer from a
table of its own earlier answers (`use_price_table`), each with the days it holds for, valid
for one `price_table_key` (genai-prices' version, the provider ids, this module's way of
pricing); `analytics/price_cache.py` keeps that table in a file. Each answer is what
genai-prices gave, stored as the same floats, so the table changes no figure.
"""

from __future__ import annotations

import datetime as dt
import sys
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from importlib.metadata import version
from typing import Any

from proxy.accounting.usage import Usage
from proxy.core.providers import BY_NAME, REGISTRY

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


# `_lookup`'s answers in a plain dict (one hash of a 3-tuple, ~0.15 µs, against ~0.8 µs through
# `_rates`' lru_cache: the writer asks for every event), emptied when it grows past `_MEMO_SIZE`
# (a new day, or a flood of unknown model names, which are remembered as None).
_memo: dict[tuple[str, str | None, dt.date], _Rates | None] = {}
_MEMO_SIZE = 4096


def _lookup(provider: str, model: str | None, day: dt.date) -> _Rates | None:
    """The rates of `model` on a Lectr `provider` that day; None for an unknown model or provider."""
    key = (provider, model, day)
    rates = _memo.get(key, _memo)
    if rates is not _memo:
        return rates  # type: ignore[return-value]
    known = BY_NAME.get(provider)
    if known is None or not model:
        rates = None
    else:
        rates = _rates(known.price_id, model, day)
        if rates is None and provider == "azure":
            rates = _rates(BY_NAME["openai"].price_id, model, day)  # Azure deployments of OpenAI base models
    if len(_memo) >= _MEMO_SIZE:
        _memo.clear()
    _memo[key] = rates
    return rates


def cost(
    provider: str, model: str | None, input_tokens: int, cached_input_tokens: int, cache_write_tokens: int,
    output_tokens: int, when: dt.datetime,
) -> tuple[Decimal, str] | None:
    """`price` without its objects, for the writer (every event, holding the GIL): (cost, source),
    or None when the model has no known price. A token kind of 0 adds no term (each costs ~0.1 µs
    of Decimal arithmetic); the sum is the same."""
    rates = _lookup(provider, model, when.date())
    if rates is None:
        return None
    if input_tokens > _LINEAR_LIMIT:
        gp = _GPUsage(input_tokens, cached_input_tokens, cache_write_tokens, output_tokens)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return _exact(rates.provider, rates.model, gp, when), rates.source
    total = rates.input * max(0, input_tokens - cached_input_tokens - cache_write_tokens)
    if cached_input_tokens:
        total += rates.cache_read * cached_input_tokens
    if cache_write_tokens:
        total += rates.cache_write * cache_write_tokens
    if output_tokens:
        total += rates.output * output_tokens
    return total, rates.source


def price(provider: str, model: str | None, usage: Usage, when: dt.datetime) -> Price | None:
    """The cost of one request, or None when the model has no known price (never a silent 0)."""
    found = cost(provider, model, usage.input_tokens, usage.cached_input_tokens, usage.cache_write_tokens,
                 usage.output_tokens, when)
    return None if found is None else Price(*found)


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
    does not know it: the writer's rates, as floats, for analytics' thousands of what-ifs.
    Answered from the price table when one is in use and holds this answer (`use_price_table`)."""
    day = day or dt.datetime.now(dt.UTC).date()
    if _table is not None and not _custom_snapshot():
        known = _table.answers.get((provider, model))
        if known is not None and known.holds(day):
            return known.prices
    prices = _unit_prices(model, provider, day)
    if _table is not None and not _custom_snapshot():
        rates = _lookup(provider, model, day)  # cached by now
        since, until = (None, None) if rates is None else _span(rates.model, day)
        _table.answers[(provider, model)] = _Answer(prices, since, until)
        _table.grew = True
    return prices


@lru_cache(maxsize=2048)
def _unit_prices(model: str, provider: str, day: dt.date) -> UnitPrices | None:
    rates = _lookup(provider, model, day)
    if rates is None:
        return None
    return UnitPrices(rates.model.id, float(rates.input), float(rates.cache_read), float(rates.output))


# How `unit_prices` is computed from genai-prices (`_rates`, the Azure fallback): bump it when
# that changes, so tables saved by an older Lectr are not read.
_TABLE_FORMAT = 1


@dataclass(frozen=True, slots=True)
class _Answer:
    """One answer of `unit_prices` and the days it holds: from `since` (None: always before)
    up to `until`, excluded (None: for as long as this genai-prices version is installed)."""

    prices: UnitPrices | None
    since: dt.date | None
    until: dt.date | None

    def holds(self, day: dt.date) -> bool:
        return (self.since is None or self.since <= day) and (self.until is None or day < self.until)


@dataclass(slots=True)
class _Table:
    answers: dict[tuple[str, str], _Answer]
    grew: bool = False


_table: _Table | None = None


def _custom_snapshot() -> bool:
    """Whether genai-prices prices from data set at run time (`UpdatePrices`, a custom snapshot)
    rather than the data of its version: then no table answers, nor is written."""
    snapshot = sys.modules.get("genai_prices.data_snapshot")
    return snapshot is not None and getattr(snapshot, "_custom_snapshot", None) is not None


def _span(model: Any, day: dt.date) -> tuple[dt.date | None, dt.date | None]:
    """The days around `day` with the same answer for a genai-prices `model`. Its prices change
    only on the start date of a conditional price (or of a variant, which `_rates` does not ask
    for: counted anyway); a time-of-day condition is read at noon every day, so it never moves
    the answer from one day to the next."""
    conditional = model.prices if isinstance(model.prices, list) else []
    constraints = [c.constraint for c in [*conditional, *(model.price_variants or ())]]
    starts = sorted({d for d in (getattr(c, "start_date", None) for c in constraints) if isinstance(d, dt.date)})
    since = max((d for d in starts if d <= day), default=None)
    until = min((d for d in starts if d > day), default=None)
    return since, until


def price_table_key() -> str | None:
    """What a saved price table is valid for: genai-prices' version, the Lectr → genai-prices
    provider ids and `_TABLE_FORMAT`. None when the installed version is unknown (no table)."""
    if _VERSION == "unknown":
        return None
    providers = ",".join(f"{p.name}={p.price_id}" for p in REGISTRY)
    return f"genai-prices {_VERSION}; lectr unit prices {_TABLE_FORMAT}; {providers}"


def _day(value: Any) -> dt.date | None:
    return None if value is None else dt.date.fromisoformat(value)


def _answers(saved: Mapping[str, Any]) -> dict[tuple[str, str], _Answer]:
    answers = {}
    for row in saved["answers"]:
        unit = row["prices"]
        prices = None if unit is None else UnitPrices(
            str(unit["model_id"]), float(unit["input"]), float(unit["cached_input"]), float(unit["output"])
        )
        answers[(str(row["provider"]), str(row["model"]))] = _Answer(prices, _day(row["since"]), _day(row["until"]))
    return answers


def use_price_table(saved: Mapping[str, Any] | None) -> bool:
    """Answer `unit_prices` from `saved` (what `price_table` returned, e.g. read back from JSON)
    when its key is `price_table_key()`, and record every new answer from now on. A table of
    another key, or malformed, is dropped (the answers are asked of genai-prices again).
    Returns whether `saved` was used."""
    global _table
    key = price_table_key()
    answers: dict[tuple[str, str], _Answer] = {}
    used = False
    if saved is not None and key is not None and saved.get("key") == key:
        try:
            answers, used = _answers(saved), True
        except (KeyError, TypeError, ValueError, AttributeError):
            answers = {}
    _table = _Table(answers)
    return used


def price_table() -> dict[str, Any] | None:
    """The table in use as plain JSON types, when `unit_prices` added answers to it since
    `use_price_table` (else None: nothing new to keep)."""
    key = price_table_key()
    if _table is None or not _table.grew or key is None:
        return None
    answers = [
        {
            "provider": provider,
            "model": model,
            "since": None if a.since is None else a.since.isoformat(),
            "until": None if a.until is None else a.until.isoformat(),
            "prices": None if a.prices is None else {
                "model_id": a.prices.model_id, "input": a.prices.input,
                "cached_input": a.prices.cached_input, "output": a.prices.output,
            },
        }
        for (provider, model), a in sorted(_table.answers.items())
    ]
    return {"key": key, "answers": answers}


def stop_price_table() -> None:
    """Back to asking genai-prices for every new (model, provider, day)."""
    global _table
    _table = None


def warm_up() -> None:
    """Import genai-prices and load its data (a second or so), e.g. at start-up."""
    price("openai", "gpt-4o", Usage(1, 1), dt.datetime.now(dt.UTC))
