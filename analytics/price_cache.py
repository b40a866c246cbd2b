"""The recommendations' unit prices, kept in a file so `lectr recommend` need not import genai-prices.

The engine reprices the observed tokens at the current and at each proposed model
(`proxy.accounting.pricing.unit_prices`). Asking genai-prices means importing it first: pydantic,
httpx and the price data, 0.3-0.5 s of a process that otherwise spends ~0.7 s in all. Its
answers only change with its version (and on the start date of a dated price, which each
answer carries), so `cached_unit_prices` reads them from `<data dir>/cache/unit-prices.json`,
written by the first run that had to ask. The file names the version it was made with
(`pricing.price_table_key`): after an upgrade of genai-prices (or a change of Lectr's provider
ids or of how it prices) it is not read, and the next run writes it anew.

When a run asks genai-prices anyway (a model seen for the first time, a new version), it also
prices every model of the ladders on each provider that may use them, while the library is
loaded (~0.06 s), so that the runs after it find the usual models in the file.

The file is a cache: one that cannot be read is ignored, one that cannot be written is skipped
(a read-only data directory costs time, never a wrong figure). It is replaced atomically, so two
commands running at once each read a whole file.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from analytics.ladders import FAMILIES, PROVIDERS_OF
from proxy.accounting import pricing

log = logging.getLogger("lectr.analytics")

CACHE_FILE = Path("cache") / "unit-prices.json"


def cache_path(data_dir: Path) -> Path:
    """Where the unit prices of `data_dir` are kept."""
    return data_dir / CACHE_FILE


def _read(path: Path) -> dict[str, object] | None:
    try:
        with path.open(encoding="utf-8") as f:
            saved = json.load(f)
    except (OSError, ValueError):
        return None
    return saved if isinstance(saved, dict) else None


def _write(path: Path, table: dict[str, object]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".unit-prices-", suffix=".json", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(table, f, indent=1)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError as exc:
        log.debug("unit prices not cached in %s: %s", path, exc)


def price_ladders() -> None:
    """Ask `unit_prices` for every family's model and each of its rungs, on every provider that
    may use the family: the answers the recommendations usually need."""
    for family in FAMILIES:
        for provider in sorted(PROVIDERS_OF[family.vendor]):
            for model in (family.prefix, *(rung.to_model for rung in family.rungs)):
                pricing.unit_prices(model, provider)


@contextmanager
def cached_unit_prices(data_dir: Path) -> Iterator[None]:
    """Within the block, `unit_prices` answers from the file of `data_dir` when it holds the
    answer for the installed genai-prices; on leaving, the file is rewritten if any answer had
    to be asked of genai-prices (with the ladders' models priced too)."""
    path = cache_path(data_dir)
    pricing.use_price_table(_read(path))
    try:
        yield
        if pricing.price_table() is not None:
            price_ladders()
            table = pricing.price_table()
            if table is not None:
                _write(path, table)
    finally:
        pricing.stop_price_table()
