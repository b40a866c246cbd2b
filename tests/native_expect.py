"""What an end-to-end client test expects of its one event, computed independently of the proxy.

The cost is worked out here from genai-prices' own per-million rates for the model the provider
reported (`ModelPrice.input_mtok` and friends), token kind by token kind, not through
`proxy.accounting.pricing` (which probes the library's `calc_price`): two routes to the same figure.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from tests.fakes import wait_for

_MILLION = Decimal(1_000_000)
_GENAI_PROVIDER = {"gemini": "google"}


@dataclass(frozen=True)
class Expected:
    provider: str
    endpoint: str
    stream: bool
    model: str
    response_model: str
    input_tokens: int  # every prompt token, cache reads and writes included
    output_tokens: int  # every generated token, reasoning included
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0

    def cost(self) -> Decimal:
        return cost_from_rates(
            self.provider,
            self.response_model,
            fresh=self.input_tokens - self.cached_input_tokens - self.cache_write_tokens,
            cache_read=self.cached_input_tokens,
            cache_write=self.cache_write_tokens,
            output=self.output_tokens,
        )


def cost_from_rates(
    provider: str, model: str, *, fresh: int, cache_read: int, cache_write: int, output: int
) -> Decimal:
    """Each token kind times genai-prices' published rate for it (USD per million tokens)."""
    from genai_prices import data_snapshot

    _, found = data_snapshot.get_snapshot().find_provider_model(
        model, None, _GENAI_PROVIDER.get(provider, provider), None
    )
    prices = found.prices
    rate = {
        "input": prices.input_mtok,
        "cache_read": prices.cache_read_mtok,
        "cache_write": prices.cache_write_mtok,
        "output": prices.output_mtok,
    }
    counts = {"input": fresh, "cache_read": cache_read, "cache_write": cache_write, "output": output}
    total = Decimal(0)
    for kind, count in counts.items():
        if count:
            assert isinstance(rate[kind], Decimal), f"{model}: no flat {kind} rate in genai-prices"
            total += Decimal(count) * rate[kind] / _MILLION
    return total


def rows(db: Any, org_id: int, expected: int) -> list[dict[str, Any]]:
    """The org's events once `expected` of them are written (and then exactly that many)."""

    def enough() -> list[dict[str, Any]] | None:
        cur = db.execute("SELECT * FROM events WHERE org_id = %s ORDER BY created_at", (org_id,))
        names = [c.name for c in cur.description]
        found = [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
        return found if len(found) >= expected else None

    found = wait_for(enough, timeout=10)
    assert len(found) == expected, found
    return found


def assert_event(row: dict[str, Any], want: Expected) -> None:
    """Every recorded field a client test is about, exactly."""
    got = {
        "provider": row["provider"],
        "endpoint": row["endpoint"],
        "stream": row["stream"],
        "model": row["model"],
        "response_model": row["response_model"],
        "status_code": row["status_code"],
        "error_type": row["error_type"],
        "provider_unknown": row["provider_unknown"],
        "input_tokens": row["input_tokens"],
        "output_tokens": row["output_tokens"],
        "cached_input_tokens": row["cached_input_tokens"],
        "cache_write_tokens": row["cache_write_tokens"],
        "reasoning_tokens": row["reasoning_tokens"],
        "usage_estimated": row["usage_estimated"],
        "cost_usd": row["cost_usd"],
    }
    expected = {
        "provider": want.provider,
        "endpoint": want.endpoint,
        "stream": want.stream,
        "model": want.model,
        "response_model": want.response_model,
        "status_code": 200,
        "error_type": None,
        "provider_unknown": False,
        "input_tokens": want.input_tokens,
        "output_tokens": want.output_tokens,
        "cached_input_tokens": want.cached_input_tokens,
        "cache_write_tokens": want.cache_write_tokens,
        "reasoning_tokens": want.reasoning_tokens,
        "usage_estimated": False,
        "cost_usd": want.cost(),
    }
    differing = {name: (got[name], expected[name]) for name in got if got[name] != expected[name]}
    assert not differing, f"recorded vs expected: {differing}"
    assert row["price_source"].startswith("genai-prices")
