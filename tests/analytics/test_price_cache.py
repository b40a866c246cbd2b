"""The unit-price cache of `lectr recommend` (analytics/price_cache.py, the table in
proxy/accounting/pricing.py): genai-prices' own numbers, read back only for its version."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from genai_prices import Usage as GPUsage
from genai_prices import calc_price, data_snapshot

from analytics.ladders import FAMILIES, PROVIDERS_OF
from analytics.price_cache import cache_path, cached_unit_prices
from proxy.accounting import pricing
from proxy.accounting.pricing import UnitPrices, unit_prices
from proxy.core.providers import BY_NAME

TODAY = dt.datetime.now(dt.UTC).date()


@pytest.fixture(autouse=True)
def no_table() -> Iterator[None]:
    yield
    pricing.stop_price_table()


def genai_prices_own(model: str, provider: str, day: dt.date) -> tuple[str, float, float, float] | None:
    """What genai-prices itself says, through its public `calc_price`: (model id, USD per
    uncached input token, per cache-read token, per output token), from 1,000 tokens of each
    kind at noon of `day`, with the provider's own rules for each kind. Azure deployments of a
    model Azure does not list are OpenAI's, as in the writer."""
    when = dt.datetime(day.year, day.month, day.day, 12, tzinfo=dt.UTC)
    ids = [BY_NAME[provider].price_id, *(["openai"] if provider == "azure" else [])]
    for gp in ids:
        try:
            found = calc_price(GPUsage(input_tokens=1000), model, provider_id=gp, genai_request_timestamp=when)
        except LookupError:
            continue

        def per_token(gp: str = gp, **tokens: int) -> float:
            total = calc_price(GPUsage(**tokens), model, provider_id=gp, genai_request_timestamp=when).total_price
            return float(Decimal(total) / Decimal(1000))

        return (found.model.id, per_token(input_tokens=1000),
                per_token(input_tokens=1000, cache_read_tokens=1000), per_token(output_tokens=1000))
    return None


def ladder_models() -> list[tuple[str, str]]:
    return sorted({
        (model, provider)
        for family in FAMILIES
        for provider in PROVIDERS_OF[family.vendor]
        for model in (family.prefix, *(rung.to_model for rung in family.rungs))
    })


def test_cached_unit_prices_are_genai_prices_own_for_every_ladder_model(tmp_path: Path) -> None:
    """The file the first run writes, read back by the next: for every ladder model on every
    provider that may use it, exactly (==, not approx) the rates genai-prices computes."""
    with cached_unit_prices(tmp_path):
        assert unit_prices("gpt-4o-2024-08-06", "openai") is not None  # an observed model: asked, then saved
    saved = json.loads(cache_path(tmp_path).read_text())
    assert saved["key"] == pricing.price_table_key()
    stored = {(a["model"], a["provider"]) for a in saved["answers"]}
    assert set(ladder_models()) <= stored and ("gpt-4o-2024-08-06", "openai") in stored
    with cached_unit_prices(tmp_path):
        checked = 0
        for model, provider in sorted(stored):
            got = unit_prices(model, provider)
            own = genai_prices_own(model, provider, TODAY)
            assert (None if got is None else (got.model_id, got.input, got.cached_input, got.output)) == own, (
                model, provider)
            checked += own is not None
        assert pricing.price_table() is None  # every answer came from the file: nothing new to write
    assert checked >= 50


def test_the_file_is_what_is_read_and_another_version_is_not(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with cached_unit_prices(tmp_path):
        unit_prices("gpt-4o", "openai")
    path = cache_path(tmp_path)
    saved = json.loads(path.read_text())
    real = unit_prices("gpt-4o", "openai")
    assert real is not None
    # A doctored answer is what comes back: the file is read, genai-prices not asked.
    for answer in saved["answers"]:
        if (answer["provider"], answer["model"]) == ("openai", "gpt-4o"):
            answer["prices"]["input"] = 123.0
    path.write_text(json.dumps(saved))
    with cached_unit_prices(tmp_path):
        assert unit_prices("gpt-4o", "openai") == UnitPrices(real.model_id, 123.0, real.cached_input, real.output)
    # Another genai-prices version: the file is not read, and is rewritten under the new key.
    monkeypatch.setattr(pricing, "_VERSION", "99.0.0")
    with cached_unit_prices(tmp_path):
        assert unit_prices("gpt-4o", "openai") == real
    rewritten = json.loads(path.read_text())
    assert rewritten["key"].startswith("genai-prices 99.0.0;")
    assert {a["prices"]["input"] for a in rewritten["answers"] if a["model"] == "gpt-4o" and a["prices"]} != {123.0}
    # The provider ids are part of the key too.
    monkeypatch.setattr(pricing, "_VERSION", saved["key"].split(";")[0].removeprefix("genai-prices "))
    assert pricing.price_table_key() == saved["key"]
    assert pricing.use_price_table({**saved, "key": saved["key"].replace("gemini=google", "gemini=gemini")}) is False


def test_a_dated_price_is_answered_only_on_its_days() -> None:
    """A price that changes on a start date (genai-prices' conditional prices) is kept with the
    days it holds for: a table answer for one side of the date is not given on the other."""
    dated = [
        (provider, model.id, c.constraint.start_date)
        for provider, gp in (("openai", "openai"), ("anthropic", "anthropic"), ("gemini", "google"))
        for p in data_snapshot.get_snapshot().providers if p.id == gp
        for model in p.models if isinstance(model.prices, list)
        for c in model.prices if getattr(c.constraint, "start_date", None) is not None
    ]
    assert dated, "genai-prices has no dated price left to test with"
    provider, model, start = dated[0]
    before, after = start - dt.timedelta(days=1), start
    pricing.use_price_table(None)
    old = unit_prices(model, provider, before)
    table = pricing.price_table()
    assert table is not None
    (answer,) = [a for a in table["answers"] if a["model"] == model]
    assert answer["until"] == start.isoformat()
    pricing.use_price_table(table)
    assert unit_prices(model, provider, before) == old
    new = unit_prices(model, provider, after)
    own = genai_prices_own(model, provider, after)
    assert new is not None and own == (new.model_id, new.input, new.cached_input, new.output)
    assert old != new, "the dated price should differ from the one before it"


def test_a_custom_genai_prices_snapshot_bypasses_the_table(tmp_path: Path) -> None:
    """Prices updated at run time (genai-prices' `UpdatePrices`) are not those of its version."""
    pricing.use_price_table({"key": pricing.price_table_key(), "answers": [
        {"provider": "openai", "model": "gpt-4o", "since": None, "until": None,
         "prices": {"model_id": "gpt-4o", "input": 1.0, "cached_input": 1.0, "output": 1.0}},
    ]})
    assert unit_prices("gpt-4o", "openai") == UnitPrices("gpt-4o", 1.0, 1.0, 1.0)
    data_snapshot.set_custom_snapshot(data_snapshot.get_snapshot())
    try:
        assert unit_prices("gpt-4o", "openai") != UnitPrices("gpt-4o", 1.0, 1.0, 1.0)
    finally:
        data_snapshot.set_custom_snapshot(None)


@pytest.mark.parametrize("content", ["{not json", "[]", '{"key": "x"}'])
def test_a_bad_file_is_ignored_and_replaced(tmp_path: Path, content: str) -> None:
    path = cache_path(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text(content)
    if content == '{"key": "x"}':
        content = json.dumps({"key": pricing.price_table_key(), "answers": [{"provider": "openai"}]})
        path.write_text(content)
    with cached_unit_prices(tmp_path):
        assert unit_prices("gpt-4o", "openai") is not None
    assert json.loads(path.read_text())["key"] == pricing.price_table_key()


def test_an_unwritable_data_dir_costs_time_not_figures(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("a file where the data directory should be")
    with cached_unit_prices(blocked):
        assert unit_prices("gpt-4o", "openai") == unit_prices("gpt-4o", "openai", TODAY)
    assert blocked.read_text().startswith("a file")


# A process of its own: the recommendations of a fixed frame, with the cache of the data directory
# argv[1] (`-`: no cache, every price from genai-prices), and whether genai-prices was imported.
RUN = textwrap.dedent("""
    import json, sys
    from contextlib import nullcontext
    from pathlib import Path
    from analytics.price_cache import cached_unit_prices
    from analytics.recommend import base_models, recommendation_list
    from tests.analytics._build import ev, frame, raw
    events = [ev(model=m, provider=p, task=t, feature=f, input_tokens=i, output_tokens=o, cached_input_tokens=c,
                 response_model=r, message_count=1)
              for m, p, t, f, i, o, c, r in [
                  ("gpt-4o-2024-08-06", "openai", "classification", "tickets", 800, 5, 200, None),
                  ("claude-3-opus-20240229", "anthropic", "extraction", "contracts", 4000, 900, 0, None),
                  ("gemini-2.5-pro", "gemini", "summarisation", "digest", 9000, 400, 0, None),
                  ("prod-gpt4o", "azure", None, "chat", 900, 40, 0, "gpt-4o-2024-08-06"),
                  ("llama-3.1-70b-versatile", "groq", None, "autocomplete", 300, 20, 0, None),
              ] for _ in range(30)]
    with cached_unit_prices(Path(sys.argv[1])) if sys.argv[1] != "-" else nullcontext():
        cards = recommendation_list(frame(*events), 7.0, base_models(raw(*events)))
    print(json.dumps({"cards": [c.to_dict() for c in cards], "genai_prices": "genai_prices" in sys.modules}))
""")


def _recommend_in_a_process(data_dir: Path | None) -> dict[str, Any]:
    argv = [sys.executable, "-c", RUN, "-" if data_dir is None else str(data_dir)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=Path(__file__).parents[2], check=True)
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_recommend_with_a_warm_cache_skips_genai_prices_and_gives_the_same_cards(tmp_path: Path) -> None:
    first = _recommend_in_a_process(tmp_path)
    assert first["genai_prices"] is True and cache_path(tmp_path).exists()
    second = _recommend_in_a_process(tmp_path)
    assert second["genai_prices"] is False
    assert len(first["cards"]) >= 4
    assert second["cards"] == first["cards"]  # every number, exactly
    without = _recommend_in_a_process(None)
    assert without["genai_prices"] is True
    assert without["cards"] == first["cards"]
