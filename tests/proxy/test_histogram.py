"""The rollups' log-bucket histograms: quantiles within 2 % of exact, merges that are sums."""

from __future__ import annotations

import random

import polars as pl
import pytest

from proxy.accounting.histogram import ALPHA, ZERO, Histogram, bucket, quantile, representative

QUANTILES = (0.0, 0.01, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 1.0)


def exact(values: list[float], q: float) -> float:
    """What Postgres' percentile_cont gives: linear interpolation between the two ranks."""
    found = pl.Series(values).quantile(q, interpolation="linear")
    assert found is not None
    return float(found)


@pytest.mark.parametrize("seed", range(6))
def test_quantiles_are_within_two_percent(seed: int) -> None:
    rng = random.Random(seed)
    shape = seed % 3
    if shape == 0:  # latencies: lognormal, wide
        values = [rng.lognormvariate(5, 1.5) for _ in range(3000)]
    elif shape == 1:  # token counts: integers, with zeros (errors have no output)
        values = [float(int(rng.paretovariate(1.1) * 20)) if rng.random() > 0.1 else 0.0 for _ in range(3000)]
    else:  # sub-millisecond overheads
        values = [rng.uniform(0.05, 3.0) for _ in range(500)]
    histogram = Histogram()
    for value in values:
        histogram.add(value)
    for q in QUANTILES:
        want, got = exact(values, q), histogram.quantile(q)
        assert got is not None
        assert abs(got - want) <= 0.02 * abs(want) + 1e-12, (q, want, got)


def test_every_value_is_within_alpha_of_its_representative() -> None:
    rng = random.Random(7)
    for value in [rng.lognormvariate(0, 8) for _ in range(10_000)] + [1.0, 2.0, 1e-9, 1e12]:
        assert abs(representative(bucket(value)) - value) <= ALPHA * value * (1 + 1e-9)
    assert bucket(0) == bucket(-3.0) == ZERO and representative(ZERO) == 0.0


def test_a_merge_is_a_sum_and_order_does_not_matter() -> None:
    rng = random.Random(3)
    values = [rng.expovariate(0.01) for _ in range(2000)]
    whole, parts = Histogram(), [Histogram() for _ in range(5)]
    for i, value in enumerate(values):
        whole.add(value)
        parts[i % 5].add(value)
    merged = Histogram()
    for part in reversed(parts):
        merged.merge(Histogram.from_arrays(*part.arrays()))
    assert merged.arrays() == whole.arrays() and merged.total == 2000


def test_empty_and_unmeasured() -> None:
    histogram = Histogram()
    histogram.add(None)
    assert histogram.total == 0 and histogram.quantile(0.5) is None
    assert quantile([], [], 0.95) is None
    histogram.add(42.0)
    assert histogram.quantile(0.0) == histogram.quantile(1.0) == pytest.approx(42.0, rel=ALPHA)
